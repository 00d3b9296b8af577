// Runs the built agent as a child process, the way systemd would, and lets a test await its log lines
// and scrape its metrics instead of sleeping.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { PROJECT_ROOT, type World } from './world.js';

// ── Which runtime runs the agent ────────────────────────────────────────────────────────────────
// AGENT_RUNTIME=release (npm test sets it): the release executable that scripts/package.sh builds, so
// that the suites test the Node runtime operators get. Otherwise: the tsc build in dist/ on the
// machine's node. Every spawn of the agent goes through agentCommand().
/** The agent's entry point in dist/, relative to the project root. */
export const AGENT_ENTRY = 'dist/agent/cli/main.js';
export const AGENT_MAIN = path.join(PROJECT_ROOT, AGENT_ENTRY);
export const RELEASE_EXECUTABLE = path.join(PROJECT_ROOT, 'release/etcd-backup-agent');
export const AGENT_RUNTIME: 'release' | 'source' = process.env.AGENT_RUNTIME === 'release' ? 'release' : 'source';

/** The Node version the agent runs on: the one the release embeds (scripts/package.sh records it) or this node's. */
export function agentNodeVersion(): string {
  return AGENT_RUNTIME === 'release' ? readFileSync(path.join(PROJECT_ROOT, 'release/.node-version'), 'utf8').trim() : process.version;
}

/** The program and arguments that run the agent with args on the selected runtime. */
export function agentCommand(args: readonly string[]): [string, ...string[]] {
  return AGENT_RUNTIME === 'release' ? [RELEASE_EXECUTABLE, ...args] : [process.execPath, AGENT_MAIN, ...args];
}
// ─────────────────────────────────────────────────────────────────────────────────────────────────

export interface LogLine {
  level: string;
  msg: string;
  file?: string;
  key?: string;
  [k: string]: unknown;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface TestDirs {
  root: string;
  snapshots: string;
  state: string;
  config: string;
}

export async function testDirs(prefix = 'agent-'): Promise<TestDirs> {
  const root = await mkdtemp(path.join(os.tmpdir(), prefix));
  const dirs = { root, snapshots: path.join(root, 'snapshots'), state: path.join(root, 'state'), config: path.join(root, 'config.yaml') };
  await mkdir(dirs.snapshots);
  return dirs;
}

/** Writes a config for the world's S3 (deep-merging overrides) and returns it. */
export async function writeConfig(
  dirs: TestDirs,
  world: World,
  bucket: string,
  overrides: Record<string, unknown> = {},
  metricsPort?: number,
): Promise<Record<string, unknown>> {
  const base: Record<string, unknown> = {
    cluster: 'test',
    node: 'node-a',
    snapshotDir: dirs.snapshots,
    stateDir: dirs.state,
    s3: { bucket, endpoint: world.s3.endpoint },
    detect: { settleTimeout: '4s', pollInterval: '200ms', zipWait: '3s', rescanInterval: '5s' },
    upload: { retryInitial: '200ms', retryMax: '2s' },
    metrics: { listen: `127.0.0.1:${metricsPort ?? (await freePort())}` },
    log: { level: 'debug' },
  };
  const cfg = merge(base, overrides);
  await writeFile(dirs.config, stringify(cfg));
  return cfg;
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur)
        ? merge(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** The world's credentials in the environment, the AWS default chain's first stop. */
export function agentEnv(world: World, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    AWS_ACCESS_KEY_ID: world.s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: world.s3.secretAccessKey,
    AWS_REGION: world.s3.region,
    AWS_EC2_METADATA_DISABLED: 'true',
    ...extra,
  };
}

type Waiter = { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void };

export class AgentProcess {
  readonly lines: LogLine[] = [];
  stdout = '';
  stderr = '';
  private readonly waiters = new Set<Waiter>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private peakRssKb = 0;
  private rssTimer: NodeJS.Timeout;

  constructor(
    readonly child: ChildProcess,
    readonly metricsUrl: string,
  ) {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      const s = d.toString();
      this.stdout += s;
      buf += s;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          const parsed = JSON.parse(line) as LogLine;
          this.lines.push(parsed);
          for (const w of [...this.waiters]) {
            if (w.pred(parsed)) {
              this.waiters.delete(w);
              w.resolve(parsed);
            }
          }
        } catch {
          /* not a log line */
        }
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    // VmHWM is the kernel's own peak-RSS record for the process
    this.rssTimer = setInterval(() => this.sampleRss(), 200);
    void this.exited.then(() => clearInterval(this.rssTimer));
  }

  private sampleRss(): void {
    try {
      const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
      if (m) this.peakRssKb = Math.max(this.peakRssKb, Number(m[1]));
    } catch {
      /* exited */
    }
  }

  /** Peak resident set size so far, in MiB. */
  peakRssMiB(): number {
    this.sampleRss();
    return this.peakRssKb / 1024;
  }

  /** Resolves with the first log line (already seen or future) matching pred. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 60_000, what = 'log line'): Promise<LogLine> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n${this.lines
              .slice(-15)
              .map((l) => JSON.stringify(l))
              .join('\n')}\nstderr: ${this.stderr.slice(-2000)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(w);
      void this.exited.then(({ code, signal }) => {
        if (this.waiters.has(w)) {
          this.waiters.delete(w);
          clearTimeout(timer);
          reject(
            new Error(
              `agent exited (${signal ?? code}) while waiting for ${what}; stderr: ${this.stderr.slice(-2000)}\nlast lines:\n${this.lines
                .slice(-15)
                .map((l) => JSON.stringify(l))
                .join('\n')}`,
            ),
          );
        }
      });
    });
  }

  waitMsg(msg: string, file?: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitFor(
      (l) => l.msg === msg && (file === undefined || l.file === undefined || path.basename(String(l.file)) === file),
      timeoutMs,
      `"${msg}"${file ? ` for ${file}` : ''}`,
    );
  }

  count(msg: string, file?: string): number {
    return this.lines.filter((l) => l.msg === msg && (file === undefined || path.basename(String(l.file ?? '')) === file)).length;
  }

  async metrics(): Promise<string> {
    const res = await fetch(this.metricsUrl);
    return res.text();
  }

  /** Value of one series from /metrics, e.g. metric('etcdbackup_uploads_total{result="success"}'). */
  async metric(series: string): Promise<number | undefined> {
    const text = await this.metrics();
    for (const line of text.split('\n')) {
      if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
    }
    return undefined;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export async function startAgent(dirs: TestDirs, env: NodeJS.ProcessEnv, cfg: Record<string, unknown>, args: string[] = []): Promise<AgentProcess> {
  const [file, ...argv] = agentCommand(['--config', dirs.config, 'run', ...args]);
  const child = spawn(file, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const listen = String((cfg.metrics as { listen: string }).listen);
  const agent = new AgentProcess(child, `http://${listen}/metrics`);
  // a test may start the agent before the directory exists; that is a start too
  await agent.waitFor((l) => l.msg === 'watching snapshot directory' || /does not exist/.test(l.msg), 30_000, 'the watcher to start');
  return agent;
}

/** Runs a one-shot CLI verb of the built agent and returns its exit code and output. */
export function runCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const [file, ...argv] = agentCommand(args);
    const child = spawn(file, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
