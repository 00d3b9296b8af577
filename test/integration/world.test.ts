// Smoke test of the shared test world (scripts/world + test/support/world.ts).
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createBucket, emptyAndDeleteBucket, etcdctl, listKeys, putKeys, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('test world', () => {
  let world: World;
  let s3: S3Client;
  let tmp: string;
  const bucket = `smoke-${Date.now()}`;
  const key = 'snapshots/node-a/etcd-snapshot.db';
  const body = randomBytes(20 * 1024 * 1024 + 12_345); // 5 parts at the 5 MiB default

  beforeAll(async () => {
    world = await readWorldEnv(inject('worldDir'));
    s3 = s3Client(world);
    tmp = await mkdtemp(path.join(os.tmpdir(), 'world-test-'));
    await createBucket(world, bucket);
  });

  afterAll(async () => {
    await emptyAndDeleteBucket(world, bucket);
    s3?.destroy();
    await rm(tmp, { recursive: true, force: true });
  });

  const getBytes = async (): Promise<Buffer> => {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  };

  it('stores a multipart upload byte for byte', async () => {
    await new Upload({ client: s3, params: { Bucket: bucket, Key: key, Body: body } }).done();
    // RGW 16 returns an empty ETag from CompleteMultipartUpload: check with HEAD
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ContentLength).toBe(body.length);
    expect(head.ETag).toMatch(/-5"$/);
    expect(sha256(await getBytes())).toBe(sha256(body));
    expect(await listKeys(world, bucket, 'snapshots/')).toEqual([key]);
  });

  it('keeps objects across a radosgw restart', async () => {
    await world.restartRgw();
    expect(sha256(await getBytes())).toBe(sha256(body));
  });

  it('saves an etcd snapshot of loaded keys', async () => {
    await putKeys(world, 3000, 1024, '/registry/smoke/');
    const { stdout } = await etcdctl(world, ['get', '--prefix', '/registry/smoke/', '--limit', '1', '-w', 'json']);
    expect(JSON.parse(stdout).count).toBe(3000); // count = all matches, despite --limit

    const file = path.join(tmp, 'snap.db');
    const size = await saveSnapshot(world, file);
    expect(size).toBeGreaterThan(3000 * 1024);
    expect(size % 512).toBe(32); // bbolt pages + 32-byte sha256 trailer
    expect(await readdir(tmp)).toEqual(['snap.db']); // .part renamed away
  });
});
