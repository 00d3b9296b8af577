#!/usr/bin/env node
// npm run bench:page-cache: does reading a 4 GiB snapshot push etcd's hot pages out of the page cache?
//
// A 2 GiB "etcd database" is read three times (Linux then keeps it on the active LRU list, as a database
// in use is). Anonymous memory is then taken until the page cache has room for little more than that
// file, so that every new page must push an older one out. Then a cold 4 GiB snapshot is read once — by
// `cat` (the plain case) and by the agent's `upload` to a discarding sink — and `fincore` (util-linux)
// says how much of the database is still cached. Prints figures; asserts nothing.
import { execFileSync, spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const ROOT = path.resolve(import.meta.dirname, '../..');
const { etcdSnapshot } = await import(path.join(ROOT, 'dist/bench/scripts/bench/fixtures.js'));

async function writeRandom(file, bytes) {
  const fh = await open(file, 'w', 0o600);
  const buf = Buffer.allocUnsafe(16 * MiB);
  for (let done = 0; done < bytes; done += buf.length) await fh.write(randomFillSync(buf), 0, Math.min(buf.length, bytes - done));
  await fh.close();
}

/** Pages of `file` in the page cache, as a fraction. */
function cached(file) {
  const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES,SIZE', file], { encoding: 'utf8' }).trim().split(/\s+/).map(Number);
  return out[0] / out[1];
}

const memAvailable = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))[1]) * 1024;

/** A process holding `bytes` of touched anonymous memory until killed. */
async function hog(bytes) {
  const child = spawn(
    process.execPath,
    [
      '--max-old-space-size=64',
      '-e',
      `
    const bufs = []; let left = ${bytes};
    while (left > 0) { const n = Math.min(left, ${256 * MiB}); const b = Buffer.allocUnsafeSlow(n); b.fill(1); bufs.push(b); left -= n; }
    process.stdout.write('held\\n'); setInterval(() => {}, 1 << 30);`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  await new Promise((r) => child.stdout.once('data', r));
  return child;
}

async function main() {
  const work = await mkdtemp(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'page-cache-'));
  const lines = [];
  try {
    const db = path.join(work, 'etcd-member.db');
    const snap = path.join(work, 'snapshots', 'snapshot.db');
    await writeRandom(db, 2 * GiB);
    execFileSync('mkdir', ['-p', path.dirname(snap)]);
    // a real etcd snapshot (the agent checks every bbolt page before it uploads), copied from the bench
    // cache and then dropped from the page cache (GNU dd's nocache advice), so that the read below is cold
    const fixture = await etcdSnapshot(ROOT, 4 * GiB);
    execFileSync('cp', [fixture, snap]);
    execFileSync('sync', [snap]);
    for (const f of [fixture, snap]) execFileSync('dd', [`if=${f}`, 'iflag=nocache', 'count=0', 'status=none']);
    for (let i = 0; i < 3; i++) execFileSync('cat', [db], { stdio: ['ignore', 'ignore', 'inherit'] });
    // leave the page cache room for the database and 512 MiB more
    const take = Math.max(0, memAvailable() - 2 * GiB - 512 * MiB);
    const h = await hog(take);
    try {
      for (let i = 0; i < 2; i++) execFileSync('cat', [db], { stdio: ['ignore', 'ignore', 'inherit'] });
      const before = cached(db);
      lines.push(
        `page cache: ${(memAvailable() / GiB).toFixed(1)} GiB available after holding ${(take / GiB).toFixed(1)} GiB; the 2 GiB database ${(before * 100).toFixed(0)} % cached`,
      );
      execFileSync('cat', [snap], { stdio: ['ignore', 'ignore', 'inherit'] });
      lines.push(`after cat of the 4 GiB snapshot:    database ${(cached(db) * 100).toFixed(0)} % cached, snapshot ${(cached(snap) * 100).toFixed(0)} %`);
      for (let i = 0; i < 2; i++) execFileSync('cat', [db], { stdio: ['ignore', 'ignore', 'inherit'] });
      execFileSync('dd', [`if=${snap}`, 'iflag=nocache', 'count=0', 'status=none']);
      lines.push(`before the agent's read:             database ${(cached(db) * 100).toFixed(0)} % cached, snapshot ${(cached(snap) * 100).toFixed(0)} %`);
      const sink = spawn(process.execPath, [path.join(ROOT, 'dist/bench/scripts/bench/sink.js'), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const url = await new Promise((r) => sink.stdout.once('data', (d) => r(d.toString().trim())));
      const cfg = path.join(work, 'config.yaml');
      await writeFile(
        cfg,
        `node: cache\ncluster: bench\nsnapshotDir: ${path.dirname(snap)}\nstateDir: ${work}/state\ns3:\n  bucket: bench\n  endpoint: ${url}\nmetrics:\n  enabled: false\nlog:\n  level: warn\n`,
      );
      execFileSync(process.execPath, [path.join(ROOT, 'dist/agent/cli/main.js'), '--config', cfg, 'upload', '--quiet', snap], {
        env: { ...process.env, AWS_ACCESS_KEY_ID: 'bench', AWS_SECRET_ACCESS_KEY: 'benchsecretkey00' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      sink.kill();
      lines.push(`after the agent shipped it:          database ${(cached(db) * 100).toFixed(0)} % cached, snapshot ${(cached(snap) * 100).toFixed(0)} %`);
    } finally {
      h.kill();
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
