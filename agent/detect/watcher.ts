// Detect: one inotify watch on the snapshot directory (fs.watch), a listing at start and a periodic rescan
// (inotify drops events under load). Knows nothing of snapshots: it reports names that appeared, changed
// or went away, and the directory's whole listing on each rescan.
//
// Why not chokidar: it holds an inotify watch and its own state for every file, and re-reads the whole
// directory with an lstat of every entry on each change event (at most once a second). With 80,000 files in
// the directory that was 80,000 lstat calls a second for as long as files kept changing. A directory watch
// already reports every create, write, rename and delete of the files in it, by name; one depth suffices.
import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Logger } from '../ops/log.js';

export interface WatcherEvents {
  /** a name in the directory was created, written, renamed or deleted, or a scan listed it */
  seen(path: string): void;
  /** the directory became usable (true) or not (false) */
  directory(up: boolean, detail?: string): void;
  /** every name in the directory, after a full listing (a rescan) */
  listed?(names: readonly string[]): void;
}

export interface WatcherOptions {
  rescanIntervalMs: number;
  /** how often a missing directory is looked for */
  missingPollMs?: number;
  /** names whose events are dropped at once (never snapshots) */
  ignore?: (name: string) => boolean;
}

export class Watcher {
  private fsw: FSWatcher | undefined;
  /** the directory the watch is on (a directory replaced under the same path needs a new watch) */
  private watchedIno: number | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private missingTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private up = false;
  private lastProblem: string | undefined;
  private rescanning: Promise<void> | undefined;
  private rescanAgain = false;

  constructor(
    readonly dir: string,
    private readonly opts: WatcherOptions,
    private readonly events: WatcherEvents,
    private readonly log: Logger,
  ) {}

  get watching(): boolean {
    return this.up && !this.closed;
  }

  async start(): Promise<void> {
    await this.attach();
    this.rescanTimer = setInterval(() => void this.rescan(), this.opts.rescanIntervalMs);
    this.rescanTimer.unref();
  }

  /** Watches the directory once it is there; until then reports it and keeps looking. */
  private async attach(): Promise<void> {
    if (this.closed) return;
    const problem = await this.problem();
    if (problem) {
      this.setUp(false, problem);
      this.missingTimer = setTimeout(() => void this.attach(), this.opts.missingPollMs ?? 5000);
      this.missingTimer.unref();
      return;
    }
    let fsw: FSWatcher;
    try {
      this.watchedIno = (await stat(this.dir)).ino;
      fsw = watch(this.dir, { persistent: true }, (_event, filename) => this.onEvent(filename));
    } catch (e) {
      this.setUp(false, `snapshot directory ${this.dir} cannot be watched (${(e as NodeJS.ErrnoException).code ?? String(e)}); waiting`);
      this.missingTimer = setTimeout(() => void this.attach(), this.opts.missingPollMs ?? 5000);
      this.missingTimer.unref();
      return;
    }
    fsw.on('error', (e) => {
      this.log.warn('directory watch error; watching it again', { dir: this.dir, error: String((e as Error).message ?? e) });
      void this.detach(`snapshot directory ${this.dir}: the watch failed (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
    });
    this.fsw = fsw;
    this.setUp(true);
    this.log.info('watching snapshot directory', { dir: this.dir, rescanInterval: this.opts.rescanIntervalMs / 1000 });
    // what is there already, and what arrived before the watch
    await this.rescan();
  }

  private onEvent(filename: string | null): void {
    if (this.closed || !this.fsw) return;
    // the kernel's queue overflowed or it did not say which name: look at all of them
    if (filename === null) {
      void this.rescan();
      return;
    }
    // the directory itself was removed or renamed: the next listing tells (and re-attaches)
    if (filename === basename(this.dir)) void this.rescan();
    if (this.opts.ignore?.(filename)) return;
    this.events.seen(join(this.dir, filename));
  }

  private async detach(problem: string): Promise<void> {
    const fsw = this.fsw;
    this.fsw = undefined;
    fsw?.close();
    this.setUp(false, problem);
    clearTimeout(this.missingTimer);
    this.missingTimer = setTimeout(() => void this.attach(), this.opts.missingPollMs ?? 5000);
    this.missingTimer.unref();
  }

  private async problem(): Promise<string | undefined> {
    try {
      const st = await stat(this.dir);
      if (!st.isDirectory()) return `${this.dir} is not a directory; set snapshotDir to the directory the snapshots are written to`;
      await readdir(this.dir);
      return undefined;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return `snapshot directory ${this.dir} does not exist; waiting for it to appear (check snapshotDir, or that etcd snapshots are enabled)`;
      if (code === 'EACCES' || code === 'EPERM') return `snapshot directory ${this.dir} is not readable by this user; grant read access (see the systemd unit) or run as the owner`;
      return `snapshot directory ${this.dir} cannot be read (${code}); waiting`;
    }
  }

  private setUp(up: boolean, problem?: string): void {
    if (!up && problem !== this.lastProblem) this.log.error(problem ?? 'snapshot directory unavailable', { dir: this.dir });
    this.lastProblem = up ? undefined : problem;
    if (up !== this.up || !up) this.events.directory(up, problem);
    this.up = up;
  }

  /** Lists the directory and reports every entry: catches whatever events were lost. One at a time. */
  rescan(): Promise<void> {
    if (this.rescanning) {
      this.rescanAgain = true;
      return this.rescanning;
    }
    this.rescanning = this.scanOnce().finally(() => {
      this.rescanning = undefined;
      if (this.rescanAgain) {
        this.rescanAgain = false;
        void this.rescan();
      }
    });
    return this.rescanning;
  }

  private async scanOnce(): Promise<void> {
    if (this.closed || !this.fsw) return; // attach() is polling for the directory
    let names: string[];
    try {
      // a directory removed and made again under the same path is not the one the watch is on
      if ((await stat(this.dir)).ino !== this.watchedIno) throw Object.assign(new Error('replaced'), { code: 'ENOENT' });
      names = await readdir(this.dir);
    } catch {
      await this.detach((await this.problem()) ?? `snapshot directory ${this.dir} was removed or replaced; watching it again`);
      return;
    }
    if (!this.up) this.setUp(true);
    this.events.listed?.(names);
    for (const n of names) this.events.seen(join(this.dir, n));
    this.log.debug('directory rescanned', { dir: this.dir, entries: names.length });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.rescanTimer);
    clearTimeout(this.missingTimer);
    this.fsw?.close();
    this.fsw = undefined;
    await this.rescanning;
  }
}
