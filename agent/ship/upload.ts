// Ships one verified file: skip if S3 already has the same content, stream it up while making sure
// the file does not change underneath, and count it as shipped only once HeadObject confirms size and sha256.
import type { FileHandle } from 'node:fs/promises';
import { FileParts } from './parts.js';
import { Transform, type TransformCallback } from 'node:stream';
import { ShipError, type ObjectInfo, type Store } from '../store/s3.js';
import { META } from '../store/ledger.js';

export interface ShipRequest {
  fh: FileHandle;
  name: string;
  size: number;
  /** SHA-256 of the whole file, from verification */
  sha256: string;
  /** mtime when it was verified: the upload fails if it differs at the end of the read */
  mtimeMs: number;
  producer: string;
  key: string;
  extraMetadata?: Record<string, string>;
}

export interface ShipOptions {
  signal?: AbortSignal;
  timeoutMs: number;
  /** the store's part size: the pooled reader's buffer size */
  partSize: number;
  bandwidthLimit?: number;
  onProgress?: (bytes: number) => void;
}

export interface ShipResult {
  key: string;
  /** false when S3 already held the same content */
  sent: boolean;
  info: ObjectInfo;
}

/** Where a different object already sits under the snapshot's key, ours goes beside it, never over it. */
export function conflictKey(key: string, sha256: string): string {
  return `${key}.${sha256.slice(0, 12)}`;
}

export async function ship(store: Store, req: ShipRequest, opts: ShipOptions): Promise<ShipResult> {
  let key = req.key;
  let existing = await store.head(key);
  if (existing && !sameContent(existing, req)) {
    key = conflictKey(req.key, req.sha256);
    existing = await store.head(key);
  }
  if (existing && sameContent(existing, req)) return { key, sent: false, info: existing };
  if (existing) throw new ShipError('verify', `both ${req.key} and ${key} hold other content than ${req.name}; not overwriting a backup — move one of them away`);

  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  // Parts come from a pooled reader (parts.ts); only a bandwidth limit needs the stream path, whose
  // throttle can wait between chunks.
  let source: ReturnType<FileHandle['createReadStream']> | undefined;
  let check: UnchangedCheck | undefined;
  let body: Transform | Uint8Array;
  if (opts.bandwidthLimit) {
    source = req.fh.createReadStream({ start: 0, end: req.size - 1, autoClose: false, highWaterMark: 1024 * 1024 });
    const c = new UnchangedCheck(req);
    check = c;
    // Errors must reach lib-storage through the last stream (pipe() does not forward them), or the
    // upload waits for an end that never comes.
    source.on('error', (e: NodeJS.ErrnoException) => {
      c.failure ??= new ShipError('local_io', `reading ${req.name} failed: ${e.code ?? e.message}`);
      c.destroy(c.failure);
    });
    const throttle = new Throttle(opts.bandwidthLimit);
    c.on('error', (e) => throttle.destroy(e));
    body = source.pipe(c).pipe(throttle);
  } else {
    body = new FileParts(req, opts.partSize);
  }
  try {
    await store.put(key, body, {
      size: req.size,
      signal,
      onProgress: opts.onProgress,
      metadata: {
        [META.sha256]: req.sha256,
        [META.name]: encodeURIComponent(req.name),
        [META.producer]: req.producer,
        [META.mtime]: String(req.mtimeMs),
        ...req.extraMetadata,
      },
    });
  } catch (err) {
    if (check?.failure) throw check.failure;
    if (timeout.aborted && !opts.signal?.aborted) throw new ShipError('timeout', `upload of ${req.name} to ${key} exceeded upload.timeout; it was aborted and will be retried`);
    throw err;
  } finally {
    source?.destroy();
  }
  if (check?.failure) throw check.failure;

  const info = await store.head(key);
  if (!info) throw new ShipError('verify', `${key} is missing right after its upload completed`);
  if (!sameContent(info, req)) {
    throw new ShipError('verify', `${key} in S3 does not match ${req.name} after upload (size ${info.size}/${req.size}, sha256 ${info.sha256 ?? 'none'}/${req.sha256})`);
  }
  return { key, sent: true, info };
}

function sameContent(o: ObjectInfo, req: { size: number; sha256: string }): boolean {
  return o.size === req.size && o.sha256 === req.sha256;
}

/**
 * Watches the file while its bytes go to S3. Verification hashed exactly these bytes; a writer that
 * changes the file in place changes its size or mtime, so an fstat of the open file at the end of the
 * stream (before the last part and Complete) proves the upload carries the verified bytes without a
 * second SHA-256 pass (~0.7 CPU s/GiB saved). A file replaced by rename keeps our open inode intact.
 */
class UnchangedCheck extends Transform {
  private seen = 0;
  failure: ShipError | undefined;

  constructor(private readonly req: ShipRequest) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const { fh, size, mtimeMs, name } = this.req;
    fh.stat().then(
      (st) => {
        if (this.seen === size && st.size === size && st.mtimeMs === mtimeMs) return cb();
        this.failure = new ShipError('changed', `${name} changed while it was being uploaded (read ${this.seen} of ${size} bytes, now ${st.size} bytes, mtime ${st.mtimeMs === mtimeMs ? 'unchanged' : 'changed'}); upload aborted, it will be verified again`);
        cb(this.failure);
      },
      (e: NodeJS.ErrnoException) => {
        this.failure = new ShipError('local_io', `cannot stat ${name} after reading it (${e.code ?? e.message})`);
        cb(this.failure);
      },
    );
  }
}

/** Token bucket on the read side, so an operator can keep the agent from competing with etcd's disk and network. */
class Throttle extends Transform {
  private allowance: number;
  private last = Date.now();

  constructor(private readonly bytesPerSecond: number) {
    super({ highWaterMark: 1024 * 1024 });
    this.allowance = bytesPerSecond;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const now = Date.now();
    this.allowance = Math.min(this.bytesPerSecond, this.allowance + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
    this.allowance -= chunk.length;
    if (this.allowance >= 0) return cb(null, chunk);
    const wait = (-this.allowance / this.bytesPerSecond) * 1000;
    setTimeout(() => cb(null, chunk), wait);
  }
}
