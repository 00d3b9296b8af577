// The restore drill: on its cron schedule (by default once a day, at a minute the node's name picks), this
// node's newest object in S3 and `verify.sample` random older ones are streamed back and verified. One at a
// time, never while an upload runs (the shipper yields its turn), within upload.bandwidthLimit.
import { createTask, type ScheduledTask } from 'node-cron';
import { describeError } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import { cronLogger, type Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { Throttle } from '../base/throttle.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import type { Store } from '../store/store.js';
import { verifyEntry, type VerifyReport } from './verify.js';

export interface DrillDeps {
  cfg: Config;
  store: Store;
  log: Logger;
  metrics: Metrics;
  /** runs fn when no upload is in flight, holding new uploads back meanwhile */
  exclusive: <T>(fn: () => Promise<T>) => Promise<T>;
  random?: () => number;
}

/** The newest of this node's complete backups, and `n` others picked at random. Pure. */
export function pickDrill(entries: readonly CatalogEntry[], node: string, cluster: string, n: number, random: () => number): CatalogEntry[] {
  const own = entries.filter((e) => e.complete && e.node === node && e.cluster === cluster);
  if (!own.length) return [];
  const rest = own.slice(1);
  const picked: CatalogEntry[] = [own[0]!];
  for (let i = 0; i < n && rest.length; i++) picked.push(rest.splice(Math.floor(random() * rest.length), 1)[0]!);
  return picked;
}

export class DrillScheduler {
  private task: ScheduledTask | undefined;
  private running: Promise<VerifyReport[]> | undefined;
  private readonly abort = new AbortController();

  constructor(private readonly d: DrillDeps) {}

  start(): void {
    const { cfg, log } = this.d;
    this.task = createTask(cfg.verify.schedule, () => void this.runNow('schedule'), { name: 'drill', timezone: 'UTC', noOverlap: true, logger: cronLogger(log, 'drill'), unref: true });
    void this.task.start();
    log.info('restore drill scheduled', { schedule: cfg.verify.schedule, timezone: 'UTC', nextRun: this.task.getNextRun()?.toISOString(), sample: cfg.verify.sample });
  }

  runNow(trigger = 'manual'): Promise<VerifyReport[]> {
    if (this.running) return this.running;
    this.running = this.d
      .exclusive(() => this.drill(trigger))
      .catch((err) => {
        this.d.log.error('restore drill could not run', { trigger, error: describeError(err, { location: this.d.store.location }) });
        return [];
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  private async drill(trigger: string): Promise<VerifyReport[]> {
    const { cfg, store, log, metrics } = this.d;
    const entries = (await readCatalog(store, nodePrefix(cfg))).entries;
    const picked = pickDrill(entries, cfg.node, cfg.cluster, cfg.verify.sample, this.d.random ?? Math.random);
    if (!picked.length) {
      log.info('restore drill: no backup of this node in S3 yet', { trigger });
      metrics.verifyRan();
      return [];
    }
    const throttle = cfg.upload.bandwidthLimit ? new Throttle(cfg.upload.bandwidthLimit) : undefined;
    const reports: VerifyReport[] = [];
    for (const e of picked) {
      if (this.abort.signal.aborted) break;
      const started = Date.now();
      const r = await verifyEntry(store, e, { signal: this.abort.signal, ...(throttle ? { throttle } : {}) });
      reports.push(r);
      const seconds = Number(((Date.now() - started) / 1000).toFixed(3));
      if (r.ok) {
        metrics.verified(r.time);
        if (r.db && e === picked[0]) metrics.dbFacts(r.db.revision, r.db.keys, r.time.getTime());
        log.info('restore drill: backup verified', { key: r.key, depth: r.depth, revision: r.db?.revision, keys: r.db?.keys, snapshotTime: r.time.toISOString(), seconds, detail: r.detail });
      } else {
        metrics.verifyFailures.inc({ reason: r.reason ?? 'corrupt' });
        log.error('restore drill: backup FAILED verification; it would not restore', { key: r.key, reason: r.reason, detail: r.detail, snapshotTime: r.time.toISOString() });
      }
    }
    metrics.verifyRan();
    return reports;
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.task?.destroy();
    await this.running?.catch(() => undefined);
  }
}
