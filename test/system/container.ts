// A Debian "host" booted with a real systemd in systemd-nspawn, for the systemd test.
//
// The root comes from scripts/systemd-root.sh (debootstrap, cached outside the repository). Each boot
// runs on an overlay of it, so the cached root is never written and a boot starts clean. The host
// writes into the container's file system through the overlay's merged directory (the same mount the
// container runs on, so inotify sees those writes), and runs commands inside with nsenter.
//
// nspawn options: -b boots /sbin/init (systemd); --keep-unit and --register=no because there is no
// system bus (nor machined) on the build machines, and nspawn fails without them; no
// --private-network, so the container shares the host's network namespace and reaches the test
// world's RGW and etcd on 127.0.0.1; --link-journal=no keeps the guest's journal out of the host's.
//
// What this container cannot show: cgroup limits. Its cgroup controllers are read-only (and it has no
// CAP_SYS_RESOURCE), so MemoryMax=, TasksMax=, CPUWeight= and IOWeight= are accepted by systemd but not
// enforced. Tests here must not claim otherwise.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runProgram, type Run } from '../support/release.js';
import { PROJECT_ROOT } from '../support/world.js';

const PATH_IN_CONTAINER = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface Container {
  /** the container's / as a host path (the overlay's merged directory) */
  readonly root: string;
  /** host pid of the container's PID 1 (systemd) */
  readonly leader: number;
  /** milliseconds from starting nspawn to `systemctl is-system-running` answering running */
  readonly bootMs: number;
  /** the container's console output so far (systemd's boot messages) */
  console(): string;
  /** runs argv inside the container as root, with a clean environment; never rejects on a non-zero exit */
  exec(argv: readonly string[], opts?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Run>;
  /** runs a shell script inside the container (sh -c) */
  sh(script: string, opts?: { env?: Record<string, string>; timeoutMs?: number }): Promise<Run>;
  /** host path of a path inside the container */
  path(inside: string): string;
  /** powers the container off, unmounts the overlay and removes it */
  stop(): Promise<void>;
}

/** Why this machine cannot boot the container, or undefined when it can try. */
export function cannotBoot(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (systemd-nspawn, mount, debootstrap)';
  for (const tool of ['/usr/bin/systemd-nspawn', '/usr/sbin/debootstrap', '/usr/bin/nsenter']) {
    if (!existsSync(tool)) return `${tool} is missing (scripts/install-deps.sh installs systemd-container and debootstrap)`;
  }
  if (!/\toverlay\n/.test(readFileSync('/proc/filesystems', 'utf8'))) return 'the kernel has no overlay file system';
  return undefined;
}

/** Builds the cached root if needed (scripts/systemd-root.sh); resolves with its path and how long that took. */
export async function systemdRoot(): Promise<{ root: string; ms: number; built: boolean }> {
  const t0 = performance.now();
  const r = await runProgram('bash', [path.join(PROJECT_ROOT, 'scripts/systemd-root.sh')], { timeoutMs: 900_000 });
  if (r.code !== 0) throw new Error(`scripts/systemd-root.sh failed (${r.code}):\n${r.stderr.slice(-3000)}`);
  const root = r.stdout.trim().split('\n').at(-1)!;
  return { root, ms: performance.now() - t0, built: /built /.test(r.stderr) };
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    }
  } catch {
    /* gone */
  }
  return out;
}

/** The descendant of pid whose command is systemd: the container's PID 1. */
function findLeader(pid: number): number | undefined {
  const queue = childrenOf(pid);
  while (queue.length) {
    const p = queue.shift()!;
    try {
      if (readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'systemd') return p;
    } catch {
      continue;
    }
    queue.push(...childrenOf(p));
  }
  return undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Boots a fresh overlay of the cached root. Rejects with nspawn's own words when it cannot boot. */
export async function bootContainer(lower: string): Promise<Container> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'nspawn-'));
  const [upper, work, merged] = ['upper', 'work', 'merged'].map((d) => path.join(dir, d)) as [string, string, string];
  for (const d of [upper, work, merged]) await mkdir(d);
  const mounted = await runProgram('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged]);
  if (mounted.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`cannot mount an overlay of ${lower}: ${mounted.stderr.trim()}`);
  }
  // nspawn names a runtime directory after the machine: unique, so parallel runs do not meet
  const machine = `eba-${randomBytes(4).toString('hex')}`;
  const t0 = performance.now();
  const child: ChildProcess = spawn(
    'systemd-nspawn',
    ['-D', merged, '-b', '--keep-unit', '--register=no', `--machine=${machine}`, '--hostname=etcd-host', '--link-journal=no', '--console=read-only'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let consoleText = '';
  child.stdout!.on('data', (d: Buffer) => (consoleText += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (consoleText += d.toString()));
  let exited: string | undefined;
  const gone = new Promise<void>((resolve) => child.on('exit', (code, signal) => ((exited = `nspawn exited (${signal ?? code})`), resolve())));

  let stopped = false;
  const cleanupSync = (): void => {
    // vitest killed: no time for an orderly poweroff
    if (stopped) return;
    stopped = true;
    try {
      child.kill('SIGKILL');
      execFileSync('umount', ['-l', merged], { stdio: 'ignore' });
    } catch {
      /* best effort */
    }
  };
  process.once('exit', cleanupSync);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.off('exit', cleanupSync);
    // SIGTERM makes nspawn power the container off in order; SIGKILL if that hangs
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await gone;
      clearTimeout(timer);
    }
    for (let i = 0; i < 10; i++) {
      if ((await runProgram('umount', [merged])).code === 0) break;
      await sleep(500);
      if (i === 9) await runProgram('umount', ['-l', merged]);
    }
    await rm(dir, { recursive: true, force: true });
  };

  let leader: number | undefined;
  try {
    for (const deadline = Date.now() + 60_000; !leader;) {
      if (exited) throw new Error(`${exited}:\n${consoleText.slice(-2000)}`);
      if (Date.now() > deadline) throw new Error(`no systemd in the container after 60 s:\n${consoleText.slice(-2000)}`);
      leader = findLeader(child.pid!);
      if (!leader) await sleep(50);
    }
    // is-system-running --wait blocks until boot is done; before PID 1 listens it fails at once
    for (const deadline = Date.now() + 90_000; ;) {
      if (exited) throw new Error(`${exited}:\n${consoleText.slice(-2000)}`);
      const r = await runProgram(
        'nsenter',
        ['-t', String(leader), '-a', '--', 'env', '-i', `PATH=${PATH_IN_CONTAINER}`, 'systemctl', 'is-system-running', '--wait'],
        { timeoutMs: 90_000 },
      );
      const state = r.stdout.trim();
      if (state === 'running') break;
      // "degraded": a unit failed while booting; the test must know which
      if (state === 'degraded') {
        const failed = await runProgram('nsenter', [
          '-t',
          String(leader),
          '-a',
          '--',
          'env',
          '-i',
          `PATH=${PATH_IN_CONTAINER}`,
          'systemctl',
          '--failed',
          '--no-legend',
          '--plain',
        ]);
        throw new Error(`the container booted degraded: ${failed.stdout.trim()}`);
      }
      if (Date.now() > deadline) throw new Error(`the container did not finish booting (${state || r.stderr.trim()}):\n${consoleText.slice(-2000)}`);
      await sleep(100);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  const bootMs = performance.now() - t0;
  const pid = leader;

  const exec = (argv: readonly string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Run> => {
    const env = Object.entries({ PATH: PATH_IN_CONTAINER, HOME: '/root', LANG: 'C.UTF-8', ...opts.env }).map(([k, v]) => `${k}=${v}`);
    return runProgram('nsenter', ['-t', String(pid), '-a', '--', 'env', '-i', ...env, ...argv], { timeoutMs: opts.timeoutMs ?? 120_000 });
  };
  return {
    root: merged,
    leader: pid,
    bootMs,
    console: () => consoleText,
    exec,
    sh: (script, opts) => exec(['sh', '-c', script], opts),
    path: (inside) => path.join(merged, inside),
    stop,
  };
}
