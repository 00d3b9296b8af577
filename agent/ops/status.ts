// What `status` shows, as the daemon serves it on /status and as `status` computes it offline.
export interface StatusSnapshot {
  name: string;
  state: string;
  why: string;
  size: number;
  /** snapshot time (ISO) */
  time: string;
  key?: string;
  progress?: { done: number; total: number };
}

export interface StatusDoc {
  /** `daemon`: from the running agent; `offline`: computed by the command from the directory, ledger and S3 */
  source: 'daemon' | 'offline';
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
