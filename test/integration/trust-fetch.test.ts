// Issue 10, item 7: `fetch` is safe to point anywhere (and item 14's `fetch ""`). Before: `fetch … --output
// /dev/null` as root replaced the device node with a 0600 file holding the cluster's Secrets; an existing
// file was overwritten; a local write error came out as 65 ("not a valid snapshot") or 69 ("S3 error") and
// could leave a `.part`; an object without sha256 was fetched unchecked; `--latest` took the newest object
// under the prefix whoever wrote it. Device nodes here are copies made with mknod in a temp dir, never /dev.
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { spawn } from 'node:child_process';
import { copyFile, lstat, mkdir, readdir, readFile, readlink, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { AGENT_MAIN, agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { fixturePath, sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, readWorldEnv, run, s3Client, type World } from '../support/world.js';

let world: World;
let env: NodeJS.ProcessEnv;
let dirs: TestDirs;
let other: TestDirs;
const bucket = `t-fetch-${(Date.now() % 1e8).toString(36)}`;
const KEY_TEMPLATE = '{prefix}/{cluster}/{node}-{name}';
const PREFIX = 'etcd-backup/test/db-';
let snapSha: string;
const mounted: string[] = [];

const cli = (...args: string[]) => runCli(['--config', dirs.config, ...args], env);

/** Names in dir that look like fetch's private temporary files. */
const partsIn = async (dir: string): Promise<string[]> => (await readdir(dir)).filter((n) => n.includes('.part'));

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  env = agentEnv(world);
  await createBucket(world, bucket);
  // node "db" and node "db-2": with this template, db-2's keys start with db's prefix
  dirs = await testDirs('trust-fetch-');
  await writeConfig(dirs, world, bucket, { node: 'db', s3: { keyTemplate: KEY_TEMPLATE } });
  other = await testDirs('trust-fetch-other-');
  await writeConfig(other, world, bucket, { node: 'db-2', s3: { keyTemplate: KEY_TEMPLATE } });
  const mine = path.join(dirs.snapshots, 'snap.db');
  await copyFile(fixturePath('etcd-small.db'), mine);
  const hourAgo = new Date(Date.now() - 3_600_000);
  await utimes(mine, hourAgo, hourAgo);
  snapSha = await sha256File(mine);
  const up = await cli('upload', mine);
  expect(up.code, up.stderr).toBe(0);
  // db-2's snapshot is newer, and lies under db's prefix
  const theirs = path.join(other.snapshots, 'newer.db');
  await copyFile(fixturePath('etcd-medium.db'), theirs);
  const up2 = await runCli(['--config', other.config, 'upload', theirs], env);
  expect(up2.code, up2.stderr).toBe(0);
});

afterAll(async () => {
  for (const m of mounted) await run('umount', [m]).catch(() => undefined);
  await emptyAndDeleteBucket(world, bucket);
});

describe('fetch --output: only a new file, or a regular file with --force', () => {
  it('a character device (mknod copy of /dev/null): refused even with --force, exit 73, the node untouched', async () => {
    const dev = path.join(dirs.root, 'null');
    await run('mknod', ['-m', '666', dev, 'c', '1', '3']);
    const before = await lstat(dev);
    for (const force of [[], ['--force']]) {
      const r = await cli('fetch', '--latest', '--output', dev, ...force);
      expect(r.code).toBe(73);
      expect(r.stderr).toMatch(new RegExp(`--output "?${dev}"? is a character device, not a regular file; it is never replaced \\(not even with --force\\)`));
    }
    const after = await lstat(dev);
    expect(after.isCharacterDevice()).toBe(true);
    expect([after.rdev, after.mode, after.ino]).toEqual([before.rdev, before.mode, before.ino]);
    expect(await partsIn(dirs.root)).toEqual([]);
  });

  it('a directory, a symlink (to a file elsewhere), a FIFO: refused even with --force, exit 73, each untouched', async () => {
    const dir = path.join(dirs.root, 'adir');
    await mkdir(dir);
    const target = path.join(other.root, 'precious.txt');
    await writeFile(target, 'not to be overwritten\n');
    const link = path.join(dirs.root, 'alink');
    await symlink(target, link);
    const fifo = path.join(dirs.root, 'afifo');
    await run('mkfifo', [fifo]);
    for (const [p, kind] of [
      [dir, 'directory'],
      [link, 'symbolic link'],
      [fifo, 'FIFO'],
    ] as const) {
      const r = await cli('fetch', '--latest', '--output', p, '--force');
      expect(r.code, r.stderr).toBe(73);
      expect(r.stderr).toContain(`is a ${kind}, not a regular file`);
    }
    expect((await lstat(dir)).isDirectory()).toBe(true);
    expect(await readdir(dir)).toEqual([]);
    expect(await readlink(link)).toBe(target);
    expect(await readFile(target, 'utf8')).toBe('not to be overwritten\n');
    expect((await lstat(fifo)).isFIFO()).toBe(true);
    expect(await partsIn(dirs.root)).toEqual([]);
  });

  it('an existing regular file: refused without --force (73, unchanged); replaced with it', async () => {
    const out = path.join(dirs.root, 'existing.db');
    await writeFile(out, 'old contents\n');
    const r = await cli('fetch', '--latest', '--output', out);
    expect(r.code).toBe(73);
    expect(r.stderr).toMatch(/exists; pass --force to replace it/);
    expect(await readFile(out, 'utf8')).toBe('old contents\n');
    const f = await cli('fetch', '--latest', '--output', out, '--force');
    expect(f.code, f.stderr).toBe(0);
    expect(await sha256File(out)).toBe(snapSha);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect(await partsIn(dirs.root)).toEqual([]);
  });

  it('a full disk (a 64 KiB tmpfs): exit 74 naming the local path, nothing at --output, no .part left', async (ctx) => {
    const small = path.join(dirs.root, 'small-fs');
    await mkdir(small);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', small]);
    } catch {
      ctx.skip(); // not allowed to mount here: the file-size limit test below covers the same path
    }
    mounted.push(small);
    const out = path.join(small, 'snap.db');
    const r = await cli('fetch', '--latest', '--output', out);
    expect(r.code, r.stderr).toBe(74);
    expect(r.stderr).toMatch(new RegExp(`writing "?${out}"? failed \\(ENOSPC\\); nothing was written there`));
    expect(r.stderr).not.toMatch(/S3|not a valid snapshot/);
    expect(await readdir(small)).toEqual([]);
  });

  it('a disk that fills within the last chunk (a short write, then ENOSPC): exit 74, not 65 "not a valid snapshot"', async (ctx) => {
    // 128 KiB of tmpfs for a 131,104-byte snapshot: the write holding its last 32 bytes takes only part of them
    const tight = path.join(dirs.root, 'tight-fs');
    await mkdir(tight);
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=128k,mode=0700', 'tmpfs', tight]);
    } catch {
      ctx.skip();
    }
    mounted.push(tight);
    const out = path.join(tight, 'snap.db');
    const r = await cli('fetch', '--latest', '--output', out);
    expect(r.code, r.stderr).toBe(74);
    expect(r.stderr).toMatch(new RegExp(`writing "?${out}"? failed \\(ENOSPC\\)`));
    expect(await readdir(tight)).toEqual([]);
  });

  it('a file-size limit (ulimit -f, SIGXFSZ ignored): EFBIG, exit 74 naming the path, no .part left', async () => {
    const out = path.join(dirs.root, 'limited.db');
    // 64 blocks of 1 KiB (bash's unit); the snapshot is larger
    const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        'bash',
        ['-c', `trap '' XFSZ; ulimit -f 64; exec "$0" "$@"`, process.execPath, AGENT_MAIN, '--config', dirs.config, 'fetch', '--latest', '--output', out],
        { env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    expect(r.code, r.stderr).toBe(74);
    expect(r.stderr).toMatch(new RegExp(`writing "?${out}"? failed \\(EFBIG\\)`));
    await expect(lstat(out)).rejects.toThrow(/ENOENT/);
    expect(await partsIn(dirs.root)).toEqual([]);
  });

  it('an --output whose parent is a regular file (ENOTDIR): exit 73 naming the directory, no .part left', async () => {
    const notDir = path.join(dirs.root, 'plain-file');
    await writeFile(notDir, 'x');
    const r = await cli('fetch', '--latest', '--output', path.join(notDir, 'snap.db'));
    expect(r.code, r.stderr).toBe(73);
    expect(r.stderr).toMatch(new RegExp(`"?${notDir}"?.*\\((ENOTDIR|EEXIST)\\)`));
    expect(await readFile(notDir, 'utf8')).toBe('x');
    expect(await partsIn(dirs.root)).toEqual([]);
  });
});

describe('fetch: what may be fetched', () => {
  it("--latest picks only objects whose node and cluster are this node's, even when another node's newer keys share the prefix", async () => {
    const out = path.join(dirs.root, 'latest.db');
    const r = await cli('fetch', '--latest', '--output', out, '--force');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${PREFIX}snap.db`);
    expect(await sha256File(out)).toBe(snapSha);
    // db-2 picks its own
    const o2 = path.join(other.root, 'latest.db');
    const r2 = await runCli(['--config', other.config, 'fetch', '--latest', '--output', o2], env);
    expect(r2.code, r2.stderr).toBe(0);
    expect(await sha256File(o2)).toBe(await sha256File(fixturePath('etcd-medium.db')));
  });

  it('an object without manifest or sha256 metadata: refused (65, nothing written) unless --allow-unverified', async () => {
    const key = `${PREFIX}dropped-in.db`;
    await s3Client(world).send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: await readFile(fixturePath('etcd-small.db')) }));
    const out = path.join(dirs.root, 'unverified.db');
    const r = await cli('fetch', key, '--output', out);
    expect(r.code).toBe(65);
    expect(r.stderr).toMatch(/no recorded sha256 .* pass --allow-unverified/);
    await expect(lstat(out)).rejects.toThrow(/ENOENT/);
    expect(await partsIn(dirs.root)).toEqual([]);
    const ok = await cli('fetch', key, '--output', out, '--allow-unverified');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/raw snapshot verified/);
    expect(await sha256File(out)).toBe(snapSha);
    // and --latest never picks such an object
    const latest = path.join(dirs.root, 'latest2.db');
    await cli('fetch', '--latest', '--output', latest);
    expect(await sha256File(latest)).toBe(snapSha);
  });

  it('item 14: an empty KEY is a usage error (64) before anything is read or sent', async () => {
    const r = await cli('fetch', '', '--output', path.join(dirs.root, 'empty'));
    expect(r.code).toBe(64);
    expect(r.stderr).toMatch(/fetch needs exactly one non-empty KEY, or --latest/);
  });
});
