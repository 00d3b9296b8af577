// Drives each snapshot file through its life: gathers what is known about it, asks lifecycle.decide() what
// state it is in and what to do next, and does it (check, wait, ship, reject). The upload queue lives here:
// newest snapshot first, one backoff for the whole queue when S3 is at fault, one per file otherwise.
import { lstat, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { classifyError, describeError, storeAtFault } from '../base/errors.js';
import { fingerprint, NotRegularError, openRegular, readAt, sameFingerprint, type Fingerprint } from '../base/files.js';
import { isValidUtf8Name, shownBytes } from '../base/text.js';
import type { Config } from '../config/keys.js';
import { classify, compileRules, snapshotTime, sniffName, SNIFF_BYTES, unnameable, type NameRules, type SnapshotName } from '../snapshot/names.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { decide, type CheckResult, type FileFacts, type RejectLabel, type TrackState } from '../snapshot/lifecycle.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { quickCheck } from '../snapshot/verifier.js';
import type { Ledger } from '../store/ledger.js';
import { objectKey } from '../store/layout.js';
import type { PartIntegrity, Store } from '../store/store.js';
import type { Sealing } from '../crypto/seal.js';
import { shipOptions } from './options.js';
import { Uploader, type ShipOutcome } from './upload.js';

/** What the agent knows about one snapshot file in the directory (for retention, metrics, `status`). */
export interface LocalSnapshot {
  name: string;
  path: string;
  snap: SnapshotName;
  state: TrackState;
  fp?: Fingerprint;
  sha256?: string;
  key?: string;
  rejectReason?: string;
  /** why it is in its state */
  why: string;
  /** bytes sent of the upload in flight */
  progress?: { done: number; total: number };
}

interface Track extends LocalSnapshot {
  firstSeen: number;
  changedAt: number;
  quick?: { fp: Fingerprint; result: CheckResult };
  failed?: { fp: Fingerprint; result: CheckResult };
  rejectedFp?: Fingerprint;
  unreadable?: { code: string; ctimeMs: number };
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

export interface ShipperDeps {
  cfg: Config;
  store: Store;
  ledger: Ledger;
  metrics: Metrics;
  log: Logger;
  version: string;
  /** how parts are proven (decided by the start-up probe) */
  integrity: () => PartIntegrity;
  deep?: DeepCheck;
  sealing?: Sealing;
}

export class Shipper {
  private readonly tracks = new Map<string, Track>();
  /** names that are not snapshots, by fingerprint, so rescans don't re-read them */
  private readonly notSnapshots = new Map<string, string>();
  private readonly loggedIgnored = new Set<string>();
  /** names whose bytes are not UTF-8: reported once each */
  private readonly badNames = new Set<string>();
  /** the directory's non-UTF-8 names, from one recent listing */
  private rawNames: { at: number; names: Promise<Map<string, Buffer>> } | undefined;
  private nextListing: Promise<Map<string, Buffer>> | undefined;
  /** unknown names waiting for their first bytes to be read, name → path */
  private readonly sniffQueued = new Map<string, string>();
  private sniffsRunning = 0;
  private readonly rules: NameRules;
  private readonly uploader: Uploader;
  private readonly active = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private storeFailures = 0;
  private backoffUntil = 0;
  private backoffTimer: NodeJS.Timeout | undefined;
  private closing = false;
  private dirHasZips = false;
  /** another reader of S3 (the drill) has the turn: no upload starts */
  private yielded = 0;

  constructor(private readonly d: ShipperDeps) {
    this.rules = compileRules(d.cfg.include, d.cfg.exclude);
    this.uploader = new Uploader(d.store);
  }

  /** Local snapshot files the agent tracks (for retention, metrics, `status`). */
  snapshots(): LocalSnapshot[] {
    return [...this.tracks.values()].map(({ name, path, snap, state, fp, sha256, key, rejectReason, why, progress }) => ({
      name,
      path,
      snap,
      state,
      fp,
      sha256,
      key,
      rejectReason,
      why,
      progress,
    }));
  }

  /** mtime of the newest snapshot that is complete and waiting for its upload (0: none) */
  newestWaitingMs(): number {
    let n = 0;
    for (const t of this.tracks.values()) if ((t.state === 'queued' || t.state === 'shipping') && t.fp) n = Math.max(n, t.fp.mtimeMs);
    return n;
  }

  get pendingCount(): number {
    let n = 0;
    for (const t of this.tracks.values()) if (t.state === 'queued' || t.state === 'shipping') n++;
    return n;
  }

  /**
   * Names the watcher need not report: those that are never snapshots (partial, hidden, excluded…) and those
   * only a file's first bytes can decide. chokidar holds an inotify watch and its own state for every file it
   * reports, so a directory churning through thousands of unrelated files would cost that much; such names
   * are found by the rescans instead (every detect.rescanInterval), which also tell when they are gone.
   */
  ignores(name: string): boolean {
    return classify(name, this.rules).kind !== 'snapshot';
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
      if (this.unnameable(path)) return;
      t = this.track(path, cls);
    }
    this.kick(t);
  }

  gone(path: string): void {
    this.forgetName(basename(path));
    const t = this.tracks.get(basename(path));
    if (!t || t.state === 'shipping') return; // an upload in flight keeps its open file
    clearTimeout(t.timer);
    this.tracks.delete(t.name);
    if (t.state === 'queued' || t.state === 'settling') this.d.log.warn('snapshot disappeared before it was shipped', { file: path, state: t.state });
    this.updatePending();
    this.kickRawOf(t.name);
  }

  /** What is remembered about a name that is not a tracked snapshot: dropped once the name is gone. */
  private forgetName(name: string): void {
    this.notSnapshots.delete(name);
    this.loggedIgnored.delete(name);
    this.badNames.delete(name);
  }

  /**
   * A full listing of the directory (every rescan): what is remembered for names no longer there goes, so
   * files created and deleted by the thousand leave nothing behind, even when their events were dropped.
   */
  listed(names: readonly string[]): void {
    const present = new Set(names);
    for (const m of [this.notSnapshots, this.loggedIgnored, this.badNames]) for (const n of m.keys()) if (!present.has(n)) m.delete(n);
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
    const now = Date.now();
    const t: Track = {
      name: snap.name,
      path,
      snap,
      state: 'settling',
      why: 'just seen',
      firstSeen: now,
      changedAt: now,
      attempts: 0,
      notBefore: 0,
      busy: false,
      again: false,
    };
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
    } catch (e) {
      // not awaited: the name check waits for a shared listing, and must not hold a sniff slot meanwhile
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && name.includes('\ufffd')) void this.checkName(path);
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
    const snap = sniffName(name, head);
    if (!snap) {
      this.notSnapshots.set(name, id);
      return;
    }
    this.notSnapshots.delete(name);
    if (this.unnameable(path)) return;
    if (!this.tracks.has(name) && !this.closing) this.kick(this.track(path, snap));
  }

  /**
   * A name whose bytes are not UTF-8 reaches the agent with U+FFFD in place of the odd bytes, and no file has
   * that name: the snapshot cannot be opened by it. Say so once, with the bytes, instead of "disappeared".
   */
  private async checkName(path: string): Promise<boolean> {
    const name = basename(path);
    if (this.badNames.has(name)) return true;
    const raw = (await this.nonUtf8Names(dirname(path), Date.now())).get(name);
    if (!raw) return false;
    if (!this.badNames.has(name)) {
      this.badNames.add(name);
      this.d.metrics.rejected.inc({ reason: 'name' });
      this.d.log.error('snapshot rejected: not shipped and never deleted by the agent', {
        file: join(dirname(path), shownBytes(raw)),
        reason: 'name',
        detail: 'its file name is not valid UTF-8, so it can be neither opened by name nor named in S3; rename it',
      });
    }
    return true;
  }

  /**
   * The directory's names that are not UTF-8 (as the agent sees them, with U+FFFD) and their bytes, from a
   * listing started at `since` or later. Listings are shared and at most one a second: a thousand such names
   * must not cost a thousand listings.
   */
  private nonUtf8Names(dir: string, since: number): Promise<Map<string, Buffer>> {
    if (this.rawNames && this.rawNames.at >= since) return this.rawNames.names;
    this.nextListing ??= new Promise<void>((r) => setTimeout(r, this.rawNames ? Math.max(0, this.rawNames.at + 1000 - Date.now()) : 0)).then(() => {
      const at = Date.now();
      const names = readdir(dir, { encoding: 'buffer' }).then(
        (all) => new Map(all.filter((b) => !isValidUtf8Name(b)).map((b) => [b.toString('utf8'), b] as const)),
        () => new Map<string, Buffer>(),
      );
      this.rawNames = { at, names };
      this.nextListing = undefined;
      return names;
    });
    return this.nextListing;
  }

  /** A snapshot whose name cannot be a key: rejected, said and counted once per name. */
  private unnameable(path: string): boolean {
    const name = basename(path);
    const why = unnameable(name);
    if (!why) return false;
    if (!this.badNames.has(name)) {
      this.badNames.add(name);
      this.d.metrics.rejected.inc({ reason: 'name' });
      this.d.log.error('snapshot rejected: not shipped and never deleted by the agent', { file: path, reason: 'name', detail: why });
    }
    return true;
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

  /** A zip changed state: its raw file may now be superseded, or (the zip failed) the backup to ship. */
  private kickRawOf(zipName: string): void {
    if (!zipName.endsWith('.zip')) return;
    const raw = this.tracks.get(zipName.slice(0, -4));
    if (raw) this.kick(raw);
  }

  private async zipState(t: Track): Promise<FileFacts['zip']> {
    const z = this.tracks.get(`${t.name}.zip`);
    if (z) {
      if (z.state === 'rejected') return 'rejected';
      return z.state === 'queued' || z.state === 'shipping' || z.state === 'confirmed' ? 'good' : 'pending';
    }
    return (await lstat(join(dirname(t.path), `${t.name}.zip`)).then(
      () => true,
      () => false,
    ))
      ? 'pending'
      : 'absent';
  }

  /** What is known about the file now: the facts decide() needs. */
  private async facts(t: Track): Promise<FileFacts | undefined> {
    const { cfg, ledger } = this.d;
    let st;
    try {
      st = await lstat(t.path);
    } catch {
      if (t.name.includes('\ufffd') && (await this.checkName(t.path))) {
        clearTimeout(t.timer);
        this.tracks.delete(t.name);
        return undefined;
      }
      this.gone(t.path);
      return undefined;
    }
    const fp = fingerprint(st);
    if (!sameFingerprint(fp, t.fp)) {
      t.fp = fp;
      t.changedAt = Date.now();
    }
    if (t.unreadable && t.unreadable.ctimeMs !== st.ctimeMs) {
      // a chmod or ACL change: the same bytes may be readable now
      t.unreadable = undefined;
      t.quick = undefined;
    }
    const kind = st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'special';
    const confirmed = kind === 'file' ? ledger.findUnchanged(t.name, fp.size, fp.mtimeMs) : undefined;
    const zipping = t.snap.format === 'raw' && (t.snap.zips || this.dirHasZips);
    return {
      kind,
      fp,
      now: Date.now(),
      firstSeenMs: t.firstSeen,
      changedAtMs: t.changedAt,
      ...(confirmed ? { confirmed: { key: confirmed.key, sha256: confirmed.sha256 } } : {}),
      zipping,
      ...(zipping ? { zip: await this.zipState(t) } : {}),
      ...(t.quick && sameFingerprint(t.quick.fp, fp) ? { quick: t.quick.result } : {}),
      ...(t.failed && sameFingerprint(t.failed.fp, fp) ? { failed: t.failed.result } : {}),
      ...(t.unreadable ? { unreadable: { ...t.unreadable, nowCtimeMs: st.ctimeMs } } : {}),
      settleTimeoutMs: cfg.detect.settleTimeoutMs,
      zipWaitMs: cfg.detect.zipWaitMs,
      pollIntervalMs: cfg.detect.pollIntervalMs,
    };
  }

  /** Facts → decision → action, until the decision is to wait or do nothing. Cheap when nothing changed. */
  private async examine(t: Track): Promise<void> {
    const { log, metrics } = this.d;
    for (;;) {
      const f = await this.facts(t);
      if (!f || this.closing) return;
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
    if (this.backoffUntil > now) return this.wakeAt(this.backoffUntil);
    while (this.active.size < this.d.cfg.upload.concurrency) {
      const next = this.nextQueued(now);
      if (!next) return;
      if (next.notBefore > now) return this.wakeAt(next.notBefore);
      next.state = 'shipping';
      const p = this.deliver(next).finally(() => {
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
    if (this.backoffTimer) return;
    this.backoffTimer = setTimeout(
      () => {
        this.backoffTimer = undefined;
        this.pump();
      },
      Math.max(0, at - Date.now()),
    );
  }

  /**
   * Newest first: after an outage the most recent backup is the most valuable. "Newest" is the snapshot's
   * own time (the producer's in its name, else its mtime), ties broken by name. Else the one due soonest.
   */
  private nextQueued(now: number): Track | undefined {
    let best: Track | undefined;
    let soonest: Track | undefined;
    const when = (t: Track): number => snapshotTime(t.snap, t.fp?.mtimeMs ?? 0).getTime();
    for (const t of this.tracks.values()) {
      if (t.state !== 'queued') continue;
      if (t.notBefore <= now) {
        if (!best || when(t) > when(best) || (when(t) === when(best) && t.name > best.name)) best = t;
      } else if (!soonest || t.notBefore < soonest.notBefore) soonest = t;
    }
    return best ?? soonest;
  }

  private async deliver(t: Track): Promise<void> {
    const { cfg, ledger, log, metrics } = this.d;
    const started = Date.now();
    let opened;
    try {
      opened = await openRegular(t.path);
    } catch (e) {
      t.state = 'settling';
      this.updatePending();
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') this.gone(t.path);
      return;
    }
    const { fh, st } = opened;
    const fp = fingerprint(st);
    const key = t.key ?? objectKey(cfg, t.name);
    log.debug('upload started', { file: t.path, key, size: fp.size, attempt: t.attempts + 1 });
    let lastProgressLog = Date.now();
    let outcome: ShipOutcome;
    try {
      outcome = await this.uploader.ship(
        {
          fh,
          fp,
          name: t.name,
          producer: t.snap.producer,
          snapshotTime: snapshotTime(t.snap, fp.mtimeMs),
          key,
          node: cfg.node,
          cluster: cfg.cluster,
          agent: this.d.version,
          format: t.snap.format,
        },
        shipOptions(cfg, {
          signal: this.abort.signal,
          integrity: this.d.integrity(),
          ...(this.d.deep ? { deep: this.d.deep } : {}),
          ...(this.d.sealing ? { sealing: this.d.sealing } : {}),
          onProgress: (done, total) => {
            t.progress = { done, total };
            if (Date.now() - lastProgressLog >= 30_000) {
              lastProgressLog = Date.now();
              log.debug('upload progress', { file: t.path, key, bytes: done, of: total, percent: Math.floor((done / total) * 100) });
            }
          },
        }),
      );
    } catch (err) {
      await fh.close().catch(() => undefined);
      this.failed(t, key, err);
      return;
    }
    await fh.close().catch(() => undefined);
    this.storeFailures = 0;
    if (outcome.kind === 'rejected') {
      // The one read pass found the file not to be a sound snapshot; the upload was aborted.
      t.failed = { fp, result: { ok: false, reason: outcome.verdict.reason, detail: outcome.verdict.detail } };
      t.state = 'settling';
      this.updatePending();
      return;
    }
    const sha256 = outcome.kind === 'shipped' ? outcome.verified.sha256 : outcome.sha256;
    metrics.snapshotSeen(fp.mtimeMs);
    const seconds = (Date.now() - started) / 1000;
    Object.assign(t, { key: outcome.key, sha256, state: 'confirmed' as const, attempts: 0, notBefore: 0, why: `confirmed in S3 as ${outcome.storedKey}` });
    this.updatePending();
    const confirmedAt = new Date();
    if (outcome.kind === 'shipped') {
      metrics.uploadSucceeded(fp.size, seconds, confirmedAt);
      if (outcome.verified.db) metrics.dbFacts(outcome.verified.db.revision, outcome.verified.db.keys, snapshotTime(t.snap, fp.mtimeMs).getTime());
      log.info('snapshot shipped and confirmed', {
        file: t.path,
        key: outcome.storedKey,
        size: fp.size,
        sha256,
        parts: outcome.parts,
        integrity: outcome.manifest.object.integrity,
        seconds: Number(seconds.toFixed(3)),
        mibPerSecond: Number((fp.size / 1048576 / Math.max(seconds, 0.001)).toFixed(1)),
      });
    } else {
      metrics.uploads.inc({ result: 'already_present' });
      // S3 already holds these bytes: the backup is as fresh as the newer of the object and this file
      metrics.confirmedAt(new Date(Math.max(outcome.lastModified?.getTime() ?? 0, fp.mtimeMs)));
      log.info('snapshot already in S3; not sent again', { file: t.path, key: outcome.storedKey, sha256, why: outcome.why });
    }
    try {
      await ledger.record({
        name: t.name,
        key: outcome.key,
        ...(outcome.storedKey !== outcome.key ? { storedKey: outcome.storedKey } : {}),
        size: fp.size,
        sha256,
        mtimeMs: fp.mtimeMs,
        producer: t.snap.producer,
        confirmedAt: confirmedAt.toISOString(),
        snapshotTime: snapshotTime(t.snap, fp.mtimeMs).toISOString(),
      });
    } catch (e) {
      // S3 has it; the ledger is a cache that the next write (or a rebuild) repairs.
      metrics.ledgerWriteFailures.inc();
      log.error('could not write the ledger; the upload is confirmed in S3 and kept in memory', {
        file: t.path,
        key: outcome.key,
        ledger: ledger.path,
        error: (e as NodeJS.ErrnoException).code ?? String(e),
      });
    }
  }

  private failed(t: Track, key: string, err: unknown): void {
    const { cfg, log, metrics, store } = this.d;
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
      log.warn('upload stopped: the file changed or could not be read; checking it again', {
        file: t.path,
        key,
        reason,
        detail: describeError(err, { location: store.location, key }),
      });
      t.state = 'settling';
      t.changedAt = Date.now();
      this.updatePending();
      this.kick(t, cfg.detect.pollIntervalMs);
      return;
    }
    t.state = 'queued';
    const storeWide = storeAtFault(reason);
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
    this.abort.abort();
    if (!finished) await Promise.race([all, new Promise((r) => setTimeout(r, 10_000).unref())]);
    return { finished };
  }

  /** Settles when no upload is queued or in flight (for one-shot use and tests). */
  async idle(): Promise<void> {
    while (this.active.size > 0) await Promise.allSettled([...this.active]);
  }
}
