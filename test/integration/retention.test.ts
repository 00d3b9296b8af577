// Retention against Ceph RGW with the built agent: a week of hourly snapshots during an S3 outage loses
// nothing; once the backlog ships, the daemon's own passes bring the directory down to the policy; and a
// prune whose copies S3 cannot confirm deletes nothing.
import { copyFile, readdir, utimes } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs, writeConfig, type AgentProcess, type LogLine } from '../support/agent.js';
import { fixturePath } from '../support/snapshots.js';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';
import { createBucket, emptyAndDeleteBucket, listKeys, readWorldEnv, saveSnapshot, type World } from '../support/world.js';

let world: World;
const bucket = `retention-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];
const outputs: string[] = [];
const H = 3_600_000;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const o of [...agents.flatMap((a) => [a.stdout, a.stderr]), ...outputs]) expect(o).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
});

async function proxyToS3(): Promise<TcpProxy> {
  const target = new URL(world.s3.endpoint);
  return startProxy({ target: { host: target.hostname, port: Number(target.port) } });
}

/** RKE1's recurring-snapshot name for a time: `2024-05-01T12:00:00Z_etcd`. */
const rkeName = (ms: number): string => `${new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')}_etcd`;

/** Copies src into dir under name, with its mtime set `hoursAgo` back, as if written then. */
async function placeAged(src: string, dir: string, name: string, hoursAgo: number, now: number): Promise<void> {
  const dst = path.join(dir, name);
  await copyFile(src, dst);
  const t = new Date(now - hoursAgo * H);
  await utimes(dst, t, t);
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('retention', () => {
  it('a week of hourly snapshots during an S3 outage: nothing is deleted; when S3 returns, the directory comes down to the policy', async () => {
    const proxy = await proxyToS3();
    await proxy.setMode('refuse');
    try {
      const dirs = await testDirs('retention-');
      const now = Date.now();
      // hour 0 is a fresh snapshot of the world's etcd; the 167 older ones are copies of a small real
      // snapshot, so the week fits in RGW's memory store whatever else the world's etcd holds
      const fresh = path.join(dirs.root, 'fresh.db');
      await saveSnapshot(world, fresh);
      await placeAged(fresh, dirs.snapshots, rkeName(now), 0, now);
      for (let h = 1; h < 168; h++) await placeAged(fixturePath('etcd-small.db'), dirs.snapshots, rkeName(now - h * H), h, now);
      const names = (await readdir(dirs.snapshots)).sort();
      expect(names).toHaveLength(168);

      const cfg = await writeConfig(dirs, world, bucket, {
        node: 'week',
        s3: { endpoint: proxy.url },
        retention: { schedule: '*/2 * * * * *', keep: 24, maxAge: '72h' },
        log: { level: 'info' },
      });
      const agent = await startAgent(dirs, agentEnv(world), cfg);
      agents.push(agent);
      const verified = (l: LogLine): boolean => l.msg === 'snapshot complete; queued for upload' && agent.count(l.msg) >= 168;
      await agent.waitFor(verified, 60_000, '168 verified snapshots');
      // two whole passes that saw the week, every snapshot verified and pending
      const passOverWeek =
        (from: number) =>
        (l: LogLine): boolean =>
          l.msg.startsWith('retention pass') && l.localKept === 168 && agent.lines.indexOf(l) >= from;
      const first = await agent.waitFor(passOverWeek(agent.lines.length), 30_000, 'a pass over the week');
      const second = await agent.waitFor(passOverWeek(agent.lines.indexOf(first) + 1), 30_000, 'a second pass');
      expect(second).toMatchObject({ msg: 'retention pass incomplete', localDeleted: 0 });
      expect(String((second.problems as string[])[0])).toMatch(/^uploads: S3 unreachable at .*ECONNREFUSED/);
      expect(agent.lines.some((l) => l.msg === 'retention: S3 unreachable; no stale upload aborted this pass')).toBe(true);
      expect(agent.count('retention: pruned local snapshot')).toBe(0);
      expect(await readdir(dirs.snapshots)).toHaveLength(168);
      expect(await agent.metric('etcdbackup_pruned_files_total{location="local"}')).toBe(0);
      expect(await agent.metric('etcdbackup_prune_failures_total')).toBeGreaterThanOrEqual(2);
      expect(await agent.metric('etcdbackup_snapshots_pending')).toBe(168);

      await proxy.setMode('pass');
      const shipped = (l: LogLine): boolean => l.msg === 'snapshot shipped and confirmed' && agent.count(l.msg) >= 168;
      await agent.waitFor(shipped, 180_000, 'the backlog to ship');
      await agent.waitFor((l) => l.msg === 'retention pass finished' && l.localKept === 24, 60_000, 'a pass that leaves 24');

      // the newest 24 stay (keep 24 is stricter than maxAge 72h); everything deleted is in S3
      expect((await readdir(dirs.snapshots)).sort()).toEqual(names.slice(-24));
      expect(agent.count('retention: pruned local snapshot')).toBe(144);
      for (const l of agent.lines.filter((x) => x.msg === 'retention: pruned local snapshot')) {
        expect(l.key).toBe(`etcd-backup/test/week/${path.basename(String(l.file))}`);
        expect(String(l.reason)).toMatch(/^beyond the newest 24 .*confirmed by the ledger and HeadObject/);
      }
      expect(await listKeys(world, bucket, 'etcd-backup/test/week/')).toHaveLength(168);
      expect(await agent.metric('etcdbackup_pruned_files_total{location="local"}')).toBe(144);
      expect(await agent.metric('etcdbackup_pruned_bytes_total{location="local"}')).toBe(144 * 131_104);
      expect(await agent.metric('etcdbackup_last_prune_success_timestamp_seconds')).toBeGreaterThan(now / 1000);
      expect(await agent.stop()).toMatchObject({ code: 0 });
    } finally {
      await proxy.close();
    }
  }, 420_000);

  it('S3 unreachable when a copy must be confirmed: prune deletes nothing and says why; once S3 answers, it prunes', async () => {
    const proxy = await proxyToS3();
    try {
      const dirs = await testDirs('retention-down-');
      await writeConfig(dirs, world, bucket, { node: 'down', s3: { endpoint: proxy.url }, upload: { attempts: 1 }, retention: { keep: 2 } });
      const env = agentEnv(world);
      const cli = async (...args: string[]) => {
        const r = await runCli(['--config', dirs.config, ...args], env);
        outputs.push(r.stdout, r.stderr);
        return r;
      };
      const now = Date.now();
      const names = [5, 4, 3, 2, 1].map((h) => rkeName(now - h * H));
      for (const [i, name] of names.entries()) await placeAged(fixturePath('etcd-small.db'), dirs.snapshots, name, 5 - i, now);
      expect((await cli('upload', ...names.map((n) => path.join(dirs.snapshots, n)))).code).toBe(0);

      await proxy.setMode('refuse');
      const down = await cli('prune');
      expect(down.code).toBe(69);
      expect(await readdir(dirs.snapshots)).toHaveLength(5);
      for (const n of names.slice(0, 3))
        expect(down.stdout).toMatch(new RegExp(`kept +${escape(n)}: the policy would delete it, but S3 could not confirm its copy: S3 unreachable at `));
      expect(down.stderr).toMatch(/warning: local, uploads retention incomplete: S3 unreachable .*; no local snapshot was deleted/);

      await proxy.setMode('pass');
      const up = await cli('prune');
      expect(up.code).toBe(0);
      expect((await readdir(dirs.snapshots)).sort()).toEqual(names.slice(3));
      for (const n of names.slice(0, 3))
        expect(up.stdout).toMatch(
          new RegExp(
            `deleted +${escape(n)}: 128\\.0 KiB; beyond the newest 2 \\(it is number \\d\\); its copy etcd-backup/test/down/${escape(n)} is confirmed by the ledger and HeadObject`,
          ),
        );
      expect(up.stdout).toMatch(/summary: local: deleted 3 \(384\.1 KiB\), kept 2; stale uploads: aborted 0/);
    } finally {
      await proxy.close();
    }
  });
});
