// "Newest" for every planner: later time first; equal times by name or key, so the order is the same on
// every run (S3 gives LastModified in whole seconds, and two snapshots can share a second).
export const byRecency = (a: { t: number; id: string }, b: { t: number; id: string }): number => b.t - a.t || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
export const iso = (ms: number): string => (Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms));
