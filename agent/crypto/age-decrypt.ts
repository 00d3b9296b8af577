// Reading age files as a stream: decryption with identities (chunk by chunk, bounded memory, every chunk
// authenticated before any of its bytes are released) and a structure check for when no identity is at hand.
import { createDecipheriv } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { HeaderReader, openHeader, stanzaSummary, type ParsedHeader } from './age-header.js';
import type { AgeIdentity, Stanza } from './age-keys.js';
import { chunkNonce, ENC_CHUNK_SIZE, NONCE_SIZE, payloadKey, plaintextSizeOf } from './age-stream.js';
import { AgeError, type AgeFailure } from './errors.js';
import { TAG_SIZE, unb64 } from './primitives.js';

/** A FIFO of received buffers from which exact byte counts are taken, copying only across boundaries. */
class ByteQueue {
  private readonly parts: Buffer[] = [];
  private head = 0;
  length = 0;
  push(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
  }
  take(n: number): Buffer {
    const first = this.parts[0];
    let out: Buffer;
    if (first && first.length - this.head >= n) {
      out = first.subarray(this.head, this.head + n);
      this.advance(n);
    } else {
      out = Buffer.allocUnsafe(n);
      for (let w = 0; w < n;) {
        const p = this.parts[0]!;
        const k = Math.min(n - w, p.length - this.head);
        p.copy(out, w, this.head, this.head + k);
        w += k;
        this.advance(k);
      }
    }
    this.length -= n;
    return out;
  }
  private advance(k: number): void {
    this.head += k;
    if (this.head === this.parts[0]!.length) {
      this.parts.shift();
      this.head = 0;
    }
  }
}

export function openChunk(key: Buffer, nonce: Buffer, sealed: Buffer, index: number, last: boolean): Buffer | undefined {
  const d = createDecipheriv('chacha20-poly1305', key, chunkNonce(nonce, index, last), { authTagLength: TAG_SIZE });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const out = d.update(sealed.subarray(0, sealed.length - TAG_SIZE));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return out;
}

/**
 * Push-style age decryption: `update` returns plaintext as chunks authenticate, `finish` checks the end.
 * Bytes released before an error are authentic chunks in their right place, but the file as a whole is
 * proven only when `finish` returns: a consumer must treat earlier output as provisional.
 */
export class AgeDecryption {
  private readonly reader = new HeaderReader();
  private header: ParsedHeader | undefined;
  private readonly queue = new ByteQueue();
  private fileKey: Buffer | undefined;
  private key: Buffer | undefined;
  private readonly nonce = Buffer.alloc(12);
  private index = 0;
  private failed: AgeError | undefined;
  private done = false;
  /** Plaintext bytes released so far. */
  plaintextBytes = 0;

  constructor(private readonly identities: readonly AgeIdentity[]) {
    if (identities.length === 0) throw new Error('age decryption needs at least one identity');
  }

  /** The header's stanzas, once it has been read. */
  get stanzas(): readonly Stanza[] | undefined {
    return this.header?.stanzas;
  }

  update(data: Buffer): Buffer[] {
    return this.guard(() => {
      if (this.done) throw new AgeError('trailing_data', 'data after the end of the input');
      if (!this.header) {
        const got = this.reader.push(data);
        if (!got) return [];
        this.header = got.header;
        this.fileKey = openHeader(got.header, this.identities);
        data = got.rest;
      }
      this.queue.push(data);
      this.readNonce();
      const out: Buffer[] = [];
      // a chunk is final only if nothing follows it, so one sealed chunk is always held back
      while (this.key && this.queue.length > ENC_CHUNK_SIZE) out.push(this.middleChunk(this.queue.take(ENC_CHUNK_SIZE)));
      return out;
    });
  }

  finish(): Buffer[] {
    return this.guard(() => {
      if (this.done) return [];
      this.done = true;
      if (!this.header) throw this.reader.end();
      this.readNonce();
      if (!this.key) throw new AgeError('truncated', `the input ends ${this.queue.length} bytes into the 16-byte payload nonce`);
      const rest = this.queue.take(this.queue.length);
      // one sealed chunk is always held back, so nothing is left only when the payload had no chunk at all
      if (rest.length === 0) throw new AgeError('truncated', 'the payload has no chunks');
      if (rest.length < TAG_SIZE) throw new AgeError('truncated', `the final chunk is ${rest.length} bytes, shorter than its 16-byte tag (cut short)`);
      const plain = openChunk(this.key, this.nonce, rest, this.index, true);
      if (!plain) {
        if (rest.length === ENC_CHUNK_SIZE && openChunk(this.key, this.nonce, rest, this.index, false)) {
          throw new AgeError('truncated', `chunk ${this.index} is intact but not marked final: the payload was cut at a chunk boundary`);
        }
        throw new AgeError('tampered', `${this.where(this.index, rest.length)} failed authentication: changed, cut short, or not from this file`);
      }
      if (plain.length === 0 && this.index > 0) throw new AgeError('tampered', `the final chunk (${this.index}) is empty, which age forbids`);
      this.index++;
      this.plaintextBytes += plain.length;
      return plain.length ? [plain] : [];
    });
  }

  private readNonce(): void {
    if (this.key || !this.fileKey || this.queue.length < NONCE_SIZE) return;
    this.key = payloadKey(this.fileKey, Buffer.from(this.queue.take(NONCE_SIZE)));
  }

  private middleChunk(sealed: Buffer): Buffer {
    const key = this.key!;
    const plain = openChunk(key, this.nonce, sealed, this.index, false);
    if (!plain) {
      if (openChunk(key, this.nonce, sealed, this.index, true)) {
        throw new AgeError(
          'trailing_data',
          `data follows the final chunk (${this.index}) at ciphertext byte ${this.header!.size + NONCE_SIZE + (this.index + 1) * ENC_CHUNK_SIZE}`,
        );
      }
      throw new AgeError('tampered', `${this.where(this.index)} failed authentication: changed, reordered, or not from this file`);
    }
    this.index++;
    this.plaintextBytes += plain.length;
    return plain;
  }

  /** "chunk 3 (ciphertext bytes 196800–262351)": lets a caller tell which upload part is bad. */
  private where(index: number, length = ENC_CHUNK_SIZE): string {
    const start = this.header!.size + NONCE_SIZE + index * ENC_CHUNK_SIZE;
    return `chunk ${index} (ciphertext bytes ${start}–${start + length - 1})`;
  }

  private guard(f: () => Buffer[]): Buffer[] {
    if (this.failed) throw this.failed;
    try {
      return f();
    } catch (e) {
      if (e instanceof AgeError) this.failed = e;
      throw e;
    }
  }
}

/** A Transform from age ciphertext to plaintext; fails with an AgeError that says what is wrong and where. */
export function ageDecryptor(identities: readonly AgeIdentity[]): Transform {
  const d = new AgeDecryption(identities);
  const run = (t: Transform, f: () => Buffer[], cb: TransformCallback): void => {
    let out: Buffer[];
    try {
      out = f();
    } catch (e) {
      cb(e as Error);
      return;
    }
    for (const b of out) t.push(b);
    cb();
  };
  return new Transform({
    transform(chunk: Buffer | string, _enc, cb) {
      run(this, () => d.update(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)), cb);
    },
    flush(cb) {
      run(this, () => d.finish(), cb);
    },
  });
}

export type AgeStructure =
  | {
      ok: true;
      /** Header bytes, nonce excluded. */
      headerSize: number;
      ciphertextSize: number;
      /** The plaintext size the payload length implies. */
      plaintextSize: number;
      /** Stanza count per type, in header order of first appearance. */
      stanzas: { type: string; count: number }[];
      summary: string;
    }
  | { ok: false; reason: AgeFailure; detail: string };

/**
 * Checks age ciphertext without any identity: header syntax (version, stanzas, canonical base64, MAC line),
 * the X25519 and ssh-ed25519 stanzas' shapes, and that the payload length is one a real plaintext gives
 * (64 KiB + 16 chunks, a non-empty final chunk). It cannot prove integrity, which needs the file key: not the
 * header MAC, not any chunk's content or order, not that a stanza opens for anyone, and not truncation at a
 * chunk boundary (dropping a whole final chunk can leave a length that is still valid). Compare
 * `ciphertextSize`/`plaintextSize` with values recorded at upload time to catch that.
 */
export class AgeStructureCheck {
  private readonly reader = new HeaderReader();
  private header: ParsedHeader | undefined;
  private payload = 0;
  private failure: { reason: AgeFailure; detail: string } | undefined;

  update(data: Buffer): void {
    if (this.failure) return;
    if (this.header) {
      this.payload += data.length;
      return;
    }
    try {
      const got = this.reader.push(data);
      if (!got) return;
      this.header = got.header;
      this.payload = got.rest.length;
      for (const s of got.header.stanzas) checkStanzaShape(s);
    } catch (e) {
      if (!(e instanceof AgeError)) throw e;
      this.failure = { reason: e.reason, detail: e.message };
    }
  }

  finish(): AgeStructure {
    if (this.failure) return { ok: false, ...this.failure };
    if (!this.header) {
      try {
        throw this.reader.end();
      } catch (e) {
        const err = e as AgeError;
        return { ok: false, reason: err.reason, detail: err.message };
      }
    }
    const plaintextSize = plaintextSizeOf(this.payload);
    if (plaintextSize === undefined) {
      return { ok: false, reason: 'truncated', detail: `a payload of ${this.payload} bytes is not a whole number of age chunks: cut short or padded` };
    }
    const counts = new Map<string, number>();
    for (const s of this.header.stanzas) counts.set(s.type, (counts.get(s.type) ?? 0) + 1);
    return {
      ok: true,
      headerSize: this.header.size,
      ciphertextSize: this.header.size + this.payload,
      plaintextSize,
      stanzas: [...counts].map(([type, count]) => ({ type, count })),
      summary: stanzaSummary(this.header.stanzas),
    };
  }
}

export function checkAgeStructure(): AgeStructureCheck {
  return new AgeStructureCheck();
}

function checkStanzaShape(s: Stanza): void {
  const args = s.type === 'X25519' ? 1 : s.type === 'ssh-ed25519' ? 2 : undefined;
  if (args === undefined) return;
  const share = s.args[args - 1];
  const shareBytes = share === undefined ? undefined : unb64(share);
  const tagOk = s.type !== 'ssh-ed25519' || unb64(s.args[0] ?? '')?.length === 4;
  if (s.args.length !== args || shareBytes?.length !== 32 || !tagOk || s.body.length !== 32) {
    throw new AgeError('header_syntax', `malformed ${s.type} stanza: wrong arguments or body size`);
  }
}
