// The narrowed chokidar (agent/detect/listing.ts) on a real directory: it still reports add, change and unlink
// of the names the agent wants, at start and later, while a directory read lstat()s only those names, not
// the thousands of others beside them. If chokidar stopped calling the overridden listing, no name would be
// statted and the first test fails.
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { NarrowWatcher } from '../../agent/detect/listing.js';

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const skip = (name: string): boolean => !name.endsWith('.db');

async function watched(dir: string) {
  const events: string[] = [];
  const w = new NarrowWatcher({ depth: 0, ignoreInitial: false, ignored: (p: string) => p !== dir && skip(basename(p)), persistent: true }, skip);
  cleanup.push(() => w.close());
  for (const ev of ['add', 'change', 'unlink'] as const) w.on(ev, (p: string) => events.push(`${ev} ${basename(p)}`));
  w.add(dir);
  await new Promise<void>((r) => w.once('ready', () => r()));
  return { w, events };
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'listing-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('NarrowWatcher', () => {
  it('reports the wanted names and lstat()s only them, among 5,000 others, at start and on every change', async () => {
    const dir = await tempDir();
    await Promise.all(Array.from({ length: 5000 }, (_, i) => writeFile(join(dir, `notes-${i}.txt`), 'x')));
    await writeFile(join(dir, 'a.db'), 'a');
    const { w, events } = await watched(dir);
    expect(events).toEqual(['add a.db']);
    expect(w.statted).toBe(1);

    // more unrelated files and a new snapshot: each change makes chokidar read the directory again
    await Promise.all(Array.from({ length: 2000 }, (_, i) => writeFile(join(dir, `more-${i}.part`), 'x')));
    await writeFile(join(dir, 'b.db'), 'b');
    await until('b.db added', () => events.includes('add b.db'));
    await appendFile(join(dir, 'b.db'), 'more');
    await until('b.db changed', () => events.includes('change b.db'));
    await rm(join(dir, 'a.db'));
    await until('a.db removed', () => events.includes('unlink a.db'));
    // only the .db names were ever statted by a directory read: never one of the 7,000 others
    expect(w.statted).toBeGreaterThanOrEqual(2);
    expect(w.statted).toBeLessThan(50);
    expect(events.filter((e) => !e.includes('.db'))).toEqual([]);
  });

  it('a name removed between the listing and its lstat is left out, not an error', async () => {
    const dir = await tempDir();
    const { w, events } = await watched(dir);
    const errors: unknown[] = [];
    w.on('error', (e) => errors.push(e));
    for (let i = 0; i < 50; i++) {
      await writeFile(join(dir, `s${i}.db`), 'x');
      await rm(join(dir, `s${i}.db`));
    }
    await writeFile(join(dir, 'last.db'), 'x');
    await until('last.db added', () => events.includes('add last.db'));
    expect(errors).toEqual([]);
  });
});
