// The release artifact for tests: builds it once (scripts/package.sh --if-stale reuses release/ when
// no input changed) and unpacks the tarball the way an operator would.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from './world.js';

const exec = promisify(execFile);

export const VERSION: string = (JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const RELEASE_DIR = path.join(PROJECT_ROOT, 'release');
export const EXECUTABLE = path.join(RELEASE_DIR, 'etcd-backup-agent');
export const TARBALL_NAME = `etcd-backup-agent-${VERSION}-linux-x64`;
export const TARBALL = path.join(RELEASE_DIR, `${TARBALL_NAME}.tar.gz`);

let built: Promise<string> | undefined;

/** Runs scripts/package.sh --if-stale once per test process; resolves with its output. */
export function ensureRelease(): Promise<string> {
  built ??= exec('bash', [path.join(PROJECT_ROOT, 'scripts/package.sh'), '--if-stale'], {
    cwd: PROJECT_ROOT,
    maxBuffer: 16 * 1024 * 1024,
    timeout: 600_000,
  }).then(
    ({ stdout, stderr }) => stdout + stderr,
    (e: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`scripts/package.sh failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    },
  );
  return built;
}

const temps: string[] = [];

/** A fresh temp dir, removed by removeTemps(): these hold copies of a 120 MB executable. */
export async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  temps.push(dir);
  return dir;
}

export async function removeTemps(): Promise<void> {
  await Promise.all(temps.splice(0).map((d) => rm(d, { recursive: true, force: true })));
}

/** Unpacks the release tarball into a fresh temp dir; returns the unpacked top-level directory. */
export async function unpackRelease(): Promise<string> {
  await ensureRelease();
  const dir = await tempDir('release-');
  // as an unpacked tarball usually is: readable by the unprivileged users some tests run as
  await chmod(dir, 0o755);
  await exec('tar', ['-xzf', TARBALL, '-C', dir]);
  return path.join(dir, TARBALL_NAME);
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program and returns its exit code and output (never rejects on a non-zero exit). */
export async function runProgram(
  file: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number; input?: string } = {},
): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(file, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number | string; stdout?: string; stderr?: string; message: string };
    if (typeof err.code !== 'number') throw new Error(`${file} could not run: ${err.message}`, { cause: e });
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}
