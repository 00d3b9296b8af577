// Parsing and validating a config document: pure (no file is opened here; load.ts probes the files a valid
// config names). Every problem names its key and the fix, all at once.
import { hostname } from 'node:os';
import { parseDocument } from 'yaml';
import { validate as validateCron } from 'node-cron';
import { printable } from '../base/text.js';
import { parseDuration } from '../base/units.js';
import { coerce, describe } from './values.js';
import { DEFAULT_METRICS_PORT, KEYS, type Config, type Sse } from './keys.js';

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

const SECRET_KEYS = /(^|\.)(secret|secretKey|secretAccessKey|accessKey|accessKeyId|password|sessionToken|token|secret_key|access_key)$/i;

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

/** Parses and validates a config document. Throws ConfigError listing every problem at once. */
export function parseConfig(text: string, file = 'config', env: NodeJS.ProcessEnv = process.env): Config {
  const issues: ConfigIssue[] = [];
  let raw: unknown;
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0] ? ` at line ${e.linePos[0].line}` : '';
    throw new ConfigError(file, [
      { key: '(file)', problem: `not valid YAML${line} (${e.code})`, fix: 'fix the syntax; indent with spaces and quote values containing ":" or "#"' },
    ]);
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
    throw new ConfigError(file, [
      { key: printable(e.message) || '(file)', problem: 'a YAML alias refers to the mapping that contains it', fix: 'write the values out plainly' },
    ]);
  }
  const specs = new Map(KEYS.map((s) => [s.key, s]));
  const values = new Map<string, unknown>();

  for (const [key, value] of given) {
    const spec = specs.get(key);
    if (!spec) {
      if (SECRET_KEYS.test(key)) {
        issues.push({
          key: printable(key),
          problem: 'secrets are not read from the config file',
          fix: 'put the keys in an AWS credentials file (mode 0600) named by s3.credentialsFile, or in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)',
        });
        continue;
      }
      const near = closest(key);
      issues.push({
        key: printable(key),
        problem: 'unknown key',
        fix: near ? `did you mean "${near}"?` : 'remove it; see the configuration reference in the README',
      });
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
  else if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket))
    issues.push({
      key: 's3.bucket',
      problem: `${describe(bucket)} is not a valid bucket name`,
      fix: 'use lower-case letters, digits, dots and hyphens (3–63 characters)',
    });

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
      issues.push({
        key: 's3.endpoint',
        problem: `${describe(withoutUserinfo(String(get('s3.endpoint'))))} is not a URL`,
        fix: 'write it as http(s)://host[:port], e.g. https://s3.eu-west-1.amazonaws.com',
      });
    }
  }

  const region = def<string>('s3.region');
  if (!/^[a-z0-9-]{1,64}$/i.test(region))
    issues.push({ key: 's3.region', problem: `${describe(region)} is not a region name`, fix: 'use a region such as us-east-1' });

  const cluster = def<string>('cluster');
  const node = get<string>('node') ?? hostname();
  for (const [key, v] of [
    ['cluster', cluster],
    ['node', node],
  ] as const) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(v))
      issues.push({ key, problem: `${describe(v)} cannot be part of an object key`, fix: 'use letters, digits, ".", "_" and "-" only (at most 128)' });
  }
  const prefix = def<string>('s3.prefix').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '..' || p === '.'))
    issues.push({ key: 's3.prefix', problem: 'contains "." or ".." segments', fix: 'use plain folder names such as "etcd-backup"' });

  const keyTemplate = def<string>('s3.keyTemplate');
  if (!keyTemplate.endsWith('{name}'))
    issues.push({ key: 's3.keyTemplate', problem: 'does not end with {name}', fix: 'end it with "/{name}", e.g. "{prefix}/{cluster}/{node}/{name}"' });
  if (!keyTemplate.includes('{node}'))
    issues.push({
      key: 's3.keyTemplate',
      problem: "does not contain {node}: every node would overwrite the others' snapshots",
      fix: 'include {node}, e.g. "{prefix}/{cluster}/{node}/{name}"',
    });
  const unknownVars = [...keyTemplate.matchAll(/\{([^}]*)\}/g)].map((m) => m[1]).filter((n) => !['prefix', 'cluster', 'node', 'name'].includes(n ?? ''));
  if (unknownVars.length)
    issues.push({ key: 's3.keyTemplate', problem: `unknown placeholder {${unknownVars[0]}}`, fix: 'use only {prefix}, {cluster}, {node} and {name}' });

  const sse = def<Sse>('s3.sse');
  const kmsKeyId = get<string>('s3.kmsKeyId');
  if (kmsKeyId && sse !== 'aws:kms')
    issues.push({ key: 's3.kmsKeyId', problem: 'set but s3.sse is not aws:kms', fix: 'set s3.sse: aws:kms, or remove s3.kmsKeyId' });

  const ca = get<string>('s3.ca');
  if (ca && !ca.includes('-----BEGIN CERTIFICATE-----'))
    issues.push({ key: 's3.ca', problem: 'is not a PEM certificate', fix: 'paste the CA certificate including the BEGIN/END CERTIFICATE lines' });
  const caFile = get<string>('s3.caFile');
  const credentialsFile = get<string>('s3.credentialsFile');

  const schedule = def<string>('retention.schedule');
  if (!validateCron(schedule))
    issues.push({
      key: 'retention.schedule',
      problem: `${describe(schedule)} is not a cron expression`,
      fix: 'use 5 fields (minute hour day month weekday), e.g. "17 * * * *"',
    });
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
      if (rkeInterval === undefined)
        issues.push({
          key: 'retention.rke.retention',
          problem: 'is a count but retention.rke.intervalHours is not set',
          fix: 'set retention.rke.intervalHours (RKE interval_hours, default 12)',
        });
      else rkeAge = asCount * rkeInterval * 3_600_000;
    } else if (asAge !== undefined) rkeAge = asAge;
    else
      issues.push({
        key: 'retention.rke.retention',
        problem: `${describe(rkeRetention)} is neither a count nor an age`,
        fix: "use RKE's value: a count like 6 (with intervalHours) or an age like 24h",
      });
    if (rkeAge !== undefined) {
      if (maxAgeMs !== undefined && maxAgeMs !== rkeAge)
        issues.push({ key: 'retention.maxAge', problem: 'set together with retention.rke.* to a different age', fix: 'keep one of them' });
      maxAgeMs = rkeAge;
    }
  } else if (rkeInterval !== undefined) {
    issues.push({
      key: 'retention.rke.intervalHours',
      problem: 'set without retention.rke.retention',
      fix: 'set retention.rke.retention (RKE retention, default 6)',
    });
  }

  const remoteEnabled = def<boolean>('retention.remote.enabled');
  const remoteKeep = get<number>('retention.remote.keep');
  const remoteMaxAge = get<number>('retention.remote.maxAge');
  if (remoteEnabled && remoteKeep === undefined && remoteMaxAge === undefined) {
    issues.push({ key: 'retention.remote', problem: 'enabled without a policy', fix: 'set retention.remote.keep and/or retention.remote.maxAge' });
  }

  const listen = def<string>('metrics.listen');
  if (!/^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/i.test(listen) || Number(listen.slice(listen.lastIndexOf(':') + 1)) > 65535) {
    issues.push({
      key: 'metrics.listen',
      problem: `${describe(listen)} is not [host]:port`,
      fix: `use e.g. ":${DEFAULT_METRICS_PORT}" or "127.0.0.1:${DEFAULT_METRICS_PORT}"`,
    });
  }
  const tlsCert = get<string>('metrics.tlsCertFile');
  const tlsKey = get<string>('metrics.tlsKeyFile');
  if (Boolean(tlsCert) !== Boolean(tlsKey))
    issues.push({
      key: tlsCert ? 'metrics.tlsKeyFile' : 'metrics.tlsCertFile',
      problem: 'missing',
      fix: 'set both metrics.tlsCertFile and metrics.tlsKeyFile, or neither',
    });
  const authUser = get<string>('metrics.basicAuthUser');
  const authPw = get<string>('metrics.basicAuthPasswordFile');
  if (Boolean(authUser) !== Boolean(authPw))
    issues.push({
      key: authUser ? 'metrics.basicAuthPasswordFile' : 'metrics.basicAuthUser',
      problem: 'missing',
      fix: 'set both metrics.basicAuthUser and metrics.basicAuthPasswordFile, or neither',
    });

  const retryInitialMs = def<number>('upload.retryInitial');
  const retryMaxMs = def<number>('upload.retryMax');
  if (retryMaxMs < retryInitialMs)
    issues.push({ key: 'upload.retryMax', problem: 'is shorter than upload.retryInitial', fix: 'make it at least as long as upload.retryInitial' });

  const proxy = get<string>('s3.proxy');
  if (proxy !== undefined) {
    try {
      const u = new URL(proxy);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      issues.push({ key: 's3.proxy', problem: `${describe(withoutUserinfo(proxy))} is not a proxy URL`, fix: 'write it as http://[user:password@]host:port' });
    }
  }

  const lockMode = get<'GOVERNANCE' | 'COMPLIANCE'>('s3.objectLock.mode');
  const lockFor = get<number>('s3.objectLock.retainFor');
  if (Boolean(lockMode) !== (lockFor !== undefined)) {
    issues.push({
      key: lockMode ? 's3.objectLock.retainFor' : 's3.objectLock.mode',
      problem: 'missing',
      fix: 'set both s3.objectLock.mode (GOVERNANCE or COMPLIANCE) and s3.objectLock.retainFor (e.g. 30d), or neither',
    });
  }

  const verifySchedule = get<string>('verify.schedule') ?? spreadSchedule(node);
  if (!validateCron(verifySchedule))
    issues.push({
      key: 'verify.schedule',
      problem: `${describe(verifySchedule)} is not a cron expression`,
      fix: 'use 5 fields (minute hour day month weekday), e.g. "23 4 * * *", or 6 with seconds first',
    });

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
      maxParts: def('s3.maxParts'),
      reconcileIntervalMs: def('s3.reconcileInterval'),
      proxy,
      ...(lockMode && lockFor !== undefined ? { objectLock: { mode: lockMode, retainForMs: lockFor } } : {}),
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
    encryption: { recipients: def('encryption.recipients'), recipientsFile: get('encryption.recipientsFile') },
    signing: { keyFile: get('signing.keyFile') },
    verify: { enabled: def('verify.enabled'), schedule: verifySchedule, sample: def('verify.sample'), beforeUpload: def('verify.beforeUpload') },
    shutdownTimeoutMs: def('shutdownTimeout'),
  };
}

/** `scheme://user:pass@host` → `scheme://…@host`: a URL that failed to parse is echoed without its secrets. */
/**
 * A URL that failed to parse, fit to echo: everything between the scheme (if any) and the last '@' goes, since
 * a password may hold '/', '?', '#' or '@' that a parser would have stopped at.
 */
function withoutUserinfo(s: string): string {
  const at = s.lastIndexOf('@');
  if (at < 0) return s;
  const start = /^[a-z][a-z0-9+.-]*:\/\//i.exec(s)?.[0].length ?? 0;
  return at < start ? s : `${s.slice(0, start)}…@${s.slice(at + 1)}`;
}

/**
 * A daily drill at a minute and hour taken from the node name: every node of a fleet verifies at its own
 * time, so S3 sees no burst, and the same node keeps the same time across restarts.
 */
export function spreadSchedule(node: string): string {
  let h = 2166136261;
  for (const c of node) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return `${h % 60} ${Math.floor(h / 60) % 24} * * *`;
}
