// Wiring and lifecycle of `run`: start order, the S3 sync at start, the schedules (retention, reconcile,
// drill), two-stage signal handling, drain. Knows the rooms by their front doors only.
import { classifyError, describeError, storeAtFault } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import { Watcher } from '../detect/watcher.js';
import type { Logger } from '../ops/log.js';
import { Metrics } from '../ops/metrics.js';
import { MetricsServer, serverOptions } from '../ops/server.js';
import { planPrune } from '../retention/local.js';
import { RetentionScheduler } from '../retention/scheduler.js';
import { DrillScheduler } from '../drill/scheduler.js';
import { isoOrUndefined, statusState, type StatusDoc } from '../ops/status.js';
import { resolveIntegrity } from '../ship/options.js';
import { Shipper, type LocalSnapshot } from '../ship/shipper.js';
import type { LocalFileAt } from '../snapshot/lifecycle.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { proxyDecision } from '../store/client.js';
import { nodePrefix, objectKey } from '../store/layout.js';
import { describeProxy } from '../store/proxy-env.js';
import { Ledger, ledgerLocation, type LedgerEntry, type LedgerStatus } from '../store/ledger.js';
import { S3Store } from '../store/s3.js';
import { observed, type PartIntegrity, type Store } from '../store/store.js';

export interface DaemonOptions {
  version: string;
  /** install SIGTERM/SIGINT handlers (off in tests that drive stop() themselves) */
  signals?: boolean;
  store?: Store;
  sealing?: Sealing;
  deep?: DeepCheck;
}

/** What the daemon's shipper knows of a file, as retention reads it. */
export function asLocalFile(s: LocalSnapshot): LocalFileAt {
  return {
    name: s.name,
    path: s.path,
    state: s.state,
    size: s.fp?.size ?? 0,
    mtimeMs: s.fp?.mtimeMs ?? 0,
    timeMs: s.snap.timestamp?.getTime(),
    ino: s.fp?.ino,
    sha256: s.sha256,
    detail: s.rejectReason,
  };
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
      node: cfg.node,
      cluster: cfg.cluster,
      snapshotDir: cfg.snapshotDir,
      destination: `${this.store.location}/${nodePrefix(cfg)}`,
      proxy: describeProxy(proxyDecision(cfg)),
      encryption: this.opts.sealing?.encrypt ? `age, ${this.opts.sealing.encrypt.recipients.length} recipient(s)` : 'off',
      signing: this.opts.sealing?.sign ? this.opts.sealing.sign.publicKey : 'off',
    });
    const status = await this.openLedger();
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
    if (this.opts.signals !== false) this.installSignals();
  }

  private async openLedger(): Promise<LedgerStatus> {
    const { cfg, log } = this;
    const location = ledgerLocation(cfg);
    try {
      const opened = await Ledger.open(cfg.stateDir, location);
      this.ledger = opened.ledger;
      if (opened.status === 'corrupt') log.error('ledger was corrupt; rebuilding it from S3', { ledger: this.ledger.path, detail: opened.detail });
      else if (opened.status === 'elsewhere')
        log.warn("ledger describes another bucket, endpoint or prefix; starting a new one from this location's listing", {
          ledger: this.ledger.path,
          detail: opened.detail,
        });
      else if (opened.status === 'missing') log.info('no ledger yet; building it from S3', { ledger: this.ledger.path });
      return opened.status;
    } catch (e) {
      // Without a state directory the agent still ships (the ledger lives in memory; S3 is the truth).
      this.ledger = Ledger.inMemory(cfg.stateDir, location);
      this.metrics.ledgerWriteFailures.inc();
      log.error('state directory unusable; keeping the ledger in memory only', {
        stateDir: cfg.stateDir,
        error: (e as NodeJS.ErrnoException).code ?? String(e),
        fix: 'make stateDir writable by the agent (systemd: StateDirectory=)',
      });
      return 'missing';
    }
  }

  /**
   * Probes how parts are proven, seeds freshness from what S3 holds (a restart must not reset it) and
   * rebuilds a lost ledger. Retried with backoff while S3 is unreachable; uploads go on meanwhile with the
   * signed payload, which every server checks.
   */
  private async syncFromStore(status: LedgerStatus, attempt: number): Promise<boolean> {
    const { cfg, log } = this;
    try {
      await this.store.check();
      this.integrity = await resolveIntegrity(this.store, cfg, log);
      const prefix = nodePrefix(cfg);
      const listedAt = Date.now();
      const catalog = await readCatalog(this.store, prefix);
      // a ledger that names this bucket may still be wrong (edited, restored from a backup, objects deleted
      // while the agent was down): the listing just made checks it at once, not a reconcile interval later
      if (status === 'ok') await this.reconcile({ keys: catalog.listed, at: listedAt });
      if (status !== 'ok') {
        const entries = catalog.entries.filter((e) => e.complete).map(ledgerEntryOf);
        for (const e of this.ledger.entries()) if (!entries.some((x) => x.key === e.key)) entries.push(e);
        await this.ledger.replaceAll(entries).catch((e) => {
          this.metrics.ledgerWriteFailures.inc();
          log.error('could not write the rebuilt ledger; keeping it in memory', {
            ledger: this.ledger.path,
            error: (e as NodeJS.ErrnoException).code ?? String(e),
          });
        });
        log.info('ledger rebuilt from S3', { objects: entries.length, prefix });
      }
      for (const e of catalog.entries) if (e.complete) this.metrics.confirmedAt(e.object.lastModified ?? e.time);
      const newest = catalog.entries.find((e) => e.complete && e.manifest?.snapshot.db);
      if (newest?.manifest?.snapshot.db) this.metrics.dbFacts(newest.manifest.snapshot.db.revision, newest.manifest.snapshot.db.keys, newest.time.getTime());
      log.info('S3 reachable', { destination: `${this.store.location}/${prefix}`, objects: catalog.entries.length });
      return true;
    } catch (err) {
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

  /**
   * Confirmed entries whose object S3 no longer lists: forgotten, and their local files shipped again.
   * `listing`: one already made (at start), else this node's prefix is listed now.
   */
  async reconcile(listing?: { keys: ReadonlySet<string>; at: number }): Promise<LedgerEntry[]> {
    const { log } = this;
    let present = listing?.keys;
    const at = listing?.at ?? Date.now();
    if (!present) {
      const keys = new Set<string>();
      try {
        for await (const o of this.store.list(nodePrefix(this.cfg))) keys.add(o.key);
      } catch (err) {
        log.warn('reconcile: could not list S3; the ledger is checked again later', { error: describeError(err, { location: this.store.location }) });
        return [];
      }
      present = keys;
    }
    // an upload in flight, or confirmed after the listing started, is not missing
    const inFlight = new Set(
      this.shipper
        ?.snapshots()
        .filter((s) => s.state === 'shipping')
        .map((s) => s.name),
    );
    const missing = (await this.ledger.reconcile(present, at)).filter((e) => !inFlight.has(e.name));
    for (const e of missing) {
      this.metrics.objectsMissing.inc();
      log.warn('a confirmed backup is no longer in S3 (deleted or lost there); its local snapshot, if still present, is shipped again', {
        key: e.storedKey ?? e.key,
        file: e.name,
        confirmedAt: e.confirmedAt,
      });
    }
    if (missing.length) this.shipper.forgotten(missing.map((e) => e.name));
    return missing;
  }

  /** What `status` shows, from what this daemon knows now (no S3 call). */
  status(): StatusDoc {
    const { cfg } = this;
    // shipped: the object as stored (`.age` when encrypted); uploading: where it goes
    const keyOf = (s: LocalSnapshot): { key?: string } => {
      if (s.state === 'confirmed' && s.key) return { key: this.ledger.getByKey(s.key)?.storedKey ?? s.key };
      if (s.state === 'shipping') return { key: s.key ?? objectKey(cfg, s.name) };
      return s.key ? { key: s.key } : {};
    };
    const files = this.shipper.snapshots();
    const t = this.metrics.times();
    const plan = planPrune({
      files: files.map(asLocalFile),
      ledger: this.ledger.entries(),
      heads: new Map(),
      policy: { keep: cfg.retention.keep, maxAgeMs: cfg.retention.maxAgeMs, confirmRemote: false },
      now: Date.now(),
    });
    const newest = this.ledger
      .entries()
      .reduce<LedgerEntry | undefined>((a, e) => (!a || (e.snapshotTime ?? e.confirmedAt) > (a.snapshotTime ?? a.confirmedAt) ? e : a), undefined);
    return {
      source: 'daemon',
      version: this.opts.version,
      node: cfg.node,
      cluster: cfg.cluster,
      snapshotDir: cfg.snapshotDir,
      destination: `${this.store.location}/${nodePrefix(cfg)}`,
      s3: { up: this.s3Ok, detail: this.s3Detail },
      integrity: this.integrity === 'crc32' ? 'CRC32 header (probed)' : this.integrity === 'md5' ? 'Content-MD5 (Object Lock)' : 'signed payload SHA-256',
      pending: this.shipper.pendingCount,
      ...(isoOrUndefined(t.lastUploadS) ? { lastUpload: isoOrUndefined(t.lastUploadS) } : {}),
      ...(isoOrUndefined(t.lastPruneS) ? { lastPrune: isoOrUndefined(t.lastPruneS) } : {}),
      ...(isoOrUndefined(t.lastVerifyRunS) ? { lastVerifyRun: isoOrUndefined(t.lastVerifyRunS) } : {}),
      ...(isoOrUndefined(t.lastVerifiedS) ? { lastVerified: isoOrUndefined(t.lastVerifiedS) } : {}),
      snapshots: files
        .filter((s) => s.state !== 'superseded' || s.fp)
        .map((s) => ({
          name: s.name,
          state: statusState(s.state),
          why: s.rejectReason ?? s.why,
          size: s.fp?.size ?? 0,
          time: new Date(s.snap.timestamp?.getTime() ?? s.fp?.mtimeMs ?? 0).toISOString(),
          ...keyOf(s),
          ...(s.state === 'shipping' && s.progress ? { progress: s.progress } : {}),
        })),
      nextPrune: plan.delete.map((d) => ({ name: d.name, reason: d.reason })),
      ...(newest ? { newestInS3: { key: newest.storedKey ?? newest.key, time: newest.snapshotTime ?? newest.confirmedAt } } : {}),
    };
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
      if (this.ledger.unsaved) await this.ledger.save().catch(() => this.metrics.ledgerWriteFailures.inc());
      await this.server?.close();
      this.store.close();
      this.log.info('stopped');
      return EXIT.OK;
    })();
    return this.stopping;
  }
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
