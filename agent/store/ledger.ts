// The durable record of what is confirmed in S3. It is a cache of the bucket: if it is lost or
// corrupt, it is rebuilt from this node's listing instead of stopping the agent.
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Store } from './s3.js';

export interface LedgerEntry {
  /** local file name */
  name: string;
  key: string;
  size: number;
  sha256: string;
  /** the local file's mtime when it was shipped (ms since epoch) */
  mtimeMs: number;
  producer: string;
  confirmedAt: string;
}

interface LedgerFile {
  version: 1;
  entries: LedgerEntry[];
}

export type LedgerStatus = 'ok' | 'missing' | 'corrupt';

const FILE = 'ledger.json';

export class Ledger {
  private readonly byKey = new Map<string, LedgerEntry>();
  // name → keys: a rescan looks up every file in the directory
  private readonly byName = new Map<string, Set<string>>();
  private dirty = false;
  private writing: Promise<void> = Promise.resolve();

  private constructor(readonly dir: string) {}

  get path(): string {
    return join(this.dir, FILE);
  }

  /** A ledger that cannot be persisted (unusable state directory): every save fails and is counted. */
  static inMemory(dir: string): Ledger {
    return new Ledger(dir);
  }

  /** Loads the ledger. A corrupt file is moved aside (kept for inspection) and reported, never fatal. */
  static async open(dir: string): Promise<{ ledger: Ledger; status: LedgerStatus; detail?: string }> {
    const ledger = new Ledger(dir);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    let text: string;
    try {
      text = await readFile(ledger.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ledger, status: 'missing' };
      throw e;
    }
    try {
      const parsed = JSON.parse(text) as LedgerFile;
      if (parsed.version !== 1 || !Array.isArray(parsed.entries)) throw new Error('unexpected shape');
      for (const e of parsed.entries) {
        if (typeof e.key !== 'string' || typeof e.sha256 !== 'string' || typeof e.name !== 'string' || typeof e.size !== 'number') throw new Error('bad entry');
        ledger.put(e);
      }
      return { ledger, status: 'ok' };
    } catch (e) {
      const aside = `${ledger.path}.corrupt-${Date.now()}`;
      await rename(ledger.path, aside).catch(() => undefined);
      return { ledger, status: 'corrupt', detail: `${(e as Error).message}; moved to ${aside}` };
    }
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
      if (e.name !== name || (sha256 && e.sha256 !== sha256)) continue;
      if (!best || e.confirmedAt > best.confirmedAt) best = e;
    }
    return best;
  }

  /** The entry recorded for this file's current size and mtime: lets a rescan skip re-reading shipped files. */
  findUnchanged(name: string, size: number, mtimeMs: number): LedgerEntry | undefined {
    for (const e of this.named(name)) if (e.size === size && e.mtimeMs === mtimeMs) return e;
    return undefined;
  }

  newest(): LedgerEntry | undefined {
    let best: LedgerEntry | undefined;
    for (const e of this.byKey.values()) if (!best || e.confirmedAt > best.confirmedAt) best = e;
    return best;
  }

  async record(entry: LedgerEntry): Promise<void> {
    this.put(entry);
    await this.save();
  }

  async forget(key: string): Promise<void> {
    const old = this.byKey.get(key);
    if (!old) return;
    this.byKey.delete(key);
    this.byName.get(old.name)?.delete(key);
    await this.save();
  }

  async replaceAll(entries: LedgerEntry[]): Promise<void> {
    this.byKey.clear();
    this.byName.clear();
    for (const e of entries) this.put(e);
    await this.save();
  }

  /** True when the last write failed and the file on disk lags behind memory. */
  get unsaved(): boolean {
    return this.dirty;
  }

  /** Atomic replace: temp file, fsync, rename, fsync the directory. Writes are serialised. */
  save(): Promise<void> {
    this.dirty = true;
    const run = async (): Promise<void> => {
      const body = JSON.stringify({ version: 1, entries: this.entries() } satisfies LedgerFile, null, 1);
      const tmp = `${this.path}.tmp-${process.pid}`;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(body);
        await fh.sync();
      } catch (e) {
        await fh.close().catch(() => undefined);
        await unlink(tmp).catch(() => undefined);
        throw e;
      }
      await fh.close();
      await rename(tmp, this.path);
      const dh = await open(this.dir, 'r');
      await dh.sync().catch(() => undefined);
      await dh.close();
      this.dirty = false;
    };
    this.writing = this.writing.then(run, run);
    return this.writing;
  }
}

/** Metadata keys the agent writes on every object (S3 user metadata is lower-case ASCII). */
export const META = {
  sha256: 'sha256',
  name: 'name',
  producer: 'producer',
  mtime: 'mtime',
  node: 'node',
  cluster: 'cluster',
  agent: 'agent',
} as const;

/** Rebuilds ledger entries from this node's objects; objects without our sha256 metadata are not ours. */
export async function entriesFromStore(store: Store, prefix: string, concurrency = 8): Promise<LedgerEntry[]> {
  const keys: { key: string; lastModified?: Date }[] = [];
  for await (const o of store.list(prefix)) keys.push(o);
  const out: LedgerEntry[] = [];
  let i = 0;
  const worker = async (): Promise<void> => {
    while (i < keys.length) {
      const o = keys[i++]!;
      const h = await store.head(o.key);
      const md = h?.metadata;
      if (!h || !md?.[META.sha256] || !/^[0-9a-f]{64}$/.test(md[META.sha256]!)) continue;
      const rawName = md[META.name];
      let name = o.key.slice(o.key.lastIndexOf('/') + 1);
      if (rawName) {
        try {
          name = decodeURIComponent(rawName);
        } catch {
          /* keep the key's name */
        }
      }
      out.push({
        name,
        key: o.key,
        size: h.size,
        sha256: md[META.sha256]!,
        mtimeMs: Number(md[META.mtime]) || 0,
        producer: md[META.producer] ?? 'unknown',
        confirmedAt: (h.lastModified ?? o.lastModified ?? new Date(0)).toISOString(),
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, worker));
  return out;
}
