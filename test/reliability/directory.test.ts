// Fault 5: the snapshot directory under stress: 500 snapshots at once, 10,000 unrelated files, and
// permissions that keep the agent (running as an unprivileged user) out until an operator fixes them.
import { chmod, chown, copyFile, mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { freshSnapshot, nodePrefix, pick, Recorder, setupEnv, testDirs, type AgentProcess, type Env, type RealSnapshot } from './harness.js';
import { checkInvariants, checkShippedOnce, MSG, type ExpectedSnapshot } from './invariants.js';

const rec = new Recorder('directory');
let env: Env;
const NOBODY = 65534;

beforeAll(async () => {
  env = await setupEnv('directory');
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

/** Resolves once the agent has logged `msg` n times in all. */
function nth(agent: AgentProcess, msg: string, n: number, timeoutMs: number): Promise<unknown> {
  let seen = 0;
  return agent.waitFor((l) => l.msg === msg && ++seen >= n, timeoutMs, `${n} × "${msg}"`);
}

/** Polls /healthz while `during` runs; returns the slowest answer in ms (a stuck event loop shows here). */
async function slowestHealth(agent: AgentProcess, during: Promise<unknown>): Promise<number> {
  let done = false;
  let worst = 0;
  void during.finally(() => (done = true));
  const url = agent.metricsUrl.replace('/metrics', '/healthz');
  while (!done) {
    const t0 = performance.now();
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    await res.text();
    worst = Math.max(worst, performance.now() - t0);
    await Promise.race([during, new Promise((r) => setTimeout(r, 100))]);
  }
  await during;
  return worst;
}

function procIo(pid: number): Promise<{ rchar: number; syscr: number }> {
  return readFile(`/proc/${pid}/io`, 'utf8').then((t) => ({ rchar: Number(/rchar: (\d+)/.exec(t)![1]), syscr: Number(/syscr: (\d+)/.exec(t)![1]) }));
}

describe('fault 5: the snapshot directory under stress', () => {
  it('a burst of 500 snapshot files at once', async () => {
    const count = pick(500, 1000);
    const distinct = 10;
    const fault = rec.fault({
      id: 'burst-500',
      category: '5',
      fault: `${count} snapshot files appear at once`,
      how: `${distinct} real etcdctl snapshots (each differs), copied under ${count} distinct names (etcdctl *.db and RKE2 etcd-snapshot-<node>-<ts> names), renamed into the directory together while the agent runs`,
    });
    await fault.run(`${count} files`, async () => {
      const node = 'burst';
      const dirs = await testDirs();
      const staging = path.join(dirs.root, 'staging');
      await mkdir(staging);
      const sources: RealSnapshot[] = [];
      for (let i = 0; i < distinct; i++) sources.push(await freshSnapshot(env.world, path.join(staging, `src-${i}.db`)));
      const expected: ExpectedSnapshot[] = [];
      const ts = Math.floor(Date.now() / 1000);
      for (let i = 0; i < count; i++) {
        const src = sources[i % distinct]!;
        const name = i % 10 === 9 ? `etcd-snapshot-${node}-${ts + i}` : `burst-${String(i).padStart(4, '0')}.db`;
        await copyFile(src.path, path.join(staging, name));
        expected.push({ name, sha256: src.sha256, size: src.size });
      }
      const { agent } = await env.start(dirs, { node, detect: { zipWait: '2s' } });
      const all = nth(agent, MSG.shipped, count, 600_000);
      const t0 = Date.now();
      await Promise.all(expected.map((e) => rename(path.join(staging, e.name), path.join(dirs.snapshots, e.name))));
      const worst = await slowestHealth(agent, all);
      const seconds = (Date.now() - t0) / 1000;
      const rss = agent.peakRssMiB();
      const violations = await checkInvariants({
        world: env.world,
        bucket: env.bucket,
        prefix: nodePrefix(node),
        expected,
        local: { dir: dirs.snapshots, files: expected.map((e) => ({ name: e.name, sha256: e.sha256 })) },
        agent,
        metrics: { uploadsSuccess: count, localSnapshots: count },
      });
      if (rss > 300) violations.push(`peak RSS ${rss.toFixed(0)} MiB during the burst (bound 300 MiB)`);
      if (worst > 2000) violations.push(`/healthz took ${worst.toFixed(0)} ms to answer during the burst (bound 2 s)`);
      await agent.stop();
      return {
        outcome: 'all shipped once',
        violations,
        detail: `${count} shipped in ${seconds.toFixed(0)} s, peak RSS ${rss.toFixed(0)} MiB, slowest /healthz ${worst.toFixed(0)} ms`,
      };
    });
  });

  it('10,000 unrelated files: read once, agent responsive, memory bounded', async () => {
    const count = pick(10_000, 30_000);
    const fault = rec.fault({
      id: 'unrelated-10k',
      category: '5',
      fault: `${count} unrelated files in the snapshot directory`,
      how: `${count} files of 200 random bytes (notes, logs, *.part, dotfiles) in the directory at start, plus 2 real snapshots (one with a name only its content reveals); rescans every 1 s; reads measured in /proc/PID/io over 3 rescans`,
    });
    await fault.run(`${count} files`, async () => {
      const node = 'unrelated';
      const dirs = await testDirs();
      const kinds = ['notes-%.txt', 'app-%.log', 'tmp-%.db.part', '.hidden-%', 'data-%.json'];
      const body = randomBytes(200);
      for (let i = 0; i < count; i += 500) {
        await Promise.all(
          Array.from({ length: Math.min(500, count - i) }, (_, j) =>
            writeFile(path.join(dirs.snapshots, kinds[(i + j) % kinds.length]!.replace('%', String(i + j))), body),
          ),
        );
      }
      const a = await freshSnapshot(env.world, path.join(dirs.snapshots, 'real.db'));
      // no .db, no producer pattern: only sniffing its first bytes finds it
      const b = await freshSnapshot(env.world, path.join(dirs.snapshots, 'backup-of-tuesday'));
      const { agent } = await env.start(dirs, { node, detect: { rescanInterval: '1s' }, log: { level: 'debug' } });
      const shipped = Promise.all([agent.waitMsg(MSG.shipped, 'real.db', 120_000), agent.waitMsg(MSG.shipped, 'backup-of-tuesday', 120_000)]);
      const worst = await slowestHealth(agent, shipped);
      // The start scan reads each unknown file's head once, a few at a time; the measurement starts when a
      // whole rescan interval passes with reads below 2 bytes a file, the loop's own eventfd wake-ups (or after 30 rescans: a
      // rescan that re-reads everything never settles, and is then measured as it is).
      const nextRescan = async (): Promise<void> => {
        const from = agent.lines.length;
        await agent.waitFor((l) => l.msg === 'directory rescanned' && agent.lines.indexOf(l) >= from, 30_000, 'a rescan');
      };
      let io0 = await procIo(agent.child.pid!);
      for (let i = 0; i < 30; i++) {
        await nextRescan();
        const io = await procIo(agent.child.pid!);
        const settled = io.rchar - io0.rchar < count * 2;
        io0 = io;
        if (settled) break;
      }
      let rescans = 0;
      const mark = agent.lines.length;
      await agent.waitFor((l) => l.msg === 'directory rescanned' && agent.lines.indexOf(l) >= mark && ++rescans >= 3, 30_000, '3 rescans');
      const io1 = await procIo(agent.child.pid!);
      const rss = agent.peakRssMiB();
      const violations = await checkInvariants({
        world: env.world,
        bucket: env.bucket,
        prefix: nodePrefix(node),
        expected: [a, b].map((s) => ({ name: path.basename(s.path), sha256: s.sha256, size: s.size })),
        local: { dir: dirs.snapshots, files: [a, b].map((s) => ({ name: path.basename(s.path), sha256: s.sha256 })) },
        agent,
        metrics: { uploadsSuccess: 2, localSnapshots: 2 },
      });
      const left = (await readdir(dirs.snapshots)).length;
      if (left !== count + 2) violations.push(`${count + 2 - left} files disappeared from the directory`);
      const readBytes = io1.rchar - io0.rchar;
      const readCalls = io1.syscr - io0.syscr;
      // Re-reading the unrelated files on each rescan would be ≥ 3 × count × 200 bytes. Read calls are no
      // measure: libuv's thread pool wakes the loop through an eventfd, 8 bytes a read, for every lstat.
      if (readBytes > count * 60)
        violations.push(
          `${readBytes} bytes read (${readCalls} read calls) over 3 rescans of ${count} unrelated 200-byte files: files are read again on every rescan`,
        );
      if (rss > 300) violations.push(`peak RSS ${rss.toFixed(0)} MiB (bound 300 MiB)`);
      if (worst > 2000) violations.push(`/healthz took ${worst.toFixed(0)} ms during the start scan (bound 2 s)`);
      await agent.stop();
      return {
        outcome: 'both snapshots shipped; unrelated files read once, never touched',
        violations,
        detail: `3 rescans: ${readCalls} read calls, ${(readBytes / 1024).toFixed(0)} KiB; peak RSS ${rss.toFixed(0)} MiB; slowest /healthz ${worst.toFixed(0)} ms`,
      };
    });
  });

  it('wrong permissions (agent running as nobody): a clear error and /readyz 503, then recovery once fixed', async () => {
    const fault = rec.fault({
      id: 'wrong-permissions',
      category: '5',
      fault: 'snapshot directory or snapshot file not readable by the agent',
      how: 'agent run as nobody (setpriv); the directory 0700 root (or the snapshot file 0600 root, as etcdctl writes it); then chmod by the "operator"',
    });
    for (const what of ['directory', 'file'] as const) {
      await fault.run(what, async () => {
        const node = `perm-${what}`;
        const dirs = await testDirs();
        await chmod(dirs.root, 0o755);
        await mkdir(dirs.state);
        await chown(dirs.state, NOBODY, NOBODY);
        const snap = await freshSnapshot(env.world, path.join(dirs.snapshots, 'snap.db'));
        await chmod(snap.path, 0o600);
        await chmod(dirs.snapshots, what === 'directory' ? 0o700 : 0o755);
        const { agent } = await env.start(dirs, { node, detect: { rescanInterval: '1s' } }, { uid: NOBODY });
        const violations: string[] = [];
        if (what === 'directory') {
          const err = await agent.waitFor((l) => l.level === 'error' && /not readable by this user/.test(l.msg), 30_000, 'the permission error');
          if (!String(err.msg).includes(dirs.snapshots)) violations.push(`the error does not name the directory: ${err.msg}`);
          await agent.waitMsg('S3 reachable');
          const ready = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
          const body = await ready.text();
          if (ready.status !== 503) violations.push(`/readyz answered ${ready.status} while the directory was unreadable`);
          if (!/not watching/.test(body)) violations.push(`/readyz does not say why: ${body.trim()}`);
          violations.push(
            ...(await checkInvariants({ world: env.world, bucket: env.bucket, prefix: nodePrefix(node), expected: [], agent, metrics: {} })).map(
              (v) => `while unreadable: ${v}`,
            ),
          );
          const up = await agent.metric('etcdbackup_snapshot_directory_up');
          if (up !== 0) violations.push(`etcdbackup_snapshot_directory_up is ${up} while the directory is unreadable`);
        } else {
          const rej = await agent.waitFor(
            (l) => l.msg === MSG.rejected && path.basename(String(l.file)) === 'snap.db',
            30_000,
            'the unreadable snapshot to be reported',
          );
          if (rej.reason !== 'unreadable') violations.push(`reported as ${rej.reason}, not unreadable`);
          if (!/read access/.test(String(rej.detail))) violations.push(`the log line gives no fix: ${rej.detail}`);
        }
        // the operator fixes it
        await chmod(dirs.snapshots, 0o755);
        await chmod(snap.path, 0o644);
        await agent.waitMsg(MSG.shipped, 'snap.db', 60_000);
        violations.push(
          ...(await checkShippedOnce({ world: env.world, bucket: env.bucket, prefix: nodePrefix(node), dir: dirs.snapshots }, 'snap.db', snap, agent, {
            uploadsSuccess: 1,
            rejected: what === 'file' ? { unreadable: 1 } : {},
          })),
        );
        const ready = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
        if (ready.status !== 200) violations.push(`/readyz answered ${ready.status} after the fix`);
        await agent.stop();
        return {
          outcome:
            what === 'directory' ? 'clear error, /readyz 503, directory_up 0; shipped once fixed' : 'reported unreadable with the fix; shipped once fixed',
          violations,
        };
      });
    }
  });
});
