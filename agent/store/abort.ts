// Aborting a multipart upload when the store may be away. An open upload holds its parts' space (and cost)
// in S3 and most clients never show it, so an abort the store did not take because it was unreachable or
// overloaded stays pending: it is tried again in the background, pauses growing to 10 s, and at once before
// the next upload of the same key, until the store takes it or says the upload is gone. Retention's
// stale-upload pass is the backstop for what an agent restart forgets.
import { classifyError, type FailureReason } from '../base/errors.js';
import type { Store } from './store.js';

// failures that pass: the store unreachable or overloaded, not saying no to this abort
const PASSING: ReadonlySet<FailureReason> = new Set(['network', 'timeout', 'throttled', 'server']);

export interface AbortTiming {
  firstRetryMs: number;
  maxRetryMs: number;
}

const TIMING: AbortTiming = { firstRetryMs: 1000, maxRetryMs: 10_000 };

/** Pending aborts per store, then per key: the upload ids the store has not taken yet. */
const pending = new WeakMap<Store, Map<string, Set<string>>>();

function idsOf(store: Store, key: string): Set<string> {
  let byKey = pending.get(store);
  if (!byKey) pending.set(store, (byKey = new Map<string, Set<string>>()));
  let ids = byKey.get(key);
  if (!ids) byKey.set(key, (ids = new Set<string>()));
  return ids;
}

function settled(store: Store, key: string, uploadId: string): void {
  const byKey = pending.get(store);
  const ids = byKey?.get(key);
  ids?.delete(uploadId);
  if (ids && ids.size === 0) byKey!.delete(key);
}

/** One try. True when the abort is finished with: taken, or refused for a reason a retry would not change. */
async function attempt(store: Store, key: string, uploadId: string): Promise<{ finished: boolean; aborted: boolean }> {
  try {
    await store.abortUpload(key, uploadId);
    settled(store, key, uploadId);
    return { finished: true, aborted: true };
  } catch (err) {
    const passing = PASSING.has(classifyError(err));
    if (!passing) settled(store, key, uploadId);
    return { finished: !passing, aborted: false };
  }
}

/**
 * Aborts the upload now; when the store is away, keeps it pending. Never throws: the caller is already
 * failing for its own reason, which an abort's failure must not replace. True if aborted now.
 */
export async function abortUpload(store: Store, key: string, uploadId: string, timing: AbortTiming = TIMING): Promise<boolean> {
  const r = await attempt(store, key, uploadId);
  if (!r.finished) {
    idsOf(store, key).add(uploadId);
    retryLater(store, key, uploadId, timing, timing.firstRetryMs);
  }
  return r.aborted;
}

function retryLater(store: Store, key: string, uploadId: string, timing: AbortTiming, delayMs: number): void {
  setTimeout(() => {
    // finished meanwhile by the next upload of the key
    if (!pending.get(store)?.get(key)?.has(uploadId)) return;
    void attempt(store, key, uploadId).then((r) => {
      if (!r.finished) retryLater(store, key, uploadId, timing, Math.min(delayMs * 2, timing.maxRetryMs));
    });
  }, delayMs).unref();
}

/** Before a new upload of `key`: its pending aborts are tried now, so a shipped key leaves none open behind it. */
export async function abortPending(store: Store, key: string): Promise<void> {
  const ids = pending.get(store)?.get(key);
  if (!ids) return;
  for (const id of [...ids]) await attempt(store, key, id);
}
