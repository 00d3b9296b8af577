// The narrow storage interface the rest of the agent sees. S3 lives behind it (s3.ts); tests run one
// conformance suite against every implementation (the in-memory one, Ceph RGW, OpenStack Swift).

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified?: Date;
  etag?: string;
  /** user metadata (HeadObject only; a listing has none) */
  metadata?: Record<string, string>;
  /** Object Lock: the object cannot be deleted before this time */
  retainUntil?: Date;
  lockMode?: string;
}

export interface UploadInfo {
  key: string;
  uploadId: string;
  initiated?: Date;
}

/**
 * How the store is asked to prove that it received a part intact. `sha256`: the SigV4-signed payload hash
 * (hex), which every S3 server checks before storing. `crc32`: the x-amz-checksum-crc32 header (base64),
 * which only some servers check (the probe in probe.ts tells). `md5`: Content-MD5 (base64).
 */
export type PartIntegrity = 'sha256' | 'crc32' | 'md5';
export interface PartChecksum {
  kind: PartIntegrity;
  value: string;
}

export interface ObjectLock {
  mode: 'GOVERNANCE' | 'COMPLIANCE';
  until: Date;
}

export interface CreateOptions {
  metadata: Record<string, string>;
  contentType?: string;
  /** set at CreateMultipartUpload when parts carry CRC32 headers (AWS needs it to accept them) */
  checksumAlgorithm?: 'CRC32';
  lock?: ObjectLock;
  signal?: AbortSignal;
}

export interface CompletedPart {
  partNumber: number;
  etag: string;
  checksumCrc32?: string;
}

export interface GetOptions {
  /** inclusive byte range */
  range?: { start: number; end: number };
  signal?: AbortSignal;
}

export interface Store {
  /** where objects go, for log lines: `s3://bucket at endpoint` */
  readonly location: string;

  createUpload(key: string, opts: CreateOptions): Promise<string>;
  uploadPart(key: string, uploadId: string, partNumber: number, body: Uint8Array, checksum: PartChecksum, signal?: AbortSignal): Promise<{ etag: string }>;
  completeUpload(key: string, uploadId: string, parts: readonly CompletedPart[], signal?: AbortSignal): Promise<void>;
  abortUpload(key: string, uploadId: string): Promise<void>;
  listUploads(prefix: string): Promise<UploadInfo[]>;

  /** One small object in one request, its Content-MD5 checked by the server (manifests, signatures, probes). */
  putObject(key: string, body: Uint8Array, opts: CreateOptions): Promise<void>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** every object under the prefix, page by page */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** undefined when there is no such object */
  get(key: string, opts?: GetOptions): Promise<{ body: AsyncIterable<Uint8Array>; size: number } | undefined>;
  delete(key: string): Promise<void>;
  /**
   * Puts Object Lock retention on an existing object (PutObjectRetention). Ceph RGW 16 ignores the lock given
   * at CreateMultipartUpload, so the uploader sets it again after Complete when HeadObject shows none.
   */
  setRetention(key: string, lock: ObjectLock): Promise<void>;

  /** the bucket exists and the credentials may use it */
  check(): Promise<void>;
  /** whether the bucket has Object Lock enabled (undefined: the server cannot say) */
  objectLockEnabled(): Promise<boolean | undefined>;
  close(): void;
}

/** Wraps a store so every call reports whether the store answered (feeds `etcdbackup_s3_up` and /readyz). */
export function observed(inner: Store, report: (ok: boolean, err?: unknown) => void, storeFailed: (err: unknown) => boolean): Store {
  const wrap =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        const r = await fn(...a);
        report(true);
        return r;
      } catch (e) {
        // local or content problems say nothing about the store's health
        if (storeFailed(e)) report(false, e);
        throw e;
      }
    };
  return {
    location: inner.location,
    createUpload: wrap(inner.createUpload.bind(inner)),
    uploadPart: wrap(inner.uploadPart.bind(inner)),
    completeUpload: wrap(inner.completeUpload.bind(inner)),
    abortUpload: wrap(inner.abortUpload.bind(inner)),
    listUploads: wrap(inner.listUploads.bind(inner)),
    putObject: wrap(inner.putObject.bind(inner)),
    head: wrap(inner.head.bind(inner)),
    async *list(prefix: string) {
      try {
        yield* inner.list(prefix);
        report(true);
      } catch (e) {
        if (storeFailed(e)) report(false, e);
        throw e;
      }
    },
    get: wrap(inner.get.bind(inner)),
    delete: wrap(inner.delete.bind(inner)),
    setRetention: wrap(inner.setRetention.bind(inner)),
    check: wrap(inner.check.bind(inner)),
    objectLockEnabled: wrap(inner.objectLockEnabled.bind(inner)),
    close: () => inner.close(),
  };
}
