// The one table of configuration keys: validation, defaults, unknown-key detection, the example config and the
// README reference all read it. Types of the validated config live here too.

export const DEFAULT_CONFIG_PATH = '/etc/etcd-backup-agent/config.yaml';
export const DEFAULT_METRICS_PORT = 9479;

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

/**
 * How each uploaded part is proven intact by the server. `auto`: a CRC32 header where the start-up probe saw
 * the server refuse a wrong one, else the signed payload SHA-256. `when_required`: always the signed payload.
 * `when_supported`: the CRC32 header, but only where the probe proved it is checked.
 */
export type ChecksumMode = 'auto' | 'when_required' | 'when_supported';
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
  maxParts: number;
  reconcileIntervalMs: number;
  /** proxy URL for S3 traffic; undefined: HTTPS_PROXY/HTTP_PROXY/NO_PROXY from the environment */
  proxy?: string;
  objectLock?: { mode: 'GOVERNANCE' | 'COMPLIANCE'; retainForMs: number };
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
  encryption: { recipients: string[]; recipientsFile?: string };
  signing: { keyFile?: string };
  verify: { enabled: boolean; schedule: string; sample: number; beforeUpload: boolean };
  shutdownTimeoutMs: number;
}

export type Kind = 'string' | 'int' | 'bool' | 'duration' | 'size' | 'list' | 'path';

export interface KeySpec {
  key: string;
  kind: Kind;
  doc: string;
  default?: unknown;
  values?: readonly string[];
  min?: number;
  max?: number;
  /** never echo the value back in an error */
  sensitive?: boolean;
  /** a file the agent reads: what it must hold (checked after parsing, by load.ts) */
  file?: string;
}

export const KEYS: readonly KeySpec[] = [
  { key: 'cluster', kind: 'string', default: 'default', doc: 'Cluster name, the second part of every object key.' },
  { key: 'node', kind: 'string', default: '<hostname>', doc: 'Node name, the third part of every object key, so nodes never overwrite each other.' },
  {
    key: 'snapshotDir',
    kind: 'path',
    default: '/opt/rke/etcd-snapshots',
    doc: 'Directory the producer writes snapshots to (RKE2: /var/lib/rancher/rke2/server/db/snapshots).',
  },
  { key: 'stateDir', kind: 'path', default: '/var/lib/etcd-backup-agent', doc: 'Where the ledger of confirmed uploads lives.' },
  { key: 'include', kind: 'list', default: [], doc: 'Extra file-name globs to treat as snapshots, besides the built-in producer names and `*.db`.' },
  { key: 'exclude', kind: 'list', default: [], doc: 'File-name globs never to ship (`*.part`, `pki.bundle.tar.gz`, `*.rkestate` are always excluded).' },
  {
    key: 'detect.rescanInterval',
    kind: 'duration',
    default: '1m',
    min: 1000,
    doc: 'Full directory rescan, catching events inotify dropped; it also finds files whose names only their content can identify as snapshots (etcdctl with any name, RKE `--name`), which are not watched one by one.',
  },
  { key: 'detect.zipWait', kind: 'duration', default: '30s', doc: 'How long a raw RKE/RKE2 snapshot is held back for the `.zip` that replaces it.' },
  {
    key: 'detect.settleTimeout',
    kind: 'duration',
    default: '2m',
    min: 1000,
    doc: 'A file that fails verification and has not changed for this long is rejected as corrupt.',
  },
  {
    key: 'detect.pollInterval',
    kind: 'duration',
    default: '2s',
    min: 100,
    doc: 'How often a file still being written is re-checked (besides change events); one unchanged for a while is re-checked less often, every tenth of its unchanged time, up to 30 s.',
  },
  { key: 's3.bucket', kind: 'string', doc: 'Bucket to upload to (required). It must exist.' },
  {
    key: 's3.endpoint',
    kind: 'string',
    doc: 'S3-compatible endpoint URL, e.g. `https://minio.example:9000` or `http://127.0.0.1:7480`; a bare `host:port` (as in RKE) means HTTPS. Empty: AWS, from the region.',
  },
  { key: 's3.region', kind: 'string', default: 'us-east-1', doc: 'Region (most S3-compatible servers accept any).' },
  { key: 's3.prefix', kind: 'string', default: 'etcd-backup', doc: 'First part of every object key (RKE `folder`).' },
  { key: 's3.keyTemplate', kind: 'string', default: '{prefix}/{cluster}/{node}/{name}', doc: 'Object key; must contain `{node}` and end with `{name}`.' },
  { key: 's3.forcePathStyle', kind: 'bool', default: '<true with an endpoint>', doc: 'Path-style addressing (needed by RGW/MinIO without wildcard DNS).' },
  { key: 's3.caFile', kind: 'path', doc: 'PEM file with extra CA certificates to trust for the endpoint.', file: 'a PEM file with the CA certificate' },
  { key: 's3.ca', kind: 'string', doc: 'The same as inline PEM (RKE `custom_ca`).' },
  {
    key: 's3.credentialsFile',
    kind: 'path',
    doc: 'AWS shared-credentials file (INI) to read keys from; re-read when it changes. Empty: the AWS default chain (env, ~/.aws, web identity, instance metadata).',
    file: 'an AWS credentials file ([default] aws_access_key_id=…, aws_secret_access_key=…)',
  },
  { key: 's3.profile', kind: 'string', doc: 'Profile in the credentials file (default `default`).' },
  { key: 's3.sse', kind: 'string', default: 'none', values: ['none', 'AES256', 'aws:kms'], doc: 'Server-side encryption.' },
  { key: 's3.kmsKeyId', kind: 'string', doc: 'KMS key id or ARN for `sse: aws:kms`.' },
  { key: 's3.storageClass', kind: 'string', doc: 'Storage class, e.g. `STANDARD_IA`.' },
  {
    key: 's3.checksum',
    kind: 'string',
    default: 'auto',
    values: ['auto', 'when_required', 'when_supported'],
    doc: 'How each part is proven intact. `auto`: a CRC32 header where the start-up probe saw the server refuse a wrong one (AWS), else the signed payload SHA-256 (Ceph RGW and Swift check it; they ignore CRC32). `when_required`: always the signed payload. `when_supported`: CRC32, but only where the probe proved the server checks it. No setting counts unverified bytes as shipped.',
  },
  {
    key: 's3.maxParts',
    kind: 'int',
    default: 1000,
    min: 1,
    max: 10000,
    doc: 'Most parts the server takes in one upload (Swift: 1000, AWS: 10000). A file larger than partSize × maxParts gets larger parts, so memory grows past partSize × queueSize only above that size (8 MiB × 1000 ≈ 7.8 GiB).',
  },
  {
    key: 's3.reconcileInterval',
    kind: 'duration',
    default: '15m',
    min: 10_000,
    doc: "How often the ledger is checked against a listing of this node's prefix (one paged LIST): an object deleted or lost in S3 is shipped again while its local file exists.",
  },
  {
    key: 's3.proxy',
    kind: 'string',
    doc: 'HTTP(S) proxy for S3, e.g. `http://proxy.example:3128` (credentials in the URL are never logged). Empty: `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment, as curl and Go read them.',
    sensitive: true,
  },
  {
    key: 's3.objectLock.mode',
    kind: 'string',
    values: ['GOVERNANCE', 'COMPLIANCE'],
    doc: 'S3 Object Lock mode for every object the agent writes (the bucket must have Object Lock enabled; check-config says).',
  },
  { key: 's3.objectLock.retainFor', kind: 'duration', doc: 'How long each object stays immutable, e.g. `30d`; needs `s3.objectLock.mode`.' },
  { key: 's3.requestTimeout', kind: 'duration', default: '2m', min: 1000, doc: 'One HTTP request (one part) may take at most this long.' },
  { key: 's3.connectTimeout', kind: 'duration', default: '10s', min: 100, doc: 'TCP/TLS connect timeout.' },
  {
    key: 's3.partSize',
    kind: 'size',
    default: '8MiB',
    min: 5 * 1024 * 1024,
    max: 5 * 1024 ** 3,
    doc: 'Multipart part size. Upload memory is partSize × queueSize (pooled), whatever the file size; 16MiB bought no throughput over 8MiB here and cost 30 MiB.',
  },
  { key: 's3.queueSize', kind: 'int', default: 4, min: 1, max: 64, doc: 'Parts in flight at once.' },
  { key: 'upload.timeout', kind: 'duration', default: '2h', min: 1000, doc: 'One whole upload may take at most this long, then it is aborted and retried.' },
  { key: 'upload.concurrency', kind: 'int', default: 1, min: 1, max: 16, doc: 'Snapshots uploaded at once.' },
  { key: 'upload.retryInitial', kind: 'duration', default: '5s', min: 10, doc: 'First retry delay after a failed upload (doubles, with jitter).' },
  {
    key: 'upload.retryMax',
    kind: 'duration',
    default: '10m',
    min: 10,
    doc: 'Longest delay between retries; a failing snapshot is retried forever while it exists.',
  },
  { key: 'upload.attempts', kind: 'int', default: 3, min: 1, max: 20, doc: 'Attempts per S3 request inside one upload (SDK retries).' },
  { key: 'upload.bandwidthLimit', kind: 'size', doc: 'Bytes per second the agent reads and sends at most, e.g. `50MiB`. Empty: unlimited.' },
  { key: 'retention.schedule', kind: 'string', default: '17 * * * *', doc: 'Cron expression (5 or 6 fields) for pruning passes.' },
  { key: 'retention.timezone', kind: 'string', default: 'UTC', doc: 'Time zone of the schedule.' },
  { key: 'retention.keep', kind: 'int', min: 1, doc: 'Keep at most this many local snapshots (newest first). Empty: no count limit.' },
  { key: 'retention.maxAge', kind: 'duration', doc: 'Delete local snapshots older than this, e.g. `72h`. Empty: no age limit.' },
  {
    key: 'retention.rke.intervalHours',
    kind: 'int',
    min: 1,
    doc: 'RKE `interval_hours`; with `retention.rke.retention` (a count) sets maxAge = interval × retention, as RKE does.',
  },
  { key: 'retention.rke.retention', kind: 'string', doc: 'RKE `retention`: a count (v0.2+, with intervalHours) or an age like `24h` (v0.1).' },
  { key: 'retention.dryRun', kind: 'bool', default: false, doc: 'Log what would be deleted, delete nothing.' },
  {
    key: 'retention.confirmRemote',
    kind: 'bool',
    default: true,
    doc: 'Before deleting a local file, HeadObject must confirm its size and sha256. Turn off only for offline tests.',
  },
  {
    key: 'retention.staleUploadAge',
    kind: 'duration',
    default: '24h',
    min: 60_000,
    doc: "Abort this node's multipart uploads older than this (crashed uploads cost storage).",
  },
  { key: 'retention.remote.enabled', kind: 'bool', default: false, doc: "Prune this node's own objects in S3 too." },
  { key: 'retention.remote.keep', kind: 'int', min: 1, doc: "Keep at least/most this many of this node's objects." },
  { key: 'retention.remote.maxAge', kind: 'duration', doc: "Delete this node's objects older than this (the newest `keep` always stay)." },
  { key: 'metrics.enabled', kind: 'bool', default: true, doc: 'Serve /metrics, /healthz and /readyz.' },
  { key: 'metrics.listen', kind: 'string', default: `:${DEFAULT_METRICS_PORT}`, doc: 'Listen address `[host]:port`.' },
  { key: 'metrics.tlsCertFile', kind: 'path', doc: 'Serve HTTPS with this certificate (PEM).', file: 'a PEM certificate (chain) for the metrics endpoint' },
  { key: 'metrics.tlsKeyFile', kind: 'path', doc: 'Key for `metrics.tlsCertFile`.', file: 'the PEM private key of metrics.tlsCertFile' },
  { key: 'metrics.basicAuthUser', kind: 'string', doc: 'Require HTTP basic auth with this user.' },
  { key: 'metrics.basicAuthPasswordFile', kind: 'path', doc: 'File holding the basic-auth password.', file: 'a file holding the password' },
  {
    key: 'encryption.recipients',
    kind: 'list',
    default: [],
    doc: 'age recipients (`age1…` X25519, or `ssh-ed25519 AAAA…` public keys): every object is an age file `<key>.age` only their identities can read. Several recipients allow key rotation and escrow.',
  },
  {
    key: 'encryption.recipientsFile',
    kind: 'path',
    doc: 'A file of age recipients, one per line (`#` comments), as `age -R` reads it; used with or instead of `encryption.recipients`.',
    file: 'an age recipients file (one age1… or ssh-ed25519 key per line)',
  },
  {
    key: 'signing.keyFile',
    kind: 'path',
    doc: 'Unencrypted OpenSSH ed25519 private key (`ssh-keygen -t ed25519 -N ""`): each snapshot is signed (SSHSIG, namespace `etcd-backup-agent`) and the signature stored as `<key>.sig`.',
    file: 'an OpenSSH ed25519 private key without a passphrase',
  },
  {
    key: 'verify.enabled',
    kind: 'bool',
    default: true,
    doc: "Run the restore drill: stream this node's newest object back from S3 and check it deeply, on `verify.schedule`.",
  },
  {
    key: 'verify.schedule',
    kind: 'string',
    default: '<daily, at a minute chosen from the node name>',
    doc: "Cron expression of the drill (UTC). The default spreads a fleet's drills over the day, so nodes do not read S3 at once. A sixth, leading field counts seconds: `*/30 * * * * *` drills every 30 s, to try the drill out or in a test setup. For a drill now, run `etcd-backup-agent verify --latest` (the same check, from the command line).",
  },
  { key: 'verify.sample', kind: 'int', default: 0, min: 0, max: 100, doc: 'Also drill this many random older objects of this node on each run.' },
  {
    key: 'verify.beforeUpload',
    kind: 'bool',
    default: true,
    doc: "Run the deep bbolt check (every page of the database) in the upload's read pass, so a snapshot whose pages are broken is never shipped.",
  },
  { key: 'log.level', kind: 'string', default: 'info', values: LOG_LEVELS, doc: 'error, warn, info or debug.' },
  {
    key: 'shutdownTimeout',
    kind: 'duration',
    default: '60s',
    min: 1000,
    doc: 'On SIGTERM, an upload in flight may finish within this time, then it is aborted.',
  },
];

/** Keys whose value is a file the agent reads, with what the file must hold. */
export const FILE_KEYS: readonly KeySpec[] = KEYS.filter((k) => k.file !== undefined);
