// The SDK's checksum default is a setting (s3.checksum) because S3-compatible servers differ in which
// checksum headers they accept and check. Both modes must ship intact single-part and multipart uploads to Ceph RGW.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, putKeys, readWorldEnv, recorded, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
const bucket = `checksum-${Date.now().toString(36)}`;
let small: string;
let large: string;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  const dirs = await testDirs('checksum-src-');
  small = path.join(dirs.root, 'small.db');
  await saveSnapshot(world, small);
  await putKeys(world, 9000, 1024, '/registry/checksum/');
  large = path.join(dirs.root, 'large.db');
  await saveSnapshot(world, large);
});

afterAll(async () => {
  await emptyAndDeleteBucket(world, bucket);
});

describe.each(['when_required', 'when_supported'])('s3.checksum: %s', (mode) => {
  it.each([
    ['single part', () => small],
    ['multipart (5 MiB parts)', () => large],
  ])('%s upload is confirmed and reads back byte for byte', async (_label, file) => {
    const src = file();
    if (_label.startsWith('multipart')) expect((await stat(src)).size).toBeGreaterThan(2 * 5 * 1024 * 1024);
    const dirs = await testDirs('checksum-');
    const node = `${mode}-${_label.split(' ')[0]}`;
    await writeConfig(dirs, world, bucket, { node, s3: { checksum: mode, partSize: '5MiB' } });
    const r = await runCli(['--config', dirs.config, 'upload', src], agentEnv(world));
    expect(r.code, r.stderr).toBe(0);
    const key = `etcd-backup/test/${node}/${path.basename(src)}`;
    const obj = await s3Client(world).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of obj.Body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
    expect(size).toBe((await stat(src)).size);
    expect(hash.digest('hex')).toBe(await sha256File(src));
    expect((await recorded(world, bucket, key)).sha256).toBe(await sha256File(src));
  });
});
