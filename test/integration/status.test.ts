// `status [--json]` against a running daemon whose metrics endpoint has TLS and basic auth, with a file in
// every state: shipped (with its key), uploading (with progress), pending, held for its .zip, rejected (with
// its reason); then with a wrong password and with the daemon stopped, computed offline and saying why.
import { copyFile, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { StatusDoc } from '../../agent/ops/status.js';
import { agentEnv, freePort, runCli, startAgent, testDirs, writeConfig, type AgentProcess, type TestDirs } from '../support/agent.js';
import { makePrivateCa, type PrivateCa } from '../support/tls-front.js';
import { createBucket, emptyAndDeleteBucket, putKeys, readWorldEnv, saveSnapshot, type World } from '../support/world.js';

const FIXTURES = path.join(import.meta.dirname, '../fixtures');
const RAW_RKE = '2024-05-01T12:00:00Z_etcd';

let world: World;
let dirs: TestDirs;
let ca: PrivateCa;
let agent: AgentProcess | undefined;
let cfg: Record<string, unknown>;
let port: number;
const bucket = `status-${Date.now().toString(36)}`;
const PASSWORD = 'st4tus-pass-0123';

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  dirs = await testDirs('status-');
  ca = makePrivateCa();
  await writeFile(path.join(dirs.root, 'metrics-password'), `${PASSWORD}\n`);
  port = await freePort();
});

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await emptyAndDeleteBucket(world, bucket);
  await rm(dirs.root, { recursive: true, force: true });
  await rm(ca.dir, { recursive: true, force: true });
});

async function writeCfg(password = path.join(dirs.root, 'metrics-password')): Promise<Record<string, unknown>> {
  return writeConfig(
    dirs,
    world,
    bucket,
    {
      node: 'status-node',
      s3: { partSize: '5MiB' },
      // 1 MiB/s: the big snapshot uploads for many seconds, a part at a time
      upload: { bandwidthLimit: '1MiB', concurrency: 1 },
      detect: { zipWait: '10m' },
      retention: { keep: 1 },
      shutdownTimeout: '1s',
      metrics: { tlsCertFile: ca.certFile, tlsKeyFile: ca.keyFile, basicAuthUser: 'ops', basicAuthPasswordFile: password },
    },
    port,
  );
}

async function status(...args: string[]) {
  const r = await runCli(['--config', dirs.config, 'status', ...args], agentEnv(world));
  expect(r.code, r.stderr).toBe(0);
  return r;
}

const byName = (doc: StatusDoc, name: string) => doc.snapshots.find((s) => s.name === name);

describe('status', () => {
  it('from the daemon (TLS + basic auth): every state, the key of what shipped, the progress of what uploads', async () => {
    cfg = await writeCfg();
    agent = await startAgent(dirs, agentEnv(world), cfg);
    await copyFile(path.join(FIXTURES, 'etcd-small.db'), path.join(dirs.snapshots, 'small.db'));
    await agent.waitMsg('snapshot shipped and confirmed', 'small.db');

    // rejected: a snapshot cut in half; held: an RKE raw snapshot whose .zip is awaited
    await copyFile(path.join(FIXTURES, 'etcd-medium.db'), path.join(dirs.root, 'broken.db'));
    await truncate(path.join(dirs.root, 'broken.db'), 200_000);
    await rename(path.join(dirs.root, 'broken.db'), path.join(dirs.snapshots, 'broken.db'));
    await copyFile(path.join(FIXTURES, 'etcd-small.db'), path.join(dirs.snapshots, RAW_RKE));

    // uploading: a snapshot of several parts; pending: one queued behind it
    const staged = path.join(dirs.root, 'big.db');
    if ((await saveSnapshot(world, staged)) < 11 * 1024 * 1024) {
      await putKeys(world, 10_000, 1024, `/status-test/${bucket}/`);
      await saveSnapshot(world, staged);
    }
    await rename(staged, path.join(dirs.snapshots, 'big.db'));
    await agent.waitFor((l) => l.msg === 'upload started' && path.basename(String(l.file)) === 'big.db', 30_000, 'the big upload');
    await copyFile(path.join(FIXTURES, 'etcd-medium.db'), path.join(dirs.snapshots, 'later.db'));
    await agent.waitMsg('snapshot rejected: not shipped and never deleted by the agent', 'broken.db', 30_000);

    // the first 5 MiB part takes ~4 s at 1 MiB/s
    let doc: StatusDoc | undefined;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 500))) {
      doc = JSON.parse((await status('--json')).stdout) as StatusDoc;
      if ((byName(doc, 'big.db')?.progress?.done ?? 0) > 0 && byName(doc, 'later.db')?.state === 'pending') break;
    }
    expect(doc!.source).toBe('daemon');
    expect(doc!.node).toBe('status-node');
    expect(doc!.s3.up).toBe(true);
    expect(doc!.pending).toBe(2);
    expect(Date.parse(doc!.lastUpload!)).toBeGreaterThan(Date.now() - 120_000);
    const small = byName(doc!, 'small.db')!;
    expect(small).toMatchObject({ state: 'shipped', key: 'etcd-backup/test/status-node/small.db' });
    const big = byName(doc!, 'big.db')!;
    expect(big.state).toBe('uploading');
    expect(big.key).toBe('etcd-backup/test/status-node/big.db');
    expect(big.progress!.done).toBeGreaterThan(0);
    expect(big.progress!.done).toBeLessThan(big.progress!.total);
    expect(byName(doc!, 'later.db')!.state).toBe('pending');
    expect(byName(doc!, RAW_RKE)).toMatchObject({ state: 'held', why: 'waiting for the .zip its producer makes of it' });
    const broken = byName(doc!, 'broken.db')!;
    expect(broken.state).toBe('rejected');
    expect(broken.why).toMatch(/truncated/);
    // keep 1: the shipped small.db is older than the newest verified snapshots, so it goes next
    expect(doc!.nextPrune.map((d) => d.name)).toContain('small.db');

    const text = (await status()).stdout;
    expect(text).toMatch(/^etcd-backup-agent \S+ on node status-node \(cluster test\), from the running daemon$/m);
    expect(text).toMatch(/^S3: reachable: /m);
    expect(text).toMatch(/^pending uploads: 2$/m);
    expect(text).toMatch(/^shipped\s+128\.0 KiB\s+\S+\s+small\.db: in S3 as etcd-backup\/test\/status-node\/small\.db$/m);
    expect(text).toMatch(/^uploading \d{1,2}%\s+[\d.]+ MiB\s+\S+\s+big\.db: to etcd-backup\/test\/status-node\/big\.db, [\d.]+ MiB of [\d.]+ MiB sent$/m);
    expect(text).toMatch(/^pending\s+.*later\.db: /m);
    expect(text).toMatch(new RegExp(`^held\\s+.*${RAW_RKE}: waiting for the \\.zip its producer makes of it$`, 'm'));
    expect(text).toMatch(/^rejected\s+.*broken\.db: .*truncated/m);
    expect(text).toMatch(/the next retention pass would delete locally[^\n]*\n {2}small\.db: /);
  });

  it('the endpoint wants the credentials: refused without them; with a wrong password status says so and goes offline', async () => {
    const code = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/status', rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end();
    });
    expect(code).toBe(401);
    await writeFile(path.join(dirs.root, 'wrong-password'), 'nope\n');
    await writeCfg(path.join(dirs.root, 'wrong-password'));
    const r = await status();
    expect(r.stdout).toMatch(
      /^computed offline from .* for node status-node \(cluster test\): the daemon at https:\/\/127\.0\.0\.1:\d+\/status refused the credentials \(401\); check metrics\.basicAuthUser and metrics\.basicAuthPasswordFile$/m,
    );
    expect(r.stdout + r.stderr).not.toContain(PASSWORD);
    await writeCfg();
  });

  it('offline once the daemon stopped: from the directory, the ledger and S3, and says so', async () => {
    await agent!.stop();
    agent = undefined;
    const doc = JSON.parse((await status('--json')).stdout) as StatusDoc;
    expect(doc.source).toBe('offline');
    expect(doc.offlineBecause).toMatch(/^no daemon listens on https:\/\/127\.0\.0\.1:\d+\/status$/);
    expect(doc.s3.up).toBe(true);
    expect(doc.s3.detail).toMatch(/^1 confirmed snapshot\(s\) under /);
    expect(byName(doc, 'small.db')).toMatchObject({ state: 'shipped', key: 'etcd-backup/test/status-node/small.db' });
    // the upload in flight was aborted at stop: pending again, like the one behind it
    expect(byName(doc, 'big.db')!.state).toBe('pending');
    expect(byName(doc, 'later.db')!.state).toBe('pending');
    expect(doc.pending).toBe(2);
    expect(byName(doc, 'broken.db')!.state).toBe('rejected');
    expect(byName(doc, RAW_RKE)!.state).toBe('held');
    expect(doc.newestInS3?.key).toBe('etcd-backup/test/status-node/small.db');
    const text = (await status()).stdout;
    expect(text).toMatch(/^computed offline from .*: no daemon listens on https:/m);
    expect(text).toMatch(/last prune: unknown offline \(the daemon keeps it\)/);
    // S3 unreachable offline: said, not a crash
    await writeConfig(dirs, world, bucket, { node: 'status-node', s3: { endpoint: `http://127.0.0.1:${await freePort()}` }, upload: { attempts: 1 } }, port);
    const down = JSON.parse((await status('--json')).stdout) as StatusDoc;
    expect(down.s3.up).toBe(false);
    expect(down.s3.detail).toMatch(/S3 unreachable/);
    expect(await readFile(dirs.config, 'utf8')).not.toContain(PASSWORD);
  });
});
