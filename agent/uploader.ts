// Ships one verified file: skip if S3 already has the same content, stream it up while hashing
// the bytes actually sent, and count it as shipped only once HeadObject confirms size and sha256.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { ShipError, type ObjectInfo, type Store } from './store.js';
import { META } from './ledger.js';

export interface ShipRequest {
  fh: FileHandle;
  name: string;
  size: number;
  /** SHA-256 of the whole file, from verification */
  sha256: string;
  mtimeMs: number;
  producer: string;
  key: string;
  extraMetadata?: Record<string, string>;
}

export interface ShipOptions {
  signal?: AbortSignal;
  timeoutMs: number;
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
  const source = req.fh.createReadStream({ start: 0, end: req.size - 1, autoClose: false, highWaterMark: 1024 * 1024 });
  const check = new SentBytesCheck(req.size, req.sha256, req.name);
  let body: NodeJS.ReadableStream & Transform = source.pipe(check);
  source.on('error', (e) => check.destroy(new ShipError('local_io', `reading ${req.name} failed: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
  if (opts.bandwidthLimit) body = body.pipe(new Throttle(opts.bandwidthLimit));
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
    if (check.failure) throw check.failure;
    if (timeout.aborted && !opts.signal?.aborted) throw new ShipError('timeout', `upload of ${req.name} to ${key} exceeded upload.timeout; it was aborted and will be retried`);
    throw err;
  } finally {
    source.destroy();
  }
  if (check.failure) throw check.failure;

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
 * Hashes the bytes on their way to S3. If they differ from what was verified (the file was changed
 * in place after verification) the stream fails before the last part, so Complete is never sent.
 */
class SentBytesCheck extends Transform {
  private readonly hash = createHash('sha256');
  private seen = 0;
  failure: ShipError | undefined;

  constructor(
    private readonly size: number,
    private readonly sha256: string,
    private readonly name: string,
  ) {
    super({ highWaterMark: 1024 * 1024 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.seen += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const digest = this.hash.digest('hex');
    if (this.seen !== this.size || digest !== this.sha256) {
      this.failure = new ShipError('changed', `${this.name} changed while it was being uploaded (read ${this.seen} of ${this.size} bytes, sha256 ${digest.slice(0, 12)}… expected ${this.sha256.slice(0, 12)}…); upload aborted, it will be verified again`);
      cb(this.failure);
      return;
    }
    cb();
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
