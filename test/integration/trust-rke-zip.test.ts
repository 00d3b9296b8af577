// Issue 10, item 13: a raw snapshot whose zip failed is shipped. When RKE's compression runs out of disk,
// rke-tools leaves the good raw snapshot and a truncated zip (it deletes the raw only after a zip it thinks
// good). Before: the agent took the raw file as "superseded by its zip" as soon as the .zip existed,
// rejected the zip after settleTimeout, and never shipped the raw one, the only good backup of that hour;
// retention kept it on the same false belief ("its producer deletes it") and ranked an older snapshot as
// the newest. The zip here is Go's archive/zip called as rke-tools calls it, on a disk that fills up.
import { copyFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs, writeConfig, type AgentProcess } from '../support/agent.js';
import { goZip } from '../support/go-zip.js';
import { fixturePath, sha256File } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, listKeys, readWorldEnv, recorded, type World } from '../support/world.js';

let world: World;
const bucket = `t-rkezip-${(Date.now() % 1e8).toString(36)}`;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
});
afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await emptyAndDeleteBucket(world, bucket);
});

describe('13: an RKE zip cut short by a full disk, next to its good raw file', () => {
  it('the zip is rejected after settleTimeout, the raw file is verified and shipped, and retention ranks it as the snapshot it is', async () => {
    const dirs = await testDirs('trust-rkezip-');
    const node = 'rkezip';
    const prefix = `etcd-backup/test/${node}/`;
    const cfg = await writeConfig(dirs, world, bucket, { node, retention: { keep: 1 }, detect: { zipWait: '2s', settleTimeout: '4s' } });
    const agent = await startAgent(dirs, agentEnv(world), cfg);
    agents.push(agent);

    // an older snapshot, shipped
    const older = path.join(dirs.snapshots, 'older.db');
    await copyFile(fixturePath('etcd-small.db'), older);
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(older, twoHoursAgo, twoHoursAgo);
    await agent.waitMsg('snapshot shipped and confirmed', 'older.db');

    // rke-tools: etcdctl writes the raw snapshot (.part, rename), then zips it in place; the disk fills
    const name = `${new Date(Date.now() - 3_600_000).toISOString().slice(0, 19)}Z_etcd`;
    const raw = path.join(dirs.snapshots, name);
    await copyFile(fixturePath('etcd-medium.db'), `${raw}.part`);
    await rename(`${raw}.part`, raw);
    const zip = `${raw}.zip`;
    // the cluster state rke-tools adds as a second entry (/etc/kubernetes/<name>.rkestate)
    const state = path.join(dirs.root, `${name}.rkestate`);
    await writeFile(state, JSON.stringify({ desiredState: {}, currentState: {} }));
    // how long the whole zip would be, made elsewhere: the disk fills halfway through it
    const whole = path.join(dirs.root, 'whole.zip');
    await goZip('rke', raw, whole, { name, rkestate: state });
    const cut = Math.floor((await stat(whole)).size / 2);
    const result = await goZip('rke', raw, zip, { rkestate: state, truncateAt: cut, finish: true });
    expect(result.ok).toBe(false);
    expect(result.stderr).toMatch(/no space left on device/i);
    expect((await stat(zip)).size).toBeLessThanOrEqual(cut);

    const rejected = await agent.waitFor(
      (l) => l.msg === 'snapshot rejected: not shipped and never deleted by the agent' && path.basename(String(l.file)) === `${name}.zip`,
      60_000,
      'the zip to be rejected',
    );
    expect(['truncated', 'corrupt']).toContain(rejected.reason);
    const queued = await agent.waitMsg('snapshot complete; queued for upload', name, 30_000);
    expect(agent.lines.indexOf(queued)).toBeGreaterThan(agent.lines.indexOf(rejected));
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', name, 60_000);
    expect(shipped.sha256).toBe(await sha256File(raw));
    expect((await recorded(world, bucket, `${prefix}${name}`)).sha256).toBe(await sha256File(raw));
    expect(await listKeys(world, bucket, prefix)).toEqual([`${prefix}${name}`, `${prefix}older.db`].sort());

    // the daemon's own view: the raw file is a shipped snapshot, the zip rejected
    const status = await runCli(['--config', dirs.config, 'status', '--json'], agentEnv(world));
    const doc = JSON.parse(status.stdout) as { snapshots: { name: string; state: string; why: string }[]; nextPrune: { name: string; reason: string }[] };
    expect(doc.snapshots.find((s) => s.name === name)?.state).toBe('shipped');
    expect(doc.snapshots.find((s) => s.name === `${name}.zip`)?.state).toBe('rejected');
    expect(doc.nextPrune.map((d) => d.name)).toEqual(['older.db']);
    await agent.stop();

    // prune, offline: the raw file is the newest snapshot (kept), the older one goes, the broken zip stays
    const dry = await runCli(['--config', dirs.config, 'prune', '--dry-run'], agentEnv(world));
    expect(dry.code, dry.stderr).toBe(0);
    const line = (n: string): string | undefined => dry.stdout.split('\n').find((l) => l.slice(14).startsWith(`${n}: `));
    expect(line(name)).toMatch(/^kept {10}.*: newest verified snapshot; always kept$/);
    expect(line('older.db')).toMatch(/^would delete .*beyond the newest 1/);
    expect(line(`${name}.zip`)).toMatch(/^kept {10}.*: failed verification/);
    expect(dry.stdout).not.toMatch(/its producer deletes it/);
  });
});
