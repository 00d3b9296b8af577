// `npm run bench`: the agent against its peers (awscli, rclone, s3cmd, and curl as the one-stream
// floor), all in one run, against the same loopback endpoints (a discarding sink and Ceph RGW), tools
// alternated round by round so that a noisy neighbour hurts them all alike. Prints medians and ratios.
// Not a test: nothing here asserts a number.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { etcdSnapshot } from './fixtures.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
// The agent as it ships (the release executable and its embedded Node), unless AGENT_RUNTIME=source.
const RELEASE = path.join(ROOT, 'release/etcd-backup-agent');
const SOURCE = process.env.AGENT_RUNTIME === 'source';
const agentArgv = (...args: string[]): string[] => (SOURCE ? [process.execPath, path.join(ROOT, 'dist/agent/cli/main.js'), ...args] : [RELEASE, ...args]);
const agentRuntime = (): string =>
  SOURCE ? `Node ${process.version} (source)` : `release executable, Node ${readFileSync(path.join(ROOT, 'release/.node-version'), 'utf8').trim()}`;
const SINK = path.join(ROOT, 'dist/bench/scripts/bench/sink.js');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const args = new Set(process.argv.slice(2));
const QUICK = args.has('--quick');
// detection latency, idle CPU and RSS by size only: the daemon figures without the transfer rounds
const DAEMON_ONLY = args.has('--daemon-only');
const ROUNDS = QUICK ? 1 : Number(process.env.BENCH_ROUNDS ?? 3);
const SIZES = QUICK ? [GiB] : [GiB, 4 * GiB];

interface Endpoint {
  name: string;
  /** for the table */
  title: string;
  url: string;
  /** PEM of the private CA of an HTTPS endpoint */
  caFile?: string;
  /** the sink that returns real MD5 ETags, for s3cmd */
  md5Url?: string;
  bucket: string;
  accessKey: string;
  secretKey: string;
}

interface Sample {
  wall: number;
  cpu: number;
  rssMiB: number;
}

type Tool = { name: string; cmd: (ep: Endpoint, file: string, key: string, work: string) => Promise<{ argv: string[]; env: NodeJS.ProcessEnv }> };

function baseEnv(ep: Endpoint): NodeJS.ProcessEnv {
  return {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: os.tmpdir(),
    AWS_ACCESS_KEY_ID: ep.accessKey,
    AWS_SECRET_ACCESS_KEY: ep.secretKey,
    AWS_REGION: 'us-east-1',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_PAGER: '',
  };
}

/** Keys for the encrypted and signed rows: an age recipient and an OpenSSH ed25519 signing key. */
let sealing = '';
async function makeSealing(work: string): Promise<void> {
  const { generateAgeIdentity } = (await import(path.join(ROOT, 'dist/agent/crypto/age.js'))) as { generateAgeIdentity: () => { recipient: string } };
  const key = path.join(work, 'signing-key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench', '-f', key]);
  sealing = `encryption:\n  recipients: [${generateAgeIdentity().recipient}]\nsigning:\n  keyFile: ${key}\n`;
}

/** The agent's `upload`: the one read pass with verification (and the deep check), as on an etcd host. */
function agentTool(name: string, extra = '', sealed = false): Tool {
  return {
    name,
    cmd: async (ep, file, key, work) => {
      // the agent's key is <prefix>/<cluster>/<node>/<name>: one node per run keeps keys fresh
      const node = key.replace(/[^A-Za-z0-9._-]/g, '-');
      const dir = path.join(work, `agent-${node}`);
      await mkdir(dir, { recursive: true });
      const cfg = path.join(dir, 'config.yaml');
      const ca = ep.caFile ? `  caFile: ${ep.caFile}\n` : '';
      await writeFile(
        cfg,
        `node: ${node}\ncluster: bench\nsnapshotDir: ${path.dirname(file)}\nstateDir: ${dir}/state\ns3:\n  bucket: ${ep.bucket}\n  endpoint: ${ep.url}\n${ca}${extra}${sealed ? sealing : ''}metrics:\n  enabled: false\nlog:\n  level: warn\n`,
      );
      return { argv: agentArgv('--config', cfg, 'upload', '--quiet', file), env: baseEnv(ep) };
    },
  };
}

const TOOLS: Tool[] = [
  // the default config: the start-up probe picks CRC32 where the server checks it, else the signed payload
  agentTool('agent'),
  // age encryption to one recipient and an SSH signature, same defaults
  agentTool('agent-age', '', true),
  {
    name: 'aws',
    cmd: async (ep, file, key) => ({
      argv: [
        '/usr/bin/aws',
        '--endpoint-url',
        ep.url,
        ...(ep.caFile ? ['--ca-bundle', ep.caFile] : []),
        's3',
        'cp',
        '--no-progress',
        '--only-show-errors',
        file,
        `s3://${ep.bucket}/${key}`,
      ],
      env: baseEnv(ep),
    }),
  },
  {
    name: 'rclone',
    cmd: async (ep, file, key) => ({
      argv: [
        '/usr/bin/rclone',
        'copyto',
        '--s3-no-check-bucket',
        '--no-check-dest',
        ...(ep.name === 'sink' ? ['--ignore-checksum'] : []),
        file,
        `bench:${ep.bucket}/${key}`,
      ],
      env: {
        ...baseEnv(ep),
        RCLONE_CONFIG_BENCH_TYPE: 's3',
        RCLONE_CONFIG_BENCH_PROVIDER: 'Ceph',
        // the sink does not compute MD5s, so rclone must not check multipart ETags against it
        ...(ep.name === 'sink' ? { RCLONE_CONFIG_BENCH_USE_MULTIPART_ETAG: 'false' } : {}),
        RCLONE_CONFIG_BENCH_ENDPOINT: ep.url,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: ep.accessKey,
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: ep.secretKey,
      },
    }),
  },
  {
    name: 's3cmd',
    cmd: async (ep, file, key) => {
      const host = new URL(ep.md5Url ?? ep.url).host;
      return {
        argv: [
          '/usr/bin/s3cmd',
          '-c',
          '/dev/null',
          `--host=${host}`,
          `--host-bucket=${host}`,
          '--no-ssl',
          `--access_key=${ep.accessKey}`,
          `--secret_key=${ep.secretKey}`,
          '--no-progress',
          '--quiet',
          'put',
          file,
          `s3://${ep.bucket}/${key}`,
        ],
        env: baseEnv(ep),
      };
    },
  },
  {
    name: 'curl',
    cmd: async (ep, file, key) => ({
      // one PUT, unsigned payload: the one-stream floor
      argv: [
        '/usr/bin/curl',
        '-sS',
        '--fail',
        '-o',
        '/dev/null',
        ...(ep.caFile ? ['--cacert', ep.caFile] : []),
        '--aws-sigv4',
        'aws:amz:us-east-1:s3',
        '--user',
        `${ep.accessKey}:${ep.secretKey}`,
        '-H',
        'x-amz-content-sha256: UNSIGNED-PAYLOAD',
        '-T',
        file,
        `${ep.url}/${ep.bucket}/${key}`,
      ],
      env: baseEnv(ep),
    }),
  },
];

/** Runs a command under GNU time: wall seconds, CPU seconds (user + sys, children included), peak RSS. */
function measure(argv: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'BENCHTIME %e %U %S %M', ...argv], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      const m = /BENCHTIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${path.basename(argv[0]!)} failed (${code}): ${err.slice(-800)}`));
      resolve({ wall: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), rssMiB: Number(m[4]) / 1024 });
    });
  });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function startSink(flags: string[] = []): Promise<{ url: string; stop: () => void }> {
  const child = spawn(process.execPath, [SINK, '0', ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve) => child.stdout.once('data', (d: Buffer) => resolve(d.toString().trim())));
  return { url, stop: () => child.kill() };
}

async function s3(ep: Endpoint) {
  const { S3Client, CreateBucketCommand, DeleteObjectCommand, ListObjectsV2Command } = await import('@aws-sdk/client-s3');
  const { NodeHttpHandler } = await import('@smithy/node-http-handler');
  const { Agent } = await import('node:https');
  const client = new S3Client({
    endpoint: ep.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: ep.accessKey, secretAccessKey: ep.secretKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    ...(ep.caFile ? { requestHandler: new NodeHttpHandler({ httpsAgent: new Agent({ ca: readFileSync(ep.caFile) }) }) } : {}),
  });
  return {
    create: () => client.send(new CreateBucketCommand({ Bucket: ep.bucket })),
    /** frees RGW's space between runs */
    clear: async () => {
      const r = await client.send(new ListObjectsV2Command({ Bucket: ep.bucket }));
      for (const o of r.Contents ?? []) await client.send(new DeleteObjectCommand({ Bucket: ep.bucket, Key: o.Key! }));
    },
  };
}

/** A sparse snapshot-shaped file: meta pages, a hole, the SHA-256 trailer. Costs no disk. */
function row(cells: (string | number)[], widths: number[]): string {
  return cells.map((c, i) => String(c).padStart(widths[i]!)).join('  ');
}

interface Scenario {
  ep: Endpoint;
  sizes: number[];
  tools: string[];
}

async function transferBench(scenarios: Scenario[], files: Map<number, string>, work: string): Promise<string[]> {
  const out: string[] = [];
  // figures per byte actually sent: the snapshots are real, so a little over their nominal size
  const actual = new Map<number, number>();
  for (const [size, f] of files) actual.set(size, (await stat(f)).size);
  const results = new Map<string, Sample[]>();
  let runNo = 0;
  for (let round = 0; round < ROUNDS; round++) {
    for (const sc of scenarios) {
      const tools = TOOLS.filter((t) => sc.tools.includes(t.name));
      for (const size of sc.sizes) {
        // rotate the order each round: A B C …, then B C … A
        const order = tools.map((_, i) => tools[(i + round) % tools.length]!);
        for (const tool of order) {
          const key = `r${round}-${tool.name}-${size / GiB}g-${runNo++}`;
          const { argv, env } = await tool.cmd(sc.ep, files.get(size)!, key, work);
          const sample = await measure(argv, env);
          const id = `${sc.ep.name}|${size}|${tool.name}`;
          results.set(id, [...(results.get(id) ?? []), sample]);
          process.stderr.write(
            `  round ${round + 1} ${sc.ep.name} ${size / GiB} GiB ${tool.name.padEnd(9)} ${(actual.get(size)! / MiB / sample.wall).toFixed(0)} MiB/s, ${(sample.cpu / (actual.get(size)! / GiB)).toFixed(2)} CPU s/GiB, ${sample.rssMiB.toFixed(0)} MiB RSS\n`,
          );
          if (sc.ep.name.startsWith('rgw')) await (await s3(sc.ep)).clear();
        }
      }
    }
  }
  const widths = [9, 5, 7, 9, 12, 14];
  for (const sc of scenarios) {
    for (const size of sc.sizes) {
      out.push('', `${sc.ep.title}, a real etcd snapshot of ${(actual.get(size)! / MiB).toFixed(0)} MiB, median of ${ROUNDS}`);
      out.push(row(['tool', 'runs', 'MiB/s', 'CPU s/GiB', 'peak RSS MiB', 'vs aws (MiB/s)'], widths));
      const stat = (tool: string) => {
        const x = results.get(`${sc.ep.name}|${size}|${tool}`) ?? [];
        return {
          mibs: median(x.map((y) => actual.get(size)! / MiB / y.wall)),
          cpu: median(x.map((y) => y.cpu / (actual.get(size)! / GiB))),
          rss: Math.max(...x.map((y) => y.rssMiB)),
          n: x.length,
        };
      };
      const aws = stat('aws');
      for (const t of sc.tools) {
        const x = stat(t);
        out.push(row([t, x.n, x.mibs.toFixed(0), x.cpu.toFixed(2), x.rss.toFixed(0), `${(x.mibs / aws.mibs).toFixed(2)}×`], widths));
      }
      const agent = stat('agent');
      out.push(`ratios: agent/aws throughput ${(agent.mibs / aws.mibs).toFixed(2)}×, CPU ${(agent.cpu / aws.cpu).toFixed(2)}×`);
      if (sc.tools.includes('agent-age')) {
        const age = stat('agent-age');
        out.push(
          `        agent-age/aws throughput ${(age.mibs / aws.mibs).toFixed(2)}×, CPU ${(age.cpu / aws.cpu).toFixed(2)}×; encryption and signing add ${(age.cpu - agent.cpu).toFixed(2)} CPU s/GiB`,
        );
      }
    }
  }
  return out;
}

/** Starts `run` and resolves on the first log line matching pred, with the line. */
function daemon(cfg: string, env: NodeJS.ProcessEnv) {
  const [cmd, ...rest] = agentArgv('--config', cfg, 'run');
  const child = spawn(cmd!, rest, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: { msg: string; time: string; file?: string }[] = [];
  const waiters: { pred: (l: { msg: string; file?: string }) => boolean; resolve: (l: { msg: string; time: string }) => void }[] = [];
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      lines.push(l);
      for (const w of [...waiters]) {
        if (!w.pred(l)) continue;
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  });
  return {
    child,
    lines,
    wait: (pred: (l: { msg: string; file?: string }) => boolean) =>
      new Promise<{ msg: string; time: string }>((resolve) => {
        const seen = lines.find(pred);
        if (seen) return resolve(seen);
        waiters.push({ pred, resolve });
      }),
    /** utime + stime from /proc, in seconds (USER_HZ is 100 on Linux) */
    cpuSeconds: () => {
      const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    },
    stop: () => new Promise<void>((r) => (child.kill('SIGTERM'), child.once('exit', () => r()))),
  };
}

async function detectionAndIdle(sink: Endpoint, work: string): Promise<string[]> {
  const out: string[] = [];
  const dir = path.join(work, 'watch');
  await mkdir(dir);
  const cfg = path.join(work, 'daemon.yaml');
  await writeFile(
    cfg,
    `node: latency\ncluster: bench\nsnapshotDir: ${dir}\nstateDir: ${work}/daemon-state\ns3:\n  bucket: ${sink.bucket}\n  endpoint: ${sink.url}\nmetrics:\n  enabled: false\n`,
  );
  const src = await etcdSnapshot(ROOT, 16 * MiB);
  const d = daemon(cfg, baseEnv(sink));
  await d.wait((l) => l.msg === 'watching snapshot directory');
  const latencies: number[] = [];
  for (let i = 0; i < 20; i++) {
    // a finished snapshot renamed into place, as etcdctl does
    const part = path.join(dir, `snap-${i}.db.part`);
    await copyFile(src, part);
    const t0 = Date.now();
    await rename(part, path.join(dir, `snap-${i}.db`));
    const l = await d.wait((x) => x.msg === 'snapshot complete; queued for upload' && String(x.file).endsWith(`snap-${i}.db`));
    latencies.push(Date.parse(l.time) - t0);
    await d.wait((x) => x.msg === 'snapshot shipped and confirmed' && String(x.file).endsWith(`snap-${i}.db`));
  }
  await d.stop();
  out.push(
    '',
    `Detection latency (rename of a finished 16 MiB snapshot → upload start), 20 renames: median ${median(latencies)} ms, max ${Math.max(...latencies)} ms`,
  );

  // 500 shipped snapshots present, then 60 s of doing nothing
  const many = path.join(work, 'many');
  await mkdir(many);
  const fixture = path.join(ROOT, 'test/fixtures/etcd-small.db');
  for (let i = 0; i < 500; i++) await copyFile(fixture, path.join(many, `etcd-${String(i).padStart(3, '0')}.db`));
  await writeFile(cfg, (await readFile(cfg, 'utf8')).replace(`snapshotDir: ${dir}`, `snapshotDir: ${many}`).replace('node: latency', 'node: idle'));
  const idle = daemon(cfg, baseEnv(sink));
  const done = (l: { msg: string }): boolean => l.msg === 'snapshot shipped and confirmed' || l.msg === 'snapshot already in S3; not sent again';
  while (idle.lines.filter(done).length < 500) await new Promise((r) => setTimeout(r, 500));
  // the first retention pass runs a minute after start: a one-off, not idling
  await idle.wait((l) => l.msg === 'retention pass finished');
  const c0 = idle.cpuSeconds();
  const IDLE_S = QUICK ? 20 : 60;
  await new Promise((r) => setTimeout(r, IDLE_S * 1000));
  const c1 = idle.cpuSeconds();
  await idle.stop();
  out.push(
    `Idle CPU with 500 shipped snapshots present, over ${IDLE_S} s after the first retention pass (one full rescan inside): ${(((c1 - c0) / IDLE_S) * 100).toFixed(3)} % of one core`,
  );
  return out;
}

async function rssBySize(sink: Endpoint, work: string, oneGiB: string): Promise<string[]> {
  const eightGiB = await etcdSnapshot(ROOT, 8 * GiB);
  const agent = TOOLS[0]!;
  const one = await agent.cmd(sink, oneGiB, `rss-1g-${Date.now()}`, work);
  const eight = await agent.cmd(sink, eightGiB, `rss-8g-${Date.now()}`, work);
  const a = await measure(one.argv, one.env);
  const b = await measure(eight.argv, eight.env);
  const gib8 = (await stat(eightGiB)).size / GiB;
  return [
    '',
    `Peak RSS, agent upload to the sink: 1 GiB ${a.rssMiB.toFixed(0)} MiB, 8 GiB ${b.rssMiB.toFixed(0)} MiB (${(((b.rssMiB - a.rssMiB) / a.rssMiB) * 100).toFixed(1)} %); 8 GiB at ${((gib8 * 1024) / b.wall).toFixed(0)} MiB/s, ${(b.cpu / gib8).toFixed(2)} CPU s/GiB`,
  ];
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'etcd-backup-bench-'));
  const cpu = /model name\s*:\s*(.*)/.exec(await readFile('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown CPU';
  const header = [
    `etcd-backup-agent benchmark, ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores (${cpu}), ${(os.totalmem() / GiB).toFixed(0)} GiB RAM, agent: ${agentRuntime()}, ${QUICK ? 'quick' : `${ROUNDS} rounds`}`,
  ];
  process.stderr.write(`${header[0]}\nwork dir ${work}\n`);
  const worldDir = path.join(work, 'world');
  const { makePrivateCa, startTlsFront } = await import('../../test/support/tls-front.js');
  const ca = makePrivateCa();
  const sinkProc = await startSink();
  const md5Sink = await startSink(['--md5']);
  const awsSink = await startSink(['--crc32']);
  const tlsSink = await startSink(['--crc32', '--tls', ca.certFile, ca.keyFile]);
  let front: { url: string; close(): Promise<void> } | undefined;
  try {
    const sinkKeys = { bucket: 'bench', accessKey: 'benchaccesskey', secretKey: 'benchsecretkey0000000000' };
    const sink: Endpoint = {
      name: 'sink',
      title: 'Sink (discards bodies; checks no checksum, like RGW for CRC32)',
      url: sinkProc.url,
      md5Url: md5Sink.url,
      ...sinkKeys,
    };
    const awsLike: Endpoint = { name: 'sink-crc', title: 'Sink that refuses a wrong CRC32, as AWS S3 does', url: awsSink.url, ...sinkKeys };
    const sinkTls: Endpoint = {
      name: 'sink-tls',
      title: 'Sink over HTTPS (private CA) that refuses a wrong CRC32, as AWS S3 does',
      url: tlsSink.url,
      caFile: ca.caFile,
      ...sinkKeys,
    };
    const files = new Map<number, string>();
    for (const size of DAEMON_ONLY ? [GiB] : SIZES) files.set(size, await etcdSnapshot(ROOT, size));
    const lines = [...header];
    // the daemon figures need only the sink: RGW (a minute to start, GiBs of memory) only for the transfers
    if (!DAEMON_ONLY) {
      execFileSync('bash', [path.join(ROOT, 'scripts/world/rgw-up.sh'), worldDir], {
        env: { ...process.env, OSD_BACKEND: 'bluestore', BLUESTORE_BYTES: String(40 * GiB) },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      const env = Object.fromEntries(
        (await readFile(path.join(worldDir, 'env'), 'utf8'))
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(/=(.*)/s).slice(0, 2) as [string, string]),
      );
      const keys = { bucket: 'bench', accessKey: env.AWS_ACCESS_KEY_ID!, secretKey: env.AWS_SECRET_ACCESS_KEY! };
      const rgw: Endpoint = {
        name: 'rgw',
        title: 'Ceph RGW 16 (bluestore), plain HTTP: checks the signed payload, ignores CRC32',
        url: env.S3_ENDPOINT!,
        ...keys,
      };
      const u = new URL(rgw.url);
      front = await startTlsFront(ca, { host: u.hostname, port: Number(u.port) });
      const rgwTls: Endpoint = { name: 'rgw-tls', title: 'Ceph RGW 16 behind a TLS front (private CA), HTTPS', url: front.url, caFile: ca.caFile, ...keys };
      await (await s3(rgw)).create();
      await makeSealing(work);
      const all = ['agent', 'agent-age', 'aws', 'rclone', 's3cmd', 'curl'];
      const scenarios: Scenario[] = [
        { ep: sink, sizes: SIZES, tools: all },
        { ep: awsLike, sizes: [GiB], tools: ['agent', 'agent-age', 'aws', 'curl'] },
        { ep: rgw, sizes: [GiB], tools: ['agent', 'agent-age', 'aws', 'rclone', 'curl'] },
        { ep: rgwTls, sizes: [GiB], tools: ['agent', 'aws', 'curl'] },
        { ep: sinkTls, sizes: [GiB], tools: ['agent', 'aws', 'curl'] },
      ];
      lines.push(...(await transferBench(scenarios, files, work)));
    }
    lines.push(...(await detectionAndIdle(sink, work)));
    lines.push(...(await rssBySize(sink, work, files.get(GiB)!)));
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    sinkProc.stop();
    md5Sink.stop();
    awsSink.stop();
    tlsSink.stop();
    await front?.close();
    try {
      execFileSync('bash', [path.join(ROOT, 'scripts/world/rgw-down.sh'), worldDir], { stdio: 'ignore' });
    } catch {
      /* already down */
    }
    await rm(work, { recursive: true, force: true });
  }
}

await main();
