// Every number the agent exposes. Series with labels start at 0 so that rate() and absent() work
// from the first scrape.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { FAILURE_REASONS, type FailureReason } from '../base/errors.js';
import { REJECT_LABELS } from '../snapshot/lifecycle.js';

export type UploadResult = 'success' | 'failure' | 'already_present';
export type PruneLocation = 'local' | 'remote';
/** Why a drill failed: a fixed set, safe as a label (the log line has the detail). */
export type VerifyFailure = 'missing' | 'unreadable' | 'hash' | 'size' | 'corrupt' | 'truncated' | 'format' | 'decrypt' | 'signature' | 'restore';
export const VERIFY_FAILURES: readonly VerifyFailure[] = [
  'missing',
  'unreadable',
  'hash',
  'size',
  'corrupt',
  'truncated',
  'format',
  'decrypt',
  'signature',
  'restore',
];

export interface BuildFeatures {
  encryption: boolean;
  signing: boolean;
}

export interface LocalUsage {
  count: number;
  bytes: number;
}

export class Metrics {
  readonly registry = new Registry();
  readonly lastUploadSuccess: Gauge;
  readonly lastSnapshot: Gauge;
  readonly pending: Gauge;
  readonly uploads: Counter<'result'>;
  readonly uploadFailures: Counter<'reason'>;
  readonly uploadBytes: Counter;
  readonly uploadDuration: Histogram;
  readonly rejected: Counter<'reason'>;
  readonly localSnapshots: Gauge;
  readonly localBytes: Gauge;
  readonly pruned: Counter<'location'>;
  readonly prunedBytes: Counter<'location'>;
  readonly lastPruneSuccess: Gauge;
  readonly pruneFailures: Counter;
  readonly s3Up: Gauge;
  readonly dirUp: Gauge;
  readonly ledgerWriteFailures: Counter;
  readonly buildInfo: Gauge<'version' | 'nodejs' | 'encryption' | 'signing'>;
  readonly objectsMissing: Counter;
  readonly lastVerified: Gauge;
  readonly lastVerifyRun: Gauge;
  readonly verifyFailures: Counter<'reason'>;
  readonly lastVerifyFailed: Gauge;
  readonly lastRevision: Gauge;
  readonly lastKeys: Gauge;
  private lastUploadS = 0;
  private lastSnapshotS = 0;
  private localUsage: () => Promise<LocalUsage> = async () => ({ count: 0, bytes: 0 });

  constructor(version: string, opts: { defaultMetrics?: boolean; features?: BuildFeatures } = {}) {
    const registers = [this.registry];
    this.lastUploadSuccess = new Gauge({
      name: 'etcdbackup_last_upload_success_timestamp_seconds',
      help: 'When the newest snapshot of this node was confirmed in S3; seeded at start from the ledger and S3, so a restart does not reset it.',
      registers,
    });
    this.lastSnapshot = new Gauge({
      name: 'etcdbackup_last_snapshot_timestamp_seconds',
      help: 'Modification time of the newest complete local snapshot (confirmed, or complete and waiting for its upload; one the upload pass then finds corrupt no longer counts).',
      registers,
      collect: () => {
        const waiting = Math.min(this.newestWaitingMs(), Date.now()) / 1000;
        this.lastSnapshot.set(Math.max(this.lastSnapshotS, waiting > 0 ? waiting : 0));
      },
    });
    this.pending = new Gauge({ name: 'etcdbackup_snapshots_pending', help: 'Verified local snapshots not yet confirmed in S3.', registers });
    this.uploads = new Counter({
      name: 'etcdbackup_uploads_total',
      help: 'Snapshot uploads by result (already_present: the same content was in S3, nothing sent).',
      labelNames: ['result'],
      registers,
    });
    this.uploadFailures = new Counter({
      name: 'etcdbackup_upload_failures_total',
      help: 'Failed upload attempts by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.uploadBytes = new Counter({ name: 'etcdbackup_upload_bytes_total', help: 'Bytes of snapshots confirmed in S3.', registers });
    this.uploadDuration = new Histogram({
      name: 'etcdbackup_upload_duration_seconds',
      help: 'Duration of successful uploads, from first byte to HeadObject confirmation.',
      buckets: [1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600],
      registers,
    });
    this.rejected = new Counter({
      name: 'etcdbackup_snapshots_rejected_total',
      help: 'Snapshots that failed verification and were not shipped (and will not be deleted).',
      labelNames: ['reason'],
      registers,
    });
    this.localSnapshots = new Gauge({
      name: 'etcdbackup_local_snapshots',
      help: 'Snapshot files in the snapshot directory (computed at scrape time).',
      registers,
      collect: async () => {
        const u = await this.usageOnce();
        if (u) this.localSnapshots.set(u.count);
      },
    });
    this.localBytes = new Gauge({
      name: 'etcdbackup_local_snapshots_bytes',
      help: 'Bytes of snapshot files in the snapshot directory (computed at scrape time).',
      registers,
      collect: async () => {
        const u = await this.usageOnce();
        if (u) this.localBytes.set(u.bytes);
      },
    });
    this.pruned = new Counter({ name: 'etcdbackup_pruned_files_total', help: 'Snapshots deleted by retention.', labelNames: ['location'], registers });
    this.prunedBytes = new Counter({
      name: 'etcdbackup_pruned_bytes_total',
      help: 'Bytes of snapshots deleted by retention.',
      labelNames: ['location'],
      registers,
    });
    this.lastPruneSuccess = new Gauge({
      name: 'etcdbackup_last_prune_success_timestamp_seconds',
      help: 'Time of the last retention pass that completed without error.',
      registers,
    });
    this.pruneFailures = new Counter({
      name: 'etcdbackup_prune_failures_total',
      help: 'Retention passes that failed or were skipped because S3 was unreachable.',
      registers,
    });
    this.s3Up = new Gauge({ name: 'etcdbackup_s3_up', help: '1 if the last S3 call succeeded, else 0.', registers });
    this.dirUp = new Gauge({ name: 'etcdbackup_snapshot_directory_up', help: '1 if the snapshot directory exists and is readable, else 0.', registers });
    this.ledgerWriteFailures = new Counter({
      name: 'etcdbackup_ledger_write_failures_total',
      help: 'Failed writes of the local ledger (state directory full or read-only).',
      registers,
    });
    this.buildInfo = new Gauge({
      name: 'etcdbackup_build_info',
      help: 'Agent version, runtime, and whether snapshots are encrypted and signed; the value is always 1.',
      labelNames: ['version', 'nodejs', 'encryption', 'signing'],
      registers,
    });
    this.objectsMissing = new Counter({
      name: 'etcdbackup_objects_missing_total',
      help: 'Confirmed objects the ledger knew that a listing of S3 no longer shows (deleted or lost there); their local files are shipped again.',
      registers,
    });
    this.lastVerified = new Gauge({
      name: 'etcdbackup_last_verified_timestamp_seconds',
      help: 'Snapshot time of the newest object of this node that the restore drill streamed back from S3 and found sound; kept across restarts in the state directory.',
      registers,
    });
    this.lastVerifyRun = new Gauge({
      name: 'etcdbackup_last_verify_run_timestamp_seconds',
      help: 'When the restore drill last ran to the end, whatever it found.',
      registers,
    });
    this.verifyFailures = new Counter({
      name: 'etcdbackup_verify_failures_total',
      help: 'Objects the restore drill found unsound, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.lastVerifyFailed = new Gauge({
      name: 'etcdbackup_last_verify_failed_objects',
      help: 'Objects the last restore drill found unsound (0: all it checked passed); kept across restarts in the state directory.',
      registers,
    });
    this.lastRevision = new Gauge({
      name: 'etcdbackup_last_snapshot_revision',
      help: "etcd revision in the newest shipped snapshot, from the upload's deep check (0 while unknown, e.g. with verify.beforeUpload off); a revision that stops moving while uploads continue means a stale member's snapshots.",
      registers,
    });
    this.lastKeys = new Gauge({
      name: 'etcdbackup_last_snapshot_keys',
      help: "Keys in the newest shipped snapshot, from the upload's deep check, as etcdctl snapshot status counts them.",
      registers,
    });

    const f = opts.features ?? { encryption: false, signing: false };
    this.buildInfo.set({ version, nodejs: process.version, encryption: String(f.encryption), signing: String(f.signing) }, 1);
    for (const r of VERIFY_FAILURES) this.verifyFailures.inc({ reason: r }, 0);
    for (const r of ['success', 'failure', 'already_present'] as const) this.uploads.inc({ result: r }, 0);
    for (const r of FAILURE_REASONS) this.uploadFailures.inc({ reason: r }, 0);
    for (const r of REJECT_LABELS) this.rejected.inc({ reason: r }, 0);
    for (const l of ['local', 'remote'] as const) {
      this.pruned.inc({ location: l }, 0);
      this.prunedBytes.inc({ location: l }, 0);
    }
    this.s3Up.set(0);
    this.dirUp.set(0);
    this.lastVerifyFailed.set(0);
    this.pending.set(0);
    // prom-client samples event-loop lag every 10 ms by default: 200 wake-ups a second on an idle host
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 1000 });
  }

  private usage: Promise<LocalUsage | undefined> | undefined;

  /** One directory look per scrape, shared by both gauges; a failure must not fail the scrape. */
  private usageOnce(): Promise<LocalUsage | undefined> {
    if (!this.usage) {
      this.usage = this.localUsage().catch(() => undefined);
      const clear = (): void => void setTimeout(() => (this.usage = undefined), 100);
      void this.usage.then(clear);
    }
    return this.usage;
  }

  setLocalUsage(fn: () => Promise<LocalUsage>): void {
    this.localUsage = fn;
  }

  uploadSucceeded(bytes: number, seconds: number, at: Date): void {
    this.uploads.inc({ result: 'success' });
    this.uploadBytes.inc(bytes);
    this.uploadDuration.observe(seconds);
    this.confirmedAt(at);
  }

  /** Moves the freshness gauge forward only: an older confirmation never makes backups look staler. */
  confirmedAt(at: Date): void {
    // A file dated in the future (the clock jumped) must not pin the gauge there: the staleness alerts
    // compare it with time() and would never fire again. It counts as now.
    const s = Math.min(at.getTime(), Date.now()) / 1000;
    if (s > this.lastUploadS) {
      this.lastUploadS = s;
      this.lastUploadSuccess.set(s);
    }
  }

  /** the newest snapshot that is complete and waiting for its upload (queued or shipping), ms; 0 if none */
  private newestWaitingMs: () => number = () => 0;
  setNewestWaiting(fn: () => number): void {
    this.newestWaitingMs = fn;
  }

  /** A snapshot proven complete and sound: by its read pass, or by the ledger. Moves forward only. */
  snapshotSeen(mtimeMs: number): void {
    const s = Math.min(mtimeMs, Date.now()) / 1000;
    if (s > this.lastSnapshotS) {
      this.lastSnapshotS = s;
      this.lastSnapshot.set(s);
    }
  }

  uploadFailed(reason: FailureReason): void {
    this.uploadFailures.inc({ reason });
  }

  /** revision and keys of the newest shipped snapshot (by snapshot time) */
  private newestFactsS = 0;
  dbFacts(revision: number, keys: number, snapshotTimeMs = Date.now()): void {
    if (snapshotTimeMs < this.newestFactsS) return;
    this.newestFactsS = snapshotTimeMs;
    this.lastRevision.set(revision);
    this.lastKeys.set(keys);
  }

  /** The timestamps `status` shows (seconds; 0: never). */
  times(): { lastUploadS: number; lastVerifiedS: number; lastVerifyRunS: number; lastPruneS: number } {
    return { lastUploadS: this.lastUploadS, lastVerifiedS: this.lastVerifiedS, lastVerifyRunS: this.lastVerifyRunS, lastPruneS: this.lastPruneS };
  }

  private lastVerifyRunS = 0;
  /** A drill ran to the end at `at` and found `failed` objects unsound. */
  verifyRan(at = Date.now(), failed = 0): void {
    this.lastVerifyRunS = at / 1000;
    this.lastVerifyRun.set(this.lastVerifyRunS);
    this.lastVerifyFailed.set(failed);
  }

  private lastPruneS = 0;
  pruneSucceeded(at = Date.now()): void {
    this.lastPruneS = at / 1000;
    this.lastPruneSuccess.set(this.lastPruneS);
  }

  /** Moves forward only, like confirmedAt. */
  private lastVerifiedS = 0;
  verified(snapshotTime: Date): void {
    const s = Math.min(snapshotTime.getTime(), Date.now()) / 1000;
    if (s > this.lastVerifiedS) {
      this.lastVerifiedS = s;
      this.lastVerified.set(s);
    }
  }
}
