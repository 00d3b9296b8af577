// Fault 7: clock jumps. Snapshot files with modification times in the future (a host clock that ran
// ahead, then was corrected) must not break retention: no wrong deletion, no crash, and the freshness
// gauges must not be pinned in the future (that would silence the staleness alerts for good).
import { mkdir, readFile, rename, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { startHttpFaultProxy } from '../support/http-fault-proxy.js';
import { freshSnapshot, metricValue, nodePrefix, pick, Recorder, setupEnv, testDirs, type AgentProcess, type Env, type RealSnapshot } from './harness.js';
import { checkInvariants, MSG } from './invariants.js';

const rec = new Recorder('clock');
let env: Env;

beforeAll(async () => {
  env = await setupEnv('clock');
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

const HOUR = 3_600_000;
const YEAR = 365 * 24 * HOUR;

/** Resolves after `n` more retention passes (finished or incomplete) from now. */
function passes(agent: AgentProcess, n: number): Promise<unknown> {
  const from = agent.lines.length;
  let seen = 0;
  return agent.waitFor(
    (l) => (l.msg === 'retention pass finished' || l.msg === 'retention pass incomplete') && agent.lines.indexOf(l) >= from && ++seen >= n,
    60_000,
    `${n} retention passes`,
  );
}

describe('fault 7: clock jumps', () => {
  it('future mtimes: retention deletes only what the policy says, never unshipped files; gauges stay in the present', async () => {
    const runs = pick(1, 3);
    const fault = rec.fault({
      id: 'future-mtimes',
      category: '7',
      fault: 'snapshot files with modification times in the future (clock jumped ahead)',
      how: 'retention keep 3 / maxAge 4h running every 2 s over real snapshots dated −3 h … −1 min and +1 y, +30 y, year 2400, plus a corrupt one from −5 h; first with uploads refused (503 on every PutObject), then allowed; then a shipped file touched 10 years ahead',
    });
    for (let i = 0; i < runs; i++) {
      await fault.run(`run ${i + 1}`, async () => {
        const node = `clock-${i}`;
        const dirs = await testDirs();
        const staging = path.join(dirs.root, 'staging');
        await mkdir(staging);
        const now = Date.now();
        const dated: Record<string, number> = {
          'old-3h.db': now - 3 * HOUR,
          'old-2h.db': now - 2 * HOUR,
          'old-90m.db': now - 1.5 * HOUR,
          'recent.db': now - 60_000,
          'future-1y.db': now + YEAR,
          'future-30y.db': now + 30 * YEAR,
          'future-2400.db': Date.UTC(2400, 0, 1),
        };
        const snaps = new Map<string, RealSnapshot>();
        for (const [name, mtime] of Object.entries(dated)) {
          const s = await freshSnapshot(env.world, path.join(staging, name));
          await utimes(s.path, mtime / 1000, mtime / 1000);
          snaps.set(name, s);
        }
        const bytes = await readFile(snaps.get('recent.db')!.path);
        bytes[100]! ^= 0xff;
        await writeFile(path.join(staging, 'corrupt-5h.db'), bytes);
        await utimes(path.join(staging, 'corrupt-5h.db'), (now - 5 * HOUR) / 1000, (now - 5 * HOUR) / 1000);

        const proxy = await startHttpFaultProxy({ target: env.world.s3.endpoint });
        try {
          const { agent } = await env.start(dirs, {
            node,
            s3: { endpoint: proxy.url },
            detect: { settleTimeout: '1s' },
            retention: { keep: 3, maxAge: '4h', schedule: '*/2 * * * * *' },
          });
          await agent.waitMsg('S3 reachable');
          proxy.failNext('PutObject', 1_000_000);
          for (const name of [...Object.keys(dated), 'corrupt-5h.db']) await rename(path.join(staging, name), path.join(dirs.snapshots, name));
          const all = [...snaps.entries()].map(([name, s]) => ({ name, sha256: s.sha256, size: s.size }));

          // phase 1: nothing reaches S3, so nothing may go, however old
          for (const name of Object.keys(dated)) await agent.waitMsg(MSG.queued, name);
          await passes(agent, 2);
          const violations = (
            await checkInvariants({
              world: env.world,
              bucket: env.bucket,
              prefix: nodePrefix(node),
              expected: [],
              openUploadsAllowed: true,
              local: { dir: dirs.snapshots, files: all.map(({ name, sha256 }) => ({ name, sha256 })) },
            })
          ).map((v) => `while uploads failed: ${v}`);

          // phase 2: uploads work; the policy may now take the oldest beyond the newest 3 — and nothing else
          proxy.heal();
          for (const name of Object.keys(dated)) await agent.waitMsg(MSG.shipped, name, 60_000);
          // the corrupt file is found out in its upload's read pass; while the store fails, the queue retries
          // the newest snapshot only, so its turn may come only now
          await agent.waitFor((l) => l.msg === MSG.rejected, 60_000, 'the corrupt file to be rejected');
          await agent.waitFor((l) => l.msg === MSG.pruned && path.basename(String(l.file)) === 'old-3h.db', 30_000, 'old-3h.db pruned');
          await passes(agent, 2);
          const local = { dir: dirs.snapshots, files: all.map(({ name, sha256 }) => ({ name, sha256, mayBePruned: name === 'old-3h.db' })) };
          violations.push(
            ...(await checkInvariants({
              world: env.world,
              bucket: env.bucket,
              prefix: nodePrefix(node),
              expected: all,
              local,
              agent,
              metrics: { rejected: { corrupt: 1 }, uploadsSuccess: all.length },
            })),
          );
          const pruned = agent.lines.filter((l) => l.msg === MSG.pruned).map((l) => path.basename(String(l.file)));
          if (pruned.join() !== 'old-3h.db') violations.push(`pruned ${JSON.stringify(pruned)}, the policy allows only old-3h.db`);

          // phase 3: a shipped file touched 10 years ahead; it stays, and the gauges do not follow it into the future
          const touched = now + 10 * YEAR;
          await utimes(path.join(dirs.snapshots, 'recent.db'), touched / 1000, touched / 1000);
          await agent.waitFor(
            (l) => l.msg === 'snapshot already in S3; not sent again' && path.basename(String(l.file)) === 'recent.db',
            30_000,
            'recent.db seen again',
          );
          await passes(agent, 2);
          violations.push(
            ...(
              await checkInvariants({
                world: env.world,
                bucket: env.bucket,
                prefix: nodePrefix(node),
                expected: all,
                local,
                agent,
                metrics: { rejected: { corrupt: 1 }, uploadsSuccess: all.length },
              })
            ).map((v) => `after the touch: ${v}`),
          );
          const text = await agent.metrics();
          const limit = Date.now() / 1000 + 60;
          for (const g of ['etcdbackup_last_snapshot_timestamp_seconds', 'etcdbackup_last_upload_success_timestamp_seconds']) {
            const v = metricValue(text, g) ?? 0;
            if (v > limit) violations.push(`${g} is ${new Date(v * 1000).toISOString()}, in the future: the staleness alerts can never fire`);
          }
          const stopped = await agent.stop();
          if (stopped.code !== 0) violations.push(`agent exited ${stopped.code}`);
          return { outcome: 'nothing deleted while unshipped; then only the file the policy names; future files kept; gauges in the present', violations };
        } finally {
          await proxy.close();
        }
      });
    }
  });
});
