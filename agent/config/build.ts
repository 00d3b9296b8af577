// Completing a valid config (complete): every key the document left out takes its default, and the fields
// the agent uses are derived from the values the rules settled. Pure apart from reading `env`.
import type { Given } from './document.js';
import type { Config, Sse } from './keys.js';
import type { Settled } from './rules.js';

/** The Config for values that passed every rule. */
export function buildConfig(v: Given, s: Settled, env: NodeJS.ProcessEnv): Config {
  const { def, get } = v;
  const lockMode = get<'GOVERNANCE' | 'COMPLIANCE'>('s3.objectLock.mode');
  const lockFor = get<number>('s3.objectLock.retainFor');
  return {
    cluster: def('cluster'),
    node: s.node,
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
      bucket: get<string>('s3.bucket')!,
      endpoint: s.endpoint,
      // the environment's region applies only when the file names none
      region: env.AWS_REGION && !v.has('s3.region') ? env.AWS_REGION : def<string>('s3.region'),
      prefix: s.prefix,
      keyTemplate: def('s3.keyTemplate'),
      // S3-compatible servers at a custom endpoint seldom have the DNS that virtual-hosted buckets need
      forcePathStyle: get<boolean>('s3.forcePathStyle') ?? s.endpoint !== undefined,
      caFile: get('s3.caFile'),
      ca: get('s3.ca'),
      credentialsFile: get('s3.credentialsFile'),
      profile: get('s3.profile'),
      sse: def<Sse>('s3.sse'),
      kmsKeyId: get('s3.kmsKeyId'),
      storageClass: get('s3.storageClass'),
      checksum: def('s3.checksum'),
      requestTimeoutMs: def('s3.requestTimeout'),
      connectTimeoutMs: def('s3.connectTimeout'),
      partSize: def('s3.partSize'),
      queueSize: def('s3.queueSize'),
      maxParts: def('s3.maxParts'),
      reconcileIntervalMs: def('s3.reconcileInterval'),
      proxy: get('s3.proxy'),
      ...(lockMode && lockFor !== undefined ? { objectLock: { mode: lockMode, retainForMs: lockFor } } : {}),
    },
    upload: {
      timeoutMs: def('upload.timeout'),
      concurrency: def('upload.concurrency'),
      retryInitialMs: def('upload.retryInitial'),
      retryMaxMs: def('upload.retryMax'),
      attempts: def('upload.attempts'),
      bandwidthLimit: get('upload.bandwidthLimit'),
    },
    retention: {
      schedule: def('retention.schedule'),
      timezone: def('retention.timezone'),
      keep: get('retention.keep'),
      maxAgeMs: s.maxAgeMs,
      dryRun: def('retention.dryRun'),
      confirmRemote: def('retention.confirmRemote'),
      staleUploadAgeMs: def('retention.staleUploadAge'),
      remote: { enabled: def('retention.remote.enabled'), keep: get('retention.remote.keep'), maxAgeMs: get('retention.remote.maxAge') },
    },
    metrics: {
      enabled: def('metrics.enabled'),
      listen: def('metrics.listen'),
      tlsCertFile: get('metrics.tlsCertFile'),
      tlsKeyFile: get('metrics.tlsKeyFile'),
      basicAuthUser: get('metrics.basicAuthUser'),
      basicAuthPasswordFile: get('metrics.basicAuthPasswordFile'),
    },
    log: { level: def('log.level') },
    encryption: { recipients: def('encryption.recipients'), recipientsFile: get('encryption.recipientsFile') },
    signing: { keyFile: get('signing.keyFile') },
    verify: {
      enabled: def('verify.enabled'),
      schedule: get<string>('verify.schedule') ?? spreadSchedule(s.node),
      sample: def('verify.sample'),
      beforeUpload: def('verify.beforeUpload'),
    },
    shutdownTimeoutMs: def('shutdownTimeout'),
  };
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
