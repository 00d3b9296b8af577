// The narrow storage interface the rest of the agent sees, and its S3 implementation.
// This is the only module that talks to the AWS SDK.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  type PutObjectCommandInput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { FinalizeHandler, FinalizeHandlerArguments, InitializeHandler, InitializeHandlerArguments } from '@smithy/types';
import type { Config } from '../config/config.js';
import { defaultCredentials, fileCredentials, CredentialsError } from './credentials.js';

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified?: Date;
  /** our `sha256` metadata (HeadObject only) */
  sha256?: string;
  metadata?: Record<string, string>;
  etag?: string;
}

export interface UploadInfo {
  key: string;
  uploadId: string;
  initiated?: Date;
}

export interface PutOptions {
  size: number;
  metadata: Record<string, string>;
  signal?: AbortSignal;
  onProgress?: (bytesSent: number) => void;
}

export interface Store {
  /** where objects go, for log lines: `s3://bucket (endpoint)` */
  readonly location: string;
  /** a stream, or a Uint8Array whose `subarray` yields the parts (see parts.ts) */
  put(key: string, body: Readable | Uint8Array, opts: PutOptions): Promise<void>;
  head(key: string): Promise<ObjectInfo | undefined>;
  list(prefix: string): AsyncIterable<ObjectInfo>;
  get(key: string, signal?: AbortSignal): Promise<{ body: Readable; size: number }>;
  delete(key: string): Promise<void>;
  listUploads(prefix: string): Promise<UploadInfo[]>;
  abortUpload(key: string, uploadId: string): Promise<void>;
  /** the bucket exists and the credentials may use it */
  check(): Promise<void>;
  close(): void;
}

/** A small fixed set of reasons, safe as a metric label. */
export type FailureReason = 'network' | 'timeout' | 'tls' | 'auth' | 'bucket' | 'throttled' | 'server' | 'client' | 'verify' | 'changed' | 'local_io' | 'aborted';
export const FAILURE_REASONS: readonly FailureReason[] = ['network', 'timeout', 'tls', 'auth', 'bucket', 'throttled', 'server', 'client', 'verify', 'changed', 'local_io', 'aborted'];

/** An error the agent raised itself with a reason already decided. */
export class ShipError extends Error {
  constructor(
    readonly reason: FailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'ShipError';
  }
}

interface SdkLikeError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  cause?: unknown;
}

const NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET']);

export function classifyError(err: unknown): FailureReason {
  if (err instanceof ShipError) return err.reason;
  if (err instanceof CredentialsError) return 'auth';
  const e = (err ?? {}) as SdkLikeError;
  const code = e.code ?? (e.cause as SdkLikeError | undefined)?.code ?? '';
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (name === 'AbortError') return 'aborted';
  if (code.startsWith('ERR_TLS') || /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|EPROTO/.test(code)) return 'tls';
  // before the name: smithy names a reset or broken socket (ECONNRESET, EPIPE) "TimeoutError"
  if (NET_CODES.has(code)) return 'network';
  if (name === 'TimeoutError' || code === 'ETIMEDOUT' || name === 'RequestTimeout' || code === 'RequestTimeout') return 'timeout';
  if (['NoSuchBucket', 'PermanentRedirect', 'AuthorizationHeaderMalformed'].includes(name)) return 'bucket';
  if (['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError', 'Forbidden'].includes(name) || status === 403) return 'auth';
  if (['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequests'].includes(name) || status === 503 || status === 429) return 'throttled';
  if (status !== undefined && status >= 500) return 'server';
  if (status !== undefined && status >= 400) return 'client';
  if (/socket hang up|ECONNRESET|network|connect/i.test(e.message ?? '')) return 'network';
  return 'server';
}

/** One line an operator can act on: what happened and what to do. Never includes secrets. */
export function describeError(err: unknown, ctx: { location: string; key?: string }): string {
  if (err instanceof ShipError || err instanceof CredentialsError) return err.message;
  const reason = classifyError(err);
  const e = (err ?? {}) as SdkLikeError;
  const what = e.name && e.name !== 'Error' ? e.name : (e.code ?? (e.cause as SdkLikeError | undefined)?.code ?? 'error');
  const target = ctx.key ? `${ctx.location}, key ${ctx.key}` : ctx.location;
  const detail = (e.message ?? String(err)).split('\n')[0]!.slice(0, 200);
  switch (reason) {
    case 'network':
      return `S3 unreachable at ${target} (${what}: ${detail}); check s3.endpoint and that the server is up and reachable`;
    case 'timeout':
      return `S3 request timed out at ${target} (${detail}); check the network, or raise s3.requestTimeout/upload.timeout`;
    case 'tls':
      return `TLS failed talking to ${target} (${what}); if the endpoint uses a private CA set s3.caFile or s3.ca`;
    case 'auth':
      return err instanceof CredentialsError ? detail : `S3 refused the credentials or access for ${target} (${what}); check the credentials (s3.credentialsFile or AWS_* environment) and the bucket policy`;
    case 'bucket':
      return `bucket problem at ${target} (${what}); create the bucket or fix s3.bucket/s3.region`;
    case 'throttled':
      return `S3 is throttling or unavailable at ${target} (${what}); will retry with backoff`;
    case 'verify':
    case 'changed':
    case 'local_io':
      return detail;
    case 'aborted':
      return `upload to ${target} aborted (${detail})`;
    default:
      return `S3 error at ${target} (${what}: ${detail})`;
  }
}

/**
 * Each part needs one integrity check beyond TCP's. With `when_required` over plain HTTP that is the
 * SigV4 payload SHA-256, which every S3 server verifies. Over HTTPS, TLS authenticates every byte in
 * transit, so the payload goes UNSIGNED as the AWS CLI does; likewise with `when_supported`, where the
 * signed CRC32 header already covers the part. Either way a SHA-256 pass over every part is saved.
 */
function unsignedPayload(client: S3Client, overTls: boolean): void {
  client.middlewareStack.addRelativeTo(
    (next: FinalizeHandler<any, any>) => async (args: FinalizeHandlerArguments<any>) => {
      const req = args.request as { headers?: Record<string, string>; body?: unknown };
      const headers = req.headers;
      const hasBody = req.body !== undefined && req.body !== null && typeof req.body !== 'string';
      if (headers && hasBody && !headers['x-amz-content-sha256'] && (overTls || Object.keys(headers).some((h) => h.toLowerCase() === 'x-amz-checksum-crc32'))) {
        headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
      }
      return next(args);
    },
    { relation: 'before', toMiddleware: 'httpSigningMiddleware', name: 'etcdBackupUnsignedPayload' },
  );
}

// Part buffers lent to the SDK, each with the function that takes it back.
const lent = new WeakMap<object, () => void>();

/** Hands a part buffer to the next request that carries it; it is given back when that request is over. */
export function lendPart(buf: Uint8Array, giveBack: () => void): void {
  lent.set(buf, giveBack);
}

/** Outermost middleware: runs after the SDK's retries are done with the body, whatever the outcome. */
function returnLentParts(client: S3Client): void {
  client.middlewareStack.add(
    (next: InitializeHandler<any, any>) => async (args: InitializeHandlerArguments<any>) => {
      try {
        return await next(args);
      } finally {
        const body = (args.input as { Body?: unknown }).Body;
        if (body && typeof body === 'object') {
          const giveBack = lent.get(body);
          lent.delete(body);
          giveBack?.();
        }
      }
    },
    { step: 'initialize', priority: 'high', name: 'etcdBackupReturnLentParts' },
  );
}

export function s3Client(cfg: Config): S3Client {
  const s3 = cfg.s3;
  const extraCa: string[] = [];
  if (s3.caFile) extraCa.push(readFileSync(s3.caFile, 'utf8'));
  if (s3.ca) extraCa.push(s3.ca);
  const agentOpts = { keepAlive: true, maxSockets: Math.max(8, s3.queueSize * cfg.upload.concurrency + 4) };
  const client = new S3Client({
    region: s3.region,
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
    forcePathStyle: s3.forcePathStyle,
    credentials: s3.credentialsFile ? fileCredentials(s3.credentialsFile, s3.profile) : defaultCredentials(s3.profile),
    // The SDK's CRC default breaks streamed uploads on several S3-compatible servers (FACTS §3).
    requestChecksumCalculation: s3.checksum === 'when_supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
    responseChecksumValidation: s3.checksum === 'when_supported' ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
    maxAttempts: cfg.upload.attempts,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: s3.connectTimeoutMs,
      requestTimeout: s3.requestTimeoutMs,
      // Without this smithy only prints a warning when requestTimeout passes, and a stalled
      // connection (packets dropped, nothing refused) hangs the upload until upload.timeout.
      throwOnRequestTimeout: true,
      httpAgent: new HttpAgent(agentOpts),
      // A custom CA extends the public roots instead of replacing them.
      httpsAgent: new HttpsAgent({ ...agentOpts, ...(extraCa.length ? { ca: [...rootCertificates, ...extraCa] } : {}) }),
    }),
  });
  // no endpoint: AWS, always HTTPS
  unsignedPayload(client, !s3.endpoint || s3.endpoint.startsWith('https:'));
  returnLentParts(client);
  return client;
}

export class S3Store implements Store {
  readonly location: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  /** keys whose failed upload could not be aborted (S3 was unreachable): cleaned before the next upload of the key */
  private readonly unaborted = new Set<string>();

  constructor(
    private readonly cfg: Config,
    client?: S3Client,
  ) {
    this.client = client ?? s3Client(cfg);
    this.bucket = cfg.s3.bucket;
    this.location = `s3://${cfg.s3.bucket}${cfg.s3.endpoint ? ` at ${cfg.s3.endpoint}` : ` (${cfg.s3.region})`}`;
  }

  async put(key: string, body: Readable | Uint8Array, opts: PutOptions): Promise<void> {
    const s3 = this.cfg.s3;
    const params: PutObjectCommandInput = {
      Bucket: this.bucket,
      Key: key,
      Body: body,
      ContentLength: opts.size,
      ContentType: 'application/octet-stream',
      Metadata: opts.metadata,
      ...(s3.sse !== 'none' ? { ServerSideEncryption: s3.sse } : {}),
      ...(s3.kmsKeyId ? { SSEKMSKeyId: s3.kmsKeyId } : {}),
      ...(s3.storageClass ? { StorageClass: s3.storageClass as PutObjectCommandInput['StorageClass'] } : {}),
    };
    const upload = new Upload({
      client: this.client,
      params,
      partSize: s3.partSize,
      queueSize: s3.queueSize,
      // The catch below aborts. lib-storage's own abort, when it fails or races a stalled retry of
      // itself (NoSuchUpload), replaces the error that failed the upload: the metric's reason would lie.
      leavePartsOnError: true,
    });
    if (opts.onProgress) upload.on('httpUploadProgress', (p) => p.loaded !== undefined && opts.onProgress!(p.loaded));
    const onAbort = (): void => void upload.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (this.unaborted.has(key)) await this.abortOpenUploads(key, undefined).then(() => this.unaborted.delete(key), () => undefined);
    try {
      if (opts.signal?.aborted) throw Object.assign(new Error('aborted before start'), { name: 'AbortError' });
      await upload.done();
    } catch (err) {
      // Abort here (lib-storage may not have had the upload id yet when the signal fired); nothing is
      // left open either way. If S3 cannot be reached now, the next upload of this key (the retry)
      // does it first.
      await this.abortOpenUploads(key, upload.uploadId).catch(() => this.unaborted.add(key));
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Rejects unless the listing shows every upload of the key aborted (the known id may be gone already). */
  private async abortOpenUploads(key: string, knownId: string | undefined): Promise<void> {
    if (knownId) await this.abortUpload(key, knownId).catch(() => undefined);
    for (const u of await this.listUploads(key)) if (u.key === key) await this.abortUpload(u.key, u.uploadId);
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      const md = r.Metadata ?? {};
      return { key, size: r.ContentLength ?? 0, lastModified: r.LastModified, sha256: md.sha256, metadata: md, etag: r.ETag };
    } catch (err) {
      const e = err as SdkLikeError;
      if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) return undefined;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of r.Contents ?? []) {
        if (o.Key) yield { key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified, etag: o.ETag };
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  async get(key: string, signal?: AbortSignal): Promise<{ body: Readable; size: number }> {
    const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
    return { body: r.Body as Readable, size: r.ContentLength ?? 0 };
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async listUploads(prefix: string): Promise<UploadInfo[]> {
    const out: UploadInfo[] = [];
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    do {
      const r = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      for (const u of r.Uploads ?? []) if (u.Key && u.UploadId) out.push({ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated });
      keyMarker = r.IsTruncated ? r.NextKeyMarker : undefined;
      idMarker = r.IsTruncated ? r.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return out;
  }

  async abortUpload(key: string, uploadId: string): Promise<void> {
    await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      // HeadBucket answers without a body: a bare 404 means the bucket is missing
      if ((err as SdkLikeError).$metadata?.httpStatusCode === 404) throw new ShipError('bucket', `bucket ${this.bucket} does not exist at ${this.location}; create it or fix s3.bucket`);
      throw err;
    }
  }

  close(): void {
    this.client.destroy();
  }
}

/** Wraps a store so every call reports whether S3 answered (feeds `etcdbackup_s3_up` and /readyz). */
export function observed(inner: Store, report: (ok: boolean, err?: unknown) => void): Store {
  const wrap =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>) =>
    async (...a: A): Promise<R> => {
      try {
        const r = await fn(...a);
        report(true);
        return r;
      } catch (e) {
        const reason = classifyError(e);
        // local or content problems say nothing about S3's health
        if (reason !== 'changed' && reason !== 'local_io' && reason !== 'verify' && reason !== 'aborted') report(false, e);
        throw e;
      }
    };
  return {
    location: inner.location,
    put: wrap(inner.put.bind(inner)),
    head: wrap(inner.head.bind(inner)),
    async *list(prefix: string) {
      try {
        yield* inner.list(prefix);
        report(true);
      } catch (e) {
        report(false, e);
        throw e;
      }
    },
    get: wrap(inner.get.bind(inner)),
    delete: wrap(inner.delete.bind(inner)),
    listUploads: wrap(inner.listUploads.bind(inner)),
    abortUpload: wrap(inner.abortUpload.bind(inner)),
    check: wrap(inner.check.bind(inner)),
    close: () => inner.close(),
  };
}
