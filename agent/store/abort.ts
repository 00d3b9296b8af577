// Aborting a multipart upload when the store may be away. An open upload holds its parts' space (and cost)
// in S3 and most clients never show it, so an abort the store did not take because it was unreachable or
// overloaded is tried again in the background, pauses growing to 10 s, until the store takes it or says the
// upload is gone. Retention's stale-upload pass is the backstop for what an agent restart forgets.
import { classifyError, type FailureReason } from '../base/errors.js';
import type { Store } from './store.js';

// failures that pass: the store unreachable or overloaded, not saying no to this abort
const PASSING: ReadonlySet<FailureReason> = new Set(['network', 'timeout', 'throttled', 'server']);

export interface AbortTiming {
  firstRetryMs: number;
  maxRetryMs: number;
}

const TIMING: AbortTiming = { firstRetryMs: 1000, maxRetryMs: 10_000 };

/**
 * Aborts the upload now; when the store is away, keeps trying in the background. Never throws: the caller is
 * already failing for its own reason, which an abort's failure must not replace. True if aborted now.
 */
export async function abortUpload(store: Store, key: string, uploadId: string, timing: AbortTiming = TIMING): Promise<boolean> {
  try {
    await store.abortUpload(key, uploadId);
    return true;
  } catch (err) {
    retryLater(store, key, uploadId, err, timing, timing.firstRetryMs);
    return false;
  }
}

function retryLater(store: Store, key: string, uploadId: string, err: unknown, timing: AbortTiming, delayMs: number): void {
  if (!PASSING.has(classifyError(err))) return;
  setTimeout(() => {
    store.abortUpload(key, uploadId).catch((e: unknown) => retryLater(store, key, uploadId, e, timing, Math.min(delayMs * 2, timing.maxRetryMs)));
  }, delayMs).unref();
}
