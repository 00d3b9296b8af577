// Validating a config (validate): the rules that span keys or look inside a value, checked on the values
// the document gave. Pure apart from the host name; every problem is added to `issues`, none thrown.
import { hostname } from 'node:os';
import { validate as validateCron } from 'node-cron';
import { parseDuration } from '../base/units.js';
import type { Given } from './document.js';
import type { ConfigIssue } from './issues.js';
import { DEFAULT_METRICS_PORT, type Sse } from './keys.js';
import { describe } from './values.js';

/** Values the rules had to settle before checking them; the config is completed with these as they are. */
export interface Settled {
  /** with https:// when the document gave a bare host[:port] */
  endpoint: string | undefined;
  /** the host name when the document names no node */
  node: string;
  /** without leading or trailing slashes */
  prefix: string;
  /** retention.maxAge, or the age RKE's retention settings come to */
  maxAgeMs: number | undefined;
}

/** Checks every rule on the given values; returns what they settled on. */
export function checkRules(v: Given, issues: ConfigIssue[]): Settled {
  const bucket = v.get<string>('s3.bucket');
  if (!bucket) issues.push({ key: 's3.bucket', problem: 'missing', fix: 'set it to the name of an existing bucket, e.g. "s3:\\n  bucket: etcd-backups"' });
  else if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket))
    issues.push({
      key: 's3.bucket',
      problem: `${describe(bucket)} is not a valid bucket name`,
      fix: 'use lower-case letters, digits, dots and hyphens (3–63 characters)',
    });

  let endpoint = v.get<string>('s3.endpoint');
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
        problem: `${describe(withoutUserinfo(String(v.get('s3.endpoint'))))} is not a URL`,
        fix: 'write it as http(s)://host[:port], e.g. https://s3.eu-west-1.amazonaws.com',
      });
    }
  }

  const region = v.def<string>('s3.region');
  if (!/^[a-z0-9-]{1,64}$/i.test(region))
    issues.push({ key: 's3.region', problem: `${describe(region)} is not a region name`, fix: 'use a region such as us-east-1' });

  const cluster = v.def<string>('cluster');
  const node = v.get<string>('node') ?? hostname();
  for (const [key, value] of [
    ['cluster', cluster],
    ['node', node],
  ] as const) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(value))
      issues.push({ key, problem: `${describe(value)} cannot be part of an object key`, fix: 'use letters, digits, ".", "_" and "-" only (at most 128)' });
  }
  const prefix = v.def<string>('s3.prefix').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '..' || p === '.'))
    issues.push({ key: 's3.prefix', problem: 'contains "." or ".." segments', fix: 'use plain folder names such as "etcd-backup"' });

  const keyTemplate = v.def<string>('s3.keyTemplate');
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

  if (v.get<string>('s3.kmsKeyId') && v.def<Sse>('s3.sse') !== 'aws:kms')
    issues.push({ key: 's3.kmsKeyId', problem: 'set but s3.sse is not aws:kms', fix: 'set s3.sse: aws:kms, or remove s3.kmsKeyId' });

  const ca = v.get<string>('s3.ca');
  if (ca && !ca.includes('-----BEGIN CERTIFICATE-----'))
    issues.push({ key: 's3.ca', problem: 'is not a PEM certificate', fix: 'paste the CA certificate including the BEGIN/END CERTIFICATE lines' });

  const schedule = v.def<string>('retention.schedule');
  if (!validateCron(schedule))
    issues.push({
      key: 'retention.schedule',
      problem: `${describe(schedule)} is not a cron expression`,
      fix: 'use 5 fields (minute hour day month weekday), e.g. "17 * * * *"',
    });
  const timezone = v.def<string>('retention.timezone');
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    issues.push({ key: 'retention.timezone', problem: `${describe(timezone)} is not a time zone`, fix: 'use UTC or an IANA name such as Europe/Berlin' });
  }

  const maxAgeMs = retentionAge(v, issues);

  if (
    v.def<boolean>('retention.remote.enabled') &&
    v.get<number>('retention.remote.keep') === undefined &&
    v.get<number>('retention.remote.maxAge') === undefined
  ) {
    issues.push({ key: 'retention.remote', problem: 'enabled without a policy', fix: 'set retention.remote.keep and/or retention.remote.maxAge' });
  }

  const listen = v.def<string>('metrics.listen');
  if (!/^(\[[0-9a-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/i.test(listen) || Number(listen.slice(listen.lastIndexOf(':') + 1)) > 65535) {
    issues.push({
      key: 'metrics.listen',
      problem: `${describe(listen)} is not [host]:port`,
      fix: `use e.g. ":${DEFAULT_METRICS_PORT}" or "127.0.0.1:${DEFAULT_METRICS_PORT}"`,
    });
  }
  const tlsCert = v.get<string>('metrics.tlsCertFile');
  if (Boolean(tlsCert) !== Boolean(v.get<string>('metrics.tlsKeyFile')))
    issues.push({
      key: tlsCert ? 'metrics.tlsKeyFile' : 'metrics.tlsCertFile',
      problem: 'missing',
      fix: 'set both metrics.tlsCertFile and metrics.tlsKeyFile, or neither',
    });
  const authUser = v.get<string>('metrics.basicAuthUser');
  if (Boolean(authUser) !== Boolean(v.get<string>('metrics.basicAuthPasswordFile')))
    issues.push({
      key: authUser ? 'metrics.basicAuthPasswordFile' : 'metrics.basicAuthUser',
      problem: 'missing',
      fix: 'set both metrics.basicAuthUser and metrics.basicAuthPasswordFile, or neither',
    });

  if (v.def<number>('upload.retryMax') < v.def<number>('upload.retryInitial'))
    issues.push({ key: 'upload.retryMax', problem: 'is shorter than upload.retryInitial', fix: 'make it at least as long as upload.retryInitial' });

  const proxy = v.get<string>('s3.proxy');
  if (proxy !== undefined) {
    try {
      const u = new URL(proxy);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      issues.push({ key: 's3.proxy', problem: `${describe(withoutUserinfo(proxy))} is not a proxy URL`, fix: 'write it as http://[user:password@]host:port' });
    }
  }

  const lockMode = v.get<'GOVERNANCE' | 'COMPLIANCE'>('s3.objectLock.mode');
  if (Boolean(lockMode) !== (v.get<number>('s3.objectLock.retainFor') !== undefined)) {
    issues.push({
      key: lockMode ? 's3.objectLock.retainFor' : 's3.objectLock.mode',
      problem: 'missing',
      fix: 'set both s3.objectLock.mode (GOVERNANCE or COMPLIANCE) and s3.objectLock.retainFor (e.g. 30d), or neither',
    });
  }

  // the default (spread by node name) is valid by construction: only a schedule the document gives is checked
  const verifySchedule = v.get<string>('verify.schedule');
  if (verifySchedule !== undefined && !validateCron(verifySchedule))
    issues.push({
      key: 'verify.schedule',
      problem: `${describe(verifySchedule)} is not a cron expression`,
      fix: 'use 5 fields (minute hour day month weekday), e.g. "23 4 * * *", or 6 with seconds first',
    });

  return { endpoint, node, prefix, maxAgeMs };
}

/**
 * retention.maxAge, or the age RKE's settings come to: a retention count times the interval, or a retention
 * age as it is. Both at once must agree.
 */
function retentionAge(v: Given, issues: ConfigIssue[]): number | undefined {
  let maxAgeMs = v.get<number>('retention.maxAge');
  const rkeInterval = v.get<number>('retention.rke.intervalHours');
  const rkeRetention = v.get<string>('retention.rke.retention');
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
  return maxAgeMs;
}

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
