// The life of one snapshot: seen → settling → verified → queued → shipping → confirmed (or rejected).
// Every transition is decided here, once.
import { lstat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Config } from '../config/config.js';
import { objectKey } from '../config/config.js';
import { fingerprint, openRegular, readAt, sameFingerprint, NotRegularError, type Fingerprint } from '../base/files.js';
import type { Ledger } from '../store/ledger.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { classify, compileRules, sniff, SNIFF_BYTES, type NameRules, type SnapshotName } from '../detect/producers.js';
import { classifyError, describeError, type FailureReason, type Store } from '../store/s3.js';
import { ship } from './upload.js';
import { quickCheck, verifyFile, type Verdict } from '../snapshot/verify.js';

export type TrackState = 'held' | 'settling' | 'queued' | 'shipping' | 'confirmed' | 'rejected' | 'superseded';

/** What the agent knows about one snapshot file in the directory. */
export interface LocalSnapshot {
  name: string;
  path: string;
  snap: SnapshotName;
  state: TrackState;
  fp?: Fingerprint;
  sha256?: string;
  key?: string;
  rejectReason?: string;
}

interface Track extends LocalSnapshot {
  firstSeen: number;
  changedAt: number;
  verifiedFp?: Fingerprint;
  rejectedFp?: Fingerprint;
  /** ctime when it was rejected as unreadable: a chmod or ACL change (same content) is worth a new look */
  unreadableCtimeMs?: number;
  attempts: number;
  /** a queued snapshot whose own upload failed waits until then */
  notBefore: number;
  timer?: NodeJS.Timeout;
  busy: boolean;
  again: boolean;
  waitLogged?: boolean;
}

/** unknown files whose first bytes are read at once */
const SNIFF_CONCURRENCY = 16;
// Failures that say something about S3, not about the file: the whole queue backs off.
const STORE_WIDE: ReadonlySet<FailureReason> = new Set(['network', 'timeout', 'tls', 'auth', 'bucket', 'throttled', 'server', 'client']);

export interface ShipperDeps {
  cfg: Config;
  store: Store;
  ledger: Ledger;
  metrics: Metrics;
  log: Logger;
  version: string;
}

export class Shipper {
  private readonly tracks = new Map<string, Track>();
  /** names that are not snapshots, by fingerprint, so rescans don't re-read them */
  private readonly notSnapshots = new Map<string, string>();
  private readonly loggedIgnored = new Set<string>();
  /** unknown names waiting for their first bytes to be read, name → path */
  private readonly sniffQueued = new Map<string, string>();
  private sniffsRunning = 0;
  private readonly rules: NameRules;
  private readonly active = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private verifying: Promise<unknown> = Promise.resolve();
  private storeFailures = 0;
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private dirHasZips = false;

  constructor(private readonly d: ShipperDeps) {
    this.rules = compileRules(d.cfg.include, d.cfg.exclude);
  }

  /** Local snapshot files the agent tracks (for retention, metrics and `prune`). */
  snapshots(): LocalSnapshot[] {
    return [...this.tracks.values()].map(({ name, path, snap, state, fp, sha256, key, rejectReason }) => ({ name, path, snap, state, fp, sha256, key, rejectReason }));
  }

  get pendingCount(): number {
    let n = 0;
    for (const t of this.tracks.values()) if (t.state === 'queued' || t.state === 'shipping') n++;
    return n;
  }

  /** Names that are never snapshots (partial, hidden, excluded…): the watcher need not report them. */
  ignores(name: string): boolean {
    return classify(name, this.rules).kind === 'ignored';
  }

  /** A path appeared, changed, or was listed by a scan. */
  seen(path: string): void {
    if (this.closing) return;
    const name = basename(path);
    const cls = classify(name, this.rules);
    if (cls.kind === 'ignored') {
      if (!this.loggedIgnored.has(name)) {
        this.loggedIgnored.add(name);
        this.d.log.debug('not a snapshot, ignored', { file: path, reason: cls.reason });
      }
      return;
    }
    let t = this.tracks.get(name);
    if (!t) {
      if (cls.kind === 'unknown') {
        this.sniffUnknown(path);
        return;
      }
      t = this.track(path, cls);
    }
    this.kick(t);
  }

  gone(path: string): void {
    const t = this.tracks.get(basename(path));
    if (!t || t.state === 'shipping') return; // an upload in flight keeps its open file
    clearTimeout(t.timer);
    this.tracks.delete(t.name);
    if (t.state === 'queued' || t.state === 'settling') this.d.log.warn('snapshot disappeared before it was shipped', { file: path, state: t.state });
    this.updatePending();
  }

  private track(path: string, snap: SnapshotName): Track {
    const now = Date.now();
    const t: Track = { name: snap.name, path, snap, state: 'settling', firstSeen: now, changedAt: now, attempts: 0, notBefore: 0, busy: false, again: false };
    this.tracks.set(t.name, t);
    if (snap.format === 'zip') this.dirHasZips = true;
    return t;
  }

  /**
   * Unknown names: only the first bytes tell whether they are snapshots (etcdctl with any name, RKE --name).
   * A few at a time, once per name: a directory of 10,000 unrelated files must not open them all at once.
   */
  private sniffUnknown(path: string): void {
    const name = basename(path);
    if (this.sniffQueued.has(name)) return;
    this.sniffQueued.set(name, path);
    this.pumpSniffs();
  }

  private pumpSniffs(): void {
    while (this.sniffsRunning < SNIFF_CONCURRENCY && this.sniffQueued.size > 0 && !this.closing) {
      const [name, path] = this.sniffQueued.entries().next().value as [string, string];
      this.sniffQueued.delete(name);
      this.sniffsRunning++;
      void this.sniffOne(name, path).finally(() => {
        this.sniffsRunning--;
        this.pumpSniffs();
      });
    }
  }

  private async sniffOne(name: string, path: string): Promise<void> {
    let st;
    try {
      st = await lstat(path);
    } catch {
      return;
    }
    const id = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (this.notSnapshots.get(name) === id || !st.isFile() || st.size < 64) return;
    let head: Buffer;
    try {
      const { fh } = await openRegular(path);
      try {
        head = await readAt(fh, 0, Math.min(SNIFF_BYTES, st.size));
      } finally {
        await fh.close();
      }
    } catch {
      return;
    }
    const snap = sniff(name, head);
    if (!snap) {
      this.notSnapshots.set(name, id);
      return;
    }
    this.notSnapshots.delete(name);
    if (!this.tracks.has(name) && !this.closing) this.kick(this.track(path, snap));
  }

  private kick(t: Track, delayMs = 0): void {
    if (this.closing) return;
    clearTimeout(t.timer);
    t.timer = undefined;
    if (delayMs > 0) {
      t.timer = setTimeout(() => this.kick(t), delayMs);
      return;
    }
    if (t.busy) {
      t.again = true;
      return;
    }
    if (t.state === 'queued' || t.state === 'shipping') return;
    t.busy = true;
    void this.examine(t)
      .catch((e) => this.d.log.error('examining snapshot failed', { file: t.path, error: String(e) }))
      .finally(() => {
        t.busy = false;
        if (t.again) {
          t.again = false;
          this.kick(t);
        }
      });
  }

  /** settle → verify → queue. Cheap when nothing changed. */
  private async examine(t: Track): Promise<void> {
    const { cfg, ledger, log, metrics } = this.d;
    let st;
    try {
      st = await lstat(t.path);
    } catch {
      this.gone(t.path);
      return;
    }
    const fp = fingerprint(st);
    if (!st.isFile()) {
      // a link could lead the agent into uploading some other file; a FIFO or device is no snapshot
      if (!(t.state === 'rejected' && sameFingerprint(fp, t.rejectedFp))) this.reject(t, fp, 'format', `not a regular file (${st.isSymbolicLink() ? 'a symlink, never followed' : st.isDirectory() ? 'a directory' : 'a FIFO, socket or device'})`);
      return;
    }
    if (!sameFingerprint(fp, t.fp)) {
      t.fp = fp;
      t.changedAt = Date.now();
    }

    const shipped = ledger.findUnchanged(t.name, fp.size, fp.mtimeMs);
    if (shipped) {
      if (t.state !== 'confirmed') log.debug('already confirmed in S3', { file: t.path, key: shipped.key });
      Object.assign(t, { state: 'confirmed', sha256: shipped.sha256, key: shipped.key, verifiedFp: fp });
      metrics.snapshotSeen(fp.mtimeMs);
      return;
    }
    if (t.state === 'rejected' && sameFingerprint(fp, t.rejectedFp) && (t.unreadableCtimeMs === undefined || t.unreadableCtimeMs === st.ctimeMs)) return;
    if (t.state === 'confirmed' && sameFingerprint(fp, t.verifiedFp)) return;

    // RKE-family producers zip the raw file and delete it: ship the zip, not the raw.
    if (t.snap.format === 'raw' && (t.snap.zips || this.dirHasZips)) {
      const zipPath = join(dirname(t.path), `${t.name}.zip`);
      if (await lstat(zipPath).then(() => true, () => false)) {
        if (t.state !== 'superseded') log.debug('raw snapshot superseded by its zip', { file: t.path });
        t.state = 'superseded';
        return;
      }
      const wait = t.firstSeen + cfg.detect.zipWaitMs - Date.now();
      if (wait > 0) {
        t.state = 'held';
        this.kick(t, wait);
        return;
      }
    }
    t.state = 'settling';

    let verdict: Verdict;
    let after: Fingerprint;
    try {
      const { fh, st: fst } = await openRegular(t.path);
      try {
        const ofp = fingerprint(fst);
        const quick = await quickCheck(fh, ofp.size, t.snap.format);
        if (quick) verdict = quick;
        else verdict = await this.serialVerify(() => verifyFile(fh, ofp.size, { format: t.snap.format, name: t.name, signal: this.abort.signal }));
        after = fingerprint(await fh.stat());
        if (!sameFingerprint(ofp, after)) {
          t.changedAt = Date.now();
          verdict = { ok: false, reason: 'truncated', detail: 'file changed while it was being verified' };
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (this.closing) return;
      if (e instanceof NotRegularError) {
        // swapped for a link or special file between lstat and open
        this.reject(t, fp, 'format', e.message);
        return;
      }
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return this.gone(t.path);
      this.reject(t, fp, 'unreadable', `cannot read it (${code ?? String(e)}); check the agent's read access to the snapshot directory`);
      t.unreadableCtimeMs = st.ctimeMs;
      return;
    }
    if (this.closing) return;
    t.fp = after;

    if (!verdict.ok) {
      const quiet = Date.now() - t.changedAt;
      if (quiet < cfg.detect.settleTimeoutMs) {
        if (!t.waitLogged) log.debug('snapshot not complete yet; waiting', { file: t.path, reason: verdict.detail });
        t.waitLogged = true;
        this.kick(t, Math.min(cfg.detect.pollIntervalMs, cfg.detect.settleTimeoutMs - quiet + 10));
        return;
      }
      this.reject(t, after, verdict.reason, verdict.detail);
      return;
    }

    metrics.snapshotSeen(after.mtimeMs);
    t.sha256 = verdict.sha256;
    t.verifiedFp = after;
    t.rejectReason = undefined;
    const same = ledger.find(t.name, verdict.sha256);
    if (same && same.size === verdict.size) {
      // Same content shipped before (e.g. rewritten byte for byte): S3 holds what this file holds, so
      // the backup is as fresh as the file.
      Object.assign(t, { state: 'confirmed', key: same.key });
      metrics.confirmedAt(new Date(after.mtimeMs));
      log.info('snapshot content already confirmed in S3; not sent again', { file: t.path, key: same.key, sha256: verdict.sha256 });
      return;
    }
    t.key = objectKey(cfg, t.name);
    t.state = 'queued';
    log.info('snapshot verified; queued for upload', { file: t.path, key: t.key, size: verdict.size, sha256: verdict.sha256, producer: t.snap.producer, format: verdict.format });
    this.updatePending();
    this.pump();
  }

  private reject(t: Track, fp: Fingerprint, reason: 'truncated' | 'corrupt' | 'format' | 'unreadable', detail: string): void {
    t.state = 'rejected';
    t.rejectedFp = fp;
    t.unreadableCtimeMs = undefined;
    t.rejectReason = `${reason}: ${detail}`;
    this.d.metrics.rejected.inc({ reason });
    this.d.log.error('snapshot rejected: not shipped and never deleted by the agent', { file: t.path, reason, detail });
    this.updatePending();
  }

  /** One full verification at a time: they read whole files, and etcd shares the disk. */
  private serialVerify<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.verifying.then(fn, fn);
    this.verifying = run.catch(() => undefined);
    return run;
  }

  private pump(): void {
    if (this.closing) return;
    const now = Date.now();
    if (this.backoffUntil > now) return this.wakeAt(this.backoffUntil);
    while (this.active.size < this.d.cfg.upload.concurrency) {
      const next = this.nextQueued(now);
      if (!next) return;
      if (next.notBefore > now) return this.wakeAt(next.notBefore);
      next.state = 'shipping';
      const p = this.deliver(next).finally(() => {
        this.active.delete(p);
        // events for the file were ignored while it was shipping (deleted, replaced by a rename): look again
        this.kick(next);
        this.pump();
      });
      this.active.add(p);
    }
  }

  private wakeAt(at: number): void {
    if (this.backoffTimer) return;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      this.pump();
    }, Math.max(0, at - Date.now()));
  }

  /** Newest first: after an outage the most recent backup is the most valuable. Else the one due soonest. */
  private nextQueued(now: number): Track | undefined {
    let best: Track | undefined;
    let soonest: Track | undefined;
    for (const t of this.tracks.values()) {
      if (t.state !== 'queued') continue;
      if (t.notBefore <= now) {
        if (!best || (t.fp?.mtimeMs ?? 0) > (best.fp?.mtimeMs ?? 0)) best = t;
      } else if (!soonest || t.notBefore < soonest.notBefore) soonest = t;
    }
    return best ?? soonest;
  }

  private async deliver(t: Track): Promise<void> {
    const { cfg, store, ledger, log, metrics } = this.d;
    const started = Date.now();
    let fh;
    try {
      const opened = await openRegular(t.path);
      fh = opened.fh;
      if (!sameFingerprint(fingerprint(opened.st), t.verifiedFp)) {
        log.info('snapshot changed after verification; verifying it again', { file: t.path });
        await fh.close();
        t.state = 'settling';
        this.updatePending();
        this.kick(t);
        return;
      }
    } catch (e) {
      t.state = 'settling';
      this.updatePending();
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') this.gone(t.path);
      else this.kick(t);
      return;
    }
    const fp = t.verifiedFp!;
    const key = t.key ?? objectKey(cfg, t.name);
    log.debug('upload started', { file: t.path, key, size: fp.size, attempt: t.attempts + 1 });
    try {
      const res = await ship(
        store,
        { fh, name: t.name, size: fp.size, sha256: t.sha256!, mtimeMs: fp.mtimeMs, producer: t.snap.producer, key, extraMetadata: { node: cfg.node, cluster: cfg.cluster, agent: this.d.version } },
        { signal: this.abort.signal, timeoutMs: cfg.upload.timeoutMs, bandwidthLimit: cfg.upload.bandwidthLimit, partSize: cfg.s3.partSize },
      );
      const seconds = (Date.now() - started) / 1000;
      t.key = res.key;
      t.state = 'confirmed';
      t.attempts = 0;
      t.notBefore = 0;
      this.storeFailures = 0;
      this.updatePending();
      const confirmedAt = new Date();
      if (res.sent) {
        metrics.uploadSucceeded(fp.size, seconds, confirmedAt);
        log.info('snapshot shipped and confirmed', { file: t.path, key: res.key, size: fp.size, sha256: t.sha256, seconds: Number(seconds.toFixed(3)), mibPerSecond: Number((fp.size / 1048576 / Math.max(seconds, 0.001)).toFixed(1)) });
      } else {
        metrics.uploads.inc({ result: 'already_present' });
        // S3 already holds these bytes: the backup is as fresh as the newer of the object and this file
        metrics.confirmedAt(new Date(Math.max(res.info.lastModified?.getTime() ?? 0, fp.mtimeMs)));
        log.info('snapshot already in S3 with the same sha256; not sent again', { file: t.path, key: res.key, sha256: t.sha256 });
      }
      try {
        await ledger.record({ name: t.name, key: res.key, size: fp.size, sha256: t.sha256!, mtimeMs: fp.mtimeMs, producer: t.snap.producer, confirmedAt: confirmedAt.toISOString() });
      } catch (e) {
        // S3 has it; the ledger is a cache that the next write (or a rebuild) repairs.
        metrics.ledgerWriteFailures.inc();
        log.error('could not write the ledger; the upload is confirmed in S3 and kept in memory', { file: t.path, key: res.key, ledger: ledger.path, error: (e as NodeJS.ErrnoException).code ?? String(e) });
      }
    } catch (err) {
      const reason = classifyError(err);
      if (this.closing && reason === 'aborted') {
        t.state = 'queued';
        log.warn('upload aborted by shutdown; it will be shipped after restart', { file: t.path, key });
        return;
      }
      metrics.uploads.inc({ result: 'failure' });
      metrics.uploadFailed(reason);
      t.attempts++;
      if (reason === 'changed' || reason === 'local_io') {
        log.warn('upload stopped: the file changed; verifying it again', { file: t.path, key, reason, detail: describeError(err, { location: store.location, key }) });
        t.state = 'settling';
        t.verifiedFp = undefined;
        this.updatePending();
        this.kick(t, cfg.detect.pollIntervalMs);
        return;
      }
      t.state = 'queued';
      const storeWide = STORE_WIDE.has(reason);
      const delay = this.backoff(storeWide ? ++this.storeFailures : t.attempts);
      if (storeWide) this.backoffUntil = Date.now() + delay;
      else t.notBefore = Date.now() + delay;
      log.warn('upload failed; the snapshot stays pending and will be retried', {
        file: t.path,
        key,
        reason,
        error: describeError(err, { location: store.location, key }),
        attempt: t.attempts,
        retryInSeconds: Math.round(delay / 1000),
      });
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /** Exponential backoff with jitter, so many agents recovering together don't stampede S3. */
  private backoff(n: number): number {
    const { retryInitialMs, retryMaxMs } = this.d.cfg.upload;
    const base = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(30, Math.max(0, n - 1)));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  private updatePending(): void {
    this.d.metrics.pending.set(this.pendingCount);
  }

  /** Retry queued uploads now (e.g. S3 came back, as seen by another call). */
  retryNow(): void {
    this.backoffUntil = 0;
    clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    this.pump();
  }

  /**
   * First stage of shutdown: no new work; uploads in flight may finish within `timeoutMs`, then
   * they are aborted (their multipart uploads too). Resolves when nothing is in flight.
   */
  async stop(timeoutMs: number): Promise<{ finished: boolean }> {
    this.closing = true;
    clearTimeout(this.backoffTimer);
    for (const t of this.tracks.values()) clearTimeout(t.timer);
    const all = Promise.allSettled([...this.active]);
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([all.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
    clearTimeout(timer);
    if (!finished) {
      this.abort.abort();
      await Promise.race([all, new Promise((r) => setTimeout(r, 10_000).unref())]);
    } else this.abort.abort();
    return { finished };
  }

  /** Settles when no upload is queued or in flight (for one-shot use and tests). */
  async idle(): Promise<void> {
    while (this.active.size > 0) await Promise.allSettled([...this.active]);
  }
}
