// CPU cost of the deep bbolt check (agent/snapshot/bbolt.ts) alone, on a real etcd snapshot. Not a test.
//
//   npm run build
//   node scripts/bench/bbolt-deep.mjs --make /tmp/etcd-1g.db [--gib 1] [--small]   # a real snapshot from a throwaway etcd
//     (values of 0.6-70 KiB, many spanning overflow pages; --small: 0.3-2 KiB values, Kubernetes-like, written
//     100 per transaction)
//   node --expose-gc scripts/bench/bbolt-deep.mjs /tmp/etcd-1g.db [--rounds 3] [--stream]   # CPU s/GiB with and
//     without the hash, and the memory the checker retains
//
// The file is read into memory first, so only the checker is timed (process CPU time, one thread). It is
// fed in 16 MiB chunks, as the upload pipeline reads; `--chunk BYTES` changes that. With `--stream` (implied
// for files over 2 GiB, which Node cannot read into one buffer) each round reads the file from disk through
// one reused chunk instead: the times then include the reads, and the process's peak RSS is the checker's
// memory plus one chunk, as in the agent. `--no-etcdctl` skips the closing `etcdctl snapshot status`
// (etcdctl maps the whole file, so its RSS, which counts in ours once waited for, is the file's size).
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  if (i < 0) return dflt;
  const v = argv[i + 1];
  argv.splice(i, 2);
  return v;
};

const flag = (name) => {
  const i = argv.indexOf(name);
  if (i >= 0) argv.splice(i, 1);
  return i >= 0;
};

const make = opt('--make');
const small = argv.includes('--small');
if (make) await makeSnapshot(make, Number(opt('--gib', '1')), small);
else {
  const rounds = Number(opt('--rounds', '3'));
  const chunk = Number(opt('--chunk', String(16 << 20)));
  const stream = flag('--stream');
  const noEtcdctl = flag('--no-etcdctl');
  await bench(argv[0], rounds, chunk, stream, noEtcdctl);
}

async function bench(file, rounds, chunkSize, stream, noEtcdctl) {
  if (!file) throw new Error('usage: bbolt-deep.mjs SNAPSHOT | --make OUT');
  const { BboltChecker } = await import(path.join(ROOT, 'dist/agent/snapshot/bbolt.js'));
  const { openSync, readSync, closeSync } = await import('node:fs');
  const size = statSync(file).size - 32;
  stream ||= size + 32 > 2 ** 31 - 1;
  /** Feeds checker c the body: from memory, or read from disk through one reused chunk. */
  let feed;
  if (stream) {
    const chunk = Buffer.allocUnsafe(chunkSize);
    feed = (c) => {
      const fd = openSync(file, 'r');
      try {
        for (let pos = 0; pos < size;) {
          const n = readSync(fd, chunk, 0, Math.min(chunkSize, size - pos), pos);
          if (n <= 0) throw new Error(`${file}: short read at ${pos}`);
          c.update(chunk.subarray(0, n));
          pos += n;
        }
      } finally {
        closeSync(fd);
      }
    };
  } else {
    const body = readFileSync(file).subarray(0, size);
    feed = (c) => {
      for (let i = 0; i < body.length; i += chunkSize) c.update(body.subarray(i, i + chunkSize));
    };
  }
  const gib = size / 2 ** 30;
  console.log(`${file}: ${(size / 2 ** 20).toFixed(0)} MiB body, chunks of ${chunkSize} bytes${stream ? ', streamed from disk each round' : ''}`);
  for (const hash of [false, true]) {
    const samples = [];
    let facts;
    for (let r = 0; r < rounds; r++) {
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const c = new BboltChecker({ hash, bodySize: size });
      feed(c);
      const res = c.finish();
      const wall = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      if (!res.ok) throw new Error(`check failed: ${res.detail}`);
      facts = res.facts;
      samples.push({ cpu: (cpu.user + cpu.system) / 1e6, wall });
    }
    samples.sort((a, b) => a.cpu - b.cpu);
    const med = samples[Math.floor(samples.length / 2)];
    const rss = process.memoryUsage().rss / 2 ** 20;
    console.log(
      `hash=${hash}: median of ${rounds}: ${(med.cpu / gib).toFixed(3)} CPU s/GiB, ${(med.wall / gib).toFixed(3)} wall s/GiB` +
        ` (all: ${samples.map((x) => (x.cpu / gib).toFixed(3)).join(' ')}); rss ${rss.toFixed(0)} MiB`,
    );
    const { buckets: _buckets, ...rest } = facts;
    console.log(`  facts: ${JSON.stringify(rest)}`);
  }
  // Memory: the file streamed through one reused buffer; the checker's state is what its finished instance
  // retains (measured as memory with it minus memory once it is dropped, after full collections).
  const gc = () => {
    for (let i = 0; i < 3; i++) globalThis.gc?.();
  };
  const mem = () => {
    const m = process.memoryUsage();
    return m.heapUsed + m.arrayBuffers;
  };
  const fd = openSync(file, 'r');
  const chunk = Buffer.allocUnsafe(chunkSize);
  let c = new BboltChecker({ hash: true, bodySize: size });
  for (let pos = 0; pos < size;) {
    const n = readSync(fd, chunk, 0, Math.min(chunkSize, size - pos), pos);
    c.update(chunk.subarray(0, n));
    pos += n;
  }
  const res = c.finish();
  closeSync(fd);
  gc();
  const withState = mem();
  // eslint-disable-next-line no-useless-assignment -- dropping the reference is what lets gc() free the checker
  c = null;
  gc();
  const state = withState - mem();
  const pages = size / (res.ok ? res.facts.pageSize : 4096);
  console.log(
    globalThis.gc
      ? `streamed from disk: the finished checker retains ${(state / 2 ** 20).toFixed(1)} MiB for ${pages} pages (${(state / pages).toFixed(0)} B/page)`
      : 'memory: run node with --expose-gc to measure what the checker retains',
  );
  // before etcdctl runs: a waited-for child's peak counts in the parent's (and in /usr/bin/time's) peak RSS
  console.log(`peak RSS of this process: ${(process.resourceUsage().maxRSS / 2 ** 10).toFixed(0)} MiB`);
  if (noEtcdctl) return;
  try {
    const st = JSON.parse(execFileSync('etcdctl', ['snapshot', 'status', '-w', 'json', file], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' }));
    console.log(`  etcdctl snapshot status: ${JSON.stringify(st)}`);
  } catch (err) {
    console.log(`  etcdctl snapshot status unavailable: ${err.message.split('\n')[0]}`);
  }
}

async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A throwaway etcd with ~`gib` GiB of Kubernetes-shaped values, history, a lease and a compaction. */
async function makeSnapshot(out, gib, small) {
  const work = mkdtempSync(path.join(os.tmpdir(), 'bbolt-bench-'));
  const cport = await freePort();
  let pport = await freePort();
  while (pport === cport) pport = await freePort();
  const client = `http://127.0.0.1:${cport}`;
  const peer = `http://127.0.0.1:${pport}`;
  const etcd = spawn(
    'etcd',
    [
      '--name',
      'bench',
      '--data-dir',
      path.join(work, 'data'),
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `bench=${peer}`,
      '--quota-backend-bytes',
      String(8 * 2 ** 30),
      '--log-level',
      'error',
    ],
    { stdio: 'ignore' },
  );
  const post = async (p, body) => {
    const res = await fetch(`${client}${p}`, { method: 'POST', body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${p}: HTTP ${res.status} ${await res.text()}`);
    return res.json();
  };
  const b64 = (s) => Buffer.from(s).toString('base64');
  try {
    for (let i = 0; ; i++) {
      try {
        await post('/v3/kv/range', { key: b64('x') });
        break;
      } catch (err) {
        if (i > 100) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const lease = await post('/v3/lease/grant', { TTL: 3600 });
    const sizes = small ? [300, 700, 1100, 1500, 2000] : [600, 1800, 3500, 9000, 30000, 70000];
    const perTxn = small ? 100 : 1;
    const target = gib * 2 ** 30;
    const pool = randomBytes(1 << 20).toString('base64');
    let written = 0;
    let n = 0;
    let compacted = false;
    const one = async () => {
      while (written < target) {
        const i = n++;
        const size = sizes[i % sizes.length];
        written += size;
        // a third of the puts overwrite an older key: history for the compaction to free
        const id = i % 3 === 2 ? Math.floor(i / 2) : i;
        const key = `/registry/pods/ns-${id % 40}/pod-${String(id).padStart(8, '0')}`;
        const at = (i * 7919) % (pool.length - size);
        const body = { key: b64(key), value: Buffer.from(pool.slice(at, at + size)).toString('base64') };
        if (i % 97 === 0) body.lease = lease.ID;
        if (perTxn === 1) await post('/v3/kv/put', body);
        else {
          // one transaction of distinct keys: this key and the next perTxn - 1
          const ops = [{ requestPut: body }];
          for (let k = 1; k < perTxn; k++) {
            const j = n++;
            written += sizes[j % sizes.length];
            const at2 = (j * 7919) % (pool.length - sizes[j % sizes.length]);
            ops.push({
              requestPut: {
                key: b64(`/registry/configmaps/ns-${j % 40}/cm-${String(j).padStart(9, '0')}`),
                value: Buffer.from(pool.slice(at2, at2 + sizes[j % sizes.length])).toString('base64'),
              },
            });
          }
          await post('/v3/kv/txn', { success: ops });
        }
        if (!compacted && written > target / 2) {
          compacted = true;
          const { header } = await post('/v3/kv/range', { key: b64('x') });
          await post('/v3/kv/compaction', { revision: String(Math.floor(Number(header.revision) / 2)), physical: true });
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, one));
    execFileSync('etcdctl', ['--endpoints', client, 'snapshot', 'save', out], { env: { ...process.env, ETCDCTL_API: '3' }, stdio: 'ignore' });
    console.log(`${out}: ${statSync(out).size} bytes, ${n} puts`);
  } finally {
    etcd.kill('SIGTERM');
    await new Promise((r) => etcd.once('exit', r));
    rmSync(work, { recursive: true, force: true });
  }
}
