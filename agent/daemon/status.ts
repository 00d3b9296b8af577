// What the daemon reports: the document `status` shows, computed from what the daemon already holds (the
// shipper's files, the ledger, the metrics' times), with no S3 call. Pure: the daemon passes the clock in.
import type { Config } from '../config/keys.js';
import type { Metrics } from '../ops/metrics.js';
import { isoOrUndefined, statusState, type StatusDoc } from '../ops/status.js';
import { planPrune } from '../retention/local.js';
import type { LocalSnapshot } from '../ship/shipper.js';
import type { LocalFileAt } from '../snapshot/lifecycle.js';
import { nodePrefix, objectKey } from '../store/layout.js';
import type { Ledger, LedgerEntry } from '../store/ledger.js';
import type { PartIntegrity } from '../store/store.js';

/** What the daemon's shipper knows of a file, as retention reads it. */
export function asLocalFile(s: LocalSnapshot): LocalFileAt {
  return {
    name: s.name,
    path: s.path,
    state: s.state,
    size: s.fp?.size ?? 0,
    mtimeMs: s.fp?.mtimeMs ?? 0,
    timeMs: s.snap.timestamp?.getTime(),
    ino: s.fp?.ino,
    sha256: s.sha256,
    detail: s.rejectReason,
  };
}

/** The daemon's state at one moment, as much of it as `status` shows. */
export interface StatusInput {
  cfg: Config;
  version: string;
  /** where the store is (its `location`) */
  location: string;
  s3: { up: boolean; detail: string };
  integrity: PartIntegrity;
  snapshots: LocalSnapshot[];
  pending: number;
  ledger: Pick<Ledger, 'entries' | 'getByKey'>;
  times: ReturnType<Metrics['times']>;
  now: number;
}

/** What `status` shows, from what the daemon knows now. */
export function statusDoc(i: StatusInput): StatusDoc {
  const { cfg, ledger } = i;
  // shipped: the object as stored (`.age` when encrypted); uploading: where it goes
  const keyOf = (s: LocalSnapshot): { key?: string } => {
    if (s.state === 'confirmed' && s.key) return { key: ledger.getByKey(s.key)?.storedKey ?? s.key };
    if (s.state === 'shipping') return { key: s.key ?? objectKey(cfg, s.name) };
    return s.key ? { key: s.key } : {};
  };
  const files = i.snapshots;
  const t = i.times;
  const plan = planPrune({
    files: files.map(asLocalFile),
    ledger: ledger.entries(),
    heads: new Map(),
    policy: { keep: cfg.retention.keep, maxAgeMs: cfg.retention.maxAgeMs, confirmRemote: false },
    now: i.now,
  });
  const newest = ledger
    .entries()
    .reduce<LedgerEntry | undefined>((a, e) => (!a || (e.snapshotTime ?? e.confirmedAt) > (a.snapshotTime ?? a.confirmedAt) ? e : a), undefined);
  return {
    source: 'daemon',
    version: i.version,
    node: cfg.node,
    cluster: cfg.cluster,
    snapshotDir: cfg.snapshotDir,
    destination: `${i.location}/${nodePrefix(cfg)}`,
    s3: i.s3,
    integrity: i.integrity === 'crc32' ? 'CRC32 header (probed)' : i.integrity === 'md5' ? 'Content-MD5 (Object Lock)' : 'signed payload SHA-256',
    pending: i.pending,
    ...(isoOrUndefined(t.lastUploadS) ? { lastUpload: isoOrUndefined(t.lastUploadS) } : {}),
    ...(isoOrUndefined(t.lastPruneS) ? { lastPrune: isoOrUndefined(t.lastPruneS) } : {}),
    ...(isoOrUndefined(t.lastVerifyRunS) ? { lastVerifyRun: isoOrUndefined(t.lastVerifyRunS) } : {}),
    ...(isoOrUndefined(t.lastVerifiedS) ? { lastVerified: isoOrUndefined(t.lastVerifiedS) } : {}),
    snapshots: files
      .filter((s) => s.state !== 'superseded' || s.fp)
      .map((s) => ({
        name: s.name,
        state: statusState(s.state),
        why: s.rejectReason ?? s.why,
        size: s.fp?.size ?? 0,
        time: new Date(s.snap.timestamp?.getTime() ?? s.fp?.mtimeMs ?? 0).toISOString(),
        ...keyOf(s),
        ...(s.state === 'shipping' && s.progress ? { progress: s.progress } : {}),
      })),
    nextPrune: plan.delete.map((d) => ({ name: d.name, reason: d.reason })),
    ...(newest ? { newestInS3: { key: newest.storedKey ?? newest.key, time: newest.snapshotTime ?? newest.confirmedAt } } : {}),
  };
}
