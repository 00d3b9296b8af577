// The retention policy in one line, for `prune` output and the daemon's start log.
import { formatDuration } from '../base/units.js';
import type { Config } from '../config/keys.js';

/** A short human account of the policy, for `prune` output; `staleUploadAgeMs`: the age this pass uses. */
export function describePolicy(cfg: Config, staleUploadAgeMs = cfg.retention.staleUploadAgeMs): string {
  const r = cfg.retention;
  const rules = (keep?: number, maxAgeMs?: number): string =>
    [keep !== undefined && `keep ${keep}`, maxAgeMs !== undefined && `maxAge ${formatDuration(maxAgeMs)}`].filter(Boolean).join(', ');
  const local = rules(r.keep, r.maxAgeMs) || 'no local policy';
  const remote = r.remote.enabled ? `remote: ${rules(r.remote.keep, r.remote.maxAgeMs)}` : 'remote retention off';
  const confirm = r.confirmRemote ? 'HeadObject confirms each copy' : 'copies confirmed by the ledger only';
  return `${local}; ${remote}; ${confirm}; stale uploads aborted after ${formatDuration(staleUploadAgeMs)}`;
}
