// Issue 10, item 8, end to end on Ceph RGW and Swift: names with ESC, BEL, CR, U+202E and invalid UTF-8 bytes
// in the snapshot directory, and keys with control and bidi characters put in the bucket by someone else.
// Before: `list`, `prune` and `fetch` printed them raw (a name could retitle or recolour the operator's
// terminal, or reorder what it shows); log lines carried U+202E and C1 raw; a non-UTF-8 file name was
// logged as "disappeared before it was shipped" on every rescan. Found here too: Swift refuses to list a
// prefix holding a key with a control character unless the listing is url-encoded, and refuses to start an
// upload of such a key (a 500, which read as "S3 down" and held back every other upload).
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { copyFile, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCli, startAgent, testDirs, writeConfig, type AgentProcess } from '../support/agent.js';
import { fixturePath, sha256File } from '../support/snapshots.js';
import { readWorldEnv, type World } from '../support/world.js';
import { bucketOn } from '../support/buckets.js';

// what a terminal acts on or reorders: C0 but the newline, DEL, C1, bidi marks/embeddings/overrides/isolates, LS/PS
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;

let world: World;
let work: string;
const agents: AgentProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  work = await mkdtemp(path.join(os.tmpdir(), 'trust-names-'));
});
afterEach(async () => {
  await Promise.all(agents.splice(0).map((a) => a.stop('SIGKILL')));
});
afterAll(async () => {
  for (const c of cleanups) await c().catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

// in the snapshot directory
const ESC = 'esc\x1b]0;pwned\x07\x1b[31mred.db';
const BEL = 'bell\x07.db';
const CR = 'cr\rfake-ok.db';
const BIDI = 'bidi\u202egnp.exe.db';
const BAD = Buffer.concat([Buffer.from('bad'), Buffer.from([0xff, 0xfe]), Buffer.from('.db')]);
const PLAIN = 'plain.db';
// put in the bucket by someone else
const FOREIGN = ['x\x1b[2Jclear.db', 'c1\u009b31m.db', 'rtl\u202eexe.db'];

function assertClean(what: string, text: string): void {
  const m = RAW.exec(text);
  expect(
    m,
    `${what} holds a raw ${JSON.stringify(m?.[0])} at ${m?.index}: ${JSON.stringify(text.slice(Math.max(0, (m?.index ?? 0) - 40), (m?.index ?? 0) + 20))}`,
  ).toBeNull();
}

describe.each(['rgw', 'swift'] as const)('%s', (which) => {
  it('8: hostile names in the directory and the bucket: rejected or shipped, and every line that names them is escaped', async () => {
    const t = await bucketOn(world, which, 'names');
    cleanups.push(t.remove);
    const { bucket, client, env } = t;
    const dirs = await testDirs('trust-names-');
    const node = 'names';
    const prefix = `etcd-backup/test/${node}/`;
    const cfg = await writeConfig(dirs, world, bucket, {
      node,
      s3: { bucket, endpoint: t.endpoint, region: t.region },
      detect: { rescanInterval: '1s' },
      retention: { keep: 1 },
    });
    const src = fixturePath('etcd-small.db');
    for (const k of FOREIGN) await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${k}`, Body: await readFile(src) }));

    const agent = await startAgent(dirs, env, cfg);
    agents.push(agent);
    const place = async (name: string | Buffer): Promise<void> => {
      const tmp = path.join(work, `tmp-${Math.random()}`);
      await copyFile(src, tmp);
      await rename(tmp, typeof name === 'string' ? path.join(dirs.snapshots, name) : Buffer.concat([Buffer.from(`${dirs.snapshots}/`), name]));
    };
    for (const n of [ESC, BEL, CR, BIDI, BAD, PLAIN]) await place(n);

    await agent.waitMsg('snapshot shipped and confirmed', PLAIN, 60_000);
    await agent.waitMsg('snapshot shipped and confirmed', BIDI, 60_000);
    const rejected = (): { file: string; detail?: string }[] =>
      agent.lines.filter((l) => l.msg.startsWith('snapshot rejected')).map((l) => ({ file: String(l.file), detail: l.detail as string | undefined }));
    await agent.waitFor(() => rejected().length >= 4, 30_000, 'four name rejections');
    // several rescans later: each said once, nothing "disappeared"
    const rescans = agent.count('directory rescanned');
    await agent.waitFor(() => agent.count('directory rescanned') >= rescans + 3, 20_000, 'three more rescans');
    const r = rejected();
    expect(r).toHaveLength(4);
    expect(r.map((x) => path.basename(x.file)).sort()).toEqual([BEL, CR, ESC, 'bad\\xff\\xfe.db'].sort());
    expect(agent.lines.filter((l) => /disappeared/.test(l.msg))).toEqual([]);
    expect(await agent.metric('etcdbackup_snapshots_rejected_total{reason="name"}')).toBe(4);
    expect(agent.lines.filter((l) => l.msg === 'upload failed; the snapshot stays pending and will be retried')).toEqual([]);

    // status from the daemon, in text and JSON
    const st = await runCli(['--config', dirs.config, 'status'], env);
    expect(st.code, st.stderr).toBe(0);
    assertClean('status', st.stdout + st.stderr);
    expect(st.stdout).toContain('bidi\\u202egnp.exe.db');
    const sj = await runCli(['--config', dirs.config, 'status', '--json'], env);
    assertClean('status --json', sj.stdout + sj.stderr);
    expect((JSON.parse(sj.stdout) as { snapshots: { name: string }[] }).snapshots.map((s) => s.name)).toContain(BIDI);
    await agent.stop();
    assertClean("the daemon's log", agent.stdout + agent.stderr);
    expect(agent.stdout).toContain('bad\\\\xff\\\\xfe.db');

    // list, text and JSON: the foreign keys too (Swift lists them only url-encoded)
    const list = await runCli(['--config', dirs.config, 'list'], env);
    expect(list.code, list.stderr).toBe(0);
    assertClean('list', list.stdout + list.stderr);
    for (const shown of ['x\\x1b[2Jclear.db', 'c1\\x9b31m.db', 'rtl\\u202eexe.db', 'bidi\\u202egnp.exe.db']) expect(list.stdout).toContain(`${prefix}${shown}`);
    const lj = await runCli(['--config', dirs.config, 'list', '--json'], env);
    assertClean('list --json', lj.stdout + lj.stderr);
    expect(
      lj.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { key: string }).key)
        .sort(),
    ).toEqual([...FOREIGN, BIDI, PLAIN].map((k) => `${prefix}${k}`).sort());

    // prune --dry-run (offline scan): every file named, escaped
    const pr = await runCli(['--config', dirs.config, 'prune', '--dry-run'], env);
    expect(pr.code, pr.stderr).toBe(0);
    assertClean('prune', pr.stdout + pr.stderr);
    expect(pr.stdout).toMatch(/kept +esc\\x1b\]0;pwned\\x07\\x1b\[31mred\.db: failed verification \(name: its file name holds control characters/);
    expect(pr.stdout).toMatch(/kept +bad\\xff\\xfe\.db: not an etcd snapshot \(its file name is not valid UTF-8/);

    // status offline
    const so = await runCli(['--config', dirs.config, 'status'], env);
    assertClean('status (offline)', so.stdout + so.stderr);

    // fetch: a shipped bidi key, a foreign key with an escape sequence, a missing key with one
    const out1 = path.join(dirs.root, 'f1.db');
    const f1 = await runCli(['--config', dirs.config, 'fetch', `${prefix}${BIDI}`, '--output', out1], env);
    expect(f1.code, f1.stderr).toBe(0);
    assertClean('fetch', f1.stdout + f1.stderr);
    expect(f1.stdout).toContain('bidi\\u202egnp.exe.db');
    expect(await sha256File(out1)).toBe(await sha256File(src));
    const f2 = await runCli(['--config', dirs.config, 'fetch', `${prefix}${FOREIGN[0]}`, '--output', path.join(dirs.root, 'f2.db'), '--allow-unverified'], env);
    expect(f2.code, f2.stderr).toBe(0);
    assertClean('fetch --allow-unverified', f2.stdout + f2.stderr);
    const f3 = await runCli(['--config', dirs.config, 'fetch', `${prefix}missing\x1b[5m.db`, '--output', path.join(dirs.root, 'f3.db')], env);
    expect(f3.code).toBe(66);
    assertClean('fetch of a missing key', f3.stdout + f3.stderr);
    expect(f3.stderr).toContain('missing\\x1b[5m.db');

    // upload of a name S3 cannot hold: refused with the reason, nothing sent
    const up = await runCli(['--config', dirs.config, 'upload', path.join(dirs.snapshots, BEL)], env);
    expect(up.code).toBe(65);
    assertClean('upload', up.stdout + up.stderr);
    expect(up.stderr).toMatch(/bell\\x07\.db: not uploaded: its file name holds control characters/);
    await writeFile(path.join(work, 'done'), '');
  });
});
