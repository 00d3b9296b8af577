// S3 Object Lock against Ceph RGW 16: check-config on buckets with and without it, every object the agent
// writes (snapshot, signature, manifest) carrying the retention, the lock really refusing a delete, remote
// retention keeping locked objects with "locked until", and a delete S3 refuses anyway reported, not looped.
// RGW 16 drops the lock given at CreateMultipartUpload; the agent sets it again after Complete (the first
// upload test fails without that).
import {
  CreateBucketCommand,
  DeleteBucketPolicyCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  PutBucketPolicyCommand,
} from '@aws-sdk/client-s3';
import { execFileSync } from 'node:child_process';
import { rm, utimes } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { createBucket, emptyAndDeleteBucket, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
let dirs: TestDirs;
const stamp = Date.now().toString(36);
const lockBucket = `lock-${stamp}`;
const plainBucket = `nolock-${stamp}`;
const LOCK = { mode: 'GOVERNANCE', retainFor: '1d' };
let older: string;
let newer: string;
let signingKey: string;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await s3Client(world).send(new CreateBucketCommand({ Bucket: lockBucket, ObjectLockEnabledForBucket: true }));
  await createBucket(world, plainBucket);
  dirs = await testDirs('object-lock-');
  older = path.join(dirs.root, 'older.db');
  newer = path.join(dirs.root, 'newer.db');
  await saveSnapshot(world, older);
  await saveSnapshot(world, newer);
  // remote retention ranks by the snapshot's time: the older one two days back
  const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
  await utimes(older, twoDaysAgo, twoDaysAgo);
  signingKey = path.join(dirs.root, 'signing');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'lock-test', '-f', signingKey]);
});

afterAll(async () => {
  // GOVERNANCE retention can be bypassed by the bucket owner: that is how the test cleans up
  const c = s3Client(world);
  for (;;) {
    const r = await c.send(new ListObjectVersionsCommand({ Bucket: lockBucket }));
    const all = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])];
    if (!all.length) break;
    await c.send(
      new DeleteObjectsCommand({
        Bucket: lockBucket,
        BypassGovernanceRetention: true,
        Delete: { Objects: all.map((v) => ({ Key: v.Key!, VersionId: v.VersionId })) },
      }),
    );
  }
  await c.send(new DeleteBucketPolicyCommand({ Bucket: plainBucket })).catch(() => undefined);
  await emptyAndDeleteBucket(world, lockBucket);
  await emptyAndDeleteBucket(world, plainBucket);
  await rm(dirs.root, { recursive: true, force: true });
});

async function cli(bucket: string, s3: Record<string, unknown>, node: string, extra: Record<string, unknown>, ...args: string[]) {
  await writeConfig(dirs, world, bucket, { node, s3: { ...s3, partSize: '5MiB' }, ...extra });
  return runCli(['--config', dirs.config, ...args], agentEnv(world));
}

const head = (bucket: string, key: string) => s3Client(world).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));

describe('check-config and Object Lock', () => {
  it('a bucket without Object Lock: a config asking for it is refused (exit 78), saying what to do', async () => {
    const r = await cli(plainBucket, { objectLock: LOCK }, 'cc', {}, 'check-config');
    expect(r.code, r.stdout + r.stderr).toBe(78);
    expect(r.stderr).toContain(
      `Object Lock: the config asks for GOVERNANCE retention but bucket ${plainBucket} has no Object Lock; create the bucket with Object Lock enabled, or remove s3.objectLock`,
    );
    const off = await cli(plainBucket, {}, 'cc', {}, 'check-config');
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toContain('Object Lock: off');
  });

  it('a bucket with Object Lock: reported, and the config that asks for it passes', async () => {
    const r = await cli(lockBucket, { objectLock: LOCK }, 'cc', {}, 'check-config');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('Object Lock: enabled on the bucket; every object is kept GOVERNANCE for 1d');
    expect(r.stdout).toMatch(/write probe ok: a small object with Object Lock was written/);
    const unset = await cli(lockBucket, {}, 'cc', {}, 'check-config');
    expect(unset.code, unset.stderr).toBe(0);
    expect(unset.stdout).toContain('Object Lock: enabled on the bucket (s3.objectLock is not set');
  });
});

describe('uploads under Object Lock', () => {
  const prefix = 'etcd-backup/test/locked/';

  it('the snapshot, its signature and its manifest all carry the retention; parts carry Content-MD5', async () => {
    const t0 = Date.now();
    const r = await cli(lockBucket, { objectLock: LOCK }, 'locked', { signing: { keyFile: signingKey }, log: { level: 'info' } }, 'upload', older, newer);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('Content-MD5 (objects are written under Object Lock');
    for (const name of ['older.db', 'newer.db']) {
      for (const key of [`${prefix}${name}`, `${prefix}${name}.sig`, `${prefix}${name}.manifest.json`]) {
        const h = await head(lockBucket, key);
        expect(h.ObjectLockMode, key).toBe('GOVERNANCE');
        const until = h.ObjectLockRetainUntilDate!.getTime();
        expect(until, key).toBeGreaterThanOrEqual(t0 + 86_400_000 - 1000);
        expect(until, key).toBeLessThanOrEqual(Date.now() + 86_400_000 + 1000);
      }
    }
    const m = JSON.parse(
      await (await s3Client(world).send(new GetObjectCommand({ Bucket: lockBucket, Key: `${prefix}older.db.manifest.json` }))).Body!.transformToString(),
    ) as { object: { integrity: string } };
    expect(m.object.integrity).toBe('md5');
  });

  it('the lock holds: deleting the object version is refused; a restore drill reads it back', async () => {
    const h = await head(lockBucket, `${prefix}older.db`);
    await expect(s3Client(world).send(new DeleteObjectCommand({ Bucket: lockBucket, Key: `${prefix}older.db`, VersionId: h.VersionId }))).rejects.toMatchObject(
      { name: 'AccessDenied' },
    );
    const v = await cli(lockBucket, { objectLock: LOCK }, 'locked', {}, 'verify', `${prefix}older.db`);
    expect(v.code, v.stdout + v.stderr).toBe(0);
  });

  it('remote retention keeps a locked object and says until when; nothing is deleted', async () => {
    const r = await cli(lockBucket, { objectLock: LOCK }, 'locked', { retention: { remote: { enabled: true, keep: 1 } } }, 'prune');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(
        `kept\\s+${prefix}older\\.db: locked until \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z \\(S3 Object Lock\\); kept, and deleted by a later pass once the lock ends`,
      ),
    );
    expect(r.stdout).toContain('remote: deleted 0');
    // still the current version, no delete marker in front of it
    expect((await head(lockBucket, `${prefix}older.db`)).ContentLength).toBeGreaterThan(0);
  });
});

describe('a delete S3 refuses anyway', () => {
  it('is reported once per pass (a warning and a "kept" line) and tried again only by the next pass', async () => {
    const node = 'policy';
    const prefix = `etcd-backup/test/${node}/`;
    const up = await cli(plainBucket, {}, node, {}, 'upload', older, newer);
    expect(up.code, up.stderr).toBe(0);
    // what an operator's bucket policy does to a key that may write but not delete
    const policy = {
      Version: '2012-10-17',
      Statement: [{ Effect: 'Deny', Principal: '*', Action: 's3:DeleteObject', Resource: `arn:aws:s3:::${plainBucket}/${prefix}*` }],
    };
    await s3Client(world).send(new PutBucketPolicyCommand({ Bucket: plainBucket, Policy: JSON.stringify(policy) }));
    for (let pass = 1; pass <= 2; pass++) {
      const t0 = Date.now();
      const r = await cli(plainBucket, {}, node, { retention: { remote: { enabled: true, keep: 1 } }, log: { level: 'info' } }, 'prune');
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(
        new RegExp(
          `kept\\s+${prefix}older\\.db: S3 refused to delete it \\(.*AccessDenied.*\\); an Object Lock or a bucket policy protects it\\. Kept; the next retention pass tries once more`,
        ),
      );
      expect(r.stderr.split('\n').filter((l) => l.includes('retention: S3 refused to delete a remote snapshot; kept'))).toHaveLength(1);
      expect(Date.now() - t0).toBeLessThan(20_000);
    }
    expect((await head(plainBucket, `${prefix}older.db`)).ContentLength).toBeGreaterThan(0);
  });
});
