import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute } from 'node:path';
import { parseDocument } from 'yaml';
import { validate as validateCron } from 'node-cron';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../base/units.js';
import { LOG_LEVELS, type LogLevel } from '../ops/log.js';

export const DEFAULT_CONFIG_PATH = '/etc/etcd-backup-agent/config.yaml';
export const DEFAULT_METRICS_PORT = 9479;

export type ChecksumMode = 'when_required' | 'when_supported';
export type Sse = 'none' | 'AES256' | 'aws:kms';

export interface S3Config {
  bucket: string;
  endpoint?: string;
  region: string;
  prefix: string;
  keyTemplate: string;
  forcePathStyle: boolean;
  caFile?: string;
  ca?: string;
  credentialsFile?: string;
  profile?: string;
  sse: Sse;
  kmsKeyId?: string;
  storageClass?: string;
  checksum: ChecksumMode;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  partSize: number;
  queueSize: number;
}

export interface RetentionConfig {
  schedule: string;
  timezone: string;
  keep?: number;
  maxAgeMs?: number;
  dryRun: boolean;
  confirmRemote: boolean;
  staleUploadAgeMs: number;
  remote: { enabled: boolean; keep?: number; maxAgeMs?: number };
}

export interface Config {
  cluster: string;
  node: string;
  snapshotDir: string;
  stateDir: string;
  include: string[];
  exclude: string[];
  detect: { rescanIntervalMs: number; zipWaitMs: number; settleTimeoutMs: number; pollIntervalMs: number };
  s3: S3Config;
  upload: { timeoutMs: number; concurrency: number; retryInitialMs: number; retryMaxMs: number; attempts: number; bandwidthLimit?: number };
  retention: RetentionConfig;
  metrics: { enabled: boolean; listen: string; tlsCertFile?: string; tlsKeyFile?: string; basicAuthUser?: string; basicAuthPasswordFile?: string };
  log: { level: LogLevel };
  shutdownTimeoutMs: number;
}

/** One problem with one key: what is wrong and how to fix it. */
export interface ConfigIssue {
  key: string;
  problem: string;
  fix: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ConfigIssue[],
  ) {
    super(issues.map((i) => `${file}: ${i.key}: ${i.problem}; ${i.fix}`).join('\n'));
    this.name = 'ConfigError';
  }
}

type Kind = 'string' | 'int' | 'bool' | 'duration' | 'size' | 'list' | 'path';

interface KeySpec {
  key: string;
  kind: Kind;
  doc: string;
  default?: unknown;
  values?: readonly string[];
  min?: number;
  max?: number;
  /** never echo the value back in an error */
  sensitive?: boolean;
}

// The one table of keys: validation, defaults, unknown-key detection and the README reference all read it.
export const KEYS: readonly KeySpec[] = [
  { key: 'cluster', kind: 'string', default: 'default', doc: 'Cluster name, the second part of every object key.' },
  { key: 'node', kind: 'string', default: '<hostname>', doc: 'Node name, the third part of every object key, so nodes never overwrite each other.' },
  { key: 'snapshotDir', kind: 'path', default: '/opt/rke/etcd-snapshots', doc: 'Directory the producer writes snapshots to (RKE2: /var/lib/rancher/rke2/server/db/snapshots).' },
  { key: 'stateDir', kind: 'path', default: '/var/lib/etcd-backup-agent', doc: 'Where the ledger of confirmed uploads lives.' },
  { key: 'include', kind: 'list', default: [], doc: 'Extra file-name globs to treat as snapshots, besides the built-in producer names and `*.db`.' },
  { key: 'exclude', kind: 'list', default: [], doc: 'File-name globs never to ship (`*.part`, `pki.bundle.tar.gz`, `*.rkestate` are always excluded).' },
  { key: 'detect.rescanInterval', kind: 'duration', default: '1m', min: 1000, doc: 'Full directory rescan, catching events inotify dropped.' },
  { key: 'detect.zipWait', kind: 'duration', default: '30s', doc: 'How long a raw RKE/RKE2 snapshot is held back for the `.zip` that replaces it.' },
  { key: 'detect.settleTimeout', kind: 'duration', default: '2m', min: 1000, doc: 'A file that fails verification and has not changed for this long is rejected as corrupt.' },
  { key: 'detect.pollInterval', kind: 'duration', default: '2s', min: 100, doc: 'How often a file still being written is re-checked (besides change events).' },
  { key: 's3.bucket', kind: 'string', doc: 'Bucket to upload to (required). It must exist.' },
  { key: 's3.endpoint', kind: 'string', doc: 'S3-compatible endpoint URL, e.g. `https://minio.example:9000` or `http://127.0.0.1:7480`; a bare `host:port` (as in RKE) means HTTPS. Empty: AWS, from the region.' },
  { key: 's3.region', kind: 'string', default: 'us-east-1', doc: 'Region (most S3-compatible servers accept any).' },
  { key: 's3.prefix', kind: 'string', default: 'etcd-backup', doc: 'First part of every object key (RKE `folder`).' },
  { key: 's3.keyTemplate', kind: 'string', default: '{prefix}/{cluster}/{node}/{name}', doc: 'Object key; must contain `{node}` and end with `{name}`.' },
  { key: 's3.forcePathStyle', kind: 'bool', default: '<true with an endpoint>', doc: 'Path-style addressing (needed by RGW/MinIO without wildcard DNS).' },
  { key: 's3.caFile', kind: 'path', doc: 'PEM file with extra CA certificates to trust for the endpoint.' },
  { key: 's3.ca', kind: 'string', doc: 'The same as inline PEM (RKE `custom_ca`).' },
  { key: 's3.credentialsFile', kind: 'path', doc: 'AWS shared-credentials file (INI) to read keys from; re-read when it changes. Empty: the AWS default chain (env, ~/.aws, web identity, instance metadata).' },
  { key: 's3.profile', kind: 'string', doc: 'Profile in the credentials file (default `default`).' },
  { key: 's3.sse', kind: 'string', default: 'none', values: ['none', 'AES256', 'aws:kms'], doc: 'Server-side encryption.' },
  { key: 's3.kmsKeyId', kind: 'string', doc: 'KMS key id or ARN for `sse: aws:kms`.' },
  { key: 's3.storageClass', kind: 'string', doc: 'Storage class, e.g. `STANDARD_IA`.' },
  { key: 's3.checksum', kind: 'string', default: 'when_required', values: ['when_required', 'when_supported'], doc: 'When the SDK adds CRC checksums. `when_required` works on AWS, MinIO and Ceph RGW; `when_supported` breaks streamed uploads on RGW 16 and some others.' },
  { key: 's3.requestTimeout', kind: 'duration', default: '2m', min: 1000, doc: 'One HTTP request (one part) may take at most this long.' },
  { key: 's3.connectTimeout', kind: 'duration', default: '10s', min: 100, doc: 'TCP/TLS connect timeout.' },
  { key: 's3.partSize', kind: 'size', default: '8MiB', min: 5 * 1024 * 1024, max: 5 * 1024 ** 3, doc: 'Multipart part size. Upload memory is partSize × queueSize (pooled), whatever the file size; 16MiB bought no throughput over 8MiB here and cost 30 MiB.' },
  { key: 's3.queueSize', kind: 'int', default: 4, min: 1, max: 64, doc: 'Parts in flight at once.' },
  { key: 'upload.timeout', kind: 'duration', default: '2h', min: 1000, doc: 'One whole upload may take at most this long, then it is aborted and retried.' },
  { key: 'upload.concurrency', kind: 'int', default: 1, min: 1, max: 16, doc: 'Snapshots uploaded at once.' },
  { key: 'upload.retryInitial', kind: 'duration', default: '5s', min: 10, doc: 'First retry delay after a failed upload (doubles, with jitter).' },
  { key: 'upload.retryMax', kind: 'duration', default: '10m', min: 10, doc: 'Longest delay between retries; a failing snapshot is retried forever while it exists.' },
  { key: 'upload.attempts', kind: 'int', default: 3, min: 1, max: 20, doc: 'Attempts per S3 request inside one upload (SDK retries).' },
  { key: 'upload.bandwidthLimit', kind: 'size', doc: 'Bytes per second the agent reads and sends at most, e.g. `50MiB`. Empty: unlimited.' },
  { key: 'retention.schedule', kind: 'string', default: '17 * * * *', doc: 'Cron expression (5 or 6 fields) for pruning passes.' },
  { key: 'retention.timezone', kind: 'string', default: 'UTC', doc: 'Time zone of the schedule.' },
  { key: 'retention.keep', kind: 'int', min: 1, doc: 'Keep at most this many local snapshots (newest first). Empty: no count limit.' },
  { key: 'retention.maxAge', kind: 'duration', doc: 'Delete local snapshots older than this, e.g. `72h`. Empty: no age limit.' },
  { key: 'retention.rke.intervalHours', kind: 'int', min: 1, doc: 'RKE `interval_hours`; with `retention.rke.retention` (a count) sets maxAge = interval × retention, as RKE does.' },
  { key: 'retention.rke.retention', kind: 'string', doc: 'RKE `retention`: a count (v0.2+, with intervalHours) or an age like `24h` (v0.1).' },
  { key: 'retention.dryRun', kind: 'bool', default: false, doc: 'Log what would be deleted, delete nothing.' },
  { key: 'retention.confirmRemote', kind: 'bool', default: true, doc: 'Before deleting a local file, HeadObject must confirm its size and sha256. Turn off only for offline tests.' },
  { key: 'retention.staleUploadAge', kind: 'duration', default: '24h', min: 60_000, doc: 'Abort this node\'s multipart uploads older than this (crashed uploads cost storage).' },
  { key: 'retention.remote.enabled', kind: 'bool', default: false, doc: 'Prune this node\'s own objects in S3 too.' },
  { key: 'retention.remote.keep', kind: 'int', min: 1, doc: 'Keep at least/most this many of this node\'s objects.' },
  { key: 'retention.remote.maxAge', kind: 'duration', doc: 'Delete this node\'s objects older than this (the newest `keep` always stay).' },
  { key: 'metrics.enabled', kind: 'bool', default: true, doc: 'Serve /metrics, /healthz and /readyz.' },
  { key: 'metrics.listen', kind: 'string', default: `:${DEFAULT_METRICS_PORT}`, doc: 'Listen address `[host]:port`.' },
  { key: 'metrics.tlsCertFile', kind: 'path', doc: 'Serve HTTPS with this certificate (PEM).' },
  { key: 'metrics.tlsKeyFile', kind: 'path', doc: 'Key for `metrics.tlsCertFile`.' },
  { key: 'metrics.basicAuthUser', kind: 'string', doc: 'Require HTTP basic auth with this user.' },
  { key: 'metrics.basicAuthPasswordFile', kind: 'path', doc: 'File holding the basic-auth password.' },
  { key: 'log.level', kind: 'string', default: 'info', values: LOG_LEVELS, doc: 'error, warn, info or debug.' },
  { key: 'shutdownTimeout', kind: 'duration', default: '60s', min: 1000, doc: 'On SIGTERM, an upload in flight may finish within this time, then it is aborted.' },
];

const SECRET_KEYS = /(^|\.)(secret|secretKey|secretAccessKey|accessKey|accessKeyId|password|sessionToken|token|secret_key|access_key)$/i;

function describe(value: unknown, sensitive = false): string {
  if (sensitive) return 'the given value';
  let s: string;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  // hostile or huge values: show a bounded, printable excerpt
  s = s.replace(/[^\x20-\x7e]/g, '?');
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

class AliasLoop extends Error {}

function flatten(obj: Record<string, unknown>, prefix = '', out = new Map<string, unknown>(), within = new Set<object>()): Map<string, unknown> {
  // a YAML alias can point at a mapping that contains it: an endless tree
  if (within.has(obj)) throw new AliasLoop(prefix);
  within.add(obj);
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, key, out, within);
    else out.set(key, v);
  }
  within.delete(obj);
  return out;
}

// C0 and C1 controls (terminal escapes, line breaks), DEL, and the bidi overrides that reorder printed text
const CONTROL = /[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;
const PEM_CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

/** A name from the file, safe to print on a terminal (control and bidi characters shown as ?). */
const printable = (s: string): string => s.replace(new RegExp(CONTROL.source, 'g'), '?');

function closest(key: string): string | undefined {
  const dist = (a: string, b: string): number => {
    const d = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = d[0]!;
      d[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const tmp = d[j]!;
        d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
        prev = tmp;
      }
    }
    return d[b.length]!;
  };
  let best: string | undefined;
  let bestD = Infinity;
  for (const spec of KEYS) {
    const dd = dist(key, spec.key);
    if (dd < bestD) {
      bestD = dd;
      best = spec.key;
    }
  }
  return bestD <= Math.max(3, Math.floor(key.length / 4)) ? best : undefined;
}

const KIND_HINT: Record<Kind, string> = {
  string: 'a string',
  path: 'an absolute path',
  int: 'a whole number',
  bool: 'true or false',
  duration: 'a duration like 30s, 5m, 2h or 3d',
  size: 'a size like 16MiB or 64MB',
  list: 'a list of strings',
};

/** Parses and validates a config document. Throws ConfigError listing every problem at once. */
export function parseConfig(text: string, file = 'config', env: NodeJS.ProcessEnv = process.env): Config {
  const issues: ConfigIssue[] = [];
  let raw: unknown;
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0] ? ` at line ${e.linePos[0].line}` : '';
    throw new ConfigError(file, [{ key: '(file)', problem: `not valid YAML${line} (${e.code})`, fix: 'fix the syntax; indent with spaces and quote values containing ":" or "#"' }]);
  }
  try {
    raw = doc.toJS({ maxAliasCount: 50 }) ?? {};
  } catch {
    throw new ConfigError(file, [{ key: '(file)', problem: 'YAML could not be read (too many aliases?)', fix: 'write the values out plainly' }]);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, [{ key: '(file)', problem: 'the top level is not a mapping', fix: 'start with keys such as "s3:" and "snapshotDir:"' }]);
  }
  let given: Map<string, unknown>;
  try {
    given = flatten(raw as Record<string, unknown>);
  } catch (e) {
    if (!(e instanceof AliasLoop)) throw e;
    throw new ConfigError(file, [{ key: printable(e.message) || '(file)', problem: 'a YAML alias refers to the mapping that contains it', fix: 'write the values out plainly' }]);
  }
  const specs = new Map(KEYS.map((s) => [s.key, s]));
  const values = new Map<string, unknown>();

  for (const [key, value] of given) {
    const spec = specs.get(key);
    if (!spec) {
      if (SECRET_KEYS.test(key)) {
        issues.push({ key: printable(key), problem: 'secrets are not read from the config file', fix: 'put the keys in an AWS credentials file (mode 0600) named by s3.credentialsFile, or in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)' });
        continue;
      }
      const near = closest(key);
      issues.push({ key: printable(key), problem: 'unknown key', fix: near ? `did you mean "${near}"?` : 'remove it; see the configuration reference in the README' });
      continue;
    }
    if (value === null || value === undefined || value === '') continue; // empty means "use the default"
    const v = coerce(spec, value, issues);
    if (v !== undefined) values.set(key, v);
  }

  const get = <T>(key: string): T | undefined => values.get(key) as T | undefined;
  const def = <T>(key: string): T => {
    const v = values.get(key);
    if (v !== undefined) return v as T;
    const spec = specs.get(key)!;
    return coerce(spec, spec.default, []) as T;
  };

  const bucket = get<string>('s3.bucket');
  if (!bucket) issues.push({ key: 's3.bucket', problem: 'missing', fix: 'set it to the name of an existing bucket, e.g. "s3:\\n  bucket: etcd-backups"' });
  else if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket)) issues.push({ key: 's3.bucket', problem: `${describe(bucket)} is not a valid bucket name`, fix: 'use lower-case letters, digits, dots and hyphens (3–63 characters)' });

  let endpoint = get<string>('s3.endpoint');
  if (endpoint !== undefined) {
    if (!/^[a-z]+:\/\//i.test(endpoint)) endpoint = `https://${endpoint}`; // RKE's endpoint is host[:port], HTTPS implied
    try {
      const u = new URL(endpoint);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
      if (u.username || u.password) {
        issues.push({ key: 's3.endpoint', problem: 'contains credentials', fix: 'remove user:password from the URL; use s3.credentialsFile' });
      }
    } catch {
      issues.push({ key: 's3.endpoint', problem: `${describe(get('s3.endpoint'))} is not a URL`, fix: 'write it as http(s)://host[:port], e.g. https://s3.eu-west-1.amazonaws.com' });
    }
  }

  const region = def<string>('s3.region');
  if (!/^[a-z0-9-]{1,64}$/i.test(region)) issues.push({ key: 's3.region', problem: `${describe(region)} is not a region name`, fix: 'use a region such as us-east-1' });

  const cluster = def<string>('cluster');
  const node = get<string>('node') ?? hostname();
  for (const [key, v] of [['cluster', cluster], ['node', node]] as const) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(v)) issues.push({ key, problem: `${describe(v)} cannot be part of an object key`, fix: 'use letters, digits, ".", "_" and "-" only (at most 128)' });
  }
  const prefix = def<string>('s3.prefix').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '..' || p === '.')) issues.push({ key: 's3.prefix', problem: 'contains "." or ".." segments', fix: 'use plain folder names such as "etcd-backup"' });

  const keyTemplate = def<string>('s3.keyTemplate');
  if (!keyTemplate.endsWith('{name}')) issues.push({ key: 's3.keyTemplate', problem: 'does not end with {name}', fix: 'end it with "/{name}", e.g. "{prefix}/{cluster}/{node}/{name}"' });
  if (!keyTemplate.includes('{node}')) issues.push({ key: 's3.keyTemplate', problem: 'does not contain {node}: every node would overwrite the others\' snapshots', fix: 'include {node}, e.g. "{prefix}/{cluster}/{node}/{name}"' });
  const unknownVars = [...keyTemplate.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).filter((n) => !['prefix', 'cluster', 'node', 'name'].includes(n ?? ''));
  if (unknownVars.length) issues.push({ key: 's3.keyTemplate', problem: `unknown placeholder {${unknownVars[0]}}`, fix: 'use only {prefix}, {cluster}, {node} and {name}' });

  const sse = def<Sse>('s3.sse');
  const kmsKeyId = get<string>('s3.kmsKeyId');
  if (kmsKeyId && sse !== 'aws:kms') issues.push({ key: 's3.kmsKeyId', problem: 'set but s3.sse is not aws:kms', fix: 'set s3.sse: aws:kms, or remove s3.kmsKeyId' });

  const ca = get<string>('s3.ca');
  if (ca && !ca.includes('-----BEGIN CERTIFICATE-----')) issues.push({ key: 's3.ca', problem: 'is not a PEM certificate', fix: 'paste the CA certificate including the BEGIN/END CERTIFICATE lines' });
  const caFile = get<string>('s3.caFile');
  if (caFile) checkReadable('s3.caFile', caFile, issues, 'a PEM file with the CA certificate');
  const credentialsFile = get<string>('s3.credentialsFile');
  if (credentialsFile) checkReadable('s3.credentialsFile', credentialsFile, issues, 'an AWS credentials file ([default] aws_access_key_id=…, aws_secret_access_key=…)');

  const schedule = def<string>('retention.schedule');
  if (!validateCron(schedule)) issues.push({ key: 'retention.schedule', problem: `${describe(schedule)} is not a cron expression`, fix: 'use 5 fields (minute hour day month weekday), e.g. "17 * * * *"' });
  const timezone = def<string>('retention.timezone');
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    issues.push({ key: 'retention.timezone', problem: `${describe(timezone)} is not a time zone`, fix: 'use UTC or an IANA name such as Europe/Berlin' });
  }

  let maxAgeMs = get<number>('retention.maxAge');
  const rkeInterval = get<number>('retention.rke.intervalHours');
  const rkeRetention = get<string>('retention.rke.retention');
  if (rkeRetention !== undefined) {
    const asCount = /^\d+$/.test(String(rkeRetention)) ? Number(rkeRetention) : undefined;
    const asAge = asCount === undefined ? parseDuration(String(rkeRetention)) : undefined;
    let rkeAge: number | undefined;
    if (asCount !== undefined) {
      if (rkeInterval === undefined) issues.push({ key: 'retention.rke.retention', problem: 'is a count but retention.rke.intervalHours is not set', fix: 'set retention.rke.intervalHours (RKE interval_hours, default 12)' });
      else rkeAge = asCount * rkeInterval * 3_600_000;
    } else if (asAge !== undefined) rkeAge = asAge;
    else issues.push({ key: 'retention.rke.retention', problem: `${describe(rkeRetention)} is neither a count nor an age`, fix: 'use RKE\'s value: a count like 6 (with intervalHours) or an age like 24h' });
    if (rkeAge !== undefined) {
      if (maxAgeMs !== undefined && maxAgeMs !== rkeAge) issues.push({ key: 'retention.maxAge', problem: 'set together with retention.rke.* to a different age', fix: 'keep one of them' });
      maxAgeMs = rkeAge;
    }
  } else if (rkeInterval !== undefined) {
    issues.push({ key: 'retention.rke.intervalHours', problem: 'set without retention.rke.retention', fix: 'set retention.rke.retention (RKE retention, default 6)' });
  }

  const remoteEnabled = def<boolean>('retention.remote.enabled');
  const remoteKeep = get<number>('retention.remote.keep');
  const remoteMaxAge = get<number>('retention.remote.maxAge');
  if (remoteEnabled && remoteKeep === undefined && remoteMaxAge === undefined) {
    issues.push({ key: 'retention.remote', problem: 'enabled without a policy', fix: 'set retention.remote.keep and/or retention.remote.maxAge' });
  }

  const listen = def<string>('metrics.listen');
  if (!/^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/i.test(listen) || Number(listen.slice(listen.lastIndexOf(':') + 1)) > 65535) {
    issues.push({ key: 'metrics.listen', problem: `${describe(listen)} is not [host]:port`, fix: `use e.g. ":${DEFAULT_METRICS_PORT}" or "127.0.0.1:${DEFAULT_METRICS_PORT}"` });
  }
  const tlsCert = get<string>('metrics.tlsCertFile');
  const tlsKey = get<string>('metrics.tlsKeyFile');
  if (Boolean(tlsCert) !== Boolean(tlsKey)) issues.push({ key: tlsCert ? 'metrics.tlsKeyFile' : 'metrics.tlsCertFile', problem: 'missing', fix: 'set both metrics.tlsCertFile and metrics.tlsKeyFile, or neither' });
  if (tlsCert) checkReadable('metrics.tlsCertFile', tlsCert, issues, 'a PEM certificate (chain) for the metrics endpoint');
  if (tlsKey) checkReadable('metrics.tlsKeyFile', tlsKey, issues, 'the PEM private key of metrics.tlsCertFile');
  const authUser = get<string>('metrics.basicAuthUser');
  const authPw = get<string>('metrics.basicAuthPasswordFile');
  if (Boolean(authUser) !== Boolean(authPw)) issues.push({ key: authUser ? 'metrics.basicAuthPasswordFile' : 'metrics.basicAuthUser', problem: 'missing', fix: 'set both metrics.basicAuthUser and metrics.basicAuthPasswordFile, or neither' });
  if (authPw) checkReadable('metrics.basicAuthPasswordFile', authPw, issues, 'a file holding the password');

  const retryInitialMs = def<number>('upload.retryInitial');
  const retryMaxMs = def<number>('upload.retryMax');
  if (retryMaxMs < retryInitialMs) issues.push({ key: 'upload.retryMax', problem: 'is shorter than upload.retryInitial', fix: 'make it at least as long as upload.retryInitial' });

  if (issues.length) throw new ConfigError(file, issues);

  const forcePathStyle = get<boolean>('s3.forcePathStyle') ?? endpoint !== undefined;
  return {
    cluster,
    node,
    snapshotDir: def('snapshotDir'),
    stateDir: def('stateDir'),
    include: def('include'),
    exclude: def('exclude'),
    detect: {
      rescanIntervalMs: def('detect.rescanInterval'),
      zipWaitMs: def('detect.zipWait'),
      settleTimeoutMs: def('detect.settleTimeout'),
      pollIntervalMs: def('detect.pollInterval'),
    },
    s3: {
      bucket: bucket!,
      endpoint,
      region: env.AWS_REGION && !values.has('s3.region') ? env.AWS_REGION : region,
      prefix,
      keyTemplate,
      forcePathStyle,
      caFile,
      ca,
      credentialsFile,
      profile: get('s3.profile'),
      sse,
      kmsKeyId,
      storageClass: get('s3.storageClass'),
      checksum: def('s3.checksum'),
      requestTimeoutMs: def('s3.requestTimeout'),
      connectTimeoutMs: def('s3.connectTimeout'),
      partSize: def('s3.partSize'),
      queueSize: def('s3.queueSize'),
    },
    upload: {
      timeoutMs: def('upload.timeout'),
      concurrency: def('upload.concurrency'),
      retryInitialMs,
      retryMaxMs,
      attempts: def('upload.attempts'),
      bandwidthLimit: get('upload.bandwidthLimit'),
    },
    retention: {
      schedule,
      timezone,
      keep: get('retention.keep'),
      maxAgeMs,
      dryRun: def('retention.dryRun'),
      confirmRemote: def('retention.confirmRemote'),
      staleUploadAgeMs: def('retention.staleUploadAge'),
      remote: { enabled: remoteEnabled, keep: remoteKeep, maxAgeMs: remoteMaxAge },
    },
    metrics: {
      enabled: def('metrics.enabled'),
      listen,
      tlsCertFile: tlsCert,
      tlsKeyFile: tlsKey,
      basicAuthUser: authUser,
      basicAuthPasswordFile: authPw,
    },
    log: { level: def('log.level') },
    shutdownTimeoutMs: def('shutdownTimeout'),
  };
}

function checkReadable(key: string, path: string, issues: ConfigIssue[], what: string): void {
  let fd: number | undefined;
  try {
    // opened, never read: a FIFO would block a read and /dev/zero never end one
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const st = fstatSync(fd);
    // read whole later (by the SDK or the metrics server): a huge or unreadable file must fail here, not crash there
    if (!st.isFile()) issues.push({ key, problem: `${path} is not a regular file`, fix: `point it at ${what}` });
    else if (st.size > 16 * 1024 * 1024) issues.push({ key, problem: `${path} is ${formatBytes(st.size)}, far too large`, fix: `point it at ${what}` });
    else readSync(fd, Buffer.alloc(1), 0, 1, 0);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    const problem = code === 'ENOENT' ? `${path} does not exist` : code === 'EACCES' ? `${path} is not readable by this user` : `${path} cannot be read (${code})`;
    issues.push({ key, problem, fix: `point it at ${what}` });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function coerce(spec: KeySpec, value: unknown, issues: ConfigIssue[]): unknown {
  if (value === undefined || value === '<hostname>' || value === '<true with an endpoint>') return undefined;
  const bad = (problem?: string): undefined => {
    issues.push({ key: spec.key, problem: problem ?? `${describe(value, spec.sensitive)} is not ${KIND_HINT[spec.kind]}`, fix: spec.values ? `use one of: ${spec.values.join(', ')}` : `write ${KIND_HINT[spec.kind]}${spec.default !== undefined ? ` (default ${JSON.stringify(spec.default)})` : ''}` });
    return undefined;
  };
  const show = (n: number): string => (spec.kind === 'duration' ? formatDuration(n) : spec.kind === 'size' ? formatBytes(n).replace(' ', '') : String(n));
  const range = (n: number, shown: string): number | undefined => {
    if (spec.min !== undefined && n < spec.min) return bad(`${shown} is below the minimum of ${show(spec.min)}`);
    if (spec.max !== undefined && n > spec.max) return bad(`${shown} is above the maximum of ${show(spec.max)}`);
    return n;
  };
  switch (spec.kind) {
    case 'string': {
      if (typeof value !== 'string' && typeof value !== 'number') return bad();
      const s = String(value);
      if (s.length > 4096 && spec.key !== 's3.ca') return bad('is longer than 4096 characters');
      // values are printed (check-config, logs): no terminal escapes, line breaks or bidi overrides; PEM needs lines
      if ((spec.key === 's3.ca' ? PEM_CONTROL : CONTROL).test(s)) return bad('contains control characters');
      if (spec.values && !spec.values.includes(s)) return bad(`${describe(s)} is not allowed`);
      return s;
    }
    case 'path': {
      if (typeof value !== 'string' || value.length === 0 || value.length > 4096 || value.includes('\0')) return bad();
      // it is printed in logs and by check-config: escape sequences would reach the operator's terminal
      if (CONTROL.test(value)) return bad('contains control characters');
      if (!isAbsolute(value)) return bad(`${describe(value)} is not an absolute path`);
      return value.replace(/\/+$/, '') || '/';
    }
    case 'int': {
      const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) return bad();
      return range(n, String(n));
    }
    case 'bool':
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === 'false') return value === 'true';
      return bad();
    case 'duration': {
      const ms = parseDuration(value);
      if (ms === undefined || ms > 366 * 86_400_000) return bad(ms === undefined ? undefined : `${describe(value)} is longer than a year`);
      return range(ms, describe(value));
    }
    case 'size': {
      const n = parseSize(value);
      if (n === undefined) return bad();
      return range(n, describe(value));
    }
    case 'list': {
      const arr = typeof value === 'string' ? [value] : value;
      if (!Array.isArray(arr) || arr.some((x) => typeof x !== 'string' || x.length === 0 || x.length > 256)) return bad();
      if (arr.some((x) => CONTROL.test(x))) return bad('contains control characters');
      return arr as string[];
    }
  }
}

/** Reads and validates the config file. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  const notConfig = (problem: string): ConfigError => new ConfigError(path, [{ key: '(file)', problem, fix: 'this is not a config file; pass --config PATH' }]);
  const limit = 1024 * 1024;
  const buf = Buffer.alloc(limit + 1);
  let got = 0;
  let fd: number | undefined;
  try {
    // a FIFO must not hang the start, nor /dev/zero fill the memory: a regular file, read up to the limit
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    if (!fstatSync(fd).isFile()) throw notConfig('is not a regular file');
    for (let n = 1; n > 0 && got < buf.length; got += n) n = readSync(fd, buf, got, buf.length - got, got);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by this user' : `cannot be read (${code})`;
    throw new ConfigError(path, [{ key: '(file)', problem, fix: `create it (a minimal file is "s3:\\n  bucket: NAME\\n  endpoint: URL") or pass --config PATH` }]);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (got > limit) throw notConfig('is larger than 1 MiB');
  return parseConfig(buf.subarray(0, got).toString('utf8'), path, env);
}

/** Object key for a snapshot file name, from the template. */
export function objectKey(cfg: Pick<Config, 'cluster' | 'node' | 's3'>, name: string): string {
  return renderTemplate(cfg, name);
}

/** Key prefix under which this node's objects live (the template up to {name}). */
export function nodePrefix(cfg: Pick<Config, 'cluster' | 'node' | 's3'>): string {
  return renderTemplate(cfg, '');
}

/** Key prefix under which every node of the cluster lives (for `list --cluster`). */
export function clusterPrefix(cfg: Pick<Config, 'cluster' | 'node' | 's3'>): string {
  const t = cfg.s3.keyTemplate;
  const cut = t.indexOf('{node}');
  return renderTemplate({ ...cfg, s3: { ...cfg.s3, keyTemplate: t.slice(0, cut) } }, '');
}

function renderTemplate(cfg: Pick<Config, 'cluster' | 'node' | 's3'>, name: string): string {
  const key = cfg.s3.keyTemplate
    .replaceAll('{prefix}', cfg.s3.prefix)
    .replaceAll('{cluster}', cfg.cluster)
    .replaceAll('{node}', cfg.node)
    .replaceAll('{name}', name);
  return key.replace(/\/{2,}/g, '/').replace(/^\//, '');
}
