// "Newest" is the snapshot's own time, never the upload time (issue 10, item 4). A backlog shipped after an
// outage goes up newest first, so S3's LastModified runs backwards against the snapshots' times, and two
// uploads in one second tie (LastModified has 1 s resolution). Before, `list`, `fetch --latest` and remote
// retention ranked by LastModified: `--latest` returned an older snapshot and retention planned to delete
// the newest. Here the catalog (what all three read) and the remote planner over it, on the memory store.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { planRemote } from '../../agent/retention/remote.js';
import { asRemoteFacts, newestFirst, readCatalog, type CatalogEntry } from '../../agent/store/catalog.js';
import { encodeManifest, formatMtime, manifestKey, META, objectMetadata, type Manifest } from '../../agent/store/layout.js';
import { MemoryStore } from '../support/memory-store.js';

const P = 'etcd-backup/c1/node-a/';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
// every object "uploaded" in the same second, or in the order given: LastModified says nothing useful
const SAME_SECOND = new Date('2024-05-08T12:00:00Z');

/** A snapshot object and its manifest, as the agent writes them, stored at `uploaded`. */
function shipped(store: MemoryStore, name: string, time: Date, uploaded: Date, opts: { mtimeMs?: number; node?: string } = {}): void {
  const body = Buffer.from(`snapshot ${name}`);
  const key = `${P}${name}`;
  const mtimeMs = opts.mtimeMs ?? time.getTime();
  const md = objectMetadata({
    name,
    producer: 'rke2',
    mtimeMs,
    snapshotTime: time,
    format: 'raw',
    node: opts.node ?? 'node-a',
    cluster: 'c1',
    agent: 'test',
    encrypted: false,
  });
  store.seed(key, body, md, uploaded);
  const m: Manifest = {
    manifest: 1,
    key,
    node: opts.node ?? 'node-a',
    cluster: 'c1',
    agent: 'test',
    shippedAt: uploaded.toISOString(),
    snapshot: { name, producer: 'rke2', format: 'raw', time: time.toISOString(), mtimeMs, size: body.length, sha256: sha(name) },
    object: { key, size: body.length, parts: 1, partSize: 8 << 20, integrity: 'sha256' },
  };
  store.seed(manifestKey(key), encodeManifest(m), {}, uploaded);
}

const names = (entries: CatalogEntry[]): string[] => entries.map((e) => e.name);

describe('catalog order: snapshot time, then key', () => {
  it('a backlog shipped newest first after an outage: LastModified runs backwards, the catalog does not', async () => {
    const store = new MemoryStore();
    // producer times in the names, an hour apart; shipped newest first, one second apart
    const hours = [9, 10, 11, 12];
    hours.forEach((h, i) => {
      const t = new Date(Date.UTC(2024, 4, 8, h));
      shipped(store, `etcd-snapshot-node-a-${t.getTime() / 1000}`, t, new Date(SAME_SECOND.getTime() + (hours.length - i) * 1000));
    });
    const { entries } = await readCatalog(store, P);
    expect(entries.map((e) => e.time.getUTCHours())).toEqual([12, 11, 10, 9]);
    // the upload time alone would have called the 09:00 snapshot the newest
    const byUpload = [...entries].sort((a, b) => b.object.lastModified!.getTime() - a.object.lastModified!.getTime());
    expect(byUpload[0]!.time.getUTCHours()).toBe(9);
  });

  it('same-second uploads, listed in any order: one deterministic order by snapshot time, ties by key', async () => {
    const orders: string[][] = [];
    for (const shuffle of [
      [0, 1, 2, 3, 4],
      [4, 2, 0, 3, 1],
      [3, 4, 1, 0, 2],
    ]) {
      const store = new MemoryStore();
      const t = (h: number): Date => new Date(Date.UTC(2024, 4, 8, h));
      const all: [string, Date][] = [
        ['a.db', t(10)],
        ['b.db', t(12)],
        ['c.db', t(12)], // ties with b.db: the larger key first, every time
        ['d.db', t(8)],
        ['e.db', t(11)],
      ];
      for (const i of shuffle) shipped(store, all[i]![0], all[i]![1], SAME_SECOND);
      orders.push(names((await readCatalog(store, P, { concurrency: 3 })).entries));
    }
    expect(orders[0]).toEqual(['c.db', 'b.db', 'e.db', 'a.db', 'd.db']);
    expect(orders[1]).toEqual(orders[0]);
    expect(orders[2]).toEqual(orders[0]);
  });

  it('where the time comes from: manifest, else snapshot-time metadata, else the name, else mtime (rclone seconds or old milliseconds), else LastModified', async () => {
    const store = new MemoryStore();
    const body = Buffer.from('x');
    const legacy = (name: string, md: Record<string, string>): void =>
      store.seed(`${P}${name}`, body, { [META.sha256]: sha(name), [META.node]: 'node-a', [META.cluster]: 'c1', ...md }, new Date('2024-05-09T00:00:00Z'));
    shipped(store, 'manifest.db', new Date('2024-05-01T05:00:00Z'), SAME_SECOND);
    legacy('meta.db', { [META.snapshotTime]: '2024-05-01T04:00:00.000Z' });
    legacy('2024-05-01T03:00:00Z_etcd', {});
    legacy('rclone.db', { [META.mtime]: formatMtime(Date.parse('2024-05-01T02:00:00.250Z')) });
    legacy('millis.db', { [META.mtime]: String(Date.parse('2024-05-01T01:00:00Z')) });
    store.seed(`${P}bare.db`, body, { [META.sha256]: sha('bare') }, new Date('2024-05-01T00:00:00Z'));
    const { entries } = await readCatalog(store, P);
    expect(entries.map((e) => [e.name, e.time.toISOString()])).toEqual([
      ['manifest.db', '2024-05-01T05:00:00.000Z'],
      ['meta.db', '2024-05-01T04:00:00.000Z'],
      ['2024-05-01T03:00:00Z_etcd', '2024-05-01T03:00:00.000Z'],
      ['rclone.db', '2024-05-01T02:00:00.250Z'],
      ['millis.db', '2024-05-01T01:00:00.000Z'],
      ['bare.db', '2024-05-01T00:00:00.000Z'],
    ]);
  });

  it('newestFirst is a total order: antisymmetric, and equal only for the same key', () => {
    const e = (key: string, t: number): CatalogEntry => ({ key, time: new Date(t) }) as CatalogEntry;
    const xs = [e('k1', 5), e('k2', 5), e('k0', 5), e('k3', 9), e('k4', 1)];
    for (const a of xs) for (const b of xs) expect(Math.sign(newestFirst(a, b))).toBe(a === b ? 0 : -Math.sign(newestFirst(b, a)));
    expect([...xs].sort(newestFirst).map((x) => x.key)).toEqual(['k3', 'k2', 'k1', 'k0', 'k4']);
  });
});

describe('remote retention over the catalog: "newest N" by snapshot time', () => {
  it('keep 2 of a backlog shipped newest first: the two oldest snapshots go, not the two uploaded first', async () => {
    const store = new MemoryStore();
    const t = (h: number): Date => new Date(Date.UTC(2024, 4, 8, h));
    // uploaded newest first: 12:00 at +1 s … 09:00 at +4 s; two of them in the same second
    shipped(store, 'etcd-snapshot-node-a-12', t(12), new Date(SAME_SECOND.getTime() + 1000), { mtimeMs: t(12).getTime() });
    shipped(store, 'etcd-snapshot-node-a-11', t(11), new Date(SAME_SECOND.getTime() + 2000));
    shipped(store, 'etcd-snapshot-node-a-10', t(10), new Date(SAME_SECOND.getTime() + 2000));
    shipped(store, 'etcd-snapshot-node-a-09', t(9), new Date(SAME_SECOND.getTime() + 4000));
    const { entries } = await readCatalog(store, P, { head: true });
    const plan = planRemote({
      objects: entries.map(asRemoteFacts),
      prefix: P,
      node: 'node-a',
      cluster: 'c1',
      policy: { keep: 2 },
      now: t(13).getTime(),
      localNames: new Set(),
    });
    expect(plan.delete.map((d) => d.name).sort()).toEqual(['etcd-snapshot-node-a-09', 'etcd-snapshot-node-a-10']);
    expect(plan.keep.find((k) => k.name === 'etcd-snapshot-node-a-12')!.reason).toBe('one of the newest 2 of this node (number 1)');
  });

  it('ties in snapshot time are broken by key, the same way on every pass', () => {
    const obj = (name: string, lastModifiedMs: number) => ({
      key: `${P}${name}`,
      size: 1,
      lastModifiedMs,
      timeMs: 1000,
      metadata: { sha256: sha(name), node: 'node-a', cluster: 'c1', name },
    });
    for (const order of [
      ['x', 'y', 'z'],
      ['z', 'x', 'y'],
      ['y', 'z', 'x'],
    ]) {
      const objects = order.map((n, i) => obj(n, 5000 - i));
      const plan = planRemote({ objects, prefix: P, node: 'node-a', cluster: 'c1', policy: { keep: 1 }, now: 10_000, localNames: new Set() });
      expect(plan.keep.map((k) => k.name)).toEqual(['z']);
    }
  });
});
