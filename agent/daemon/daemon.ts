// Wiring and lifecycle: start order, S3 sync at start, two-stage signal handling, drain.
import type { Config } from '../config/config.js';
import { nodePrefix } from '../config/config.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { Ledger, entriesFromStore, type LedgerStatus } from '../store/ledger.js';
import type { Logger } from '../ops/log.js';
import { Metrics } from '../ops/metrics.js';
import { RetentionScheduler } from '../retention/retention.js';
import { MetricsServer, serverOptions } from '../ops/server.js';
import { Shipper } from '../ship/shipper.js';
import { S3Store, describeError, observed, type Store } from '../store/s3.js';
import { Watcher } from '../detect/watcher.js';

export interface DaemonOptions {
  version: string;
  /** install SIGTERM/SIGINT handlers (off in tests that drive stop() themselves) */
  signals?: boolean;
  store?: Store;
}

export class Daemon {
  readonly metrics: Metrics;
  readonly store: Store;
  private ledger!: Ledger;
  private shipper!: Shipper;
  private watcher!: Watcher;
  private retention: RetentionScheduler | undefined;
  private server: MetricsServer | undefined;
  private s3Ok = false;
  private s3Detail = 'not checked yet';
  private lastLoop = Date.now();
  private loopTimer: NodeJS.Timeout | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private stopping: Promise<ExitCode> | undefined;
  private exitResolve!: (code: ExitCode) => void;
  readonly exited: Promise<ExitCode>;

  constructor(
    readonly cfg: Config,
    readonly log: Logger,
    private readonly opts: DaemonOptions,
  ) {
    this.metrics = new Metrics(opts.version);
    this.store = observed(opts.store ?? new S3Store(cfg), (ok, err) => {
      this.metrics.s3Up.set(ok ? 1 : 0);
      const wasOk = this.s3Ok;
      this.s3Ok = ok;
      this.s3Detail = ok ? 'S3 answered' : describeError(err, { location: this.store.location });
      if (ok && !wasOk) this.shipper?.retryNow();
    });
    this.exited = new Promise((r) => (this.exitResolve = r));
  }

  async start(): Promise<void> {
    const { cfg, log } = this;
    log.info('starting etcd-backup-agent', {
      version: this.opts.version,
      node: cfg.node,
      cluster: cfg.cluster,
      snapshotDir: cfg.snapshotDir,
      destination: `${this.store.location}/${nodePrefix(cfg)}`,
    });
    let status: LedgerStatus;
    try {
      const opened = await Ledger.open(cfg.stateDir);
      this.ledger = opened.ledger;
      status = opened.status;
      if (opened.status === 'corrupt') log.error('ledger was corrupt; rebuilding it from S3', { ledger: this.ledger.path, detail: opened.detail });
      else if (opened.status === 'missing') log.info('no ledger yet; building it from S3', { ledger: this.ledger.path });
    } catch (e) {
      // Without a state directory the agent still ships (the ledger lives in memory; S3 is the truth).
      this.ledger = Ledger.inMemory(cfg.stateDir);
      status = 'missing';
      this.metrics.ledgerWriteFailures.inc();
      log.error('state directory unusable; keeping the ledger in memory only', { stateDir: cfg.stateDir, error: (e as NodeJS.ErrnoException).code ?? String(e), fix: 'make stateDir writable by the agent (systemd: StateDirectory=)' });
    }
    for (const e of this.ledger.entries()) this.metrics.confirmedAt(new Date(e.confirmedAt));

    this.shipper = new Shipper({ cfg, store: this.store, ledger: this.ledger, metrics: this.metrics, log, version: this.opts.version });
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
      this.server = new MetricsServer(serverOptions(cfg.metrics), this.metrics.registry, {
        live: () => {
          const lag = Date.now() - this.lastLoop;
          return { ok: lag < 30_000, detail: `event loop last turned ${lag} ms ago` };
        },
        ready: () => {
          const watching = this.watcher?.watching ?? false;
          return { ok: watching && this.s3Ok, detail: `${watching ? 'watching' : 'not watching'} ${cfg.snapshotDir}; ${this.s3Detail}` };
        },
      }, log);
    }
    this.loopTimer = setInterval(() => (this.lastLoop = Date.now()), 1000);
    this.loopTimer.unref();

    this.watcher = new Watcher(
      cfg.snapshotDir,
      { rescanIntervalMs: cfg.detect.rescanIntervalMs, ignore: (name) => this.shipper.ignores(name) },
      {
        seen: (p) => this.shipper.seen(p),
        gone: (p) => this.shipper.gone(p),
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
    this.retention = new RetentionScheduler({ cfg, store: this.store, ledger: this.ledger, metrics: this.metrics, log, files: () => this.shipper.snapshots() });
    this.retention.start();
    if (this.opts.signals !== false) this.installSignals();
  }

  /**
   * Seeds freshness from what S3 holds (a restart must not reset it) and rebuilds a lost ledger.
   * Retried with backoff while S3 is unreachable; uploads go on meanwhile (they check S3 first).
   */
  private async syncFromStore(status: LedgerStatus, attempt: number): Promise<boolean> {
    const { cfg, log } = this;
    try {
      await this.store.check();
      const prefix = nodePrefix(cfg);
      if (status !== 'ok') {
        const entries = await entriesFromStore(this.store, prefix);
        for (const e of this.ledger.entries()) if (!entries.some((x) => x.key === e.key)) entries.push(e);
        await this.ledger.replaceAll(entries).catch((e) => {
          this.metrics.ledgerWriteFailures.inc();
          log.error('could not write the rebuilt ledger; keeping it in memory', { ledger: this.ledger.path, error: (e as NodeJS.ErrnoException).code ?? String(e) });
        });
        log.info('ledger rebuilt from S3', { objects: entries.length, prefix });
        for (const e of entries) this.metrics.confirmedAt(new Date(e.confirmedAt));
      } else {
        await this.seedFreshness(prefix);
      }
      log.info('S3 reachable', { destination: `${this.store.location}/${prefix}` });
      return true;
    } catch (err) {
      const delay = Math.min(cfg.upload.retryMaxMs, cfg.upload.retryInitialMs * 2 ** attempt);
      log.error('S3 check at start failed; will retry', { error: describeError(err, { location: this.store.location }), retryInSeconds: Math.round(delay / 1000) });
      this.syncTimer = setTimeout(() => void this.syncFromStore(status, attempt + 1), delay);
      this.syncTimer.unref();
      return false;
    }
  }

  /** The newest object of this node that carries our sha256 is the last confirmed upload. */
  private async seedFreshness(prefix: string): Promise<void> {
    const objects = [];
    for await (const o of this.store.list(prefix)) objects.push(o);
    objects.sort((a, b) => (b.lastModified?.getTime() ?? 0) - (a.lastModified?.getTime() ?? 0));
    for (const o of objects.slice(0, 20)) {
      const h = await this.store.head(o.key);
      if (h?.sha256) {
        this.metrics.confirmedAt(h.lastModified ?? o.lastModified ?? new Date(0));
        return;
      }
    }
  }

  private installSignals(): void {
    let count = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      count++;
      if (count === 1) {
        this.log.info('signal received: draining (a second signal exits at once)', { signal: sig, drainSeconds: this.cfg.shutdownTimeoutMs / 1000 });
        void this.stop().then((code) => this.exitResolve(code));
      } else {
        this.log.warn('second signal: exiting now', { signal: sig });
        this.exitResolve(EXIT.INTERRUPTED);
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  }

  /** First stage of shutdown: stop detecting, let the upload in flight finish or abort it, save. */
  stop(): Promise<ExitCode> {
    this.stopping ??= (async () => {
      clearTimeout(this.syncTimer);
      clearInterval(this.loopTimer);
      await this.watcher?.close();
      await this.retention?.stop();
      const { finished } = await this.shipper.stop(this.cfg.shutdownTimeoutMs);
      if (!finished) this.log.warn('upload in flight did not finish in time; aborted (it will be shipped after restart)', { shutdownTimeoutSeconds: this.cfg.shutdownTimeoutMs / 1000 });
      if (this.ledger.unsaved) await this.ledger.save().catch(() => this.metrics.ledgerWriteFailures.inc());
      await this.server?.close();
      this.store.close();
      this.log.info('stopped');
      return EXIT.OK;
    })();
    return this.stopping;
  }
}
