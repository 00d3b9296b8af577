// The ledger against S3's listing: a confirmed backup that S3 no longer lists (deleted or lost there) is
// forgotten, so that its local file, if still present, is shipped again.
import { describeError } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import type { Shipper } from '../ship/shipper.js';
import { nodePrefix } from '../store/layout.js';
import type { Ledger, LedgerEntry } from '../store/ledger.js';
import type { Store } from '../store/store.js';

export interface ReconcileDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  ledger: Ledger;
  metrics: Metrics;
  /** absent before the daemon has one: nothing is in flight then */
  shipper: Pick<Shipper, 'snapshots' | 'forgotten'> | undefined;
}

/**
 * Confirmed entries whose object S3 no longer lists: forgotten, and their local files shipped again.
 * `listing`: one already made (at start), else this node's prefix is listed now.
 */
export async function reconcileLedger(d: ReconcileDeps, listing?: { keys: ReadonlySet<string>; at: number }): Promise<LedgerEntry[]> {
  const { log, store } = d;
  let present = listing?.keys;
  const at = listing?.at ?? Date.now();
  if (!present) {
    const keys = new Set<string>();
    try {
      for await (const o of store.list(nodePrefix(d.cfg))) keys.add(o.key);
    } catch (err) {
      log.warn('reconcile: could not list S3; the ledger is checked again later', { error: describeError(err, { location: store.location }) });
      return [];
    }
    present = keys;
  }
  // an upload in flight, or confirmed after the listing started, is not missing
  const inFlight = new Set(
    d.shipper
      ?.snapshots()
      .filter((s) => s.state === 'shipping')
      .map((s) => s.name),
  );
  const missing = (await d.ledger.reconcile(present, at)).filter((e) => !inFlight.has(e.name));
  for (const e of missing) {
    d.metrics.objectsMissing.inc();
    log.warn('a confirmed backup is no longer in S3 (deleted or lost there); its local snapshot, if still present, is shipped again', {
      key: e.storedKey ?? e.key,
      file: e.name,
      confirmedAt: e.confirmedAt,
    });
  }
  if (missing.length) d.shipper!.forgotten(missing.map((e) => e.name));
  return missing;
}
