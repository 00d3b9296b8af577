// What the shipper knows about each snapshot file, and the pure readings of it (the public view, the queue
// order). Its own module so that the queue (shipper.ts) and the delivery of one file (deliver.ts) share it
// while imports still point one way: shipper → deliver → track.
import type { Fingerprint } from '../base/files.js';
import type { CheckResult, TrackState } from '../snapshot/lifecycle.js';
import { snapshotTime, type SnapshotName } from '../snapshot/names.js';

/** What the agent knows about one snapshot file in the directory (for retention, metrics, `status`). */
export interface LocalSnapshot {
  name: string;
  path: string;
  snap: SnapshotName;
  state: TrackState;
  fp?: Fingerprint;
  sha256?: string;
  key?: string;
  rejectReason?: string;
  /** why it is in its state */
  why: string;
  /** bytes sent of the upload in flight */
  progress?: { done: number; total: number };
}

export interface Track extends LocalSnapshot {
  firstSeen: number;
  changedAt: number;
  quick?: { fp: Fingerprint; result: CheckResult };
  failed?: { fp: Fingerprint; result: CheckResult };
  rejectedFp?: Fingerprint;
  unreadable?: { code: string; ctimeMs: number };
  attempts: number;
  /** a queued snapshot whose own upload failed waits until then */
  notBefore: number;
  timer?: NodeJS.Timeout;
  busy: boolean;
  again: boolean;
  waitLogged?: boolean;
}

/** A file first seen now: settling until decide() says otherwise. */
export function newTrack(path: string, snap: SnapshotName, now: number): Track {
  return {
    name: snap.name,
    path,
    snap,
    state: 'settling',
    why: 'just seen',
    firstSeen: now,
    changedAt: now,
    attempts: 0,
    notBefore: 0,
    busy: false,
    again: false,
  };
}

/** What others see of a track: a copy, without the timers and retry bookkeeping. */
export function viewOf({ name, path, snap, state, fp, sha256, key, rejectReason, why, progress }: Track): LocalSnapshot {
  return { name, path, snap, state, fp, sha256, key, rejectReason, why, progress };
}

/** Complete and verified, not yet confirmed in S3. */
export function isPending(t: Track): boolean {
  return t.state === 'queued' || t.state === 'shipping';
}

/**
 * The next upload to start. Newest first: after an outage the most recent backup is the most valuable.
 * "Newest" is the snapshot's own time (the producer's in its name, else its mtime), ties broken by name.
 * When every queued file waits out its own backoff, the one due soonest (the caller waits for it).
 */
export function nextQueued(tracks: Iterable<Track>, now: number): Track | undefined {
  let best: Track | undefined;
  let soonest: Track | undefined;
  const when = (t: Track): number => snapshotTime(t.snap, t.fp?.mtimeMs ?? 0).getTime();
  for (const t of tracks) {
    if (t.state !== 'queued') continue;
    if (t.notBefore <= now) {
      if (!best || when(t) > when(best) || (when(t) === when(best) && t.name > best.name)) best = t;
    } else if (!soonest || t.notBefore < soonest.notBefore) soonest = t;
  }
  return best ?? soonest;
}
