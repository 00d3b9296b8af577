// Shared machinery of the reliability suite: the mode (ci/long), seeded randomness, the results
// recorder behind docs/RELIABILITY.md, capture of everything the agent printed (for the secret grep),
// and real snapshots of a chosen size from an etcd of their own.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { expect, inject } from 'vitest';
import { AgentProcess, agentCommand, agentEnv, runCli, startAgent, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import type {} from '../support/global-setup.js';
import { sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, etcdctl, readWorldEnv, run, s3Client, saveSnapshot, PROJECT_ROOT, type World } from '../support/world.js';
import { RESULTS_DIR } from './global-setup.js';

export { RESULTS_DIR };
export const CAPTURED_DIR = path.join(RESULTS_DIR, 'captured');

export type Mode = 'ci' | 'long';
export const MODE: Mode = process.env.RELIABILITY_MODE === 'long' ? 'long' : 'ci';
/** The CI value or the long-pass value of a knob. */
export const pick = <T>(ci: T, long: T): T => (MODE === 'long' ? long : ci);

// ───────────────────────────── randomness ─────────────────────────────

export interface Rng {
  /** [0, 1) */
  next(): number;
  /** integer in [min, max] */
  int(min: number, max: number): number;
  /** float in [min, max) */
  between(min: number, max: number): number;
  pick<T>(items: readonly T[]): T;
  /** n distinct items, in random order */
  sample<T>(items: readonly T[], n: number): T[];
  /** this stream's own seed, derived from the run's seed and the label */
  readonly seed: number;
}

/** mulberry32: small, fast, good enough to spread fault points; the same seed gives the same choices. */
export function rng(label: string): Rng {
  const base = inject('reliabilitySeed');
  const h = createHash('sha256').update(`${base}:${label}`).digest().readUInt32LE(0);
  let a = h;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed: h,
    next,
    int: (min, max) => min + Math.floor(next() * (max - min + 1)),
    between: (min, max) => min + next() * (max - min),
    pick: (items) => items[Math.floor(next() * items.length)]!,
    sample: (items, n) => {
      const a = [...items];
      for (let i = a.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [a[i], a[j]] = [a[j]!, a[i]!];
      }
      return a.slice(0, n);
    },
  };
}

// ───────────────────────────── results ─────────────────────────────

export type Category = '1' | '2' | '3' | '4' | '5' | '6' | '7' | 'security';

export interface FaultSpec {
  /** stable id, e.g. s3-outage-start */
  id: string;
  category: Category;
  /** what goes wrong, in an operator's words */
  fault: string;
  /** how the test makes it happen */
  how: string;
}

export interface FaultResult extends FaultSpec {
  runs: number;
  outcomes: Record<string, number>;
  violations: number;
  violationSamples: string[];
  errors: number;
  errorSamples: string[];
  seconds: number;
  details: string[];
  /** why the check could not be made on this machine (it is reported, never counted as passed) */
  notRun?: string;
}

export interface RunReport {
  /** what happened in this run, one short label (counted in the table) */
  outcome: string;
  violations: string[];
  /** a number worth reporting, e.g. "peak RSS 143 MiB" */
  detail?: string;
}

/** One recorder per test file; each fault test records every run into it, written after the file. */
export class Recorder {
  private readonly faults = new Map<string, FaultResult>();

  constructor(readonly file: string) {}

  fault(spec: FaultSpec): Fault {
    const r: FaultResult = { ...spec, runs: 0, outcomes: {}, violations: 0, violationSamples: [], errors: 0, errorSamples: [], seconds: 0, details: [] };
    this.faults.set(spec.id, r);
    return new Fault(r);
  }

  async write(): Promise<void> {
    await mkdir(RESULTS_DIR, { recursive: true });
    const out = { file: this.file, mode: MODE, seed: inject('reliabilitySeed'), writtenAt: new Date().toISOString(), faults: [...this.faults.values()] };
    await writeFile(path.join(RESULTS_DIR, `${this.file}.json`), JSON.stringify(out, null, 1));
  }
}

export class Fault {
  constructor(private readonly r: FaultResult) {}

  get id(): string {
    return this.r.id;
  }

  /** Adds to the "how" column what a run actually used (sizes, durations), once. */
  note(detail: string): void {
    if (!this.r.details.includes(detail)) this.r.details.push(detail);
  }

  /**
   * Runs one repetition and records it. A run that throws is recorded as an error and rethrown; a run
   * with invariant violations is recorded, then fails the test.
   */
  async run(label: string, fn: () => Promise<RunReport>): Promise<RunReport> {
    const t0 = performance.now();
    let report: RunReport;
    try {
      report = await fn();
    } catch (e) {
      this.r.runs++;
      this.r.errors++;
      this.r.seconds += (performance.now() - t0) / 1000;
      const first = String((e as Error)?.message ?? e)
        .split('\n')[0]!
        .slice(0, 300);
      this.r.outcomes.error = (this.r.outcomes.error ?? 0) + 1;
      if (this.r.errorSamples.length < 5) this.r.errorSamples.push(`${label}: ${first}`);
      throw e;
    }
    this.r.seconds += (performance.now() - t0) / 1000;
    return this.record(label, report);
  }

  /**
   * Records `runs` repetitions that ended the same way (many cheap cases, e.g. fuzzing), then fails
   * the test if they broke an invariant.
   */
  record(label: string, report: RunReport, runs = 1, opts: { quiet?: boolean } = {}): RunReport {
    this.r.runs += runs;
    this.r.outcomes[report.outcome] = (this.r.outcomes[report.outcome] ?? 0) + runs;
    this.r.violations += report.violations.length;
    for (const v of report.violations) if (this.r.violationSamples.length < 10) this.r.violationSamples.push(`${label}: ${v}`);
    if (report.detail) this.note(report.detail);
    if (!opts.quiet || report.violations.length)
      console.log(`[reliability] ${this.r.id} ${label}: ${report.outcome}${report.violations.length ? `; VIOLATIONS: ${report.violations.join(' | ')}` : ''}`);
    expect(report.violations, `${this.r.id} ${label}`).toEqual([]);
    return report;
  }

  /** Records that the check cannot be made here, and why; the report shows it as not run. */
  notRun(reason: string): void {
    this.r.notRun = reason;
    console.log(`[reliability] ${this.r.id}: NOT RUN: ${reason}`);
  }

  /** Adds wall time spent outside run(), e.g. by a batch recorded with record(). */
  took(seconds: number): void {
    this.r.seconds += seconds;
  }
}

// ───────────────────────────── captured output ─────────────────────────────

/** Keeps text the agent produced (logs, CLI output, scrapes) for the suite-wide secret grep. */
export async function capture(file: string, label: string, text: string): Promise<void> {
  await mkdir(CAPTURED_DIR, { recursive: true });
  await appendFile(path.join(CAPTURED_DIR, `${file}.log`), `\n===== ${label} =====\n${text}`);
}

// ───────────────────────────── world and agents ─────────────────────────────

export interface Env {
  world: World;
  bucket: string;
  file: string;
  agents: AgentProcess[];
  /** start the built agent on a config for this bucket; its output is captured when the file ends */
  start(dirs: TestDirs, overrides?: Record<string, unknown>, opts?: StartOptions): Promise<{ agent: AgentProcess; cfg: Record<string, unknown> }>;
  /** run a CLI verb of the built agent against this world; its output is captured */
  cli(args: string[], opts?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** kill what is still running, capture everything, delete the bucket */
  close(): Promise<void>;
}

export interface StartOptions {
  env?: NodeJS.ProcessEnv;
  /** metrics port (to keep the one of an earlier run) */
  port?: number;
  /** run the agent as this user and group id (setpriv), so that permissions bite as they do for a service */
  uid?: number;
  /** run the agent under this umask (e.g. '000', to show its file modes do not depend on it) */
  umask?: string;
}

async function startAgentWith(opts: StartOptions, dirs: TestDirs, env: NodeJS.ProcessEnv, cfg: Record<string, unknown>): Promise<AgentProcess> {
  let argv: string[] = agentCommand(['--config', dirs.config, 'run']);
  if (opts.uid !== undefined) argv = ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.uid}`, '--clear-groups', ...argv];
  // exec keeps the pid: the test's signals and /proc reads reach the agent itself
  if (opts.umask !== undefined) argv = ['sh', '-c', `umask ${opts.umask} && exec "$@"`, 'sh', ...argv];
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const agent = new AgentProcess(child, `http://${String((cfg.metrics as { listen: string }).listen)}/metrics`);
  // started: watching, or saying why the directory cannot be watched (a permission test wants that)
  await agent.waitFor((l) => /snapshot directory/.test(l.msg), 30_000, 'the watcher to start');
  return agent;
}

export async function setupEnv(file: string): Promise<Env> {
  const world = await readWorldEnv(inject('worldDir'));
  const bucket = `rel-${file.replace(/[^a-z0-9]/g, '')}-${Date.now().toString(36)}`;
  await createBucket(world, bucket);
  const agents: AgentProcess[] = [];
  const captured = new Set<AgentProcess>();
  const writes: Promise<void>[] = [];
  let n = 0;
  const keep = (a: AgentProcess, label: string): void => {
    if (captured.has(a)) return;
    captured.add(a);
    writes.push(capture(file, `agent ${++n} (${label})`, `${a.stdout}\n--- stderr ---\n${a.stderr}`));
  };
  const env: Env = {
    world,
    bucket,
    file,
    agents,
    async start(dirs, overrides = {}, opts = {}) {
      const cfg = await writeConfig(dirs, world, bucket, { log: { level: 'info' }, ...overrides }, opts.port);
      const agent =
        opts.uid === undefined && opts.umask === undefined
          ? await startAgent(dirs, opts.env ?? agentEnv(world), cfg)
          : await startAgentWith(opts, dirs, opts.env ?? agentEnv(world), cfg);
      agents.push(agent);
      void agent.exited.then(() => keep(agent, dirs.root));
      return { agent, cfg };
    },
    async cli(args, opts = {}) {
      const r = await runCli(args, opts.env ?? agentEnv(world), opts.timeoutMs);
      await capture(file, `cli ${args.join(' ').slice(0, 200)}`, `${r.stdout}\n--- stderr ---\n${r.stderr}`);
      return r;
    },
    async close() {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      for (const a of agents) keep(a, 'killed at the end');
      await Promise.all(writes);
      await emptyAndDeleteBucket(world, bucket);
    },
  };
  return env;
}

export function metricValue(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return undefined;
}

export const nodePrefix = (node: string): string => `etcd-backup/test/${node}/`;

export { agentEnv, AgentProcess, testDirs, type TestDirs };

// ───────────────────────────── real snapshots ─────────────────────────────

export interface RealSnapshot {
  path: string;
  size: number;
  sha256: string;
}

/** An etcd of its own (scripts/world/etcd-up.sh), so big test data does not grow the shared one. */
export class OwnEtcd {
  private constructor(
    readonly dir: string,
    readonly endpoint: string,
  ) {}

  static async start(): Promise<OwnEtcd> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'rel-etcd-'));
    await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-up.sh'), dir], { timeoutMs: 60_000 });
    const env = await readFile(path.join(dir, 'etcd.env'), 'utf8');
    return new OwnEtcd(dir, /ETCDCTL_ENDPOINTS=(.*)/.exec(env)![1]!.trim());
  }

  /** ~mib MiB of random 1 MiB values through etcd's HTTP gateway (no process per key). */
  async load(mib: number, tag = 'load'): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: 6 }, async () => {
        while (next < mib) {
          const i = next++;
          const res = await fetch(`${this.endpoint}/v3/kv/put`, {
            method: 'POST',
            body: JSON.stringify({
              key: Buffer.from(`/registry/${tag}/${String(i).padStart(6, '0')}`).toString('base64'),
              value: randomBytes(1 << 20).toString('base64'),
            }),
          });
          if (!res.ok) throw new Error(`etcd put failed: ${res.status} ${await res.text()}`);
          await res.arrayBuffer();
        }
      }),
    );
  }

  /** One small key, so the next snapshot differs from the last. */
  async put(key: string, value: string): Promise<void> {
    const res = await fetch(`${this.endpoint}/v3/kv/put`, {
      method: 'POST',
      body: JSON.stringify({ key: Buffer.from(key).toString('base64'), value: Buffer.from(value).toString('base64') }),
    });
    if (!res.ok) throw new Error(`etcd put failed: ${res.status}`);
    await res.arrayBuffer();
  }

  /** `etcdctl snapshot save`, the real producer. */
  async save(file: string): Promise<RealSnapshot> {
    const fake = { etcd: { endpoints: this.endpoint } } as World;
    const size = await saveSnapshot(fake, file);
    return { path: file, size, sha256: await sha256File(file) };
  }

  async stop(): Promise<void> {
    await run('bash', [path.join(PROJECT_ROOT, 'scripts/world/etcd-down.sh'), this.dir]).catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}

const CACHE_DIR = path.join(os.tmpdir(), 'etcd-backup-agent-reliability');

/**
 * A real etcdctl snapshot of about `mib` MiB of data, made once and kept in the temp dir (keyed by size)
 * so that the files of one run, and later runs on the same machine, share it.
 */
export async function bigSnapshot(mib: number, variant = 0): Promise<RealSnapshot> {
  const file = path.join(CACHE_DIR, `etcd-${mib}MiB${variant ? `-v${variant}` : ''}.db`);
  const meta = `${file}.json`;
  if (existsSync(meta) && existsSync(file)) return JSON.parse(await readFile(meta, 'utf8')) as RealSnapshot;
  await mkdir(CACHE_DIR, { recursive: true });
  const etcd = await OwnEtcd.start();
  try {
    await etcd.load(mib);
    const tmp = path.join(etcd.dir, 'big.db');
    const snap = await etcd.save(tmp);
    await rename(tmp, file).catch(async () => {
      // another file system: copy instead
      await (await import('node:fs/promises')).copyFile(tmp, file);
    });
    const out = { ...snap, path: file };
    await writeFile(meta, JSON.stringify(out));
    return out;
  } finally {
    await etcd.stop();
  }
}

/** Waits for `pred` to hold, re-checking after each `every` ms; for state that has no event to await. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, every = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A real snapshot of the world's etcd that differs from every earlier one (a key is put first). */
export async function freshSnapshot(world: World, file: string): Promise<RealSnapshot> {
  const tag = `${path.basename(file)}-${Date.now()}-${randomBytes(4).toString('hex')}`;
  await etcdctl(world, ['put', `/registry/reliability/${tag}`, tag], { timeoutMs: 30_000 });
  const size = await saveSnapshot(world, file);
  return { path: file, size, sha256: await sha256File(file) };
}

/** Puts a copy of a cached snapshot into the snapshot directory: a hard link when it can (instant), else a copy. */
export async function placeSnapshot(src: RealSnapshot, file: string): Promise<RealSnapshot> {
  const fs = await import('node:fs/promises');
  await fs.link(src.path, file).catch(() => fs.copyFile(src.path, file));
  return { ...src, path: file };
}

/** Deletes every object and open upload under a prefix (frees RGW's memory between runs). */
export async function cleanPrefix(env: Env, prefix: string): Promise<void> {
  const { ListObjectsV2Command, DeleteObjectsCommand, ListMultipartUploadsCommand, AbortMultipartUploadCommand } = await import('@aws-sdk/client-s3');
  const s3 = s3Client(env.world);
  try {
    const ups = await s3.send(new ListMultipartUploadsCommand({ Bucket: env.bucket, Prefix: prefix }));
    for (const u of ups.Uploads ?? []) await s3.send(new AbortMultipartUploadCommand({ Bucket: env.bucket, Key: u.Key!, UploadId: u.UploadId! }));
    for (;;) {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: env.bucket, Prefix: prefix }));
      const keys = (r.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length === 0) break;
      await s3.send(new DeleteObjectsCommand({ Bucket: env.bucket, Delete: { Objects: keys, Quiet: true } }));
    }
  } finally {
    s3.destroy();
  }
}

/** The reasons of the upload failures an agent logged, e.g. "network, timeout" ('' when none). */
export function failureReasons(agent: AgentProcess): string {
  const reasons = new Set(
    agent.lines
      .filter(
        (l) =>
          l.msg === 'upload failed; the snapshot stays pending and will be retried' ||
          l.msg === 'upload stopped: the file changed or could not be read; checking it again',
      )
      .map((l) => String(l.reason)),
  );
  return [...reasons].sort().join(', ');
}
