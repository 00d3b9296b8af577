// The metrics of the running agent, as Prometheus sees them: a real scrape checked by promtool, the values
// after a ship, a reject, a failure and a restart, and a real Prometheus scraping the agent.
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { FAILURE_REASONS } from '../../agent/base/errors.js';
import { REJECT_LABELS as REJECT_REASONS } from '../../agent/snapshot/lifecycle.js';
import { agentEnv, agentNodeVersion, freePort, startAgent, testDirs, writeConfig, type AgentProcess, type TestDirs } from '../support/agent.js';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';
import { createBucket, emptyAndDeleteBucket, PROJECT_ROOT, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';

const PROMETHEUS = '/usr/bin/prometheus';
const RULES = path.join(PROJECT_ROOT, 'monitoring/etcd-backup-agent.rules.yml');
const DASHBOARD = path.join(PROJECT_ROOT, 'monitoring/grafana-dashboard.json');
// prom-client's default metrics name three gauges *_total; kept for the Node.js dashboards that query them
const JUSTIFIED_LINT = new Set([
  'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
  'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
]);

let world: World;
const bucket = `metrics-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];
let prom: { url: string; child: ChildProcess; dir: string; stderr: () => string } | undefined;

// agent A: the one Prometheus scrapes, restarted on the same address
let dirsA: TestDirs;
let cfgA: Record<string, unknown>;
let agentA: AgentProcess;

/** Every sample of a scrape, keyed by series as written, e.g. `etcdbackup_uploads_total{result="success"}`. */
function parseScrape(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function valueOf(samples: Map<string, number>, series: string): number {
  const v = samples.get(series);
  if (v === undefined) throw new Error(`${series} is not in the scrape`);
  return v;
}

/** promtool check metrics reads the exposition on stdin and prints one line per problem. */
function checkMetrics(text: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e) => reject(new Error(`promtool not runnable (${e.message}): install the Debian package "prometheus"`)));
    child.on('close', () =>
      resolve(
        out
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean),
      ),
    );
    child.stdin.end(text);
  });
}

/** Polls until fn returns a value (not undefined); a bounded wait for something another process does. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last instanceof Error ? last.message : JSON.stringify(last)})` : ''}${prom ? `\nprometheus stderr: ${prom.stderr().slice(-1500)}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface PromResult {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

async function promQuery(expr: string): Promise<PromResult> {
  const res = await fetch(`${prom!.url}/api/v1/query?${new URLSearchParams({ query: expr }).toString()}`);
  return (await res.json()) as PromResult;
}

/** The single value of an instant query, or undefined while Prometheus has none. */
async function promValue(expr: string): Promise<number | undefined> {
  const r = await promQuery(expr);
  if (r.status !== 'success') throw new Error(`${expr}: ${r.error}`);
  const v = r.data?.result[0]?.value[1];
  return v === undefined ? undefined : Number(v);
}

async function startPrometheus(target: string): Promise<NonNullable<typeof prom>> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'prometheus-'));
  const port = await freePort();
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: [RULES],
    scrape_configs: [{ job_name: 'etcd-backup-agent', static_configs: [{ targets: [target] }] }],
  };
  await writeFile(path.join(dir, 'prometheus.yml'), stringify(config));
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const p = { url: `http://127.0.0.1:${port}`, child, dir, stderr: () => stderr };
  prom = p;
  const exited = new Promise<never>((_, reject) => child.on('exit', (code) => reject(new Error(`prometheus exited (${code}): ${stderr.slice(-2000)}`))));
  await Promise.race([exited, until('Prometheus to be ready', async () => ((await fetch(`${p.url}/-/ready`)).ok ? true : undefined))]);
  return p;
}

async function startA(): Promise<AgentProcess> {
  agentA = await startAgent(dirsA, agentEnv(world), cfgA);
  agents.push(agentA);
  return agentA;
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  dirsA = await testDirs('metrics-');
  // a retention schedule that never comes round during the test: prune metrics must only exist here
  cfgA = await writeConfig(dirsA, world, bucket, { node: 'metrics-a', detect: { settleTimeout: '1s' }, retention: { schedule: '0 0 1 1 *' } });
  await startA();
  await agentA.waitMsg('S3 reachable');
  await startPrometheus(String((cfgA.metrics as { listen: string }).listen));
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  if (prom) {
    const exited = new Promise((r) => prom!.child.once('exit', r));
    if (prom.child.exitCode === null) prom.child.kill('SIGTERM');
    await exited;
    await rm(prom.dir, { recursive: true, force: true });
  }
  for (const a of agents) expect(a.stdout + a.stderr).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
});

describe('metrics of the running agent', () => {
  let size = 0;
  let mtimeS = 0;
  let shippedAt = 0;
  let promSawShip = 0;

  it('start: every series is there with its initial value, and promtool check metrics accepts the scrape', async () => {
    const text = await agentA.metrics();
    const m = parseScrape(text);
    for (const r of ['success', 'failure', 'already_present']) expect(valueOf(m, `etcdbackup_uploads_total{result="${r}"}`)).toBe(0);
    for (const r of FAILURE_REASONS) expect(valueOf(m, `etcdbackup_upload_failures_total{reason="${r}"}`)).toBe(0);
    for (const r of REJECT_REASONS) expect(valueOf(m, `etcdbackup_snapshots_rejected_total{reason="${r}"}`)).toBe(0);
    for (const l of ['local', 'remote']) {
      expect(valueOf(m, `etcdbackup_pruned_files_total{location="${l}"}`)).toBe(0);
      expect(valueOf(m, `etcdbackup_pruned_bytes_total{location="${l}"}`)).toBe(0);
    }
    expect(valueOf(m, 'etcdbackup_prune_failures_total')).toBe(0);
    expect(valueOf(m, 'etcdbackup_last_prune_success_timestamp_seconds')).toBe(0);
    // a node that never shipped anything: nothing in S3 to seed from
    expect(valueOf(m, 'etcdbackup_last_upload_success_timestamp_seconds')).toBe(0);
    expect(valueOf(m, 'etcdbackup_last_snapshot_timestamp_seconds')).toBe(0);
    expect(valueOf(m, 'etcdbackup_snapshots_pending')).toBe(0);
    expect(valueOf(m, 'etcdbackup_upload_bytes_total')).toBe(0);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_count')).toBe(0);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_bucket{le="1"}')).toBe(0);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_bucket{le="3600"}')).toBe(0);
    expect(valueOf(m, 'etcdbackup_local_snapshots')).toBe(0);
    expect(valueOf(m, 'etcdbackup_local_snapshots_bytes')).toBe(0);
    expect(valueOf(m, 'etcdbackup_s3_up')).toBe(1);
    expect(valueOf(m, 'etcdbackup_snapshot_directory_up')).toBe(1);
    expect(valueOf(m, 'etcdbackup_ledger_write_failures_total')).toBe(0);
    const version = (JSON.parse(await readFile(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(valueOf(m, `etcdbackup_build_info{version="${version}",nodejs="${agentNodeVersion()}",encryption="false",signing="false"}`)).toBe(1);
    expect(valueOf(m, 'process_start_time_seconds')).toBeGreaterThan(Date.now() / 1000 - 300);

    const problems = await checkMetrics(text);
    expect(problems.filter((p) => !JUSTIFIED_LINT.has(p))).toEqual([]);

    // health endpoints of a running, connected agent
    expect((await fetch(agentA.metricsUrl.replace('/metrics', '/healthz'))).status).toBe(200);
    expect((await fetch(agentA.metricsUrl.replace('/metrics', '/readyz'))).status).toBe(200);
  });

  it('ship: upload counters, bytes, duration, freshness and disk use; Prometheus sees the freshness gauge move', async () => {
    // Prometheus scrapes the agent and has stored the "never shipped" value
    expect(await until('Prometheus to scrape the agent', () => promValue('etcdbackup_last_upload_success_timestamp_seconds{job="etcd-backup-agent"}'))).toBe(0);
    expect(await promValue('up{job="etcd-backup-agent"}')).toBe(1);

    const file = path.join(dirsA.snapshots, 'a.db');
    const before = Date.now() / 1000;
    size = await saveSnapshot(world, file);
    mtimeS = (await stat(file)).mtimeMs / 1000;
    await agentA.waitMsg('snapshot shipped and confirmed', 'a.db');
    shippedAt = Date.now() / 1000;

    const m = parseScrape(await agentA.metrics());
    expect(valueOf(m, 'etcdbackup_uploads_total{result="success"}')).toBe(1);
    expect(valueOf(m, 'etcdbackup_uploads_total{result="failure"}')).toBe(0);
    expect(valueOf(m, 'etcdbackup_upload_bytes_total')).toBe(size);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_count')).toBe(1);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_sum')).toBeLessThan(shippedAt - before + 1);
    expect(valueOf(m, 'etcdbackup_upload_duration_seconds_bucket{le="+Inf"}')).toBe(1);
    const freshness = valueOf(m, 'etcdbackup_last_upload_success_timestamp_seconds');
    expect(freshness).toBeGreaterThanOrEqual(before);
    expect(freshness).toBeLessThanOrEqual(shippedAt);
    expect(valueOf(m, 'etcdbackup_last_snapshot_timestamp_seconds')).toBeCloseTo(mtimeS, 2);
    expect(valueOf(m, 'etcdbackup_snapshots_pending')).toBe(0);
    expect(valueOf(m, 'etcdbackup_local_snapshots')).toBe(1);
    expect(valueOf(m, 'etcdbackup_local_snapshots_bytes')).toBe(size);

    // the same number reaches Prometheus, within a few scrapes
    const seen = await until('Prometheus to store the new freshness value', async () => {
      const v = await promValue('etcdbackup_last_upload_success_timestamp_seconds{job="etcd-backup-agent"}');
      return v !== undefined && v > 0 ? v : undefined;
    });
    promSawShip = Date.now() / 1000;
    expect(seen).toBe(freshness);
    expect(await promValue('time() - etcdbackup_last_upload_success_timestamp_seconds{job="etcd-backup-agent"}')).toBeLessThan(120);

    // the text histogram and counters after real observations still pass the linter
    expect((await checkMetrics(await agentA.metrics())).filter((p) => !JUSTIFIED_LINT.has(p))).toEqual([]);
  });

  it('every rule and dashboard query is valid PromQL for a real Prometheus, and the rules are loaded', async () => {
    const rules = parse(await readFile(RULES, 'utf8')) as { groups: { rules: { expr: string }[] }[] };
    const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
    const exprs = [...rules.groups.flatMap((g) => g.rules.map((r) => r.expr)), ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr))].map(
      (e) => e.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.*').replaceAll('$instance', '.*'),
    );
    for (const e of exprs) {
      const r = await promQuery(e);
      expect(r.status, `${e}: ${r.error}`).toBe('success');
    }
    expect(await until('the recording rules to be evaluated', () => promValue('etcdbackup:stale_threshold:seconds'))).toBe(25 * 3600);
    // a fresh backup: the dashboard's age query has a small value for this node
    expect(await promValue('time() - etcdbackup_last_upload_success_timestamp_seconds{job=~".*", instance=~".*"}')).toBeLessThan(120);
  });

  it('reject: corrupt and truncated snapshots are counted by reason and not shipped', async () => {
    const good = await readFile(path.join(dirsA.snapshots, 'a.db'));
    const flipped = Buffer.from(good);
    flipped[Math.floor(good.length / 2)]! ^= 0xff;
    // written next to the directory and renamed in, as etcdctl does
    await writeFile(path.join(dirsA.root, 'corrupt.db'), flipped);
    await rename(path.join(dirsA.root, 'corrupt.db'), path.join(dirsA.snapshots, 'corrupt.db'));
    await writeFile(path.join(dirsA.snapshots, 'half.db'), good.subarray(0, Math.floor(good.length / 2)));
    await agentA.waitFor((l) => l.msg.startsWith('snapshot rejected') && String(l.file).endsWith('corrupt.db'));
    await agentA.waitFor((l) => l.msg.startsWith('snapshot rejected') && String(l.file).endsWith('half.db'));

    const m = parseScrape(await agentA.metrics());
    expect(valueOf(m, 'etcdbackup_snapshots_rejected_total{reason="corrupt"}')).toBe(1);
    expect(valueOf(m, 'etcdbackup_snapshots_rejected_total{reason="truncated"}')).toBe(1);
    expect(valueOf(m, 'etcdbackup_snapshots_rejected_total{reason="format"}')).toBe(0);
    expect(valueOf(m, 'etcdbackup_snapshots_rejected_total{reason="unreadable"}')).toBe(0);
    expect(valueOf(m, 'etcdbackup_uploads_total{result="success"}')).toBe(1);
    expect(valueOf(m, 'etcdbackup_snapshots_pending')).toBe(0);
    // rejected files stay in the directory and count towards its disk use
    expect(valueOf(m, 'etcdbackup_local_snapshots')).toBe(3);
    expect(valueOf(m, 'etcdbackup_local_snapshots_bytes')).toBe(size + flipped.length + Math.floor(good.length / 2));
    // the newest *verified* snapshot is still a.db
    expect(valueOf(m, 'etcdbackup_last_snapshot_timestamp_seconds')).toBeCloseTo(mtimeS, 2);
    await rm(path.join(dirsA.snapshots, 'half.db'));
  });

  it('restart with a lost ledger: freshness is seeded from S3 before the first scrape, and Prometheus never stores a 0', async () => {
    const before = parseScrape(await agentA.metrics());
    const freshness = valueOf(before, 'etcdbackup_last_upload_success_timestamp_seconds');
    expect(await agentA.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    // a reinstalled node: no ledger, so S3 is the only source
    await rm(dirsA.state, { recursive: true, force: true });

    const starting = startA();
    const early: number[] = [];
    let started = false;
    void starting.then(
      () => (started = true),
      () => (started = true),
    );
    const url = agentA.metricsUrl; // the same address as before the restart
    // scrape as fast as possible while the agent starts: no answer may carry a reset gauge
    while (!started) {
      try {
        const v = parseScrape(await (await fetch(url)).text()).get('etcdbackup_last_upload_success_timestamp_seconds');
        if (v !== undefined) early.push(v);
      } catch {
        /* not listening yet */
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    const agent = await starting;
    await agent.waitMsg('ledger rebuilt from S3');
    early.push(valueOf(parseScrape(await agent.metrics()), 'etcdbackup_last_upload_success_timestamp_seconds'));
    expect(early.filter((v) => v === 0)).toEqual([]);

    const head = await s3Client(world).send(new HeadObjectCommand({ Bucket: bucket, Key: 'etcd-backup/test/metrics-a/a.db' }));
    const lastModified = head.LastModified!.getTime() / 1000;
    const m = parseScrape(await agent.metrics());
    const seeded = valueOf(m, 'etcdbackup_last_upload_success_timestamp_seconds');
    // the listing gives LastModified in milliseconds, HeadObject in whole seconds
    expect(Math.abs(seeded - lastModified)).toBeLessThan(1);
    expect(seeded).toBeGreaterThan(freshness - 5);
    expect(seeded).toBeLessThanOrEqual(freshness + 1);

    // the start scan finds a.db shipped (no second upload) and rejects the corrupt file again
    await agent.waitFor((l) => l.msg === 'already confirmed in S3' && String(l.file).endsWith('a.db'));
    await agent.waitFor((l) => l.msg.startsWith('snapshot rejected') && String(l.file).endsWith('corrupt.db'));
    const after = parseScrape(await agent.metrics());
    expect(valueOf(after, 'etcdbackup_uploads_total{result="success"}')).toBe(0);
    expect(valueOf(after, 'etcdbackup_snapshots_rejected_total{reason="corrupt"}')).toBe(1);
    expect(valueOf(after, 'etcdbackup_last_snapshot_timestamp_seconds')).toBeCloseTo(mtimeS, 2);
    expect(valueOf(after, 'etcdbackup_snapshots_pending')).toBe(0);

    // Prometheus scrapes the new process, and in all it stored since the ship the gauge never fell to 0
    const startTime = valueOf(after, 'process_start_time_seconds');
    await until('Prometheus to scrape the restarted agent', async () =>
      (await promValue('process_start_time_seconds{job="etcd-backup-agent"}')) === startTime ? true : undefined,
    );
    const window = Math.max(1, Math.floor(Date.now() / 1000 - promSawShip));
    expect(await promValue(`min_over_time(etcdbackup_last_upload_success_timestamp_seconds{job="etcd-backup-agent"}[${window}s])`)).toBeGreaterThan(0);
  });

  it('failure: S3 refusing connections shows as failures by reason, s3_up 0, pending, and /readyz 503; recovery clears it', async () => {
    const target = new URL(world.s3.endpoint);
    const proxy: TcpProxy = await startProxy({ target: { host: target.hostname, port: Number(target.port) } });
    await proxy.setMode('refuse');
    try {
      const dirs = await testDirs('metrics-fail-');
      const cfg = await writeConfig(dirs, world, bucket, { node: 'metrics-b', s3: { endpoint: proxy.url }, retention: { schedule: '0 0 1 1 *' } });
      const agent = await startAgent(dirs, agentEnv(world), cfg);
      agents.push(agent);
      await agent.waitMsg('S3 check at start failed; will retry');
      await saveSnapshot(world, path.join(dirs.snapshots, 'b.db'));
      const failed = await agent.waitMsg('upload failed; the snapshot stays pending and will be retried', 'b.db');
      expect(failed.reason).toBe('network');

      const m = parseScrape(await agent.metrics());
      expect(valueOf(m, 'etcdbackup_upload_failures_total{reason="network"}')).toBeGreaterThanOrEqual(1);
      for (const r of FAILURE_REASONS.filter((x) => x !== 'network')) expect(valueOf(m, `etcdbackup_upload_failures_total{reason="${r}"}`), r).toBe(0);
      expect(valueOf(m, 'etcdbackup_uploads_total{result="failure"}')).toBe(valueOf(m, 'etcdbackup_upload_failures_total{reason="network"}'));
      expect(valueOf(m, 'etcdbackup_uploads_total{result="success"}')).toBe(0);
      expect(valueOf(m, 'etcdbackup_s3_up')).toBe(0);
      expect(valueOf(m, 'etcdbackup_snapshots_pending')).toBe(1);
      expect(valueOf(m, 'etcdbackup_last_upload_success_timestamp_seconds')).toBe(0);
      expect(valueOf(m, 'etcdbackup_last_snapshot_timestamp_seconds')).toBeGreaterThan(0);
      expect((await checkMetrics(await agent.metrics())).filter((p) => !JUSTIFIED_LINT.has(p))).toEqual([]);
      const ready = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
      expect(ready.status).toBe(503);
      expect(await ready.text()).toMatch(/^not ok: watching .*; S3 unreachable at /);
      expect((await fetch(agent.metricsUrl.replace('/metrics', '/healthz'))).status).toBe(200);

      await proxy.setMode('pass');
      await agent.waitMsg('snapshot shipped and confirmed', 'b.db');
      const ok = parseScrape(await agent.metrics());
      expect(valueOf(ok, 'etcdbackup_uploads_total{result="success"}')).toBe(1);
      expect(valueOf(ok, 'etcdbackup_s3_up')).toBe(1);
      expect(valueOf(ok, 'etcdbackup_snapshots_pending')).toBe(0);
      expect(valueOf(ok, 'etcdbackup_last_upload_success_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000 - 60);
      expect((await fetch(agent.metricsUrl.replace('/metrics', '/readyz'))).status).toBe(200);
      await agent.stop();
    } finally {
      await proxy.close();
    }
  });
});
