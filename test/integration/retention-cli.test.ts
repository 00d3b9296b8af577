// `prune` against Ceph RGW: the dry-run report gives a reason for every file it keeps; remote retention
// never touches a second node's prefix or objects the agent did not write; a crashed multipart upload is
// aborted once it is older than the threshold (the CLI's --stale-upload-age lets the test not wait a day).
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { copyFile, readdir, readFile, truncate, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { fixturePath } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, listKeys, readWorldEnv, s3Client, type World } from '../support/world.js';

let world: World;
let env: NodeJS.ProcessEnv;
const bucket = `retention-cli-${Date.now().toString(36)}`;
const outputs: string[] = [];
const H = 3_600_000;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  env = agentEnv(world);
  await createBucket(world, bucket);
});

afterAll(async () => {
  for (const o of outputs) expect(o).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
});

async function node(
  name: string,
  overrides: Record<string, unknown> = {},
): Promise<TestDirs & { cli: (...args: string[]) => Promise<{ code: number | null; stdout: string; stderr: string }> }> {
  const dirs = await testDirs(`prune-${name}-`);
  await writeConfig(dirs, world, bucket, { node: name, ...overrides });
  const cli = async (...args: string[]) => {
    const r = await runCli(['--config', dirs.config, ...args], env);
    outputs.push(r.stdout, r.stderr);
    return r;
  };
  return { ...dirs, cli };
}

async function place(src: string, dir: string, name: string, hoursAgo: number): Promise<string> {
  const dst = path.join(dir, name);
  await copyFile(src, dst);
  const t = new Date(Date.now() - hoursAgo * H);
  await utimes(dst, t, t);
  return dst;
}

const keptLine = (out: string, name: string): string | undefined => out.split('\n').find((l) => l.startsWith('kept ') && l.slice(14).startsWith(`${name}: `));

describe('prune', () => {
  it('--dry-run on shipped, unshipped, corrupt and unknown files: what would go, and a reason for every file kept', async () => {
    const n = await node('dry', { retention: { keep: 1 } });
    const shippedNew = await place(fixturePath('etcd-small.db'), n.snapshots, 'shipped-new.db', 2);
    const shippedOld = await place(fixturePath('etcd-small.db'), n.snapshots, 'shipped-old.db', 3);
    expect((await n.cli('upload', shippedNew, shippedOld)).code).toBe(0);
    await place(fixturePath('etcd-medium.db'), n.snapshots, 'unshipped.db', 4);
    const corrupt = await place(fixturePath('etcd-small.db'), n.snapshots, 'corrupt.db', 5);
    await truncate(corrupt, 100_000);
    await utimes(corrupt, new Date(Date.now() - 5 * H), new Date(Date.now() - 5 * H));
    await writeFile(path.join(n.snapshots, 'notes.txt'), 'operator notes, not a snapshot\n');
    await writeFile(path.join(n.snapshots, 'pki.bundle.tar.gz'), 'keys');
    await writeFile(path.join(n.snapshots, '2024-05-01T12:00:00Z_etcd.part'), 'half a snapshot');
    const before = (await readdir(n.snapshots)).sort();

    const r = await n.cli('prune', '--dry-run');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(
      `dry run (nothing is deleted): ${n.snapshots}: keep 1; remote retention off; HeadObject confirms each copy; stale uploads aborted after 1d`,
    );
    expect(r.stdout).toMatch(
      /^would delete {2}shipped-old\.db: 128\.0 KiB; beyond the newest 1 \(it is number 2\); its copy etcd-backup\/test\/dry\/shipped-old\.db is confirmed by the ledger and HeadObject/m,
    );
    const reasons: Record<string, RegExp> = {
      'shipped-new.db': /^newest verified snapshot; always kept$/,
      'unshipped.db': /^the policy would delete it, but it is not in S3 yet \(unshipped: no confirmed upload in the ledger\)$/,
      'corrupt.db': /^failed verification \(truncated: .*\); kept for inspection, never deleted$/,
      'notes.txt': /^not an etcd snapshot \(unrecognised name and content\); the agent never deletes it$/,
      'pki.bundle.tar.gz': /^not an etcd snapshot \(the cluster PKI bundle\); the agent never deletes it$/,
      '2024-05-01T12:00:00Z_etcd.part': /^not an etcd snapshot \(a partial file \(\*\.part\) from an interrupted writer\); the agent never deletes it$/,
    };
    for (const [name, reason] of Object.entries(reasons)) {
      const l = keptLine(r.stdout, name);
      expect(l, `no kept line for ${name}:\n${r.stdout}`).toBeDefined();
      expect(l!.slice(l!.indexOf(': ') + 2)).toMatch(reason);
    }
    expect(r.stdout).toMatch(/summary: local: would delete 1 \(128\.0 KiB\), kept 6; stale uploads: would abort 0/);
    expect((await readdir(n.snapshots)).sort()).toEqual(before);

    const real = await n.cli('prune');
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/^deleted {7}shipped-old\.db: /m);
    expect((await readdir(n.snapshots)).sort()).toEqual(before.filter((f) => f !== 'shipped-old.db'));
  });

  it("remote retention deletes this node's oldest objects only: a second node's prefix and foreign objects stay", async () => {
    const a = await node('node-a', { retention: { keep: 1, remote: { enabled: true, keep: 2 } } });
    const b = await node('node-b');
    const names = ['s1.db', 's2.db', 's3.db', 's4.db', 's5.db'];
    // one upload at a time, oldest first, so S3's LastModified orders them as their names do
    for (const [i, name] of names.entries()) {
      const f = await place(fixturePath('etcd-small.db'), a.snapshots, name, names.length - i);
      expect((await a.cli('upload', f)).code).toBe(0);
      expect((await b.cli('upload', await place(fixturePath('etcd-small.db'), b.snapshots, name, names.length - i))).code).toBe(0);
    }
    const s3 = s3Client(world);
    const ours = { sha256: 'a'.repeat(64), node: 'node-a', cluster: 'test', name: 'x.db' };
    const foreign = {
      'etcd-backup/test/node-a/README.txt': {},
      'etcd-backup/test/node-a/sub/x.db': ours,
      'etcd-backup/test/node-a/forged.db': { ...ours, node: 'node-b' },
    };
    for (const [key, md] of Object.entries(foreign)) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'x', Metadata: md }));
    const bKeys = await listKeys(world, bucket, 'etcd-backup/test/node-b/');
    expect(bKeys).toHaveLength(5);

    const r = await a.cli('prune');
    expect(r.code, r.stderr).toBe(0);
    // locally: all but the newest went (each confirmed in S3); remotely: the newest 2 stay
    expect(await readdir(a.snapshots)).toEqual(['s5.db']);
    for (const gone of ['s1.db', 's2.db', 's3.db'])
      expect(r.stdout).toMatch(
        new RegExp(`^deleted {7}etcd-backup/test/node-a/${gone.replace('.', '\\.')}: 128\\.0 KiB; beyond the newest 2 of this node`, 'm'),
      );
    expect(r.stdout).toMatch(/^kept {10}etcd-backup\/test\/node-a\/forged\.db: written for node node-b of cluster test; never touched$/m);
    expect(r.stdout).toMatch(
      /^kept {10}etcd-backup\/test\/node-a\/README\.txt: no sha256 metadata or manifest: not a complete backup by the agent; never touched$/m,
    );
    expect(r.stdout).toMatch(/^kept {10}etcd-backup\/test\/node-a\/sub\/x\.db: not directly under this node's prefix/m);
    expect(await listKeys(world, bucket, 'etcd-backup/test/node-a/')).toEqual(
      [...Object.keys(foreign), 'etcd-backup/test/node-a/s4.db', 'etcd-backup/test/node-a/s5.db'].sort(),
    );
    expect(await listKeys(world, bucket, 'etcd-backup/test/node-b/')).toEqual(bKeys);
    // the ledger records what S3 holds
    const ledger = JSON.parse(await readFile(path.join(a.state, 'ledger.json'), 'utf8')) as { entries: { key: string }[] };
    expect(ledger.entries.map((e) => e.key).sort()).toEqual(['etcd-backup/test/node-a/s4.db', 'etcd-backup/test/node-a/s5.db']);
  });

  it("a crashed multipart upload under this node's prefix is aborted once older than the threshold; another node's is not", async () => {
    const n = await node('crashy');
    const s3 = s3Client(world);
    const open = async (key: string): Promise<string> => {
      const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: Buffer.alloc(1024 * 1024, 7) }));
      return UploadId!;
    };
    const mine = await open('etcd-backup/test/crashy/2024-05-01T12:00:00Z_etcd.zip');
    const theirs = await open('etcd-backup/test/other/2024-05-01T12:00:00Z_etcd.zip');
    const openIds = async (): Promise<string[]> =>
      ((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).map((u) => u.UploadId!).sort();

    const young = await n.cli('prune');
    expect(young.code).toBe(0);
    expect(young.stdout).toContain(`left          etcd-backup/test/crashy/2024-05-01T12:00:00Z_etcd.zip (upload ${mine}): younger than 1d (started `);
    expect(await openIds()).toEqual([mine, theirs].sort());

    const dry = await n.cli('prune', '--dry-run', '--stale-upload-age', '0s');
    expect(dry.stdout).toContain(`would abort   etcd-backup/test/crashy/2024-05-01T12:00:00Z_etcd.zip (upload ${mine}): incomplete for `);
    expect(await openIds()).toEqual([mine, theirs].sort());

    const now = await n.cli('prune', '--stale-upload-age', '0s');
    expect(now.code).toBe(0);
    expect(now.stdout).toMatch(/^aborted {7}etcd-backup\/test\/crashy\/.*: incomplete for .* \(threshold 0s\): left by a crashed or killed upload$/m);
    expect(now.stdout).toMatch(/stale uploads: aborted 1/);
    expect(await openIds()).toEqual([theirs]);
    expect((await n.cli('prune', '--stale-upload-age', 'soon')).code).toBe(64);
  });
});
