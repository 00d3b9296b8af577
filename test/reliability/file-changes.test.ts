// Fault 3: the snapshot changes under the agent while it is being uploaded: deleted, truncated,
// replaced by a rename, rewritten in place. Whatever S3 ends up holding must be bytes the agent verified.
import { copyFile, open, readFile, rename, truncate, unlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';
import { bigSnapshot, cleanPrefix, nodePrefix, pick, Recorder, rng, setupEnv, testDirs, type AgentProcess, type Env, type RealSnapshot } from './harness.js';
import { checkInvariants, MSG, type ExpectedSnapshot } from './invariants.js';
import { sha256File } from '../support/snapshots.js';

const rec = new Recorder('file-changes');
let env: Env;
let a: RealSnapshot; // what the file holds when the agent verifies it
let b: RealSnapshot; // another real snapshot the producer puts there instead
let runNo = 0;
const BW = 8 * 1024 * 1024;

beforeAll(async () => {
  env = await setupEnv('file-changes');
  a = await bigSnapshot(24);
  b = await bigSnapshot(24, 1);
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

type Change = 'delete' | 'truncate' | 'rename-over' | 'rewrite-in-place' | 'rewrite-same-bytes';
type Hold = 'bandwidth' | 'proxy';

const exp = (name: string, s: RealSnapshot): ExpectedSnapshot => ({ name, sha256: s.sha256, size: s.size });

/**
 * Starts the upload of `a` as snap.db and, mid-upload, makes the change. The upload is kept in flight
 * either by upload.bandwidthLimit (the stream path; the change lands at a random fraction) or, without a
 * limit (the pooled-part path), by a proxy that holds the connection while the change is made.
 */
async function changeMidUpload(change: Change, hold: Hold, frac: number): Promise<{ agent: AgentProcess; node: string; dir: string; shippedBefore: boolean }> {
  const node = `change-${++runNo}`;
  const dirs = await testDirs();
  const target = new URL(env.world.s3.endpoint);
  let proxy: TcpProxy | undefined;
  if (hold === 'proxy') proxy = await startProxy({ target: { host: target.hostname, port: Number(target.port) } });
  // no periodic rescan to paper over a change event the agent dropped
  const overrides = {
    node,
    detect: { rescanInterval: '1h', settleTimeout: '2s', pollInterval: '200ms' },
    ...(proxy ? { s3: { endpoint: proxy.url } } : { upload: { bandwidthLimit: String(BW) } }),
  };
  const { agent } = await env.start(dirs, overrides);
  const file = path.join(dirs.snapshots, 'snap.db');
  try {
    await agent.waitMsg('S3 reachable');
    const reached = proxy?.bytesUpReached(Math.floor(frac * a.size));
    // a copy with an inode of its own (the change must not reach the cached original), renamed in as etcdctl does
    await copyFile(a.path, `${file}.part`);
    await rename(`${file}.part`, file);
    await agent.waitMsg(MSG.queued, 'snap.db');
    if (proxy) {
      await reached;
      await proxy.setMode('blackhole');
    } else await new Promise((r) => setTimeout(r, (frac * a.size * 1000) / BW));
    const shippedBefore = agent.lines.some((l) => l.msg === MSG.shipped);
    switch (change) {
      case 'delete':
        await unlink(file);
        break;
      case 'truncate':
        await truncate(file, Math.floor(a.size / 2));
        break;
      case 'rename-over': {
        await copyFile(b.path, `${file}.part`);
        await rename(`${file}.part`, file);
        break;
      }
      case 'rewrite-in-place':
      case 'rewrite-same-bytes': {
        const bytes = await readFile(change === 'rewrite-in-place' ? b.path : a.path);
        const fh = await open(file, 'r+');
        await fh.write(bytes, 0, bytes.length, 0);
        await fh.truncate(bytes.length);
        await fh.close();
        break;
      }
    }
    await proxy?.setMode('pass');
    return { agent, node, dir: dirs.snapshots, shippedBefore };
  } finally {
    if (proxy) void agentDone(agent).then(() => proxy.close());
  }
}

const agentDone = (agent: AgentProcess): Promise<unknown> => agent.exited;

describe('fault 3: the snapshot changes while it is uploaded', () => {
  const cases: { change: Change; fault: string; how: string }[] = [
    { change: 'delete', fault: 'snapshot deleted while it is uploaded', how: 'unlink(2) of the file at a random point of its upload' },
    { change: 'truncate', fault: 'snapshot truncated while it is uploaded', how: 'truncate(2) to half its size at a random point of its upload' },
    {
      change: 'rename-over',
      fault: 'snapshot replaced by another (rename over it) while it is uploaded',
      how: 'another real snapshot written to snap.db.part and renamed over snap.db at a random point of the upload',
    },
    {
      change: 'rewrite-in-place',
      fault: 'snapshot rewritten in place with other content while it is uploaded',
      how: 'another real snapshot written over the same file (same inode) at a random point of the upload',
    },
    {
      change: 'rewrite-same-bytes',
      fault: 'snapshot rewritten in place byte for byte while it is uploaded',
      how: 'the same bytes written over the same file (mtime changes, content does not) at a random point of the upload',
    },
  ];
  for (const c of cases) {
    it(c.fault, async () => {
      const runs = pick(2, 5);
      const r = rng(`change-${c.change}`);
      const fault = rec.fault({
        id: `file-${c.change}`,
        category: '3',
        fault: c.fault,
        how: `${c.how}; ${(a.size / 2 ** 20).toFixed(0)} MiB etcdctl snapshot, kept in flight by upload.bandwidthLimit 8MiB or, on the pooled-part path, by a proxy holding the connection while the file changes`,
      });
      for (let i = 0; i < runs; i++) {
        const hold: Hold = i % 2 === 0 ? 'bandwidth' : 'proxy';
        const frac = r.between(0.1, 0.8);
        await fault.run(`run ${i + 1} (${hold}, at ${(frac * 100).toFixed(0)} %)`, async () => {
          const { agent, node, dir, shippedBefore } = await changeMidUpload(c.change, hold, frac);
          const prefix = nodePrefix(node);
          const base = { world: env.world, bucket: env.bucket, prefix, agent };
          let violations: string[];
          let outcome: string;
          const shippedA = (): boolean => agent.lines.some((l) => l.msg === MSG.shipped && l.sha256 === a.sha256);
          switch (c.change) {
            case 'delete': {
              // the agent holds the verified file open: those bytes are still a good backup
              await agent.waitMsg(MSG.shipped, 'snap.db', 60_000);
              violations = await checkInvariants({ ...base, expected: [exp('snap.db', a)], metrics: { uploadsSuccess: 1, localSnapshots: 0 } });
              outcome = 'the verified bytes were shipped from the open file; the agent forgot the file';
              break;
            }
            case 'truncate': {
              await agent.waitFor((l) => l.msg === MSG.rejected && path.basename(String(l.file)) === 'snap.db', 60_000, 'snap.db rejected as truncated');
              const now = { name: 'snap.db', sha256: await sha256File(path.join(dir, 'snap.db')) };
              const shipped = shippedA();
              violations = await checkInvariants({
                ...base,
                expected: shipped ? [exp('snap.db', a)] : [],
                local: { dir, files: [now] },
                metrics: { uploadsSuccess: shipped ? 1 : 0, rejected: { truncated: 1 }, failuresAtLeast: shipped ? {} : { changed: 1 }, localSnapshots: 1 },
              });
              outcome = shipped
                ? 'finished before the truncation; the truncated file was then rejected and kept'
                : 'upload stopped (changed), nothing in S3; the truncated file was rejected and kept';
              break;
            }
            case 'rename-over': {
              await agent.waitFor((l) => l.msg === MSG.shipped && l.sha256 === b.sha256, 60_000, 'the new snapshot to be shipped');
              await agent.waitMsg(MSG.shipped, 'snap.db', 60_000);
              const both = [exp('snap.db', a), exp('snap.db', b)];
              violations = await checkInvariants({
                ...base,
                expected: both,
                local: { dir, files: [{ name: 'snap.db', sha256: b.sha256 }] },
                metrics: { uploadsSuccess: 2, localSnapshots: 1 },
              });
              outcome = 'the old file (held open) and its replacement both shipped once, side by side';
              break;
            }
            case 'rewrite-in-place':
            case 'rewrite-same-bytes': {
              const final = c.change === 'rewrite-in-place' ? b : a;
              await agent.waitFor(
                (l) => (l.msg === MSG.shipped || l.msg === 'snapshot already in S3; not sent again') && l.sha256 === final.sha256,
                60_000,
                'the rewritten snapshot to be shipped',
              );
              const shipped = c.change === 'rewrite-in-place' && shippedA();
              const expected = shipped ? [exp('snap.db', a), exp('snap.db', final)] : [exp('snap.db', final)];
              const stopped = agent.lines.some((l) => l.msg === MSG.changed);
              violations = await checkInvariants({
                ...base,
                expected,
                local: { dir, files: [{ name: 'snap.db', sha256: final.sha256 }] },
                metrics: { localSnapshots: 1, failuresAtLeast: shippedA() ? {} : { changed: 1 } },
              });
              if (!stopped && !shippedBefore && !shippedA()) violations.push('the in-place change was not noticed during the upload');
              outcome = stopped
                ? 'upload stopped (changed), verified again, the final content shipped once'
                : 'finished before the rewrite; the rewritten content shipped once';
              break;
            }
          }
          await agent.stop();
          await cleanPrefix(env, prefix);
          return { outcome, violations };
        });
      }
    });
  }
});
