// Fault 2: the agent killed mid-upload (SIGKILL: a crash, an OOM kill, a node losing power) again and
// again on one large snapshot, and stopped by SIGTERM mid-upload (a reboot, a deploy).
import { HeadObjectCommand, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { recorded, s3Client } from '../support/world.js';
import {
  bigSnapshot,
  cleanPrefix,
  nodePrefix,
  pick,
  placeSnapshot,
  Recorder,
  rng,
  setupEnv,
  testDirs,
  type Env,
  type RealSnapshot,
  type TestDirs,
} from './harness.js';
import { checkInvariants, MSG } from './invariants.js';

const rec = new Recorder('kill');
let env: Env;
let big: RealSnapshot;
const LIMIT = 64 * 1024 * 1024;

beforeAll(async () => {
  env = await setupEnv('kill');
  big = await bigSnapshot(pick(96, 900));
  // the long pass promises a snapshot of at least 1 GiB
  if (pick(false, true) && big.size < 1024 ** 3) throw new Error(`the long pass needs a snapshot of at least 1 GiB, got ${big.size} bytes`);
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

interface LedgerFile {
  entries: { name: string; key: string; storedKey?: string; sha256: string; size: number }[];
}

/** The ledger on disk: must always parse (writes are atomic) and never claim what S3 does not hold. */
async function ledgerProblems(dirs: TestDirs): Promise<{ names: Set<string>; problems: string[] }> {
  const problems: string[] = [];
  let text: string;
  try {
    text = await readFile(path.join(dirs.state, 'ledger.json'), 'utf8');
  } catch {
    return { names: new Set(), problems };
  }
  let ledger: LedgerFile;
  try {
    ledger = JSON.parse(text) as LedgerFile;
  } catch {
    return { names: new Set(), problems: ['ledger.json does not parse: a write was not atomic'] };
  }
  const s3 = s3Client(env.world);
  for (const e of ledger.entries) {
    const h = await recorded(env.world, env.bucket, e.storedKey ?? e.key, s3).catch(() => undefined);
    if (!h) problems.push(`ledger records ${e.key} but S3 has no such object`);
    else if (h.sha256 !== e.sha256 || h.size !== e.size) problems.push(`ledger records ${e.key} with other content than S3 holds`);
  }
  s3.destroy();
  return { names: new Set(ledger.entries.map((e) => e.name)), problems };
}

async function openUploads(prefix: string): Promise<number> {
  const s3 = s3Client(env.world);
  const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: env.bucket, Prefix: prefix }));
  s3.destroy();
  return (r.Uploads ?? []).length;
}

async function exists(key: string): Promise<boolean> {
  const s3 = s3Client(env.world);
  const h = await s3.send(new HeadObjectCommand({ Bucket: env.bucket, Key: key })).catch(() => undefined);
  s3.destroy();
  return h !== undefined;
}

/** Seconds one full upload of the big snapshot takes, limited or not: where a kill lands is a fraction of it. */
async function calibrate(limited: boolean): Promise<number> {
  const node = `kill-calibrate-${limited ? 'limited' : 'free'}`;
  const dirs = await testDirs();
  const { agent } = await env.start(dirs, { node, upload: limited ? { bandwidthLimit: String(LIMIT) } : {} });
  await placeSnapshot(big, path.join(dirs.snapshots, 'big.db'));
  const shipped = await agent.waitMsg(MSG.shipped, 'big.db', 600_000);
  await agent.stop();
  await cleanPrefix(env, nodePrefix(node));
  return Number(shipped.seconds);
}

describe('fault 2: the agent killed or stopped mid-upload', () => {
  it('SIGKILL at random points of a large upload, again and again, then a restart: exactly one object', async () => {
    const wanted = pick(20, 25);
    const r = rng('sigkill');
    const seconds = { free: await calibrate(false), limited: await calibrate(true) };
    const fault = rec.fault({
      id: 'sigkill-mid-upload',
      category: '2',
      fault: 'agent SIGKILLed mid-upload, restarted, killed again',
      how: `${wanted}+ SIGKILLs at random points of the upload of one ${(big.size / 2 ** 20).toFixed(0)} MiB etcdctl snapshot (uploads take ${seconds.free.toFixed(1)} s, or ${seconds.limited.toFixed(1)} s at upload.bandwidthLimit 64MiB; each run picks one), a few during start; open multipart uploads cleaned by \`etcd-backup-agent prune --stale-upload-age 0s\`; then a restart ships`,
    });
    const node = 'kill-a';
    const prefix = nodePrefix(node);
    const dirs = await testDirs();
    const names = ['big.db'];
    await placeSnapshot(big, path.join(dirs.snapshots, 'big.db'));
    let midUpload = 0;
    let attempt = 0;
    const cleanupEvery = pick(5, 1);

    while (midUpload < wanted && attempt < wanted * 2) {
      attempt++;
      const name = names.at(-1)!;
      const limited = r.next() < 0.6;
      const duringStart = r.next() < 0.15;
      // most kills land mid-upload; an upload finishing early (a loaded machine) still counts, under its own label
      const frac = r.between(0, 0.75);
      const label = `kill ${attempt} (${duringStart ? 'during start' : `at ${(frac * 100).toFixed(0)} % of the upload`}${limited ? ', limited' : ''})`;
      await fault.run(label, async () => {
        const openBefore = await openUploads(prefix);
        const { agent } = await env.start(dirs, { node, upload: limited ? { bandwidthLimit: String(LIMIT) } : {} });
        if (duringStart) await new Promise((res) => setTimeout(res, r.between(0, 600)));
        else {
          await agent.waitMsg(MSG.queued, name, 120_000);
          await new Promise((res) => setTimeout(res, frac * (limited ? seconds.limited : seconds.free) * 1000));
        }
        await agent.stop('SIGKILL');
        const violations: string[] = [];
        const ledger = await ledgerProblems(dirs);
        violations.push(...ledger.problems);
        const complete = await exists(prefix + name);
        const openAfter = await openUploads(prefix);
        let outcome: string;
        if (complete) {
          outcome = ledger.names.has(name)
            ? 'killed after the upload was confirmed and recorded'
            : 'killed between CompleteMultipartUpload and the ledger write';
          // the upload is over for this name: the next kills go to a copy under a new name
          names.push(`big-${names.length + 1}.db`);
          await placeSnapshot(big, path.join(dirs.snapshots, names.at(-1)!));
        } else if (openAfter > openBefore) {
          outcome = 'killed mid-upload: multipart upload left open';
          midUpload++;
        } else
          outcome = agent.lines.some((l) => l.msg === MSG.queued && l.file === path.join(dirs.snapshots, name))
            ? 'killed after verification, before the upload began'
            : 'killed before verification finished';
        if (attempt % cleanupEvery === 0 && openAfter > 0) {
          // the agent's own cleanup for uploads a crash left (retention.staleUploadAge, here forced to 0)
          const p = await env.cli(['--config', dirs.config, 'prune', '--stale-upload-age', '0s']);
          if (p.code !== 0) violations.push(`prune --stale-upload-age 0s exited ${p.code}: ${p.stderr.slice(0, 300)}`);
          const left = await openUploads(prefix);
          if (left !== 0) violations.push(`${left} multipart upload(s) still open after prune --stale-upload-age 0s`);
        }
        // every name but the newest has its one complete object; open uploads wait for the cleanup
        const done = names.slice(0, -1).map((n) => ({ name: n, sha256: big.sha256, size: big.size }));
        violations.push(
          ...(await checkInvariants({
            world: env.world,
            bucket: env.bucket,
            prefix,
            expected: done,
            openUploadsAllowed: true,
            local: { dir: dirs.snapshots, files: names.map((n) => ({ name: n, sha256: big.sha256 })) },
          })),
        );
        return { outcome, violations };
      });
    }
    fault.note(`${midUpload} of ${attempt} kills landed mid-upload`);

    await fault.run('restart after the last kill', async () => {
      const present = new Set<string>();
      for (const n of names) if (await exists(prefix + n)) present.add(n);
      const { agent } = await env.start(dirs, { node, log: { level: 'debug' } });
      for (const n of names)
        await agent.waitFor(
          (l) => path.basename(String(l.file ?? '')) === n && [MSG.shipped, MSG.present, 'already confirmed in S3'].includes(l.msg),
          600_000,
          `${n} shipped or found in S3`,
        );
      const expected = names.map((n) => ({ name: n, sha256: big.sha256, size: big.size }));
      const local = { dir: dirs.snapshots, files: names.map((n) => ({ name: n, sha256: big.sha256 })) };
      // open uploads of the killed runs are still there: the stale-upload cleanup comes next
      const violations = await checkInvariants({
        world: env.world,
        bucket: env.bucket,
        prefix,
        expected,
        local,
        agent,
        openUploadsAllowed: true,
        metrics: { uploadsSuccess: names.length - present.size },
      });
      const stop = await agent.stop();
      if (stop.code !== 0) violations.push(`agent exited ${stop.code} on SIGTERM`);
      const p = await env.cli(['--config', dirs.config, 'prune', '--stale-upload-age', '0s']);
      if (p.code !== 0) violations.push(`prune --stale-upload-age 0s exited ${p.code}: ${p.stderr.slice(0, 300)}`);
      violations.push(...(await checkInvariants({ world: env.world, bucket: env.bucket, prefix, expected, local })));
      const ledger = await ledgerProblems(dirs);
      violations.push(...ledger.problems);
      for (const n of names) if (!ledger.names.has(n)) violations.push(`ledger has no entry for ${n} after it was confirmed`);
      return { outcome: `exactly one object per name (${names.length}), no upload left open, ledger consistent`, violations };
    });
    expectMidUpload(midUpload, wanted);
  });

  it('SIGTERM mid-upload: exits 0 within the drain time, nothing left open, shipped after restart', async () => {
    const runs = pick(3, 8);
    const r = rng('sigterm');
    const fault = rec.fault({
      id: 'sigterm-mid-upload',
      category: '2',
      fault: 'agent stopped with SIGTERM mid-upload (reboot, deploy)',
      how: `SIGTERM at a random point of a ${(big.size / 2 ** 20).toFixed(0)} MiB upload limited to ${pick(32, 128)} MiB/s, shutdownTimeout 1–4 s (shorter than the upload); then a restart`,
    });
    let worst = -Infinity;
    for (let i = 0; i < runs; i++) {
      const drainS = r.int(1, 4);
      const frac = r.between(0.05, 0.8);
      const node = `term-${i}`;
      await fault.run(`run ${i + 1} (at ${(frac * 100).toFixed(0)} %, shutdownTimeout ${drainS}s)`, async () => {
        const dirs = await testDirs();
        const bw = pick(32, 128) * 1024 * 1024;
        const { agent, cfg } = await env.start(dirs, { node, shutdownTimeout: `${drainS}s`, upload: { bandwidthLimit: String(bw) } });
        await placeSnapshot(big, path.join(dirs.snapshots, 'big.db'));
        await agent.waitMsg(MSG.queued, 'big.db', 120_000);
        await new Promise((res) => setTimeout(res, (frac * big.size * 1000) / bw));
        const t0 = Date.now();
        const exit = await agent.stop('SIGTERM');
        const took = (Date.now() - t0) / 1000;
        const violations: string[] = [];
        if (exit.code !== 0) violations.push(`exit ${exit.code ?? exit.signal} after SIGTERM, expected 0`);
        // the drain time, plus the abort of the multipart upload and the ledger save
        if (took > drainS + 5) violations.push(`took ${took.toFixed(1)} s to exit, drain time ${drainS} s`);
        const finished = agent.lines.some((l) => l.msg === MSG.shipped);
        const aborted = agent.lines.some((l) => l.msg === 'upload aborted by shutdown; it will be shipped after restart');
        if (!finished && !aborted) violations.push('neither shipped nor aborted by the shutdown');
        // an abort that lands while CompleteMultipartUpload is in flight loses the race: the object is then
        // whole (HeadObject must show the verified sha256), and the restart finds it instead of sending it again
        const complete = await exists(`${nodePrefix(node)}big.db`);
        const one = [{ name: 'big.db', sha256: big.sha256, size: big.size }];
        const local = { dir: dirs.snapshots, files: [{ name: 'big.db', sha256: big.sha256 }] };
        violations.push(
          ...(await checkInvariants({ world: env.world, bucket: env.bucket, prefix: nodePrefix(node), expected: complete ? one : [], local })).map(
            (v) => `after SIGTERM: ${v}`,
          ),
        );
        if (finished && !complete) violations.push('the agent said shipped, S3 has no object');
        const port = Number(String((cfg.metrics as { listen: string }).listen).split(':')[1]);
        const again = (await env.start(dirs, { node, log: { level: 'debug' } }, { port })).agent;
        await again.waitFor((l) => [MSG.shipped, MSG.present, 'already confirmed in S3'].includes(l.msg), 300_000, 'big.db shipped or found after the restart');
        violations.push(
          ...(await checkInvariants({
            world: env.world,
            bucket: env.bucket,
            prefix: nodePrefix(node),
            expected: one,
            local,
            agent: again,
            metrics: { uploadsSuccess: complete ? 0 : 1 },
          })),
        );
        await again.stop();
        await cleanPrefix(env, nodePrefix(node));
        const outcome = finished
          ? 'finished within the drain time'
          : complete
            ? 'aborted as Complete was in flight: the object is whole; found, not resent, after restart'
            : 'aborted, nothing left open; shipped after restart';
        worst = Math.max(worst, took - drainS);
        return { outcome: `${outcome}; exit 0`, violations };
      });
    }
    fault.note(`the slowest exit came ${Math.max(0, worst).toFixed(1)} s after its drain time`);
  });
});

function expectMidUpload(got: number, wanted: number): void {
  if (got < wanted) throw new Error(`only ${got} of the SIGKILLs landed mid-upload (wanted ${wanted}): the fault did not happen as planned`);
}
