// Issue 10, items 11 and 12, with the other tools' own code.
//  11. rclone (Debian's) lists and copies an agent object without the `value out of range` notice and shows
//      the snapshot file's mtime. Before: the agent wrote `mtime` as milliseconds; rclone reads seconds and
//      said on every command "Failed to read mtime from object: strconv.ParseInt: … value out of range".
//  12. `import-rke` and `list` print RKE's own restore command with --folder <prefix>/<cluster>/<node>, the
//      folder under which RKE's lookup (a listing of <folder>/<name>) finds the object. Before: the prefix
//      alone, under which RKE finds nothing.
import { PutObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, stat, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli, testDirs, writeConfig } from '../support/agent.js';
import { goZip } from '../support/go-zip.js';
import { fixturePath, sha256File } from '../support/snapshots.js';
import { readWorldEnv, type World } from '../support/world.js';
import { bucketOn, type ServerName, type TestBucket } from '../support/buckets.js';

const exec = promisify(execFile);
let world: World;
let work: string;
const cleanups: (() => Promise<void>)[] = [];
// a time with a fraction of a second, as file systems keep it
const MTIME = new Date('2024-05-01T12:00:00.250Z');

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  work = await mkdtemp(path.join(os.tmpdir(), 'trust-interop-'));
});
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

type Server = TestBucket;

async function server(which: ServerName, tag: string): Promise<Server> {
  const s = await bucketOn(world, which, tag);
  cleanups.push(s.remove);
  return s;
}

/** rclone with a remote `w:` made from environment variables (no config file). */
async function rclone(s: Server, args: string[]): Promise<{ stdout: string; stderr: string }> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: work,
    RCLONE_CONFIG: '/dev/null',
    RCLONE_CONFIG_W_TYPE: 's3',
    RCLONE_CONFIG_W_PROVIDER: 'Other',
    RCLONE_CONFIG_W_ENDPOINT: s.endpoint,
    RCLONE_CONFIG_W_REGION: s.region,
    RCLONE_CONFIG_W_ACCESS_KEY_ID: s.keyId,
    RCLONE_CONFIG_W_SECRET_ACCESS_KEY: s.secret,
    RCLONE_CONFIG_W_FORCE_PATH_STYLE: 'true',
  };
  return exec('rclone', args, { env, timeout: 60_000 });
}

describe.each(['rgw', 'swift'] as const)("11: rclone reads the agent's objects (%s)", (which) => {
  it("lsl shows the file's mtime without a notice; copyto brings the bytes back with that mtime", async () => {
    const s = await server(which, 'rclone');
    const dirs = await testDirs('trust-rclone-');
    await writeConfig(dirs, world, s.bucket, { node: 'rc', s3: { bucket: s.bucket, endpoint: s.endpoint, region: s.region } });
    const file = path.join(dirs.snapshots, 'snap.db');
    await copyFile(fixturePath('etcd-small.db'), file);
    await utimes(file, MTIME, MTIME);
    const up = await runCli(['--config', dirs.config, 'upload', file, '--quiet'], s.env);
    expect(up.code, up.stderr).toBe(0);
    const key = 'etcd-backup/test/rc/snap.db';

    const ls = await rclone(s, ['lsl', `w:${s.bucket}/etcd-backup/test/rc/`]);
    expect(ls.stderr).not.toMatch(/value out of range|Failed to read mtime/);
    expect(ls.stdout).toMatch(/^\s*131104 2024-05-01 12:00:00\.250000000 snap\.db$/m);

    const out = path.join(work, `${which}-copy.db`);
    const cp = await rclone(s, ['copyto', `w:${s.bucket}/${key}`, out]);
    expect(cp.stderr).not.toMatch(/value out of range|Failed to read mtime|ERROR/);
    expect(await sha256File(out)).toBe(await sha256File(file));
    expect((await stat(out)).mtime.toISOString()).toBe(MTIME.toISOString());
  });

  it('control: the milliseconds earlier agents wrote make rclone print the notice (what the format change removed)', async () => {
    const s = await server(which, 'rcold');
    await s.client.send(
      new PutObjectCommand({
        Bucket: s.bucket,
        Key: 'old.db',
        Body: await readFile(fixturePath('etcd-small.db')),
        Metadata: { mtime: String(MTIME.getTime()) },
      }),
    );
    const ls = await rclone(s, ['lsl', `w:${s.bucket}/`]);
    expect(ls.stderr).toMatch(/value out of range/);
  });
});

describe('12: the restore command RKE itself understands', () => {
  it("list: for an RKE zip, `rke etcd snapshot-restore` with --folder <prefix>/<cluster>/<node>, under which RKE's lookup finds it", async () => {
    const s = await server('rgw', 'rke');
    const dirs = await testDirs('trust-rke-');
    await writeConfig(dirs, world, s.bucket, { node: 'etcd-1', cluster: 'prod' });
    const name = '2024-05-08T12:00:00Z_etcd';
    const raw = path.join(work, name);
    await copyFile(fixturePath('etcd-small.db'), raw);
    const zip = path.join(dirs.snapshots, `${name}.zip`);
    await goZip('rke', raw, zip);
    const up = await runCli(['--config', dirs.config, 'upload', zip, '--quiet'], s.env);
    expect(up.code, up.stderr).toBe(0);
    const list = await runCli(['--config', dirs.config, 'list'], s.env);
    expect(list.code, list.stderr).toBe(0);
    const host = new URL(world.s3.endpoint).host;
    const folder = 'etcd-backup/prod/etcd-1';
    expect(list.stdout).toContain(
      `  rke etcd snapshot-restore --config cluster.yml --name ${name} --s3 --bucket-name ${s.bucket} --folder ${folder} --s3-endpoint ${host} --region ${world.s3.region} --access-key ACCESS_KEY --secret-key SECRET_KEY\n`,
    );
    expect(list.stdout).toContain('(RKE talks HTTPS to --s3-endpoint; an http:// endpoint needs a TLS front, or restore from the fetched file below)');
    // what RKE does with those flags: list <folder>/<name>, take the key whose name without its extension is <name>
    const found = await s.client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: `${folder}/${name}` }));
    const keys = (found.Contents ?? []).map((o) => o.Key!).filter((k) => path.posix.basename(k).replace(/\.zip$/, '') === name);
    expect(keys).toEqual([`${folder}/${name}.zip`]);
    // and with the prefix alone (what an RKE-style --folder etcd-backup would list) there is nothing to find
    const bare = await s.client.send(new ListObjectsV2Command({ Bucket: s.bucket, Prefix: `etcd-backup/${name}` }));
    expect(bare.Contents ?? []).toEqual([]);
  });

  it('list: for an RKE2 snapshot, the --etcd-s3-folder form', async () => {
    const s = await server('rgw', 'rke2');
    const dirs = await testDirs('trust-rke2-');
    await writeConfig(dirs, world, s.bucket, { node: 'cp-1', cluster: 'prod' });
    const name = `etcd-snapshot-cp-1-${Math.floor(Date.now() / 1000) - 3600}`;
    const file = path.join(dirs.snapshots, name);
    await copyFile(fixturePath('etcd-small.db'), file);
    const up = await runCli(['--config', dirs.config, 'upload', file, '--quiet'], s.env);
    expect(up.code, up.stderr).toBe(0);
    const list = await runCli(['--config', dirs.config, 'list'], s.env);
    expect(list.stdout).toContain(
      `  rke2 server --cluster-reset --cluster-reset-restore-path=${name} --etcd-s3 --etcd-s3-bucket=${s.bucket} --etcd-s3-folder=etcd-backup/prod/cp-1 --etcd-s3-endpoint=${new URL(world.s3.endpoint).host} --etcd-s3-insecure --etcd-s3-region=${world.s3.region} --etcd-s3-access-key=ACCESS_KEY --etcd-s3-secret-key=SECRET_KEY\n`,
    );
  });

  it('import-rke: the same command for every node, with the region and CA of the imported config', async () => {
    const out = path.join(work, 'import');
    const r = await runCli(['import-rke', fixturePath('rke/rancher-cluster-v0.2.yml'), '--output-dir', out], { PATH: process.env.PATH });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      '  rke etcd snapshot-restore --config rancher-cluster-v0.2.yml --name SNAPSHOT --s3 --bucket-name my-backup-bucket --folder folder-name/default/NODE --s3-endpoint-ca /path/to/ca.pem --region eu-west-1 --access-key ACCESS_KEY --secret-key SECRET_KEY\n',
    );
    expect(r.stdout).not.toContain('myaccesssecret');
  });
});
