// Which names the shipper takes up. Names that are never snapshots are ignored (said once each), unknown
// names are decided by their first bytes (a few files at a time), and a snapshot whose name can be neither
// opened nor a key is rejected, said and counted once. What is remembered of a name goes with the name.
import { lstat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { listNames, openRegular, readAt } from '../base/files.js';
import { isValidUtf8Name, shownBytes } from '../base/text.js';
import type { Config } from '../config/keys.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { classify, compileRules, sniffName, SNIFF_BYTES, unnameable, type Classification, type NameRules, type SnapshotName } from '../snapshot/names.js';

/** unknown files whose first bytes are read at once */
const SNIFF_CONCURRENCY = 16;
/**
 * Names already found not to be snapshots that one rescan looks at again (oldest look first). A name can turn
 * into a snapshot only by being written or replaced, and the watcher does not report such names, so the
 * rescans are what notice it; bounding them keeps a directory of 80,000 unrelated files from costing an lstat
 * of every one on every rescan. Up to this many such names, each is looked at on every rescan.
 */
export const RECHECKS_PER_RESCAN = 2000;
const HIGH_BYTE = /[\x80-\xff]/;

export interface NamesGateDeps {
  cfg: Pick<Config, 'include' | 'exclude'>;
  log: Logger;
  metrics: Metrics;
  /** a file with an unknown name turned out to be a snapshot, under a name that can be shipped */
  found: (path: string, snap: SnapshotName) => void;
  /** known non-snapshots one rescan looks at again; RECHECKS_PER_RESCAN unless a test says otherwise */
  rechecksPerRescan?: number;
}

export class NamesGate {
  private readonly rules: NameRules;
  /** names that are not snapshots, by fingerprint, so rescans don't re-read them; oldest look first */
  private readonly notSnapshots = new Map<string, string>();
  /** the known non-snapshots the current rescan looks at again (the oldest looks) */
  private recheck = new Set<string>();
  private readonly loggedIgnored = new Set<string>();
  /** names whose bytes are not UTF-8 or that cannot be a key: reported once each */
  private readonly badNames = new Set<string>();
  /** the directory's non-UTF-8 names, from one recent listing */
  private rawNames: { at: number; names: Promise<Map<string, Buffer>> } | undefined;
  private nextListing: Promise<Map<string, Buffer>> | undefined;
  /** unknown names waiting for their first bytes to be read, name → path */
  private readonly sniffQueued = new Map<string, string>();
  private sniffsRunning = 0;
  private closing = false;

  constructor(private readonly d: NamesGateDeps) {
    this.rules = compileRules(d.cfg.include, d.cfg.exclude);
  }

  /** A name that is not a snapshot by its name alone (ignored, or only its content can tell). */
  ignores(name: string): boolean {
    return classify(name, this.rules).kind !== 'snapshot';
  }

  /** What a seen path's name says; an ignored one is logged once, not on every event and rescan. */
  classify(path: string): Classification {
    const name = basename(path);
    const cls = classify(name, this.rules);
    if (cls.kind === 'ignored' && !this.loggedIgnored.has(name)) {
      this.loggedIgnored.add(name);
      this.d.log.debug('not a snapshot, ignored', { file: path, reason: cls.reason });
    }
    return cls;
  }

  /**
   * Unknown names: only the first bytes tell whether they are snapshots (etcdctl with any name, RKE --name).
   * A few at a time, once per name: a directory of 10,000 unrelated files must not open them all at once.
   */
  sniff(path: string): void {
    const name = basename(path);
    if (this.sniffQueued.has(name) || this.badNames.has(name)) return;
    if (this.notSnapshots.has(name) && !this.recheck.has(name)) return;
    this.sniffQueued.set(name, path);
    this.pumpSniffs();
  }

  /** What is remembered about a name that is not a tracked snapshot: dropped once the name is gone. */
  forget(name: string): void {
    this.notSnapshots.delete(name);
    this.loggedIgnored.delete(name);
    this.badNames.delete(name);
  }

  /** A full listing: names no longer there are forgotten, even when their events were dropped. */
  listed(present: ReadonlySet<string>): void {
    for (const m of [this.notSnapshots, this.loggedIgnored, this.badNames]) for (const n of m.keys()) if (!present.has(n)) m.delete(n);
    this.recheck = new Set();
    for (const n of this.notSnapshots.keys()) {
      if (this.recheck.size >= (this.d.rechecksPerRescan ?? RECHECKS_PER_RESCAN)) break;
      this.recheck.add(n);
    }
  }

  /** Resolves once no first-bytes read is queued or running: tests wait on it instead of on a clock. */
  async sniffsDone(): Promise<void> {
    while (this.sniffsRunning > 0 || (this.sniffQueued.size > 0 && !this.closing)) await new Promise((r) => setTimeout(r, 5));
  }

  /** No more sniffs start (shutdown); those running finish on their own. */
  stop(): void {
    this.closing = true;
  }

  /**
   * A name whose bytes are not UTF-8 reaches the agent with U+FFFD in place of the odd bytes, and no file has
   * that name: the snapshot cannot be opened by it. Say so once, with the bytes, instead of "disappeared".
   */
  async checkName(path: string): Promise<boolean> {
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

  /** A snapshot whose name cannot be a key: rejected, said and counted once per name. */
  unnameable(path: string): boolean {
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
    this.recheck.delete(name);
    const known = this.notSnapshots.get(name) === id;
    if (known || !st.isFile() || st.size < 64) {
      // looked at (again): to the back of the line
      this.notSnapshots.delete(name);
      this.notSnapshots.set(name, id);
      return;
    }
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
    this.d.found(path, snap);
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
      // latin1 maps each byte to one character, so the listing is plain strings and only names with a byte
      // above 0x7f become bytes again: a Buffer per entry of a huge directory would cost native memory
      const names = listNames(dir, 'latin1').then(
        (all) => {
          const odd = new Map<string, Buffer>();
          for (const l of all) {
            if (!HIGH_BYTE.test(l)) continue;
            const b = Buffer.from(l, 'latin1');
            if (!isValidUtf8Name(b)) odd.set(b.toString('utf8'), b);
          }
          return odd;
        },
        () => new Map<string, Buffer>(),
      );
      this.rawNames = { at, names };
      this.nextListing = undefined;
      return names;
    });
    return this.nextListing;
  }
}
