// The verifier against zips written by Go's own archive/zip, called as rke-tools and k3s call it
// (test/support/gozip): complete ones pass, ones cut by a full disk do not, and our reading of the central
// directory agrees with Go's own reader.
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quickCheck, verifyPath } from '../../agent/snapshot/verifier.js';
import { FLAG_DATA_DESCRIPTOR, readLocalHeaders, readZipDirectory, type ZipDirectory } from '../../agent/snapshot/zip.js';
import { readAt } from '../../agent/base/files.js';
import { goList, goZip, goZipBinary, startGoZip, type GoListedEntry } from '../support/go-zip.js';
import { fixturePath } from '../support/snapshots.js';

const FIXTURES = ['etcd-small.db', 'etcd-medium.db'] as const;
const RKE_NAME = '2024-05-01T12:00:00Z_etcd';
const K3S_NAME = 'etcd-snapshot-node1-1714564800';
const K3S_TIME = new Date(1714564800 * 1000);
const STATE = JSON.stringify({ desiredState: { rkeConfig: { nodes: [] } }, currentState: {} }, null, 2);

let dir: string;
let seq = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gozip-test-'));
  await goZipBinary(); // the first build may take a few seconds; not part of any test's time
}, 120_000);
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fresh directory holding the fixture under the producer's raw name, as etcdctl leaves it (0600). */
async function rawCopy(fixture: string, name: string): Promise<{ dir: string; raw: string }> {
  const d = join(dir, String(++seq));
  await mkdir(d);
  const raw = join(d, name);
  await copyFile(fixturePath(fixture), raw);
  execFileSync('chmod', ['600', raw]);
  return { dir: d, raw };
}

async function rkeZipOf(fixture: string, opts: { truncateAt?: number; finish?: boolean } = {}) {
  const { dir: d, raw } = await rawCopy(fixture, RKE_NAME);
  const state = join(d, `${RKE_NAME}.rkestate`);
  await writeFile(state, STATE);
  const zip = `${raw}.zip`;
  const result = await goZip('rke', raw, zip, { rkestate: state, ...opts });
  return { raw, state, zip, result };
}

async function k3sZipOf(fixture: string, opts: { truncateAt?: number; finish?: boolean } = {}) {
  const { raw } = await rawCopy(fixture, K3S_NAME);
  const zip = `${raw}.zip`;
  const result = await goZip('k3s', raw, zip, { mtime: K3S_TIME, ...opts });
  return { raw, zip, result };
}

async function readDirectory(path: string): Promise<ZipDirectory> {
  const fh = await open(path, 'r');
  try {
    const d = await readZipDirectory((p, l) => readAt(fh, p, l), (await fh.stat()).size);
    await readLocalHeaders((p, l) => readAt(fh, p, l), d);
    return d;
  } finally {
    await fh.close();
  }
}

async function quick(path: string) {
  const fh = await open(path, 'r');
  try {
    return await quickCheck(fh, (await fh.stat()).size, 'zip');
  } finally {
    await fh.close();
  }
}

const sha256sum = (path: string): string => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0]!;
const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );

/** Our reading of the directory, in the terms Go's reader reports. */
function ours(d: ZipDirectory) {
  return d.entries.map((e) => ({
    name: e.name,
    method: e.method,
    flags: e.flags,
    crc32: e.crc32,
    compressedSize: e.compressedSize,
    uncompressedSize: e.uncompressedSize,
    dataOffset: e.dataOffset,
  }));
}
const goView = (entries: GoListedEntry[]) =>
  entries.map(({ name, method, flags, crc32, compressedSize, uncompressedSize, dataOffset }) => ({
    name,
    method,
    flags,
    crc32,
    compressedSize,
    uncompressedSize,
    dataOffset,
  }));

describe.each(FIXTURES)('Go-made zips of %s', (fixture) => {
  let size: number;
  beforeAll(async () => {
    size = (await stat(fixturePath(fixture))).size;
  });

  it('RKE (rke-tools): verified, the snapshot entry found, the zip hashed as stored', async () => {
    const { zip, result } = await rkeZipOf(fixture);
    expect(result.ok).toBe(true);
    expect(await verifyPath(zip)).toEqual({
      ok: true,
      format: 'zip',
      size: (await stat(zip)).size,
      sha256: sha256sum(zip),
      dbSize: size,
      entry: `/backup/${RKE_NAME}`,
    });
    expect(await quick(zip)).toBeUndefined();
  });

  it('k3s: verified, one entry named like the zip', async () => {
    const { zip, result } = await k3sZipOf(fixture);
    expect(result.ok).toBe(true);
    expect(await verifyPath(zip)).toEqual({ ok: true, format: 'zip', size: (await stat(zip)).size, sha256: sha256sum(zip), dbSize: size, entry: K3S_NAME });
  });

  it('RKE: our central directory is the one Go wrote (names, Deflate, data descriptors, offsets)', async () => {
    const { zip } = await rkeZipOf(fixture);
    const go = await goList(zip);
    const d = await readDirectory(zip);
    expect(d.zip64).toBe(false);
    expect(ours(d)).toEqual(goView(go));
    expect(go.map((e) => e.name)).toEqual([`/backup/${RKE_NAME}`, `/etc/kubernetes/${RKE_NAME}.rkestate`]);
    expect(go.map((e) => e.uncompressedSize)).toEqual([size, Buffer.byteLength(STATE)]);
    for (const e of d.entries) {
      expect(e.method).toBe(8);
      expect(e.flags & FLAG_DATA_DESCRIPTOR).toBe(FLAG_DATA_DESCRIPTOR);
      // the local header holds the name and the 9-byte extended timestamp, nothing more
      expect(e.dataOffset - e.localHeaderOffset).toBe(30 + e.nameBytes.length + 9);
    }
    expect(go.every((e) => e.read === 'ok' && e.modified === 0)).toBe(true);
  });

  it('k3s: our central directory is the one Go wrote, dated with the snapshot time', async () => {
    const { zip } = await k3sZipOf(fixture);
    const go = await goList(zip);
    expect(ours(await readDirectory(zip))).toEqual(goView(go));
    expect(go).toMatchObject([
      { name: K3S_NAME, method: 8, flags: FLAG_DATA_DESCRIPTOR, uncompressedSize: size, modified: K3S_TIME.getTime() / 1000, read: 'ok' },
    ]);
  });
});

describe('what Go writes, byte by byte (what the verifier relies on)', () => {
  it('local header: version 2.0, data descriptor flag, CRC and sizes zero, the timestamp extra', async () => {
    const { zip } = await rkeZipOf('etcd-small.db');
    const b = await readFile(zip);
    expect(b.readUInt32LE(0)).toBe(0x04034b50);
    expect(b.readUInt16LE(4)).toBe(20);
    expect(b.readUInt16LE(6)).toBe(0x0008);
    expect(b.readUInt16LE(8)).toBe(8);
    expect([b.readUInt32LE(14), b.readUInt32LE(18), b.readUInt32LE(22)]).toEqual([0, 0, 0]);
    const nameLen = b.readUInt16LE(26);
    expect(b.readUInt16LE(28)).toBe(9);
    expect(b.readUInt16LE(30 + nameLen)).toBe(0x5455);
    // no comment, no Zip64 records: the end record closes the file
    expect(b.readUInt32LE(b.length - 22)).toBe(0x06054b50);
  });
});

describe('a full disk while the producer writes', () => {
  let whole: number;
  beforeAll(async () => {
    whole = (await stat((await rkeZipOf('etcd-medium.db')).zip)).size;
  });

  it('RKE, disk full mid-file: rke-tools sees the failure and keeps the raw file; the cut zip is rejected', async () => {
    const cut = Math.floor(whole / 2);
    const { raw, state, zip, result } = await rkeZipOf('etcd-medium.db', { truncateAt: cut, finish: true });
    expect(result).toMatchObject({ ok: false, stderr: expect.stringContaining('no space left on device') });
    expect((await stat(zip)).size).toBe(cut);
    expect(await exists(raw)).toBe(true);
    expect(await exists(state)).toBe(true);
    expect(await verifyPath(zip)).toMatchObject({ ok: false, reason: 'truncated' });
    expect(await quick(zip)).toMatchObject({ reason: 'truncated' });
    await expect(goList(zip)).rejects.toThrow(/not a valid zip/);
  });

  it('RKE, disk full in the last bytes: rke-tools ignores the Close error, deletes the raw file, keeps a cut zip', async () => {
    const cut = whole - 10;
    const { raw, state, zip, result } = await rkeZipOf('etcd-medium.db', { truncateAt: cut, finish: true });
    expect(result.ok).toBe(true); // what rke-tools believes
    expect(await exists(raw)).toBe(false);
    expect(await exists(state)).toBe(false);
    const st = await stat(zip);
    expect(st.size).toBe(cut);
    expect(st.mode & 0o777).toBe(0o600);
    expect(await verifyPath(zip)).toMatchObject({ ok: false, reason: 'truncated' });
  });

  it('k3s, disk full: the raw file is deleted whatever happened; the cut zip is rejected', async () => {
    const full = await k3sZipOf('etcd-medium.db');
    const zipSize = (await stat(full.zip)).size;
    expect((await stat(full.zip)).mode & 0o777).toBe(0o666 & ~process.umask()); // os.Create, never chmod
    for (const cut of [100, Math.floor(zipSize / 2), zipSize - 1]) {
      const { raw, zip } = await k3sZipOf('etcd-medium.db', { truncateAt: cut, finish: true });
      expect(await exists(raw), `cut at ${cut}`).toBe(false);
      expect((await stat(zip)).size).toBe(cut);
      expect(await verifyPath(zip), `cut at ${cut}`).toMatchObject({ ok: false, reason: 'truncated' });
    }
  });

  it('every cut of a Go-made zip is truncated, never corrupt or accepted', async () => {
    const { zip } = await rkeZipOf('etcd-small.db');
    const bytes = await readFile(zip);
    const path = join(dir, 'cut.zip');
    for (let at = 0; at < bytes.length; at += 61) {
      await writeFile(path, bytes.subarray(0, at));
      expect(await verifyPath(path), `cut at ${at}`).toMatchObject({ ok: false, reason: 'truncated' });
    }
  });
});

describe('in place, while the producer writes', () => {
  it('the half-written zip is truncated while the writer stalls, verified once it finishes; writes come in 4 KiB', async () => {
    const { raw } = await rawCopy('etcd-medium.db', RKE_NAME);
    const zip = `${raw}.zip`;
    const run = startGoZip('rke', raw, zip, { pauseAt: 6000 });
    const at = await run.paused;
    expect(at % 4096).toBe(0); // zip.Writer's bufio.Writer: the file grows by 4 KiB
    expect((await stat(zip)).size).toBe(at);
    expect(await quick(zip)).toMatchObject({ reason: 'truncated' });
    expect(await verifyPath(zip)).toMatchObject({ ok: false, reason: 'truncated' });
    await new Promise((r) => setTimeout(r, 50));
    expect((await stat(zip)).size).toBe(at); // nothing written while paused
    run.resume();
    expect(await run.done).toMatchObject({ ok: true });
    expect(await verifyPath(zip)).toMatchObject({ ok: true, entry: `/backup/${RKE_NAME}` });
  });

  it('a pause point past the end of the zip is reported, not waited for forever', async () => {
    const { raw } = await rawCopy('etcd-small.db', K3S_NAME);
    const run = startGoZip('k3s', raw, `${raw}.zip`, { pauseAt: 1 << 30 });
    await expect(run.paused).rejects.toThrow(/never reached/);
    expect(await run.done).toMatchObject({ ok: true });
  });
});

describe("Go's Zip64 records (a zip starting 5 GiB into a sparse file)", () => {
  it('offsets past 4 GiB: saturated fields, the Zip64 extra and end records, read as Go wrote them', async () => {
    const { raw } = await rawCopy('etcd-small.db', K3S_NAME);
    const zip = `${raw}.zip`;
    const offset = 5 * 2 ** 30;
    await goZip('k3s', raw, zip, { offset, mtime: K3S_TIME });
    const d = await readDirectory(zip);
    expect(d.zip64).toBe(true);
    expect(d.cdOffset).toBeGreaterThan(offset);
    expect(d.entries[0]!.localHeaderOffset).toBe(offset);
    expect(ours(d)).toEqual(goView(await goList(zip)));
    const fh = await open(zip, 'r');
    try {
      const central = Buffer.alloc(46);
      await fh.read(central, 0, 46, d.cdOffset);
      expect(central.readUInt32LE(42)).toBe(0xffffffff); // the real offset lives in the Zip64 extra
      expect(central.readUInt16LE(6)).toBe(20); // Go raises the version only for sizes past 4 GiB
    } finally {
      await fh.close();
    }
  });
});
