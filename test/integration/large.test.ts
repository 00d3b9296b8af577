// A 1 GiB real etcd snapshot: memory stays bounded, and SIGTERM mid-upload drains cleanly.
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, startAgent, testDirs, writeConfig, type AgentProcess } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, listKeys, readWorldEnv, run, s3Client, saveSnapshot, PROJECT_ROOT, type World } from '../support/world.js';

let world: World;
let big: World; // the shared world's S3, with an etcd of its own holding ~1 GiB
let etcdDir: string;
let snapshot: string;
const bucket = `large-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  etcdDir = await mkdtemp(path.join(os.tmpdir(), 'etcd-large-'));
  await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-up.sh'), etcdDir], { timeoutMs: 60_000 });
  const env = await import('node:fs/promises').then((fs) => fs.readFile(path.join(etcdDir, 'etcd.env'), 'utf8'));
  big = { ...world, etcd: { endpoints: /ETCDCTL_ENDPOINTS=(.*)/.exec(env)![1]! } };
  await loadMiB(big.etcd.endpoints, 1100);
  snapshot = path.join(etcdDir, 'big.db');
  await saveSnapshot(big, snapshot);
}, 300_000);

/** ~1 MiB random values through etcd's HTTP gateway: no process per request, 7× faster than etcdctl here. */
async function loadMiB(endpoint: string, mib: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      while (next < mib) {
        const i = next++;
        const res = await fetch(`${endpoint}/v3/kv/put`, {
          method: 'POST',
          body: JSON.stringify({
            key: Buffer.from(`/registry/large/${String(i).padStart(6, '0')}`).toString('base64'),
            value: randomBytes(1024 * 1024).toString('base64'),
          }),
        });
        if (!res.ok) throw new Error(`etcd put failed: ${res.status} ${await res.text()}`);
        await res.arrayBuffer();
      }
    }),
  );
}

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const a of agents) expect(a.stdout + a.stderr).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
  await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-down.sh'), etcdDir]).catch(() => undefined);
  await rm(etcdDir, { recursive: true, force: true });
});

describe('a 1 GiB snapshot', () => {
  it('SIGTERM mid-upload aborts it cleanly within the drain time and exits 0; the restart ships it', async () => {
    const dirs = await testDirs();
    const cfg = await writeConfig(dirs, world, bucket, { node: 'drain', shutdownTimeout: '1s', upload: { bandwidthLimit: '64MiB' } });
    const agent = await startAgent(dirs, agentEnv(world), cfg);
    agents.push(agent);
    await import('node:fs/promises').then((fs) => fs.link(snapshot, path.join(dirs.snapshots, 'big.db')));
    await agent.waitMsg('snapshot complete; queued for upload', 'big.db', 120_000);
    const t0 = Date.now();
    const exit = await agent.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(15_000);
    await agent.waitMsg('upload aborted by shutdown; it will be shipped after restart', 'big.db', 1000);
    const open = await s3Client(world).send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(open.Uploads ?? []).toEqual([]);
    expect(await listKeys(world, bucket, 'etcd-backup/test/drain/')).toEqual([]);

    await writeConfig(dirs, world, bucket, { node: 'drain' }, Number(String((cfg.metrics as { listen: string }).listen).split(':')[1]));
    const again = await startAgent(dirs, agentEnv(world), cfg);
    agents.push(again);
    await again.waitMsg('snapshot shipped and confirmed', 'big.db', 240_000);
    await again.stop();
    await s3Client(world).send(new (await import('@aws-sdk/client-s3')).DeleteObjectCommand({ Bucket: bucket, Key: 'etcd-backup/test/drain/big.db' }));
  });

  it('ships with peak RSS under 256 MiB, confirmed by sha256', async () => {
    const size = (await stat(snapshot)).size;
    expect(size).toBeGreaterThan(1024 ** 3);
    const dirs = await testDirs();
    const cfg = await writeConfig(dirs, world, bucket, { node: 'big', log: { level: 'info' } });
    const agent = await startAgent(dirs, agentEnv(world), cfg);
    agents.push(agent);
    await import('node:fs/promises').then((fs) => fs.link(snapshot, path.join(dirs.snapshots, 'big.db')));
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', 'big.db', 240_000);
    expect(shipped.size).toBe(size);
    expect(shipped.sha256).toBe(await sha256File(snapshot));
    const peak = agent.peakRssMiB();
    console.log(
      `1 GiB snapshot: ${(size / 1024 ** 2).toFixed(0)} MiB shipped in ${shipped.seconds} s (${shipped.mibPerSecond} MiB/s), agent peak RSS ${peak.toFixed(0)} MiB`,
    );
    expect(peak).toBeLessThan(256);
    await agent.stop();
  });
});
