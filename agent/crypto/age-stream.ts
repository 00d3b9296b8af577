// age's payload (STREAM): a 16-byte nonce, then the plaintext in 64 KiB chunks, each sealed with
// ChaCha20-Poly1305 under HKDF(file key, nonce, "payload") and a 12-byte nonce made of an 11-byte big-endian
// chunk counter and a final-chunk flag. Every chunk is a pure function of (key, index, final?, plaintext),
// so an upload part made of whole chunks can be encrypted on its own, and again, byte for byte, on a retry.
import { createCipheriv, randomBytes } from 'node:crypto';
import { writeHeader } from './age-header.js';
import type { AgeRecipient } from './age-keys.js';
import { hkdf, TAG_SIZE } from './primitives.js';

export const CHUNK_SIZE = 64 * 1024;
export const ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
export const NONCE_SIZE = 16;

export function payloadKey(fileKey: Buffer, nonce: Buffer): Buffer {
  return hkdf(fileKey, nonce, 'payload');
}

/** Writes the 12-byte AEAD nonce of chunk `index` into `into`. */
export function chunkNonce(into: Buffer, index: number, last: boolean): Buffer {
  into.fill(0);
  // 11-byte counter; JS integers reach 2^53, far past any file (2^37 chunks is 8 PiB)
  into.writeUInt32BE(Math.floor(index / 2 ** 32), 3);
  into.writeUInt32BE(index >>> 0, 7);
  into[11] = last ? 1 : 0;
  return into;
}

/** Chunks of a plaintext: an empty plaintext is one empty final chunk. */
export function chunkCount(plaintextSize: number): number {
  return plaintextSize === 0 ? 1 : Math.ceil(plaintextSize / CHUNK_SIZE);
}

/** Payload bytes (nonce and sealed chunks) for a plaintext of `plaintextSize` bytes. */
export function payloadSize(plaintextSize: number): number {
  return NONCE_SIZE + plaintextSize + chunkCount(plaintextSize) * TAG_SIZE;
}

/**
 * The plaintext size a payload of `size` bytes carries, or undefined when no plaintext gives that size:
 * the final chunk must hold at least one byte unless it is the only chunk.
 */
export function plaintextSizeOf(size: number): number | undefined {
  const body = size - NONCE_SIZE;
  if (!Number.isSafeInteger(body) || body < TAG_SIZE) return undefined;
  const full = Math.floor(body / ENC_CHUNK_SIZE);
  const rest = body % ENC_CHUNK_SIZE;
  if (rest === 0) return full * CHUNK_SIZE;
  if (rest === TAG_SIZE && full === 0) return 0;
  if (rest > TAG_SIZE) return full * CHUNK_SIZE + rest - TAG_SIZE;
  return undefined;
}

/** Seals `count` chunks of `plain` starting at chunk `first` into `out`; returns bytes written. */
export function sealChunks(key: Buffer, out: Buffer, plain: Buffer, first: number, lastIsFinal: boolean): number {
  const nonce = Buffer.alloc(12);
  const count = chunkCount(plain.length);
  let w = 0;
  for (let i = 0; i < count; i++) {
    const slice = plain.subarray(i * CHUNK_SIZE, Math.min(plain.length, (i + 1) * CHUNK_SIZE));
    const c = createCipheriv('chacha20-poly1305', key, chunkNonce(nonce, first + i, lastIsFinal && i === count - 1), { authTagLength: TAG_SIZE });
    w += c.update(slice).copy(out, w);
    c.final();
    w += c.getAuthTag().copy(out, w);
  }
  return w;
}

export interface CipherRange {
  /** First byte in the whole ciphertext object (0 for the part that carries the header). */
  start: number;
  /** One past the last byte. */
  end: number;
}

/**
 * Encrypts one plaintext of known size to fixed recipients, in slices of whole chunks that can be produced in
 * any order and more than once. The header (with its nonce) and the file key are drawn once, here: every
 * part of one upload must come from the same encryptor, and a new encryptor means a new object.
 */
export class AgeEncryptor {
  /** Everything before the first chunk: header text, MAC line and the payload nonce. */
  readonly header: Buffer;
  readonly ciphertextSize: number;
  readonly chunkCount: number;
  readonly #key: Buffer;

  constructor(
    recipients: readonly AgeRecipient[],
    readonly plaintextSize: number,
  ) {
    if (!Number.isSafeInteger(plaintextSize) || plaintextSize < 0) throw new RangeError(`plaintext size must be a non-negative integer, got ${plaintextSize}`);
    if (recipients.length === 0) throw new Error('age encryption needs at least one recipient');
    const fileKey = randomBytes(16);
    const nonce = randomBytes(NONCE_SIZE);
    this.header = Buffer.concat([
      writeHeader(
        fileKey,
        recipients.map((r) => r.wrap(fileKey)),
      ),
      nonce,
    ]);
    this.#key = payloadKey(fileKey, nonce);
    this.chunkCount = chunkCount(plaintextSize);
    this.ciphertextSize = this.header.length + payloadSize(plaintextSize) - NONCE_SIZE;
  }

  /**
   * Seals `plain`, which starts at chunk `firstChunk`, into `out` and returns the bytes written
   * (`plain.length` + 16 per chunk). `plain` is whole chunks unless `isLast`; `isLast` must be true exactly
   * when `plain` ends the plaintext. Throws on a slice that does not fit this plaintext.
   */
  encryptInto(out: Buffer, plain: Buffer, firstChunk: number, isLast: boolean): number {
    const end = this.checkSlice(plain.length, firstChunk, isLast);
    const need = end - firstChunk * CHUNK_SIZE + chunkCount(plain.length) * TAG_SIZE;
    if (out.length < need) throw new RangeError(`output buffer holds ${out.length} bytes, ${need} needed`);
    return sealChunks(this.#key, out, plain, firstChunk, isLast);
  }

  encryptChunks(plain: Buffer, firstChunk: number, isLast: boolean): Buffer {
    const out = Buffer.allocUnsafe(plain.length + chunkCount(plain.length) * TAG_SIZE);
    const n = this.encryptInto(out, plain, firstChunk, isLast);
    return out.subarray(0, n);
  }

  /**
   * One upload part: the plaintext `plain` found at `plainOffset` (a multiple of 64 KiB), sealed into `out`,
   * preceded by the header when `plainOffset` is 0. Returns bytes written, `partCiphertextSize` of it.
   */
  encryptPartInto(out: Buffer, plain: Buffer, plainOffset: number): number {
    const first = this.chunkAt(plainOffset);
    const isLast = plainOffset + plain.length === this.plaintextSize;
    const head = plainOffset === 0 ? this.header.copy(out, 0) : 0;
    return head + this.encryptInto(out.subarray(head), plain, first, isLast);
  }

  /** Where the part holding plaintext [plainOffset, plainOffset + plainLength) lies in the ciphertext. */
  cipherRange(plainOffset: number, plainLength: number): CipherRange {
    const first = this.chunkAt(plainOffset);
    const isLast = plainOffset + plainLength === this.plaintextSize;
    const end = this.checkSlice(plainLength, first, isLast);
    const startByte = first === 0 ? 0 : this.header.length + first * ENC_CHUNK_SIZE;
    const endByte = isLast ? this.ciphertextSize : this.header.length + (end / CHUNK_SIZE) * ENC_CHUNK_SIZE;
    return { start: startByte, end: endByte };
  }

  partCiphertextSize(plainOffset: number, plainLength: number): number {
    const r = this.cipherRange(plainOffset, plainLength);
    return r.end - r.start;
  }

  /**
   * The plaintext bytes [offset, offset + length) that ciphertext bytes [start, end) depend on: the whole
   * chunks they overlap (none when the range lies inside the header).
   */
  plaintextFor(start: number, end: number): { offset: number; length: number } {
    this.checkRange(start, end);
    const h = this.header.length;
    if (end <= h) return { offset: 0, length: 0 };
    const first = Math.floor((Math.max(start, h) - h) / ENC_CHUNK_SIZE);
    const last = Math.floor((end - 1 - h) / ENC_CHUNK_SIZE);
    const offset = first * CHUNK_SIZE;
    return { offset, length: Math.min(this.plaintextSize, (last + 1) * CHUNK_SIZE) - offset };
  }

  /**
   * Any ciphertext range [start, end), for uploaders that cut the object into parts of a fixed ciphertext
   * size (lib-storage does). `plain` must hold exactly `plaintextFor(start, end)`. Chunks wholly inside
   * the range are sealed straight into `out`; the one or two it cuts are sealed aside and sliced, so a part
   * costs at most two extra chunks of work. Deterministic: a retried range gives the same bytes.
   */
  encryptRange(out: Buffer, start: number, end: number, plain: Buffer): number {
    const need = this.plaintextFor(start, end);
    if (plain.length !== need.length)
      throw new RangeError(`ciphertext [${start}, ${end}) needs ${need.length} plaintext bytes from ${need.offset}, got ${plain.length}`);
    if (out.length < end - start) throw new RangeError(`output buffer holds ${out.length} bytes, ${end - start} needed`);
    const h = this.header.length;
    if (start < h) this.header.copy(out, 0, start, Math.min(h, end));
    if (end <= h) return end - start;
    const scratch = Buffer.allocUnsafe(ENC_CHUNK_SIZE);
    // chunkCount(0) is 1: an empty plaintext still has its one empty final chunk
    for (let i = 0; i < chunkCount(plain.length); i++) {
      const k = need.offset / CHUNK_SIZE + i;
      const slice = plain.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE);
      const final = k === this.chunkCount - 1;
      const cStart = h + k * ENC_CHUNK_SIZE;
      const cEnd = cStart + slice.length + TAG_SIZE;
      if (cStart >= start && cEnd <= end) {
        sealChunks(this.#key, out.subarray(cStart - start), slice, k, final);
      } else {
        sealChunks(this.#key, scratch, slice, k, final);
        scratch.copy(out, Math.max(cStart, start) - start, Math.max(cStart, start) - cStart, Math.min(cEnd, end) - cStart);
      }
    }
    return end - start;
  }

  private checkRange(start: number, end: number): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start || end > this.ciphertextSize) {
      throw new RangeError(`ciphertext range [${start}, ${end}) is not inside the ${this.ciphertextSize}-byte object`);
    }
  }

  private chunkAt(plainOffset: number): number {
    if (!Number.isSafeInteger(plainOffset) || plainOffset < 0 || plainOffset % CHUNK_SIZE !== 0) {
      throw new RangeError(`a part must start on a 64 KiB chunk boundary, got offset ${plainOffset}`);
    }
    return plainOffset / CHUNK_SIZE;
  }

  /** Checks that a slice of `length` bytes at chunk `first` fits; returns its plaintext end offset. */
  private checkSlice(length: number, first: number, isLast: boolean): number {
    if (!Number.isSafeInteger(first) || first < 0 || first >= this.chunkCount) {
      throw new RangeError(`chunk ${first} is outside this plaintext (${this.chunkCount} chunks)`);
    }
    const end = first * CHUNK_SIZE + length;
    if (end > this.plaintextSize) throw new RangeError(`slice ends at byte ${end}, past the plaintext size ${this.plaintextSize}`);
    if (isLast !== (end === this.plaintextSize)) {
      throw new RangeError(
        isLast
          ? `slice marked last ends at byte ${end}, not at the plaintext size ${this.plaintextSize}`
          : `slice ends the plaintext at byte ${end} but is not marked last`,
      );
    }
    if (!isLast && (length === 0 || length % CHUNK_SIZE !== 0))
      throw new RangeError(`a slice before the last must be whole 64 KiB chunks, got ${length} bytes`);
    if (isLast && length === 0 && this.plaintextSize !== 0) throw new RangeError('the last slice must not be empty');
    return end;
  }
}

/** An encryptor for `plaintextSize` bytes to `recipients` (parse them with parseRecipient/parseRecipientsFile). */
export function ageEncryptor(recipients: readonly AgeRecipient[], plaintextSize: number): AgeEncryptor {
  return new AgeEncryptor(recipients, plaintextSize);
}
