// The ledger at start: opened from the state directory (or kept in memory when that is unusable), then
// brought in line with what S3 holds. S3 is the truth; the ledger only spares the agent a listing per upload.
import type { Config } from '../config/keys.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { resolveIntegrity } from '../ship/options.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import { Ledger, ledgerLocation, type LedgerEntry, type LedgerStatus } from '../store/ledger.js';
import type { PartIntegrity, Store } from '../store/store.js';

/**
 * The daemon's ledger is written at most once a second. Each write rewrites the whole file (about 340 bytes
 * per snapshot), so a backlog of 1000 uploads wrote 1000 files of up to 340 KB, and their garbage set the
 * agent's peak memory. A crash loses at most the last second's entries; those objects are found in S3 again.
 */
export const LEDGER_SAVE_DELAY_MS = 1000;

/** Opens this location's ledger and says in the log what it found. Never throws. */
export async function openLedger(cfg: Config, log: Logger, metrics: Metrics): Promise<{ ledger: Ledger; status: LedgerStatus }> {
  const location = ledgerLocation(cfg);
  try {
    const { ledger, status, detail } = await Ledger.open(cfg.stateDir, location, { saveDelayMs: LEDGER_SAVE_DELAY_MS });
    if (status === 'corrupt') log.error('ledger was corrupt; rebuilding it from S3', { ledger: ledger.path, detail });
    else if (status === 'elsewhere')
      log.warn("ledger describes another bucket, endpoint or prefix; starting a new one from this location's listing", {
        ledger: ledger.path,
        detail,
      });
    else if (status === 'missing') log.info('no ledger yet; building it from S3', { ledger: ledger.path });
    return { ledger, status };
  } catch (e) {
    // Without a state directory the agent still ships (the ledger lives in memory; S3 is the truth).
    const ledger = Ledger.inMemory(cfg.stateDir, location, { saveDelayMs: LEDGER_SAVE_DELAY_MS });
    metrics.ledgerWriteFailures.inc();
    log.error('state directory unusable; keeping the ledger in memory only', {
      stateDir: cfg.stateDir,
      error: (e as NodeJS.ErrnoException).code ?? String(e),
      fix: 'make stateDir writable by the agent (systemd: StateDirectory=)',
    });
    return { ledger, status: 'missing' };
  }
}

export interface SyncDeps {
  cfg: Config;
  log: Logger;
  store: Store;
  ledger: Ledger;
  metrics: Metrics;
  /** how parts are proven, once the server has been probed */
  integrity: (i: PartIntegrity) => void;
  /** checks the ledger against a listing just made */
  reconcile: (listing: { keys: ReadonlySet<string>; at: number }) => Promise<unknown>;
}

/**
 * One attempt at the sync with S3 at start: probes how parts are proven, checks or rebuilds the ledger from
 * this node's listing, and seeds freshness from what S3 holds (a restart must not reset it). Throws while
 * S3 cannot be reached; the caller retries.
 */
export async function syncWithStore(d: SyncDeps, status: LedgerStatus): Promise<void> {
  const { cfg, log, store, ledger, metrics } = d;
  await store.check();
  d.integrity(await resolveIntegrity(store, cfg, log));
  const prefix = nodePrefix(cfg);
  const listedAt = Date.now();
  const catalog = await readCatalog(store, prefix);
  // a ledger that names this bucket may still be wrong (edited, restored from a backup, objects deleted
  // while the agent was down): the listing just made checks it at once, not a reconcile interval later
  if (status === 'ok') await d.reconcile({ keys: catalog.listed, at: listedAt });
  if (status !== 'ok') {
    const entries = catalog.entries.filter((e) => e.complete).map(ledgerEntryOf);
    for (const e of ledger.entries()) if (!entries.some((x) => x.key === e.key)) entries.push(e);
    await ledger.replaceAll(entries).catch((e) => {
      metrics.ledgerWriteFailures.inc();
      log.error('could not write the rebuilt ledger; keeping it in memory', {
        ledger: ledger.path,
        error: (e as NodeJS.ErrnoException).code ?? String(e),
      });
    });
    log.info('ledger rebuilt from S3', { objects: entries.length, prefix });
  }
  for (const e of catalog.entries) if (e.complete) metrics.confirmedAt(e.object.lastModified ?? e.time);
  const newest = catalog.entries.find((e) => e.complete && e.manifest?.snapshot.db);
  if (newest?.manifest?.snapshot.db) metrics.dbFacts(newest.manifest.snapshot.db.revision, newest.manifest.snapshot.db.keys, newest.time.getTime());
  log.info('S3 reachable', { destination: `${store.location}/${prefix}`, objects: catalog.entries.length });
}

/** A ledger entry for a complete backup the catalog found. */
function ledgerEntryOf(e: CatalogEntry): LedgerEntry {
  return {
    name: e.name,
    key: e.key,
    ...(e.object.key !== e.key ? { storedKey: e.object.key } : {}),
    size: e.size,
    sha256: e.sha256!,
    mtimeMs: e.mtimeMs ?? 0,
    producer: e.producer ?? 'unknown',
    confirmedAt: (e.object.lastModified ?? e.time).toISOString(),
    snapshotTime: e.time.toISOString(),
  };
}
