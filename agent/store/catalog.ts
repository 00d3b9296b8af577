// What the bucket holds under a prefix, as snapshots: each object paired with its manifest and signature,
// read the same way by `list`, `fetch --latest`, `verify`, `status`, retention, the ledger rebuild and the
// start-up freshness seed. "Newest" everywhere means the snapshot's own time (the producer's in its name,
// else the file's mtime at upload), never the upload time, with ties broken by key.
import { timeFromName } from '../snapshot/names.js';
import { isSha256, keyRole, manifestKey, META, nameOf, parseManifest, parseMtime, signatureKey, type Manifest } from './layout.js';
import type { ObjectInfo, Store } from './store.js';

export interface CatalogEntry {
  /** the snapshot key (without `.age`) */
  key: string;
  /** the object as listed (and, when asked or needed, as HeadObject shows it) */
  object: ObjectInfo;
  encrypted: boolean;
  manifest?: Manifest;
  /** a manifest was listed but could not be read as one */
  manifestProblem?: string;
  hasSignature: boolean;
  name: string;
  /** of the plaintext snapshot; known for a complete backup */
  sha256?: string;
  /** plaintext size when known, else the object's */
  size: number;
  time: Date;
  node?: string;
  cluster?: string;
  producer?: string;
  mtimeMs?: number;
  /** a confirmed backup: its manifest, or the `sha256` metadata of an agent before manifests */
  complete: boolean;
}

export interface Catalog {
  /** newest first */
  entries: CatalogEntry[];
  /** manifests and signatures whose object is gone (a deletion that stopped halfway) */
  orphans: ObjectInfo[];
  /** every key listed, for the ledger's reconcile */
  listed: Set<string>;
}

export interface CatalogOptions {
  /** HeadObject every snapshot object (retention: Object Lock dates, metadata of objects without manifest) */
  head?: boolean;
  concurrency?: number;
}

/** Reads the manifest at `key`; undefined when there is none or it is not one of ours. */
export async function readManifest(store: Store, key: string): Promise<{ manifest: Manifest } | { problem: string } | undefined> {
  const got = await store.get(key);
  if (!got) return undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of got.body) {
    n += c.length;
    // a manifest is a few hundred bytes; anything huge is not ours
    if (n > 1 << 20) return { problem: 'larger than 1 MiB' };
    chunks.push(Buffer.from(c));
  }
  return parseManifest(Buffer.concat(chunks).toString('utf8'));
}

export const newestFirst = (a: CatalogEntry, b: CatalogEntry): number => b.time.getTime() - a.time.getTime() || (a.key < b.key ? 1 : a.key > b.key ? -1 : 0);

/** Runs fn over items, at most `width` at a time. */
export async function eachLimited<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export async function readCatalog(store: Store, prefix: string, opts: CatalogOptions = {}): Promise<Catalog> {
  const objects = new Map<string, { info: ObjectInfo; encrypted: boolean }>();
  const manifests = new Map<string, ObjectInfo>();
  const sigs = new Map<string, ObjectInfo>();
  const listed = new Set<string>();
  for await (const o of store.list(prefix)) {
    listed.add(o.key);
    const r = keyRole(o.key);
    if (r.role === 'snapshot') objects.set(r.key, { info: o, encrypted: r.encrypted });
    else if (r.role === 'manifest') manifests.set(r.key, o);
    else if (r.role === 'signature') sigs.set(r.key, o);
  }
  const entries: CatalogEntry[] = [];
  await eachLimited([...objects], opts.concurrency ?? 8, async ([key, { info, encrypted }]) => {
    let object = info;
    let manifest: Manifest | undefined;
    let manifestProblem: string | undefined;
    if (manifests.has(key)) {
      const m = await readManifest(store, manifestKey(key));
      if (m && 'manifest' in m && m.manifest.object.key === info.key) manifest = m.manifest;
      else manifestProblem = m && 'problem' in m ? m.problem : m ? `describes ${m.manifest.object.key}, not ${info.key}` : 'vanished';
    }
    if (opts.head || !manifest) {
      const h = await store.head(info.key);
      if (!h) return; // deleted since the listing
      object = { ...info, ...h, lastModified: h.lastModified ?? info.lastModified };
    }
    entries.push(describe(key, object, encrypted, manifest, manifestProblem, sigs.has(key)));
  });
  const orphans = [...manifests].filter(([k]) => !objects.has(k)).map(([, o]) => o);
  for (const [k, o] of sigs) if (!objects.has(k)) orphans.push(o);
  return { entries: entries.sort(newestFirst), orphans, listed };
}

function describe(
  key: string,
  object: ObjectInfo,
  encrypted: boolean,
  manifest: Manifest | undefined,
  manifestProblem: string | undefined,
  hasSignature: boolean,
): CatalogEntry {
  const md = object.metadata ?? {};
  const name = manifest?.snapshot.name ?? nameOf(key, md);
  const mtimeMs = manifest?.snapshot.mtimeMs ?? parseMtime(md[META.mtime]);
  const mdTime = md[META.snapshotTime] ? new Date(md[META.snapshotTime]!) : undefined;
  const time =
    (manifest && new Date(manifest.snapshot.time)) ||
    (mdTime && !Number.isNaN(mdTime.getTime()) ? mdTime : undefined) ||
    timeFromName(name) ||
    (mtimeMs !== undefined ? new Date(mtimeMs) : undefined) ||
    object.lastModified ||
    new Date(0);
  const legacySha = isSha256(md[META.sha256]) ? md[META.sha256] : undefined;
  const sha256 = manifest?.snapshot.sha256 ?? legacySha;
  return {
    key,
    object,
    encrypted,
    ...(manifest ? { manifest } : {}),
    ...(manifestProblem ? { manifestProblem } : {}),
    hasSignature,
    name,
    ...(sha256 ? { sha256 } : {}),
    size: manifest?.snapshot.size ?? object.size,
    time,
    node: manifest?.node ?? md[META.node],
    cluster: manifest?.cluster ?? md[META.cluster],
    producer: manifest?.snapshot.producer ?? md[META.producer],
    ...(mtimeMs !== undefined ? { mtimeMs } : {}),
    complete: sha256 !== undefined,
  };
}

/** The objects that make up one snapshot in S3: the object, its signature, its manifest (deleted in this order). */
export function companions(e: CatalogEntry): string[] {
  return [e.object.key, ...(e.hasSignature ? [signatureKey(e.key)] : []), ...(e.manifest || e.manifestProblem ? [manifestKey(e.key)] : [])];
}

/** What S3 holds for one confirmed upload, as HeadObject and the manifest say: null when the object is gone. */
export async function confirmCopy(store: Store, key: string, storedKey = key): Promise<{ size: number; sha256?: string } | null> {
  const h = await store.head(storedKey);
  if (!h) return null;
  const m = await readManifest(store, manifestKey(key));
  if (m && 'manifest' in m && m.manifest.object.key === storedKey && m.manifest.object.size === h.size)
    return { size: m.manifest.snapshot.size, sha256: m.manifest.snapshot.sha256 };
  const legacy = h.metadata?.[META.sha256];
  return { size: h.size, ...(isSha256(legacy) ? { sha256: legacy } : {}) };
}

/** A catalog entry in the shape the remote planner reads (its ownership facts as metadata). */
export function asRemoteFacts(e: CatalogEntry): {
  key: string;
  size: number;
  lastModifiedMs?: number;
  timeMs: number;
  retainUntilMs?: number;
  metadata: Record<string, string>;
} {
  return {
    key: e.object.key,
    size: e.object.size,
    ...(e.object.lastModified ? { lastModifiedMs: e.object.lastModified.getTime() } : {}),
    timeMs: e.time.getTime(),
    ...(e.object.retainUntil ? { retainUntilMs: e.object.retainUntil.getTime() } : {}),
    metadata: {
      [META.name]: encodeURIComponent(e.name),
      ...(e.sha256 ? { [META.sha256]: e.sha256 } : {}),
      ...(e.node ? { [META.node]: e.node } : {}),
      ...(e.cluster ? { [META.cluster]: e.cluster } : {}),
    },
  };
}
