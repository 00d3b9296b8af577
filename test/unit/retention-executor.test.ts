// The retention executor and scheduler against an in-memory store, a real temp directory and an injected
// clock: what is deleted on disk and in S3, what is logged and counted, and that S3 being down stops it.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { parseConfig } from '../../agent/config/parse.js';
import { objectKey } from '../../agent/store/layout.js';
import { Ledger, ledgerLocation } from '../../agent/store/ledger.js';
import { createLogger } from '../../agent/ops/log.js';
import { Metrics } from '../../agent/ops/metrics.js';
import { prunePass, type LocalFileAt } from '../../agent/retention/executor.js';
import { RetentionScheduler } from '../../agent/retention/scheduler.js';
import type { ObjectInfo, UploadInfo } from '../../agent/store/store.js';
import { MemoryStore } from '../support/memory-store.js';

const NOW = Date.now();
const H = 3_600_000;

/** The shared memory store, with an outage switch and hooks into the calls retention makes. */
class RetentionStore extends MemoryStore {
  down = false;
  readonly seen: string[] = [];
  onHead: ((key: string) => Promise<void>) | undefined;
  beforeListUploads: (() => Promise<void>) | undefined;

  private gate(): void {
    if (this.down) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
  }
  override async head(key: string): Promise<ObjectInfo | undefined> {
    this.seen.push(`head ${key}`);
    await this.onHead?.(key);
    this.gate();
    return super.head(key);
  }
  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.gate();
    yield* super.list(prefix);
  }
  override async get(key: string): Promise<{ body: AsyncIterable<Uint8Array>; size: number } | undefined> {
    this.gate();
    return super.get(key);
  }
  override async delete(key: string): Promise<void> {
    this.gate();
    this.seen.push(`delete ${key}`);
    return super.delete(key);
  }
  override async listUploads(prefix: string): Promise<UploadInfo[]> {
    this.seen.push(`list-uploads ${prefix}`);
    await this.beforeListUploads?.();
    this.gate();
    return super.listUploads(prefix);
  }
  override async abortUpload(key: string, uploadId: string): Promise<void> {
    this.gate();
    this.seen.push(`abort ${key}`);
    return super.abortUpload(key, uploadId);
  }
  /** an upload left open at `initiated` */
  open(key: string, uploadId: string, initiated: Date): void {
    this.uploads.set(uploadId, { key, opts: { metadata: {} }, initiated, parts: new Map() });
  }
}

async function setup(retention: Record<string, unknown> = {}) {
  const root = await mkdtemp(join(tmpdir(), 'retention-'));
  const snapshots = join(root, 'snapshots');
  await mkdir(snapshots);
  const cfg = parseConfig(
    stringify({ cluster: 'c1', node: 'node-a', snapshotDir: snapshots, stateDir: join(root, 'state'), s3: { bucket: 'backups' }, retention }),
    'test',
    {},
  );
  const { ledger } = await Ledger.open(cfg.stateDir, ledgerLocation(cfg));
  const store = new RetentionStore();
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger('debug', sink);
  const metrics = new Metrics('test', { defaultMetrics: false });
  const value = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const m = await metrics.registry.getSingleMetric(name)!.get();
    return m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0;
  };
  const deps = { cfg, store, ledger, log, metrics, now: () => NOW };

  /** A file in the directory; `shipped` puts it in the ledger and in the store, as the shipper would. */
  const add = async (name: string, hoursAgo: number, shipped = true): Promise<LocalFileAt> => {
    const path = join(snapshots, name);
    const body = Buffer.from(`snapshot ${name}`);
    await writeFile(path, body);
    const t = new Date(NOW - hoursAgo * H);
    await utimes(path, t, t);
    const st = await stat(path);
    const sha256 = createHash('sha256').update(body).digest('hex');
    const key = objectKey(cfg, name);
    if (shipped) {
      await ledger.record({ name, key, size: st.size, sha256, mtimeMs: st.mtimeMs, producer: 'etcdctl', confirmedAt: t.toISOString() });
      store.seed(key, body, { sha256, node: 'node-a', cluster: 'c1', name }, t);
    }
    return { name, path, state: shipped ? 'confirmed' : 'queued', size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256 };
  };
  return { cfg, ledger, store, lines, metrics, value, deps, add, snapshots };
}

describe('retention executor', () => {
  it('deletes what the plan says after HeadObject confirms it; every line names file and key; counted', async () => {
    const t = await setup({ keep: 2 });
    const files = [await t.add('a.db', 1), await t.add('b.db', 2), await t.add('c.db', 3), await t.add('d.db', 4), await t.add('e.db', 5, false)];
    const report = await prunePass(t.deps, files, { trigger: 'test' });
    expect(report.ok).toBe(true);
    expect((await readdir(t.snapshots)).sort()).toEqual(['a.db', 'b.db', 'e.db']);
    expect(t.store.seen.filter((c) => c.startsWith('head'))).toEqual(['head etcd-backup/c1/node-a/c.db', 'head etcd-backup/c1/node-a/d.db']);
    const pruned = t.lines.filter((l) => l.msg === 'retention: pruned local snapshot');
    expect(pruned.map((l) => [l.file, l.key])).toEqual([
      [join(t.snapshots, 'c.db'), 'etcd-backup/c1/node-a/c.db'],
      [join(t.snapshots, 'd.db'), 'etcd-backup/c1/node-a/d.db'],
    ]);
    expect(await t.value('etcdbackup_pruned_files_total', { location: 'local' })).toBe(2);
    expect(await t.value('etcdbackup_pruned_bytes_total', { location: 'local' })).toBe(files[2]!.size + files[3]!.size);
    expect(await t.value('etcdbackup_last_prune_success_timestamp_seconds')).toBe(NOW / 1000);
    // the ledger records S3, which still holds them
    expect(t.ledger.size).toBe(4);
  });

  it('S3 unreachable: nothing is deleted, a warning says why, the failure is counted', async () => {
    const t = await setup({ keep: 1, remote: { enabled: true, keep: 1 } });
    const files = [await t.add('a.db', 1), await t.add('b.db', 2), await t.add('c.db', 3)];
    t.store.down = true;
    const report = await prunePass(t.deps, files);
    expect(report.ok).toBe(false);
    expect(report.local.deleted).toEqual([]);
    expect(await readdir(t.snapshots)).toHaveLength(3);
    expect(report.problems.map((p) => p.phase)).toEqual(['local', 'remote', 'uploads']);
    const warn = t.lines.find((l) => l.level === 'warn' && String(l.msg).startsWith('retention: S3 unreachable; no local snapshot pruned'))!;
    expect(String(warn.error)).toMatch(/S3 unreachable at s3:\/\/memory.*ECONNREFUSED.*check s3.endpoint/);
    expect(report.local.kept.find((k) => k.name === 'c.db')!.reason).toMatch(/S3 could not confirm its copy: S3 unreachable/);
    // one unanswered S3 is enough: the later phases don't ask again
    expect(t.store.seen.some((c) => c.startsWith('list-uploads') || c.startsWith('delete'))).toBe(false);
    expect(await t.value('etcdbackup_prune_failures_total')).toBe(1);
    expect(await t.value('etcdbackup_last_prune_success_timestamp_seconds')).toBe(0);
  });

  it('dry run: logs what would go, deletes and counts nothing', async () => {
    const t = await setup({ maxAge: '2h', remote: { enabled: true, keep: 1 } });
    const files = [await t.add('a.db', 1), await t.add('b.db', 3)];
    t.store.seed(
      'etcd-backup/c1/node-a/gone.db',
      Buffer.from('gone!'),
      { sha256: 'f'.repeat(64), node: 'node-a', cluster: 'c1', name: 'gone.db' },
      new Date(NOW - 100 * H),
    );
    const report = await prunePass(t.deps, files, { dryRun: true });
    expect(report.local.deleted.map((d) => d.name)).toEqual(['b.db']);
    expect(report.remote!.deleted.map((d) => d.key)).toEqual(['etcd-backup/c1/node-a/gone.db']);
    expect(await readdir(t.snapshots)).toHaveLength(2);
    expect(t.store.objects.size).toBe(3);
    expect(t.lines.filter((l) => String(l.msg).startsWith('retention (dry run): would')).map((l) => l.key)).toEqual([
      'etcd-backup/c1/node-a/b.db',
      'etcd-backup/c1/node-a/gone.db',
    ]);
    expect(await t.value('etcdbackup_pruned_files_total', { location: 'local' })).toBe(0);
  });

  it('a file replaced after it was checked is not deleted', async () => {
    const t = await setup({ keep: 1 });
    const files = [await t.add('a.db', 1), await t.add('b.db', 2)];
    t.store.onHead = async () => writeFile(files[1]!.path, 'a new snapshot under the same name');
    const report = await prunePass(t.deps, files);
    expect(report.local.deleted).toEqual([]);
    expect(report.local.kept.find((k) => k.name === 'b.db')!.reason).toBe('changed since it was checked; the next pass decides again');
    expect(await readdir(t.snapshots)).toHaveLength(2);
  });

  it("remote retention deletes only this node's own objects and forgets them in the ledger", async () => {
    const t = await setup({ remote: { enabled: true, keep: 2 } });
    const files = [await t.add('new.db', 1)];
    for (const [i, name] of ['old1.db', 'old2.db', 'old3.db'].entries()) {
      const key = objectKey(t.cfg, name);
      await t.ledger.record({
        name,
        key,
        size: 5,
        sha256: String(i).repeat(64),
        mtimeMs: 0,
        producer: 'etcdctl',
        confirmedAt: new Date(NOW - (10 + i) * H).toISOString(),
      });
      t.store.seed(key, Buffer.from('12345'), { sha256: String(i).repeat(64), node: 'node-a', cluster: 'c1', name }, new Date(NOW - (10 + i) * H));
    }
    const foreign = ['etcd-backup/c1/node-b/old.db', 'etcd-backup/c1/node-a/notes.txt'];
    t.store.seed(foreign[0]!, Buffer.from('12345'), { sha256: 'e'.repeat(64), node: 'node-b', cluster: 'c1', name: 'old.db' }, new Date(0));
    t.store.seed(foreign[1]!, Buffer.from('12345'), {}, new Date(0));
    const report = await prunePass(t.deps, files);
    expect(report.remote!.deleted.map((d) => d.key).sort()).toEqual(['etcd-backup/c1/node-a/old2.db', 'etcd-backup/c1/node-a/old3.db']);
    expect([...t.store.objects.keys()].sort()).toEqual([...foreign, 'etcd-backup/c1/node-a/new.db', 'etcd-backup/c1/node-a/old1.db'].sort());
    expect(t.ledger.getByKey('etcd-backup/c1/node-a/old2.db')).toBeUndefined();
    expect(t.ledger.getByKey('etcd-backup/c1/node-a/old1.db')).toBeDefined();
    expect(await t.value('etcdbackup_pruned_files_total', { location: 'remote' })).toBe(2);
    expect(t.lines.filter((l) => l.msg === 'retention: deleted remote snapshot').map((l) => l.file)).toEqual(['old2.db', 'old3.db']);
  });

  it('stale multipart uploads: the injected clock decides, nobody waits a day', async () => {
    const t = await setup({ staleUploadAge: '24h' });
    const started = new Date(NOW);
    t.store.open('etcd-backup/c1/node-a/crashed.db', 'u1', started);
    t.store.open('etcd-backup/c1/node-a/busy.db', 'u2', started);
    t.store.open('etcd-backup/c1/node-b/crashed.db', 'u3', started);
    const inFlightKeys = new Set(['etcd-backup/c1/node-a/busy.db']);
    const at = (ms: number) => ({ ...t.deps, now: () => ms });
    expect((await prunePass(at(NOW + 23 * H), [], { inFlightKeys })).uploads!.aborted).toEqual([]);
    const later = await prunePass(at(NOW + 25 * H), [], { inFlightKeys });
    expect(later.uploads!.aborted.map((u) => u.uploadId)).toEqual(['u1']);
    expect([...t.store.uploads.keys()]).toEqual(['u2', 'u3']);
    const line = t.lines.find((l) => l.msg === 'retention: aborted stale multipart upload')!;
    expect(line).toMatchObject({ key: 'etcd-backup/c1/node-a/crashed.db', uploadId: 'u1', initiated: started.toISOString() });
  });
});

describe('retention scheduler', () => {
  it('runs once shortly after start, never two passes at once, and logs node-cron through winston', async () => {
    const t = await setup({ schedule: '* * * * * *' });
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    let active = 0;
    let most = 0;
    t.store.beforeListUploads = async () => {
      most = Math.max(most, ++active);
      await blocked;
      active--;
    };
    const scheduler = new RetentionScheduler({ ...t.deps, now: undefined, files: () => [], inFlightKeys: () => new Set() }, 10);
    // started just after a second begins, so the start pass (10 ms later) comes before the first cron tick
    while (Date.now() % 1000 > 100) await new Promise((r) => setTimeout(r, 5));
    scheduler.start();
    expect(t.lines.find((l) => l.msg === 'retention scheduled')).toMatchObject({ schedule: '* * * * * *', timezone: 'UTC', firstPassInSeconds: 0.01 });
    const waitLine = async (pred: (l: Record<string, unknown>) => boolean): Promise<void> => {
      while (!t.lines.some(pred)) await new Promise((r) => setTimeout(r, 20));
    };
    // the start pass is stuck in S3; the cron ticks meanwhile are refused by overlap prevention
    await waitLine((l) => l.level === 'warn' && /^node-cron: task still running/.test(String(l.msg)));
    expect(scheduler.runNow('manual')).toBe(scheduler.runNow('again'));
    release();
    await waitLine((l) => l.msg === 'retention pass finished');
    expect(t.lines.find((l) => l.msg === 'retention pass finished')!.trigger).toBe('start');
    await scheduler.stop();
    expect(await scheduler.runNow('after stop')).toBeUndefined();
    expect(most).toBe(1);
  });
});
