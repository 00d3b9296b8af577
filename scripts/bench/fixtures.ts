// Real etcd snapshots for the benchmark, made once and kept in the cache (~/.cache/etcd-backup-agent/bench,
// or $ETCD_BACKUP_AGENT_CACHE/bench): a throwaway etcd on 127.0.0.1 is filled with 1 MiB random values until
// its database reaches the size asked for, then `etcdctl snapshot save` writes the file. A synthetic
// snapshot-shaped file would not do: the agent checks every bbolt page before it uploads and refuses one.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const MiB = 1024 ** 2;

function cacheDir(): string {
  return path.join(process.env.ETCD_BACKUP_AGENT_CACHE ?? path.join(os.homedir(), '.cache/etcd-backup-agent'), 'bench');
}

/** The size of etcd's backend database, as its status reports it. */
async function dbSize(endpoint: string): Promise<number> {
  const res = await fetch(`${endpoint}/v3/maintenance/status`, { method: 'POST', body: '{}' });
  if (!res.ok) throw new Error(`etcd status: ${res.status} ${await res.text()}`);
  return Number(((await res.json()) as { dbSize?: string }).dbSize ?? 0);
}

/** Puts `count` values of 1 MiB (random, so nothing downstream can compress them) from six streams. */
async function put(endpoint: string, first: number, count: number): Promise<void> {
  let next = first;
  const end = first + count;
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      while (next < end) {
        const i = next++;
        const body = JSON.stringify({
          key: Buffer.from(`/registry/bench/${String(i).padStart(7, '0')}`).toString('base64'),
          value: randomBytes(MiB).toString('base64'),
        });
        const res = await fetch(`${endpoint}/v3/kv/put`, { method: 'POST', body });
        if (!res.ok) throw new Error(`etcd put: ${res.status} ${await res.text()}`);
        await res.arrayBuffer();
      }
    }),
  );
}

/** A real etcd snapshot of at least `bytes` bytes (within a few MiB), from the cache or made now. */
export async function etcdSnapshot(root: string, bytes: number): Promise<string> {
  const file = path.join(cacheDir(), `etcd-${Math.round(bytes / MiB)}m.db`);
  try {
    if ((await stat(file)).size >= bytes) return file;
  } catch {
    /* not made yet */
  }
  await mkdir(cacheDir(), { recursive: true });
  const dir = await mkdtemp(path.join(process.env.BENCH_DIR ?? '/var/tmp', 'etcd-bench-fixture-'));
  const started = Date.now();
  process.stderr.write(`making a ${(bytes / MiB).toFixed(0)} MiB etcd snapshot (once; cached in ${cacheDir()})\n`);
  try {
    // the quota above the size; frequent raft snapshots so that the WAL of gigabytes of puts is purged
    const quota = Math.ceil((bytes * 1.5) / MiB) * MiB;
    execFileSync('bash', [path.join(root, 'scripts/world/etcd-up.sh'), dir], {
      env: { ...process.env, ETCD_EXTRA_ARGS: `--quota-backend-bytes=${quota} --snapshot-count=200` },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const endpoint = /ETCDCTL_ENDPOINTS=(.*)/.exec(await readFile(path.join(dir, 'etcd.env'), 'utf8'))![1]!;
    let n = 0;
    for (let size = await dbSize(endpoint); size < bytes; size = await dbSize(endpoint)) {
      const batch = Math.max(1, Math.min(256, Math.ceil((bytes - size) / MiB)));
      await put(endpoint, n, batch);
      n += batch;
    }
    const tmp = `${file}.partial`;
    execFileSync('etcdctl', ['--endpoints', endpoint, 'snapshot', 'save', tmp], {
      env: { ...process.env, ETCDCTL_API: '3' },
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 30 * 60_000,
    });
    await rename(tmp, file);
    process.stderr.write(`made ${file}: ${((await stat(file)).size / MiB).toFixed(0)} MiB in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    return file;
  } finally {
    try {
      execFileSync('bash', [path.join(root, 'scripts/world/etcd-down.sh'), dir], { stdio: 'ignore' });
    } catch {
      /* already down */
    }
    await rm(dir, { recursive: true, force: true });
  }
}
