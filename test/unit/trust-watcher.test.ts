// The directory watcher (issue 10, item 9: it replaced chokidar, which held a watch per file and re-read the
// whole directory with an lstat per entry on every change). On a real directory: every create, write,
// rename and delete is reported by name with one inotify watch; the directory removed, made again, or
// replaced under the same path is noticed and watched anew; ignored names cost nothing.
import { appendFile, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Watcher } from '../../agent/detect/watcher.js';
import { createLogger } from '../../agent/ops/log.js';
import { PassThrough } from 'node:stream';

let root: string;
let dir: string;
let watcher: Watcher;
const seen: string[] = [];
const ups: boolean[] = [];
const listings: string[][] = [];

const until = async (what: string, pred: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; seen: ${JSON.stringify(seen.slice(-10))}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

async function inotifyWatches(): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) n += (await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('inotify wd:')).length;
  return n;
}

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'trust-watcher-'));
  dir = path.join(root, 'snapshots');
  await mkdir(dir);
  seen.length = 0;
  ups.length = 0;
  listings.length = 0;
  watcher = new Watcher(dir, { rescanIntervalMs: 60_000, missingPollMs: 100, ignore: (n) => n.endsWith('.part') }, { seen: (p) => seen.push(path.basename(p)), directory: (up) => ups.push(up), listed: (names) => listings.push([...names]) }, createLogger('error', new PassThrough()));
});

afterEach(async () => {
  await watcher.close();
  await rm(root, { recursive: true, force: true });
});

describe('the directory watcher', () => {
  it('lists what is there at start, then reports creates, writes, renames and deletes by name', async () => {
    await writeFile(path.join(dir, 'before.db'), 'x');
    await watcher.start();
    expect(watcher.watching).toBe(true);
    expect(listings[0]).toEqual(['before.db']);
    expect(seen).toContain('before.db');
    await writeFile(path.join(dir, 'new.db'), 'x');
    await until('the create', () => seen.includes('new.db'));
    seen.length = 0;
    await appendFile(path.join(dir, 'new.db'), 'more');
    await until('the write', () => seen.includes('new.db'));
    await writeFile(path.join(dir, 'x.db.part'), 'x');
    await rename(path.join(dir, 'x.db.part'), path.join(dir, 'renamed.db'));
    await until('the rename', () => seen.includes('renamed.db'));
    seen.length = 0;
    await rm(path.join(dir, 'before.db'));
    await until('the delete', () => seen.includes('before.db'));
    // ignored names never reach the shipper
    expect(seen.filter((n) => n.endsWith('.part'))).toEqual([]);
  });

  it('one inotify watch, however many files', async () => {
    const before = await inotifyWatches();
    await watcher.start();
    await Promise.all(Array.from({ length: 2000 }, (_, i) => writeFile(path.join(dir, `f-${i}.txt`), 'x')));
    await until('2000 creates', () => new Set(seen).size >= 2000);
    expect((await inotifyWatches()) - before).toBe(1);
  });

  it('the directory removed: reported down; made again: watched again, and what is in it listed', async () => {
    await watcher.start();
    await rm(dir, { recursive: true });
    await watcher.rescan();
    await until('down', () => ups.includes(false));
    expect(watcher.watching).toBe(false);
    await mkdir(dir);
    await writeFile(path.join(dir, 'late.db'), 'x');
    await until('up again', () => watcher.watching && seen.includes('late.db'));
    await writeFile(path.join(dir, 'later.db'), 'x');
    await until('events from the new directory', () => seen.includes('later.db'));
  });

  it('the directory replaced under the same path (moved away, another made): the next rescan watches the new one', async () => {
    await watcher.start();
    await rename(dir, path.join(root, 'old'));
    await mkdir(dir);
    await watcher.rescan();
    await until('watched again', () => watcher.watching && ups.filter((u) => !u).length >= 1);
    await writeFile(path.join(dir, 'after.db'), 'x');
    await until('events from the replacement', () => seen.includes('after.db'));
    seen.length = 0;
    await writeFile(path.join(root, 'old', 'stale.db'), 'x');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).not.toContain('stale.db');
  });
});
