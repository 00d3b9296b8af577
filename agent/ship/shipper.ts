// Drives each snapshot file through its life: gathers what is known about it (facts.ts), asks
// lifecycle.decide() what state it is in and what to do next, and does it (check, wait, ship, reject). The
// upload queue lives here, newest snapshot first (track.ts orders it). Which names are taken up is the
// gate's (names-gate.ts); sending one file, and the backoff after it failed, the delivery's (deliver.ts).
import { lstat } from 'node:fs/promises';
import { basename } from 'node:path';
import { NotRegularError, openRegular, sameFingerprint, type Fingerprint } from '../base/files.js';
import type { SnapshotName } from '../snapshot/names.js';
import { decide, type CheckResult, type RejectLabel } from '../snapshot/lifecycle.js';
import { quickCheck } from '../snapshot/verifier.js';
import { objectKey } from '../store/layout.js';
import { Delivery, type DeliverDeps } from './deliver.js';
import { factsOf, type FactsSource } from './facts.js';
import { NamesGate } from './names-gate.js';
import { isPending, newTrack, nextQueued, viewOf, type LocalSnapshot, type Track } from './track.js';

export type { LocalSnapshot } from './track.js';

/** The shipper is given what one delivery needs, and uses part of it itself. */
export type ShipperDeps = DeliverDeps;

export class Shipper {
  private readonly tracks = new Map<string, Track>();
  private readonly names: NamesGate;
  private readonly delivery: Delivery;
  private readonly active = new Set<Promise<void>>();
  private readonly factsSource: FactsSource;
  private wakeTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private dirHasZips = false;
  /** another reader of S3 (the drill) has the turn: no upload starts */
  private yielded = 0;

  constructor(private readonly d: ShipperDeps) {
    this.names = new NamesGate({
      cfg: d.cfg,
      log: d.log,
      metrics: d.metrics,
      found: (path, snap) => {
        if (!this.tracks.has(basename(path)) && !this.closing) this.kick(this.track(path, snap));
      },
    });
    this.factsSource = { cfg: d.cfg, ledger: d.ledger, tracked: (name) => this.tracks.get(name), dirHasZips: () => this.dirHasZips };
    this.delivery = new Delivery(d, {
      closing: () => this.closing,
      gone: (path) => this.gone(path),
      recheck: (t, delayMs) => this.kick(t, delayMs),
      pendingChanged: () => this.updatePending(),
    });
  }

  /** Local snapshot files the agent tracks (for retention, metrics, `status`). */
  snapshots(): LocalSnapshot[] {
    return [...this.tracks.values()].map(viewOf);
  }

  /** mtime of the newest snapshot that is complete and waiting for its upload (0: none) */
  newestWaitingMs(): number {
    let n = 0;
    for (const t of this.tracks.values()) if (isPending(t) && t.fp) n = Math.max(n, t.fp.mtimeMs);
    return n;
  }

  get pendingCount(): number {
    let n = 0;
    for (const t of this.tracks.values()) if (isPending(t)) n++;
    return n;
  }

  /**
   * Names the watcher need not report: those that are never snapshots (partial, hidden, excluded…) and those
   * only a file's first bytes can decide. chokidar holds an inotify watch and its own state for every file it
   * reports, so a directory churning through thousands of unrelated files would cost that much; such names
   * are found by the rescans instead (every detect.rescanInterval), which also tell when they are gone.
   */
  ignores(name: string): boolean {
    return this.names.ignores(name);
  }

  /** A path appeared, changed, or was listed by a scan. */
  seen(path: string): void {
    if (this.closing) return;
    const cls = this.names.classify(path);
    if (cls.kind === 'ignored') return;
    let t = this.tracks.get(basename(path));
    if (!t) {
      if (cls.kind === 'unknown') {
        this.names.sniff(path);
        return;
      }
      if (this.names.unnameable(path)) return;
      t = this.track(path, cls);
    }
    this.kick(t);
  }

  gone(path: string): void {
    this.names.forget(basename(path));
    const t = this.tracks.get(basename(path));
    if (!t || t.state === 'shipping') return; // an upload in flight keeps its open file
    clearTimeout(t.timer);
    this.tracks.delete(t.name);
    if (t.state === 'queued' || t.state === 'settling') this.d.log.warn('snapshot disappeared before it was shipped', { file: path, state: t.state });
    this.updatePending();
    this.kickRawOf(t.name);
  }

  /**
   * A full listing of the directory (every rescan): what is remembered for names no longer there goes, so
   * files created and deleted by the thousand leave nothing behind, even when their events were dropped.
   */
  listed(names: readonly string[]): void {
    const present = new Set(names);
    this.names.listed(present);
    // a tracked file the listing missed may be gone without the watcher saying so (its name is not watched,
    // or the event was dropped): a look at it settles that, and a file that arrived since stays
    for (const t of this.tracks.values()) if (!present.has(t.name)) this.kick(t);
  }

  /** Objects S3 lost (found by the reconcile pass): their local files are shipped again. */
  forgotten(names: readonly string[]): void {
    for (const name of names) {
      const t = this.tracks.get(name);
      if (t && t.state === 'confirmed') {
        t.state = 'settling';
        this.kick(t);
      }
    }
  }

  private track(path: string, snap: SnapshotName): Track {
    const t = newTrack(path, snap, Date.now());
    this.tracks.set(t.name, t);
    if (snap.format === 'zip') this.dirHasZips = true;
    return t;
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
    if (isPending(t)) return;
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

  /** A zip changed state: its raw file may now be superseded, or (the zip failed) the backup to ship. */
  private kickRawOf(zipName: string): void {
    if (!zipName.endsWith('.zip')) return;
    const raw = this.tracks.get(zipName.slice(0, -4));
    if (raw) this.kick(raw);
  }

  /** Facts → decision → action, until the decision is to wait or do nothing. Cheap when nothing changed. */
  private async examine(t: Track): Promise<void> {
    const { log, metrics } = this.d;
    for (;;) {
      const f = await factsOf(t, this.factsSource);
      if (!f) return this.lost(t);
      if (this.closing) return;
      const was = t.state;
      const d = decide(f);
      t.why = d.why;
      switch (d.action.kind) {
        case 'none':
          if (d.state === 'confirmed' && was !== 'confirmed') {
            const e = this.d.ledger.findUnchanged(t.name, f.fp.size, f.fp.mtimeMs)!;
            Object.assign(t, { sha256: e.sha256, key: e.key });
            log.debug('already confirmed in S3', { file: t.path, key: e.key });
            metrics.snapshotSeen(f.fp.mtimeMs);
          }
          if (d.state === 'superseded' && was !== 'superseded') log.debug('raw snapshot superseded by its zip', { file: t.path });
          t.state = d.state;
          return;
        case 'wait':
          t.state = d.state;
          if (d.state === 'settling' && !t.waitLogged) {
            t.waitLogged = true;
            log.debug('snapshot not complete yet; waiting', { file: t.path, reason: d.why });
          }
          this.kick(t, d.action.ms);
          return;
        case 'check':
          t.state = d.state;
          t.quick = { fp: f.fp, result: await this.quick(t) };
          continue;
        case 'reject':
          if (!(was === 'rejected' && sameFingerprint(t.rejectedFp, f.fp))) this.reject(t, f.fp, d.action.reason, d.action.detail);
          t.state = 'rejected';
          this.kickRawOf(t.name);
          return;
        case 'ship':
          if (was !== 'queued') {
            t.state = 'queued';
            t.key = objectKey(this.d.cfg, t.name);
            t.rejectReason = undefined;
            log.info('snapshot complete; queued for upload', { file: t.path, key: t.key, size: f.fp.size, producer: t.snap.producer, format: t.snap.format });
            this.updatePending();
            this.kickRawOf(t.name);
          }
          this.pump();
          return;
      }
    }
  }

  /** The file could not be stat'ed: gone, or a name that is not UTF-8, which no file has (the gate says so). */
  private async lost(t: Track): Promise<void> {
    if (t.name.includes('\ufffd') && (await this.names.checkName(t.path))) {
      clearTimeout(t.timer);
      this.tracks.delete(t.name);
    } else this.gone(t.path);
  }

  /** The cheap checks (a few KiB read); an unreadable file is remembered as such until its ctime changes. */
  private async quick(t: Track): Promise<CheckResult> {
    try {
      const { fh, st } = await openRegular(t.path);
      try {
        const r = await quickCheck(fh, st.size, t.snap.format, t.name);
        return r ? { ok: false, reason: r.reason, detail: r.detail } : { ok: true };
      } finally {
        await fh.close();
      }
    } catch (e) {
      if (e instanceof NotRegularError) return { ok: false, reason: 'format', detail: e.message };
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (code === 'ENOENT') return { ok: false, reason: 'truncated', detail: 'gone' };
      const st = await lstat(t.path).catch(() => undefined);
      t.unreadable = { code, ctimeMs: st?.ctimeMs ?? 0 };
      return { ok: false, reason: 'format', detail: `cannot read it (${code})` };
    }
  }

  private reject(t: Track, fp: Fingerprint, reason: RejectLabel, detail: string): void {
    t.rejectedFp = fp;
    t.rejectReason = `${reason}: ${detail}`;
    this.d.metrics.rejected.inc({ reason });
    this.d.log.error('snapshot rejected: not shipped and never deleted by the agent', { file: t.path, reason, detail });
    this.updatePending();
  }

  private pump(): void {
    if (this.closing || this.yielded > 0) return;
    const now = Date.now();
    if (this.delivery.backoffUntil > now) return this.wakeAt(this.delivery.backoffUntil);
    while (this.active.size < this.d.cfg.upload.concurrency) {
      const next = nextQueued(this.tracks.values(), now);
      if (!next) return;
      if (next.notBefore > now) return this.wakeAt(next.notBefore);
      next.state = 'shipping';
      const p = this.delivery.deliver(next).finally(() => {
        this.active.delete(p);
        next.progress = undefined;
        // events for the file were ignored while it was shipping (deleted, replaced by a rename): look again
        this.kick(next);
        this.pump();
      });
      this.active.add(p);
    }
  }

  private wakeAt(at: number): void {
    if (this.wakeTimer) return;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimer = undefined;
        this.pump();
      },
      Math.max(0, at - Date.now()),
    );
  }

  private updatePending(): void {
    this.d.metrics.pending.set(this.pendingCount);
  }

  /** Runs fn once no upload is in flight, starting none meanwhile (the drill: one reader of S3 at a time). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.yielded++;
    try {
      await this.idle();
      return await fn();
    } finally {
      this.yielded--;
      this.pump();
    }
  }

  /** Retry queued uploads now (e.g. S3 came back, as seen by another call). */
  retryNow(): void {
    this.delivery.clearBackoff();
    clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    this.pump();
  }

  /**
   * First stage of shutdown: no new work; uploads in flight may finish within `timeoutMs`, then
   * they are aborted (their multipart uploads too). Resolves when nothing is in flight.
   */
  async stop(timeoutMs: number): Promise<{ finished: boolean }> {
    this.closing = true;
    this.names.stop();
    clearTimeout(this.wakeTimer);
    for (const t of this.tracks.values()) clearTimeout(t.timer);
    const all = Promise.allSettled([...this.active]);
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([all.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
    clearTimeout(timer);
    this.delivery.abortUploads();
    if (!finished) await Promise.race([all, new Promise((r) => setTimeout(r, 10_000).unref())]);
    return { finished };
  }

  /** Settles when no upload is queued or in flight (for one-shot use and tests). */
  async idle(): Promise<void> {
    while (this.active.size > 0) await Promise.allSettled([...this.active]);
  }
}
