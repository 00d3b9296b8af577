// Reading any plaintext range of an age file without reading the rest: each 64 KiB chunk is sealed on its
// own, so a range needs only the header (for the file key) and the chunks covering it. `verify` uses this
// to read a zip's directory at the end of an encrypted object before streaming the object once.
import { openChunk } from './age-decrypt.js';
import { HeaderReader, openHeader } from './age-header.js';
import type { AgeIdentity } from './age-keys.js';
import { CHUNK_SIZE, chunkCount, ENC_CHUNK_SIZE, NONCE_SIZE, payloadKey, plaintextSizeOf } from './age-stream.js';
import { AgeError } from './errors.js';

/** Reads `len` ciphertext bytes at `pos` (fewer at the end). */
export type ReadCipher = (pos: number, len: number) => Promise<Buffer>;

export class AgeRandomAccess {
  private constructor(
    private readonly read: ReadCipher,
    private readonly key: Buffer,
    /** where the first sealed chunk starts */
    private readonly payloadStart: number,
    readonly plaintextSize: number,
  ) {}

  /** Reads and opens the header (failing as the stream decryptor does: no identity, bad MAC, syntax). */
  static async open(read: ReadCipher, cipherSize: number, identities: readonly AgeIdentity[]): Promise<AgeRandomAccess> {
    const reader = new HeaderReader();
    let pos = 0;
    let got: ReturnType<HeaderReader['push']>;
    do {
      const buf = await read(pos, 4096);
      if (buf.length === 0) throw new AgeError('truncated', 'the file ends inside the age header');
      pos += buf.length;
      got = reader.push(buf);
    } while (!got);
    const fileKey = openHeader(got.header, identities);
    const nonce = (await read(got.header.size, NONCE_SIZE)).subarray(0, NONCE_SIZE);
    if (nonce.length < NONCE_SIZE) throw new AgeError('truncated', 'the file ends inside the payload nonce');
    const payloadStart = got.header.size + NONCE_SIZE;
    const plain = plaintextSizeOf(cipherSize - got.header.size);
    if (plain === undefined) throw new AgeError('truncated', `a payload of ${cipherSize - got.header.size} bytes is not a whole number of age chunks`);
    return new AgeRandomAccess(read, payloadKey(fileKey, nonce), payloadStart, plain);
  }

  /** Scratch space for each chunk's 12-byte AEAD nonce (never the file's 16-byte payload nonce). */
  private readonly chunkNonce = Buffer.alloc(12);

  /** Plaintext bytes [pos, pos + len), every chunk read authenticated. */
  async readPlain(pos: number, len: number): Promise<Buffer> {
    const end = Math.min(this.plaintextSize, pos + len);
    if (pos >= end) return Buffer.alloc(0);
    const count = chunkCount(this.plaintextSize);
    const first = Math.floor(pos / CHUNK_SIZE);
    const last = Math.min(count - 1, Math.floor((end - 1) / CHUNK_SIZE));
    const cStart = this.payloadStart + first * ENC_CHUNK_SIZE;
    const sealed = await this.read(cStart, (last - first + 1) * ENC_CHUNK_SIZE);
    const out: Buffer[] = [];
    for (let i = first; i <= last; i++) {
      const piece = sealed.subarray((i - first) * ENC_CHUNK_SIZE, (i - first + 1) * ENC_CHUNK_SIZE);
      const plain = openChunk(this.key, this.chunkNonce, piece, i, i === count - 1);
      if (!plain) throw new AgeError('tampered', `chunk ${i} failed authentication: changed, cut short, or not from this file`);
      out.push(plain);
    }
    const all = Buffer.concat(out);
    return all.subarray(pos - first * CHUNK_SIZE, end - first * CHUNK_SIZE);
  }
}
