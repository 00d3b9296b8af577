// Issue 10, items 4–6, against Ceph RGW and OpenStack Swift:
//  4. "Newest" is the snapshot's time. A backlog of snapshots that appeared while S3 was down, out of order
//     and with shuffled mtimes, goes up newest first when S3 comes back, so LastModified runs backwards and
//     ties within a second. Before, `list`, `fetch --latest` and remote retention ranked by LastModified:
//     `--latest` returned an older snapshot, retention planned to delete the newest.
//  5. A zip stored at a conflict key `NAME.zip.<sha12>` is fetched; before: "content is a zip, expected a raw
//     snapshot" (the format came from the key).
//  6. The ledger describes one bucket and is checked against it. Before: after a bucket switch or an edited
//     ledger, local snapshots (the newest included) were never shipped, and nothing above debug said so.
import { DeleteObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { copyFile, mkdtemp, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs, writeConfig, type AgentProcess, type TestDirs } from '../support/agent.js';
import { goZip } from '../support/go-zip.js';
import { sha256File } from '../support/snapshots.js';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';
import {
  createBucket,
  createSwiftBucket,
  emptyAndDeleteBucket,
  emptyAndDeleteSwiftBucket,
  putKeys,
  readWorldEnv,
  requireSwift,
  s3Client,
  saveSnapshot,
  swiftClient,
  type World,
} from '../support/world.js';

let world: World;
let work: string;
const snaps: string[] = [];
const agents: AgentProcess[] = [];
const H = 3_600_000;

interface Server {
  name: 'rgw' | 'swift';
  endpoint: string;
  region: string;
  env: NodeJS.ProcessEnv;
  client: S3Client;
  create(bucket: string): Promise<void>;
  remove(bucket: string): Promise<void>;
}
const servers = new Map<string, Server>();
const buckets: [Server, string][] = [];

function server(name: 'rgw' | 'swift'): Server {
  if (servers.has(name)) return servers.get(name)!;
  const swift = name === 'swift' ? requireSwift(world) : undefined;
  const s: Server = swift
    ? {
        name,
        endpoint: swift.endpoint,
        region: swift.region,
        env: agentEnv(world, { AWS_ACCESS_KEY_ID: swift.accessKeyId, AWS_SECRET_ACCESS_KEY: swift.secretAccessKey, AWS_REGION: swift.region }),
        client: swiftClient(swift),
        create: (b) => createSwiftBucket(swift, b),
        remove: (b) => emptyAndDeleteSwiftBucket(swift, b),
      }
    : {
        name,
        endpoint: world.s3.endpoint,
        region: world.s3.region,
        env: agentEnv(world),
        client: s3Client(world),
        create: (b) => createBucket(world, b),
        remove: (b) => emptyAndDeleteBucket(world, b),
      };
  servers.set(name, s);
  return s;
}

async function bucketOn(s: Server, tag: string): Promise<string> {
  // short: Swift on ext4 (the test world's) keeps an object's metadata in one 4 KiB xattr block, and an SLO
  // manifest's metadata names the bucket and key several times; past ~4,028 bytes the object server answers
  // 507 and the proxy then shuns the device for a minute (every request 503)
  const b = `t-${tag}-${s.name[0]}${(Date.now() % 1e8).toString(36)}`;
  await s.create(b);
  buckets.push([s, b]);
  return b;
}

async function keysIn(s: Server, bucket: string, prefix: string): Promise<{ key: string; lastModified: number }[]> {
  const out: { key: string; lastModified: number }[] = [];
  let token: string | undefined;
  do {
    const r = await s.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) out.push({ key: o.Key!, lastModified: o.LastModified!.getTime() });
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return out;
}
const snapshotKeys = async (s: Server, bucket: string, prefix: string): Promise<string[]> =>
  (await keysIn(s, bucket, prefix))
    .map((o) => o.key)
    .filter((k) => !/\.(manifest\.json|sig)$/.test(k))
    .sort();

/** Puts a copy of `src` at dir/name with the given mtime, appearing at once (as etcdctl's rename does). */
async function place(src: string, dir: string, name: string, mtimeMs: number): Promise<string> {
  const tmp = path.join(dir, `.${name}.tmp`);
  await copyFile(src, tmp);
  await utimes(tmp, new Date(mtimeMs), new Date(mtimeMs));
  const dst = path.join(dir, name);
  await rename(tmp, dst);
  return dst;
}

async function agentOn(
  s: Server,
  dirs: TestDirs,
  bucket: string,
  node: string,
  overrides: Record<string, unknown> = {},
  endpoint = s.endpoint,
): Promise<{ agent: AgentProcess; cfg: Record<string, unknown> }> {
  const cfg = await writeConfig(dirs, world, bucket, { node, ...overrides, s3: { bucket, endpoint, region: s.region, ...(overrides.s3 ?? {}) } });
  const agent = await startAgent(dirs, s.env, cfg);
  agents.push(agent);
  return { agent, cfg };
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  work = await mkdtemp(path.join(os.tmpdir(), 'trust-s3-'));
  // distinct snapshots: each after more keys were written
  for (let i = 0; i < 6; i++) {
    await putKeys(world, 40, 200, `/registry/trust-s3/${i}/`);
    const f = path.join(work, `s${i}.db`);
    await saveSnapshot(world, f);
    snaps.push(f);
  }
});

// an agent left retrying after a failed test would keep loading the server the next test uses
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop('SIGKILL')));
});

afterAll(async () => {
  for (const [s, b] of buckets) await s.remove(b).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

describe.each(['rgw', 'swift'] as const)('%s', (which) => {
  it('4: a backlog with shuffled mtimes, shipped after an outage: list, fetch --latest and remote retention follow snapshot time; ties by key', async () => {
    const s = server(which);
    const bucket = await bucketOn(s, 'order');
    const port = Number(new URL(s.endpoint).port);
    const proxy: TcpProxy = await startProxy({ target: { host: '127.0.0.1', port } });
    try {
      await proxy.setMode('refuse');
      const dirs = await testDirs('trust-order-');
      const node = 'order';
      const { agent } = await agentOn(s, dirs, bucket, node, { detect: { zipWait: '1s' } }, proxy.url);
      const base = Math.floor((Date.now() - 10 * H) / 1000) * 1000;
      const rke2 = (h: number): string => `etcd-snapshot-${node}-${(base + h * H) / 1000}`;
      // [name, source, mtime]: producer times in RKE2 names win over their (shuffled) mtimes; .db files are
      // as old as their mtime; tie-a and tie-b were taken in the same second
      const files: [string, string, number][] = [
        [rke2(3), snaps[0]!, base],
        ['tie-a.db', snaps[1]!, base + 2 * H],
        ['newest.db', snaps[2]!, base + 4 * H],
        [rke2(1), snaps[3]!, base + 9 * H],
        ['tie-b.db', snaps[4]!, base + 2 * H],
      ];
      for (const [name, src, mtime] of files) await place(src, dirs.snapshots, name, mtime);
      for (const [name] of files) await agent.waitMsg('snapshot complete; queued for upload', name, 30_000);
      expect(agent.lines.some((l) => l.msg === 'snapshot shipped and confirmed')).toBe(false);
      await proxy.setMode('pass');
      for (const [name] of files) await agent.waitMsg('snapshot shipped and confirmed', name, 60_000);
      await agent.stop();

      const expected = ['newest.db', rke2(3), 'tie-b.db', 'tie-a.db', rke2(1)];
      const prefix = `etcd-backup/test/${node}/`;
      // the scenario: uploaded newest first, so the newest is never the latest upload
      const lm = new Map((await keysIn(s, bucket, prefix)).map((o) => [o.key.slice(prefix.length), o.lastModified]));
      expect(lm.get('newest.db')!).toBeLessThanOrEqual(lm.get(rke2(1))!);

      const env = s.env;
      const json = await runCli(['--config', dirs.config, 'list', '--json'], env);
      expect(json.code, json.stderr).toBe(0);
      expect(
        json.stdout
          .trim()
          .split('\n')
          .map((l) => (JSON.parse(l) as { name: string }).name),
      ).toEqual(expected);
      const text = await runCli(['--config', dirs.config, 'list'], env);
      const rows = text.stdout
        .split('\n')
        .slice(1, 1 + expected.length)
        .map((l) => l.split(/\s+/)[0]);
      expect(rows).toEqual(expected.map((n) => `${prefix}${n}`));
      expect(text.stdout).toContain(`newest snapshot of node ${node}: ${prefix}newest.db`);

      const out = path.join(dirs.root, 'latest.db');
      const fetched = await runCli(['--config', dirs.config, 'fetch', '--latest', '--output', out], env);
      expect(fetched.code, fetched.stderr).toBe(0);
      expect(await sha256File(out)).toBe(await sha256File(snaps[2]!));

      // remote retention keeps the newest 2 by snapshot time (local files gone, as local retention would)
      for (const [name] of files) await unlink(path.join(dirs.snapshots, name));
      await writeConfig(dirs, world, bucket, {
        node,
        s3: { bucket, endpoint: s.endpoint, region: s.region },
        retention: { remote: { enabled: true, keep: 2 } },
      });
      const pruned = await runCli(['--config', dirs.config, 'prune'], env);
      expect(pruned.code, pruned.stdout + pruned.stderr).toBe(0);
      expect(await snapshotKeys(s, bucket, prefix)).toEqual([`${prefix}${rke2(3)}`, `${prefix}newest.db`].sort());
      expect(pruned.stdout).toMatch(new RegExp(`kept +${prefix}newest\\.db: one of the newest 2 of this node \\(number 1\\)`));
    } finally {
      await proxy.close();
    }
  });

  it('5: an RKE zip stored at a conflict key NAME.zip.<sha12> is fetched, its format read from its bytes', async () => {
    const s = server(which);
    const bucket = await bucketOn(s, 'conflict');
    const name = '2024-05-08T12:00:00Z_etcd';
    // a short prefix: with the world's Swift (ext4, encryption middleware) a conflict key under the default
    // prefix plus the agent's metadata passes the 4 KiB its object server can keep per object
    const prefix = 'e/t/c/';
    // someone else's object already sits at the zip's key
    await s.client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${name}.zip`, Body: 'not a snapshot, not ours' }));
    const zip = path.join(work, `${name}.zip`);
    const raw = path.join(work, name);
    await copyFile(snaps[5]!, raw);
    await rm(zip, { force: true });
    await goZip('rke', raw, zip);
    const dirs = await testDirs('trust-conflict-');
    const { agent } = await agentOn(s, dirs, bucket, 'c', { cluster: 't', s3: { prefix: 'e' } });
    await place(zip, dirs.snapshots, `${name}.zip`, Date.now());
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', `${name}.zip`, 60_000);
    const sha = await sha256File(zip);
    const conflict = `${prefix}${name}.zip.${sha.slice(0, 12)}`;
    expect(shipped.key).toBe(conflict);
    await agent.stop();

    const out = path.join(dirs.root, 'restored.zip');
    const r = await runCli(['--config', dirs.config, 'fetch', conflict, '--output', out], s.env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/zip snapshot verified/);
    expect(await sha256File(out)).toBe(sha);
    // the foreign object keeps its place and is not fetched as a backup
    const foreign = await runCli(['--config', dirs.config, 'fetch', `${prefix}${name}.zip`, '--output', path.join(dirs.root, 'foreign')], s.env);
    expect(foreign.code).toBe(65);
    expect(foreign.stderr).toMatch(/no recorded sha256/);
  });
});

describe('6: the ledger describes one bucket and is checked against it', () => {
  it('a bucket switch (RGW → Swift, same stateDir): a new ledger from the new listing, every local snapshot shipped there, with a warning; back again: nothing resent', async () => {
    const rgw = server('rgw');
    const swift = server('swift');
    const first = await bucketOn(rgw, 'switch');
    const second = await bucketOn(swift, 'switch');
    const dirs = await testDirs('trust-switch-');
    const node = 'switch';
    const prefix = `etcd-backup/test/${node}/`;
    const { agent: a } = await agentOn(rgw, dirs, first, node);
    await place(snaps[0]!, dirs.snapshots, 'old.db', Date.now() - 2 * H);
    await place(snaps[1]!, dirs.snapshots, 'new.db', Date.now() - H);
    await a.waitMsg('snapshot shipped and confirmed', 'old.db');
    await a.waitMsg('snapshot shipped and confirmed', 'new.db');
    await a.stop();

    const { agent: b } = await agentOn(swift, dirs, second, node);
    const warned = await b.waitMsg("ledger describes another bucket, endpoint or prefix; starting a new one from this location's listing");
    expect(warned.level).toBe('warn');
    expect(String(warned.detail)).toContain(`s3://${first}/${prefix}`);
    await b.waitMsg('snapshot shipped and confirmed', 'new.db', 60_000);
    await b.waitMsg('snapshot shipped and confirmed', 'old.db', 60_000);
    await b.stop();
    expect(await snapshotKeys(swift, second, prefix)).toEqual([`${prefix}new.db`, `${prefix}old.db`]);
    const ledger = JSON.parse(await readFile(path.join(dirs.state, 'ledger.json'), 'utf8')) as { location: { bucket: string }; entries: unknown[] };
    expect(ledger.location.bucket).toBe(second);
    expect(ledger.entries).toHaveLength(2);

    // back to the first bucket: its listing says both are there, so nothing is sent again
    const { agent: c } = await agentOn(rgw, dirs, first, node);
    await c.waitMsg('ledger rebuilt from S3');
    await c.waitMsg('S3 reachable');
    await new Promise((r) => setTimeout(r, 1500));
    expect(c.lines.filter((l) => /^snapshot (shipped|complete)/.test(l.msg))).toEqual([]);
    await c.stop();
  });

  it('an edited ledger (a never-shipped local file claimed confirmed, an entry for an object that never existed): found at start, warned, counted, shipped', async () => {
    const s = server('rgw');
    const bucket = await bucketOn(s, 'edited');
    const dirs = await testDirs('trust-edited-');
    const node = 'edited';
    const prefix = `etcd-backup/test/${node}/`;
    const { agent: a } = await agentOn(s, dirs, bucket, node);
    await place(snaps[0]!, dirs.snapshots, 'a.db', Date.now() - H);
    await a.waitMsg('snapshot shipped and confirmed', 'a.db');
    await a.stop();
    // an entry for b.db (on disk, never shipped) with its true size, mtime and hash, and one for a ghost
    const b = await place(snaps[1]!, dirs.snapshots, 'b.db', Date.now() - 30 * 60_000);
    const st = await stat(b);
    const file = path.join(dirs.state, 'ledger.json');
    const ledger = JSON.parse(await readFile(file, 'utf8')) as { entries: Record<string, unknown>[] };
    const entry = (name: string, size: number, mtimeMs: number, sha256: string) => ({
      name,
      key: `${prefix}${name}`,
      size,
      sha256,
      mtimeMs,
      producer: 'etcdctl',
      confirmedAt: new Date().toISOString(),
    });
    ledger.entries.push(entry('b.db', st.size, st.mtimeMs, await sha256File(b)), entry('ghost.db', 1, 1, 'f'.repeat(64)));
    await writeFile(file, JSON.stringify(ledger));

    const { agent } = await agentOn(s, dirs, bucket, node);
    const warnB = await agent.waitFor((l) => /no longer in S3/.test(l.msg) && l.file === 'b.db', 30_000, 'the b.db warning');
    expect(warnB.level).toBe('warn');
    await agent.waitFor((l) => /no longer in S3/.test(l.msg) && l.file === 'ghost.db', 30_000, 'the ghost.db warning');
    await agent.waitMsg('snapshot shipped and confirmed', 'b.db', 60_000);
    expect(await agent.metric('etcdbackup_objects_missing_total')).toBe(2);
    expect(agent.count('snapshot shipped and confirmed', 'a.db')).toBe(0);
    await agent.stop();
    expect(await snapshotKeys(s, bucket, prefix)).toEqual([`${prefix}a.db`, `${prefix}b.db`]);
    const after = JSON.parse(await readFile(file, 'utf8')) as { entries: { name: string }[] };
    expect(after.entries.map((e) => e.name).sort()).toEqual(['a.db', 'b.db']);
  });

  it.each(['rgw', 'swift'] as const)(
    '%s: an object deleted in S3 by someone else is shipped again while its local file exists, with a warning and a count',
    async (which) => {
      const s = server(which);
      const bucket = await bucketOn(s, 'deleted');
      const dirs = await testDirs('trust-deleted-');
      const node = 'deleted';
      const prefix = `etcd-backup/test/${node}/`;
      const { agent } = await agentOn(s, dirs, bucket, node, { s3: { reconcileInterval: '10s' } });
      await place(snaps[2]!, dirs.snapshots, 'kept.db', Date.now() - 2 * H);
      await place(snaps[3]!, dirs.snapshots, 'victim.db', Date.now() - H);
      await agent.waitMsg('snapshot shipped and confirmed', 'kept.db');
      const first = await agent.waitMsg('snapshot shipped and confirmed', 'victim.db');
      const t0 = Date.now();
      await s.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}victim.db` }));
      const warned = await agent.waitFor((l) => /no longer in S3/.test(l.msg) && l.file === 'victim.db', 30_000, 'the victim.db warning');
      expect(warned.level).toBe('warn');
      expect(Date.now() - t0).toBeLessThan(25_000);
      const again = await agent.waitFor(
        (l) => l.msg === 'snapshot shipped and confirmed' && l.file !== undefined && path.basename(String(l.file)) === 'victim.db' && l !== first,
        60_000,
        'victim.db shipped again',
      );
      expect(again.sha256).toBe(await sha256File(snaps[3]!));
      expect(await agent.metric('etcdbackup_objects_missing_total')).toBe(1);
      expect(agent.count('snapshot shipped and confirmed', 'kept.db')).toBe(1);
      const head = await s.client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}victim.db` }));
      expect(head.ContentLength).toBe((await stat(snaps[3]!)).size);
      await agent.stop();
    },
  );
});
