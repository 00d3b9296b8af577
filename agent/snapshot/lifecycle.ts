// The life of one snapshot file, decided in one place. A pure function of what is known about the file
// gives its state and the next thing to do; the daemon's shipper, `upload`, `prune` and `status` all ask it.
//
//   seen ── not a snapshot ──▶ (ignored by detect)
//    │
//   held (a raw file its producer is about to zip) ── its zip is good ──▶ superseded
//    │
//   settling (the cheap checks fail: still being written; re-checked on change or timer)
//    │                               └── no change for settleTimeout ──▶ rejected (kept, never shipped)
//   queued ──▶ shipping (one read pass: verify, encrypt, send) ──▶ confirmed
//                 │  verification fails at the end ──▶ settling or rejected, as above; the upload is aborted
//                 └─ S3 fails ──▶ queued again, with backoff
import type { Fingerprint } from '../base/files.js';
import type { RejectReason } from './format.js';

export type TrackState = 'held' | 'settling' | 'queued' | 'shipping' | 'confirmed' | 'rejected' | 'superseded';

/** What the agent knows of a file in the snapshot directory; `unrecognised`: not a snapshot at all. */
export type FileState = TrackState | 'unrecognised';

/** A file in the snapshot directory as retention, `prune` and `status` read it. */
export interface LocalFile {
  name: string;
  state: FileState;
  size: number;
  mtimeMs: number;
  /** when the snapshot was taken: the producer's time in its name; absent: its mtime */
  timeMs?: number;
  /** of the whole file, once verified */
  sha256?: string;
  /** why it is not a snapshot, or why it failed verification */
  detail?: string;
}

/** A local file and where it is; `ino` lets retention notice a file replaced since it was planned. */
export interface LocalFileAt extends LocalFile {
  path: string;
  ino?: number;
}

/** States of a complete, intact snapshot (as far as anything has checked): the files retention ranks. */
export const VERIFIED_STATES: ReadonlySet<TrackState> = new Set<TrackState>(['queued', 'shipping', 'confirmed']);

export type RejectLabel = RejectReason | 'unreadable' | 'name';
export const REJECT_LABELS: readonly RejectLabel[] = ['truncated', 'corrupt', 'format', 'unreadable', 'name'];

export interface CheckResult {
  ok: boolean;
  reason?: RejectReason;
  detail?: string;
}

export interface FileFacts {
  /** what lstat says the name is */
  kind: 'file' | 'symlink' | 'directory' | 'special';
  fp: Fingerprint;
  now: number;
  /** when the agent first saw the file, and when its fingerprint last changed */
  firstSeenMs: number;
  changedAtMs: number;
  /** the ledger holds a confirmed upload of this name with this size and mtime */
  confirmed?: { key: string; sha256: string };
  /** RKE-family producers zip a raw snapshot into `<name>.zip` and delete the raw */
  zipping: boolean;
  /** for a raw file of a zipping producer: the state of its `.zip` */
  zip?: 'absent' | 'pending' | 'good' | 'rejected';
  /** the cheap completeness checks, run on this fingerprint */
  quick?: CheckResult;
  /** the last full verification (the read pass) of this fingerprint, when it failed */
  failed?: CheckResult;
  /** the file could not be opened or read (EACCES, EIO) at this ctime */
  unreadable?: { code: string; ctimeMs: number; nowCtimeMs: number };
  /** named explicitly (`upload PATH`): no waiting for a zip or for a writer to finish */
  explicit?: boolean;
  settleTimeoutMs: number;
  zipWaitMs: number;
  pollIntervalMs: number;
}

export type Action =
  | { kind: 'none' }
  /** run the cheap checks and decide again */
  | { kind: 'check' }
  | { kind: 'wait'; ms: number }
  | { kind: 'ship' }
  | { kind: 'reject'; reason: RejectLabel; detail: string };

export interface Decision {
  state: TrackState;
  action: Action;
  /** one line for logs, `status` and `prune`: why this state */
  why: string;
}

const none = { kind: 'none' } as const;

/** The longest pause between looks at a settling file that has not changed for a long time. */
export const SETTLE_POLL_MAX_MS = 30_000;

/**
 * Still being written (the checks fail, but the file changed recently), or given up on. A writer's change
 * wakes the file at once (a watch event, or the next rescan), so the looks in between only catch a dropped
 * event: every pollInterval at first, then a tenth of the time the file has been unchanged, up to 30 s, and
 * one just after the settle timeout. Hundreds of garbage files named like snapshots then cost a few lstat()
 * calls a second, not thousands.
 */
function waitOrReject(f: FileFacts, r: CheckResult, what: string): Decision {
  const quiet = f.now - f.changedAtMs;
  if (!f.explicit && quiet < f.settleTimeoutMs) {
    const pause = Math.max(f.pollIntervalMs, Math.min(quiet / 10, SETTLE_POLL_MAX_MS));
    return {
      state: 'settling',
      action: { kind: 'wait', ms: Math.round(Math.max(10, Math.min(pause, f.settleTimeoutMs - quiet + 10))) },
      why: `not complete yet (${r.detail ?? what}); waiting for the writer`,
    };
  }
  const reason = r.reason ?? 'corrupt';
  return { state: 'rejected', action: { kind: 'reject', reason, detail: r.detail ?? what }, why: `failed verification (${reason}: ${r.detail ?? what})` };
}

/** The rules, in order: the first that applies decides. */
export function decide(f: FileFacts): Decision {
  if (f.kind !== 'file') {
    const detail = f.kind === 'symlink' ? 'a symlink, never followed' : f.kind === 'directory' ? 'a directory' : 'a FIFO, socket or device';
    return { state: 'rejected', action: { kind: 'reject', reason: 'format', detail: `not a regular file (${detail})` }, why: `not a regular file (${detail})` };
  }
  if (f.confirmed) return { state: 'confirmed', action: none, why: `confirmed in S3 as ${f.confirmed.key}` };
  if (f.unreadable) {
    // a chmod or ACL change (same content, new ctime) is worth a new look
    if (f.unreadable.ctimeMs === f.unreadable.nowCtimeMs) {
      return {
        state: 'rejected',
        action: {
          kind: 'reject',
          reason: 'unreadable',
          detail: `cannot read it (${f.unreadable.code}); check the agent's read access to the snapshot directory`,
        },
        why: `unreadable (${f.unreadable.code})`,
      };
    }
  }
  if (f.zipping && !f.explicit) {
    if (f.zip === 'good' || f.zip === 'pending')
      return { state: 'superseded', action: none, why: `its .zip ${f.zip === 'good' ? 'replaces it' : 'is being written'}; the producer deletes the raw file` };
    if (f.zip !== 'rejected') {
      const wait = f.firstSeenMs + f.zipWaitMs - f.now;
      if (wait > 0) return { state: 'held', action: { kind: 'wait', ms: wait }, why: 'waiting for the .zip its producer makes of it' };
    }
    // its zip failed (a full disk cuts RKE's compression short): this raw file is the backup of that hour
  }
  if (!f.quick) return { state: 'settling', action: { kind: 'check' }, why: 'not checked yet' };
  if (!f.quick.ok) return waitOrReject(f, f.quick, 'incomplete');
  if (f.failed) return waitOrReject(f, f.failed, 'verification failed');
  return {
    state: 'queued',
    action: { kind: 'ship' },
    why: f.zip === 'rejected' ? 'its .zip failed verification, so this raw snapshot is shipped instead' : 'complete; to be shipped',
  };
}
