import { spawnSync } from 'node:child_process';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZipError, findEocd, readLocalHeaders, readZipDirectory, type ZipDirectory } from '../../agent/snapshot/zip.js';
import { readAt } from '../../agent/base/files.js';
import { fixturePath } from '../support/snapshots.js';
import { zipBuffer, type WriteZipOptions, type ZipInput } from '../support/handmade-zip.js';

let dir: string;
let small: Buffer;
let seq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'zip-test-'));
  small = await readFile(fixturePath('etcd-small.db'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(buf: Buffer): Promise<string> {
  const p = join(dir, `z-${++seq}.zip`);
  await writeFile(p, buf);
  return p;
}

async function readDir(path: string): Promise<ZipDirectory> {
  const fh = await open(path, 'r');
  try {
    const dirInfo = await readZipDirectory((p, l) => readAt(fh, p, l), (await fh.stat()).size);
    await readLocalHeaders((p, l) => readAt(fh, p, l), dirInfo);
    return dirInfo;
  } finally {
    await fh.close();
  }
}

async function problem(buf: Buffer): Promise<{ reason: string; message: string } | undefined> {
  try {
    await readDir(await put(buf));
    return undefined;
  } catch (err) {
    if (err instanceof ZipError) return { reason: err.reason, message: err.message };
    throw err;
  }
}

const hasUnzip = spawnSync('unzip', ['-v']).status === 0;

describe('findEocd', () => {
  const eocd = (commentLen: number): Buffer => {
    const b = Buffer.alloc(22);
    b.writeUInt32LE(0x06054b50, 0);
    b.writeUInt16LE(commentLen, 20);
    return b;
  };
  it.each([
    ['at the very end', Buffer.concat([Buffer.alloc(100), eocd(0)]), 100],
    ['before a comment', Buffer.concat([Buffer.alloc(100), eocd(5), Buffer.from('hello')]), 100],
    ['the real one, not a look-alike inside the comment', Buffer.concat([Buffer.alloc(10), eocd(22), eocd(7)]), 10],
    ['missing', Buffer.alloc(100), -1],
    ['comment length does not reach the end (cut file)', Buffer.concat([Buffer.alloc(10), eocd(30), Buffer.alloc(5)]), -1],
  ])('%s', (_label, tail, want) => {
    expect(findEocd(tail, 0, tail.length)).toBe(want);
  });
});

describe('reading hand-made zips (the shapes writers other than Go use too)', () => {
  const inputs: ZipInput[] = [
    { name: '/backup/2024-05-01T12:00:00Z_etcd', data: '' },
    { name: '/etc/kubernetes/2024-05-01T12:00:00Z_etcd.rkestate', data: '{"desiredState":{}}' },
  ];
  const variants: Array<[string, WriteZipOptions]> = [
    ['data descriptors', {}],
    ['sizes in local headers', { dataDescriptor: false }],
    ['forced Zip64 with data descriptors', { zip64: true }],
    ['forced Zip64, sizes in local headers', { zip64: true, dataDescriptor: false }],
    ['with a comment', { comment: 'x'.repeat(300) }],
    ['with a 5000-byte comment (past the first, small tail read)', { comment: 'x'.repeat(5000) }],
    ['Zip64 with the longest comment', { zip64: true, comment: 'x'.repeat(65535) }],
  ];

  it.each(variants)('%s: directory matches what was written', async (_label, opts) => {
    const ins = [{ ...inputs[0]!, data: small }, inputs[1]!];
    const { buffer, layout } = await zipBuffer(ins, opts);
    const d = await readDir(await put(buffer));
    expect(d.zip64).toBe(Boolean(opts.zip64));
    expect(d.cdOffset).toBe(layout.cdOffset);
    expect(d.cdSize).toBe(layout.cdSize);
    expect(d.eocdOffset).toBe(layout.eocdOffset);
    expect(d.entries.map((e) => [e.name, e.method, e.crc32, e.compressedSize, e.uncompressedSize, e.localHeaderOffset, e.dataOffset])).toEqual(
      layout.entries.map((e) => [e.name, e.method, e.crc32, e.compressedSize, e.uncompressedSize, e.localHeaderOffset, e.dataOffset]),
    );
  });

  it.runIf(hasUnzip).each(variants)('%s: Info-ZIP `unzip -t` accepts it (the writer is sound)', async (_label, opts) => {
    const { buffer } = await zipBuffer([{ ...inputs[0]!, data: small }, inputs[1]!], opts);
    const r = spawnSync('unzip', ['-tq', await put(buffer)], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toContain('No errors detected');
    expect(r.status).toBe(0);
  });

  it('an empty zip (end record only) has no entries', async () => {
    const { buffer } = await zipBuffer([]);
    expect(buffer.length).toBe(22);
    expect((await readDir(await put(buffer))).entries).toEqual([]);
  });

  it('a UTF-8 entry name round-trips', async () => {
    const { buffer } = await zipBuffer([{ name: 'snapshot-ü', data: 'x' }]);
    expect((await readDir(await put(buffer))).entries[0]!.name).toBe('snapshot-ü');
  });
});

describe('zips by other producers', () => {
  it('Info-ZIP (zip -9): one deflated entry named like the zip', async () => {
    const d = await readDir(fixturePath('etcd-small.db.zip'));
    expect(d.entries).toHaveLength(1);
    expect(d.entries[0]).toMatchObject({ name: 'etcd-small.db', method: 8, uncompressedSize: small.length });
  });

  it('Python zipfile with force_zip64: Zip64 local extras, 32-bit end record', async () => {
    const d = await readDir(fixturePath('etcd-small-py64.zip'));
    expect(d.zip64).toBe(false);
    expect(d.entries[0]).toMatchObject({ name: 'etcd-small-py64', method: 8, uncompressedSize: small.length });
    const raw = await readFile(fixturePath('etcd-small-py64.zip'));
    expect(raw.readUInt32LE(18)).toBe(0xffffffff); // local header sizes live in the zip64 extra
  });
});

describe('broken zips', () => {
  let good: Awaited<ReturnType<typeof zipBuffer>>;
  let good64: Awaited<ReturnType<typeof zipBuffer>>;
  let plain: Awaited<ReturnType<typeof zipBuffer>>;
  beforeAll(async () => {
    const ins: ZipInput[] = [
      { name: '/backup/x', data: small },
      { name: '/etc/kubernetes/x.rkestate', data: '{}' },
    ];
    good = await zipBuffer(ins);
    good64 = await zipBuffer(ins, { zip64: true });
    plain = await zipBuffer(ins, { dataDescriptor: false });
  });

  const edit = (buf: Buffer, f: (b: Buffer) => void): Buffer => {
    const out = Buffer.from(buf);
    f(out);
    return out;
  };

  it.each([
    ['empty', () => Buffer.alloc(0), 'truncated', /empty/],
    ['shorter than an end record', () => good.buffer.subarray(0, 21), 'truncated', /no end-of-central-directory/],
    ['cut before the end record', () => good.buffer.subarray(0, good.layout.eocdOffset), 'truncated', /no end-of-central-directory record/],
    ['cut inside the end record', () => good.buffer.subarray(0, good.buffer.length - 3), 'truncated', /no end-of-central-directory record/],
    ['Zip64: cut inside the end record', () => good64.buffer.subarray(0, good64.buffer.length - 3), 'truncated', /no end-of-central-directory/],
    [
      'entry count larger than the directory',
      () =>
        edit(good.buffer, (b) => {
          b.writeUInt16LE(3, good.layout.eocdOffset + 8);
          b.writeUInt16LE(3, good.layout.eocdOffset + 10);
        }),
      'format',
      /fewer than the 3 entries/,
    ],
    ['multi-disk', () => edit(good.buffer, (b) => b.writeUInt16LE(1, good.layout.eocdOffset + 4)), 'format', /multi-disk/],
    [
      'directory offset past the end record',
      () => edit(good.buffer, (b) => b.writeUInt32LE(good.layout.eocdOffset, good.layout.eocdOffset + 16)),
      'format',
      /runs past the end record/,
    ],
    ['directory offset pointing into data', () => edit(good.buffer, (b) => b.writeUInt32LE(100, good.layout.eocdOffset + 16)), 'format', /bad signature/],
    [
      'Zip64 locator pointing nowhere',
      () => edit(good64.buffer, (b) => b.writeBigUInt64LE(7n, good64.layout.eocdOffset - 20 + 8)),
      'format',
      /no zip64 end record at offset 7/,
    ],
    [
      'saturated end record without Zip64 locator',
      () => edit(good64.buffer, (b) => b.writeUInt32LE(0, good64.layout.eocdOffset - 20)),
      'format',
      /zip64 locator is missing/,
    ],
    [
      'Zip64 extra field missing',
      () => edit(good64.buffer, (b) => b.writeUInt16LE(0x9999, good64.layout.entries[0]!.centralHeaderOffset + 46 + '/backup/x'.length)),
      'format',
      /no zip64 extra field/,
    ],
    [
      'local header offset wrong',
      () => edit(good.buffer, (b) => b.writeUInt32LE(good.layout.entries[1]!.localHeaderOffset + 1, good.layout.entries[1]!.centralHeaderOffset + 42)),
      'format',
      /rkestate: no local header at offset \d+/,
    ],
    [
      'two entries claiming one local header',
      () => edit(good.buffer, (b) => b.writeUInt32LE(0, good.layout.entries[1]!.centralHeaderOffset + 42)),
      'format',
      /overlaps the entry before it/,
    ],
    [
      'local header names another file',
      () => edit(good.buffer, (b) => b.write('Y', good.layout.entries[0]!.localHeaderOffset + 30 + 8, 'latin1')),
      'format',
      /local header names it "\/backup\/Y"/,
    ],
    [
      'local header method differs',
      () => edit(good.buffer, (b) => b.writeUInt16LE(0, good.layout.entries[0]!.localHeaderOffset + 8)),
      'format',
      /local header method 0, directory says 8/,
    ],
    [
      'local header CRC differs (no data descriptor)',
      () => edit(plain.buffer, (b) => b.writeUInt32LE(1, plain.layout.entries[0]!.localHeaderOffset + 14)),
      'corrupt',
      /disagrees with the directory/,
    ],
    [
      'entry data overlapping the directory',
      () => edit(good.buffer, (b) => b.writeUInt32LE(good.layout.cdOffset, good.layout.entries[1]!.centralHeaderOffset + 20)),
      'format',
      /runs into the central directory/,
    ],
    [
      'too many entries for a snapshot zip',
      () =>
        edit(good.buffer, (b) => {
          b.writeUInt16LE(500, good.layout.eocdOffset + 8);
          b.writeUInt16LE(500, good.layout.eocdOffset + 10);
        }),
      'format',
      /500 entries, too many/,
    ],
  ])('%s → %s', async (_label, make, reason, message) => {
    const p = await problem(make());
    expect(p?.reason).toBe(reason);
    expect(p?.message).toMatch(message);
  });

  it('every cut of a zip is truncated, and the cheap read never needs the whole file', async () => {
    for (let at = 0; at < good.buffer.length; at += 97) {
      const p = await problem(good.buffer.subarray(0, at));
      expect(p?.reason, `cut at ${at}`).toBe('truncated');
    }
  });
});
