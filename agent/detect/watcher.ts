// Detect: chokidar events, a scan at start and a periodic rescan (inotify drops events under load).
// Knows nothing of snapshots: it reports paths that appeared, changed or went away.
import { readdir, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { FSWatcher } from 'chokidar';
import { listNames } from '../base/files.js';
import { NarrowWatcher } from './listing.js';
import type { Logger } from '../ops/log.js';

export interface WatcherEvents {
  /** a file appeared, changed, or was seen by a scan */
  seen(path: string): void;
  gone(path: string): void;
  /** the directory became usable (true) or not (false) */
  directory(up: boolean, detail?: string): void;
  /** every name in the directory, after a full listing (a rescan) */
  listed?(names: readonly string[]): void;
}

export interface WatcherOptions {
  rescanIntervalMs: number;
  /** how often a missing directory is looked for */
  missingPollMs?: number;
  /** names not worth an event (chokidar holds an inotify watch and some KiB for every file it reports); the rescans still list them */
  ignore?: (name: string) => boolean;
}

export class Watcher {
  private fsw: FSWatcher | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private missingTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private up = false;
  private lastProblem: string | undefined;

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

  /** Starts chokidar once the directory is there; until then reports it and keeps looking. */
  private async attach(): Promise<void> {
    if (this.closed) return;
    const problem = await this.problem();
    if (problem) {
      this.setUp(false, problem);
      this.missingTimer = setTimeout(() => void this.attach(), this.opts.missingPollMs ?? 5000);
      this.missingTimer.unref();
      return;
    }
    const ignore = this.opts.ignore ?? (() => false);
    const fsw = new NarrowWatcher(
      {
        depth: 0,
        ignored: (p: string) => p !== this.dir && ignore(basename(p)),
        ignoreInitial: false,
        followSymlinks: false,
        alwaysStat: false,
        persistent: true,
        // completeness is decided by content (verify), not by chokidar's size polling
        awaitWriteFinish: false,
      },
      ignore,
    );
    fsw.add(this.dir);
    this.fsw = fsw;
    fsw.on('add', (p) => this.events.seen(p));
    fsw.on('change', (p) => this.events.seen(p));
    fsw.on('unlink', (p) => this.events.gone(p));
    fsw.on('unlinkDir', (p) => {
      if (p === this.dir) void this.detach(`snapshot directory ${this.dir} was removed`);
    });
    fsw.on('error', (e) => this.log.warn('directory watch error; relying on rescans', { dir: this.dir, error: String((e as Error).message ?? e) }));
    await new Promise<void>((resolve) => fsw.once('ready', () => resolve()));
    this.setUp(true);
    this.log.info('watching snapshot directory', { dir: this.dir, rescanInterval: this.opts.rescanIntervalMs / 1000 });
  }

  private async detach(problem: string): Promise<void> {
    const fsw = this.fsw;
    this.fsw = undefined;
    await fsw?.close();
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
      if (code === 'ENOENT')
        return `snapshot directory ${this.dir} does not exist; waiting for it to appear (check snapshotDir, or that etcd snapshots are enabled)`;
      if (code === 'EACCES' || code === 'EPERM')
        return `snapshot directory ${this.dir} is not readable by this user; grant read access (see the systemd unit) or run as the owner`;
      return `snapshot directory ${this.dir} cannot be read (${code}); waiting`;
    }
  }

  private setUp(up: boolean, problem?: string): void {
    if (!up && problem !== this.lastProblem) this.log.error(problem ?? 'snapshot directory unavailable', { dir: this.dir });
    this.lastProblem = up ? undefined : problem;
    if (up !== this.up || !up) this.events.directory(up, problem);
    this.up = up;
  }

  /** Lists the directory and reports every entry: catches whatever events were lost. */
  async rescan(): Promise<void> {
    if (this.closed) return;
    if (!this.fsw) return; // attach() is polling for the directory
    let names: string[];
    try {
      names = await listNames(this.dir);
    } catch {
      await this.detach((await this.problem()) ?? `snapshot directory ${this.dir} cannot be listed`);
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
    await this.fsw?.close();
    this.fsw = undefined;
  }
}
