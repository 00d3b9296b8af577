// The store on S3 and S3-compatible servers. The only module that talks to the AWS SDK.
import { createHash } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectRetentionCommand,
  UploadPartCommand,
  type S3Client,
  type UploadPartCommandInput,
  type UploadPartCommandOutput,
} from '@aws-sdk/client-s3';
import type { BuildHandler, BuildHandlerArguments } from '@smithy/types';
import { AgentError } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import { s3Client } from './client.js';
import type { CompletedPart, CreateOptions, GetOptions, ObjectInfo, ObjectLock, PartChecksum, Store, UploadInfo } from './store.js';

interface SdkLikeError {
  name?: string;
  $metadata?: { httpStatusCode?: number };
}

const notFound = (err: unknown): boolean => {
  const e = err as SdkLikeError;
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
};

/** Sets one header on one request before it is signed (a per-command middleware: no shared state). */
function withHeaders(cmd: UploadPartCommand, headers: Record<string, string>): UploadPartCommand {
  cmd.middlewareStack.add(
    (next: BuildHandler<UploadPartCommandInput, UploadPartCommandOutput>) => async (args: BuildHandlerArguments<UploadPartCommandInput>) => {
      const req = args.request as { headers?: Record<string, string> };
      if (req.headers) Object.assign(req.headers, headers);
      return next(args);
    },
    { step: 'build', name: 'etcdBackupHeaders' },
  );
  return cmd;
}

/** A key from a listing asked for with EncodingType=url ('+' is a space there, as AWS writes it). */
export function urlDecodedKey(k: string): string {
  try {
    return decodeURIComponent(k.replaceAll('+', ' '));
  } catch {
    return k;
  }
}

const md5b64 = (body: Uint8Array): string => createHash('md5').update(body).digest('base64');

export class S3Store implements Store {
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;

  constructor(
    private readonly cfg: Config,
    client?: S3Client,
    /** keys per ListObjectsV2 page (S3's default, 1000, unless a test asks for small pages) */
    private readonly pageSize?: number,
  ) {
    this.client = client ?? s3Client(cfg);
    this.bucket = cfg.s3.bucket;
    this.location = `s3://${cfg.s3.bucket}${cfg.s3.endpoint ? ` at ${cfg.s3.endpoint}` : ` (${cfg.s3.region})`}`;
  }

  private storage(opts: CreateOptions) {
    const s3 = this.cfg.s3;
    return {
      Metadata: opts.metadata,
      ContentType: opts.contentType ?? 'application/octet-stream',
      ...(s3.sse !== 'none' ? { ServerSideEncryption: s3.sse } : {}),
      ...(s3.kmsKeyId ? { SSEKMSKeyId: s3.kmsKeyId } : {}),
      ...(s3.storageClass ? { StorageClass: s3.storageClass as never } : {}),
      ...(opts.lock ? { ObjectLockMode: opts.lock.mode, ObjectLockRetainUntilDate: opts.lock.until } : {}),
    };
  }

  async createUpload(key: string, opts: CreateOptions): Promise<string> {
    const r = await this.client.send(
      new CreateMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        ...this.storage(opts),
        ...(opts.checksumAlgorithm ? { ChecksumAlgorithm: opts.checksumAlgorithm } : {}),
      }),
      { abortSignal: opts.signal },
    );
    if (!r.UploadId) throw new AgentError('server', `S3 at ${this.location} started an upload of ${key} without an upload id`);
    return r.UploadId;
  }

  async uploadPart(
    key: string,
    uploadId: string,
    partNumber: number,
    body: Uint8Array,
    checksum: PartChecksum,
    signal?: AbortSignal,
  ): Promise<{ etag: string }> {
    const base = { Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.byteLength };
    let cmd: UploadPartCommand;
    switch (checksum.kind) {
      case 'sha256':
        // The signer takes the payload hash from this header instead of hashing the body again, and signs it:
        // the server recomputes it over what it received and refuses the part on a mismatch.
        cmd = withHeaders(new UploadPartCommand(base), { 'x-amz-content-sha256': checksum.value });
        break;
      case 'crc32':
        cmd = withHeaders(new UploadPartCommand({ ...base, ChecksumCRC32: checksum.value }), { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' });
        break;
      case 'md5':
        cmd = withHeaders(new UploadPartCommand({ ...base, ContentMD5: checksum.value }), { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' });
        break;
    }
    const r = await this.client.send(cmd, { abortSignal: signal });
    if (!r.ETag) throw new AgentError('server', `S3 at ${this.location} accepted part ${partNumber} of ${key} without an ETag`);
    return { etag: r.ETag };
  }

  async completeUpload(key: string, uploadId: string, parts: readonly CompletedPart[], signal?: AbortSignal): Promise<void> {
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: {
          Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag, ...(p.checksumCrc32 ? { ChecksumCRC32: p.checksumCrc32 } : {}) })),
        },
      }),
      { abortSignal: signal },
    );
  }

  async abortUpload(key: string, uploadId: string): Promise<void> {
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
  }

  async listUploads(prefix: string): Promise<UploadInfo[]> {
    const out: UploadInfo[] = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    do {
      const r = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }),
      );
      for (const u of r.Uploads ?? []) if (u.Key && u.UploadId) out.push({ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated });
      keyMarker = r.IsTruncated ? r.NextKeyMarker : undefined;
      idMarker = r.IsTruncated ? r.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return out;
  }

  async putObject(key: string, body: Uint8Array, opts: CreateOptions): Promise<void> {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: body.byteLength, ContentMD5: md5b64(body), ...this.storage(opts) }),
      { abortSignal: opts.signal },
    );
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return {
        key,
        size: r.ContentLength ?? 0,
        lastModified: r.LastModified,
        etag: r.ETag,
        metadata: r.Metadata ?? {},
        ...(r.ObjectLockRetainUntilDate ? { retainUntil: r.ObjectLockRetainUntilDate, lockMode: r.ObjectLockMode } : {}),
      };
    } catch (err) {
      if (notFound(err)) return undefined;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      // url-encoded keys: XML cannot carry a control character, and Swift fails the whole listing of a prefix
      // that holds such a key unless it may encode it
      const r = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ContinuationToken: token,
          EncodingType: 'url',
          ...(this.pageSize ? { MaxKeys: this.pageSize } : {}),
        }),
      );
      const encoded = r.EncodingType === 'url';
      for (const o of r.Contents ?? [])
        if (o.Key) yield { key: encoded ? urlDecodedKey(o.Key) : o.Key, size: o.Size ?? 0, lastModified: o.LastModified, etag: o.ETag };
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  async get(key: string, opts: GetOptions = {}): Promise<{ body: AsyncIterable<Uint8Array>; size: number } | undefined> {
    const range = opts.range ? `bytes=${opts.range.start}-${opts.range.end}` : undefined;
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: range }), { abortSignal: opts.signal });
      return { body: r.Body as AsyncIterable<Uint8Array>, size: r.ContentLength ?? 0 };
    } catch (err) {
      if (notFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async setRetention(key: string, lock: ObjectLock): Promise<void> {
    // the SDK adds the checksum S3 requires on this request
    await this.client.send(new PutObjectRetentionCommand({ Bucket: this.bucket, Key: key, Retention: { Mode: lock.mode, RetainUntilDate: lock.until } }));
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      // HeadBucket answers without a body: a bare 404 means the bucket is missing
      if ((err as SdkLikeError).$metadata?.httpStatusCode === 404)
        throw new AgentError('bucket', `bucket ${this.bucket} does not exist at ${this.location}; create it or fix s3.bucket`);
      throw err;
    }
  }

  async objectLockEnabled(): Promise<boolean | undefined> {
    try {
      const r = await this.client.send(new GetObjectLockConfigurationCommand({ Bucket: this.bucket }));
      return r.ObjectLockConfiguration?.ObjectLockEnabled === 'Enabled';
    } catch (err) {
      const e = err as SdkLikeError;
      if (e.name === 'ObjectLockConfigurationNotFoundError' || e.name === 'ObjectLockConfigurationNotFound') return false;
      if (e.name === 'NotImplemented' || e.$metadata?.httpStatusCode === 501) return undefined;
      if (e.$metadata?.httpStatusCode === 404 && e.name !== 'NoSuchBucket') return false;
      throw err;
    }
  }

  close(): void {
    this.client.destroy();
  }
}
