// Fault 4: the state directory (the ledger) full or read-only. The ledger is a cache of S3: the agent
// must keep shipping, keep the ledger it has intact, count every failed write, and not lose track of
// what is shipped (a restart must not upload again).
import { execFile } from 'node:child_process';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { freshSnapshot, nodePrefix, Recorder, setupEnv, testDirs, until, type Env, type RealSnapshot, type TestDirs } from './harness.js';
import { checkInvariants, MSG } from './invariants.js';

const exec = promisify(execFile);
const rec = new Recorder('state-dir');
let env: Env;
const mounts: string[] = [];
let how: 'tmpfs' | 'chattr' = 'tmpfs';

beforeAll(async () => {
  env = await setupEnv('state-dir');
  // a real small file system; where mounting is not allowed, an immutable directory is the next real thing
  const probe = (await testDirs()).root;
  try {
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]);
    await exec('umount', [probe]);
  } catch {
    how = 'chattr';
    console.log('[reliability] state-dir: mount not permitted; using chattr +i instead of a full/read-only tmpfs');
  }
});

afterAll(async () => {
  await env?.close();
  for (const m of mounts) {
    await exec('umount', ['-l', m]).catch(() => undefined);
    await exec('chattr', ['-i', m]).catch(() => undefined);
  }
  await rec.write();
});

/** The state directory on a 64 KiB tmpfs of its own. */
async function smallStateDir(dirs: TestDirs): Promise<void> {
  await mkdir(dirs.state, { recursive: true });
  if (how === 'tmpfs') {
    await exec('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', dirs.state]);
    mounts.push(dirs.state);
  }
}

/** Fills the file system under dir until a write fails with ENOSPC; returns the filler's path. */
async function fill(dir: string): Promise<string> {
  const filler = path.join(dir, 'filler');
  const fh = await open(filler, 'w');
  const block = Buffer.alloc(4096, 1);
  try {
    for (;;) await fh.write(block);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await fh.close();
  }
  return filler;
}

async function breakState(dir: string, kind: 'full' | 'read-only'): Promise<() => Promise<void>> {
  if (how === 'chattr') {
    await exec('chattr', ['+i', dir]);
    if (!mounts.includes(dir)) mounts.push(dir);
    return async () => void (await exec('chattr', ['-i', dir]));
  }
  if (kind === 'full') {
    const filler = await fill(dir);
    return () => rm(filler);
  }
  await exec('mount', ['-o', 'remount,ro', dir]);
  return async () => void (await exec('mount', ['-o', 'remount,rw', dir]));
}

async function ledgerNames(dirs: TestDirs): Promise<string[] | 'corrupt' | 'missing'> {
  let text: string;
  try {
    text = await readFile(path.join(dirs.state, 'ledger.json'), 'utf8');
  } catch {
    return 'missing';
  }
  try {
    return (JSON.parse(text) as { entries: { name: string }[] }).entries.map((e) => e.name).sort();
  } catch {
    return 'corrupt';
  }
}

const expectOf = (s: RealSnapshot): { name: string; sha256: string; size: number } => ({ name: path.basename(s.path), sha256: s.sha256, size: s.size });

describe('fault 4: state directory full or read-only', () => {
  for (const kind of ['full', 'read-only'] as const) {
    it(`${kind} while the agent runs: it keeps shipping, counts the failures, does not lose track`, async () => {
      const fault = rec.fault({
        id: `state-${kind}`,
        category: '4',
        fault: `state directory ${kind === 'full' ? 'full (ENOSPC)' : 'read-only (EROFS)'} while the agent runs`,
        how:
          how === 'tmpfs'
            ? `stateDir on a 64 KiB tmpfs mounted by the test, ${kind === 'full' ? 'filled up with a filler file' : 'remounted read-only'} after the first upload; snapshots keep coming; restart while still broken; then repaired`
            : 'stateDir made immutable with chattr +i after the first upload (mount not permitted here); snapshots keep coming; restart; then repaired',
      });
      await fault.run(kind, async () => {
        const node = `state-${kind}`;
        const prefix = nodePrefix(node);
        const dirs = await testDirs();
        await smallStateDir(dirs);
        const snaps: RealSnapshot[] = [];
        const { agent } = await env.start(dirs, { node });
        snaps.push(await freshSnapshot(env.world, path.join(dirs.snapshots, 's1.db')));
        await agent.waitMsg(MSG.shipped, 's1.db');
        // the ledger is written just after that line; break the directory only once s1 is in it (no event says so)
        await until('s1.db in the ledger', async () => JSON.stringify(await ledgerNames(dirs)) === JSON.stringify(['s1.db']), 10_000, 50);
        const repair = await breakState(dirs.state, kind);
        for (const n of ['s2.db', 's3.db']) {
          snaps.push(await freshSnapshot(env.world, path.join(dirs.snapshots, n)));
          await agent.waitMsg(MSG.shipped, n);
        }
        const local = { dir: dirs.snapshots, files: snaps.map((s) => ({ name: path.basename(s.path), sha256: s.sha256 })) };
        const violations = await checkInvariants({
          world: env.world,
          bucket: env.bucket,
          prefix,
          expected: snaps.map(expectOf),
          local,
          agent,
          metrics: { uploadsSuccess: 3, ledgerWriteFailuresAtLeast: 2 },
        });
        // the ledger on disk is the one from before the fault, intact (writes are atomic)
        const onDisk = await ledgerNames(dirs);
        if (JSON.stringify(onDisk) !== JSON.stringify(['s1.db']))
          violations.push(`ledger on disk is ${JSON.stringify(onDisk)} while broken, expected the intact ["s1.db"]`);
        const stopped = await agent.stop();
        if (stopped.code !== 0) violations.push(`agent exited ${stopped.code} on SIGTERM with the ledger unsaved`);

        // a restart while still broken must not upload again: S3 is the truth
        const { agent: second } = await env.start(dirs, { node });
        await second.waitMsg('S3 reachable');
        for (const n of ['s2.db', 's3.db']) await second.waitMsg(MSG.present, n);
        violations.push(
          ...(
            await checkInvariants({
              world: env.world,
              bucket: env.bucket,
              prefix,
              expected: snaps.map(expectOf),
              local,
              agent: second,
              metrics: { uploadsSuccess: 0, ledgerWriteFailuresAtLeast: 2 },
            })
          ).map((v) => `restart while broken: ${v}`),
        );
        await second.stop();

        // repaired: the next write brings the ledger up to date with everything the agent knows
        await repair();
        const { agent: third } = await env.start(dirs, { node });
        snaps.push(await freshSnapshot(env.world, path.join(dirs.snapshots, 's4.db')));
        await third.waitMsg(MSG.shipped, 's4.db');
        violations.push(
          ...(
            await checkInvariants({
              world: env.world,
              bucket: env.bucket,
              prefix,
              expected: snaps.map(expectOf),
              local: { ...local, files: snaps.map((s) => ({ name: path.basename(s.path), sha256: s.sha256 })) },
              agent: third,
              metrics: { uploadsSuccess: 1 },
            })
          ).map((v) => `after repair: ${v}`),
        );
        // the daemon writes its ledger within a second of a record (no event says when)
        const all = JSON.stringify(['s1.db', 's2.db', 's3.db', 's4.db']);
        await until('all four in the ledger', async () => JSON.stringify(await ledgerNames(dirs)) === all, 5000, 100).catch(() => undefined);
        const repaired = await ledgerNames(dirs);
        if (JSON.stringify(repaired) !== all) violations.push(`ledger after repair is ${JSON.stringify(repaired)}, expected all four snapshots`);
        await third.stop();
        return { outcome: 'kept shipping, failures counted, ledger intact, no upload repeated after restart, caught up after repair', violations };
      });
    });
  }

  it('unusable from the start (read-only, no ledger yet): ships with the ledger in memory', async () => {
    const fault = rec.fault({
      id: 'state-unusable-at-start',
      category: '4',
      fault: 'state directory read-only or impossible to create when the agent starts',
      how:
        how === 'tmpfs'
          ? 'stateDir on a read-only tmpfs (no ledger can be written), and stateDir below it (cannot be created)'
          : 'stateDir immutable with chattr +i, and stateDir below it',
    });
    for (const variant of ['read-only', 'cannot-create'] as const) {
      await fault.run(variant, async () => {
        const node = `state-start-${variant}`;
        const dirs = await testDirs();
        await smallStateDir(dirs);
        await breakState(dirs.state, 'read-only');
        const stateDir = variant === 'read-only' ? dirs.state : path.join(dirs.state, 'sub');
        const { agent } = await env.start(dirs, { node, stateDir });
        const s = await freshSnapshot(env.world, path.join(dirs.snapshots, 'a.db'));
        await agent.waitMsg(MSG.shipped, 'a.db');
        const violations = await checkInvariants({
          world: env.world,
          bucket: env.bucket,
          prefix: nodePrefix(node),
          expected: [expectOf(s)],
          local: { dir: dirs.snapshots, files: [{ name: 'a.db', sha256: s.sha256 }] },
          agent,
          metrics: { uploadsSuccess: 1, ledgerWriteFailuresAtLeast: 1 },
        });
        const st = await stat(path.join(stateDir, 'ledger.json')).catch(() => undefined);
        if (st) violations.push('a ledger appeared on a read-only state directory');
        const stopped = await agent.stop();
        if (stopped.code !== 0) violations.push(`agent exited ${stopped.code}`);
        return { outcome: 'shipped with the ledger in memory; failures counted; exit 0', violations };
      });
    }
  });
});
