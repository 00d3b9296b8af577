// The ledger's writes: each is an atomic replace of the whole file, so the daemon paces them. These tests
// show that a burst of records costs a few writes, not one per record, that every record is on disk once its
// promise resolves, and that flush() writes at once what is waiting.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ledger, type LedgerEntry, type LedgerLocation } from '../../agent/store/ledger.js';

const location: LedgerLocation = { endpoint: 'http://127.0.0.1:1', bucket: 'b', prefix: 'etcd-backup/c/n/' };
let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ledger-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function entry(i: number): LedgerEntry {
  return {
    name: `s-${i}.db`,
    key: `etcd-backup/c/n/s-${i}.db`,
    size: 1000 + i,
    sha256: i.toString(16).padStart(64, '0'),
    mtimeMs: 1_700_000_000_000 + i,
    producer: 'etcdctl',
    confirmedAt: new Date(1_700_000_000_000 + i).toISOString(),
  };
}

async function onDisk(): Promise<string[]> {
  const parsed = JSON.parse(await readFile(path.join(dir, 'ledger.json'), 'utf8')) as { entries: LedgerEntry[] };
  return parsed.entries.map((e) => e.name);
}

describe('ledger writes', () => {
  it('without a delay, each record is written before its promise resolves', async () => {
    const { ledger } = await Ledger.open(dir, location);
    for (let i = 0; i < 5; i++) {
      await ledger.record(entry(i));
      expect(await onDisk()).toHaveLength(i + 1);
    }
    expect(ledger.writes).toBe(5);
    expect(ledger.unsaved).toBe(false);
  });

  it('with a delay, a burst of records shares a few writes, and each promise resolves with its record on disk', async () => {
    const { ledger } = await Ledger.open(dir, location, { saveDelayMs: 200 });
    const t0 = Date.now();
    const done: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      done.push(ledger.record(entry(i)).then(async () => expect(await onDisk()).toContain(`s-${i}.db`)));
      if (i % 20 === 19) await new Promise((r) => setTimeout(r, 10));
    }
    const loopMs = Date.now() - t0;
    // the first record is written at once; the rest wait for the delay
    expect(ledger.unsaved).toBe(true);
    await Promise.all(done);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(await onDisk()).toHaveLength(200);
    // the loop takes ~100 ms: the first write, then one per 200 ms begun while records came, and a last one
    expect(ledger.writes).toBeGreaterThanOrEqual(2);
    expect(ledger.writes).toBeLessThanOrEqual(2 + Math.ceil(loopMs / 200));
    expect(ledger.unsaved).toBe(false);
  });

  it('flush() writes at once what waits for the delay', async () => {
    const { ledger } = await Ledger.open(dir, location, { saveDelayMs: 60_000 });
    await ledger.record(entry(0));
    const waiting = ledger.record(entry(1));
    expect(await onDisk()).toEqual(['s-0.db']);
    const t0 = Date.now();
    await ledger.flush();
    await waiting;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await onDisk()).toEqual(['s-0.db', 's-1.db']);
    expect(ledger.writes).toBe(2);
    // nothing waits: flush() writes nothing more
    await ledger.flush();
    expect(ledger.writes).toBe(2);
  });

  it('a failed write leaves the ledger unsaved, and the next flush writes it', async () => {
    const { ledger } = await Ledger.open(dir, location, { saveDelayMs: 60_000 });
    await rm(dir, { recursive: true });
    await expect(ledger.record(entry(0))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(ledger.unsaved).toBe(true);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(dir);
    await ledger.flush();
    expect(ledger.unsaved).toBe(false);
    expect(await onDisk()).toEqual(['s-0.db']);
  });

  it('a reopened ledger holds what was flushed', async () => {
    const { ledger } = await Ledger.open(dir, location, { saveDelayMs: 60_000 });
    await ledger.record(entry(0));
    void ledger.record(entry(1));
    void ledger.forget(entry(0).key);
    await ledger.flush();
    const again = await Ledger.open(dir, location);
    expect(again.status).toBe('ok');
    expect(again.ledger.entries().map((e) => e.name)).toEqual(['s-1.db']);
  });
});
