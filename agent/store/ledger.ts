// The durable record of what is confirmed in one bucket. It is a cache of that bucket: it names the endpoint,
// bucket and prefix it describes, a config pointing elsewhere starts a new one from the new location's
// listing, and entries are reconciled with a listing on a schedule so that an object deleted or lost in S3
// is shipped again while its local file exists.
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { replaceFile } from '../base/files.js';
import type { Config } from '../config/keys.js';
import { nodePrefix } from './layout.js';

export interface LedgerEntry {
  /** local file name */
  name: string;
  /** the snapshot key (the object is this, plus `.age` when encrypted) */
  key: string;
  /** the object's key when it differs from `key` (`.age`) */
  storedKey?: string;
  /** of the plaintext snapshot file */
  size: number;
  sha256: string;
  /** the local file's mtime when it was shipped (ms since epoch) */
  mtimeMs: number;
  producer: string;
  confirmedAt: string;
  /** when the snapshot was taken (ISO): the producer's time in its name, else the file's mtime */
  snapshotTime?: string;
}

/** The bucket a ledger describes. */
export interface LedgerLocation {
  endpoint: string;
  bucket: string;
  prefix: string;
}

interface LedgerFile {
  version: 2;
  location: LedgerLocation;
  entries: LedgerEntry[];
}

/** `elsewhere`: the file describes another bucket, endpoint or prefix (moved aside, a new one starts). */
export type LedgerStatus = 'ok' | 'missing' | 'corrupt' | 'elsewhere';

export interface LedgerOptions {
  /**
   * Writes begin at least this long apart (0: each change is written at once). A change waiting for its
   * write is in memory only: a crash loses it, and the agent then finds that object in S3 again.
   */
  saveDelayMs?: number;
}

const FILE = 'ledger.json';
// A stat's mtimeMs survives JSON exactly, but not every object's metadata (seconds with a fraction).
const MTIME_SLACK_MS = 0.001;

/** The bucket and prefix a node's ledger describes. */
export function ledgerLocation(cfg: Pick<Config, 'cluster' | 'node' | 's3'>): LedgerLocation {
  return { endpoint: cfg.s3.endpoint ?? `aws:${cfg.s3.region}`, bucket: cfg.s3.bucket, prefix: nodePrefix(cfg) };
}

export const sameLocation = (a: LedgerLocation, b: LedgerLocation): boolean => a.endpoint === b.endpoint && a.bucket === b.bucket && a.prefix === b.prefix;
export const describeLocation = (l: LedgerLocation): string => `s3://${l.bucket}/${l.prefix}${l.endpoint ? ` at ${l.endpoint}` : ''}`;

export class Ledger {
  private readonly byKey = new Map<string, LedgerEntry>();
  // name → keys: a rescan looks up every file in the directory
  private readonly byName = new Map<string, Set<string>>();
  private dirty = false;
  /** when this process recorded each entry (ms): reconcile must not call an upload newer than its listing missing */
  private readonly recordedAt = new Map<string, number>();
  private writing: Promise<void> = Promise.resolve();
  /** the write that takes every change made since the last one began; it waits for `saveDelayMs` */
  private next?: { promise: Promise<void>; timer?: NodeJS.Timeout; start: () => void };
  private lastWriteAt = -Infinity;
  private written = 0;

  private constructor(
    readonly dir: string,
    readonly location: LedgerLocation,
    private readonly saveDelayMs = 0,
  ) {}

  get path(): string {
    return join(this.dir, FILE);
  }

  /** A ledger that cannot be persisted (unusable state directory): every save fails and is counted. */
  static inMemory(dir: string, location: LedgerLocation, opts: LedgerOptions = {}): Ledger {
    return new Ledger(dir, location, opts.saveDelayMs);
  }

  /**
   * Loads the ledger of this location. A corrupt file, or one describing another location (or written by
   * an agent that did not record its location), is moved aside (kept for inspection) and reported.
   */
  static async open(dir: string, location: LedgerLocation, opts: LedgerOptions = {}): Promise<{ ledger: Ledger; status: LedgerStatus; detail?: string }> {
    const ledger = new Ledger(dir, location, opts.saveDelayMs);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    let text: string;
    try {
      text = await readFile(ledger.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ledger, status: 'missing' };
      throw e;
    }
    const aside = async (why: string): Promise<string> => {
      const to = `${ledger.path}.${why}-${Date.now()}`;
      await rename(ledger.path, to).catch(() => undefined);
      return to;
    };
    let parsed: { version: 1 | 2; location?: LedgerLocation; entries: LedgerEntry[] };
    try {
      parsed = JSON.parse(text) as typeof parsed;
      if ((parsed.version !== 1 && parsed.version !== 2) || !Array.isArray(parsed.entries)) throw new Error('unexpected shape');
      for (const e of parsed.entries) {
        if (typeof e.key !== 'string' || typeof e.sha256 !== 'string' || typeof e.name !== 'string' || typeof e.size !== 'number') throw new Error('bad entry');
      }
    } catch (e) {
      return { ledger, status: 'corrupt', detail: `${(e as Error).message}; moved to ${await aside('corrupt')}` };
    }
    if (parsed.version === 1 || !parsed.location || !sameLocation(parsed.location, location)) {
      const was = parsed.version === 2 && parsed.location ? describeLocation(parsed.location) : 'a location it did not record';
      return {
        ledger,
        status: 'elsewhere',
        detail: `it described ${was}, the config names ${describeLocation(location)}; moved to ${await aside('elsewhere')}`,
      };
    }
    for (const e of parsed.entries) ledger.put(e);
    return { ledger, status: 'ok' };
  }

  entries(): LedgerEntry[] {
    return [...this.byKey.values()];
  }

  get size(): number {
    return this.byKey.size;
  }

  getByKey(key: string): LedgerEntry | undefined {
    return this.byKey.get(key);
  }

  private named(name: string): LedgerEntry[] {
    const keys = this.byName.get(name);
    return keys ? [...keys].map((k) => this.byKey.get(k)!).filter(Boolean) : [];
  }

  private put(e: LedgerEntry): void {
    const old = this.byKey.get(e.key);
    if (old) this.byName.get(old.name)?.delete(e.key);
    this.byKey.set(e.key, e);
    let set = this.byName.get(e.name);
    if (!set) this.byName.set(e.name, (set = new Set()));
    set.add(e.key);
  }

  /** The confirmed copy of this local file, if any: same name and, when known, same content. */
  find(name: string, sha256?: string): LedgerEntry | undefined {
    let best: LedgerEntry | undefined;
    for (const e of this.named(name)) {
      if (sha256 && e.sha256 !== sha256) continue;
      if (!best || e.confirmedAt > best.confirmedAt) best = e;
    }
    return best;
  }

  /** The entry recorded for this file's current size and mtime: lets a rescan skip re-reading shipped files. */
  findUnchanged(name: string, size: number, mtimeMs: number): LedgerEntry | undefined {
    for (const e of this.named(name)) if (e.size === size && Math.abs(e.mtimeMs - mtimeMs) < MTIME_SLACK_MS) return e;
    return undefined;
  }

  async record(entry: LedgerEntry): Promise<void> {
    this.put(entry);
    this.recordedAt.set(entry.key, Date.now());
    await this.save();
  }

  async forget(key: string): Promise<void> {
    if (!this.drop(key)) return;
    await this.save();
  }

  private drop(key: string): LedgerEntry | undefined {
    const old = this.byKey.get(key);
    if (!old) return undefined;
    this.byKey.delete(key);
    this.byName.get(old.name)?.delete(key);
    this.recordedAt.delete(key);
    return old;
  }

  /**
   * Drops the entries whose object is not in a fresh listing of this node's prefix (`present`: every stored
   * key listed; `listedAt`: when the listing started, so an entry confirmed since is not called missing).
   * Returns them: their local files, if any, are no longer backed up.
   */
  async reconcile(present: ReadonlySet<string>, listedAt = Infinity): Promise<LedgerEntry[]> {
    // this process's own clock, not the entry's confirmedAt: an edited or copied ledger may hold any date
    const missing = this.entries().filter((e) => !present.has(e.storedKey ?? e.key) && !((this.recordedAt.get(e.key) ?? -Infinity) >= listedAt));
    for (const e of missing) this.drop(e.key);
    if (missing.length) await this.save();
    return missing;
  }

  async replaceAll(entries: LedgerEntry[]): Promise<void> {
    this.byKey.clear();
    this.byName.clear();
    for (const e of entries) this.put(e);
    await this.save();
  }

  /** How many times this process has written the file. */
  get writes(): number {
    return this.written;
  }

  /** True when the file on disk lags behind memory: a write is waiting or running, or the last one failed. */
  get unsaved(): boolean {
    return this.dirty;
  }

  /**
   * Writes the ledger; resolves once every change made before the call is on disk. Changes made while a
   * write waits share it, and a write begins no sooner than `saveDelayMs` after the one before: the file is
   * rewritten whole, so a burst of uploads must not rewrite it once per upload.
   */
  private save(): Promise<void> {
    this.dirty = true;
    if (this.next) return this.next.promise;
    let start!: () => void;
    const promise = new Promise<void>((resolve, reject) => {
      start = () => {
        if (this.next?.promise !== promise) return;
        clearTimeout(this.next.timer);
        this.next = undefined;
        this.lastWriteAt = Date.now();
        const run = (): Promise<void> => this.write();
        this.writing = this.writing.then(run, run);
        this.writing.then(resolve, reject);
      };
    });
    const next: NonNullable<Ledger['next']> = { promise, start };
    this.next = next;
    // the delay counts from when the previous write was started, and a write never overlaps the one before
    const wait = this.lastWriteAt + this.saveDelayMs - Date.now();
    if (wait > 0) next.timer = setTimeout(start, wait);
    else start();
    return promise;
  }

  /** Writes at once what is waiting for its write (shutdown). */
  flush(): Promise<void> {
    if (!this.dirty) return this.writing;
    const done = this.save();
    this.next?.start();
    return done;
  }

  /** Atomic replace (base/files.ts replaceFile). */
  private async write(): Promise<void> {
    await replaceFile(this.path, JSON.stringify({ version: 2, location: this.location, entries: this.entries() } satisfies LedgerFile, null, 1));
    this.written++;
    // changes made while this write ran wait for the next one
    this.dirty = this.next !== undefined;
  }
}
