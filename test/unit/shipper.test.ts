// The shipper and the daemon on the in-memory store: the queue's decisions (newest first, one backoff for the
// whole queue when the store is at fault, one per file otherwise), the drain on stop, and a lost ledger —
// all without a real S3, on real snapshot files.
import { copyFile, mkdtemp, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { parseConfig } from '../../agent/config/parse.js';
import { Daemon } from '../../agent/daemon/daemon.js';
import { createLogger } from '../../agent/ops/log.js';
import { Metrics } from '../../agent/ops/metrics.js';
import { Shipper } from '../../agent/ship/shipper.js';
import { Ledger, ledgerLocation } from '../../agent/store/ledger.js';
import { MemoryStore, s3Error } from '../support/memory-store.js';
import { fixturePath } from '../support/snapshots.js';

const SMALL = fixturePath('etcd-small.db');

async function world(extra: Record<string, unknown> = {}) {
  const root = await mkdtemp(join(tmpdir(), 'shipper-'));
  const dir = join(root, 'snapshots');
  await (await import('node:fs/promises')).mkdir(dir);
  const cfg = parseConfig(
    stringify({
      cluster: 'c1',
      node: 'n1',
      snapshotDir: dir,
      stateDir: join(root, 'state'),
      s3: { bucket: 'backups', endpoint: 'http://127.0.0.1:9', partSize: '5MiB' },
      detect: { settleTimeout: '2s', pollInterval: '100ms', zipWait: '1s', rescanInterval: '1m' },
      upload: { retryInitial: '100ms', retryMax: '1s' },
      metrics: { enabled: false },
      ...extra,
    }),
    'test',
    {},
  );
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger('debug', sink);
  const store = new MemoryStore();
  const metrics = new Metrics('test', { defaultMetrics: false });
  const ledger = Ledger.inMemory(cfg.stateDir, ledgerLocation(cfg));
  const shipper = new Shipper({ cfg, store, ledger, metrics, log, version: 'test', integrity: () => 'sha256' });
  const waitFor = async (pred: (l: Record<string, unknown>) => boolean, ms = 20_000): Promise<Record<string, unknown>> => {
    const end = Date.now() + ms;
    for (;;) {
      const hit = lines.find(pred);
      if (hit) return hit;
      if (Date.now() > end)
        throw new Error(
          `timed out; last lines:\n${lines
            .slice(-8)
            .map((l) => JSON.stringify(l))
            .join('\n')}`,
        );
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { cfg, dir, store, metrics, ledger, shipper, lines, waitFor };
}

/** a real snapshot under `name`, with mtime `ageS` seconds ago */
async function place(dir: string, name: string, ageS = 0): Promise<string> {
  const p = join(dir, name);
  await copyFile(SMALL, p);
  const t = new Date(Date.now() - ageS * 1000);
  await utimes(p, t, t);
  return p;
}

const shippedKeys = (store: MemoryStore): string[] => store.calls.filter((c) => c.op === 'completeUpload').map((c) => c.key!.split('/').pop()!);

afterEach(() => {
  vi.useRealTimers();
});

describe('shipper on the memory store', { timeout: 30_000 }, () => {
  it('ships a backlog newest first by snapshot time (the time in the name, not the mtime), one at a time', async () => {
    const w = await world();
    // RKE2 names carry the time; mtimes are shuffled the other way round
    const names = ['etcd-snapshot-n1-1700000100', 'etcd-snapshot-n1-1700000300', 'etcd-snapshot-n1-1700000200'];
    await place(w.dir, names[0]!, 10);
    await place(w.dir, names[1]!, 300);
    await place(w.dir, names[2]!, 200);
    // S3 is down for the first attempt: while the queue backs off, all three are queued
    w.store.failNext('createUpload', s3Error('SlowDown', 503));
    for (const n of names) w.shipper.seen(join(w.dir, n));
    // recorded: the object completed and HeadObject confirmed it (the store shows it a moment earlier)
    await w.waitFor(() => w.ledger.size === 3);
    expect(shippedKeys(w.store)).toEqual(['etcd-snapshot-n1-1700000300', 'etcd-snapshot-n1-1700000200', 'etcd-snapshot-n1-1700000100']);
  });

  it('a store-wide failure backs the whole queue off (doubling, with jitter); a per-file failure only that file', async () => {
    const w = await world();
    await place(w.dir, 'a.db', 20);
    await place(w.dir, 'b.db', 10);
    // the store refuses connections three times: every upload waits, not just the one that failed
    const down = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    w.store.failNext('createUpload', down, 3);
    const t0 = Date.now();
    w.shipper.seen(join(w.dir, 'a.db'));
    w.shipper.seen(join(w.dir, 'b.db'));
    await w.waitFor(() => shippedKeys(w.store).length === 2, 30_000);
    const failures = w.lines.filter((l) => l.msg === 'upload failed; the snapshot stays pending and will be retried');
    expect(failures.map((l) => l.reason)).toEqual(['network', 'network', 'network']);
    // retries after about 100, 200, 400 ms (half to full of each, the jitter): at least 350 ms in all
    expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
    // after the first failure the whole queue waits, then the newest goes first: the other file was held back
    const creates = w.store.calls.filter((c) => c.op === 'createUpload').map((c) => c.key!.split('/').pop());
    expect(creates.slice(1, 4)).toEqual(['b.db', 'b.db', 'b.db']);

    // a per-file problem (the server refused one file's bytes as damaged) does not hold the others back
    await place(w.dir, 'c.db', 5);
    await place(w.dir, 'd.db', 1);
    w.store.failNext('uploadPart', s3Error('XAmzContentSHA256Mismatch', 400), 1, (k) => Boolean(k?.endsWith('d.db')));
    w.shipper.seen(join(w.dir, 'c.db'));
    w.shipper.seen(join(w.dir, 'd.db'));
    await w.waitFor(() => shippedKeys(w.store).includes('c.db') && shippedKeys(w.store).includes('d.db'), 30_000);
    const order = shippedKeys(w.store);
    expect(order.indexOf('c.db')).toBeLessThan(order.indexOf('d.db'));
    expect(
      w.lines.some(
        (l) => l.msg === 'upload failed; the snapshot stays pending and will be retried' && l.reason === 'integrity' && String(l.file).endsWith('d.db'),
      ),
    ).toBe(true);
  });

  it('stop() drains: an upload that cannot finish within the timeout is aborted, nothing is left open or recorded', async () => {
    const w = await world();
    await place(w.dir, 'slow.db');
    // parts never get an answer until the abort
    const gate = new Promise<void>(() => {});
    const orig = w.store.uploadPart.bind(w.store);
    w.store.uploadPart = async (...a: Parameters<MemoryStore['uploadPart']>) => {
      const signal = a[5];
      await Promise.race([
        gate,
        new Promise((_, reject) => signal?.addEventListener('abort', () => reject(Object.assign(new Error('aborted'), { name: 'AbortError' })))),
      ]);
      return orig(...a);
    };
    w.shipper.seen(join(w.dir, 'slow.db'));
    await w.waitFor((l) => l.msg === 'upload started');
    const { finished } = await w.shipper.stop(300);
    expect(finished).toBe(false);
    await w.waitFor((l) => l.msg === 'upload aborted by shutdown; it will be shipped after restart');
    expect(w.store.uploads.size).toBe(0);
    expect(w.store.objects.size).toBe(0);
    expect(w.ledger.size).toBe(0);
  });

  it('a verdict that fails at the end of the read pass aborts the upload: no object, the file settles then is rejected', async () => {
    const w = await world();
    const p = await place(w.dir, 'bad.db', 60);
    // a byte in the body changed: the cheap checks pass (meta pages and size intact), the trailer does not
    const fh = await (await import('node:fs/promises')).open(p, 'r+');
    await fh.write(Buffer.from([0x55]), 0, 1, 9000);
    await fh.close();
    await utimes(p, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    w.shipper.seen(p);
    const rejected = await w.waitFor((l) => l.msg === 'snapshot rejected: not shipped and never deleted by the agent');
    expect(rejected.reason).toBe('corrupt');
    expect(w.store.objects.size).toBe(0);
    expect(w.store.uploads.size).toBe(0);
    expect(w.store.calls.some((c) => c.op === 'abortUpload')).toBe(true);
  });
});

describe('daemon on the memory store', { timeout: 30_000 }, () => {
  it('a lost ledger is rebuilt from the bucket at start: nothing shipped twice', async () => {
    const w = await world();
    await place(w.dir, 'kept.db', 30);
    const log = createLogger('error', new Writable({ write: (_c, _e, d) => d() }));
    const first = new Daemon(w.cfg, log, { version: 'test', signals: false, store: w.store });
    await first.start();
    // the daemon logs to its own sink: watch the store
    for (let i = 0; i < 400 && shippedKeys(w.store).length < 1; i++) await new Promise((r) => setTimeout(r, 25));
    expect(shippedKeys(w.store)).toEqual(['kept.db']);
    await first.stop();
    // the state directory is wiped; a new daemon finds the object and its manifest
    await (await import('node:fs/promises')).rm(w.cfg.stateDir, { recursive: true, force: true });
    const store2 = Object.assign(w.store, { closed: false });
    const second = new Daemon(w.cfg, log, { version: 'test', signals: false, store: store2 });
    await second.start();
    for (let i = 0; i < 80; i++) await new Promise((r) => setTimeout(r, 25));
    expect(second.ledger.size).toBe(1);
    expect(shippedKeys(w.store)).toEqual(['kept.db']);
    expect(second.shipper.snapshots().find((s) => s.name === 'kept.db')?.state).toBe('confirmed');
    await second.stop();
  });
});
