// The etcd backup settings of an RKE1 rancher-cluster.yml as an agent config plus a
// separate 0600 credentials file, so a cluster can move from RKE's own S3 upload to the agent.
// The mapping is a pure function (planRkeImport); importRke does the file I/O.
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { DEFAULT_CONFIG_PATH } from '../config/keys.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { registerSecret, Secret } from '../base/secret.js';
import { parseDuration } from '../base/units.js';

export const DEFAULT_IMPORT_DIR = path.dirname(DEFAULT_CONFIG_PATH);

// RKE's own defaults when backup_config leaves them out.
const RKE_DEFAULT_INTERVAL_HOURS = 12;
const RKE_DEFAULT_RETENTION = 6;

const BACKUP_KEYS = ['enabled', 'interval_hours', 'retention', 'timeout', 'safe_timestamp', 's3backupconfig'] as const;
const S3_KEYS = ['access_key', 'secret_key', 'bucket_name', 'region', 'endpoint', 'custom_ca', 'folder'] as const;
const SECRET_FIELDS = new Set(['access_key', 'secret_key']);

export const BACKUP = 'services.etcd.backup_config';
const S3 = `${BACKUP}.s3backupconfig`;

/** An input that cannot be turned into a config: one line for the operator, and the exit code. */
export class RkeImportError extends Error {
  override name = 'RkeImportError';
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

export interface RkeImportOptions {
  /** directory the config and credentials file will live in (their paths go into the config) */
  outputDir: string;
  /** bucket to use when the file has none (RKE v0.1 has no S3 settings at all) */
  bucket?: string;
}

export interface RkeImportPlan {
  form: 'v0.2+' | 'v0.1';
  configText: string;
  /** AWS shared-credentials (INI) text, when the file carries keys */
  credentialsText?: Secret;
  /** what the config now says, for the operator */
  summary: string[];
  /** things that changed meaning or were left out on purpose */
  notes: string[];
  /** things that will probably not work as written */
  warnings: string[];
  /** what to change in rancher-cluster.yml once the agent runs */
  rkeChanges: string[];
}

type Map_ = Record<string, unknown>;

const isMap = (v: unknown): v is Map_ => v !== null && typeof v === 'object' && !Array.isArray(v);

function unmappable(key: string, problem: string, fix: string): RkeImportError {
  return new RkeImportError(EXIT.CONFIG, `${key}: ${problem}; ${fix}`);
}

function shown(key: string, v: unknown): string {
  if (SECRET_FIELDS.has(key.slice(key.lastIndexOf('.') + 1))) return 'the given value';
  const s = (JSON.stringify(v) ?? String(v)).replace(/[^\x20-\x7e]/g, '?');
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function checkKeys(obj: Map_, where: string, known: readonly string[]): void {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw unmappable(`${where}.${k}`, 'unknown key', `RKE knows ${known.join(', ')}; remove or correct it`);
  }
}

function optString(obj: Map_, key: string, where: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number' && !SECRET_FIELDS.has(key)) return String(v);
  if (typeof v !== 'string') throw unmappable(`${where}.${key}`, `${shown(key, v)} is not a string`, 'write it as a quoted string');
  const s = v.trim();
  if (SECRET_FIELDS.has(key) && /[\r\n]/.test(s)) throw unmappable(`${where}.${key}`, 'contains a line break', 'write the key on one line');
  return s || undefined;
}

function optBool(obj: Map_, key: string, where: string): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw unmappable(`${where}.${key}`, `${shown(key, v)} is not true or false`, 'write true or false');
  return v;
}

function optCount(obj: Map_, key: string, where: string, fix: string): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw unmappable(`${where}.${key}`, `${shown(key, v)} is not a whole number`, fix);
  return n;
}

/** RKE's endpoint is host[:port] and implies HTTPS; AWS's own endpoints are better left to the SDK. */
function mapEndpoint(raw: string, region: string | undefined, notes: string[], warnings: string[]): { endpoint?: string; region?: string } {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw unmappable(
      `${S3}.endpoint`,
      `${shown('endpoint', raw)} is not host[:port]`,
      'write it as RKE expects, e.g. s3.eu-west-1.amazonaws.com or minio.example:9000',
    );
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw unmappable(`${S3}.endpoint`, `scheme ${url.protocol} is not http or https`, 'write host[:port]');
  if (url.username || url.password)
    throw unmappable(`${S3}.endpoint`, 'contains credentials', 'remove user:password; the keys belong in access_key and secret_key');
  if (url.pathname !== '/' && url.pathname !== '') warnings.push(`${S3}.endpoint has a path (${url.pathname}); S3 endpoints normally have none`);
  const aws = /^s3(?:[.-]dualstack)?(?:[.-]([a-z]{2}(?:-gov)?-[a-z]+-\d))?\.amazonaws\.com(?:\.cn)?$/.exec(url.hostname);
  if (aws && url.protocol === 'https:' && !url.port) {
    const r = region ?? aws[1];
    if (!r) warnings.push(`the bucket's region is not given (${S3}.region): assuming us-east-1; set s3.region if the bucket lives elsewhere`);
    notes.push(`endpoint ${url.host} is AWS S3: left to the SDK, which picks the regional endpoint and virtual-hosted addressing`);
    return { region: r ?? 'us-east-1' };
  }
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) notes.push(`endpoint ${raw} has no scheme: HTTPS, as RKE assumes`);
  return { endpoint: `${url.protocol}//${url.host}`, region };
}

function checkCa(pem: string, warnings: string[]): void {
  const first = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(pem);
  if (!first) throw unmappable(`${S3}.custom_ca`, 'is not a PEM certificate', 'paste the CA certificate including the BEGIN/END CERTIFICATE lines');
  try {
    new X509Certificate(first[0]);
  } catch {
    warnings.push(`${S3}.custom_ca does not parse as an X.509 certificate (a placeholder?); put the real CA into s3.ca before starting the agent`);
  }
}

/** Maps the text of a rancher-cluster.yml to an agent config. Throws RkeImportError with one line. */
export function planRkeImport(text: string, file: string, opts: RkeImportOptions): RkeImportPlan {
  // Never echo YAML error text: it can quote the line holding secret_key.
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = ` at line ${text.slice(0, e.pos[0]).split('\n').length}`;
    throw new RkeImportError(EXIT.DATA, `${file}: not valid YAML${line} (${e.code}); fix the syntax (indent with spaces, quote values containing ":" or "#")`);
  }
  let root: unknown;
  try {
    root = doc.toJS({ maxAliasCount: 50 });
  } catch {
    throw new RkeImportError(EXIT.DATA, `${file}: the YAML cannot be read (too many aliases?); write the values out plainly`);
  }
  if (!isMap(root) || !('services' in root || 'nodes' in root)) {
    throw new RkeImportError(
      EXIT.DATA,
      `${file}: not an RKE cluster file (no "services:" or "nodes:" at the top level); pass the rancher-cluster.yml given to "rke up"`,
    );
  }
  const services = root.services ?? {};
  if (!isMap(services)) throw new RkeImportError(EXIT.DATA, `${file}: services is not a mapping; pass the rancher-cluster.yml given to "rke up"`);
  const etcd = services.etcd ?? {};
  if (!isMap(etcd)) throw new RkeImportError(EXIT.DATA, `${file}: services.etcd is not a mapping; pass the rancher-cluster.yml given to "rke up"`);

  const notes: string[] = [];
  const warnings: string[] = [];
  const summary: string[] = [];
  const rkeChanges: string[] = [];
  const cfg: { cluster?: string; s3: Map_; retention?: Map_ } = { s3: {} };
  let credentialsText: Secret | undefined;

  const clusterName = typeof root.cluster_name === 'string' ? root.cluster_name.trim() : undefined;
  if (clusterName) {
    if (/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(clusterName)) cfg.cluster = clusterName;
    else
      warnings.push(
        `cluster_name ${shown('cluster_name', clusterName)} cannot be part of an object key; the agent's default cluster name is used (set "cluster")`,
      );
  }

  const legacy = ['snapshot', 'creation', 'retention'].some((k) => etcd[k] !== undefined && etcd[k] !== null);
  const backupRaw = etcd.backup_config;
  let form: RkeImportPlan['form'] = 'v0.2+';
  let s3raw: Map_ | undefined;

  if (backupRaw !== undefined && backupRaw !== null) {
    if (!isMap(backupRaw)) throw unmappable(BACKUP, 'is not a mapping', 'write enabled, interval_hours, retention and s3backupconfig under it');
    checkKeys(backupRaw, BACKUP, BACKUP_KEYS);
    if (legacy) notes.push('services.etcd.snapshot/creation/retention (RKE v0.1) are ignored, as RKE does when backup_config is set');
    const enabled = optBool(backupRaw, 'enabled', BACKUP) ?? true;
    optBool(backupRaw, 'safe_timestamp', BACKUP);
    optCount(backupRaw, 'timeout', BACKUP, 'write seconds as a number');
    const countFix = 'in backup_config (RKE v0.2+) it is a number of snapshots, e.g. 6';
    const interval = optCount(backupRaw, 'interval_hours', BACKUP, 'write hours as a number, e.g. 12') || RKE_DEFAULT_INTERVAL_HOURS;
    const retention = optCount(backupRaw, 'retention', BACKUP, countFix) || RKE_DEFAULT_RETENTION;
    cfg.retention = { rke: { intervalHours: interval, retention } };
    summary.push(
      `local retention: snapshots older than ${interval * retention}h are pruned once in S3 (retention ${retention} × interval_hours ${interval}, as RKE computes it)`,
    );
    rkeChanges.push(
      `raise backup_config.retention above ${retention} (e.g. ${retention * 2}) so that the agent, which never deletes what is not in S3, prunes before RKE does`,
    );
    if (!enabled)
      notes.push('backup_config.enabled is false: RKE takes no recurring snapshots, so the agent ships only one-time snapshots (rke etcd snapshot-save)');
    const s3 = backupRaw.s3backupconfig;
    if (s3 !== undefined && s3 !== null) {
      if (!isMap(s3)) throw unmappable(S3, 'is not a mapping', 'write bucket_name, endpoint, region, folder, access_key and secret_key under it');
      checkKeys(s3, S3, S3_KEYS);
      s3raw = s3;
    }
  } else if (legacy) {
    form = 'v0.1';
    const where = 'services.etcd';
    const snapshot = optBool(etcd, 'snapshot', where);
    const creation = optString(etcd, 'creation', where);
    if (creation !== undefined && parseDuration(creation) === undefined)
      throw unmappable(`${where}.creation`, `${shown('creation', creation)} is not a duration`, 'write it as RKE v0.1 does, e.g. 6h0s');
    const retention = optString(etcd, 'retention', where);
    if (retention !== undefined) {
      if (parseDuration(retention) === undefined || /^\d+$/.test(retention))
        throw unmappable(`${where}.retention`, `${shown('retention', retention)} is not an age`, 'in RKE v0.1 it is an age such as 24h');
      cfg.retention = { rke: { retention } };
      summary.push(`local retention: snapshots older than ${retention} are pruned once in S3`);
      rkeChanges.push(`raise services.etcd.retention above ${retention} so that the agent, which never deletes what is not in S3, prunes before RKE does`);
    } else {
      notes.push('services.etcd.retention is not set: the agent prunes no local snapshots until retention.maxAge or retention.keep is set');
    }
    if (snapshot === false) notes.push('services.etcd.snapshot is false: RKE takes no recurring snapshots, so the agent ships only one-time snapshots');
  } else {
    // RKE v0.2+ takes recurring snapshots with its defaults when backup_config is absent.
    cfg.retention = { rke: { intervalHours: RKE_DEFAULT_INTERVAL_HOURS, retention: RKE_DEFAULT_RETENTION } };
    notes.push(`services.etcd.backup_config is not set: RKE's defaults apply (every ${RKE_DEFAULT_INTERVAL_HOURS}h, keep ${RKE_DEFAULT_RETENTION})`);
    summary.push(`local retention: snapshots older than ${RKE_DEFAULT_INTERVAL_HOURS * RKE_DEFAULT_RETENTION}h are pruned once in S3 (RKE's defaults)`);
    rkeChanges.push(
      `set backup_config.retention above ${RKE_DEFAULT_RETENTION} (e.g. ${RKE_DEFAULT_RETENTION * 2}) so that the agent, which never deletes what is not in S3, prunes before RKE does`,
    );
  }

  let bucket: string | undefined;
  if (s3raw) {
    bucket = optString(s3raw, 'bucket_name', S3);
    const region = optString(s3raw, 'region', S3);
    const endpoint = optString(s3raw, 'endpoint', S3);
    const folder = optString(s3raw, 'folder', S3)?.replace(/^\/+|\/+$/g, '');
    const ca = optString(s3raw, 'custom_ca', S3);
    const accessKey = optString(s3raw, 'access_key', S3);
    const secretKey = optString(s3raw, 'secret_key', S3);
    registerSecret(accessKey);
    registerSecret(secretKey);

    const mapped = endpoint ? mapEndpoint(endpoint, region, notes, warnings) : { region };
    if (!endpoint && !region) notes.push(`no endpoint and no region: AWS S3 in us-east-1`);
    if (mapped.endpoint) cfg.s3.endpoint = mapped.endpoint;
    if (mapped.region) cfg.s3.region = mapped.region;
    if (folder) {
      if (folder.split('/').some((p) => p === '.' || p === '..')) throw unmappable(`${S3}.folder`, 'contains "." or ".." segments', 'use plain folder names');
      cfg.s3.prefix = folder;
    }
    if (ca) {
      checkCa(ca, warnings);
      cfg.s3.ca = ca;
    }
    if (Boolean(accessKey) !== Boolean(secretKey)) {
      throw unmappable(
        `${S3}.${accessKey ? 'secret_key' : 'access_key'}`,
        'missing while its partner is set',
        'give both access_key and secret_key, or neither (to use an instance role)',
      );
    }
    if (accessKey && secretKey) {
      credentialsText = new Secret(
        `# S3 keys imported from ${path.basename(file)} (${S3}).\n# Keep this file mode 0600; the agent re-reads it when it changes.\n[default]\naws_access_key_id = ${accessKey}\naws_secret_access_key = ${secretKey}\n`,
      );
      cfg.s3.credentialsFile = path.join(opts.outputDir, 'credentials');
    } else {
      notes.push('no access_key/secret_key: the agent uses the AWS default chain (environment, instance role via IMDS, web identity)');
    }
    summary.push(
      `S3: bucket ${opts.bucket ?? bucket ?? '?'} ${mapped.endpoint ? `at ${mapped.endpoint}` : `on AWS (${mapped.region ?? 'us-east-1'})`}, keys under ${folder ? `${folder}/` : '(default prefix) '}<cluster>/<node>/`,
    );
    notes.push('each node uploads under its own key (<prefix>/<cluster>/<node>/<name>), where RKE wrote every node to <folder>/<name>');
    rkeChanges.unshift('remove backup_config.s3backupconfig (the agent uploads now; both uploading doubles the traffic)');
  } else if (form === 'v0.2+') {
    notes.push(`${S3} is not set: RKE kept snapshots on the nodes only`);
  }

  if (opts.bucket && bucket && opts.bucket !== bucket) notes.push(`bucket ${opts.bucket} from --bucket replaces ${bucket} from ${S3}.bucket_name`);
  bucket = opts.bucket ?? bucket;
  if (!bucket) {
    const where = form === 'v0.1' ? 'RKE v0.1 has no S3 settings' : `${S3}.bucket_name is not set`;
    throw new RkeImportError(EXIT.CONFIG, `${file}: no bucket to upload to (${where}); pass --bucket NAME`);
  }
  if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket))
    throw unmappable(
      opts.bucket ? '--bucket' : `${S3}.bucket_name`,
      `${shown('bucket', bucket)} is not a valid bucket name`,
      'use lower-case letters, digits, dots and hyphens',
    );
  cfg.s3 = { bucket, ...cfg.s3 };
  if (!s3raw) summary.push(`S3: bucket ${bucket} on AWS (us-east-1); set s3.endpoint (and s3.region) for another S3 server`);

  const header = `# etcd-backup-agent configuration, imported from ${path.basename(file)} (${form === 'v0.1' ? 'services.etcd, RKE v0.1' : BACKUP}) by\n# "etcd-backup-agent import-rke". Every other key keeps its default: see config.example.yaml.\n# Secrets never go here${credentialsText ? '; the S3 keys are in s3.credentialsFile (mode 0600)' : ''}.\n`;
  const body = stringify(
    { ...(cfg.cluster ? { cluster: cfg.cluster } : {}), s3: cfg.s3, ...(cfg.retention ? { retention: cfg.retention } : {}) },
    { lineWidth: 0 },
  );
  return { form, configText: header + body, credentialsText, summary, notes, warnings, rkeChanges };
}
