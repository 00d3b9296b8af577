// Decides whether bytes are a complete, intact etcd snapshot, raw or zipped, from their content alone: a file
// that exists is not a file that is finished (in-place zips, stalled writers), so names and quiet periods are
// never trusted. The same verifier serves every reader: the upload's one read pass, `verify` and `fetch`
// streaming from S3, `prune` and `upload` reading a local file. It is opened with a few small reads at known
// places (the head; a zip's directory at the tail), then fed every byte once, in order. Memory is fixed.
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { chunks, EndedEarly, NotRegularError, openRegular, readAt } from '../base/files.js';
import { formatMismatch, formatOf, META_MAGIC, reject, sniffFormat, type Rejected, type SnapshotFormat, type Verdict } from './format.js';
import type { DeepCheck } from './deep.js';
import { checkRawHead, HEAD_BYTES, QUICK_HEAD, RawStream, TRAILER } from './raw.js';
import { openZip, ZipStream } from './zip-verify.js';
import type { ReadAt } from './zip.js';

export interface VerifyOptions {
  /** what the caller expects; the content decides when absent */
  format?: SnapshotFormat;
  /** The file's base name; picks the zip entry (`<name>.zip` holds `<name>`). */
  name?: string;
  /** the deep check of the database's pages, when it runs */
  deep?: DeepCheck;
  signal?: AbortSignal;
}

/** A snapshot being verified: feed it every byte in order, then ask for the verdict. */
export interface Verifier {
  readonly format: SnapshotFormat;
  /** Resolves once `chunk` is consumed; a rejection means feeding more is pointless. */
  update(chunk: Buffer): Promise<Rejected | undefined>;
  finish(): Promise<Verdict>;
  destroy(): void;
}

class RawVerifier implements Verifier {
  readonly format = 'raw';
  private fed = 0;
  constructor(
    private readonly size: number,
    private readonly raw: RawStream,
  ) {}

  async update(chunk: Buffer): Promise<Rejected | undefined> {
    this.fed += chunk.length;
    this.raw.update(chunk);
    return this.raw.failure;
  }

  async finish(): Promise<Verdict> {
    const r = this.raw.finish();
    if ('ok' in r) return r;
    return { ok: true, format: 'raw', size: this.size, sha256: r.sha256, dbSize: this.size, ...(r.db ? { db: r.db } : {}) };
  }

  destroy(): void {}
}

class ZipVerifier implements Verifier {
  readonly format = 'zip';
  private readonly hash: Hash = createHash('sha256');
  private fed = 0;
  constructor(
    private readonly size: number,
    private readonly zip: ZipStream,
  ) {}

  async update(chunk: Buffer): Promise<Rejected | undefined> {
    this.fed += chunk.length;
    // zlib inflates on the thread pool while this thread hashes the same bytes
    const pending = this.zip.update(chunk);
    this.hash.update(chunk);
    return pending;
  }

  async finish(): Promise<Verdict> {
    if (this.fed !== this.size) return reject('truncated', `zip ended at byte ${this.fed} of ${this.size}`);
    const r = await this.zip.finish();
    if ('ok' in r) return r;
    return { ok: true, format: 'zip', size: this.size, sha256: this.hash.digest('hex'), dbSize: r.dbSize, entry: r.entry, ...(r.db ? { db: r.db } : {}) };
  }

  destroy(): void {
    this.zip.destroy();
  }
}

/**
 * The cheap checks, a few KiB of reads at known places: raw → size alignment, meta pages, page count × page
 * size; zip → end records, central directory, local headers, the snapshot entry. A Rejected verdict here
 * usually means "not finished yet". Otherwise a verifier ready to be fed the bytes from offset 0.
 */
export async function openVerifier(read: ReadAt, size: number, opts: VerifyOptions = {}): Promise<Verifier | Rejected> {
  assertSize(size);
  const first = await read(0, Math.min(size, QUICK_HEAD));
  const format = opts.format ?? formatOf(first, opts.name);
  if (format === 'zip') {
    const opened = await openZip(read, size, opts.name, true);
    if ('ok' in opened) return opened;
    return new ZipVerifier(size, new ZipStream(opened, opts.deep));
  }
  const mismatch = formatMismatch(sniffFormat(first), 'raw');
  if (mismatch) return mismatch;
  const head = headIsEnough(first) ? first : await read(0, Math.min(size, HEAD_BYTES));
  const layout = checkRawHead(head, size);
  if ('ok' in layout) return layout;
  return new RawVerifier(size, new RawStream(size, false, layout, opts.deep?.(size - TRAILER)));
}

// The raw checks need both meta pages: the first 8 KiB hold them with 4 KiB pages. A larger or unreadable
// page size needs the first 64 KiB.
function headIsEnough(head: Buffer): boolean {
  if (head.length < QUICK_HEAD) return true;
  if (head.readUInt32LE(16) !== META_MAGIC) return false;
  const ps = head.readUInt32LE(24);
  return ps >= 512 && ps <= 65536 && (ps & (ps - 1)) === 0 && ps + 80 <= head.length;
}

/** The cheap checks alone, for a file that may still be being written. Undefined when it may be complete. */
export async function quickCheck(fh: FileHandle, size: number, format: SnapshotFormat, name?: string): Promise<Rejected | undefined> {
  if (format === 'zip') {
    // the name may not pick one entry yet; several candidates only matter to the full verification
    const opened = await openZip((p, l) => readAt(fh, p, l), size, name, false);
    return 'ok' in opened ? opened : undefined;
  }
  const v = await openVerifier((p, l) => readAt(fh, p, l), size, { format, name });
  if ('ok' in v) return v;
  v.destroy();
  return undefined;
}

/**
 * Full verification of the first `size` bytes of an open file, in one sequential pass. Throws only on I/O
 * errors and on abort (the signal's reason); every problem with the content is a Rejected verdict.
 */
export async function verifyFile(fh: FileHandle, size: number, opts: VerifyOptions = {}): Promise<Verdict> {
  opts.signal?.throwIfAborted();
  const v = await openVerifier((p, l) => readAt(fh, p, l), size, opts);
  if ('ok' in v) return v;
  try {
    for await (const chunk of chunks(fh, size, opts.signal)) {
      const bad = await v.update(chunk);
      if (bad) return bad;
    }
  } catch (err) {
    if (err instanceof EndedEarly) return reject('truncated', err.message);
    throw err;
  } finally {
    v.destroy();
  }
  const now = (await fh.stat()).size;
  if (now !== size) return reject('truncated', `file changed size while being verified (${size} → ${now} bytes)`);
  return v.finish();
}

/**
 * Opens `path` without following a final symlink and without blocking on a FIFO, refuses anything but a
 * regular file, verifies it, closes it. I/O errors (ENOENT, EACCES, EIO) throw.
 */
export async function verifyPath(path: string, opts: Omit<VerifyOptions, 'name'> = {}): Promise<Verdict> {
  let opened;
  try {
    opened = await openRegular(path);
  } catch (err) {
    if (err instanceof NotRegularError) return reject('format', err.message);
    throw err;
  }
  const { fh, st } = opened;
  try {
    return await verifyFile(fh, st.size, { ...opts, name: basename(path) });
  } finally {
    await fh.close();
  }
}

function assertSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`size must be a non-negative integer, got ${size}`);
}
