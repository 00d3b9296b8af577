// The names gate on a real directory: a name only content can decide is read once, and a name already found
// not to be a snapshot is looked at again only within the per-rescan budget, oldest look first, so a
// directory of many unrelated files does not cost an lstat of each on every rescan, and a file that turns
// into a snapshot under such a name is still found within a bounded number of rescans.
import { copyFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../agent/ops/log.js';
import { Metrics } from '../../agent/ops/metrics.js';
import { NamesGate } from '../../agent/ship/names-gate.js';
import { fixturePath } from '../support/snapshots.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function setup(rechecksPerRescan: number) {
  const dir = await mkdtemp(join(tmpdir(), 'names-gate-'));
  dirs.push(dir);
  const cfg = { include: [], exclude: [] };
  const lines: string[] = [];
  const log = createLogger('error', new Writable({ write: (c: Buffer, _e, done) => (lines.push(c.toString()), done()) }));
  const found: string[] = [];
  const gate = new NamesGate({ cfg, log, metrics: new Metrics('test', { defaultMetrics: false }), found: (p) => found.push(p), rechecksPerRescan });
  /** what the watcher and shipper do on a rescan: the listing, then every name not yet a tracked snapshot; waits until the reads are done */
  const rescan = async () => {
    const names = await readdir(dir);
    gate.listed(new Set(names));
    for (const n of names) if (!found.includes(join(dir, n))) gate.sniff(join(dir, n));
    await gate.sniffsDone();
  };
  return { dir, gate, found, rescan, lines };
}

describe('names gate', () => {
  it('a name found not to be a snapshot is looked at again within the budget, oldest look first: turned into a snapshot, it is found within a bounded number of rescans', async () => {
    const { dir, found, rescan } = await setup(2);
    const names = ['a', 'b', 'c', 'd', 'e'];
    for (const n of names) await writeFile(join(dir, n), Buffer.alloc(100, n));
    await rescan();
    expect(found).toEqual([]);
    // every file replaced by a snapshot (a new inode, as a rename over the name would give)
    for (const n of names) {
      await rm(join(dir, n));
      await copyFile(fixturePath('etcd-small.db'), join(dir, n));
    }
    // two looks per rescan, each at a name not looked at since (the order the first reads finished in)
    await rescan();
    expect(found).toHaveLength(2);
    await rescan();
    expect(new Set(found).size).toBe(4);
    await rescan();
    expect(found.map((p) => p.slice(dir.length + 1)).sort()).toEqual(names);
  });

  it('within the budget every known name is looked at on every rescan, and a new name at once', async () => {
    const { dir, found, rescan } = await setup(2000);
    for (const n of ['x', 'y']) await writeFile(join(dir, n), Buffer.alloc(100, n));
    await rescan();
    await rm(join(dir, 'y'));
    await copyFile(fixturePath('etcd-small.db'), join(dir, 'y'));
    await copyFile(fixturePath('etcd-small.db'), join(dir, 'z'));
    await rescan();
    expect(found.map((p) => p.slice(dir.length + 1)).sort()).toEqual(['y', 'z']);
  });

  it('a name that is not UTF-8 is found in the listing and said once with its bytes; a valid non-ASCII name is not', async () => {
    const { dir, gate, lines } = await setup(2000);
    await writeFile(Buffer.concat([Buffer.from(`${dir}/bad-`), Buffer.from([0xff, 0xfe]), Buffer.from('.db')]), 'x');
    await writeFile(join(dir, 'café.db'), 'x');
    expect(await gate.checkName(join(dir, 'bad-\ufffd\ufffd.db'))).toBe(true);
    expect(await gate.checkName(join(dir, 'bad-\ufffd\ufffd.db'))).toBe(true);
    expect(await gate.checkName(join(dir, 'café.db'))).toBe(false);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('bad-\\\\xff\\\\xfe.db');
  });
});
