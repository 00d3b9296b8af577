// An in-memory Store with S3's semantics, for unit tests of the rooms above the store: multipart uploads
// that only become objects on Complete, part checksums checked the way a server that verifies them does
// (or ignored, like Ceph RGW 16 and Swift ignore CRC32), paged listings, ranged reads, Object Lock, and
// failures injected per operation. The store conformance suite runs against it as against RGW and Swift.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { CompletedPart, CreateOptions, GetOptions, ObjectInfo, ObjectLock, PartChecksum, Store, UploadInfo } from '../../agent/store/store.js';

export type Op =
  | 'createUpload'
  | 'uploadPart'
  | 'completeUpload'
  | 'abortUpload'
  | 'listUploads'
  | 'putObject'
  | 'head'
  | 'list'
  | 'get'
  | 'delete'
  | 'setRetention'
  | 'check';

/** An error shaped like the SDK's: name, HTTP status, message. */
export function s3Error(name: string, status: number, message = name): Error {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });
}

interface Obj {
  body: Buffer;
  metadata: Record<string, string>;
  lastModified: Date;
  etag: string;
  retainUntil?: Date;
  lockMode?: string;
}

interface Upload {
  key: string;
  opts: CreateOptions;
  initiated: Date;
  parts: Map<number, { body: Buffer; etag: string }>;
}

export interface MemoryStoreOptions {
  /** a wrong CRC32 header on a part is refused (AWS) or ignored (Ceph RGW 16, Swift 2.30) */
  checksCrc32?: boolean;
  /** keys per ListObjectsV2 page */
  pageSize?: number;
  /** most parts one upload takes (Swift's default: 1000) */
  maxParts?: number;
  objectLock?: boolean;
  /** the lock given at CreateMultipartUpload is dropped at Complete, as Ceph RGW 16 does */
  dropsMultipartLock?: boolean;
  /** parts of an upload under Object Lock need Content-MD5 or a checksum header (AWS) */
  lockNeedsPartChecksum?: boolean;
  clock?: () => number;
}

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

export class MemoryStore implements Store {
  readonly location = 's3://memory';
  readonly objects = new Map<string, Obj>();
  readonly uploads = new Map<string, Upload>();
  /** every call, in order, for tests that care how the store was used */
  readonly calls: { op: Op; key?: string }[] = [];
  private readonly failures: { op: Op; err: Error; times: number; when?: (key?: string) => boolean }[] = [];
  private nextId = 1;
  closed = false;

  constructor(readonly opts: MemoryStoreOptions = {}) {}

  private now(): Date {
    return new Date(this.opts.clock ? this.opts.clock() : Date.now());
  }

  /** The next `times` calls of `op` (on keys `when` accepts) fail with `err`. */
  failNext(op: Op, err: Error, times = 1, when?: (key?: string) => boolean): void {
    this.failures.push({ op, err, times, ...(when ? { when } : {}) });
  }

  /** An object put there by someone else (another tool, an earlier agent). */
  seed(key: string, body: Buffer, metadata: Record<string, string> = {}, lastModified = this.now()): void {
    this.objects.set(key, { body, metadata, lastModified, etag: `"${md5(body)}"` });
  }

  private enter(op: Op, key?: string): void {
    this.calls.push({ op, ...(key !== undefined ? { key } : {}) });
    if (this.closed) throw new Error('store closed');
    const f = this.failures.find((x) => x.op === op && (!x.when || x.when(key)));
    if (f) {
      if (--f.times <= 0) this.failures.splice(this.failures.indexOf(f), 1);
      throw f.err;
    }
  }

  async createUpload(key: string, opts: CreateOptions): Promise<string> {
    this.enter('createUpload', key);
    opts.signal?.throwIfAborted();
    if (opts.lock && !this.opts.objectLock) throw s3Error('InvalidRequest', 400, 'Bucket is missing Object Lock Configuration');
    const id = `upload-${this.nextId++}`;
    this.uploads.set(id, { key, opts, initiated: this.now(), parts: new Map() });
    return id;
  }

  async uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Uint8Array,
    checksum: PartChecksum,
    signal?: AbortSignal,
  ): Promise<{ etag: string }> {
    this.enter('uploadPart', key);
    signal?.throwIfAborted();
    const u = this.uploads.get(uploadId);
    if (!u || u.key !== key) throw s3Error('NoSuchUpload', 404);
    if (partNumber > (this.opts.maxParts ?? 10_000))
      throw s3Error('InvalidArgument', 400, `Part number must be an integer between 1 and ${this.opts.maxParts ?? 10_000}, inclusive`);
    const b = Buffer.from(body);
    if (this.opts.lockNeedsPartChecksum && u.opts.lock && checksum.kind === 'sha256')
      throw s3Error('InvalidRequest', 400, 'Content-MD5 OR x-amz-checksum- HTTP header is required for Put Part requests with Object Lock parameters');
    if (checksum.kind === 'sha256' && createHash('sha256').update(b).digest('hex') !== checksum.value) throw s3Error('XAmzContentSHA256Mismatch', 400);
    if (checksum.kind === 'md5' && createHash('md5').update(b).digest('base64') !== checksum.value) throw s3Error('BadDigest', 400);
    if (checksum.kind === 'crc32' && this.opts.checksCrc32) {
      const c = Buffer.alloc(4);
      c.writeUInt32BE(crc32(b) >>> 0);
      if (c.toString('base64') !== checksum.value) throw s3Error('BadDigest', 400, 'The CRC32 you specified did not match the calculated checksum.');
    }
    const etag = `"${md5(b)}"`;
    u.parts.set(partNumber, { body: b, etag });
    return { etag };
  }

  async completeUpload(key: string, uploadId: string, parts: readonly CompletedPart[], signal?: AbortSignal): Promise<void> {
    this.enter('completeUpload', key);
    signal?.throwIfAborted();
    const u = this.uploads.get(uploadId);
    if (!u || u.key !== key) throw s3Error('NoSuchUpload', 404);
    const bodies: Buffer[] = [];
    let prev = 0;
    for (const [i, p] of parts.entries()) {
      if (p.partNumber <= prev) throw s3Error('InvalidPartOrder', 400);
      prev = p.partNumber;
      const stored = u.parts.get(p.partNumber);
      if (!stored || stored.etag !== p.etag) throw s3Error('InvalidPart', 400);
      if (i < parts.length - 1 && stored.body.length < 5 * 1024 * 1024) throw s3Error('EntityTooSmall', 400);
      bodies.push(stored.body);
    }
    const body = Buffer.concat(bodies);
    const digest = createHash('md5')
      .update(Buffer.concat(parts.map((p) => Buffer.from(u.parts.get(p.partNumber)!.etag.replace(/"/g, ''), 'hex'))))
      .digest('hex');
    this.objects.set(key, {
      body,
      metadata: { ...u.opts.metadata },
      lastModified: this.now(),
      etag: `"${digest}-${parts.length}"`,
      ...(u.opts.lock && !this.opts.dropsMultipartLock ? { retainUntil: u.opts.lock.until, lockMode: u.opts.lock.mode } : {}),
    });
    this.uploads.delete(uploadId);
  }

  async abortUpload(key: string, uploadId: string): Promise<void> {
    this.enter('abortUpload', key);
    if (!this.uploads.delete(uploadId)) throw s3Error('NoSuchUpload', 404);
  }

  async listUploads(prefix: string): Promise<UploadInfo[]> {
    this.enter('listUploads', prefix);
    return [...this.uploads.entries()].filter(([, u]) => u.key.startsWith(prefix)).map(([id, u]) => ({ key: u.key, uploadId: id, initiated: u.initiated }));
  }

  async putObject(key: string, body: Uint8Array, opts: CreateOptions): Promise<void> {
    this.enter('putObject', key);
    opts.signal?.throwIfAborted();
    if (opts.lock && !this.opts.objectLock) throw s3Error('InvalidRequest', 400, 'Bucket is missing Object Lock Configuration');
    const old = this.objects.get(key);
    if (old?.retainUntil && old.retainUntil > this.now()) throw s3Error('AccessDenied', 403, 'Access Denied because object protected by object lock');
    const b = Buffer.from(body);
    this.objects.set(key, {
      body: b,
      metadata: { ...opts.metadata },
      lastModified: this.now(),
      etag: `"${md5(b)}"`,
      ...(opts.lock ? { retainUntil: opts.lock.until, lockMode: opts.lock.mode } : {}),
    });
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    this.enter('head', key);
    const o = this.objects.get(key);
    if (!o) return undefined;
    return {
      key,
      size: o.body.length,
      lastModified: o.lastModified,
      etag: o.etag,
      metadata: { ...o.metadata },
      ...(o.retainUntil ? { retainUntil: o.retainUntil, lockMode: o.lockMode } : {}),
    };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
    const page = this.opts.pageSize ?? 1000;
    for (let i = 0; i < keys.length || i === 0; i += page) {
      this.enter('list', prefix);
      for (const k of keys.slice(i, i + page)) {
        const o = this.objects.get(k);
        if (o) yield { key: k, size: o.body.length, lastModified: o.lastModified, etag: o.etag };
      }
      if (keys.length === 0) break;
    }
  }

  async get(key: string, opts: GetOptions = {}): Promise<{ body: AsyncIterable<Uint8Array>; size: number } | undefined> {
    this.enter('get', key);
    opts.signal?.throwIfAborted();
    const o = this.objects.get(key);
    if (!o) return undefined;
    const body = opts.range ? o.body.subarray(opts.range.start, Math.min(o.body.length, opts.range.end + 1)) : o.body;
    async function* chunks(): AsyncIterable<Uint8Array> {
      for (let i = 0; i < body.length; i += 65536) yield body.subarray(i, i + 65536);
    }
    return { body: chunks(), size: body.length };
  }

  async delete(key: string): Promise<void> {
    this.enter('delete', key);
    const o = this.objects.get(key);
    if (o?.retainUntil && o.retainUntil > this.now()) throw s3Error('AccessDenied', 403, 'Access Denied because object protected by object lock');
    this.objects.delete(key);
  }

  async setRetention(key: string, lock: ObjectLock): Promise<void> {
    this.enter('setRetention', key);
    if (!this.opts.objectLock) throw s3Error('InvalidRequest', 400, 'Bucket is missing Object Lock Configuration');
    const o = this.objects.get(key);
    if (!o) throw s3Error('NoSuchKey', 404);
    // neither mode lets a retention be shortened (GOVERNANCE only with a bypass the agent never asks for)
    if (o.retainUntil && o.retainUntil > lock.until) throw s3Error('AccessDenied', 403, 'proposed retain-until date shortens an existing retention period');
    o.retainUntil = lock.until;
    o.lockMode = lock.mode;
  }

  async check(): Promise<void> {
    this.enter('check');
  }

  async objectLockEnabled(): Promise<boolean | undefined> {
    return Boolean(this.opts.objectLock);
  }

  close(): void {
    this.closed = true;
  }
}
