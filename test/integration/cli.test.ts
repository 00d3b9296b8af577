// One-shot verbs of the built agent: check-config, upload, list, fetch; each bad input gives one
// clear line naming the thing and the fix, with the documented exit code.
import { copyFile, readFile, writeFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, etcdctl, listKeys, readWorldEnv, saveSnapshot, type World } from '../support/world.js';

let world: World;
let dirs: TestDirs;
let env: NodeJS.ProcessEnv;
const bucket = `cli-${Date.now().toString(36)}`;
const outputs: string[] = [];

async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runCli(['--config', dirs.config, ...args], env);
  outputs.push(r.stdout, r.stderr);
  return r;
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  dirs = await testDirs('cli-');
  await writeConfig(dirs, world, bucket, { node: 'cli-node' });
  env = agentEnv(world);
});

afterAll(async () => {
  for (const o of outputs) expect(o).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
});

describe('CLI', () => {
  it('check-config reaches the bucket', async () => {
    const r = await cli('check-config');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('S3 ok');
    expect(r.stdout).not.toContain(world.s3.accessKeyId);
  });

  it('bad config: every problem on its own line with key and fix, exit 78', async () => {
    const bad = path.join(dirs.root, 'bad.yaml');
    await writeFile(bad, 's3:\n  bucket: x\n  endpont: http://127.0.0.1:1\n  partSize: 1KiB\nretention:\n  maxAge: forever\n');
    const r = await runCli(['--config', bad, 'run'], env);
    expect(r.code).toBe(78);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(r.stderr).toContain('s3.endpont: unknown key; did you mean "s3.endpoint"?');
    expect(r.stderr).toMatch(/s3\.bucket: "x" is not a valid bucket name; use lower-case/);
    expect(r.stderr).toMatch(/s3\.partSize: .* below the minimum/);
    expect(r.stderr).toMatch(/retention\.maxAge: "forever" is not a duration like 30s/);
    expect((await runCli(['--config', path.join(dirs.root, 'missing.yaml'), 'run'], env)).stderr).toMatch(
      /missing.yaml: \(file\): does not exist; create it .* or pass --config PATH/,
    );
  });

  it('unreachable S3: one line naming the endpoint and the fix, exit 69', async () => {
    const cfgPath = path.join(dirs.root, 'down.yaml');
    await writeFile(cfgPath, (await readFile(dirs.config, 'utf8')).replace(world.s3.endpoint, 'http://127.0.0.1:9'));
    const r = await runCli(['--config', cfgPath, 'check-config'], env);
    expect(r.code).toBe(69);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(
      /S3 check failed: S3 unreachable at s3:\/\/.* at http:\/\/127\.0\.0\.1:9 \(ECONNREFUSED.*check s3\.endpoint, s3\.proxy and that the server is up/,
    );
  });

  it('wrong credentials: named as such, without echoing them, exit 69', async () => {
    const r = await runCli(['--config', dirs.config, 'check-config'], { ...env, AWS_SECRET_ACCESS_KEY: 'WRONGwrongWRONGwrongWRONGwrong0123456789' });
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(/refused the credentials/);
    expect(r.stderr).not.toContain('WRONGwrong');
  });

  it('upload ships once, then reports "already present"; a corrupt file exits 65 and is not uploaded', async () => {
    const file = path.join(dirs.snapshots, 'manual.db');
    await saveSnapshot(world, file);
    const first = await cli('upload', file);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`uploaded: ${file} -> s3://${bucket}`);
    const again = await cli('upload', file);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already present');

    const corrupt = path.join(dirs.root, 'corrupt.db');
    const bytes = await readFile(file);
    bytes[100]! ^= 1;
    await writeFile(corrupt, bytes);
    const bad = await cli('upload', corrupt);
    expect(bad.code).toBe(65);
    expect(bad.stderr).toMatch(/corrupt.db: not uploaded: (corrupt|format): /);
    expect((await cli('upload', path.join(dirs.root, 'nope.db'))).code).toBe(66);
    expect(await listKeys(world, bucket, 'etcd-backup/test/cli-node/')).toEqual(['etcd-backup/test/cli-node/manual.db']);
  });

  it('list shows the snapshot; fetch --latest returns bytes etcdctl snapshot restore accepts', async () => {
    await etcdctl(world, ['put', '/cli/marker', 'restored-value']);
    const file = path.join(dirs.snapshots, 'zz-latest.db');
    await saveSnapshot(world, file);
    expect((await cli('upload', file)).code).toBe(0);
    const list = await cli('list');
    expect(list.code).toBe(0);
    const rows = list.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^KEY\s+SIZE\s+SNAPSHOT TIME/);
    expect(rows.some((r) => r.includes('etcd-backup/test/cli-node/manual.db'))).toBe(true);
    const digest = await sha256File(file);
    expect(rows.some((r) => r.includes(digest))).toBe(true);
    const json = await cli('list', '--json', '--cluster');
    expect(
      json.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l).key),
    ).toContain('etcd-backup/test/cli-node/zz-latest.db');

    const out = path.join(dirs.root, 'restore', 'fetched.db');
    const f = await cli('fetch', '--latest', '--output', out);
    expect(f.code, f.stderr).toBe(0);
    expect(await sha256File(out)).toBe(await sha256File(file));
    const dataDir = path.join(dirs.root, 'restored');
    await rm(dataDir, { recursive: true, force: true });
    await import('../support/world.js').then((w) =>
      w.run('/usr/bin/etcdctl', ['snapshot', 'restore', out, '--data-dir', dataDir], { env: { ...process.env, ETCDCTL_API: '3' } }),
    );

    const missing = await cli('fetch', 'etcd-backup/test/cli-node/none.db', '--output', path.join(dirs.root, 'x.db'));
    expect(missing.code).toBe(66);
    expect(missing.stderr).toContain('no object etcd-backup/test/cli-node/none.db');
  });

  it('fetch refuses an object whose bytes do not match its sha256 and writes nothing', async () => {
    const src = path.join(dirs.snapshots, 'manual.db');
    const other = path.join(dirs.root, 'other.db');
    await copyFile(src, other);
    // overwrite the object's bytes behind the agent's back, keeping its metadata
    const { PutObjectCommand, HeadObjectCommand } = await import('@aws-sdk/client-s3');
    const { s3Client } = await import('../support/world.js');
    const key = 'etcd-backup/test/cli-node/manual.db';
    const head = await s3Client(world).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    const body = await readFile(src);
    body[body.length - 1]! ^= 1;
    await s3Client(world).send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: head.Metadata }));
    const out = path.join(dirs.root, 'tampered.db');
    const r = await cli('fetch', key, '--output', out);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain('do not match the recorded sha256');
    await expect(readFile(out)).rejects.toThrow();
  });
});
