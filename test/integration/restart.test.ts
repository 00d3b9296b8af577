// State across restarts and outages: no second upload, a lost ledger rebuilt from S3, freshness
// seeded from S3, S3 down at start then up, SIGTERM drains.
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, startAgent, testDirs, writeConfig, type AgentProcess, type TestDirs } from '../support/agent.js';
import { startProxy } from '../support/tcp-proxy.js';
import { createBucket, emptyAndDeleteBucket, listKeys, readWorldEnv, saveSnapshot, type World } from '../support/world.js';

let world: World;
const bucket = `restart-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const a of agents) {
    expect(a.stdout + a.stderr).not.toContain(world.s3.secretAccessKey);
  }
  await emptyAndDeleteBucket(world, bucket);
});

async function start(dirs: TestDirs, cfg: Record<string, unknown>): Promise<AgentProcess> {
  const a = await startAgent(dirs, agentEnv(world), cfg);
  agents.push(a);
  return a;
}

describe('restarts and outages', () => {
  it('a restart does not upload again; a lost ledger is rebuilt from S3; freshness survives', async () => {
    const dirs = await testDirs();
    const cfg = await writeConfig(dirs, world, bucket, { node: 'restart-a' });
    const first = await start(dirs, cfg);
    await saveSnapshot(world, path.join(dirs.snapshots, 'a.db'));
    await saveSnapshot(world, path.join(dirs.snapshots, 'b.db'));
    await first.waitMsg('snapshot shipped and confirmed', 'a.db');
    await first.waitMsg('snapshot shipped and confirmed', 'b.db');
    const freshness = await first.metric('etcdbackup_last_upload_success_timestamp_seconds');
    expect(freshness).toBeGreaterThan(Date.now() / 1000 - 60);
    expect(await first.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    const ledger = JSON.parse(await readFile(path.join(dirs.state, 'ledger.json'), 'utf8')) as { entries: { name: string }[] };
    expect(ledger.entries.map((e) => e.name).sort()).toEqual(['a.db', 'b.db']);

    const second = await start(dirs, cfg);
    await second.waitMsg('S3 reachable');
    // the start scan looked at both files and found them in the ledger
    await second.waitFor((l) => l.msg === 'already confirmed in S3' && String(l.file).endsWith('a.db'));
    await second.waitFor((l) => l.msg === 'already confirmed in S3' && String(l.file).endsWith('b.db'));
    expect(await second.metric('etcdbackup_uploads_total{result="success"}')).toBe(0);
    // seeded from S3 at start: a restart must not make backups look stale
    expect(await second.metric('etcdbackup_last_upload_success_timestamp_seconds')).toBeGreaterThanOrEqual(Math.floor(freshness!) - 1);
    expect(await second.stop()).toMatchObject({ code: 0 });

    await rm(path.join(dirs.state, 'ledger.json'));
    const third = await start(dirs, cfg);
    const rebuilt = await third.waitMsg('ledger rebuilt from S3');
    expect(rebuilt.objects).toBe(2);
    await third.waitFor((l) => l.msg === 'already confirmed in S3' && String(l.file).endsWith('b.db'));
    expect(await third.metric('etcdbackup_uploads_total{result="success"}')).toBe(0);
    await third.stop();

    await writeFile(path.join(dirs.state, 'ledger.json'), '{"version":1,"entries":[{"broken');
    const fourth = await start(dirs, cfg);
    await fourth.waitFor((l) => l.msg.startsWith('ledger was corrupt'));
    await fourth.waitMsg('ledger rebuilt from S3');
    await fourth.waitFor((l) => l.msg === 'already confirmed in S3' && String(l.file).endsWith('a.db'));
    expect(await fourth.metric('etcdbackup_uploads_total{result="success"}')).toBe(0);
    await fourth.stop();
    expect(await listKeys(world, bucket, 'etcd-backup/test/restart-a/')).toHaveLength(2);
  });

  it('S3 down at start: the snapshot stays pending, then ships when S3 returns', async () => {
    const target = new URL(world.s3.endpoint);
    const proxy = await startProxy({ target: { host: target.hostname, port: Number(target.port) } });
    await proxy.setMode('refuse');
    try {
      const dirs = await testDirs();
      const cfg = await writeConfig(dirs, world, bucket, { node: 'outage', s3: { endpoint: proxy.url } });
      const agent = await start(dirs, cfg);
      const startFail = await agent.waitFor((l) => l.msg === 'S3 check at start failed; will retry');
      expect(String(startFail.error)).toMatch(/S3 unreachable at s3:\/\/.* check s3.endpoint/);
      await saveSnapshot(world, path.join(dirs.snapshots, 'during-outage.db'));
      const failed = await agent.waitMsg('upload failed; the snapshot stays pending and will be retried', 'during-outage.db');
      expect(failed.reason).toBe('network');
      expect(await agent.metric('etcdbackup_snapshots_pending')).toBe(1);
      expect(await agent.metric('etcdbackup_s3_up')).toBe(0);
      expect(await agent.metric('etcdbackup_upload_failures_total{reason="network"}')).toBeGreaterThanOrEqual(1);
      const ready = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
      expect(ready.status).toBe(503);

      await proxy.setMode('pass');
      await agent.waitMsg('snapshot shipped and confirmed', 'during-outage.db');
      expect(await agent.metric('etcdbackup_snapshots_pending')).toBe(0);
      expect(await agent.metric('etcdbackup_s3_up')).toBe(1);
      expect(await listKeys(world, bucket, 'etcd-backup/test/outage/')).toEqual(['etcd-backup/test/outage/during-outage.db']);
      expect((await fetch(agent.metricsUrl.replace('/metrics', '/readyz'))).status).toBe(200);
      await agent.stop();
    } finally {
      await proxy.close();
    }
  });

  it('a missing snapshot directory is reported and watched for until it appears', async () => {
    const dirs = await testDirs();
    await rm(dirs.snapshots, { recursive: true });
    const cfg = await writeConfig(dirs, world, bucket, { node: 'late-dir' });
    const agent = await start(dirs, cfg);
    const err = await agent.waitFor((l) => l.level === 'error' && /does not exist; waiting for it to appear/.test(l.msg));
    expect(err.msg).toContain(dirs.snapshots);
    expect(await agent.metric('etcdbackup_snapshot_directory_up')).toBe(0);
    await import('node:fs/promises').then((fs) => fs.mkdir(dirs.snapshots));
    await agent.waitMsg('watching snapshot directory', undefined, 20_000);
    await saveSnapshot(world, path.join(dirs.snapshots, 'late.db'));
    await agent.waitMsg('snapshot shipped and confirmed', 'late.db');
    expect(await agent.metric('etcdbackup_snapshot_directory_up')).toBe(1);
    await agent.stop();
  });
});
