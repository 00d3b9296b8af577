// The shipped unit under a real systemd: Debian 12 (systemd 252) booted in systemd-nspawn, the release
// tarball installed with install.sh as an operator does it, the Ansible example run on the host itself,
// real etcd snapshots (etcdctl snapshot save against the test world's etcd) shipped to the world's
// Ceph RGW on 127.0.0.1 (the container shares the host's network).
//
// One container for the whole file; the steps build on each other, in order, like a host's life:
// a fresh minimal Debian, a preview, the install, snapshots, stops, kills, restarts, a crash loop,
// an upgrade preview. Where a fix in the unit matters, the old behaviour is shown first or after, so
// that the check can fail: the snapshot directory created after the start, and the start limit.
//
// Not shown here, because this container cannot show it: cgroup limits. MemoryMax=, TasksMax=,
// CPUWeight= and IOWeight= are accepted but not enforced (the container's cgroup controllers are
// read-only), so nothing below claims anything about memory or CPU limits.
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { mkdir, readFile, stat, writeFile, copyFile } from 'node:fs/promises';
import path from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it, type TestContext } from 'vitest';
import { freePort } from '../support/agent.js';
import { ensureRelease, runProgram, TARBALL, TARBALL_NAME, tempDir, removeTemps, VERSION, type Run } from '../support/release.js';
import { createBucket, emptyAndDeleteBucket, listKeys, PROJECT_ROOT, putKeys, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';
import { bootContainer, cannotBoot, systemdRoot, type Container } from './container.js';

const UNIT = 'etcd-backup-agent.service';
const SNAPSHOTS = '/opt/rke/etcd-snapshots';
const CONFIG = '/etc/etcd-backup-agent/config.yaml';
const DEPLOY = '/root/deploy';
const DROPIN = `/etc/systemd/system/${UNIT}.d`;
const CLUSTER = 'systest';
// --hostname of the container; the agent's default node name
const NODE = 'etcd-host';
const PREFIX = `etcd-backup/${CLUSTER}/${NODE}/`;

let c: Container | undefined;
let world: World;
let metricsPort: number;
const bucket = `system-${Date.now().toString(36)}`;
const figures: string[] = [];

function note(line: string): void {
  figures.push(line);
  console.log(`[system] ${line}`);
}

/** The container, or skip the test (the reason was printed once, in beforeAll). */
function host(ctx: TestContext): Container {
  if (!c) ctx.skip();
  return c;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${c ? `\n--- journal ---\n${(await journal(c, 40)).raw}` : ''}`);
    await sleep(everyMs);
  }
}

interface LogLine {
  msg: string;
  [k: string]: unknown;
}

/** The agent's JSON log lines from the journal (and the raw tail, for error messages). */
async function journal(h: Container, tail?: number): Promise<{ lines: LogLine[]; raw: string }> {
  const r = await h.exec(['journalctl', '-u', UNIT, '-o', 'cat', '--no-pager', ...(tail ? ['-n', String(tail)] : [])]);
  const lines: LogLine[] = [];
  for (const l of r.stdout.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(l) as LogLine);
    } catch {
      /* a line systemd wrapped */
    }
  }
  return { lines, raw: r.stdout };
}

async function show(h: Container, ...props: string[]): Promise<Record<string, string>> {
  const r = await h.exec(['systemctl', 'show', UNIT, ...props.map((p) => `--property=${p}`)]);
  return Object.fromEntries(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

function ok(r: Run, what: string): Run {
  expect(r.code, `${what} exited ${r.code}\n${r.stdout}\n${r.stderr}`).toBe(0);
  return r;
}

/** Writes config.yaml in place (install.sh made it root:etcd-backup 0640; writing keeps owner and mode). */
async function writeAgentConfig(h: Container, extra: Record<string, unknown> = {}): Promise<void> {
  await writeFile(h.path(CONFIG), stringify(agentConfig(extra)));
}

function agentConfig(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cluster: CLUSTER,
    s3: { bucket, endpoint: world.s3.endpoint },
    // prune down to the newest, every 2 seconds, so that a prune follows each second snapshot at once
    retention: { keep: 1, schedule: '*/2 * * * * *' },
    metrics: { listen: `127.0.0.1:${metricsPort}` },
    detect: { pollInterval: '200ms', rescanInterval: '5s' },
    upload: { retryInitial: '500ms', retryMax: '2s' },
    ...extra,
  };
}

/** etcdctl snapshot save straight into the container's snapshot directory, as root (so 0600 root). */
async function snapshot(h: Container, name: string): Promise<Buffer> {
  const file = h.path(path.join(SNAPSHOTS, name));
  await saveSnapshot(world, file);
  return readFile(file);
}

const localExists = (h: Container, name: string): Promise<boolean> =>
  stat(h.path(path.join(SNAPSHOTS, name))).then(
    () => true,
    () => false,
  );

async function openUploads(): Promise<string[]> {
  const r = await s3Client(world).send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: PREFIX }));
  return (r.Uploads ?? []).map((u) => u.Key!);
}

async function s3Bytes(key: string): Promise<Buffer> {
  const r = await s3Client(world).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface AnsibleReport {
  run: Run;
  /** from the PLAY RECAP line */
  stats: { ok: number; changed: number; unreachable: number; failed: number };
  /** each task's (and handler's) status and result, by name */
  tasks: Map<string, { status: string; result: Record<string, unknown> }>;
}

/**
 * ansible-playbook on the host itself (connection local, as ansible-pull runs it). ansible-core has no
 * JSON report of its own, so this reads the default one: with -v every result follows its task's
 * header as one line of JSON, and PLAY RECAP has the counts.
 */
async function ansible(h: Container, tarball: string, check: boolean): Promise<AnsibleReport> {
  const vars = JSON.stringify({
    agent_hosts: 'localhost',
    agent_tarball: tarball,
    agent_s3_bucket: bucket,
    agent_s3_access_key: world.s3.accessKeyId,
    agent_s3_secret_key: world.s3.secretAccessKey,
    agent_config: agentConfig(),
  });
  const run = await h.exec(['ansible-playbook', '-v', '-i', 'localhost,', '-c', 'local', ...(check ? ['--check'] : []), '-e', vars, `${DEPLOY}/playbook.yml`], {
    env: { ANSIBLE_NOCOLOR: '1', ANSIBLE_RETRY_FILES_ENABLED: 'false' },
    timeoutMs: 300_000,
  });
  const tasks = new Map<string, { status: string; result: Record<string, unknown> }>();
  let task = '';
  let stats: AnsibleReport['stats'] | undefined;
  for (const line of run.stdout.split('\n')) {
    const header = /^(?:TASK|RUNNING HANDLER) \[(.+)\] \**$/.exec(line);
    if (header) task = header[1]!;
    const result = /^(ok|changed|skipping|failed|fatal): \[localhost\](?:: FAILED!)? => (\{.*\})$/.exec(line);
    if (result) tasks.set(task, { status: result[1]!, result: JSON.parse(result[2]!) as Record<string, unknown> });
    const recap = /^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)/.exec(line);
    if (recap) stats = { ok: Number(recap[1]), changed: Number(recap[2]), unreachable: Number(recap[3]), failed: Number(recap[4]) };
  }
  expect(stats, `ansible-playbook printed no recap (exit ${run.code}):\n${run.stdout.slice(-3000)}\n${run.stderr.slice(-2000)}`).toBeDefined();
  // the secret key was passed in: it must not be printed, not even with -v
  expect(run.stdout + run.stderr).not.toContain(world.s3.secretAccessKey);
  expect(run.code, `ansible-playbook exited ${run.code}: ${JSON.stringify(stats)}\n${run.stdout.slice(-3000)}`).toBe(0);
  return { run, stats: stats!, tasks };
}

const INSTALL_TASK = 'Run install.sh (with --check under ansible-playbook --check)';
const installOutput = (r: AnsibleReport): string => (r.tasks.get(INSTALL_TASK)?.result.stdout as string | undefined) ?? '';

beforeAll(async () => {
  const reason = cannotBoot();
  if (reason) {
    console.log(`[system] SKIPPED: ${reason}`);
    return;
  }
  world = await readWorldEnv(inject('worldDir'));
  await ensureRelease();
  const root = await systemdRoot();
  note(`Debian root ${root.built ? 'built by debootstrap' : 'cached'}: ${(root.ms / 1000).toFixed(1)} s (${root.root})`);
  try {
    c = await bootContainer(root.root);
  } catch (e) {
    console.log(`[system] SKIPPED: systemd-nspawn cannot boot a container on this machine: ${(e as Error).message}`);
    return;
  }
  note(`booted systemd in ${(c.bootMs / 1000).toFixed(2)} s`);
  metricsPort = await freePort();
  await createBucket(world, bucket);
  await mkdir(c.path(DEPLOY), { recursive: true });
  await copyFile(TARBALL, c.path(`${DEPLOY}/${TARBALL_NAME}.tar.gz`));
  await copyFile(path.join(PROJECT_ROOT, 'scripts/ansible/playbook.yml'), c.path(`${DEPLOY}/playbook.yml`));
}, 900_000);

afterAll(async () => {
  await c?.stop();
  if (c) await emptyAndDeleteBucket(world, bucket);
  await removeTemps();
  if (figures.length) console.log(`[system] figures:\n  ${figures.join('\n  ')}`);
}, 120_000);

describe.sequential('the unit under a real systemd (Debian 12 in systemd-nspawn)', () => {
  it('on a minimal Debian, install.sh refuses to start without libatomic1, names the package and changes nothing', async (ctx) => {
    const h = host(ctx);
    ok(await h.sh(`cd ${DEPLOY} && tar -xzf ${TARBALL_NAME}.tar.gz && cd ${TARBALL_NAME} && sha256sum --quiet -c SHA256SUMS`), 'unpack and verify');
    const r = await h.sh(`cd ${DEPLOY}/${TARBALL_NAME} && ./install.sh`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/libatomic\.so\.1: cannot open shared object file.*; install the package libatomic1 \(Debian/);
    expect((await h.sh('test -e /usr/local/bin/etcd-backup-agent || test -e /etc/etcd-backup-agent || getent passwd etcd-backup')).code).not.toBe(0);
    // what an operator does next: apt-get install libatomic1 (the .deb is in the root: no network here)
    ok(await h.sh('dpkg -i /root/debs/libatomic1_*.deb'), 'dpkg -i libatomic1');
  });

  it('ansible-playbook --check on the fresh host previews every item and changes nothing', async (ctx) => {
    const h = host(ctx);
    const t0 = performance.now();
    const report = await ansible(h, `${DEPLOY}/${TARBALL_NAME}.tar.gz`, true);
    note(`ansible-playbook --check on a fresh host: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(report.stats.failed).toBe(0);
    expect(report.stats.changed).toBeGreaterThan(0);
    // the service tasks wait for a real run: there is no unit yet for systemd to answer about
    expect(report.tasks.get('Enable and start the service')?.status).toBe('skipping');
    const install = installOutput(report);
    expect(install).toContain(`would install /usr/local/bin/etcd-backup-agent (version ${VERSION})`);
    expect(install).toContain('would create user etcd-backup');
    expect(install).toMatch(/^install\.sh: \d+ changes \(--check: none made\)$/m);
    // nothing on the host: no binary, no user, no config, no unit, no scratch directory left
    const after = await h.sh(
      `ls -A /usr/local/bin; ls /etc/etcd-backup-agent /etc/systemd/system/${UNIT} 2>&1; getent passwd etcd-backup; ls /tmp | grep '[.]etcd-backup-agent$'`,
    );
    expect(after.stdout).toMatch(
      /^ls: cannot access '\/etc\/etcd-backup-agent': No such file or directory\nls: cannot access '\/etc\/systemd\/system\/etcd-backup-agent\.service': No such file or directory\n$/,
    );
  });

  it('installs with install.sh; the unit runs as etcd-backup with only CAP_DAC_OVERRIDE and creates the missing snapshot directory', async (ctx) => {
    const h = host(ctx);
    const r = ok(await h.sh(`cd ${DEPLOY}/${TARBALL_NAME} && ./install.sh`), 'install.sh');
    expect(r.stdout).toMatch(/^reloaded +systemd units/m);
    await writeAgentConfig(h);
    await writeFile(
      h.path('/etc/etcd-backup-agent/credentials'),
      `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = ${world.s3.secretAccessKey}\n`,
    );
    ok(await h.exec(['etcd-backup-agent', '--config', CONFIG, 'check-config', '--offline']), 'check-config --offline');
    // RKE has not run on this host yet: no snapshot directory
    expect((await h.sh('test -e /opt/rke')).code).toBe(1);

    ok(await h.exec(['systemctl', 'enable', '--now', UNIT]), 'systemctl enable --now');
    await until('the watcher', async () => (await journal(h)).lines.find((l) => l.msg === 'watching snapshot directory'), 30_000);
    expect((await h.exec(['stat', '-c', '%U:%G %a', SNAPSHOTS])).stdout.trim()).toBe('root:root 700');

    const { MainPID } = await show(h, 'MainPID');
    const status = ok(await h.exec(['cat', `/proc/${MainPID}/status`]), 'the main process status').stdout;
    const uid = (await h.exec(['id', '-u', 'etcd-backup'])).stdout.trim();
    expect(status).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    // CAP_DAC_OVERRIDE is capability 1: effective set 0x2, nothing else
    expect(status).toMatch(/^CapEff:\s+0000000000000002$/m);
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
    const score = await h.exec(['systemd-analyze', 'security', '--no-pager', UNIT]);
    note(`systemd-analyze security (online, in the container): ${/Overall exposure level for \S+: (\S+)/.exec(score.stdout)?.[1] ?? score.stdout.slice(-200)}`);
  });

  it('ships root-owned 0600 snapshots to S3 byte for byte and prunes the older one (the directory the unit created is writable)', async (ctx) => {
    const h = host(ctx);
    await putKeys(world, 50, 256, '/registry/system-a/');
    const a = await snapshot(h, 'a.db');
    expect((await stat(h.path(`${SNAPSHOTS}/a.db`))).mode & 0o777).toBe(0o600);
    await until('a.db in S3', async () => (await listKeys(world, bucket, PREFIX)).includes(`${PREFIX}a.db`), 30_000);
    await putKeys(world, 50, 256, '/registry/system-b/');
    await snapshot(h, 'b.db');
    await until('a.db pruned', async () => !(await localExists(h, 'a.db')), 30_000);
    expect(await localExists(h, 'b.db')).toBe(true);
    // what was deleted locally is in S3, byte for byte
    expect(sha256(await s3Bytes(`${PREFIX}a.db`))).toBe(sha256(a));
    expect((await journal(h)).lines.filter((l) => l.msg === 'retention: cannot delete local snapshot')).toEqual([]);
  });

  it('the old unit, without ExecStartPre=, leaves a snapshot directory created after the start read-only: prunes fail with EROFS until a restart', async (ctx) => {
    const h = host(ctx);
    ok(
      await h.sh(
        `mkdir -p ${DROPIN} && printf '[Service]\\nExecStartPre=\\n' >${DROPIN}/old-unit.conf && systemctl daemon-reload && systemctl stop ${UNIT} && rm -rf /opt/rke && systemctl start ${UNIT}`,
      ),
      'start the old unit without a snapshot directory',
    );
    await until(
      'the watcher waiting for the directory',
      async () => (await journal(h, 20)).lines.find((l) => /does not exist; waiting for it/.test(l.msg)),
      30_000,
    );
    // RKE's Docker creates it when it first mounts it
    await mkdir(h.path(SNAPSHOTS), { recursive: true, mode: 0o755 });
    await snapshot(h, 'c.db');
    await until('c.db in S3', async () => (await listKeys(world, bucket, PREFIX)).includes(`${PREFIX}c.db`), 30_000);
    await putKeys(world, 10, 256, '/registry/system-c/');
    await snapshot(h, 'd.db');
    const refused = await until(
      'a refused prune',
      async () => (await journal(h, 30)).lines.find((l) => l.msg === 'retention: cannot delete local snapshot'),
      30_000,
    );
    expect(refused).toMatchObject({ error: 'EROFS' });
    expect(await localExists(h, 'c.db')).toBe(true);
    // the shipped unit again: a restart is what it took with the old one
    ok(await h.sh(`rm ${DROPIN}/old-unit.conf && systemctl daemon-reload && systemctl restart ${UNIT}`), 'back to the shipped unit');
    await until('c.db pruned after the restart', async () => !(await localExists(h, 'c.db')), 30_000);
  });

  it('systemctl stop mid-upload: the agent aborts within shutdownTimeout, exits 0, leaves no multipart upload open; the next start ships the snapshot', async (ctx) => {
    const h = host(ctx);
    // slow the upload down (1 MiB/s, 5 MiB parts) so that a stop lands in the middle of it
    await writeAgentConfig(h, {
      upload: { bandwidthLimit: '1MiB', retryInitial: '500ms', retryMax: '2s' },
      s3: { bucket, endpoint: world.s3.endpoint, partSize: '5MiB' },
      shutdownTimeout: '5s',
    });
    ok(await h.exec(['systemctl', 'restart', UNIT]), 'restart with the slow config');
    await putKeys(world, 20_000, 1024, '/registry/system-big/');
    const big = await snapshot(h, 'big.db');
    const open = await until('a multipart upload in progress', async () => (await openUploads()).length > 0 && (await openUploads()), 60_000);
    expect(open).toEqual([`${PREFIX}big.db`]);

    const t0 = performance.now();
    ok(await h.exec(['systemctl', 'stop', UNIT]), 'systemctl stop');
    const stopMs = performance.now() - t0;
    note(`systemctl stop mid-upload (shutdownTimeout 5 s, TimeoutStopSec 90 s): ${(stopMs / 1000).toFixed(1)} s`);
    expect(stopMs).toBeLessThan(20_000);
    // success: the agent exited by itself (0); "timeout" would mean systemd had to SIGKILL it
    expect(await show(h, 'Result', 'ExecMainStatus', 'ActiveState')).toEqual({ Result: 'success', ExecMainStatus: '0', ActiveState: 'inactive' });
    expect((await journal(h, 20)).lines.map((l) => l.msg)).toContain('upload in flight did not finish in time; aborted (it will be shipped after restart)');
    await until('no multipart upload left open', async () => (await openUploads()).length === 0, 15_000);
    expect(await listKeys(world, bucket, `${PREFIX}big.db`)).toEqual([]);

    await writeAgentConfig(h);
    ok(await h.exec(['systemctl', 'start', UNIT]), 'systemctl start');
    await until('big.db shipped after the start', async () => (await listKeys(world, bucket, PREFIX)).includes(`${PREFIX}big.db`), 90_000);
    const head = await s3Client(world).send(new HeadObjectCommand({ Bucket: bucket, Key: `${PREFIX}big.db` }));
    expect(head.ContentLength).toBe(big.length);
  });

  it('kill -9 of the main process: systemd restarts the agent after RestartSec=30s, as shipped', async (ctx) => {
    const h = host(ctx);
    const before = await show(h, 'MainPID', 'NRestarts');
    const t0 = performance.now();
    ok(await h.sh(`kill -9 ${before.MainPID}`), 'kill -9');
    await until(
      'the restart',
      async () => {
        const now = await show(h, 'MainPID', 'ActiveState', 'SubState');
        return now.ActiveState === 'active' && now.SubState === 'running' && now.MainPID !== '0' && now.MainPID !== before.MainPID && now;
      },
      60_000,
      500,
    );
    const restartMs = performance.now() - t0;
    note(`restart after kill -9: ${(restartMs / 1000).toFixed(1)} s (RestartSec=30s)`);
    expect(restartMs).toBeGreaterThanOrEqual(29_000);
    expect(Number((await show(h, 'NRestarts')).NRestarts)).toBe(Number(before.NRestarts) + 1);
    const sys = await h.exec(['journalctl', '-u', UNIT, '-o', 'cat', '--no-pager', '-n', '40']);
    expect(sys.stdout).toMatch(/Main process exited, code=killed, status=9\/KILL/);
  });

  it('seven restarts in a row never hit the start limit (the unit without its ExecStopPost= reset stops at the sixth start)', async (ctx) => {
    const h = host(ctx);
    for (let i = 1; i <= 7; i++) ok(await h.exec(['systemctl', 'restart', UNIT]), `restart ${i}`);
    expect(await show(h, 'ActiveState', 'Result')).toEqual({ ActiveState: 'active', Result: 'success' });

    // the same with the reset removed: systemd counts every start, and refuses the sixth in 10 minutes
    ok(await h.sh(`printf '[Service]\\nExecStopPost=\\n' >${DROPIN}/no-reset.conf && systemctl daemon-reload`), 'drop the reset');
    let refusedAt = 0;
    for (let i = 1; i <= 7 && !refusedAt; i++) {
      const r = await h.exec(['systemctl', 'restart', UNIT]);
      if (r.code !== 0) refusedAt = i;
    }
    expect(refusedAt, 'the old unit refused no restart: the check above proves nothing').toBeGreaterThan(0);
    expect(await show(h, 'ActiveState', 'Result')).toEqual({ ActiveState: 'failed', Result: 'start-limit-hit' });
    note(`without the reset, restart number ${refusedAt} in a row failed with start-limit-hit`);
    ok(
      await h.sh(`rm ${DROPIN}/no-reset.conf && systemctl daemon-reload && systemctl reset-failed ${UNIT} && systemctl start ${UNIT}`),
      'back to the shipped unit',
    );
  });

  it('a crash loop does hit the start limit: exit 69 at every start while the metrics port is taken; 5 starts, then it stays down', async (ctx) => {
    const h = host(ctx);
    // RestartSec=1s for the test only: as shipped (30 s) the same loop takes two and a half minutes
    ok(
      await h.sh(`printf '[Service]\\nRestartSec=1s\\n' >${DROPIN}/fast-restart.conf && systemctl daemon-reload && systemctl stop ${UNIT}`),
      'fast restarts, stopped',
    );
    const cursor = /-- cursor: (\S+)/.exec((await h.exec(['journalctl', '-u', UNIT, '-n', '0', '--show-cursor'])).stdout)![1]!;
    const squatter: Server = createServer();
    await new Promise<void>((resolve, reject) => squatter.once('error', reject).listen(metricsPort, '127.0.0.1', resolve));
    try {
      ok(await h.exec(['systemctl', 'start', UNIT]), 'systemctl start');
      await until('the unit to give up', async () => (await show(h, 'ActiveState')).ActiveState === 'failed', 60_000, 300);
    } finally {
      await new Promise<void>((r) => squatter.close(() => r()));
    }
    const log = (await h.exec(['journalctl', '-u', UNIT, '-o', 'cat', '--no-pager', `--after-cursor=${cursor}`])).stdout;
    // StartLimitBurst=5: the manual start and 4 automatic restarts ran; systemd refused the fifth restart
    expect(log.split('\n').filter((l) => l.includes('"msg":"starting etcd-backup-agent"'))).toHaveLength(5);
    expect(log.match(/Main process exited, code=exited, status=69\/UNAVAILABLE/g)).toHaveLength(5);
    expect(log).toContain('Start request repeated too quickly.');
    // and it stays down until an operator resets it, even with the port free again
    expect((await h.exec(['systemctl', 'start', UNIT])).code).not.toBe(0);
    ok(await h.sh(`rm ${DROPIN}/fast-restart.conf && systemctl daemon-reload && systemctl reset-failed ${UNIT} && systemctl start ${UNIT}`), 'reset and start');
    await until(
      'the agent serving metrics again',
      async () =>
        await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
          (r) => r.ok,
          () => false,
        ),
      30_000,
    );
  });

  it('Ansible converges; --check on the installed host reports nothing to do; --check with a newer release previews the upgrade and changes nothing', async (ctx) => {
    const h = host(ctx);
    const tarball = `${DEPLOY}/${TARBALL_NAME}.tar.gz`;
    const first = await ansible(h, tarball, false);
    expect(first.stats.failed).toBe(0);
    const second = await ansible(h, tarball, false);
    expect(second.stats).toMatchObject({ changed: 0, failed: 0 });
    const t0 = performance.now();
    const check = await ansible(h, tarball, true);
    note(`ansible-playbook --check on an installed host: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    expect(check.stats).toMatchObject({ changed: 0, failed: 0 });
    expect(installOutput(check)).toMatch(/^install\.sh: no changes$/m);

    // a newer release: another binary and another unit file
    const work = await tempDir('upgrade-');
    ok(await runProgram('tar', ['-xzf', TARBALL, '-C', work]), 'unpack');
    await writeFile(path.join(work, TARBALL_NAME, 'etcd-backup-agent'), '\n# a newer build\n', { flag: 'a' });
    await writeFile(path.join(work, TARBALL_NAME, UNIT), '# a newer unit\n', { flag: 'a' });
    // the playbook finds the directory inside from the tarball's name, as for a real release
    await mkdir(h.path(`${DEPLOY}/newer`));
    ok(await runProgram('tar', ['-czf', h.path(`${DEPLOY}/newer/${TARBALL_NAME}.tar.gz`), '-C', work, TARBALL_NAME]), 'repack');
    const binary = sha256(await readFile(h.path('/usr/local/bin/etcd-backup-agent')));
    const pid = (await show(h, 'MainPID')).MainPID;

    const preview = await ansible(h, `${DEPLOY}/newer/${TARBALL_NAME}.tar.gz`, true);
    expect(preview.stats.failed).toBe(0);
    expect(preview.stats.changed).toBeGreaterThan(0);
    const out = installOutput(preview);
    expect(out).toContain(`would update /usr/local/bin/etcd-backup-agent (version ${VERSION})`);
    expect(out).toContain(`would update /etc/systemd/system/${UNIT}`);
    expect(out).toMatch(/^would reload systemd units/m);
    expect(preview.tasks.get('Restart etcd-backup-agent')?.status).toBe('changed');
    // and nothing happened
    expect(sha256(await readFile(h.path('/usr/local/bin/etcd-backup-agent')))).toBe(binary);
    expect(await readFile(h.path(`/etc/systemd/system/${UNIT}`), 'utf8')).not.toContain('a newer unit');
    expect(await show(h, 'MainPID', 'ActiveState')).toEqual({ MainPID: pid, ActiveState: 'active' });
    // the playbook's scratch directory is gone (systemd's PrivateTmp= directory for the unit stays)
    expect((await h.sh(`ls /tmp | grep -c '[.]etcd-backup-agent$'`)).stdout.trim()).toBe('0');
  });
});
