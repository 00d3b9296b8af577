// CPU cost of the whole upload pass (`etcd-backup-agent upload`: read, trailer hash, zip CRC, bbolt pages,
// part checksums, send) with `verify.beforeUpload` on and off, next to `aws s3 cp` of the same file, all
// against the discarding sink (scripts/bench/sink.ts), alternated round by round. Not a test.
//
//   npm run build && npx tsc -p tsconfig.bench.json
//   node scripts/bench/before-upload.mjs SNAPSHOT [--rounds 3]
//
// CPU is user + system time of the whole process (GNU time), so process start and the SDK are included.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const AGENT = path.join(ROOT, 'dist/agent/cli/main.js');
const SINK = path.join(ROOT, 'dist/bench/scripts/bench/sink.js');
const argv = process.argv.slice(2);
const file = argv[0];
const rounds = Number(argv[argv.indexOf('--rounds') + 1] || 3) || 3;
if (!file) throw new Error('usage: before-upload.mjs SNAPSHOT [--rounds N]');
const gib = statSync(file).size / 2 ** 30;

const env = {
  PATH: process.env.PATH,
  HOME: os.tmpdir(),
  AWS_ACCESS_KEY_ID: 'bench',
  AWS_SECRET_ACCESS_KEY: 'benchbenchbench',
  AWS_REGION: 'us-east-1',
  AWS_DEFAULT_REGION: 'us-east-1',
  AWS_EC2_METADATA_DISABLED: 'true',
};

function measure(args) {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'BENCHTIME %e %U %S %M', ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) => {
      const m = /BENCHTIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`${args[0]} failed (${code}): ${err.slice(-600)}`));
      resolve({ wall: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), rss: Number(m[4]) / 1024 });
    });
  });
}

const sink = spawn(process.execPath, [SINK, '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((r) => sink.stdout.once('data', (d) => r(d.toString().trim())));
const work = mkdtempSync(path.join(os.tmpdir(), 'bench-before-upload-'));
let n = 0;
const agent = (beforeUpload, s3extra = '') => {
  const dir = path.join(work, `a${++n}`);
  const cfg = `${dir}.yaml`;
  writeFileSync(
    cfg,
    `node: n${n}\ncluster: bench\nsnapshotDir: ${path.dirname(file)}\nstateDir: ${dir}\ns3:\n  bucket: bench\n  endpoint: ${url}\n${s3extra}verify:\n  beforeUpload: ${beforeUpload}\nmetrics:\n  enabled: false\nlog:\n  level: warn\n`,
  );
  return [process.execPath, AGENT, '--config', cfg, 'upload', '--quiet', file];
};
const tools = {
  'agent, verify.beforeUpload: true': () => agent(true),
  'agent, verify.beforeUpload: false': () => agent(false),
  // parts proven by a CRC32 header instead of the signed payload's SHA-256 (servers that check it)
  'agent crc32, beforeUpload: true': () => agent(true, '  checksum: when_supported\n'),
  'agent crc32, beforeUpload: false': () => agent(false, '  checksum: when_supported\n'),
  'aws s3 cp': () => ['aws', '--endpoint-url', url, 's3', 'cp', '--no-progress', '--only-show-errors', file, `s3://bench/aws-${++n}`],
};
const samples = Object.fromEntries(Object.keys(tools).map((k) => [k, []]));
try {
  for (let r = 0; r < rounds; r++) for (const [name, cmd] of Object.entries(tools)) samples[name].push(await measure(cmd()));
} finally {
  sink.kill();
  rmSync(work, { recursive: true, force: true });
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`${file}: ${(gib * 1024).toFixed(0)} MiB, ${rounds} rounds, load average ${os.loadavg()[0].toFixed(1)}`);
const aws = median(samples['aws s3 cp'].map((s) => s.cpu)) / gib;
for (const [name, s] of Object.entries(samples)) {
  const cpu = median(s.map((x) => x.cpu)) / gib;
  console.log(
    `${name.padEnd(36)} ${cpu.toFixed(2)} CPU s/GiB (${s.map((x) => (x.cpu / gib).toFixed(2)).join(' ')}), ${((gib * 1024) / median(s.map((x) => x.wall))).toFixed(0)} MiB/s, peak RSS ${median(s.map((x) => x.rss)).toFixed(0)} MiB, ${(cpu / aws).toFixed(2)} × aws`,
  );
}
