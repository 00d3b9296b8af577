import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BboltChecker, checkBboltBuffer, type DeepFacts, type DeepResult } from '../../agent/snapshot/bbolt.js';
import { crc32c, crc32cCombine } from '../../agent/snapshot/crc32c.js';
import { freePages, header, readLive, revKey, setMetaField, writeBbolt, type Live, type Tree } from '../support/bbolt-db.js';
import { fixturePath } from '../support/snapshots.js';

let dir: string;
const real: Record<string, Buffer> = {}; // snapshot bodies (trailer cut off)
let made = ''; // a snapshot made by a real etcd in this file

const body = (snap: Buffer): Buffer => snap.subarray(0, snap.length - 32);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => resolve(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

/** A throwaway etcd: keys with history, tombstones, large values (overflow pages), a lease, a compaction. */
async function makeSnapshot(out: string): Promise<void> {
  const [cport, pport] = [await freePort(), await freePort()];
  const client = `http://127.0.0.1:${cport}`;
  const peer = `http://127.0.0.1:${pport}`;
  const etcd = spawn(
    'etcd',
    [
      '--name',
      't',
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `t=${peer}`,
      '--log-level',
      'error',
    ],
    { stdio: 'ignore' },
  );
  const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');
  const post = async (path: string, req: object): Promise<{ header?: { revision: string }; ID?: string }> => {
    const res = await fetch(`${client}${path}`, { method: 'POST', body: JSON.stringify(req) });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return (await res.json()) as { header?: { revision: string }; ID?: string };
  };
  try {
    for (let i = 0; ; i++) {
      try {
        await post('/v3/kv/range', { key: b64('x') });
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const lease = await post('/v3/lease/grant', { TTL: 600 });
    const puts: Array<Promise<unknown>> = [];
    for (let i = 0; i < 240; i++) {
      const value = i % 40 === 0 ? Buffer.alloc(9000 + i, i & 255) : `value-${i}-${'v'.repeat(i % 300)}`;
      const req: Record<string, string> = { key: b64(`/registry/secrets/ns/s-${i % 160}`), value: b64(value) };
      if (i % 50 === 0) req.lease = lease.ID!;
      puts.push(post('/v3/kv/put', req));
      if (puts.length === 16) await Promise.all(puts.splice(0));
    }
    await Promise.all(puts);
    for (let i = 0; i < 20; i++) await post('/v3/kv/deleterange', { key: b64(`/registry/secrets/ns/s-${i}`) });
    await post('/v3/kv/compaction', { revision: '120', physical: true });
    execFileSync('etcdctl', ['--endpoints', client, 'snapshot', 'save', out], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: 'ignore' });
  } finally {
    etcd.kill('SIGTERM');
    await new Promise((r) => etcd.once('exit', r));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bbolt-test-'));
  for (const name of ['etcd-small.db', 'etcd-medium.db']) real[name] = body(await readFile(fixturePath(name)));
  made = join(dir, 'made.db');
  await makeSnapshot(made);
  real['made by etcd in this test'] = body(await readFile(made));
}, 30_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const etcdctlStatus = (file: string): { hash: number; revision: number; totalKey: number; totalSize: number } =>
  JSON.parse(execFileSync('etcdctl', ['snapshot', 'status', '-w', 'json', file], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }));

let seq = 0;
async function onDisk(b: Buffer): Promise<string> {
  const p = join(dir, `db-${++seq}`);
  await writeFile(p, b);
  return p;
}

function ok(r: DeepResult): DeepFacts {
  if (!r.ok) throw new Error(`expected ok, got: ${r.detail}`);
  return r.facts;
}

function rejected(r: DeepResult): string {
  if (r.ok) throw new Error('expected a corrupt verdict, got ok');
  expect(r.reason).toBe('corrupt');
  return r.detail;
}

const check = (b: Buffer, hash = true): DeepResult => checkBboltBuffer(b, { hash });

/** Feeds `b` in the given chunk sizes (cycled). */
function checkChunked(b: Buffer, sizes: number[], hash = true): DeepResult {
  const c = new BboltChecker({ hash });
  for (let i = 0, k = 0; i < b.length; k++) {
    const n = sizes[k % sizes.length]!;
    c.update(b.subarray(i, i + n));
    i += n;
  }
  return c.finish();
}

describe('real etcd snapshots', () => {
  it.each(['etcd-small.db', 'etcd-medium.db', 'made by etcd in this test'])(
    '%s: revision, keys, hash and size equal `etcdctl snapshot status`',
    async (name) => {
      const file = name.endsWith('.db') ? fixturePath(name) : made;
      const st = etcdctlStatus(file);
      const f = ok(check(real[name]!));
      expect({ hash: f.hash, revision: f.revision, totalKey: f.totalKeys, totalSize: f.totalSize }).toEqual(st);
      expect(f.buckets.map((b) => b.name)).toContain('key');
      expect(f.buckets.reduce((n, b) => n + b.keys, 0)).toBe(f.totalKeys);
      expect(f.consistentIndex).toBeGreaterThan(0);
      expect(f.memberIds).toHaveLength(1);
      expect(f.clusterVersion).toMatch(/^3\.\d+\.\d+$/);
      // without the hash: the same facts less the hash
      const { hash: _h, ...rest } = f;
      expect(ok(check(real[name]!, false))).toEqual(rest);
    },
  );

  it('the snapshot made here has overflow pages, a compaction and live keys a real etcd wrote', () => {
    const b = real['made by etcd in this test']!;
    const live = readLive(b);
    expect([...live.live.values()].some((p) => p.overflow > 0)).toBe(true);
    const f = ok(check(b));
    expect(f.compactRevision).toBe(120);
    expect(f.buckets.find((x) => x.name === 'lease')?.keys).toBe(1);
  });

  it('gives the same verdict for any chunking, down to single bytes', () => {
    const b = real['made by etcd in this test']!;
    const want = check(b);
    for (const sizes of [[1], [4096], [4095, 4097], [65536], [16 << 20], [7, 5000, 13, 100000]]) {
      expect(checkChunked(b, sizes)).toEqual(want);
    }
  });
});

describe('CRC-32C', () => {
  it('matches the standard check value and joins pieces', () => {
    expect(crc32c(0, Buffer.from('123456789'))).toBe(0xe3069283);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 300 }), (a, b) => {
        const whole = crc32c(0, Buffer.concat([a, b]));
        expect(crc32cCombine(crc32c(0, a), crc32c(0, b), b.length)).toBe(whole);
        expect(crc32c(crc32c(0, a), b)).toBe(whole);
      }),
      { numRuns: 200 },
    );
  });
});

/** The live leaf pages of one bucket with at least `min` elements, in tree order. */
function leavesOf(l: Live, bucket: string, min = 2): number[] {
  return [...l.live.values()].filter((p) => p.bucket === bucket && p.kind === 'leaf' && p.count >= min).map((p) => p.pgid);
}
function branchOf(l: Live, bucket: string): number {
  const b = [...l.live.values()].find((p) => p.bucket === bucket && p.kind === 'branch');
  if (!b) throw new Error(`no branch page in bucket ${bucket}`);
  return b.pgid;
}
/** Offset of element i's child pgid in branch page p. */
const childAt = (l: Live, p: number, i: number): number => p * l.ps + 16 + 16 * i + 8;

describe('damaged copies of a real snapshot', () => {
  const damaged = (fn: (b: Buffer, l: Live) => void): string => {
    const b = Buffer.from(real['etcd-medium.db']!);
    fn(b, readLive(b));
    return rejected(check(b));
  };

  it('a leaf whose keys were swapped out of order', () => {
    let page = 0;
    const detail = damaged((b, l) => {
      page = leavesOf(l, 'key')[1]!;
      const e0 = page * l.ps + 16;
      const k0 = e0 + b.readUInt32LE(e0 + 4);
      const k1 = e0 + 16 + b.readUInt32LE(e0 + 16 + 4);
      const first = Buffer.from(b.subarray(k0, k0 + 17));
      b.copy(b, k0, k1, k1 + 17);
      first.copy(b, k1);
    });
    expect(detail).toBe(`page ${page} (element 1 of branch page ${branchOfMedium()}, bucket "key"): key of element 1 is not greater than the key before it`);
  });

  it('a zeroed page', () => {
    let page = 0;
    const detail = damaged((b, l) => {
      page = leavesOf(l, 'key')[3]!;
      b.fill(0, page * l.ps, (page + 1) * l.ps);
    });
    expect(detail).toMatch(new RegExp(`^page ${page} \\(element 3 of branch page \\d+, bucket "key"\\): the page header is all zeros$`));
  });

  it('a branch element pointing past the end of the file', () => {
    const detail = damaged((b, l) => b.writeBigUInt64LE(BigInt(l.pages + 7), childAt(l, branchOf(l, 'key'), 2)));
    expect(detail).toMatch(/^page \d+ \(root of bucket "key"\): element 2 points to page 125, past the end \(118 pages\)$/);
  });

  it('a page referenced twice', () => {
    const detail = damaged((b, l) => {
      const br = branchOf(l, 'key');
      b.writeBigUInt64LE(b.readBigUInt64LE(childAt(l, br, 4)), childAt(l, br, 5));
    });
    expect(detail).toMatch(/^page \d+ \(element 5 of branch page \d+, bucket "key"\): referenced twice$/);
  });

  it('a cycle: a branch pointing to itself', () => {
    let br = 0;
    const detail = damaged((b, l) => {
      br = branchOf(l, 'key');
      b.writeBigUInt64LE(BigInt(br), childAt(l, br, 6));
    });
    expect(detail).toBe(`page ${br} (element 6 of branch page ${br}, bucket "key"): cycle, the page is its own ancestor`);
  });

  it('an element count too large for the page', () => {
    let page = 0;
    const detail = damaged((b, l) => {
      page = leavesOf(l, 'key')[0]!;
      b.writeUInt16LE(400, page * l.ps + 10);
    });
    expect(detail).toMatch(new RegExp(`^page ${page} \\(.*\\): 400 elements do not fit in 4096 bytes$`));
  });

  it('a bucket whose root points past the end, or at a page of another bucket', () => {
    expect(
      damaged((b, l) => {
        const ref = l.buckets.find((x) => x.name === 'key')!;
        b.writeBigUInt64LE(BigInt(l.pages + 2), ref.valueAt);
      }),
    ).toMatch(/^page \d+ \(root of the root bucket\): bucket "key" has root page 120, past the end \(118 pages\)$/);
    expect(
      damaged((b, l) => {
        const key = l.buckets.find((x) => x.name === 'key')!;
        const ref = l.buckets.find((x) => x.name === 'members')!; // inline in etcd: make it point at key's root
        b.writeBigUInt64LE(BigInt(key.root), ref.valueAt);
      }),
    ).toMatch(/^page \d+ \(root of the root bucket\): bucket "members" has root page \d+ and a \d+-byte value; bbolt writes 16$/);
  });

  it('an inline bucket with a broken page', () => {
    const detail = damaged((b, l) => {
      const ref = l.buckets.find((x) => x.name === 'meta')!;
      b.writeUInt16LE(9, ref.valueAt + 16 + 10); // count of the inline page
    });
    expect(detail).toMatch(/^page \d+ \(root of the root bucket\): inline bucket "meta": 9 elements do not fit in \d+ bytes$/);
  });

  it('an overflow count bbolt would not have written', () => {
    const detail = damaged((b, l) => {
      const page = leavesOf(l, 'key')[2]!;
      b.writeUInt32LE(1, page * l.ps + 12);
    });
    expect(detail).toMatch(/: 1 overflow pages for \d+ bytes of node; bbolt allocates 0$/);
  });

  it('a stale page in free space claiming an overflow run across live pages is ignored, however it is chunked', () => {
    const src = real['etcd-medium.db']!;
    const l = readLive(src);
    const f = freePages(l).find((p) => p + 5 < l.pages && [1, 2, 3, 4, 5].some((k) => l.live.has(p + k)))!;
    const b = Buffer.from(src);
    const o = f * l.ps;
    b.writeBigUInt64LE(BigInt(f), o);
    b.writeUInt16LE(2, o + 8); // leaf
    b.writeUInt16LE(1, o + 10);
    b.writeUInt32LE(5, o + 12); // overflow: 5 more pages, live ones among them
    b.writeUInt32LE(0, o + 16);
    b.writeUInt32LE(16, o + 20); // pos: data right after the table
    b.writeUInt32LE(3, o + 24);
    b.writeUInt32LE(5 * l.ps + 100, o + 28); // the value ends inside page f + 5
    const want = check(src);
    expect(check(b)).toEqual(want);
    expect(checkChunked(b, [1000, 3, 8192])).toEqual(want);
  });

  it('a body cut short, or longer than the meta says', () => {
    const b = real['etcd-small.db']!;
    expect(rejected(check(b.subarray(0, b.length - 4096)))).toBe('body is 126976 bytes; meta page 0 says 32 pages × 4096 = 131072');
    expect(rejected(check(Buffer.concat([b, Buffer.alloc(4096)])))).toMatch(/^body is 135168 bytes/);
  });

  it('falls back to meta page 1 when meta page 0 is broken, as bbolt does', () => {
    const b = Buffer.from(real['etcd-small.db']!);
    b[20] = 7; // version
    expect(ok(check(b))).toEqual(ok(check(real['etcd-small.db']!)));
    b[4096 + 20] = 7;
    expect(rejected(check(b))).toBe('no valid meta page (meta page 0: version 7; meta page 1: version 7)');
  });
});

function branchOfMedium(): number {
  return branchOf(readLive(real['etcd-medium.db']!), 'key');
}

describe('databases etcd does not write (made by the test writer, confirmed by bbolt through etcdctl)', () => {
  const nested: Tree = {
    key: { [revKey(3)]: '1', [revKey(4, 1)]: '2' },
    outer: { x: 'xv', inner: { p: 'pv', q: 'qv' }, deep: { d1: 'v1', d2: { z: 'zz' } }, y: 'yv' },
    small: { only: 'one' },
  };
  const inline = (path: string): boolean => path === 'small' || path === 'outer/inner' || path === 'outer/deep/d2';

  it('nested buckets (own pages and inline): facts equal etcdctl, nested contents neither counted nor hashed', async () => {
    const b = writeBbolt(nested, { inline, freePages: 3 });
    const st = etcdctlStatus(await onDisk(b));
    const f = ok(check(b));
    expect({ hash: f.hash, revision: f.revision, totalKey: f.totalKeys, totalSize: f.totalSize }).toEqual(st);
    expect(f.buckets).toEqual([
      { name: 'key', keys: 2 },
      { name: 'outer', keys: 4 },
      { name: 'small', keys: 1 },
    ]);
    expect(f.freePages).toBe(3);
    // the hash, computed here from its definition: names, then keys and values; a nested bucket's key alone
    expect(f.revision).toBe(4);
    const parts = ['key', revKey(3), '1', revKey(4, 1), '2', 'outer', 'deep', 'inner', 'x', 'xv', 'y', 'yv', 'small', 'only', 'one'];
    expect(f.hash).toBe(crc32c(0, Buffer.from(parts.join(''), 'latin1')));
  });

  it('a `key` bucket holding a key that is not a revision: etcdctl panics, the check says why', async () => {
    const b = writeBbolt({ key: { [revKey(2)]: 'a', zz: 'b' } });
    let out = '';
    try {
      etcdctlStatus(await onDisk(b));
    } catch (err) {
      out = String((err as { stderr?: unknown }).stderr);
    }
    expect(out).toMatch(/panic: runtime error: slice bounds out of range/);
    expect(rejected(check(b))).toBe(`page 2 (bucket "key"): holds a key that is not an etcd revision (8-byte main, '_', 8-byte sub)`);
  });

  it('a nested bucket with a bad root', () => {
    const b = writeBbolt(nested, { inline });
    const l = readLive(b);
    const deep = l.buckets.find((x) => x.name === 'deep')!;
    const a = Buffer.from(b);
    a.writeBigUInt64LE(1n, deep.valueAt);
    expect(rejected(check(a))).toMatch(/^page \d+ \(root of bucket "outer"\): bucket "deep" has meta page 1 as its root$/);
    const c = Buffer.from(b);
    c.writeBigUInt64LE(BigInt(l.buckets.find((x) => x.name === 'key')!.root), deep.valueAt);
    expect(rejected(check(c))).toMatch(/^page \d+ \(root of bucket "outer" \/ "deep"\): referenced twice$/);
  });

  it('a deep tree, and a cycle through an ancestor', async () => {
    const many: Tree = { key: {} };
    for (let i = 0; i < 600; i++) (many.key as Tree)[revKey(i + 2)] = `v${i}`;
    const b = writeBbolt(many, { fanout: 8 });
    const st = etcdctlStatus(await onDisk(b));
    expect(ok(check(b))).toMatchObject({ hash: st.hash, revision: 601, totalKeys: 600 });
    const l = readLive(b);
    const deepest = [...l.live.values()].find((p) => p.kind === 'branch' && l.live.get(p.parent ?? -1)?.parent !== undefined)!;
    const grand = l.live.get(l.live.get(deepest.parent!)!.parent!)!;
    const a = Buffer.from(b);
    a.writeBigUInt64LE(BigInt(grand.pgid), childAt(l, deepest.pgid, 3));
    expect(rejected(check(a))).toBe(`page ${grand.pgid} (element 3 of branch page ${deepest.pgid}, bucket "key"): cycle, the page is its own ancestor`);
  });

  describe('freelist page', () => {
    const be64 = (n: number): Buffer => Buffer.from(n.toString(16).padStart(16, '0'), 'hex');
    const rev = (main: number): Buffer => Buffer.from(revKey(main), 'latin1');
    const tree: Tree = {
      key: { [revKey(2)]: '1', [revKey(3)]: '2' },
      meta: { consistent_index: be64(9), term: be64(4), finishedCompactRev: rev(2), storageVersion: '3.6.0' },
    };

    it('consistent: accepted, its pages counted free', async () => {
      const b = writeBbolt(tree, { freePages: 4, freelist: true });
      const st = etcdctlStatus(await onDisk(b)); // bbolt's check: no page both free and used, none leaked
      const f = ok(check(b));
      expect(f.hash).toBe(st.hash);
      expect([f.freePages, f.leakedPages]).toEqual([4, 0]);
      expect(f).toMatchObject({ consistentIndex: 9, term: 4, compactRevision: 2, storageVersion: '3.6.0', revision: 3 });
    });

    const withFreelist = (ids: bigint[], overflowForm = false): Buffer => {
      const b = writeBbolt(tree, { freePages: 4, freelist: true });
      const fl = Number(b.readBigUInt64LE(48));
      const o = fl * 4096;
      b.fill(0, o + 10, o + 4096);
      b.writeUInt16LE(overflowForm ? 0xffff : ids.length, o + 10);
      const list = overflowForm ? [BigInt(ids.length), ...ids] : ids;
      list.forEach((id, i) => b.writeBigUInt64LE(id, o + 16 + 8 * i));
      return b;
    };
    const freeIds = (): bigint[] =>
      freePages(readLive(writeBbolt(tree, { freePages: 4, freelist: true })))
        .slice(0, 4)
        .map(BigInt);

    it('the 0xFFFF count form (count in the first id slot)', () => {
      expect(ok(check(withFreelist(freeIds(), true))).freePages).toBe(4);
    });

    it('claiming a page in use', () => {
      const b = writeBbolt(tree, { freePages: 4, freelist: true });
      const used = readLive(b).buckets.find((x) => x.name === 'key')!.root;
      expect(rejected(check(withFreelist([...freeIds(), BigInt(used)])))).toBe(`page ${used} (root of bucket "key"): in use and on the freelist`);
    });

    it('listing a page twice, a page past the end, or itself', () => {
      const ids = freeIds();
      const fl = Number(writeBbolt(tree, { freePages: 4, freelist: true }).readBigUInt64LE(48));
      expect(rejected(check(withFreelist([...ids, ids[0]!])))).toBe(`freelist page ${fl}: lists page ${ids[0]} twice`);
      expect(rejected(check(withFreelist([...ids, 999n])))).toMatch(new RegExp(`^freelist page ${fl}: lists page 999, outside 2\\.\\.\\d+$`));
      expect(rejected(check(withFreelist([...ids, BigInt(fl)])))).toBe(`freelist page ${fl}: lists page ${fl}, which holds the freelist itself`);
    });

    it('leaving a page out: counted as leaked, not rejected (the data is intact)', () => {
      const f = ok(check(withFreelist(freeIds().slice(1))));
      expect([f.freePages, f.leakedPages]).toEqual([3, 1]);
    });

    it('a meta naming a page that is not a freelist page', () => {
      const b = writeBbolt(tree, { freePages: 4, freelist: true });
      setMetaField(b, 48, BigInt(readLive(b).root));
      expect(rejected(check(b))).toMatch(/^freelist page \d+: not a valid freelist page$/);
    });
  });
});

describe('never throws', () => {
  it('on short, empty, random and truncated input', () => {
    const b = real['etcd-small.db']!;
    for (const bad of [Buffer.alloc(0), Buffer.alloc(100), Buffer.alloc(8192, 0xff), b.subarray(0, 4096), b.subarray(0, 8192), b.subarray(0, 9000)]) {
      expect(rejected(check(bad))).not.toBe('');
    }
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 20000 }), (u) => {
        const r = check(Buffer.from(u));
        expect(r.ok).toBe(false);
      }),
      { numRuns: 50 },
    );
  });
});

// BBOLT_PROPERTY_RUNS raises the runs for a long search (e.g. 20000); the default keeps the file fast.
const RUNS = Number(process.env.BBOLT_PROPERTY_RUNS ?? 250);
const TIMEOUT = 10_000 + RUNS * 10;

describe.each(['etcd-medium.db', 'made by etcd in this test'])('random corruption of %s (property)', (name) => {
  const space = (f: DeepFacts): object => ({ ...f, freePages: 0, leakedPages: 0 });

  it(
    'is detected, or harmless (same facts), or changes the content etcdctl hashes',
    () => {
      const orig = ok(check(real[name]!));
      const src = real[name]!;
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(src.length - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }), (flips) => {
          const b = Buffer.from(src);
          for (const [at, x] of flips) b[at]! ^= x;
          const r = check(b);
          if (!r.ok) return;
          if (r.facts.hash !== orig.hash) return; // content changed: only the SHA-256 trailer can tell
          expect(space(r.facts)).toEqual(space(orig));
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    'in free pages and in the unused tail of live pages: always accepted, facts unchanged',
    () => {
      const src = real[name]!;
      const l = readLive(src);
      const spare: Array<[number, number]> = freePages(l).map((p) => [p * l.ps, (p + 1) * l.ps]);
      for (const p of l.live.values()) spare.push([p.dataEnd, (p.pgid + p.overflow + 1) * l.ps]);
      spare.push([80, l.ps], [l.ps + 80, 2 * l.ps]); // meta pages after their fields
      const orig = ok(check(src));
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.nat(spare.length - 1), fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 6 }), (flips) => {
          const b = Buffer.from(src);
          for (const [r, off, x] of flips) {
            const [s, e] = spare[r]!;
            if (e > s) b[s + (off % (e - s))]! ^= x;
          }
          expect(ok(check(b))).toEqual(orig);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    'in the header or element positions of a live page: always detected',
    () => {
      const src = real[name]!;
      const l = readLive(src);
      const spots: number[] = [];
      for (const p of l.live.values()) {
        const o = p.pgid * l.ps;
        for (let i = 0; i < 16; i++) spots.push(o + i);
        for (let e = 0; e < p.count; e++) for (let i = 0; i < 4; i++) spots.push(o + 16 + 16 * e + (p.kind === 'leaf' ? 4 : 0) + i);
      }
      expect(header(src, l.ps, l.root).flags).toBe(2); // the root bucket fits one leaf
      fc.assert(
        fc.property(fc.nat(spots.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
          const b = Buffer.from(src);
          b[spots[i]!]! ^= x;
          expect(check(b).ok).toBe(false);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );
});
