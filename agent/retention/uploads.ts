// Multipart uploads a crash left behind: pure.
import { formatDuration } from '../base/units.js';
import { ownName } from './remote.js';

export interface OpenUpload {
  key: string;
  uploadId: string;
  initiatedMs?: number;
}

export interface UploadDecision extends OpenUpload {
  reason: string;
}

export interface UploadPlan {
  abort: UploadDecision[];
  keep: UploadDecision[];
}

/** Multipart uploads of this node that a crash left behind: older than maxAgeMs and not in flight here. */
export function planStaleUploads(input: {
  uploads: readonly OpenUpload[];
  prefix: string;
  now: number;
  maxAgeMs: number;
  inFlightKeys: ReadonlySet<string>;
}): UploadPlan {
  const plan: UploadPlan = { abort: [], keep: [] };
  for (const u of input.uploads) {
    const age = u.initiatedMs === undefined ? undefined : input.now - u.initiatedMs;
    let reason: string | undefined;
    if (ownName(u.key, input.prefix) === undefined) reason = `not under this node's prefix ${input.prefix}; never touched`;
    else if (input.inFlightKeys.has(u.key)) reason = 'the agent is uploading this key now';
    else if (age === undefined) reason = 'S3 gave no start time; its age is unknown';
    else if (age < input.maxAgeMs) reason = `younger than ${formatDuration(input.maxAgeMs)} (started ${formatDuration(Math.max(0, age))} ago)`;
    if (reason !== undefined) plan.keep.push({ ...u, reason });
    else
      plan.abort.push({
        ...u,
        reason: `incomplete for ${formatDuration(age!)} (threshold ${formatDuration(input.maxAgeMs)}): left by a crashed or killed upload`,
      });
  }
  return plan;
}
