// The store contract (test/support/store-conformance.ts) against the real servers: Ceph RGW and OpenStack
// Swift with s3api, through the agent's own S3Store, with listings of three keys a page.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseConfig } from '../../agent/config/parse.js';
import { S3Store } from '../../agent/store/s3.js';
import { CHECKS, runConformance } from '../support/store-conformance.js';
import {
  createBucket,
  createSwiftBucket,
  emptyAndDeleteBucket,
  emptyAndDeleteSwiftBucket,
  readWorldEnv,
  requireSwift,
  type S3Server,
  type World,
} from '../support/world.js';

let world: World;
const bucket = `conformance-${Date.now().toString(36)}`;

async function storeFor(server: S3Server): Promise<S3Store> {
  const creds = path.join(await mkdtemp(path.join(os.tmpdir(), 'conformance-')), 'credentials');
  await writeFile(creds, `[default]\naws_access_key_id = ${server.accessKeyId}\naws_secret_access_key = ${server.secretAccessKey}\n`, { mode: 0o600 });
  const cfg = parseConfig(`s3: {bucket: ${bucket}, endpoint: "${server.endpoint}", region: ${server.region}, credentialsFile: ${creds}}\n`, 'conformance', {});
  return new S3Store(cfg, undefined, 3);
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  await createSwiftBucket(requireSwift(world), bucket);
});

afterAll(async () => {
  await emptyAndDeleteBucket(world, bucket);
  await emptyAndDeleteSwiftBucket(requireSwift(world), bucket);
});

describe('store conformance on real servers', () => {
  it('Ceph RGW passes every check', async () => {
    const store = await storeFor(world.s3);
    try {
      expect(await runConformance({ store, prefix: 'conf/' })).toEqual([]);
    } finally {
      store.close();
    }
    expect(CHECKS.length).toBeGreaterThanOrEqual(10);
  });

  it('OpenStack Swift (s3api) passes every check', async () => {
    const store = await storeFor(requireSwift(world));
    try {
      expect(await runConformance({ store, prefix: 'conf/' })).toEqual([]);
    } finally {
      store.close();
    }
  });
});
