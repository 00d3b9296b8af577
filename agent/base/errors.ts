// The one place that says what went wrong, whose fault it was and what exit code a command returns for it.
// Reasons are a small fixed set, safe as metric labels. Errors from the SDK are recognised by their shape
// (name, code, HTTP status), so nothing here imports the SDK.
import { EXIT, type ExitCode } from './exit.js';

export type FailureReason =
  // the store could not be reached or refused who we are: every upload would fail the same way
  | 'network'
  | 'timeout'
  | 'tls'
  | 'auth'
  | 'bucket'
  | 'throttled'
  | 'server'
  // no credentials could be found or read here: nothing was sent, nothing refused
  | 'credentials'
  // the store answered but refused this request's content or options (BadDigest, NotImplemented, a part limit)
  | 'integrity'
  | 'refused'
  | 'client'
  // the store holds something other than what we sent, or the snapshot failed its checks
  | 'verify'
  // local: the file changed, or reading/writing it failed
  | 'changed'
  | 'local_io'
  | 'aborted';

export const FAILURE_REASONS: readonly FailureReason[] = [
  'network',
  'timeout',
  'tls',
  'auth',
  'bucket',
  'throttled',
  'server',
  'credentials',
  'integrity',
  'refused',
  'client',
  'verify',
  'changed',
  'local_io',
  'aborted',
];

/** Failures that say the store is down or refuses us: the whole upload queue backs off, `s3_up` goes to 0. */
const STORE_WIDE: ReadonlySet<FailureReason> = new Set([
  'network',
  'timeout',
  'tls',
  'auth',
  'bucket',
  'throttled',
  'server',
  'credentials',
  'refused',
  'client',
]);
/** The subset that means "cannot reach or use the bucket at all": exit 69. */
const UNAVAILABLE: ReadonlySet<FailureReason> = new Set(['network', 'timeout', 'tls', 'auth', 'bucket', 'throttled', 'server']);

/** True when the store is at fault (or refuses us), false for local and content problems. */
export function storeAtFault(reason: FailureReason): boolean {
  return STORE_WIDE.has(reason);
}

/** An error the agent raised itself, with its reason already decided. */
export class AgentError extends Error {
  constructor(
    readonly reason: FailureReason,
    message: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

/** Credentials could not be found or read locally: the store refused nothing. */
export class CredentialsError extends Error {
  override name = 'CredentialsError';
}

interface SdkLikeError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  cause?: unknown;
}

const NET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
]);
// The server hashed what it received and it did not match what we said we sent.
const INTEGRITY = new Set(['BadDigest', 'XAmzContentSHA256Mismatch', 'InvalidDigest', 'XAmzContentChecksumMismatch', 'InvalidChecksum']);
// The server understood and said no to what we asked for: an option it lacks, a limit, a malformed part.
const REFUSED = new Set([
  'NotImplemented',
  'InvalidArgument',
  'InvalidRequest',
  'InvalidStorageClass',
  'EntityTooLarge',
  'EntityTooSmall',
  'InvalidPart',
  'InvalidPartOrder',
  'NoSuchUpload',
  'InvalidObjectState',
  'MissingContentLength',
  'KMS.NotFoundException',
  'InvalidEncryptionAlgorithmError',
]);
const AUTH = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'InvalidToken', 'Forbidden']);

export function classifyError(err: unknown): FailureReason {
  if (err instanceof AgentError) return err.reason;
  if (err instanceof CredentialsError) return 'credentials';
  const e = (err ?? {}) as SdkLikeError;
  const code = e.code ?? (e.cause as SdkLikeError | undefined)?.code ?? '';
  const name = e.name ?? '';
  const status = e.$metadata?.httpStatusCode;
  if (name === 'AbortError') return 'aborted';
  // the SDK's default chain found no credentials anywhere: a local matter, S3 was never asked
  if (name === 'CredentialsProviderError') return 'credentials';
  // a local file operation (Node's fs errors name their path): never the store's fault
  if (typeof (e as { syscall?: unknown }).syscall === 'string' && typeof (e as { path?: unknown }).path === 'string') return 'local_io';
  if (code.startsWith('ERR_TLS') || /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|EPROTO/.test(code)) return 'tls';
  // before the name: smithy names a reset or broken socket (ECONNRESET, EPIPE) "TimeoutError"
  if (NET_CODES.has(code)) return 'network';
  if (name === 'TimeoutError' || code === 'ETIMEDOUT' || name === 'RequestTimeout' || code === 'RequestTimeout') return 'timeout';
  if (['NoSuchBucket', 'PermanentRedirect', 'AuthorizationHeaderMalformed'].includes(name)) return 'bucket';
  if (AUTH.has(name) || status === 403) return 'auth';
  if (INTEGRITY.has(name) || INTEGRITY.has(code)) return 'integrity';
  if (['SlowDown', 'Throttling', 'ThrottlingException', 'TooManyRequests'].includes(name) || status === 503 || status === 429) return 'throttled';
  if (REFUSED.has(name) || REFUSED.has(code) || status === 501 || status === 411) return 'refused';
  if (status !== undefined && status >= 500) return 'server';
  if (status !== undefined && status >= 400) return 'client';
  if (/socket hang up|ECONNRESET|EPIPE|network|connect/i.test(e.message ?? '')) return 'network';
  return 'server';
}

/** One line an operator can act on: what happened and what to do. Never includes secrets. */
export function describeError(err: unknown, ctx: { location: string; key?: string }): string {
  if (err instanceof AgentError || err instanceof CredentialsError) return err.message;
  const reason = classifyError(err);
  const e = (err ?? {}) as SdkLikeError;
  const what = e.name && e.name !== 'Error' ? e.name : (e.code ?? (e.cause as SdkLikeError | undefined)?.code ?? 'error');
  const target = ctx.key ? `${ctx.location}, key ${ctx.key}` : ctx.location;
  const text = (e.message ?? String(err)).split('\n')[0]!.slice(0, 200);
  // the SDK says "UnknownError" when the server's error had no message (RGW's often have none)
  const status = e.$metadata?.httpStatusCode;
  const detail = (text === 'UnknownError' || text === '') && status !== undefined ? `HTTP ${status}, no message` : text;
  switch (reason) {
    case 'network':
      return `S3 unreachable at ${target} (${what}: ${detail}); check s3.endpoint, s3.proxy and that the server is up and reachable`;
    case 'timeout':
      return `S3 request timed out at ${target} (${detail}); check the network, or raise s3.requestTimeout/upload.timeout`;
    case 'tls':
      return `TLS failed talking to ${target} (${what}); if the endpoint uses a private CA set s3.caFile or s3.ca`;
    case 'auth':
      return `S3 refused the credentials or access for ${target} (${what}); check the credentials (s3.credentialsFile or AWS_* environment) and the bucket policy`;
    case 'credentials':
      return `no S3 credentials found (${detail}); nothing was sent to S3. Set s3.credentialsFile, or AWS_SHARED_CREDENTIALS_FILE / AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a host with an instance role`;
    case 'bucket':
      return `bucket problem at ${target} (${what}); create the bucket or fix s3.bucket/s3.region`;
    case 'throttled':
      return `S3 is throttling or unavailable at ${target} (${what}); will retry with backoff`;
    case 'integrity':
      return `S3 at ${target} refused the bytes it received as damaged (${what}: ${detail}); nothing was stored, the upload is retried`;
    case 'refused':
      return `S3 at ${target} refused the request (${what}: ${detail}); the server lacks an option the config asks for or a limit was hit — see check-config`;
    case 'aborted':
      return `upload to ${target} aborted (${detail})`;
    case 'server':
    case 'client':
      return `S3 error at ${target} (${what}: ${detail})`;
    default:
      return detail;
  }
}

/** The exit code a one-shot command returns for a failure of this kind. */
export function exitCodeFor(reason: FailureReason): ExitCode {
  if (UNAVAILABLE.has(reason)) return EXIT.UNAVAILABLE;
  switch (reason) {
    case 'credentials':
      return EXIT.CONFIG;
    case 'integrity':
    case 'refused':
    case 'client':
      return EXIT.REFUSED;
    case 'verify':
      return EXIT.DATA;
    case 'changed':
    case 'local_io':
      return EXIT.IO;
    case 'aborted':
      return EXIT.INTERRUPTED;
    default:
      return EXIT.FAILURE;
  }
}

/** The errno code of a local error, or its text. */
export function ioCode(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String(e);
}
