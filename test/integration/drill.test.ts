// The restore drill and `verify` against Ceph RGW, with snapshots of a real etcd (one of this file's own, so
// its keys and sizes are known) and the built agent: the drill passes on a sound object and fails, with the
// right reason and metric, on one replaced in S3; `verify` over a node's objects, with Debian's etcdctl for
// `--restore`; a snapshot damaged under a recomputed trailer never completes in S3; a drill and an upload
// never run at once. The drill is made due every two seconds by `verify.schedule` (cron with a seconds
// field), the way an operator would try it out.
import { GetObjectCommand, ListMultipartUploadsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rename, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs as makeDirs, writeConfig, type AgentProcess, type LogLine, type TestDirs } from '../support/agent.js';
import { readLive } from '../support/bbolt-db.js';
import { startHttpFaultProxy, type HttpFaultProxy } from '../support/http-fault-proxy.js';
import { withTrailer } from '../support/snapshots.js';
import {
  createBucket,
  emptyAndDeleteBucket,
  etcdctl,
  listKeys,
  putKeys,
  readWorldEnv,
  run,
  s3Client,
  saveSnapshot,
  PROJECT_ROOT,
  type World,
} from '../support/world.js';

let world: World;
let own: World; // the shared world's S3, with an etcd of this file's own
let etcdDir: string;
let env: NodeJS.ProcessEnv;
let proxy: HttpFaultProxy;
const bucket = `drill-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];
const roots: string[] = [];
const outputs: string[] = [];
const EVERY_2S = '*/2 * * * * *';
const FAILED = 'restore drill: backup FAILED verification; it would not restore';
const VERIFIED = 'restore drill: backup verified';

interface Status {
  revision: number;
  totalKey: number;
  hash: number;
}
const snaps: Record<'small' | 'big', { file: string; status: Status }> = {} as never;

async function status(file: string): Promise<Status> {
  const r = await etcdctl(own, ['snapshot', 'status', '-w', 'json', file]);
  const s = JSON.parse(r.stdout) as Status;
  return { revision: s.revision, totalKey: s.totalKey, hash: s.hash };
}

/** ~1 MiB random values through etcd's HTTP gateway (overflow pages; a snapshot of `mib` MiB). */
async function loadMiB(mib: number, prefix: string): Promise<void> {
  for (let i = 0; i < mib; i++) {
    const res = await fetch(`${own.etcd.endpoints}/v3/kv/put`, {
      method: 'POST',
      body: JSON.stringify({ key: Buffer.from(`${prefix}${String(i).padStart(4, '0')}`).toString('base64'), value: randomBytes(1 << 20).toString('base64') }),
    });
    if (!res.ok) throw new Error(`etcd put failed: ${res.status}`);
    await res.arrayBuffer();
  }
}

/**
 * A copy of a real snapshot whose body is damaged where only the page walk sees it (a live leaf page of the
 * `key` bucket zeroed: the last one, or the first) and whose SHA-256 trailer is recomputed, as a producer bug
 * or a tamperer would leave it.
 */
async function damaged(file: string, out: string, which: 'first' | 'last' = 'first'): Promise<{ page: number; bytes: Buffer }> {
  const snap = await readFile(file);
  const body = Buffer.from(snap.subarray(0, snap.length - 32));
  const live = readLive(body);
  const leaves = [...live.live.values()]
    .filter((p) => p.bucket === 'key' && p.kind === 'leaf' && p.count >= 2)
    .map((p) => p.pgid)
    .sort((a, b) => a - b);
  const page = which === 'first' ? leaves[1]! : leaves[leaves.length - 1]!;
  body.fill(0, page * live.ps, (page + 1) * live.ps);
  const bytes = withTrailer(body);
  await writeFile(out, bytes);
  return { page, bytes };
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  etcdDir = await mkdtemp(path.join(os.tmpdir(), 'etcd-drill-'));
  await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-up.sh'), etcdDir], { timeoutMs: 60_000 });
  const e = await readFile(path.join(etcdDir, 'etcd.env'), 'utf8');
  own = { ...world, etcd: { endpoints: /ETCDCTL_ENDPOINTS=(.*)/.exec(e)![1]! } };
  env = agentEnv(world);
  proxy = await startHttpFaultProxy({ target: world.s3.endpoint });

  await putKeys(own, 3000, 300, '/registry/drill/');
  snaps.small = { file: path.join(etcdDir, 'small.db'), status: { revision: 0, totalKey: 0, hash: 0 } };
  await saveSnapshot(own, snaps.small.file);
  snaps.small.status = await status(snaps.small.file);
  await loadMiB(24, '/registry/drill-big/');
  snaps.big = { file: path.join(etcdDir, 'big.db'), status: { revision: 0, totalKey: 0, hash: 0 } };
  await saveSnapshot(own, snaps.big.file);
  snaps.big.status = await status(snaps.big.file);
}, 180_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const o of [...outputs, ...agents.map((a) => a.stdout + a.stderr)]) expect(o).not.toContain(world.s3.secretAccessKey);
  await proxy?.close();
  await emptyAndDeleteBucket(world, bucket);
  await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-down.sh'), etcdDir]).catch(() => undefined);
  await rm(etcdDir, { recursive: true, force: true });
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

/** Test directories, removed at the end (they hold copies of 30 MB snapshots). */
async function testDirs(prefix: string): Promise<TestDirs> {
  const d = await makeDirs(prefix);
  roots.push(d.root);
  return d;
}

async function agent(dirs: TestDirs, cfg: Record<string, unknown>): Promise<AgentProcess> {
  const a = await startAgent(dirs, env, cfg);
  agents.push(a);
  return a;
}

/** A snapshot appears in the directory whole (a rename, as etcdctl does), with the given mtime. */
async function place(from: string, dir: string, name: string, mtime?: Date): Promise<string> {
  const tmp = path.join(dir, `.${name}.tmp`);
  await copyFile(from, tmp);
  if (mtime) await utimes(tmp, mtime, mtime);
  const to = path.join(dir, name);
  await rename(tmp, to);
  return to;
}

const at = (l: LogLine): number => Date.parse(String(l.time));

async function cli(config: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runCli(['--config', config, ...args], env);
  outputs.push(r.stdout, r.stderr);
  return r;
}

describe('the restore drill in the daemon', () => {
  let dirs: TestDirs;
  let a: AgentProcess;
  let key: string;
  let verifiedAt = 0;

  it('passes on a good object: log line, metrics, and revision and keys as `etcdctl snapshot status` prints them', async () => {
    dirs = await testDirs('drill-');
    const cfg = await writeConfig(dirs, world, bucket, { node: 'drill-node', verify: { schedule: EVERY_2S } });
    a = await agent(dirs, cfg);
    // whole seconds: a file system keeps them exactly
    const mtime = new Date(Math.floor(Date.now() / 1000) * 1000 - 3600_000);
    await place(snaps.small.file, dirs.snapshots, 'a.db', mtime);
    const shipped = await a.waitMsg('snapshot shipped and confirmed', 'a.db');
    key = String(shipped.key);
    const ok = await a.waitFor((l) => l.msg === VERIFIED && l.key === key, 30_000, 'a passing drill');
    expect(ok).toMatchObject({
      level: 'info',
      depth: 'deep',
      revision: snaps.small.status.revision,
      keys: snaps.small.status.totalKey,
      snapshotTime: mtime.toISOString(),
    });
    expect(String(ok.detail)).toContain('every bbolt page checked');
    const due = a.lines.findIndex((l) => l.msg === 'restore drill due');
    const started = a.lines.findIndex((l) => l.msg === 'restore drill started');
    expect(due).toBeGreaterThanOrEqual(0);
    expect(started).toBeGreaterThan(due);
    await a.waitMsg('restore drill finished');
    verifiedAt = mtime.getTime() / 1000;
    expect(await a.metric('etcdbackup_last_verified_timestamp_seconds')).toBe(verifiedAt);
    expect(await a.metric('etcdbackup_last_snapshot_revision')).toBe(snaps.small.status.revision);
    expect(await a.metric('etcdbackup_last_snapshot_keys')).toBe(snaps.small.status.totalKey);
    expect(await a.metric('etcdbackup_last_verify_failed_objects')).toBe(0);
    expect(Math.abs(Date.now() / 1000 - (await a.metric('etcdbackup_last_verify_run_timestamp_seconds'))!)).toBeLessThan(30);
    expect(await a.metric('etcdbackup_verify_failures_total{reason="corrupt"}')).toBe(0);
  });

  it('fails on the object replaced in S3: by a damaged copy (hash), then with its manifest rewritten to match (corrupt: only the deep check sees it)', async () => {
    const s3 = s3Client(world);
    const copy = path.join(dirs.root, 'damaged.db');
    const { page, bytes } = await damaged(snaps.small.file, copy);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes }));
    const hash = await a.waitFor((l) => l.msg === FAILED && l.key === key && l.reason === 'hash', 30_000, 'a drill failing on the hash');
    expect(hash.level).toBe('error');
    expect(String(hash.detail)).toContain('do not match the recorded sha256');

    // someone with write access replaces the manifest too: sizes and sha256 agree, the trailer is valid
    const manifestKey = `${key}.manifest.json`;
    const m = JSON.parse(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: manifestKey }))).Body!.transformToString()) as {
      snapshot: { sha256: string };
    };
    m.snapshot.sha256 = createHash('sha256').update(bytes).digest('hex');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: manifestKey, Body: JSON.stringify(m), ContentType: 'application/json' }));
    const corrupt = await a.waitFor((l) => l.msg === FAILED && l.key === key && l.reason === 'corrupt', 30_000, 'a drill failing on the deep check');
    expect(String(corrupt.detail)).toMatch(new RegExp(`^corrupt: bbolt pages: page ${page} \\(.*bucket "key"\\): the page header is all zeros$`));
    await a.waitFor((l) => l.msg === 'restore drill finished' && at(l) >= at(corrupt), 30_000, 'the failed drill to finish');

    expect(await a.metric('etcdbackup_verify_failures_total{reason="hash"}')).toBeGreaterThanOrEqual(1);
    expect(await a.metric('etcdbackup_verify_failures_total{reason="corrupt"}')).toBeGreaterThanOrEqual(1);
    expect(await a.metric('etcdbackup_last_verify_failed_objects')).toBe(1);
    // the newest verified backup is still the one verified before the damage
    expect(await a.metric('etcdbackup_last_verified_timestamp_seconds')).toBe(verifiedAt);
  });

  it('a restart shows the failed drill and the verified time before any new drill runs', async () => {
    expect((await a.stop()).code).toBe(0);
    const cfg = await writeConfig(dirs, world, bucket, { node: 'drill-node', verify: { schedule: '0 0 1 1 *' } });
    const b = await agent(dirs, cfg);
    await b.waitMsg('restore drill scheduled');
    expect(await b.metric('etcdbackup_last_verify_failed_objects')).toBe(1);
    expect(await b.metric('etcdbackup_last_verified_timestamp_seconds')).toBe(verifiedAt);
    expect(b.count('restore drill started')).toBe(0);
    expect((await b.stop()).code).toBe(0);
  });
});

describe('verify', () => {
  let dirs: TestDirs;
  let config: string;
  const keyOf = (name: string): string => `etcd-backup/test/verify-node/${name}`;

  beforeAll(async () => {
    dirs = await testDirs('verify-');
    await writeConfig(dirs, world, bucket, { node: 'verify-node' });
    config = dirs.config;
  });

  it('a snapshot damaged under a recomputed trailer is refused by `upload` (before-upload deep check), and shipped with it off', async () => {
    const now = Date.now();
    const v1 = await place(snaps.small.file, dirs.snapshots, 'v1.db', new Date(now - 3 * 3600_000));
    const v2 = await place(snaps.big.file, dirs.snapshots, 'v2.db', new Date(now - 3600_000));
    const bad = path.join(dirs.snapshots, 'v3-damaged.db');
    await damaged(snaps.small.file, bad);
    await utimes(bad, new Date(now - 2 * 3600_000), new Date(now - 2 * 3600_000));
    expect((await cli(config, 'upload', v1, v2)).code).toBe(0);
    const refused = await cli(config, 'upload', bad);
    expect(refused.code).toBe(65);
    expect(refused.stderr + refused.stdout).toMatch(/corrupt/);
    expect(await listKeys(world, bucket, keyOf(''))).toEqual([keyOf('v1.db'), keyOf('v2.db')]);
    // an agent with the before-upload check off (or an older agent) ships it: the drill is what finds it
    const off = path.join(dirs.root, 'off.yaml');
    await writeFile(off, `${await readFile(config, 'utf8')}\nverify:\n  beforeUpload: false\n`);
    expect((await cli(off, 'upload', bad)).code).toBe(0);
  });

  it('--all: one line per object with revision and keys, the damaged one FAIL corrupt, exit 65; --json likewise', async () => {
    const r = await cli(config, 'verify', '--all', '--quiet');
    expect(r.code, r.stderr).toBe(65);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^KEY\s+REVISION\s+KEYS\s+SIZE\s+SNAPSHOT TIME \(UTC\)\s+VERDICT$/);
    expect(lines).toHaveLength(4);
    const row = (name: string): string => lines.find((l) => l.startsWith(`${keyOf(name)} `))!;
    expect(row('v2.db')).toMatch(new RegExp(`\\s${snaps.big.status.revision}\\s+${snaps.big.status.totalKey}\\s.*pass \\(deep\\)$`));
    expect(row('v1.db')).toMatch(new RegExp(`\\s${snaps.small.status.revision}\\s+${snaps.small.status.totalKey}\\s.*pass \\(deep\\)$`));
    expect(row('v3-damaged.db')).toMatch(/\s-\s+-\s.*FAIL corrupt: corrupt: bbolt pages: page \d+ .*all zeros$/);
    // newest first, by snapshot time
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([keyOf('v2.db'), keyOf('v3-damaged.db'), keyOf('v1.db')]);

    const j = await cli(config, 'verify', '--all', '--json');
    expect(j.code).toBe(65);
    const docs = j.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { key: string; ok: boolean; verdict: string; revision?: number; keys?: number; hash?: number });
    expect(docs.map((d) => [d.key, d.ok, d.verdict])).toEqual([
      [keyOf('v2.db'), true, 'pass'],
      [keyOf('v3-damaged.db'), false, 'corrupt'],
      [keyOf('v1.db'), true, 'pass'],
    ]);
    expect(docs[0]).toMatchObject({ revision: snaps.big.status.revision, keys: snaps.big.status.totalKey, hash: snaps.big.status.hash });
  });

  it('--latest and a KEY: exit 0 when it passes, 65 when it fails', async () => {
    const latest = await cli(config, 'verify', '--latest', '--quiet');
    expect(latest.code).toBe(0);
    expect(latest.stdout.trim().split('\n')).toHaveLength(2);
    expect(latest.stdout).toContain(keyOf('v2.db'));
    const one = await cli(config, 'verify', keyOf('v3-damaged.db'), '--quiet');
    expect(one.code).toBe(65);
  });

  it("--restore restores with Debian's etcdctl, and says so when no etcd tool is on PATH", async () => {
    const r = await cli(config, 'verify', keyOf('v1.db'), '--restore', '--json');
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout) as { ok: boolean; restore: { tool: string; ok: boolean } };
    expect(doc).toMatchObject({ ok: true, restore: { tool: 'etcdctl snapshot restore', ok: true } });
    const text = await cli(config, 'verify', keyOf('v1.db'), '--restore', '--quiet');
    expect(text.stdout).toContain('pass (deep, etcdctl snapshot restore: ok)');
    const none = await runCli(['--config', config, 'verify', keyOf('v1.db'), '--restore', '--quiet'], { ...env, PATH: '/nonexistent' });
    outputs.push(none.stdout, none.stderr);
    expect(none.code).toBe(65);
    expect(none.stdout).toContain('FAIL restore: etcdutl/etcdctl: neither etcdutl nor etcdctl is on PATH');
  });

  it('S3 unreachable: one line, exit 69', async () => {
    const down = path.join(dirs.root, 'down.yaml');
    await writeFile(down, (await readFile(config, 'utf8')).replace(world.s3.endpoint, 'http://127.0.0.1:9'));
    const r = await cli(down, 'verify', '--all');
    expect(r.code).toBe(69);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/unreachable/);
  });
});

describe('before upload', () => {
  it('a snapshot whose body was damaged under a recomputed trailer: rejected as corrupt, its multipart upload aborted, nothing in S3', async () => {
    const dirs = await testDirs('reject-');
    const cfg = await writeConfig(dirs, world, bucket, { node: 'reject-node', s3: { endpoint: proxy.url, partSize: '5MiB', checksum: 'when_required' } });
    const before = { ...proxy.stats.seen };
    const a = await agent(dirs, cfg);
    const tmp = path.join(dirs.root, 'big-damaged.db');
    // the last leaf of the `key` bucket: found late in the read pass, after parts went out
    await damaged(snaps.big.file, tmp, 'last');
    await rename(tmp, path.join(dirs.snapshots, 'big-damaged.db'));
    const line = await a.waitMsg('snapshot rejected: not shipped and never deleted by the agent', 'big-damaged.db');
    expect(line).toMatchObject({ reason: 'corrupt' });
    expect(String(line.detail)).toMatch(/page \d+ .*all zeros/);
    expect(await a.metric('etcdbackup_snapshots_rejected_total{reason="corrupt"}')).toBe(1);
    const seen = (op: keyof typeof proxy.stats.seen): number => (proxy.stats.seen[op] ?? 0) - (before[op] ?? 0);
    expect(seen('CreateMultipartUpload')).toBe(1);
    expect(seen('UploadPart')).toBeGreaterThanOrEqual(2);
    expect(seen('AbortMultipartUpload')).toBe(1);
    expect(seen('CompleteMultipartUpload')).toBe(0);
    const uploads = await s3Client(world).send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: 'etcd-backup/test/reject-node/' }));
    expect(uploads.Uploads ?? []).toEqual([]);
    expect(await listKeys(world, bucket, 'etcd-backup/test/reject-node/', { all: true })).toEqual([]);
    // the file stays where it was
    expect((await readFile(path.join(dirs.snapshots, 'big-damaged.db'))).length).toBeGreaterThan(20 << 20);
    expect((await a.stop()).code).toBe(0);
  });
});

describe('one reader of S3 at a time', () => {
  it('a drill due during a bandwidth-limited upload waits for it, and an upload queued during a drill waits for the drill', async () => {
    const dirs = await testDirs('overlap-');
    // ~27 MiB at 4 MiB/s: each upload and each drill lasts about 7 s; the drill is due every 2 s
    const cfg = await writeConfig(dirs, world, bucket, { node: 'overlap-node', upload: { bandwidthLimit: '4MiB' }, verify: { schedule: EVERY_2S } });
    const a = await agent(dirs, cfg);
    await place(snaps.big.file, dirs.snapshots, 'b1.db');
    await a.waitMsg('snapshot shipped and confirmed', 'b1.db', 60_000);
    await a.waitMsg('restore drill started', undefined, 30_000);
    await place(snaps.big.file, dirs.snapshots, 'b2.db');
    await a.waitMsg('snapshot shipped and confirmed', 'b2.db', 60_000);
    const lastFinished = a.lines.filter((l) => l.msg === 'restore drill finished').length;
    await a.waitFor(
      (l) => l.msg === 'restore drill finished' && a.lines.filter((x) => x.msg === 'restore drill finished').length > lastFinished,
      60_000,
      'a drill after b2',
    );
    expect((await a.stop()).code).toBe(0);

    const lines = a.lines;
    const spans = (start: (l: LogLine) => boolean, end: (l: LogLine) => boolean): [number, number][] => {
      const out: [number, number][] = [];
      let open: number | undefined;
      for (const l of lines) {
        if (start(l)) open = at(l);
        else if (open !== undefined && end(l)) {
          out.push([open, at(l)]);
          open = undefined;
        }
      }
      return out;
    };
    const uploads = spans(
      (l) => l.msg === 'upload started',
      (l) => l.msg === 'snapshot shipped and confirmed' || l.msg.startsWith('upload failed'),
    );
    const drills = spans(
      (l) => l.msg === 'restore drill started',
      (l) => l.msg === 'restore drill finished' || l.msg === 'restore drill could not run',
    );
    expect(uploads.length).toBe(2);
    expect(drills.length).toBeGreaterThanOrEqual(2);
    for (const [us, ue] of uploads)
      for (const [ds, de] of drills)
        expect(
          de <= us || ds >= ue,
          `drill ${new Date(ds).toISOString()}–${new Date(de).toISOString()} overlaps upload ${new Date(us).toISOString()}–${new Date(ue).toISOString()}`,
        ).toBe(true);
    // both directions really happened: a drill came due while an upload ran, and a snapshot was queued while a drill ran
    const within = (t: number, s: [number, number][]): boolean => s.some(([x, y]) => t > x && t < y);
    expect(lines.some((l) => l.msg === 'restore drill due' && within(at(l), uploads))).toBe(true);
    expect(lines.some((l) => l.msg === 'snapshot complete; queued for upload' && within(at(l), drills))).toBe(true);
    // and the drill read within upload.bandwidthLimit: ~27 MiB at 4 MiB/s takes more than 5 s
    const drilled = lines.filter((l) => l.msg === VERIFIED).map((l) => Number(l.seconds));
    expect(Math.max(...drilled)).toBeGreaterThan(5);
  });

  it('SIGTERM while a drill waits for a slow upload: the upload is aborted within shutdownTimeout, the drill reads nothing', async () => {
    const dirs = await testDirs('shutdown-');
    const cfg = await writeConfig(dirs, world, bucket, {
      node: 'shutdown-node',
      shutdownTimeout: '1s',
      upload: { bandwidthLimit: '2MiB' },
      verify: { schedule: EVERY_2S },
    });
    const a = await agent(dirs, cfg);
    await place(snaps.big.file, dirs.snapshots, 'slow.db');
    const started = await a.waitMsg('upload started', 'slow.db', 30_000);
    await a.waitFor((l) => l.msg === 'restore drill due' && at(l) > at(started), 10_000, 'a drill due during the upload');
    const t0 = Date.now();
    const exit = await a.stop('SIGTERM');
    expect(exit.code).toBe(0);
    // 1 s of drain, then the abort: far less than the ~13 s the upload still needed
    expect(Date.now() - t0).toBeLessThan(6000);
    expect(a.count('restore drill started')).toBe(0);
    expect(a.lines.some((l) => l.msg === 'restore drill could not run')).toBe(false);
  });
});
