// What `status` shows, as the daemon serves it on /status and as `status` computes it offline.
/**
 * A file's state as `status` says it: `pending` (verified, waiting for its upload), `uploading`, `shipped`,
 * `held` (a raw snapshot waiting for the .zip its producer makes of it), `rejected`, `checking` (still being
 * written or not checked yet), `replaced` (its .zip is the backup).
 */
export type StatusState = 'pending' | 'uploading' | 'shipped' | 'held' | 'rejected' | 'checking' | 'replaced';

const WORDS: Record<string, StatusState> = {
  queued: 'pending',
  shipping: 'uploading',
  confirmed: 'shipped',
  held: 'held',
  rejected: 'rejected',
  settling: 'checking',
  superseded: 'replaced',
};

/** The lifecycle's state of a file (snapshot/lifecycle.ts) in the words `status` uses. */
export function statusState(lifecycleState: string): StatusState {
  return WORDS[lifecycleState] ?? 'checking';
}

export interface StatusSnapshot {
  name: string;
  state: StatusState;
  why: string;
  size: number;
  /** snapshot time (ISO) */
  time: string;
  /** the object in S3 (shipped), or the key it is being uploaded to */
  key?: string;
  progress?: { done: number; total: number };
}

export interface StatusDoc {
  /** `daemon`: from the running agent; `offline`: computed by the command from the directory, ledger and S3 */
  source: 'daemon' | 'offline';
  /** offline: why the daemon gave no status (none listening, credentials refused, …) */
  offlineBecause?: string;
  version: string;
  node: string;
  cluster: string;
  snapshotDir: string;
  destination: string;
  s3: { up: boolean; detail: string };
  /** how parts are proven (known once the daemon probed the server) */
  integrity?: string;
  pending: number;
  lastUpload?: string;
  lastPrune?: string;
  lastVerifyRun?: string;
  lastVerified?: string;
  snapshots: StatusSnapshot[];
  /** what the next retention pass would delete, once S3 confirms each copy */
  nextPrune: { name: string; reason: string }[];
  newestInS3?: { key: string; time: string; revision?: number };
}

export const isoOrUndefined = (s: number): string | undefined => (s > 0 ? new Date(s * 1000).toISOString() : undefined);
