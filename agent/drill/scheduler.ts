// The restore drill: on its cron schedule (by default once a day, at a minute the node's name picks), this
// node's newest object in S3 and `verify.sample` random older ones are streamed back and verified. One at a
// time, never while an upload runs (the shipper yields its turn), within upload.bandwidthLimit. The revision
// and key count it reads are logged, not exported: those gauges describe what was shipped (the upload's
// deep check), so that a revision that stops moving means the snapshots did, not that a drill was missed.
import { createTask, type ScheduledTask } from 'node-cron';
import { classifyError, describeError } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import { cronLogger, type Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { Throttle } from '../base/throttle.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import { ledgerLocation } from '../store/ledger.js';
import type { Store } from '../store/store.js';
import { loadDrillState, saveDrillState } from './state.js';
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

/** Errors that say S3 cannot be reached at all: the drill stops, with no verdict on any backup. */
const UNREACHABLE = new Set(['network', 'timeout', 'tls', 'throttled', 'server', 'credentials', 'aborted']);

export class DrillScheduler {
  private task: ScheduledTask | undefined;
  private running: Promise<VerifyReport[]> | undefined;
  private readonly abort = new AbortController();
  private lastVerifiedMs = 0;
  /** a drill has its turn and reads S3 (not merely waiting for an upload to end) */
  private reading = false;

  constructor(private readonly d: DrillDeps) {}

  /** Seeds the gauges from the last drill's record (a restart must not reset them), then schedules. */
  async start(): Promise<void> {
    const { cfg, log, metrics } = this.d;
    const prev = await loadDrillState(cfg.stateDir, ledgerLocation(cfg));
    if (prev) {
      this.lastVerifiedMs = prev.lastVerifiedMs;
      if (prev.lastVerifiedMs) metrics.verified(new Date(prev.lastVerifiedMs));
      metrics.verifyRan(prev.lastRunMs, prev.failed.length);
    }
    this.task = createTask(cfg.verify.schedule, () => void this.runNow('schedule'), {
      name: 'drill',
      timezone: 'UTC',
      noOverlap: true,
      logger: cronLogger(log, 'drill'),
      unref: true,
    });
    void this.task.start();
    log.info('restore drill scheduled', {
      schedule: cfg.verify.schedule,
      timezone: 'UTC',
      nextRun: this.task.getNextRun()?.toISOString(),
      sample: cfg.verify.sample,
      ...(prev ? { lastRun: new Date(prev.lastRunMs).toISOString(), lastFailed: prev.failed.length } : {}),
    });
  }

  /** Runs a drill now (or joins the one running): the schedule's trigger, and tests'. */
  runNow(trigger = 'manual'): Promise<VerifyReport[]> {
    if (this.running) return this.running;
    // "due" and "started" apart show how long the drill waited for an upload in flight
    this.d.log.debug('restore drill due', { trigger });
    this.running = this.d
      .exclusive(() => this.drill(trigger))
      .catch((err) => {
        if (this.abort.signal.aborted) this.d.log.info('restore drill stopped by shutdown', { trigger });
        else this.d.log.error('restore drill could not run', { trigger, error: describeError(err, { location: this.d.store.location }) });
        return [];
      })
      .finally(() => {
        this.running = undefined;
        this.reading = false;
      });
    return this.running;
  }

  private async drill(trigger: string): Promise<VerifyReport[]> {
    const { cfg, store, log, metrics } = this.d;
    // the turn may come after shutdown began (the drill waited for an upload): then nothing is read
    this.abort.signal.throwIfAborted();
    this.reading = true;
    const started = Date.now();
    const entries = (await readCatalog(store, nodePrefix(cfg))).entries;
    const picked = pickDrill(entries, cfg.node, cfg.cluster, cfg.verify.sample, this.d.random ?? Math.random);
    if (!picked.length) {
      log.info('restore drill: no backup of this node in S3 yet', { trigger });
      await this.finished(started, []);
      return [];
    }
    log.info('restore drill started', { trigger, objects: picked.length, newest: picked[0]!.object.key });
    const throttle = cfg.upload.bandwidthLimit ? new Throttle(cfg.upload.bandwidthLimit) : undefined;
    const reports: VerifyReport[] = [];
    for (const e of picked) {
      this.abort.signal.throwIfAborted();
      const t0 = Date.now();
      let r: VerifyReport;
      try {
        r = await verifyEntry(store, e, { signal: this.abort.signal, ...(throttle ? { throttle } : {}) });
      } catch (err) {
        // S3 out of reach: no verdict on this backup or the others. Anything else (access refused to this
        // object, say) means this backup cannot be read back, which is what a restore would meet too.
        if (UNREACHABLE.has(classifyError(err))) throw err;
        r = {
          key: e.object.key,
          ok: false,
          depth: 'deep',
          reason: 'unreadable',
          detail: describeError(err, { location: store.location, key: e.object.key }),
          size: e.size,
          time: e.time,
        };
      }
      reports.push(r);
      const seconds = Number(((Date.now() - t0) / 1000).toFixed(3));
      if (r.ok) {
        metrics.verified(r.time);
        if (r.time.getTime() > this.lastVerifiedMs) this.lastVerifiedMs = r.time.getTime();
        log.info('restore drill: backup verified', {
          key: r.key,
          depth: r.depth,
          revision: r.db?.revision,
          keys: r.db?.keys,
          snapshotTime: r.time.toISOString(),
          seconds,
          detail: r.detail,
        });
      } else {
        metrics.verifyFailures.inc({ reason: r.reason ?? 'corrupt' });
        log.error('restore drill: backup FAILED verification; it would not restore', {
          key: r.key,
          reason: r.reason,
          detail: r.detail,
          snapshotTime: r.time.toISOString(),
          seconds,
        });
      }
    }
    await this.finished(started, reports);
    return reports;
  }

  /** The run counts: gauges, one summary line, and the record a restart reads. */
  private async finished(started: number, reports: VerifyReport[]): Promise<void> {
    const { cfg, log, metrics } = this.d;
    const failed = reports.filter((r) => !r.ok).map((r) => ({ key: r.key, reason: r.reason ?? ('corrupt' as const) }));
    const at = Date.now();
    metrics.verifyRan(at, failed.length);
    if (reports.length)
      log.info('restore drill finished', {
        verified: reports.length - failed.length,
        failed: failed.length,
        seconds: Number(((at - started) / 1000).toFixed(3)),
      });
    try {
      await saveDrillState(cfg.stateDir, { location: ledgerLocation(cfg), lastRunMs: at, lastVerifiedMs: this.lastVerifiedMs, failed });
    } catch (e) {
      log.warn("could not record the drill's result in the state directory; a restart shows no verified backup until the next drill", {
        stateDir: cfg.stateDir,
        error: (e as NodeJS.ErrnoException).code ?? String(e),
      });
    }
  }

  /**
   * Stops the schedule and a drill that is reading. A drill still waiting for its turn is not waited for:
   * it waits for the upload in flight, which the shipper's own stop bounds, and reads nothing when its turn
   * comes.
   */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.task?.destroy();
    if (this.reading) await this.running?.catch(() => undefined);
  }
}
