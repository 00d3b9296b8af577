// The restore drill's parts on the in-memory store: which objects a drill picks, verifyEntry on objects the
// real Uploader wrote from real etcd snapshots (raw, and zipped by Go as rke-tools and k3s zip them), on
// damaged copies of them, with `--restore` through Debian's etcdctl and without any etcd tool on PATH, and
// the scheduler's run: one at a time, inside the shipper's exclusive turn, with its metrics and log lines.
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { fingerprint, openRegular } from '../../agent/base/files.js';
import type { Config } from '../../agent/config/keys.js';
import { parseConfig } from '../../agent/config/parse.js';
import { generateAgeIdentity, parseIdentities, type AgeIdentity } from '../../agent/crypto/age.js';
import { sealingFrom, type Sealing } from '../../agent/crypto/seal.js';
import { DrillScheduler, pickDrill } from '../../agent/drill/scheduler.js';
import { plainReader } from '../../agent/drill/read.js';
import { DRILL_STATE_FILE } from '../../agent/drill/state.js';
import { verifyEntry } from '../../agent/drill/verify.js';
import { createLogger } from '../../agent/ops/log.js';
import { Metrics } from '../../agent/ops/metrics.js';
import { Uploader, type ShipOutcome } from '../../agent/ship/upload.js';
import { deepCheck, type DeepCheck } from '../../agent/snapshot/deep.js';
import { formatFromName } from '../../agent/snapshot/format.js';
import { readCatalog, type CatalogEntry } from '../../agent/store/catalog.js';
import { encodeManifest, manifestKey, nodePrefix, objectKey, type Manifest } from '../../agent/store/layout.js';
import { readLive } from '../support/bbolt-db.js';
import { goZip } from '../support/go-zip.js';
import { MemoryStore, s3Error } from '../support/memory-store.js';
import { fixturePath, sha256, withTrailer } from '../support/snapshots.js';

let dir: string;
let cfg: Config;
const status: Record<string, { revision: number; totalKey: number; hash: number }> = {};
const files: Record<string, string> = {};
let zeroedPage = 0;

function etcdctlStatus(file: string): { revision: number; totalKey: number; hash: number } {
  const s = JSON.parse(
    execFileSync('etcdctl', ['snapshot', 'status', '-w', 'json', file], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }),
  ) as { revision: number; totalKey: number; hash: number };
  return { revision: s.revision, totalKey: s.totalKey, hash: s.hash };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'drill-test-'));
  cfg = parseConfig(
    stringify({ cluster: 'c1', node: 'node-a', snapshotDir: join(dir, 'snaps'), stateDir: join(dir, 'state'), s3: { bucket: 'backups' } }),
    'test',
    {},
  );
  for (const f of ['etcd-small.db', 'etcd-medium.db']) {
    files[f] = fixturePath(f);
    status[f] = etcdctlStatus(files[f]);
  }
  // the producers' own zips of real snapshots: rke-tools' `/backup/<name>` entry, k3s' single `<name>`
  files['rke.zip'] = join(dir, '2024-05-01T12:00:00Z_etcd.zip');
  await goZip('rke', files['etcd-medium.db']!, files['rke.zip'], { name: '2024-05-01T12:00:00Z_etcd' });
  files['k3s.zip'] = join(dir, 'etcd-snapshot-node-a-1714564800.zip');
  await goZip('k3s', files['etcd-small.db']!, files['k3s.zip'], { name: 'etcd-snapshot-node-a-1714564800' });
  // the body of a real snapshot damaged where only the page walk sees it: a live leaf page of the `key`
  // bucket zeroed, and the SHA-256 trailer recomputed over the damaged body (a producer bug, or tampering)
  const medium = await readFile(files['etcd-medium.db']!);
  const body = Buffer.from(medium.subarray(0, medium.length - 32));
  const live = readLive(body);
  zeroedPage = [...live.live.values()].filter((p) => p.bucket === 'key' && p.kind === 'leaf' && p.count >= 2)[2]!.pgid;
  body.fill(0, zeroedPage * live.ps, (zeroedPage + 1) * live.ps);
  files['damaged.db'] = join(dir, 'damaged.db');
  await writeFile(files['damaged.db'], withTrailer(body));
  files['damaged.zip'] = join(dir, '2024-05-02T12:00:00Z_etcd.zip');
  await goZip('rke', files['damaged.db'], files['damaged.zip'], { name: '2024-05-02T12:00:00Z_etcd' });
}, 120_000);

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let clock = Date.parse('2024-06-01T00:00:00Z');

/** Ships `path` as `name` with the real Uploader; each call's snapshot is an hour newer than the last. */
async function ship(
  store: MemoryStore,
  path: string,
  name: string,
  o: { deep?: DeepCheck; sealing?: Sealing; partSize?: number; time?: Date } = {},
): Promise<ShipOutcome> {
  const { fh, st } = await openRegular(path);
  clock += 3600_000;
  try {
    return await new Uploader(store).ship(
      {
        fh,
        fp: fingerprint(st),
        name,
        producer: name.endsWith('.zip') ? 'rke1' : 'etcdctl',
        snapshotTime: o.time ?? new Date(clock),
        key: objectKey(cfg, name),
        node: cfg.node,
        cluster: cfg.cluster,
        agent: 'test',
        format: formatFromName(name),
      },
      {
        timeoutMs: 30_000,
        partSize: o.partSize ?? 8 << 20,
        queueSize: 2,
        maxParts: 10_000,
        integrity: 'sha256',
        ...(o.deep ? { deep: o.deep } : {}),
        ...(o.sealing ? { sealing: o.sealing } : {}),
      },
    );
  } finally {
    await fh.close();
  }
}

async function entry(store: MemoryStore, name: string): Promise<CatalogEntry> {
  const e = (await readCatalog(store, nodePrefix(cfg))).entries.find((x) => x.name === name);
  if (!e) throw new Error(`${name} is not in the store`);
  return e;
}

async function shipped(name: string, path: string, o: Parameters<typeof ship>[3] = {}): Promise<{ store: MemoryStore; e: CatalogEntry }> {
  const store = new MemoryStore();
  const out = await ship(store, path, name, o);
  expect(out.kind).toBe('shipped');
  return { store, e: await entry(store, name) };
}

function manifestOf(store: MemoryStore, e: CatalogEntry): Manifest {
  return JSON.parse(store.objects.get(manifestKey(e.key))!.body.toString('utf8')) as Manifest;
}

function rewriteManifest(store: MemoryStore, e: CatalogEntry, fn: (m: Manifest) => void): void {
  const m = manifestOf(store, e);
  fn(m);
  store.objects.get(manifestKey(e.key))!.body = encodeManifest(m);
}

const tempDirsLeft = async (): Promise<string[]> => (await readdir(tmpdir())).filter((n) => n.startsWith('etcd-backup-verify-'));

const entryAt = (key: string, node: string, cluster: string, t: number, complete = true): CatalogEntry => ({
  key,
  object: { key, size: 100 },
  encrypted: false,
  hasSignature: false,
  name: key.slice(key.lastIndexOf('/') + 1),
  size: 100,
  time: new Date(t),
  node,
  cluster,
  complete,
});

describe('pickDrill', () => {
  // newest first, as readCatalog returns them
  const entries = [
    entryAt('p/c1/node-a/uploading', 'node-a', 'c1', 9000, false),
    entryAt('p/c1/node-b/newest-of-b', 'node-b', 'c1', 8000),
    entryAt('p/c1/node-a/n5', 'node-a', 'c1', 7000),
    entryAt('p/c2/node-a/other-cluster', 'node-a', 'c2', 6500),
    entryAt('p/c1/node-a/n4', 'node-a', 'c1', 6000),
    entryAt('p/c1/node-a/n3', 'node-a', 'c1', 5000),
    entryAt('p/c1/node-a/n2', 'node-a', 'c1', 4000),
    entryAt('p/c1/node-a/n1', 'node-a', 'c1', 3000),
  ];
  const names = (es: CatalogEntry[]): string[] => es.map((e) => e.name);

  it("takes this node's newest confirmed backup, never another node's, another cluster's or an unconfirmed one", () => {
    expect(names(pickDrill(entries, 'node-a', 'c1', 0, Math.random))).toEqual(['n5']);
    expect(names(pickDrill(entries, 'node-b', 'c1', 3, Math.random))).toEqual(['newest-of-b']);
    expect(names(pickDrill(entries, 'node-a', 'c2', 0, Math.random))).toEqual(['other-cluster']);
    expect(pickDrill(entries, 'node-z', 'c1', 2, Math.random)).toEqual([]);
    expect(pickDrill([], 'node-a', 'c1', 2, Math.random)).toEqual([]);
  });

  it('adds `sample` distinct older ones chosen by the random source, and all of them when fewer exist', () => {
    expect(names(pickDrill(entries, 'node-a', 'c1', 2, () => 0))).toEqual(['n5', 'n4', 'n3']);
    expect(names(pickDrill(entries, 'node-a', 'c1', 2, () => 0.999))).toEqual(['n5', 'n1', 'n2']);
    const all = pickDrill(entries, 'node-a', 'c1', 10, Math.random);
    expect(names(all)[0]).toBe('n5');
    expect(names(all).sort()).toEqual(['n1', 'n2', 'n3', 'n4', 'n5']);
  });

  it('does not change the list it is given', () => {
    const copy = [...entries];
    pickDrill(entries, 'node-a', 'c1', 3, Math.random);
    expect(entries).toEqual(copy);
  });
});

describe('verifyEntry on objects the Uploader shipped', () => {
  it.each([
    ['etcd-small.db', 'etcd-small.db', 'etcd-small.db', 'raw'],
    ['etcd-medium.db', 'etcd-medium.db', 'etcd-medium.db', 'raw'],
    ['rke.zip', '2024-05-01T12:00:00Z_etcd.zip', 'etcd-medium.db', 'zip'],
    ['k3s.zip', 'etcd-snapshot-node-a-1714564800.zip', 'etcd-small.db', 'zip'],
  ])('%s: sound, with the revision, keys and hash `etcdctl snapshot status` prints', async (file, name, raw, format) => {
    const { store, e } = await shipped(name, files[file]!, { deep: deepCheck });
    const r = await verifyEntry(store, e);
    expect(r, r.detail).toMatchObject({ ok: true, depth: 'deep', key: e.object.key });
    expect(r.detail).toContain(`${format}`);
    expect(r.detail).toContain('every bbolt page checked');
    expect({ revision: r.db?.revision, totalKey: r.db?.keys, hash: r.db?.hash }).toEqual(status[raw]);
    // the manifest the upload wrote carries the same facts
    expect(manifestOf(store, e).snapshot.db).toMatchObject({ revision: status[raw]!.revision, keys: status[raw]!.totalKey });
  });

  it('a body damaged with its trailer recomputed, shipped without the before-upload check: the deep check says which page', async () => {
    const { store, e } = await shipped('damaged.db', files['damaged.db']!);
    const r = await verifyEntry(store, e);
    expect(r).toMatchObject({ ok: false, depth: 'deep', reason: 'corrupt' });
    expect(r.detail).toMatch(
      new RegExp(`^corrupt: bbolt pages: page ${zeroedPage} \\(element \\d+ of branch page \\d+, bucket "key"\\): the page header is all zeros$`),
    );
  });

  it('the same damage inside an RKE zip: the zip is sound, the snapshot in it is not', async () => {
    const { store, e } = await shipped('2024-05-02T12:00:00Z_etcd.zip', files['damaged.zip']!);
    const r = await verifyEntry(store, e);
    expect(r).toMatchObject({ ok: false, reason: 'corrupt' });
    expect(r.detail).toContain(`page ${zeroedPage} `);
    expect(r.detail).toContain('all zeros');
  });

  it('with the before-upload deep check the damaged snapshot never becomes an object: its multipart upload is aborted', async () => {
    const store = new MemoryStore();
    // 64 KiB parts: the damage is found only at the end, after parts went out
    const out = await ship(store, files['damaged.db']!, 'damaged.db', { deep: deepCheck, partSize: 64 * 1024 });
    expect(out.kind).toBe('rejected');
    if (out.kind !== 'rejected') return;
    expect(out.verdict.reason).toBe('corrupt');
    expect(out.verdict.detail).toContain(`page ${zeroedPage} `);
    const ops = store.calls.map((c) => c.op);
    expect(ops).toContain('createUpload');
    expect(ops.filter((o) => o === 'uploadPart').length).toBeGreaterThan(1);
    expect(ops).toContain('abortUpload');
    expect(ops).not.toContain('completeUpload');
    expect(ops).not.toContain('putObject');
    expect(store.objects.size).toBe(0);
    expect(store.uploads.size).toBe(0);
  });

  it('an object replaced by a damaged copy whose manifest was rewritten to match: only the deep check catches it', async () => {
    const { store, e } = await shipped('etcd-medium.db', files['etcd-medium.db']!);
    const damaged = await readFile(files['damaged.db']!);
    store.objects.get(e.object.key)!.body = damaged;
    rewriteManifest(store, e, (m) => {
      m.snapshot.sha256 = sha256(damaged);
    });
    const r = await verifyEntry(store, await entry(store, 'etcd-medium.db'));
    expect(r).toMatchObject({ ok: false, reason: 'corrupt' });
    expect(r.detail).toContain('all zeros');
  });

  it('an object replaced by a damaged copy (manifest untouched): its sha256 differs from the one shipped', async () => {
    const { store, e } = await shipped('etcd-medium.db', files['etcd-medium.db']!);
    const damaged = await readFile(files['damaged.db']!);
    store.objects.get(e.object.key)!.body = damaged;
    const r = await verifyEntry(store, e);
    expect(r).toMatchObject({ ok: false, reason: 'hash' });
    expect(r.detail).toBe(`${e.object.key}: the bytes read do not match the recorded sha256 (${sha256(damaged)} != ${e.sha256})`);
  });

  it("a manifest whose sha256 is not the object's", async () => {
    const { store, e } = await shipped('etcd-small.db', files['etcd-small.db']!);
    rewriteManifest(store, e, (m) => {
      m.snapshot.sha256 = 'ab'.repeat(32);
    });
    const r = await verifyEntry(store, await entry(store, 'etcd-small.db'));
    expect(r).toMatchObject({ ok: false, reason: 'hash' });
    expect(r.detail).toContain(`do not match the recorded sha256 (${e.sha256} != ${'ab'.repeat(32)})`);
  });

  it.each([
    ['at a page boundary', 64 * 4096],
    ['mid-page', 64 * 4096 + 1000],
    ['by its trailer only', 483_360 - 32],
  ])('an object truncated %s', async (_what, keep) => {
    const { store, e } = await shipped('etcd-medium.db', files['etcd-medium.db']!);
    const obj = store.objects.get(e.object.key)!;
    obj.body = obj.body.subarray(0, keep);
    const calls = store.calls.length;
    const r = await verifyEntry(store, await entry(store, 'etcd-medium.db'));
    expect(r).toMatchObject({ ok: false, reason: 'size' });
    expect(r.detail).toBe(`${e.object.key} holds ${keep} bytes, its manifest says 483360: cut short or replaced in S3`);
    // told from the listing: the object was not read
    expect(store.calls.slice(calls).filter((c) => c.op === 'get' && c.key === e.object.key)).toEqual([]);
  });

  it('an object deleted after the listing: missing, not a decryption problem', async () => {
    const { store, e } = await shipped('etcd-small.db', files['etcd-small.db']!);
    store.objects.delete(e.object.key);
    const r = await verifyEntry(store, e);
    expect(r).toMatchObject({ ok: false, reason: 'missing' });
    expect(r.detail).toBe(`${e.object.key} is gone from S3`);
  });

  it('an encrypted object without the identity: its stored bytes against the part checksums; a changed byte names its part', async () => {
    const { identity, recipient } = generateAgeIdentity();
    const sealing = sealingFrom({ encryption: { recipients: [recipient] }, signing: {} })!;
    const { store, e } = await shipped('etcd-medium.db', files['etcd-medium.db']!, { sealing });
    expect(e.encrypted).toBe(true);
    const good = await verifyEntry(store, e);
    expect(good).toMatchObject({ ok: true, depth: 'stored' });
    expect(good.detail).toMatch(/^stored bytes intact: all 1 part checksums match/);
    const ids: AgeIdentity[] = parseIdentities(identity, 'test');
    const deep = await verifyEntry(store, e, { identities: ids });
    expect(deep).toMatchObject({ ok: true, depth: 'deep' });
    expect(deep.db?.revision).toBe(status['etcd-medium.db']!.revision);
    const obj = store.objects.get(e.object.key)!;
    obj.body = Buffer.from(obj.body);
    obj.body[3 * 65_600]! ^= 1;
    const bad = await verifyEntry(store, e);
    expect(bad).toMatchObject({ ok: false, depth: 'stored', reason: 'hash' });
    expect(bad.detail).toMatch(/^part 1 \(stored bytes \d+…\d+\) differs from what the server verified at upload$/);
    const badDeep = await verifyEntry(store, e, { identities: ids });
    expect(badDeep).toMatchObject({ ok: false, reason: 'decrypt' });
  });
});

describe('an age-encrypted object read with its identity', () => {
  it('any plaintext range, across chunk boundaries, equals the snapshot; a changed chunk is refused', async () => {
    const { identity, recipient } = generateAgeIdentity();
    const sealing = sealingFrom({ encryption: { recipients: [recipient] }, signing: {} })!;
    const { store, e } = await shipped('etcd-medium.db', files['etcd-medium.db']!, { sealing });
    const plain = await readFile(files['etcd-medium.db']!);
    const reader = await plainReader(store, e, parseIdentities(identity, 'test'));
    expect(reader.size).toBe(plain.length);
    const C = 64 * 1024;
    for (const [pos, len] of [
      [0, 10],
      [C - 5, 10],
      [3 * C - 1, C + 2],
      [plain.length - 100, 200],
      [plain.length - 32, 32],
      [0, plain.length],
      [plain.length, 5],
    ] as const) {
      expect((await reader.read(pos, len)).equals(plain.subarray(pos, pos + len)), `${pos}+${len}`).toBe(true);
    }
    const obj = store.objects.get(e.object.key)!;
    obj.body = Buffer.from(obj.body);
    obj.body[obj.body.length - 100]! ^= 1;
    await expect(reader.read(plain.length - 10, 10)).rejects.toThrow(/^chunk 7 failed authentication/);
  });

  it('an encrypted RKE zip: its directory read at the end through the age chunks, then every page checked', async () => {
    const { identity, recipient } = generateAgeIdentity();
    const sealing = sealingFrom({ encryption: { recipients: [recipient] }, signing: {} })!;
    const { store, e } = await shipped('2024-05-01T12:00:00Z_etcd.zip', files['rke.zip']!, { sealing });
    const r = await verifyEntry(store, e, { identities: parseIdentities(identity, 'test') });
    expect(r, r.detail).toMatchObject({
      ok: true,
      depth: 'deep',
      db: { revision: status['etcd-medium.db']!.revision, keys: status['etcd-medium.db']!.totalKey },
    });
    const wrong = await verifyEntry(store, e, { identities: parseIdentities(generateAgeIdentity().identity, 'test') });
    expect(wrong).toMatchObject({ ok: false, reason: 'decrypt' });
  });
});

describe('verifyEntry --restore', () => {
  it("restores with Debian's etcdctl in a temp dir and removes everything it wrote", async () => {
    const before = await tempDirsLeft();
    for (const [file, name] of [
      ['etcd-small.db', 'etcd-small.db'],
      ['rke.zip', '2024-05-01T12:00:00Z_etcd.zip'],
    ] as const) {
      const { store, e } = await shipped(name, files[file]!);
      const r = await verifyEntry(store, e, { restore: true });
      expect(r, r.detail).toMatchObject({ ok: true, restore: { ok: true } });
      // Debian ships etcdctl 3.4 and no etcdutl
      expect(r.restore?.tool).toMatch(/^etcd(ctl|utl) snapshot restore$/);
    }
    expect(await tempDirsLeft()).toEqual(before);
  });

  it('with neither etcdutl nor etcdctl on PATH: a restore failure that says so, and nothing left behind', async () => {
    const { store, e } = await shipped('etcd-small.db', files['etcd-small.db']!);
    const bin = join(dir, 'bin-without-etcd');
    await mkdir(bin, { recursive: true });
    // a PATH with everything else a host has, but no etcd tool
    await symlink('/bin/sh', join(bin, 'sh')).catch(() => undefined);
    const before = await tempDirsLeft();
    const path = process.env.PATH;
    process.env.PATH = bin;
    try {
      const r = await verifyEntry(store, e, { restore: true });
      expect(r).toMatchObject({ ok: false, reason: 'restore', restore: { ok: false, tool: 'etcdutl/etcdctl' } });
      expect(r.detail).toBe('etcdutl/etcdctl: neither etcdutl nor etcdctl is on PATH');
      // the deep check still ran and found the snapshot sound
      expect(r.db?.revision).toBe(status['etcd-small.db']!.revision);
    } finally {
      process.env.PATH = path;
    }
    expect(await tempDirsLeft()).toEqual(before);
  });

  it('a snapshot the deep check refuses is not handed to etcdctl', async () => {
    const { store, e } = await shipped('damaged.db', files['damaged.db']!);
    const r = await verifyEntry(store, e, { restore: true });
    expect(r).toMatchObject({ ok: false, reason: 'corrupt' });
    expect(r.restore).toBeUndefined();
  });
});

/** A logger whose JSON lines land in an array. */
function capture(): { log: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger('debug', stream), lines };
}

async function value(m: Metrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = m.registry.getSingleMetric(name);
  const got = await metric?.get();
  return got?.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20));

describe('DrillScheduler', () => {
  function drill(store: MemoryStore, o: { sample?: number; exclusive?: <T>(fn: () => Promise<T>) => Promise<T> } = {}) {
    const { log, lines } = capture();
    const metrics = new Metrics('0.0.0-test', { defaultMetrics: false });
    const c: Config = { ...cfg, verify: { ...cfg.verify, sample: o.sample ?? 0 } };
    const d = new DrillScheduler({ cfg: c, store, log, metrics, exclusive: o.exclusive ?? ((fn) => fn()), random: () => 0 });
    return { d, lines, metrics };
  }

  it('a good newest object and a damaged older one: metrics and log lines say which is which', async () => {
    const store = new MemoryStore();
    const older = new Date('2024-07-01T00:00:00Z');
    const newest = new Date('2024-07-02T00:00:00Z');
    expect((await ship(store, files['damaged.db']!, 'older.db', { time: older })).kind).toBe('shipped');
    expect((await ship(store, files['etcd-medium.db']!, 'newest.db', { time: newest })).kind).toBe('shipped');
    const { d, lines, metrics } = drill(store, { sample: 1 });
    const reports = await d.runNow('test');
    expect(reports.map((r) => [r.key.split('/').pop(), r.ok, r.reason])).toEqual([
      ['newest.db', true, undefined],
      ['older.db', false, 'corrupt'],
    ]);
    expect(await value(metrics, 'etcdbackup_last_verified_timestamp_seconds')).toBe(newest.getTime() / 1000);
    // revision and keys describe what was shipped (the upload's deep check), not what a drill read
    expect(await value(metrics, 'etcdbackup_last_snapshot_revision')).toBe(0);
    expect(await value(metrics, 'etcdbackup_verify_failures_total', { reason: 'corrupt' })).toBe(1);
    expect(await value(metrics, 'etcdbackup_verify_failures_total', { reason: 'hash' })).toBe(0);
    expect(Math.abs(Date.now() / 1000 - (await value(metrics, 'etcdbackup_last_verify_run_timestamp_seconds'))!)).toBeLessThan(10);
    const ok = lines.find((l) => l.msg === 'restore drill: backup verified')!;
    expect(ok).toMatchObject({
      key: objectKey(cfg, 'newest.db'),
      depth: 'deep',
      revision: status['etcd-medium.db']!.revision,
      keys: status['etcd-medium.db']!.totalKey,
      snapshotTime: newest.toISOString(),
    });
    const bad = lines.find((l) => l.msg === 'restore drill: backup FAILED verification; it would not restore')!;
    expect(bad).toMatchObject({ level: 'error', key: objectKey(cfg, 'older.db'), reason: 'corrupt', snapshotTime: older.toISOString() });
    expect(String(bad.detail)).toContain('all zeros');
  });

  it('a damaged newest object does not move the verified time; an older sound one does', async () => {
    const store = new MemoryStore();
    expect((await ship(store, files['etcd-small.db']!, 'older.db', { time: new Date('2024-07-01T00:00:00Z') })).kind).toBe('shipped');
    expect((await ship(store, files['damaged.db']!, 'newest.db', { time: new Date('2024-07-02T00:00:00Z') })).kind).toBe('shipped');
    const { d, metrics } = drill(store, { sample: 1 });
    await d.runNow('test');
    expect(await value(metrics, 'etcdbackup_verify_failures_total', { reason: 'corrupt' })).toBe(1);
    // the older object passed: it is the newest verified one
    expect(await value(metrics, 'etcdbackup_last_verified_timestamp_seconds')).toBe(Date.parse('2024-07-01T00:00:00Z') / 1000);
    expect(await value(metrics, 'etcdbackup_last_verify_failed_objects')).toBe(1);
  });

  it('one drill at a time: a second runNow while one runs joins it', async () => {
    const store = new MemoryStore();
    await ship(store, files['etcd-small.db']!, 'a.db');
    const { d } = drill(store);
    const [a, b] = [d.runNow('one'), d.runNow('two')];
    expect(a).toBe(b);
    expect(await a).toHaveLength(1);
    // and after it ended, a new run starts
    const c = d.runNow('three');
    expect(c).not.toBe(a);
    await c;
  });

  it('reads nothing from S3 until the shipper gives it the turn', async () => {
    const store = new MemoryStore();
    await ship(store, files['etcd-small.db']!, 'a.db');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let turns = 0;
    const { d, lines } = drill(store, {
      exclusive: async (fn) => {
        await gate;
        turns++;
        return fn();
      },
    });
    const before = store.calls.length;
    const run = d.runNow('test');
    await settle();
    expect(store.calls.length).toBe(before);
    expect(lines.some((l) => String(l.msg).startsWith('restore drill:'))).toBe(false);
    release();
    expect(await run).toHaveLength(1);
    expect(turns).toBe(1);
    expect(store.calls.length).toBeGreaterThan(before);
  });

  it('stopping while the drill waits for an upload does not wait for that upload, and the drill then reads nothing', async () => {
    const store = new MemoryStore();
    await ship(store, files['etcd-small.db']!, 'a.db');
    let grant!: () => void;
    const turn = new Promise<void>((r) => (grant = r));
    const { d, lines } = drill(store, {
      exclusive: async (fn) => {
        await turn;
        return fn();
      },
    });
    const run = d.runNow('test');
    await settle();
    const before = store.calls.length;
    // the upload in flight never ends while stop() runs: stop() must not hang on it
    await d.stop();
    grant();
    expect(await run).toEqual([]);
    expect(store.calls.length).toBe(before);
    expect(lines.some((l) => l.msg === 'restore drill stopped by shutdown')).toBe(true);
    expect(lines.some((l) => l.msg === 'restore drill could not run')).toBe(false);
  });

  it('nothing of this node in S3 yet: says so, counts the run, fails nothing', async () => {
    const store = new MemoryStore();
    const { d, lines, metrics } = drill(store);
    expect(await d.runNow('test')).toEqual([]);
    expect(lines.some((l) => l.msg === 'restore drill: no backup of this node in S3 yet')).toBe(true);
    expect(await value(metrics, 'etcdbackup_last_verify_run_timestamp_seconds')).toBeGreaterThan(0);
    expect(await value(metrics, 'etcdbackup_last_verified_timestamp_seconds')).toBe(0);
  });

  it('S3 down: the drill did not run (no verdict on the backups, no run counted) and the log says why', async () => {
    const store = new MemoryStore();
    await ship(store, files['etcd-small.db']!, 'a.db');
    store.failNext('list', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }));
    const { d, lines, metrics } = drill(store);
    expect(await d.runNow('test')).toEqual([]);
    const line = lines.find((l) => l.msg === 'restore drill could not run')!;
    expect(line).toMatchObject({ level: 'error', trigger: 'test' });
    expect(String(line.error)).toContain('ECONNREFUSED');
    expect(await value(metrics, 'etcdbackup_last_verify_run_timestamp_seconds')).toBe(0);
    for (const r of ['hash', 'corrupt', 'missing', 'unreadable']) expect(await value(metrics, 'etcdbackup_verify_failures_total', { reason: r })).toBe(0);
  });

  it('an object S3 refuses to hand out (403 on GetObject) fails as unreadable; the others are still drilled', async () => {
    const store = new MemoryStore();
    await ship(store, files['etcd-small.db']!, 'older.db', { time: new Date('2024-07-01T00:00:00Z') });
    await ship(store, files['etcd-medium.db']!, 'newest.db', { time: new Date('2024-07-02T00:00:00Z') });
    store.failNext('get', s3Error('AccessDenied', 403, 'Access Denied'), 5, (k) => k === objectKey(cfg, 'newest.db'));
    const { d, lines, metrics } = drill(store, { sample: 1 });
    const reports = await d.runNow('test');
    expect(reports.map((r) => [r.key.split('/').pop(), r.ok, r.reason])).toEqual([
      ['newest.db', false, 'unreadable'],
      ['older.db', true, undefined],
    ]);
    expect(await value(metrics, 'etcdbackup_verify_failures_total', { reason: 'unreadable' })).toBe(1);
    expect(String(lines.find((l) => l.reason === 'unreadable')?.detail)).toMatch(/refused|denied/i);
  });

  describe('its record in the state directory', () => {
    const stateFile = (): string => join(cfg.stateDir, DRILL_STATE_FILE);

    it('a restart shows what the last drill found: verified time, run time and failed objects', async () => {
      await mkdir(cfg.stateDir, { recursive: true });
      await rm(stateFile(), { force: true });
      const store = new MemoryStore();
      const older = new Date('2024-07-01T00:00:00Z');
      await ship(store, files['etcd-small.db']!, 'older.db', { time: older });
      await ship(store, files['damaged.db']!, 'newest.db', { time: new Date('2024-07-02T00:00:00Z') });
      const first = drill(store, { sample: 1 });
      await first.d.runNow('test');
      expect(await value(first.metrics, 'etcdbackup_last_verify_failed_objects')).toBe(1);
      const ran = (await value(first.metrics, 'etcdbackup_last_verify_run_timestamp_seconds'))!;
      const saved = JSON.parse(await readFile(stateFile(), 'utf8')) as { failed: unknown[]; lastVerifiedMs: number };
      expect(saved.failed).toEqual([{ key: objectKey(cfg, 'newest.db'), reason: 'corrupt' }]);
      expect(saved.lastVerifiedMs).toBe(older.getTime());

      const again = drill(store);
      expect(await value(again.metrics, 'etcdbackup_last_verify_failed_objects')).toBe(0);
      await again.d.start();
      try {
        expect(await value(again.metrics, 'etcdbackup_last_verify_failed_objects')).toBe(1);
        expect(await value(again.metrics, 'etcdbackup_last_verify_run_timestamp_seconds')).toBe(ran);
        expect(await value(again.metrics, 'etcdbackup_last_verified_timestamp_seconds')).toBe(older.getTime() / 1000);
        expect(again.lines.find((l) => l.msg === 'restore drill scheduled')).toMatchObject({ lastFailed: 1, schedule: cfg.verify.schedule });
      } finally {
        await again.d.stop();
      }

      // the damaged object replaced by a sound one: the next run clears the failure, here and on disk
      await ship(store, files['etcd-medium.db']!, 'newest.db', { time: new Date('2024-07-02T00:00:00Z') });
      const third = drill(store);
      const reports = await third.d.runNow('test');
      expect(reports.map((r) => r.ok)).toEqual([true]);
      expect(await value(third.metrics, 'etcdbackup_last_verify_failed_objects')).toBe(0);
      expect(await value(third.metrics, 'etcdbackup_last_verified_timestamp_seconds')).toBe(Date.parse('2024-07-02T00:00:00Z') / 1000);
      expect((JSON.parse(await readFile(stateFile(), 'utf8')) as { failed: unknown[] }).failed).toEqual([]);
    });

    it('a record of another bucket, or one that is not JSON, is ignored', async () => {
      await mkdir(cfg.stateDir, { recursive: true });
      const other = {
        location: { endpoint: 'aws:us-east-1', bucket: 'elsewhere', prefix: nodePrefix(cfg) },
        lastRunMs: 5000,
        lastVerifiedMs: 4000,
        failed: [{ key: 'k', reason: 'hash' }],
      };
      for (const text of [JSON.stringify(other), '{"location":', '']) {
        await writeFile(stateFile(), text);
        const { d, metrics } = drill(new MemoryStore());
        await d.start();
        await d.stop();
        expect(await value(metrics, 'etcdbackup_last_verify_run_timestamp_seconds')).toBe(0);
        expect(await value(metrics, 'etcdbackup_last_verify_failed_objects')).toBe(0);
      }
    });

    it('an unwritable state directory: the drill still reports, and warns once per run', async () => {
      const store = new MemoryStore();
      await ship(store, files['etcd-small.db']!, 'a.db');
      const { log, lines } = capture();
      const metrics = new Metrics('0.0.0-test', { defaultMetrics: false });
      const d = new DrillScheduler({ cfg: { ...cfg, stateDir: join(dir, 'no', 'such', 'dir') }, store, log, metrics, exclusive: (fn) => fn() });
      expect(await d.runNow('test')).toHaveLength(1);
      expect(await value(metrics, 'etcdbackup_last_verify_failed_objects')).toBe(0);
      expect(lines.filter((l) => l.level === 'warn').map((l) => l.msg)).toEqual([
        "could not record the drill's result in the state directory; a restart shows no verified backup until the next drill",
      ]);
    });
  });
});
