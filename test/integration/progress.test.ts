// Progress of long transfers as a person sees it: `upload`, `fetch` and `verify` in a real terminal (tmux),
// where the screen shows a bar with percent, bytes, rate and ETA while the transfer runs, and nothing of it
// once done; no bar with --quiet or in CI; on a pipe not one control character in stdout or stderr, and JSON
// that parses. Transfers are slowed (upload.bandwidthLimit; a paced relay in front of RGW for reads) so that
// each transfer takes about four seconds whatever the snapshot's size (the world's etcd holds what other
// tests put there). Last, the daemon's debug log of a long upload: at most every 30 s.
import { rename, rm, stat } from 'node:fs/promises';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatBytes } from '../../agent/base/units.js';
import { AGENT_MAIN, agentEnv, runCli, startAgent, testDirs, writeConfig, type LogLine, type TestDirs } from '../support/agent.js';
import { onTerminal } from '../support/terminal.js';
import { createBucket, emptyAndDeleteBucket, putKeys, readWorldEnv, saveSnapshot, type World } from '../support/world.js';

let world: World;
let dirs: TestDirs;
let relay: { url: string; close(): Promise<void> };
let snapshot: string;
/** bytes per second for every paced transfer: about four seconds each */
let pace: number;
const bucket = `progress-${Date.now().toString(36)}`;
const MiB = 1024 * 1024;

/** A TCP relay in front of RGW that hands the client at most `rate` bytes per second (reads get slow). */
async function pacedRelay(target: URL, rate: number): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      upstream.pause();
      client.write(chunk);
      setTimeout(() => upstream.resume(), (chunk.length / rate) * 1000);
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  dirs = await testDirs('progress-');
  snapshot = path.join(dirs.root, 'big.db');
  let size = await saveSnapshot(world, snapshot);
  if (size < 11 * MiB) {
    // ~13 MB at least: three 5 MiB parts
    await putKeys(world, 10_000, 1024, `/progress-test/${bucket}/`);
    size = await saveSnapshot(world, snapshot);
  }
  pace = Math.max(MiB, Math.ceil(size / 4));
  relay = await pacedRelay(new URL(world.s3.endpoint), pace);
});

afterAll(async () => {
  await relay?.close();
  await emptyAndDeleteBucket(world, bucket);
  await rm(dirs.root, { recursive: true, force: true });
});

async function config(node: string, extra: Record<string, unknown> = {}): Promise<void> {
  await writeConfig(dirs, world, bucket, { node, s3: { partSize: '5MiB' }, upload: { bandwidthLimit: pace }, log: { level: 'warn' }, ...extra });
}

const agent = (...args: string[]): string[] => [process.execPath, AGENT_MAIN, '--config', dirs.config, ...args];
const SIZE_RE = '[\\d.]+ (?:B|KiB|MiB)';
/** a bar line as cli-progress draws it with the agent's format */
const barLine = (name: string): RegExp =>
  new RegExp(`^${name.replace('.', '\\.')} \\[[█░]{40}\\] (\\d{1,3})% (${SIZE_RE})/(${SIZE_RE}) (${SIZE_RE})/s ETA (\\d+)s$`, 'm');
const mib = (s: string): number => {
  const [n, u] = s.split(' ');
  return Number(n) * ({ B: 1 / MiB, KiB: 1 / 1024, MiB: 1 } as Record<string, number>)[u!]!;
};

/** The bars seen mid-transfer (neither 0 % nor 100 %): percent, rate in MiB/s. */
function midBars(screens: string[], name: string): { percent: number; rateMiB: number; line: string }[] {
  const out = [];
  for (const s of screens) {
    const m = barLine(name).exec(s);
    if (m && Number(m[1]) > 0 && Number(m[1]) < 100) out.push({ percent: Number(m[1]), rateMiB: mib(m[4]!), line: m[0] });
  }
  return out;
}

describe('on a terminal', () => {
  it('upload: the screen shows the bar with percent, bytes, rate and ETA while it runs, and no bar after', async () => {
    await config('tty-upload');
    const r = await onTerminal(agent('upload', snapshot), agentEnv(world));
    expect(r.code, r.final).toBe(0);
    const bars = midBars(r.screens, 'big.db');
    expect(bars.length, r.screens.join('\n----\n')).toBeGreaterThan(0);
    // the pace allowed: the throttle lets one second's worth go at once, so from half way on (at least one
    // second of pacing behind it) the rate counted from the start is at most twice the pace, nothing like
    // the GiB/s a rate counted from the first update showed
    const late = bars.filter((b) => b.percent >= 50);
    expect(late.length, r.screens.join('\n----\n')).toBeGreaterThan(0);
    for (const b of late) expect(b.rateMiB, b.line).toBeLessThan((4 * pace) / MiB);
    // the total is the file's size
    expect(barLine('big.db').exec(r.screens.find((s) => barLine('big.db').test(s))!)![3]).toBe(formatBytes((await stat(snapshot)).size));
    expect(r.final).toMatch(/uploaded: .*big\.db -> s3:\/\//);
    expect(r.final).not.toMatch(/\[[█░]{40}\]/);
  });

  it('fetch and verify: the same bar while the object is read', async () => {
    await config('tty-upload', { s3: { endpoint: relay.url, partSize: '5MiB' } });
    const out = path.join(dirs.root, 'fetched.db');
    const f = await onTerminal(agent('fetch', '--latest', '--output', out), agentEnv(world));
    expect(f.code, f.final).toBe(0);
    expect(midBars(f.screens, 'big.db').length, f.screens.join('\n----\n')).toBeGreaterThan(0);
    expect(f.final).not.toMatch(/\[[█░]{40}\]/);
    const v = await onTerminal(agent('verify', '--latest'), agentEnv(world));
    expect(v.code, v.final).toBe(0);
    expect(midBars(v.screens, 'big.db').length, v.screens.join('\n----\n')).toBeGreaterThan(0);
    expect(v.final).not.toMatch(/\[[█░]{40}\]/);
  });

  it('no bar with --quiet, nor in CI (CI set in the environment), nor with TERM=dumb', async () => {
    await config('tty-quiet', { s3: { endpoint: relay.url, partSize: '5MiB' } });
    const runs = [
      await onTerminal(agent('upload', '--quiet', snapshot), agentEnv(world)),
      await onTerminal(agent('verify', '--latest'), agentEnv(world, { CI: 'true' })),
      await onTerminal(['env', 'TERM=dumb', ...agent('fetch', '--latest', '--force', '--output', path.join(dirs.root, 'quiet.db'))], agentEnv(world)),
    ];
    for (const r of runs) {
      expect(r.code, r.final).toBe(0);
      for (const s of r.screens) expect(s).not.toMatch(/\[[█░]+\]/);
    }
  });
});

describe('on a pipe', () => {
  // everything but the newline: escape sequences, carriage returns, backspaces
  const CONTROL = /[\x00-\x09\x0b-\x1f\x7f\x9b]/;

  it('upload, fetch, verify, verify --json and list --json: not one control character, JSON that parses', async () => {
    await config('pipe', { log: { level: 'debug' } });
    const env = agentEnv(world);
    const outs = [
      await runCli(['--config', dirs.config, 'upload', snapshot], env),
      await runCli(['--config', dirs.config, 'fetch', '--latest', '--output', path.join(dirs.root, 'piped.db')], env),
      await runCli(['--config', dirs.config, 'verify', '--latest'], env),
    ];
    const json = await runCli(['--config', dirs.config, 'verify', '--latest', '--json'], env);
    const list = await runCli(['--config', dirs.config, 'list', '--json'], env);
    for (const r of [...outs, json, list]) {
      expect(r.code, r.stderr).toBe(0);
      expect(CONTROL.test(r.stdout), JSON.stringify(r.stdout.slice(0, 300))).toBe(false);
      expect(CONTROL.test(r.stderr), JSON.stringify(r.stderr.slice(0, 300))).toBe(false);
    }
    expect(() => JSON.parse(json.stdout)).not.toThrow();
    expect(() => JSON.parse(list.stdout)).not.toThrow();
  });
});

describe('the daemon', () => {
  it('logs the progress of a long upload at debug level, at most every 30 s', async () => {
    // the world's etcd holds what other tests put there: pace the upload by the snapshot's real size, ~65 s
    const staged = path.join(dirs.root, 'daemon-big.db');
    const size = await saveSnapshot(world, staged);
    const rate = Math.ceil(size / 65);
    const cfg = await writeConfig(dirs, world, bucket, {
      node: 'daemon-progress',
      s3: { partSize: '5MiB' },
      upload: { bandwidthLimit: rate, timeout: '5m' },
      log: { level: 'debug' },
    });
    const a = await startAgent(dirs, agentEnv(world), cfg);
    try {
      await rename(staged, path.join(dirs.snapshots, 'big.db'));
      const started = await a.waitFor((l) => l.msg === 'upload started', 30_000, 'upload started');
      await a.waitMsg('snapshot shipped and confirmed', 'big.db', 110_000);
      const progress = a.lines.filter((l) => l.msg === 'upload progress');
      const t = (l: LogLine): number => Date.parse(String(l.time));
      expect(progress.length).toBeGreaterThan(0);
      for (const p of progress) expect(p.level).toBe('debug');
      expect(t(progress[0]!) - t(started)).toBeGreaterThanOrEqual(30_000);
      for (let i = 1; i < progress.length; i++) expect(t(progress[i]!) - t(progress[i - 1]!)).toBeGreaterThanOrEqual(30_000);
      expect(Number(progress[0]!.percent)).toBeGreaterThan(0);
      expect(Number(progress[0]!.percent)).toBeLessThan(100);
    } finally {
      await a.stop();
    }
  }, 150_000);
});
