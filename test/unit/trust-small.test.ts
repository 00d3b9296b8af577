// Issue 10, items 11 and 14, the pure parts. Before: every S3 failure a one-shot command met exited 69 ("S3
// unreachable"), a damaged part or an option the server lacks included; an fs error from a local file
// counted as an S3 error; the agent wrote `mtime` as milliseconds, which rclone reads as seconds and warns
// about on every command ("value out of range"); `prune` printed the config's stale-upload age whatever
// --stale-upload-age said; a readable credentials file and an open metrics endpoint went unmentioned.
import { describe, expect, it } from 'vitest';
import { AgentError, classifyError, CredentialsError, describeError, exitCodeFor } from '../../agent/base/errors.js';
import { EXIT } from '../../agent/base/exit.js';
import { startWarnings } from '../../agent/cli/run.js';
import { parseConfig } from '../../agent/config/parse.js';
import { describePolicy } from '../../agent/retention/policy.js';
import { formatMtime, parseMtime } from '../../agent/store/layout.js';
import { s3Error } from '../support/memory-store.js';

const net = (code: string): Error => Object.assign(new Error(`connect ${code} 127.0.0.1:9`), { code, name: 'Error' });
const fsError = (code: string, syscall: string, path: string): Error =>
  Object.assign(new Error(`${code}: ${syscall} '${path}'`), { code, syscall, path, errno: -28 });

describe('14: exit codes: 69 only for reachability, credentials and bucket', () => {
  it.each([
    ['connection refused', net('ECONNREFUSED'), 69],
    ['reset', net('ECONNRESET'), 69],
    ['timeout', Object.assign(new Error('timed out'), { name: 'TimeoutError' }), 69],
    ['TLS', Object.assign(new Error('self-signed'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), 69],
    ['wrong key', s3Error('InvalidAccessKeyId', 403), 69],
    ['bad signature', s3Error('SignatureDoesNotMatch', 403), 69],
    ['no bucket', s3Error('NoSuchBucket', 404), 69],
    ['throttled', s3Error('SlowDown', 503), 69],
    ['server error', s3Error('InternalError', 500), 69],
    ['BadDigest', s3Error('BadDigest', 400), 76],
    ['signed payload mismatch', s3Error('XAmzContentSHA256Mismatch', 400), 76],
    ['NotImplemented (Swift: aws:kms)', s3Error('NotImplemented', 501, 'Server-side encryption is not supported.'), 76],
    ['InvalidStorageClass', s3Error('InvalidStorageClass', 400), 76],
    ['InvalidRequest (RGW: SSE without TLS)', s3Error('InvalidRequest', 400, 'UnknownError'), 76],
    ['a part limit', s3Error('InvalidArgument', 400, 'Part number must be an integer between 1 and 1000, inclusive'), 76],
    ['EntityTooSmall', s3Error('EntityTooSmall', 400), 76],
    ['some other 4xx', s3Error('Whatever', 400), 76],
    ['no credentials anywhere', Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), 78],
    ['credentials file unreadable', new CredentialsError('cannot read /etc/x'), 78],
    ['a full local disk', fsError('ENOSPC', 'write', '/var/tmp/x.db'), 74],
    ['a local file gone', fsError('ENOENT', 'open', '/var/tmp/.x.part-1'), 74],
    ['verification', new AgentError('verify', 'not a snapshot'), 65],
  ] as const)('%s → %i', (_what, err, code) => {
    expect(exitCodeFor(classifyError(err))).toBe(code);
  });

  it('the documented codes: 76 is REFUSED, 69 UNAVAILABLE', () => {
    expect(EXIT.REFUSED).toBe(76);
    expect(EXIT.UNAVAILABLE).toBe(69);
  });

  it('a server error without a message says so instead of the SDK\'s "UnknownError"', () => {
    const line = describeError(s3Error('InvalidRequest', 400, 'UnknownError'), { location: 's3://b at http://rgw', key: 'k' });
    expect(line).toBe(
      'S3 at s3://b at http://rgw, key k refused the request (InvalidRequest: HTTP 400, no message); the server lacks an option the config asks for or a limit was hit — see check-config',
    );
  });
});

describe('11: rclone-compatible mtime', () => {
  it('written as seconds with a fraction, as rclone writes it', () => {
    expect(formatMtime(1714564800123)).toBe('1714564800.123');
    expect(formatMtime(1714564800000)).toBe('1714564800');
    expect(formatMtime(1714564800123.25)).toBe('1714564800.12325');
  });
  it("read back in both forms: rclone's seconds and the milliseconds earlier agents wrote", () => {
    expect(parseMtime('1714564800.123')).toBeCloseTo(1714564800123, 3);
    expect(parseMtime('1714564800')).toBe(1714564800000);
    expect(parseMtime('1714564800123')).toBe(1714564800123);
    // rclone writes nanosecond fractions
    expect(parseMtime('1714564800.123456789')).toBeCloseTo(1714564800123.4568, 3);
    for (const bad of ['', 'abc', '-5', '1e12', '12.34.56']) expect(parseMtime(bad)).toBeUndefined();
    for (const ms of [0, 1, 999, 1714564800123, 1714564800123.25]) expect(parseMtime(formatMtime(ms))).toBeCloseTo(ms, 3);
  });
});

describe('14: the prune header and the start warnings', () => {
  const cfg = (extra = ''): ReturnType<typeof parseConfig> => parseConfig(`s3:\n  bucket: backups\n  credentialsFile: /etc/eba/credentials\n${extra}`, 'x', {});

  it('the header states the stale-upload age this pass uses', () => {
    const c = cfg('retention:\n  keep: 3\n  staleUploadAge: 6h\n');
    expect(describePolicy(c)).toMatch(/stale uploads aborted after 6h$/);
    expect(describePolicy(c, 0)).toMatch(/stale uploads aborted after 0s$/);
    expect(describePolicy(c, 90 * 60_000)).toMatch(/stale uploads aborted after 1h30m$/);
  });

  it('a credentials file others can read, and metrics on all interfaces without auth, are each named once', () => {
    const w = startWarnings(cfg('metrics:\n  listen: ":9479"\n'), () => ({ mode: 0o100644 }));
    expect(w).toHaveLength(2);
    expect(w[0]).toBe('credentials file /etc/eba/credentials is mode 0644: other users can read the S3 keys; chmod 600 it');
    expect(w[1]).toMatch(/^metrics endpoint listens on all interfaces \(:9479\) without authentication/);
    for (const listen of ['0.0.0.0:9479', '[::]:9479'])
      expect(startWarnings(cfg(`metrics:\n  listen: "${listen}"\n`), () => ({ mode: 0o100600 }))).toHaveLength(1);
  });

  it('nothing to say: a 0600 file, metrics on loopback or behind basic auth, metrics off', () => {
    expect(startWarnings(cfg('metrics:\n  listen: "127.0.0.1:9479"\n'), () => ({ mode: 0o100600 }))).toEqual([]);
    expect(
      startWarnings(cfg('metrics:\n  listen: ":9479"\n  basicAuthUser: prom\n  basicAuthPasswordFile: /etc/eba/pw\n'), () => ({ mode: 0o100600 })),
    ).toEqual([]);
    expect(startWarnings(cfg('metrics:\n  enabled: false\n'), () => ({ mode: 0o100600 }))).toEqual([]);
    // a file that is not there is load.ts's business, not a warning
    expect(startWarnings(cfg('metrics:\n  listen: "127.0.0.1:1"\n'), () => undefined)).toEqual([]);
  });
});
