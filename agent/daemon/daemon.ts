// Wiring and lifecycle of `run`: start order, the schedules (S3 sync retries, reconcile, retention, drill),
// drain. The pieces live beside it: the ledger's sync at start (ledger-sync.ts), reconcile, the status
// document, two-stage signals. Knows the rooms by their front doors only.
import { classifyError, describeError, storeAtFault } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import { Watcher } from '../detect/watcher.js';
import type { Logger } from '../ops/log.js';
import { Metrics } from '../ops/metrics.js';
import { MetricsServer, serverOptions } from '../ops/server.js';
import { RetentionScheduler } from '../retention/scheduler.js';
import { DrillScheduler } from '../drill/scheduler.js';
import type { StatusDoc } from '../ops/status.js';
import { Shipper } from '../ship/shipper.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { proxyDecision } from '../store/client.js';
import { nodePrefix } from '../store/layout.js';
import { describeProxy } from '../store/proxy-env.js';
import type { Ledger, LedgerEntry, LedgerStatus } from '../store/ledger.js';
import { S3Store } from '../store/s3.js';
import { observed, type PartIntegrity, type Store } from '../store/store.js';
import { openLedger, syncWithStore } from './ledger-sync.js';
import { reconcileLedger } from './reconcile.js';
import { installSignals } from './signals.js';
import { asLocalFile, statusDoc } from './status.js';

// the shipper's files as retention reads them: part of this module's API
export { asLocalFile } from './status.js';

export interface DaemonOptions {
  version: string;
  /** install SIGTERM/SIGINT handlers (off in tests that drive stop() themselves) */
  signals?: boolean;
  store?: Store;
  sealing?: Sealing;
  deep?: DeepCheck;
}

export class Daemon {
  readonly metrics: Metrics;
  readonly store: Store;
  ledger!: Ledger;
  shipper!: Shipper;
  private watcher!: Watcher;
  private retention: RetentionScheduler | undefined;
  drill: DrillScheduler | undefined;
  private server: MetricsServer | undefined;
  private integrity: PartIntegrity = 'sha256';
  private s3Ok = false;
  private s3Detail = 'not checked yet';
  private lastLoop = Date.now();
  private loopTimer: NodeJS.Timeout | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<ExitCode> | undefined;
  private exitResolve!: (code: ExitCode) => void;
  readonly exited: Promise<ExitCode>;

  constructor(
    readonly cfg: Config,
    readonly log: Logger,
    private readonly opts: DaemonOptions,
  ) {
    this.metrics = new Metrics(opts.version, { features: { encryption: Boolean(opts.sealing?.encrypt), signing: Boolean(opts.sealing?.sign) } });
    this.store = observed(
      opts.store ?? new S3Store(cfg),
      (ok, err) => {
        this.metrics.s3Up.set(ok ? 1 : 0);
        const wasOk = this.s3Ok;
        this.s3Ok = ok;
        this.s3Detail = ok ? 'S3 answered' : describeError(err, { location: this.store.location });
        if (ok && !wasOk) this.shipper?.retryNow();
      },
      (err) => storeAtFault(classifyError(err)),
    );
    this.exited = new Promise((r) => (this.exitResolve = r));
  }

  async start(): Promise<void> {
    const { cfg, log } = this;
    log.info('starting etcd-backup-agent', {
      version: this.opts.version,
      runtime: [`node ${process.version}`, ...process.execArgv].join(' '),
      node: cfg.node,
      cluster: cfg.cluster,
      snapshotDir: cfg.snapshotDir,
      destination: `${this.store.location}/${nodePrefix(cfg)}`,
      proxy: describeProxy(proxyDecision(cfg)),
      encryption: this.opts.sealing?.encrypt ? `age, ${this.opts.sealing.encrypt.recipients.length} recipient(s)` : 'off',
      signing: this.opts.sealing?.sign ? this.opts.sealing.sign.publicKey : 'off',
    });
    const { ledger, status } = await openLedger(cfg, log, this.metrics);
    this.ledger = ledger;
    for (const e of this.ledger.entries()) this.metrics.confirmedAt(new Date(e.confirmedAt));

    this.shipper = new Shipper({
      cfg,
      store: this.store,
      ledger: this.ledger,
      metrics: this.metrics,
      log,
      version: this.opts.version,
      integrity: () => this.integrity,
      ...(this.opts.deep ? { deep: this.opts.deep } : {}),
      ...(this.opts.sealing ? { sealing: this.opts.sealing } : {}),
    });
    this.metrics.setNewestWaiting(() => this.shipper.newestWaitingMs());
    this.metrics.setLocalUsage(async () => {
      let count = 0;
      let bytes = 0;
      for (const s of this.shipper.snapshots()) {
        if (s.state === 'superseded' || !s.fp) continue;
        count++;
        bytes += s.fp.size;
      }
      return { count, bytes };
    });

    if (cfg.metrics.enabled) {
      this.server = new MetricsServer(
        serverOptions(cfg.metrics),
        this.metrics.registry,
        {
          live: () => {
            const lag = Date.now() - this.lastLoop;
            return { ok: lag < 30_000, detail: `event loop last turned ${lag} ms ago` };
          },
          ready: () => {
            const watching = this.watcher?.watching ?? false;
            return { ok: watching && this.s3Ok, detail: `${watching ? 'watching' : 'not watching'} ${cfg.snapshotDir}; ${this.s3Detail}` };
          },
          status: async () => this.status(),
        },
        log,
      );
    }
    this.loopTimer = setInterval(() => (this.lastLoop = Date.now()), 1000);
    this.loopTimer.unref();

    this.watcher = new Watcher(
      cfg.snapshotDir,
      { rescanIntervalMs: cfg.detect.rescanIntervalMs, ignore: (name) => this.shipper.ignores(name) },
      {
        seen: (p) => this.shipper.seen(p),
        gone: (p) => this.shipper.gone(p),
        listed: (names) => this.shipper.listed(names),
        directory: (up) => this.metrics.dirUp.set(up ? 1 : 0),
      },
      log,
    );
    // Give the S3 sync a moment first: with a rebuilt ledger the start scan need not re-read files
    // that are already shipped. If S3 is down, detection starts anyway.
    const synced = this.syncFromStore(status, 0);
    await Promise.race([synced, new Promise((r) => setTimeout(r, 5000).unref())]);
    // Serve only now: a scrape before the S3 seeding would show a node that has backups as never backed up.
    await this.server?.start();
    await this.watcher.start();
    this.retention = new RetentionScheduler({
      cfg,
      store: this.store,
      ledger: this.ledger,
      metrics: this.metrics,
      log,
      files: () => this.shipper.snapshots().map(asLocalFile),
      inFlightKeys: () =>
        new Set(
          this.shipper
            .snapshots()
            .filter((s) => s.state === 'shipping' && s.key)
            .map((s) => s.key!),
        ),
    });
    this.retention.start();
    if (cfg.verify.enabled) {
      this.drill = new DrillScheduler({ cfg, store: this.store, log, metrics: this.metrics, exclusive: (fn) => this.shipper.exclusive(fn) });
      await this.drill.start();
    }
    this.scheduleReconcile();
    if (this.opts.signals !== false)
      installSignals({ log, shutdownTimeoutMs: cfg.shutdownTimeoutMs, drain: () => this.stop(), exit: (code) => this.exitResolve(code) });
  }

  /**
   * The sync with S3 at start (ledger-sync.ts), retried with backoff while S3 is unreachable; uploads go on
   * meanwhile with the signed payload, which every server checks.
   */
  private async syncFromStore(status: LedgerStatus, attempt: number): Promise<boolean> {
    const { cfg, log } = this;
    try {
      await syncWithStore(
        {
          cfg,
          log,
          store: this.store,
          ledger: this.ledger,
          metrics: this.metrics,
          integrity: (i) => (this.integrity = i),
          reconcile: (listing) => this.reconcile(listing),
        },
        status,
      );
      return true;
    } catch (err) {
      // an attempt that fails after stop() began must not arm a new timer that stop() already cleared
      if (this.stopping) return false;
      const delay = Math.min(cfg.upload.retryMaxMs, cfg.upload.retryInitialMs * 2 ** attempt);
      log.error('S3 check at start failed; will retry', {
        error: describeError(err, { location: this.store.location }),
        retryInSeconds: Math.round(delay / 1000),
      });
      this.syncTimer = setTimeout(() => void this.syncFromStore(status, attempt + 1), delay);
      this.syncTimer.unref();
      return false;
    }
  }

  private scheduleReconcile(): void {
    this.reconcileTimer = setTimeout(() => {
      void this.reconcile().finally(() => {
        if (!this.stopping) this.scheduleReconcile();
      });
    }, this.cfg.s3.reconcileIntervalMs);
    this.reconcileTimer.unref();
  }

  /** Checks the ledger against S3's listing (reconcile.ts); `listing`: one already made, else listed now. */
  reconcile(listing?: { keys: ReadonlySet<string>; at: number }): Promise<LedgerEntry[]> {
    const { cfg, log } = this;
    return reconcileLedger({ cfg, log, store: this.store, ledger: this.ledger, metrics: this.metrics, shipper: this.shipper }, listing);
  }

  /** What `status` shows, from what this daemon knows now (no S3 call). */
  status(): StatusDoc {
    return statusDoc({
      cfg: this.cfg,
      version: this.opts.version,
      location: this.store.location,
      s3: { up: this.s3Ok, detail: this.s3Detail },
      integrity: this.integrity,
      snapshots: this.shipper.snapshots(),
      pending: this.shipper.pendingCount,
      ledger: this.ledger,
      times: this.metrics.times(),
      now: Date.now(),
    });
  }

  /** First stage of shutdown: stop detecting, let the upload in flight finish or abort it, save. */
  stop(): Promise<ExitCode> {
    this.stopping ??= (async () => {
      clearTimeout(this.syncTimer);
      clearTimeout(this.reconcileTimer);
      clearInterval(this.loopTimer);
      await this.watcher?.close();
      await this.retention?.stop();
      await this.drill?.stop();
      const { finished } = await this.shipper.stop(this.cfg.shutdownTimeoutMs);
      if (!finished)
        this.log.warn('upload in flight did not finish in time; aborted (it will be shipped after restart)', {
          shutdownTimeoutSeconds: this.cfg.shutdownTimeoutMs / 1000,
        });
      if (this.ledger.unsaved) await this.ledger.flush().catch(() => this.metrics.ledgerWriteFailures.inc());
      await this.server?.close();
      this.store.close();
      this.log.info('stopped');
      return EXIT.OK;
    })();
    return this.stopping;
  }
}
