import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat, symlink, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatFromName, sniffFormat, type SnapshotFormat, type Verdict } from '../../agent/snapshot/format.js';
import { quickCheck, verifyFile, verifyPath } from '../../agent/snapshot/verifier.js';
import { fixturePath, flipByte, metaPage, sha256, sha256File, syntheticSnapshot, withTrailer, writeSyntheticSnapshot } from '../support/snapshots.js';
import { goZip, startGoZip } from '../support/go-zip.js';
import { writeZip, zipBuffer, type ZipInput } from '../support/handmade-zip.js';

let dir: string;
let small: Buffer; // real etcdctl snapshot: 32 pages of 4096, meta txids 11/10
let medium: Buffer;
let seq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'verify-test-'));
  small = await readFile(fixturePath('etcd-small.db'));
  medium = await readFile(fixturePath('etcd-medium.db'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(buf: Buffer, name = `snap-${++seq}.db`): Promise<string> {
  const sub = join(dir, String(++seq));
  await mkdir(sub);
  const p = join(sub, name);
  await writeFile(p, buf);
  return p;
}

async function verifyBuf(buf: Buffer, name?: string, format?: SnapshotFormat): Promise<Verdict> {
  return verifyPath(await put(buf, name), format ? { format } : {});
}

async function quick(path: string, format: SnapshotFormat) {
  const fh = await open(path, 'r');
  try {
    return await quickCheck(fh, (await fh.stat()).size, format);
  } finally {
    await fh.close();
  }
}

const sha256sum = (path: string): string => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]!;

/** Cuts the real snapshot to `pages` pages and appends a fresh, correct trailer. */
const shortenedWithHash = (buf: Buffer, pages: number): Buffer => withTrailer(buf.subarray(0, pages * 4096));

describe('fixtures', () => {
  // The tables below name offsets and sizes of these files; a refreshed fixture must keep this shape.
  it('have the shape the tables assume', () => {
    expect(small.length).toBe(32 * 4096 + 32);
    expect(small.readBigUInt64LE(56)).toBe(32n);
    expect(small.readBigUInt64LE(4096 + 64)).toBe(small.readBigUInt64LE(64) - 1n); // meta 1 = txid − 1
    expect(medium.length).toBeGreaterThan(small.length);
  });
});

describe('sniffFormat / formatFromName', () => {
  it.each([
    ['zip local header', Buffer.from('PK\x03\x04rest', 'latin1'), 'zip'],
    ['bbolt meta page 0', () => small.subarray(0, 64), 'raw'],
    ['empty', Buffer.alloc(0), undefined],
    ['"PK" only', Buffer.from('PK'), undefined],
    ['zeros', Buffer.alloc(64), undefined],
    ['text', Buffer.from('hello world, this is not a snapshot at all....................'), undefined],
    ['bbolt magic without meta flag', () => flipByte(small.subarray(0, 64), 8), undefined],
  ])('%s', (_label, head, want) => {
    expect(sniffFormat(typeof head === 'function' ? head() : head)).toBe(want);
  });

  it.each([
    ['2024-05-01T12:00:00Z_etcd.zip', 'zip'],
    ['on-demand-node1-1714564800.ZIP', 'zip'],
    ['2024-05-01T12:00:00Z_etcd', 'raw'],
    ['snapshot.db', 'raw'],
    ['zip', 'raw'],
  ])('formatFromName(%s) = %s', (name, want) => {
    expect(formatFromName(name)).toBe(want);
  });
});

describe('raw snapshots that pass', () => {
  it.each(['etcd-small.db', 'etcd-medium.db'])('real fixture %s; sha256 is sha256sum of the file', async (name) => {
    const path = fixturePath(name);
    const v = await verifyPath(path);
    expect(v).toEqual({ ok: true, format: 'raw', size: (await stat(path)).size, sha256: sha256sum(path), dbSize: (await stat(path)).size });
    expect(await quick(path, 'raw')).toBeUndefined();
  });

  it.each([512, 1024, 4096, 16384, 65536])('synthetic, page size %i (read from the meta page)', async (pageSize) => {
    const buf = syntheticSnapshot({ pageSize, pages: 5, random: true });
    const v = await verifyBuf(buf);
    expect(v).toMatchObject({ ok: true, format: 'raw', size: buf.length, sha256: sha256(buf) });
  });

  it('meta page 0 with a broken page size: the page size comes from meta page 1', async () => {
    const body = Buffer.concat([
      setPageSize(metaPage({ pageSize: 16384, id: 0, pgid: 4, txid: 3 }), 3000),
      metaPage({ pageSize: 16384, id: 1, pgid: 4, txid: 2 }),
      Buffer.alloc(2 * 16384),
    ]);
    expect(await verifyBuf(withTrailer(body))).toMatchObject({ ok: true });
    const stale = Buffer.concat([withTrailer(body).subarray(0, body.length), small.subarray(small.length - 32)]);
    expect(await verifyBuf(stale)).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringContaining('meta page 0: checksum mismatch') });
  });

  it('one damaged meta page is tolerated when the hash covers it (producer wrote it so)', async () => {
    const body = flipByte(small.subarray(0, small.length - 32), 4096 + 72);
    expect(await verifyBuf(withTrailer(body))).toMatchObject({ ok: true });
  });
});

describe('raw snapshots that fail', () => {
  const cases: Array<[string, () => Buffer, 'truncated' | 'corrupt' | 'format', RegExp]> = [
    ['flipped byte in a data page', () => flipByte(small, 5 * 4096 + 1234), 'corrupt', /SHA-256 of the first 131072 bytes does not match/],
    ['flipped byte in the last data page', () => flipByte(small, small.length - 33), 'corrupt', /SHA-256/],
    ['flipped checksum in meta page 0', () => flipByte(small, 72), 'corrupt', /SHA-256.*meta page 0: checksum mismatch/],
    ['flipped pgid in meta page 0', () => flipByte(small, 56), 'corrupt', /meta page 0: checksum mismatch/],
    ['flipped magic in meta page 0', () => flipByte(small, 16), 'corrupt', /meta page 0: bad magic/],
    ['flipped flags in meta page 0', () => flipByte(small, 8), 'corrupt', /meta page 0: page flags 0xfb/],
    ['flipped padding byte in meta page 0', () => flipByte(small, 1000), 'corrupt', /SHA-256/],
    ['flipped checksum in meta page 1', () => flipByte(small, 4096 + 72), 'corrupt', /meta page 1: checksum mismatch/],
    ['flipped txid in meta page 1', () => flipByte(small, 4096 + 64), 'corrupt', /meta page 1: checksum mismatch/],
    ['both meta checksums flipped', () => flipByte(flipByte(small, 72), 4096 + 72), 'corrupt', /no valid meta page/],
    ['both meta magics flipped', () => flipByte(flipByte(small, 16), 4096 + 16), 'format', /not a bbolt snapshot/],
    ['first trailer byte flipped', () => flipByte(small, small.length - 32), 'corrupt', /SHA-256/],
    ['last trailer byte flipped', () => flipByte(small, -1), 'corrupt', /SHA-256/],
    ['trailer-less (last 32 bytes removed)', () => small.subarray(0, small.length - 32), 'truncated', /size 131072 .*size % 512 = 0, want 32/],
    ['trailer half there', () => small.subarray(0, small.length - 16), 'truncated', /size % 512 = 16/],
    ['one byte short', () => small.subarray(0, small.length - 1), 'truncated', /size % 512 = 31/],
    ['cut at 1000 bytes', () => small.subarray(0, 1000), 'truncated', /size 1000 is not a bbolt snapshot plus 32-byte hash \(size % 512 = 488, want 32\)/],
    ['cut at 4096', () => small.subarray(0, 4096), 'truncated', /size % 512 = 0/],
    ['cut at 544 (aligned, inside meta page 0)', () => small.subarray(0, 544), 'truncated', /less than two 4096-byte meta pages/],
    ['cut at 8224 (aligned, just the meta pages)', () => small.subarray(0, 8224), 'truncated', /says 32 pages × 4096 = 131072 bytes but only 8192/],
    ['cut at 65568 (aligned, half)', () => small.subarray(0, 65568), 'truncated', /but only 65536 precede/],
    ['cut one page short (aligned)', () => small.subarray(0, small.length - 4096), 'truncated', /but only 126976 precede/],
    ['cut 512 short (aligned)', () => small.subarray(0, small.length - 512), 'truncated', /but only 130560 precede/],
    ['cut to 20 pages with a fresh, correct hash', () => shortenedWithHash(small, 20), 'truncated', /says 32 pages/],
    [
      'pgid rewritten to match a shorter file (valid checksums), old trailer',
      () => {
        const body = Buffer.concat([
          metaPage({ pageSize: 4096, id: 0, pgid: 20, txid: 11 }),
          metaPage({ pageSize: 4096, id: 1, pgid: 20, txid: 10 }),
          small.subarray(8192, 20 * 4096),
        ]);
        return Buffer.concat([body, small.subarray(small.length - 32)]);
      },
      'corrupt',
      /SHA-256/,
    ],
    ['trailing bytes after the hash', () => Buffer.concat([small, Buffer.alloc(512)]), 'format', /says 32 pages × 4096 = 131072 bytes but 131584 precede/],
    [
      'medium snapshot with small trailer',
      () => Buffer.concat([medium.subarray(0, medium.length - 32), small.subarray(small.length - 32)]),
      'corrupt',
      /SHA-256/,
    ],
    [
      'bbolt version 3 in both metas',
      () =>
        withTrailer(
          Buffer.concat([
            metaPage({ pageSize: 4096, id: 0, pgid: 4, txid: 3, version: 3 }),
            metaPage({ pageSize: 4096, id: 1, pgid: 4, txid: 2, version: 3 }),
            Buffer.alloc(8192),
          ]),
        ),
      'format',
      /unsupported bbolt version 3/,
    ],
    ['empty file', () => Buffer.alloc(0), 'truncated', /^empty file$/],
    ['first 10 bytes of a snapshot', () => small.subarray(0, 10), 'truncated', /only 10 bytes/],
    ['first 50 bytes of a snapshot', () => small.subarray(0, 50), 'truncated', /only 50 bytes/],
    ['first 100 bytes of a snapshot', () => small.subarray(0, 100), 'truncated', /size % 512 = 100/],
    ['a tiny text file', () => Buffer.from('hello\n'), 'format', /not a bbolt snapshot/],
    ['1000 zero bytes', () => Buffer.alloc(1000), 'format', /not a bbolt snapshot/],
    ['random garbage', () => randomBytes(100_000), 'format', /not a bbolt snapshot/],
    ['random garbage of a snapshot-like size', () => randomBytes(8 * 4096 + 32), 'format', /not a bbolt snapshot/],
  ];

  it.each(cases)('%s → %s', async (_label, make, reason, detail) => {
    const v = await verifyBuf(make());
    expect(v).toMatchObject({ ok: false, reason });
    if (!v.ok) {
      expect(v.detail).toMatch(detail);
      expect(v.detail.length).toBeLessThan(200);
      expect(v.detail).not.toContain('\n');
    }
  });
});

function setPageSize(page: Buffer, ps: number): Buffer {
  const out = Buffer.from(page);
  out.writeUInt32LE(ps, 24);
  return out; // checksum left stale on purpose
}

describe('quickCheck', () => {
  it.each([
    ['complete real snapshot', () => small, undefined],
    ['complete synthetic, 64 KiB pages', () => syntheticSnapshot({ pageSize: 65536, pages: 3 }), undefined],
    ['half written, misaligned', () => small.subarray(0, 70_000), 'truncated'],
    ['half written, aligned', () => small.subarray(0, 65568), 'truncated'],
    ['only the meta pages', () => small.subarray(0, 8192), 'truncated'],
    ['empty', () => Buffer.alloc(0), 'truncated'],
    ['garbage', () => randomBytes(5000), 'format'],
    ['a zip where raw was expected', () => Buffer.from('PK\x03\x04' + 'x'.repeat(100), 'latin1'), 'format'],
  ])('raw: %s → %s', async (_label, make, want) => {
    const r = await quick(await put(make()), 'raw');
    expect(r?.reason).toBe(want);
  });

  it.each([
    ['raw', () => Promise.resolve(medium), 8192],
    [
      'zip',
      async () =>
        (
          await zipBuffer(
            [
              { name: '/backup/x', data: medium },
              { name: '/etc/kubernetes/x.rkestate', data: '{}' },
            ],
            { zip64: true },
          )
        ).buffer,
      8192,
    ],
  ] as const)('reads only a few KiB of a complete %s', async (format, make, most) => {
    const buf = await make();
    const fh = await open(await put(buf), 'r');
    let bytes = 0;
    const read = fh.read.bind(fh);
    (fh as unknown as { read: typeof fh.read }).read = async (...args: Parameters<typeof fh.read>) => {
      const r = await (read as (...a: unknown[]) => ReturnType<typeof fh.read>)(...args);
      bytes += r.bytesRead;
      return r;
    };
    try {
      expect(await quickCheck(fh, buf.length, format)).toBeUndefined();
    } finally {
      await fh.close();
    }
    expect(bytes).toBeLessThanOrEqual(most);
  });
});

describe('zipped snapshots', () => {
  let rawPath: string;
  let statePath: string;
  beforeAll(async () => {
    rawPath = await put(small, '2024-05-01T12:00:00Z_etcd');
    statePath = await put(Buffer.from('{"desiredState":{}}'), '2024-05-01T12:00:00Z_etcd.rkestate');
  });

  async function zipOf(inputs: ZipInput[], opts: Parameters<typeof zipBuffer>[1] = {}): Promise<Buffer> {
    return (await zipBuffer(inputs, opts)).buffer;
  }

  it('RKE layout (Go, as rke-tools calls it): /backup/<name> + /etc/kubernetes/<name>.rkestate, 1970 dates', async () => {
    const name = '2024-05-01T12:00:00Z_etcd';
    const zipPath = join(dir, `${name}.zip`);
    await goZip('rke', rawPath, zipPath, { rkestate: statePath });
    const v = await verifyPath(zipPath);
    expect(v).toEqual({
      ok: true,
      format: 'zip',
      size: (await stat(zipPath)).size,
      sha256: sha256sum(zipPath),
      dbSize: small.length,
      entry: `/backup/${name}`,
    });
    expect(await quick(zipPath, 'zip')).toBeUndefined();
  });

  it('RKE layout under another name falls back to the one non-.rkestate entry', async () => {
    const zipPath = join(dir, 'renamed-by-someone.zip');
    await goZip('rke', rawPath, zipPath, { name: 'c-abcde-rl-xyz12_2024-05-01T12-00-00Z', rkestate: statePath });
    expect(await verifyPath(zipPath)).toMatchObject({ ok: true, entry: '/backup/c-abcde-rl-xyz12_2024-05-01T12-00-00Z' });
  });

  it('RKE2 layout (Go, as k3s calls it): one entry named like the zip', async () => {
    const name = 'etcd-snapshot-node1-1714564800';
    const zipPath = join(dir, `${name}.zip`);
    await goZip('k3s', rawPath, zipPath, { name });
    expect(await verifyPath(zipPath)).toMatchObject({ ok: true, format: 'zip', dbSize: small.length, entry: name, sha256: sha256sum(zipPath) });
  });

  it.each([
    ['zip64, data descriptors', { zip64: true }],
    ['zip64, sizes in the local header', { zip64: true, dataDescriptor: false }],
    ['plain, sizes in the local header', { dataDescriptor: false }],
    ['with a comment', { comment: 'made by a test; PK\x05\x06 inside the comment' }],
    ['best compression', { level: 9 }],
  ])('%s', async (_label, opts) => {
    const buf = await zipOf(
      [
        { name: '/backup/x', data: medium },
        { name: '/etc/kubernetes/x.rkestate', data: '{}' },
      ],
      opts,
    );
    expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: true, entry: '/backup/x', dbSize: medium.length, sha256: sha256(buf) });
  });

  it('stored (method 0) entries', async () => {
    const buf = await zipOf([
      { name: 'x', data: small, method: 'store' },
      { name: 'x.rkestate', data: '{}', method: 'store' },
    ]);
    expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: true, entry: 'x' });
  });

  it.each(['etcd-small.db.zip', 'etcd-small-py64.zip'])('zip made by another producer: %s', async (name) => {
    const v = await verifyPath(fixturePath(name));
    expect(v).toMatchObject({ ok: true, format: 'zip', dbSize: small.length, sha256: sha256sum(fixturePath(name)) });
  });

  it('content decides the format over the name (raw content named .zip)', async () => {
    expect(await verifyBuf(small, 'looks-like.zip')).toMatchObject({ ok: true, format: 'raw' });
  });

  it('an explicit format that contradicts the content is refused', async () => {
    const zip = await zipOf([{ name: 'x', data: small }]);
    expect(await verifyBuf(small, 'x.zip', 'zip')).toMatchObject({ ok: false, reason: 'format', detail: 'content is a raw snapshot, expected a zip' });
    expect(await verifyBuf(zip, 'x', 'raw')).toMatchObject({ ok: false, reason: 'format', detail: 'content is a zip, expected a raw snapshot' });
  });

  describe('half-written zips', () => {
    let whole: Buffer;
    let cd: number;
    let eocd: number;
    beforeAll(async () => {
      const { buffer, layout } = await zipBuffer(
        [
          { name: '/backup/x', data: medium },
          { name: '/etc/kubernetes/x.rkestate', data: '{"a":1}' },
        ],
        { zip64: true },
      );
      whole = buffer;
      cd = layout.cdOffset;
      eocd = layout.eocdOffset;
    });
    const cuts: Array<[string, (n: number, cd: number, eocd: number) => number]> = [
      ['2 bytes', () => 2],
      ['inside the first local header', () => 20],
      ['a quarter in', (n) => Math.floor(n / 4)],
      ['half way', (n) => Math.floor(n / 2)],
      ['just before the central directory', (_n, cd) => cd],
      ['inside the central directory', (_n, cd) => cd + 10],
      ['just before the end record (zip64 records present)', (_n, _cd, eocd) => eocd],
      ['inside the end record', (_n, _cd, eocd) => eocd + 10],
      ['one byte short', (n) => n - 1],
    ];
    it.each(cuts)('cut %s → truncated (verify and quickCheck)', async (_label, at) => {
      const path = await put(whole.subarray(0, at(whole.length, cd, eocd)), 'x.zip');
      const v = await verifyPath(path);
      expect(v).toMatchObject({ ok: false, reason: 'truncated' });
      expect(await quick(path, 'zip')).toMatchObject({ reason: 'truncated' });
    });

    it('an empty .zip is truncated', async () => {
      expect(await verifyBuf(Buffer.alloc(0), 'x.zip')).toEqual({ ok: false, reason: 'truncated', detail: 'empty file' });
    });
  });

  it('writing in place: truncated while the writer stalls mid-file, ok once it finishes', async () => {
    const name = 'on-demand-node1-1714564801';
    const zipPath = join(dir, `${name}.zip`);
    const raw = await put(medium, name);
    // Go deflates this snapshot to ~17 KB; the writer stops after its second 4 KiB write
    const writing = startGoZip('rke', raw, zipPath, { pauseAt: 8192 });
    const at = await writing.paused;
    expect((await stat(zipPath)).size).toBe(at);
    expect(await quick(zipPath, 'zip')).toMatchObject({ reason: 'truncated' });
    expect(await verifyPath(zipPath)).toMatchObject({ ok: false, reason: 'truncated' });
    writing.resume();
    await writing.done;
    expect(await quick(zipPath, 'zip')).toBeUndefined();
    expect(await verifyPath(zipPath)).toMatchObject({ ok: true, entry: `/backup/${name}` });
  });

  describe('damaged zips', () => {
    let good: Awaited<ReturnType<typeof zipBuffer>>;
    let stored: Awaited<ReturnType<typeof zipBuffer>>;
    beforeAll(async () => {
      good = await zipBuffer([
        { name: '/backup/x', data: small },
        { name: '/etc/kubernetes/x.rkestate', data: '{"a":1}' },
      ]);
      stored = await zipBuffer([{ name: 'x', data: small, method: 'store' }], { dataDescriptor: false });
    });

    const patch = (buf: Buffer, at: number, write: (b: Buffer, at: number) => void): Buffer => {
      const out = Buffer.from(buf);
      write(out, at);
      return out;
    };
    type Zipped = Awaited<ReturnType<typeof zipBuffer>>;
    // Changes what the directory and the data descriptor say, consistently, so only the data disagrees.
    const withCrc = (z: Zipped, i: number, crc: number): Buffer =>
      patch(z.buffer, 0, (b) => {
        const e = z.layout.entries[i]!;
        b.writeUInt32LE(crc, e.centralHeaderOffset + 16);
        b.writeUInt32LE(crc, e.dataOffset + e.compressedSize + 4);
      });
    const withSize = (z: Zipped, i: number, size: number): Buffer =>
      patch(z.buffer, 0, (b) => {
        const e = z.layout.entries[i]!;
        b.writeUInt32LE(size, e.centralHeaderOffset + 24);
        b.writeUInt32LE(size, e.dataOffset + e.compressedSize + 12);
      });

    it('data descriptor disagreeing with the directory → corrupt', async () => {
      const e = good.layout.entries[0]!;
      const buf = patch(good.buffer, e.dataOffset + e.compressedSize + 4, (b, at) => b.writeUInt32LE((e.crc32 ^ 1) >>> 0, at));
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringContaining('data descriptor CRC') });
    });

    it('bad CRC in the central directory → corrupt', async () => {
      const e = good.layout.entries[0]!;
      const buf = withCrc(good, 0, (e.crc32 ^ 1) >>> 0);
      const v = await verifyBuf(buf, 'x.zip');
      expect(v).toMatchObject({ ok: false, reason: 'corrupt' });
      expect(!v.ok && v.detail).toMatch(/zip entry \/backup\/x: CRC-32 [0-9a-f]{8} does not match the declared [0-9a-f]{8}/);
    });

    it('bad CRC on the small second entry → corrupt', async () => {
      const e = good.layout.entries[1]!;
      const buf = withCrc(good, 1, (e.crc32 ^ 0x100) >>> 0);
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringContaining('.rkestate: CRC-32') });
    });

    it('flipped byte in stored data → corrupt (CRC)', async () => {
      const buf = flipByte(stored.buffer, stored.layout.entries[0]!.dataOffset + 50_000);
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringContaining('CRC-32') });
    });

    it('a flipped byte anywhere in deflate data → corrupt, never a hang', async () => {
      const e = good.layout.entries[0]!;
      const path = await put(good.buffer, 'x.zip');
      const seen = new Set<string>();
      for (let off = 0; off < e.compressedSize; off += Math.ceil(e.compressedSize / 97)) {
        await writeFile(path, flipByte(good.buffer, e.dataOffset + off));
        const v = await verifyPath(path);
        expect(v, `flip at +${off}`).toMatchObject({ ok: false, reason: 'corrupt' });
        if (!v.ok) seen.add(v.detail.replace(/[0-9a-f]{8}|\d+/g, 'N').replace(/\(invalid .*\)/, '(invalid …)'));
      }
      // Damage shows up every way a deflate stream can go wrong.
      expect(seen.size).toBeGreaterThanOrEqual(3);
    });

    it('CRC right, inner snapshot corrupt (a zipped flipped raw) → corrupt', async () => {
      const buf = (await zipBuffer([{ name: '/backup/x', data: flipByte(small, 7 * 4096) }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringMatching(/^zip entry \/backup\/x: SHA-256/) });
    });

    it('CRC right, inner snapshot trailer-less → truncated', async () => {
      const buf = (await zipBuffer([{ name: 'x', data: small.subarray(0, small.length - 32) }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'truncated', detail: expect.stringContaining('zip entry x: size 131072') });
    });

    it('CRC right, inner is not a snapshot → format', async () => {
      const buf = (await zipBuffer([{ name: 'x', data: randomBytes(4096 + 32) }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({
        ok: false,
        reason: 'format',
        detail: expect.stringContaining('zip entry x: not a bbolt snapshot'),
      });
    });

    it('entry holds fewer bytes than it declares → truncated', async () => {
      const e = stored.layout.entries[0]!;
      // A deflate entry whose directory claims 512 more bytes than the stream yields.
      const z = await zipBuffer([{ name: 'x', data: small }], { dataDescriptor: true });
      const ze = z.layout.entries[0]!;
      const buf = withSize(z, 0, ze.uncompressedSize + 512);
      expect(e.uncompressedSize).toBe(small.length);
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({
        ok: false,
        reason: 'truncated',
        detail: `zip entry x holds ${small.length} bytes, declares ${small.length + 512}`,
      });
    });

    it('entry inflates to more than it declares → corrupt', async () => {
      const z = await zipBuffer([{ name: 'x', data: small }]);
      const ze = z.layout.entries[0]!;
      const buf = withSize(z, 0, ze.uncompressedSize - 512);
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'corrupt', detail: expect.stringContaining('inflates to more than') });
    });

    it('no snapshot entry (only the .rkestate) → format', async () => {
      const buf = (await zipBuffer([{ name: '/etc/kubernetes/x.rkestate', data: '{}' }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({
        ok: false,
        reason: 'format',
        detail: 'no snapshot entry in zip (entries: /etc/kubernetes/x.rkestate)',
      });
    });

    it('two candidate entries, neither named like the zip → format', async () => {
      const buf = (
        await zipBuffer([
          { name: 'a', data: small },
          { name: 'b', data: small },
        ])
      ).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'format', detail: expect.stringContaining('cannot tell which of 2') });
      expect(await verifyBuf(buf, 'b.zip')).toMatchObject({ ok: true, entry: 'b' });
    });

    it('encrypted entry → format', async () => {
      const e = good.layout.entries[0]!;
      const buf = patch(good.buffer, 0, (b) => {
        b.writeUInt16LE(b.readUInt16LE(e.localHeaderOffset + 6) | 1, e.localHeaderOffset + 6);
        b.writeUInt16LE(b.readUInt16LE(e.centralHeaderOffset + 8) | 1, e.centralHeaderOffset + 8);
      });
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'format', detail: 'zip entry /backup/x is encrypted' });
    });

    it('unsupported compression method → format', async () => {
      const e = good.layout.entries[0]!;
      const buf = patch(good.buffer, 0, (b) => {
        b.writeUInt16LE(12, e.localHeaderOffset + 8);
        b.writeUInt16LE(12, e.centralHeaderOffset + 10);
      });
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({
        ok: false,
        reason: 'format',
        detail: 'zip entry /backup/x uses unsupported compression method 12',
      });
    });

    it('random bytes named .zip → format', async () => {
      expect(await verifyBuf(randomBytes(10_000), 'x.zip')).toMatchObject({ ok: false, reason: 'format', detail: expect.stringContaining('not a zip') });
    });

    it('a stored zip of a zip: the inner zip is not a snapshot → format', async () => {
      const buf = (await zipBuffer([{ name: 'x', data: good.buffer, method: 'store' }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({
        ok: false,
        reason: 'format',
        detail: 'zip entry x: not a bbolt snapshot (no bbolt magic in the meta pages)',
      });
    });

    it.each([0, 10, 31, 33, 100])('an inner entry of %i bytes is refused, not crashed on', async (n) => {
      const buf = (await zipBuffer([{ name: 'x', data: small.subarray(0, n) }])).buffer;
      expect(await verifyBuf(buf, 'x.zip')).toMatchObject({ ok: false, reason: 'truncated', detail: expect.stringMatching(/^zip entry x: /) });
    });
  });
});

describe('properties', () => {
  it('no single flipped byte anywhere in a raw snapshot passes', async () => {
    const path = join(dir, 'prop-flip.db');
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: small.length - 1 }), async (at) => {
        await writeFile(path, flipByte(small, at));
        const v = await verifyPath(path);
        expect(v.ok).toBe(false);
        expect(['corrupt', 'format']).toContain(!v.ok && v.reason);
      }),
      { numRuns: 300 },
    );
  });

  it('no prefix of a raw snapshot passes; every prefix reads as unfinished or damaged, never as another format', async () => {
    const path = join(dir, 'prop-cut.db');
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: medium.length - 1 }), async (at) => {
        await writeFile(path, medium.subarray(0, at));
        const v = await verifyPath(path);
        expect(v).toMatchObject({ ok: false, reason: 'truncated' });
        expect((await quick(path, 'raw'))?.reason).toBe('truncated');
      }),
      { numRuns: 300 },
    );
  });

  it('a flipped byte anywhere in a zip never hangs, never throws, and never passes unless it hit a field nobody checks', async () => {
    const { buffer, layout } = await zipBuffer([
      { name: '/backup/x', data: small },
      { name: '/etc/kubernetes/x.rkestate', data: '{"a":1}' },
    ]);
    // Fields no reader relies on: versions, the high flag byte (UTF-8 names), DOS time/date, the
    // extended-timestamp extras, attributes.
    const harmless = new Set<number>();
    for (const e of layout.entries) {
      for (const i of [4, 5, 7, 10, 11, 12, 13]) harmless.add(e.localHeaderOffset + i);
      const nameLen = Buffer.byteLength(e.name);
      for (let i = 0; i < 9; i++) harmless.add(e.localHeaderOffset + 30 + nameLen + i);
      for (const i of [4, 5, 6, 7, 9, 12, 13, 14, 15, 36, 37, 38, 39, 40, 41]) harmless.add(e.centralHeaderOffset + i);
      for (let i = 0; i < 9; i++) harmless.add(e.centralHeaderOffset + 46 + nameLen + i);
    }
    const path = join(dir, 'x.zip');
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: buffer.length - 1 }), async (at) => {
        await writeFile(path, flipByte(buffer, at));
        const v = await verifyPath(path);
        if (v.ok) expect(harmless.has(at), `flip at ${at} passed`).toBe(true);
      }),
      { numRuns: 400 },
    );
  });

  it('no prefix of a zip passes', async () => {
    const { buffer } = await zipBuffer([{ name: '/backup/x', data: medium }], { zip64: true });
    const path = join(dir, 'x.zip');
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: buffer.length - 1 }), async (at) => {
        await writeFile(path, buffer.subarray(0, at));
        expect(await verifyPath(path)).toMatchObject({ ok: false, reason: 'truncated' });
      }),
      { numRuns: 200 },
    );
  });
});

describe('verifyPath', () => {
  it('refuses a symlink, even to a good snapshot', async () => {
    const link = join(dir, 'link.db');
    await symlink(fixturePath('etcd-small.db'), link);
    expect(await verifyPath(link)).toMatchObject({ ok: false, reason: 'format', detail: expect.stringContaining('symbolic link') });
  });

  it('refuses a FIFO without blocking on it', async () => {
    const fifo = join(dir, 'fifo.db');
    execFileSync('mkfifo', [fifo]);
    expect(await verifyPath(fifo)).toEqual({ ok: false, reason: 'format', detail: 'not a regular file (FIFO)' });
  });

  it('refuses a directory', async () => {
    expect(await verifyPath(dir)).toMatchObject({ ok: false, reason: 'format', detail: 'not a regular file (directory)' });
  });

  it('throws on a missing file', async () => {
    await expect(verifyPath(join(dir, 'nope.db'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('throws the abort reason when aborted', async () => {
    const ac = new AbortController();
    ac.abort(new Error('shutting down'));
    await expect(verifyPath(fixturePath('etcd-small.db'), { signal: ac.signal })).rejects.toThrow('shutting down');
  });
});

describe('verifyFile', () => {
  it('notices a file that grew after its size was taken', async () => {
    const path = await put(small);
    const fh = await open(path, 'r');
    try {
      await writeFile(path, Buffer.concat([small, Buffer.alloc(512)]));
      expect(await verifyFile(fh, small.length)).toMatchObject({ ok: false, reason: 'truncated', detail: expect.stringContaining('changed size') });
    } finally {
      await fh.close();
    }
  });

  it('notices a file that shrank while being read', async () => {
    const path = await put(small);
    const fh = await open(path, 'r');
    try {
      await truncate(path, 70_000);
      const v = await verifyFile(fh, small.length);
      expect(v).toMatchObject({ ok: false, reason: 'truncated' });
    } finally {
      await fh.close();
    }
  });

  it('aborts between chunks of a large file', async () => {
    const path = join(dir, 'abort.db');
    await writeSyntheticSnapshot(path, { bytes: 64 << 20 });
    const ac = new AbortController();
    const fh = await open(path, 'r');
    try {
      const p = verifyFile(fh, (await fh.stat()).size, { signal: ac.signal });
      setImmediate(() => ac.abort());
      await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    } finally {
      await fh.close();
      await rm(path);
    }
  });
});

describe('large files: one pass, fixed memory', () => {
  const MiB = 1 << 20;
  const bench = process.env.VERIFY_BENCH === '1';
  const bytes = bench ? 512 * MiB : 64 * MiB;

  it.each(['zero', 'random'] as const)(
    `raw and zip of ${bytes / MiB} MiB (%s fill)`,
    async (fill) => {
      const raw = join(dir, `big-${fill}.db`);
      const made = await writeSyntheticSnapshot(raw, { bytes, fill });
      const zipPath = join(dir, `big-${fill}.db.zip`);
      await writeZip(zipPath, [{ name: `big-${fill}.db`, path: raw }], { zip64: true, chunkSize: MiB, level: 1 });
      const zipSize = (await stat(zipPath)).size;
      try {
        const results: string[] = [];
        for (const [path, size] of [
          [raw, made.size],
          [zipPath, zipSize],
        ] as const) {
          const before = process.memoryUsage();
          const t0 = process.hrtime.bigint();
          const v = await verifyPath(path);
          const secs = Number(process.hrtime.bigint() - t0) / 1e9;
          const after = process.memoryUsage();
          expect(v).toMatchObject({ ok: true, size, dbSize: made.size });
          if (path === raw) expect(v.ok && v.sha256).toBe(made.sha256);
          else expect(v.ok && v.sha256).toBe(await sha256File(zipPath));
          // Buffers are reused: nothing near the file's size may stay or build up.
          expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(32 * MiB);
          results.push(
            `${path === raw ? 'raw' : 'zip'} ${(size / MiB).toFixed(1)} MiB in ${secs.toFixed(2)} s = ${(size / MiB / secs).toFixed(0)} MiB/s of file, ${(made.size / MiB / secs).toFixed(0)} MiB/s of snapshot`,
          );
        }
        console.log(`verify throughput (${fill} fill): ${results.join('; ')}`);
      } finally {
        await rm(raw, { force: true });
        await rm(zipPath, { force: true });
      }
    },
    300_000,
  );
});
