// Fault 1: S3 misbehaving. Unreachable at start and for a long while (refused, or silently stalled);
// radosgw restarted mid-upload; connections reset or stalled mid-part; 503 SlowDown bursts.
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { startHttpFaultProxy, type S3Op } from '../support/http-fault-proxy.js';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';
import {
  bigSnapshot,
  cleanPrefix,
  failureReasons,
  freshSnapshot,
  MODE,
  nodePrefix,
  pick,
  placeSnapshot,
  Recorder,
  rng,
  setupEnv,
  testDirs,
  type AgentProcess,
  type Env,
  type RealSnapshot,
  type TestDirs,
} from './harness.js';
import { checkInvariants, checkShippedOnce, MSG, type MetricExpectation } from './invariants.js';

const rec = new Recorder('s3-faults');
let env: Env;
let medium: RealSnapshot;

/** The invariants after a run that shipped the medium snapshot once, as medium.db on `node`. */
function checkMedium(node: string, dirs: TestDirs, agent: AgentProcess, metrics: MetricExpectation): Promise<string[]> {
  return checkShippedOnce({ world: env.world, bucket: env.bucket, prefix: nodePrefix(node), dir: dirs.snapshots }, 'medium.db', medium, agent, metrics);
}
let big: RealSnapshot;
let runNo = 0;

beforeAll(async () => {
  env = await setupEnv('s3-faults');
  medium = await bigSnapshot(24);
  big = await bigSnapshot(pick(96, 900));
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

const rgwTarget = (): { host: string; port: number } => {
  const u = new URL(env.world.s3.endpoint);
  return { host: u.hostname, port: Number(u.port) };
};

// small timeouts so that a stalled connection is noticed in seconds, not minutes
const FAST_S3 = { requestTimeout: '2s', connectTimeout: '1s' };

describe('fault 1: S3 unreachable, restarted, resetting, stalling, throttling', () => {
  it('S3 unreachable at start and for a long while: snapshots stay pending, then all ship', async () => {
    const outageMs = pick(15_000, 180_000);
    const fault = rec.fault({
      id: 's3-outage-start',
      category: '1',
      fault: "S3 unreachable from the agent's start and for a long outage",
      how: `TCP proxy between agent and RGW refuses connections (ECONNREFUSED) or accepts and forwards nothing (stall) for ${outageMs / 1000} s; snapshots arrive before and during the outage`,
    });
    for (const mode of ['refuse', 'blackhole'] as const) {
      await fault.run(mode, async () => {
        const proxy = await startProxy({ target: rgwTarget() });
        try {
          await proxy.setMode(mode);
          const node = `outage-${mode}-${++runNo}`;
          const dirs = await testDirs();
          const before = await freshSnapshot(env.world, path.join(dirs.snapshots, 'before.db'));
          const t0 = Date.now();
          const { agent } = await env.start(dirs, { node, s3: { endpoint: proxy.url, ...FAST_S3 } });
          await agent.waitMsg('S3 check at start failed; will retry', undefined, 30_000);
          const during = await freshSnapshot(env.world, path.join(dirs.snapshots, 'during.db'));
          await agent.waitMsg(MSG.queued, 'before.db');
          await agent.waitMsg(MSG.queued, 'during.db');
          await agent.waitMsg(MSG.failed, undefined, 30_000);
          const files = [before, during].map((s) => ({ name: path.basename(s.path), sha256: s.sha256 }));
          const inFault = await checkInvariants({
            world: env.world,
            bucket: env.bucket,
            prefix: nodePrefix(node),
            expected: [],
            local: { dir: dirs.snapshots, files },
            agent,
            metrics: { pending: 2, s3Up: 0 },
          });
          const ready = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
          if (ready.status !== 503) inFault.push(`/readyz answered ${ready.status} while S3 was unreachable`);
          // the outage itself: it lasts, whatever the agent does meanwhile
          await new Promise((r) => setTimeout(r, Math.max(0, outageMs - (Date.now() - t0))));
          await proxy.setMode('pass');
          await agent.waitMsg(MSG.shipped, 'before.db', 60_000);
          await agent.waitMsg(MSG.shipped, 'during.db', 60_000);
          const after = await checkInvariants({
            world: env.world,
            bucket: env.bucket,
            prefix: nodePrefix(node),
            expected: [before, during].map((s) => ({ name: path.basename(s.path), sha256: s.sha256, size: s.size })),
            local: { dir: dirs.snapshots, files },
            agent,
            metrics: { uploadsSuccess: 2, failuresAtLeast: mode === 'refuse' ? { network: 1 } : { timeout: 1 } },
          });
          const readyAfter = await fetch(agent.metricsUrl.replace('/metrics', '/readyz'));
          if (readyAfter.status !== 200) after.push(`/readyz answered ${readyAfter.status} after S3 came back`);
          await agent.stop();
          return {
            outcome: `${mode}: pending during the outage, both shipped after (${failureReasons(agent)})`,
            violations: [...inFault.map((v) => `during outage: ${v}`), ...after],
          };
        } finally {
          await proxy.close();
        }
      });
    }
  });

  it('S3 unreachable mid-upload, longer than the SDK retries', async () => {
    const runs = pick(2, 4);
    const outageMs = pick(8_000, 60_000);
    const r = rng('outage-mid-upload');
    const fault = rec.fault({
      id: 's3-outage-mid-upload',
      category: '1',
      fault: 'S3 unreachable in the middle of an upload, for longer than the SDK retries',
      how: `TCP proxy starts refusing connections and resets the open ones at a random byte of a ${(medium.size / 2 ** 20).toFixed(0)} MiB multipart upload, for ${outageMs / 1000} s, then lets them through again`,
    });
    for (let i = 0; i < runs; i++) {
      const node = `outage-mid-${++runNo}`;
      const at = r.int(1024 * 1024, Math.floor(medium.size * 0.9));
      await fault.run(`run ${i + 1} (at ${(at / 2 ** 20).toFixed(1)} MiB)`, async () => {
        const proxy = await startProxy({ target: rgwTarget() });
        try {
          const dirs = await testDirs();
          const { agent } = await env.start(dirs, { node, s3: { endpoint: proxy.url, ...FAST_S3 } });
          await agent.waitMsg('S3 reachable');
          const reached = proxy.bytesUpReached(at);
          await placeSnapshot(medium, path.join(dirs.snapshots, 'medium.db'));
          await reached;
          await proxy.setMode('refuse');
          await agent.waitMsg(MSG.failed, 'medium.db', 60_000);
          await new Promise((res) => setTimeout(res, outageMs));
          await proxy.setMode('pass');
          await agent.waitMsg(MSG.shipped, 'medium.db', 120_000);
          const violations = await checkMedium(node, dirs, agent, { uploadsSuccess: 1, failuresAtLeast: { network: 1 } });
          await agent.stop();
          await cleanPrefix(env, nodePrefix(node));
          return { outcome: `upload failed (${failureReasons(agent)}), pending through the outage, shipped once after`, violations };
        } finally {
          await proxy.close();
        }
      });
    }
  });

  it('radosgw restarted mid-upload', async () => {
    const runs = pick(2, 5);
    const bw = pick(32, 128) * 1024 * 1024;
    const r = rng('rgw-restart');
    const fault = rec.fault({
      id: 'rgw-restart',
      category: '1',
      fault: 'S3 server restarted while a large snapshot is being uploaded',
      how: `radosgw stopped and started again (world.restartRgw, mon and OSD keep the data) at a random point of a ${(big.size / 2 ** 20).toFixed(0)} MiB multipart upload throttled to ${bw / 2 ** 20} MiB/s`,
    });
    for (let i = 0; i < runs; i++) {
      const node = `rgw-restart-${++runNo}`;
      const at = r.between(0.1, 0.8);
      await fault.run(`run ${i + 1} (restart at ${(at * 100).toFixed(0)} %)`, async () => {
        const dirs = await testDirs();
        const { agent } = await env.start(dirs, { node, s3: FAST_S3, upload: { bandwidthLimit: String(bw) } });
        await placeSnapshot(big, path.join(dirs.snapshots, 'big.db'));
        await agent.waitMsg(MSG.queued, 'big.db', 120_000);
        await new Promise((res) => setTimeout(res, (at * big.size * 1000) / bw));
        const shippedEarly = agent.lines.some((l) => l.msg === MSG.shipped);
        await env.world.restartRgw();
        await agent.waitMsg(MSG.shipped, 'big.db', 300_000);
        const violations = await checkShippedOnce(
          { world: env.world, bucket: env.bucket, prefix: nodePrefix(node), dir: dirs.snapshots },
          'big.db',
          big,
          agent,
          { uploadsSuccess: 1 },
        );
        await agent.stop();
        await cleanPrefix(env, nodePrefix(node));
        const reasons = failureReasons(agent);
        return {
          outcome: shippedEarly
            ? 'shipped before the restart'
            : reasons
              ? `upload failed (${reasons}), retried, shipped once`
              : 'SDK retries absorbed the restart, shipped once',
          violations,
        };
      });
    }
  });

  it('connections reset mid-part', async () => {
    const runs = pick(3, 10);
    const r = rng('reset-mid-part');
    const fault = rec.fault({
      id: 'reset-mid-part',
      category: '1',
      fault: 'TCP connections to S3 reset in the middle of a part',
      how: `TCP proxy sends RST after a random number of bytes (64 KiB – 8 MiB) of a request, 1–6 times in a row, during a ${(medium.size / 2 ** 20).toFixed(0)} MiB multipart upload (8 MiB parts; half the runs bandwidth-limited)`,
    });
    for (let i = 0; i < runs; i++) {
      const node = `reset-${++runNo}`;
      const bytes = r.int(64 * 1024, 8 * 1024 * 1024);
      const times = r.int(1, 6);
      const limited = r.next() < 0.5;
      await fault.run(`run ${i + 1} (RST after ${bytes} B ×${times}${limited ? ', 16 MiB/s' : ''})`, async () => {
        const proxy = await startProxy({ target: rgwTarget() });
        try {
          const dirs = await testDirs();
          const { agent } = await env.start(dirs, { node, s3: { endpoint: proxy.url, ...FAST_S3 }, upload: limited ? { bandwidthLimit: '16MiB' } : {} });
          await agent.waitMsg('S3 reachable');
          proxy.setResetAfterBytes(bytes, times);
          await placeSnapshot(medium, path.join(dirs.snapshots, 'medium.db'));
          await agent.waitMsg(MSG.shipped, 'medium.db', 120_000);
          const violations = await checkMedium(node, dirs, agent, { uploadsSuccess: 1 });
          if (proxy.stats.resets === 0) violations.push('the proxy never reset a connection: the fault did not happen');
          const reasons = failureReasons(agent);
          // a reset is a network failure: any other reason in the metric misleads the operator
          if (reasons && reasons !== 'network') violations.push(`connection resets were counted as ${reasons}, not network`);
          await agent.stop();
          await cleanPrefix(env, nodePrefix(node));
          return { outcome: reasons ? `upload failed (${reasons}), retried, shipped once` : 'SDK retries absorbed the resets, shipped once', violations };
        } finally {
          await proxy.close();
        }
      });
    }
  });

  it('connections stalled mid-part (packets silently dropped)', async () => {
    const runs = pick(2, 6);
    const r = rng('stall-mid-part');
    const fault = rec.fault({
      id: 'stall-mid-part',
      category: '1',
      fault: 'S3 connections stall mid-part: nothing arrives, nothing is refused',
      how: `TCP proxy forwards nothing (blackhole) from a random byte of a ${(medium.size / 2 ** 20).toFixed(0)} MiB upload for 2.5–9 s${pick('', " (the last run 30 s, longer than the SDK's retries and the abort)")}, then passes again; agent runs with s3.requestTimeout 2s so stalls are noticed`,
    });
    for (let i = 0; i < runs; i++) {
      const node = `stall-${++runNo}`;
      const after = r.int(1024 * 1024, Math.floor(medium.size * 0.9));
      // in the long pass the last stall outlasts the SDK's retries and the abort of the failed upload too
      const holdMs = MODE === 'long' && i === runs - 1 ? 30_000 : Math.round(r.between(2500, 9000));
      await fault.run(`run ${i + 1} (stall at ${(after / 2 ** 20).toFixed(1)} MiB for ${(holdMs / 1000).toFixed(1)} s)`, async () => {
        const proxy: TcpProxy = await startProxy({ target: rgwTarget() });
        try {
          const dirs = await testDirs();
          const { agent } = await env.start(dirs, { node, s3: { endpoint: proxy.url, ...FAST_S3 } });
          await agent.waitMsg('S3 reachable');
          const reached = proxy.bytesUpReached(after);
          await placeSnapshot(medium, path.join(dirs.snapshots, 'medium.db'));
          await reached;
          await proxy.setMode('blackhole');
          await new Promise((res) => setTimeout(res, holdMs));
          await proxy.setMode('pass');
          await agent.waitMsg(MSG.shipped, 'medium.db', 120_000);
          // 3 attempts × 2 s plus the SDK's backoff fit in 7 s: a longer stall must fail the upload as a timeout
          const violations = await checkMedium(node, dirs, agent, { uploadsSuccess: 1, failuresAtLeast: holdMs >= 7500 ? { timeout: 1 } : {} });
          await agent.stop();
          await cleanPrefix(env, nodePrefix(node));
          const reasons = failureReasons(agent);
          return {
            outcome: reasons ? `stall detected, upload failed (${reasons}), retried, shipped once` : 'SDK retries outlasted the stall, shipped once',
            violations,
          };
        } finally {
          await proxy.close();
        }
      });
    }
  });

  it('503 SlowDown bursts', async () => {
    const runs = pick(4, 12);
    const r = rng('slowdown');
    const fault = rec.fault({
      id: 'slowdown-503',
      category: '1',
      fault: 'S3 throttles: bursts of 503 SlowDown',
      how: 'HTTP fault proxy answers the next 1–9 requests of one operation (UploadPart, CreateMultipartUpload, CompleteMultipartUpload, HeadObject, or PutObject for a small snapshot) with a real S3 503 SlowDown XML error',
    });
    const ops: S3Op[] = ['UploadPart', 'CreateMultipartUpload', 'CompleteMultipartUpload', 'HeadObject', 'PutObject'];
    for (let i = 0; i < runs; i++) {
      const node = `slowdown-${++runNo}`;
      const op = ops[i % ops.length]!;
      const n = r.int(1, 9);
      await fault.run(`run ${i + 1} (${op} ×${n})`, async () => {
        const proxy = await startHttpFaultProxy({ target: env.world.s3.endpoint });
        try {
          const dirs = await testDirs();
          const { agent } = await env.start(dirs, { node, s3: { endpoint: proxy.url, ...FAST_S3 } });
          await agent.waitMsg('S3 reachable');
          proxy.failNext(op, n);
          const snap =
            op === 'PutObject'
              ? await freshSnapshot(env.world, path.join(dirs.snapshots, 'small.db'))
              : await placeSnapshot(medium, path.join(dirs.snapshots, 'medium.db'));
          const name = path.basename(snap.path);
          await agent.waitMsg(MSG.shipped, name, 120_000);
          const violations = await checkInvariants({
            world: env.world,
            bucket: env.bucket,
            prefix: nodePrefix(node),
            expected: [{ name, sha256: snap.sha256, size: snap.size }],
            local: { dir: dirs.snapshots, files: [{ name, sha256: snap.sha256 }] },
            agent,
            metrics: { uploadsSuccess: 1 },
          });
          if (proxy.pending(op) !== 0)
            violations.push(`${proxy.pending(op)} of the ${n} SlowDown answers for ${op} were never asked for: the fault did not happen as planned`);
          const reasons = failureReasons(agent);
          if (reasons && reasons !== 'throttled') violations.push(`503 SlowDown was counted as ${reasons}, not throttled`);
          await agent.stop();
          await cleanPrefix(env, nodePrefix(node));
          return { outcome: reasons ? 'upload failed (throttled), backed off, shipped once' : 'SDK retries absorbed the burst, shipped once', violations };
        } finally {
          await proxy.close();
        }
      });
    }
  });
});
