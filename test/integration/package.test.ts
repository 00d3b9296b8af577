// The release executable (scripts/package.sh) as an operator runs it: no node on the host, config and
// credentials the way the systemd unit provides them, and the unit's access model (an unprivileged user
// with CAP_DAC_OVERRIDE) against root-owned 0600 snapshots.
import { chmod, chown, copyFile, mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../support/agent.js';
import { EXECUTABLE, ensureRelease, removeTemps, runProgram, tempDir, unpackRelease, VERSION, type Run } from '../support/release.js';
import { createBucket, emptyAndDeleteBucket, listKeys, PROJECT_ROOT, readWorldEnv, type World } from '../support/world.js';

let world: World;
let work: string;
let emptyPath: string;
const bucket = `package-${Date.now().toString(36)}`;

/** An environment with nothing inherited: PATH names an empty directory, so no node can be found. */
function bare(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: emptyPath, AWS_CONFIG_FILE: '/nonexistent', AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true', ...extra };
}

function agent(args: string[], env: NodeJS.ProcessEnv = bare()): Promise<Run> {
  return runProgram(EXECUTABLE, args, { env });
}

async function writeYaml(file: string, value: unknown): Promise<string> {
  await writeFile(file, stringify(value));
  return file;
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await ensureRelease();
  work = await tempDir('package-test-');
  emptyPath = path.join(work, 'empty-path');
  await mkdir(emptyPath);
  await createBucket(world, bucket);
});

afterAll(async () => {
  await emptyAndDeleteBucket(world, bucket);
  await removeTemps();
});

describe('release executable', () => {
  it('answers --version and --help with no node on PATH; prints the figures', async () => {
    const r = await agent(['--version']);
    expect(r).toMatchObject({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
    const help = await agent(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('import-rke FILE');

    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await agent(['--version']);
      times.push(performance.now() - t0);
    }
    const median = times.sort((a, b) => a - b)[2]!;
    const size = (await stat(EXECUTABLE)).size;
    console.log(`[package] executable ${(size / 2 ** 20).toFixed(1)} MiB, --version median ${median.toFixed(0)} ms (5 runs)`);
    // a start that slow would mean the code cache or the blob is broken
    expect(median).toBeLessThan(2000);
  });

  it('the tarball holds what install.sh and an operator need, and its checksums verify', async () => {
    const dir = await unpackRelease();
    const list = await runProgram('ls', ['-A', dir]);
    expect(list.stdout.trim().split('\n').sort()).toEqual(
      [
        'INSTALL.md',
        'LICENSE',
        'LICENSE.node',
        'README.md',
        'SHA256SUMS',
        'THIRD-PARTY-NOTICES.md',
        'config.example.yaml',
        'env.example',
        'etcd-backup-agent',
        'etcd-backup-agent.service',
        'install.sh',
      ].sort(),
    );
    const inner = await runProgram('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir });
    expect(inner.code, inner.stdout + inner.stderr).toBe(0);
    expect(inner.stdout.trim().split('\n')).toHaveLength(10);
    const outer = await runProgram('sha256sum', ['-c', 'SHA256SUMS'], { cwd: path.dirname(EXECUTABLE) });
    expect(outer.code, outer.stdout + outer.stderr).toBe(0);
    expect(await readFile(path.join(dir, 'THIRD-PARTY-NOTICES.md'), 'utf8')).toMatch(/^## @aws-sdk\/client-s3@/m);
  });

  it('runs in a chroot holding nothing but itself, the C/C++ runtime libraries and a config', async () => {
    const root = path.join(work, 'chroot');
    await mkdir(path.join(root, 'etc/etcd-backup-agent'), { recursive: true });
    await copyFile(EXECUTABLE, path.join(root, 'etcd-backup-agent'));
    await chmod(path.join(root, 'etcd-backup-agent'), 0o755);
    // exactly the shared objects the dynamic linker loads: no node, no node_modules, no package.json
    const ldd = await runProgram('ldd', [EXECUTABLE]);
    const libs = [...ldd.stdout.matchAll(/(\/\S+\.so[.\d]*)/g)].map((m) => m[1]!);
    expect(libs.some((l) => /ld-linux/.test(l))).toBe(true);
    for (const lib of libs) {
      await mkdir(path.join(root, path.dirname(lib)), { recursive: true });
      await copyFile(lib, path.join(root, lib));
    }
    await writeYaml(path.join(root, 'etc/etcd-backup-agent/config.yaml'), {
      s3: { bucket: 'etcd-backups', endpoint: 'http://127.0.0.1:9' },
      stateDir: '/state',
    });
    const version = await runProgram('/usr/sbin/chroot', [root, '/etcd-backup-agent', '--version'], { env: { PATH: '/' } });
    expect(version).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    const check = await runProgram('/usr/sbin/chroot', [root, '/etcd-backup-agent', 'check-config', '--offline'], { env: { PATH: '/' } });
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toMatch(/^config ok: /m);
  });

  it('check-config reaches RGW with keys from an AWS credentials file, as LoadCredential hands them over', async () => {
    const creds = path.join(work, 'credentials');
    await writeFile(creds, `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = ${world.s3.secretAccessKey}\n`, { mode: 0o600 });
    const config = await writeYaml(path.join(work, 'online.yaml'), {
      s3: { bucket, endpoint: world.s3.endpoint },
      snapshotDir: work,
      stateDir: path.join(work, 'state'),
    });
    const ok = await agent(['--config', config, 'check-config'], bare({ AWS_SHARED_CREDENTIALS_FILE: creds }));
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('S3 ok: bucket reachable');

    const wrong = path.join(work, 'wrong-credentials');
    await writeFile(wrong, `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = not-the-secret-key-at-all\n`, { mode: 0o600 });
    const refused = await agent(['--config', config, 'check-config'], bare({ AWS_SHARED_CREDENTIALS_FILE: wrong }));
    expect(refused.code).toBe(69);
    expect(refused.stderr).toMatch(/S3 check failed/);
    expect(refused.stdout + refused.stderr).not.toContain(world.s3.secretAccessKey);
  });

  it('takes credentials from instance metadata (IMDSv2), a code path the bundle loads lazily', async () => {
    const seen: string[] = [];
    const imds: Server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      if (req.method === 'PUT' && req.url === '/latest/api/token') return void res.end('imds-token');
      if (req.headers['x-aws-ec2-metadata-token'] !== 'imds-token') return void res.writeHead(401).end();
      if (req.url === '/latest/meta-data/iam/security-credentials/') return void res.end('etcd-backup-role');
      if (req.url === '/latest/meta-data/iam/security-credentials/etcd-backup-role') {
        const now = Date.now();
        return void res.end(
          JSON.stringify({
            Code: 'Success',
            Type: 'AWS-HMAC',
            LastUpdated: new Date(now).toISOString(),
            Expiration: new Date(now + 3_600_000).toISOString(),
            AccessKeyId: world.s3.accessKeyId,
            SecretAccessKey: world.s3.secretAccessKey,
            Token: '',
          }),
        );
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => imds.listen(0, '127.0.0.1', r));
    try {
      const port = (imds.address() as { port: number }).port;
      const config = await writeYaml(path.join(work, 'imds.yaml'), {
        s3: { bucket, endpoint: world.s3.endpoint },
        snapshotDir: work,
        stateDir: path.join(work, 'state'),
      });
      const env = bare({ AWS_EC2_METADATA_DISABLED: 'false', AWS_EC2_METADATA_SERVICE_ENDPOINT: `http://127.0.0.1:${port}` });
      const r = await agent(['--config', config, 'check-config'], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('S3 ok');
      expect(seen).toContain('PUT /latest/api/token');
      expect(seen).toContain('GET /latest/meta-data/iam/security-credentials/etcd-backup-role');
    } finally {
      await new Promise((r) => imds.close(r));
    }
  });

  it('the shipped example config: unedited it names the one missing key (78); with a bucket check-config --offline passes', async () => {
    const dir = await unpackRelease();
    const example = path.join(dir, 'config.example.yaml');
    const unedited = await agent(['--config', example, 'check-config', '--offline']);
    expect(unedited.code).toBe(78);
    expect(unedited.stderr.trim().split('\n')).toEqual([expect.stringMatching(/s3\.bucket: missing/)]);
    const edited = path.join(work, 'example-edited.yaml');
    await writeFile(edited, (await readFile(example, 'utf8')).replace(/^ {2}bucket:$/m, '  bucket: etcd-backups'));
    const r = await agent(['--config', edited, 'check-config', '--offline']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^config ok: /m);
  });

  it('import-rke on both seed snippets writes configs check-config --offline accepts; malformed input is one line', async () => {
    const fixtures = path.join(PROJECT_ROOT, 'test/fixtures/rke');
    const out02 = path.join(work, 'rke-v02');
    const r02 = await agent(['import-rke', path.join(fixtures, 'rancher-cluster-v0.2.yml'), '--output-dir', out02]);
    expect(r02.code, r02.stderr).toBe(0);
    expect(r02.stdout + r02.stderr).not.toContain('myaccesssecret');
    expect((await stat(path.join(out02, 'credentials'))).mode & 0o777).toBe(0o600);
    const c02 = await agent(['--config', path.join(out02, 'config.yaml'), 'check-config', '--offline']);
    expect(c02.code, c02.stderr).toBe(0);
    expect(c02.stdout).toContain('s3://my-backup-bucket (eu-west-1)/folder-name/');

    const out01 = path.join(work, 'rke-v01');
    const noBucket = await agent(['import-rke', path.join(fixtures, 'rancher-cluster-v0.1.yml'), '--output-dir', out01]);
    expect(noBucket.code).toBe(78);
    expect(noBucket.stderr).toMatch(/--bucket NAME/);
    const r01 = await agent(['import-rke', path.join(fixtures, 'rancher-cluster-v0.1.yml'), '--output-dir', out01, '--bucket', 'etcd-backups']);
    expect(r01.code, r01.stderr).toBe(0);
    const c01 = await agent(['--config', path.join(out01, 'config.yaml'), 'check-config', '--offline']);
    expect(c01.code, c01.stderr).toBe(0);

    const bad = path.join(work, 'broken.yml');
    await writeFile(bad, 'services:\n  etcd:\n    backup_config:\n      s3backupconfig: {bucket_name: b\n');
    const r = await agent(['import-rke', bad, '--output-dir', path.join(work, 'rke-bad')]);
    expect(r.code).toBe(65);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/broken\.yml: not valid YAML at line \d/);
    expect(existsSync(path.join(work, 'rke-bad'))).toBe(false);
  });
});

describe("the unit's access model: an unprivileged user with CAP_DAC_OVERRIDE", () => {
  // setpriv gives a process what systemd's User=, AmbientCapabilities= and CapabilityBoundingSet= give
  // the service; the snapshots and their directory are as RKE leaves them: root-owned, 0600 and 0700.
  const asService = (withCap: boolean, args: string[], env: NodeJS.ProcessEnv): Promise<Run> =>
    runProgram(
      '/usr/bin/setpriv',
      [
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        '--no-new-privs',
        ...(withCap ? ['--inh-caps=+dac_override', '--ambient-caps=+dac_override', '--bounding-set=-all,+dac_override'] : ['--bounding-set=-all']),
        EXECUTABLE,
        ...args,
      ],
      { env },
    );

  it('reads root-only snapshots and prunes them; without the capability it can do neither', async () => {
    const base = path.join(work, 'access');
    const snaps = path.join(base, 'etcd-snapshots');
    const state = path.join(base, 'state');
    await mkdir(snaps, { recursive: true });
    await mkdir(state);
    for (const d of [work, base]) await chmod(d, 0o755);
    await chown(state, await uid('nobody'), await gid('nogroup'));
    await chmod(state, 0o700);
    const older = path.join(snaps, 'etcd-small.db');
    const newer = path.join(snaps, 'etcd-medium.db');
    await copyFile(path.join(PROJECT_ROOT, 'test/fixtures/etcd-small.db'), older);
    await copyFile(path.join(PROJECT_ROOT, 'test/fixtures/etcd-medium.db'), newer);
    for (const f of [older, newer]) await chmod(f, 0o600);
    await chmod(snaps, 0o700);
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(older, hourAgo, hourAgo);

    // the config and credentials are root-owned too (0640 / 0600), as install.sh leaves them
    const creds = path.join(base, 'credentials');
    await writeFile(creds, `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = ${world.s3.secretAccessKey}\n`, { mode: 0o600 });
    const config = await writeYaml(path.join(base, 'config.yaml'), {
      cluster: 'access',
      node: 'node-a',
      snapshotDir: snaps,
      stateDir: state,
      s3: { bucket, endpoint: world.s3.endpoint, credentialsFile: creds },
      retention: { keep: 1 },
      metrics: { enabled: false },
    });
    await chmod(config, 0o640);
    // the control run gets its own copies it may read without the capability, so that only the
    // snapshots stand in its way
    const nobodyConfig = path.join(base, 'config-nobody.yaml');
    const nobodyCreds = path.join(base, 'credentials-nobody');
    await writeFile(nobodyCreds, await readFile(creds));
    await writeFile(nobodyConfig, (await readFile(config, 'utf8')).replace(creds, nobodyCreds));
    for (const f of [nobodyConfig, nobodyCreds]) await chown(f, await uid('nobody'), await gid('nogroup'));
    const env = bare();

    const denied = await asService(false, ['--config', nobodyConfig, 'upload', older], env);
    expect(denied.code).toBe(74);
    expect(denied.stderr).toContain('cannot open (EACCES)');
    expect(await listKeys(world, bucket, 'etcd-backup/access/')).toEqual([]);

    const upload = await asService(true, ['--config', config, 'upload', older, newer], env);
    expect(upload.code, upload.stderr).toBe(0);
    expect((await listKeys(world, bucket, 'etcd-backup/access/')).sort()).toEqual([
      'etcd-backup/access/node-a/etcd-medium.db',
      'etcd-backup/access/node-a/etcd-small.db',
    ]);

    const noPrune = await asService(false, ['--config', nobodyConfig, 'prune'], env);
    expect(noPrune.code).toBe(74);
    expect(noPrune.stderr).toMatch(/cannot read the snapshot directory .*EACCES/);
    expect(existsSync(older)).toBe(true);

    const prune = await asService(true, ['--config', config, 'prune'], env);
    expect(prune.code, `${prune.stdout}\n${prune.stderr}`).toBe(0);
    expect(prune.stdout).toMatch(/deleted\s+etcd-small\.db/);
    expect(existsSync(older)).toBe(false);
    expect(existsSync(newer)).toBe(true);
  });

  it("the daemon under the unit's system-call filter too: ships a root-only snapshot, serves metrics, drains on SIGTERM", async () => {
    const allow = await unitAllowList();
    // the filter must be the real thing: the calls the unit removes are absent
    expect(allow).toContain('openat');
    expect(allow).not.toContain('setrlimit');
    expect(allow).not.toContain('mount');
    const base = path.join(work, 'seccomp');
    const snaps = path.join(base, 'etcd-snapshots');
    const state = path.join(base, 'state');
    await mkdir(snaps, { recursive: true });
    await mkdir(state);
    await chown(state, await uid('nobody'), await gid('nogroup'));
    await chmod(state, 0o700);
    await chmod(snaps, 0o700);
    await chmod(base, 0o755);
    const allowFile = path.join(base, 'allow');
    await writeFile(allowFile, allow.join('\n'));
    const creds = path.join(base, 'credentials');
    await writeFile(creds, `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = ${world.s3.secretAccessKey}\n`, { mode: 0o600 });
    const port = await freePort();
    const config = await writeYaml(path.join(base, 'config.yaml'), {
      cluster: 'seccomp',
      node: 'node-a',
      snapshotDir: snaps,
      stateDir: state,
      s3: { bucket, endpoint: world.s3.endpoint },
      detect: { rescanInterval: '2s', pollInterval: '200ms' },
      metrics: { listen: `127.0.0.1:${port}` },
    });
    await chmod(config, 0o640);

    const child = spawn(
      '/usr/bin/setpriv',
      [
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        '--no-new-privs',
        '--inh-caps=+dac_override',
        '--ambient-caps=+dac_override',
        '--bounding-set=-all,+dac_override',
        '/usr/bin/python3',
        path.join(PROJECT_ROOT, 'test/support/seccomp-exec.py'),
        allowFile,
        EXECUTABLE,
        '--config',
        config,
        'run',
      ],
      {
        // credentials as the unit passes them: AWS_SHARED_CREDENTIALS_FILE to a root-only copy
        env: bare({ AWS_SHARED_CREDENTIALS_FILE: creds }),
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const until = async (what: RegExp, ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (!what.test(stdout)) {
        if (Date.now() > end || child.exitCode !== null)
          throw new Error(`no ${what} within ${ms} ms; stdout:\n${stdout.slice(-3000)}\nstderr:\n${stderr.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    try {
      await until(/"msg":"watching snapshot directory"/, 30_000);
      // the runtime flags the package builds in (scripts/package.sh) are those the daemon runs with
      const starting = JSON.parse(stdout.split('\n').find((l) => l.includes('"msg":"starting etcd-backup-agent"'))!) as { runtime: string };
      expect(starting.runtime).toMatch(/^node v\d+\.\d+\.\d+ --max-semi-space-size=8$/);
      const snap = path.join(snaps, 'etcd-small.db');
      await copyFile(path.join(PROJECT_ROOT, 'test/fixtures/etcd-small.db'), snap);
      await chmod(snap, 0o600);
      await until(/"msg":"snapshot shipped and confirmed"/, 60_000);
      expect(await listKeys(world, bucket, 'etcd-backup/seccomp/')).toEqual(['etcd-backup/seccomp/node-a/etcd-small.db']);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toMatch(/^process_resident_memory_bytes \d/m);
      child.kill('SIGTERM');
      expect(await exited, stderr).toBe(0);
      expect(stdout).toContain('"msg":"stopped"');
      expect(stdout + stderr).not.toMatch(/EPERM|Operation not permitted|fatal/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});

/** The system calls the unit's SystemCallFilter= lines allow, expanded with this host's systemd groups. */
async function unitAllowList(): Promise<string[]> {
  const groups = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of (await runProgram('systemd-analyze', ['syscall-filter', '--no-pager'])).stdout.split('\n')) {
    if (/^@\S+$/.test(line)) groups.set(line, (current = []));
    else if (current && /^\s+[@\w]/.test(line) && !/^\s+#/.test(line)) current.push(line.trim());
  }
  const expand = (item: string, seen = new Set<string>()): string[] => {
    if (!item.startsWith('@')) return [item];
    if (seen.has(item)) return [];
    seen.add(item);
    const members = groups.get(item);
    if (!members) throw new Error(`systemd knows no system call group ${item}`);
    return members.flatMap((m) => expand(m, seen));
  };
  const unit = await readFile(path.join(PROJECT_ROOT, 'systemd/etcd-backup-agent.service'), 'utf8');
  const allowed = new Set<string>();
  for (const [, value] of unit.matchAll(/^SystemCallFilter=(.*)$/gm)) {
    const deny = value!.startsWith('~');
    for (const item of value!.replace(/^~/, '').split(/\s+/).filter(Boolean)) {
      for (const call of expand(item)) {
        if (deny) allowed.delete(call);
        else allowed.add(call);
      }
    }
  }
  return [...allowed];
}

async function uid(name: string): Promise<number> {
  return Number((await runProgram('id', ['-u', name])).stdout.trim());
}
async function gid(name: string): Promise<number> {
  return Number((await runProgram('getent', ['group', name])).stdout.split(':')[2]);
}
