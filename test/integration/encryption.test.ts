// Encrypted and signed backups end to end: the built agent ships real etcd snapshots of every producer to
// Ceph RGW as age files with SSHSIG signatures, and tools we did not write read them back: the `age` CLI
// (Debian `age`), the age-encryption npm package, `ssh-keygen -Y verify` (openssh-client) and
// `etcdctl snapshot restore`. `fetch` refuses what an attacker with write access to the bucket could swap or
// edit, a restart sends nothing twice, and remote retention takes each object's signature and manifest along.
import { spawn } from 'node:child_process';
import { CopyObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { copyFile, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as typage from 'age-encryption';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs, writeConfig, type AgentProcess, type TestDirs } from '../support/agent.js';
import { goZip } from '../support/go-zip.js';
import { fixturePath, sha256 } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, etcdctl, listKeys, putKeys, readWorldEnv, run, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
const bucket = `enc-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];
const outputs: string[] = [];
let K: string; // the keys' directory
let env: NodeJS.ProcessEnv;
const keys = { recA: '', recB: '', pubA: '', pubB: '', pubX: '' };
const file = (n: string): string => path.join(K, n);
const temps: string[] = [];
/** A directory of this file's, removed at the end. */
async function temp(prefix: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), prefix));
  temps.push(d);
  return d;
}
async function dirsFor(prefix: string): Promise<TestDirs> {
  const d = await testDirs(prefix);
  temps.push(d.root);
  return d;
}

/** A program we did not write; its exit code and output, whether it succeeds or not. */
async function tool(cmd: string, args: string[], input?: Buffer): Promise<{ ok: boolean; out: string; bytes: Buffer }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', (e) => reject(new Error(`${cmd}: ${(e as NodeJS.ErrnoException).code}: these tests need the Debian packages age and openssh-client`)));
    c.on('close', (code) => resolve({ ok: code === 0, out: Buffer.concat(out).toString() + err, bytes: Buffer.concat(out) }));
    c.stdin.on('error', () => {});
    c.stdin.end(input);
  });
}

const s3 = () => s3Client(world);
async function getBytes(key: string): Promise<Buffer> {
  const r = await s3().send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}
async function put(key: string, body: Buffer, metadata?: Record<string, string>): Promise<void> {
  await s3().send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...(metadata ? { Metadata: metadata } : {}) }));
}

async function cli(config: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runCli(['--config', config, ...args], env);
  outputs.push(r.stdout, r.stderr);
  return r;
}

const sealing = (signKey: string) => ({ encryption: { recipients: [keys.recA], recipientsFile: file('recipients.txt') }, signing: { keyFile: file(signKey) } });

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  env = agentEnv(world);
  await createBucket(world, bucket);
  await putKeys(world, 3000, 512, '/registry/encryption/');
  K = await temp('enc-keys-');
  await run('age-keygen', ['-o', file('age-a.txt')]);
  await run('age-keygen', ['-o', file('age-b.txt')]);
  keys.recA = (await run('age-keygen', ['-y', file('age-a.txt')])).stdout.trim();
  keys.recB = (await run('age-keygen', ['-y', file('age-b.txt')])).stdout.trim();
  for (const k of ['sign-a', 'sign-b', 'sign-x', 'ssh-rec']) await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', k, '-f', file(k)]);
  keys.pubA = (await readFile(file('sign-a.pub'), 'utf8')).trim();
  keys.pubB = (await readFile(file('sign-b.pub'), 'utf8')).trim();
  keys.pubX = (await readFile(file('sign-x.pub'), 'utf8')).trim();
  // escrow: a second age key and an SSH key, from age's recipients-file format
  await writeFile(file('recipients.txt'), `# escrow\n${keys.recB}\n${(await readFile(file('ssh-rec.pub'), 'utf8')).trim()}\n`);
  await writeFile(file('allowed_signers'), `node-a namespaces="etcd-backup-agent" ${keys.pubA}\nnode-b namespaces="etcd-backup-agent" ${keys.pubB}\n`);
  await writeFile(file('allowed_x'), `node-a,node-b namespaces="etcd-backup-agent" ${keys.pubX}\n`);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  for (const o of [...agents.flatMap((a) => [a.stdout, a.stderr]), ...outputs]) {
    expect(o).not.toContain(world.s3.secretAccessKey);
    expect(o).not.toContain('AGE-SECRET-KEY-');
  }
  await emptyAndDeleteBucket(world, bucket);
  for (const d of temps) await rm(d, { recursive: true, force: true });
});

/** Nothing but `keep` in dir: no output and no temporary file left by a refused fetch. */
async function onlyIn(dir: string, keep: string[]): Promise<void> {
  expect((await readdir(dir)).sort()).toEqual([...keep].sort());
}

const prefixA = 'etcd-backup/test/node-a/';
let a: { dirs: TestDirs; agent: AgentProcess; cfg: Record<string, unknown> };
const ts = Math.floor(Date.now() / 1000);
const names = { raw: 'snap-1.db', rke1: `${new Date((ts - 60) * 1000).toISOString().slice(0, 19)}Z_etcd.zip`, rke2: `etcd-snapshot-node-a-${ts}` };

describe('encrypted and signed snapshots against Ceph RGW', () => {
  it('ships every producer as age + SSHSIG; the age CLI and age-encryption decrypt each to the exact file; ssh-keygen verifies it', async () => {
    const dirs = await dirsFor('enc-a-');
    const cfg = await writeConfig(dirs, world, bucket, { node: 'node-a', detect: { zipWait: '1s' }, ...sealing('sign-a') });
    const agent = await startAgent(dirs, env, cfg);
    agents.push(agent);
    a = { dirs, agent, cfg };
    // each snapshot different: two of unchanged data are byte-identical, and so would be their signatures
    const change = (): Promise<unknown> => etcdctl(world, ['put', '/registry/encryption/changed', String(Date.now() + Math.random())]);
    await saveSnapshot(world, path.join(dirs.snapshots, names.raw));
    await change();
    const rke1Raw = path.join(dirs.snapshots, names.rke1.slice(0, -4));
    await saveSnapshot(world, rke1Raw);
    await goZip('rke', rke1Raw, path.join(dirs.snapshots, names.rke1), { finish: true });
    await change();
    await saveSnapshot(world, path.join(dirs.snapshots, names.rke2));
    for (const n of Object.values(names)) expect((await agent.waitMsg('snapshot shipped and confirmed', n)).key).toBe(`${prefixA}${n}.age`);

    expect(await listKeys(world, bucket, prefixA)).toEqual(
      Object.values(names)
        .map((n) => `${prefixA}${n}.age`)
        .sort(),
    );
    expect(await listKeys(world, bucket, prefixA, { all: true })).toEqual(
      Object.values(names)
        .flatMap((n) => [`${prefixA}${n}.age`, `${prefixA}${n}.manifest.json`, `${prefixA}${n}.sig`])
        .sort(),
    );
    for (const n of Object.values(names)) {
      const plain = await readFile(path.join(dirs.snapshots, n));
      const key = `${prefixA}${n}.age`;
      const ct = await getBytes(key);
      await writeFile(file('ct'), ct);
      // no plaintext in the bucket: not even the keys' names
      expect(ct.includes('/registry/encryption/')).toBe(false);
      for (const id of ['age-a.txt', 'age-b.txt', 'ssh-rec']) {
        const d = await tool('age', ['-d', '-i', file(id), file('ct')]);
        expect(d.ok, `${n} with ${id}: ${d.out.slice(-300)}`).toBe(true);
        expect(sha256(d.bytes), `${n} decrypted by age with ${id}`).toBe(sha256(plain));
      }
      const dec = new typage.Decrypter();
      dec.addIdentity((await readFile(file('age-a.txt'), 'utf8')).split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-'))!);
      expect(sha256(Buffer.from(await dec.decrypt(ct))), `${n} decrypted by age-encryption`).toBe(sha256(plain));

      await writeFile(file('sig'), await getBytes(`${prefixA}${n}.sig`));
      const v = await tool('ssh-keygen', ['-Y', 'verify', '-f', file('allowed_signers'), '-I', 'node-a', '-n', 'etcd-backup-agent', '-s', file('sig')], plain);
      expect(v.ok, v.out).toBe(true);
      expect(v.out).toContain('Good "etcd-backup-agent" signature for node-a');
      // and for node-b's principal, the same signature is not good
      expect(
        (await tool('ssh-keygen', ['-Y', 'verify', '-f', file('allowed_signers'), '-I', 'node-b', '-n', 'etcd-backup-agent', '-s', file('sig')], plain)).ok,
      ).toBe(false);

      const head = await s3().send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      expect(head.Metadata?.encryption).toBe('age');
      const m = JSON.parse((await getBytes(`${prefixA}${n}.manifest.json`)).toString()) as Record<string, any>;
      expect(m.snapshot.sha256).toBe(sha256(plain));
      expect(m.snapshot.size).toBe(plain.length);
      expect(m.object).toMatchObject({ key, size: ct.length, encryption: { scheme: 'age' } });
      expect(m.object.encryption.recipients).toHaveLength(3);
      expect(m.signature).toMatchObject({ scheme: 'sshsig', namespace: 'etcd-backup-agent', publicKey: keys.pubA });
    }
    expect(await agent.metrics()).toMatch(/^etcdbackup_build_info\{[^}]*encryption="true"[^}]*signing="true"[^}]*\} 1$/m);
    const list = await cli(a.dirs.config, 'list');
    expect(list.code, list.stderr).toBe(0);
    for (const n of Object.values(names)) expect(list.stdout).toContain(n);
    expect(list.stdout).not.toMatch(/\.sig\b|manifest\.json/);
    // the restore hint decrypts first, and restores the file fetch wrote
    const hint = /etcd-backup-agent fetch (\S+) --identity \/path\/to\/age-identity\.txt --output (\/tmp\/\S+)\n\s+etcdutl snapshot restore (\S+) /.exec(
      list.stdout,
    );
    expect(hint, list.stdout).not.toBeNull();
    expect(hint![3]).toBe(hint![2]);
  });

  it('fetch --identity writes the snapshot etcdctl restores; --allowed-signers names the signer', async () => {
    const out = await temp('enc-fetch-');
    for (const n of [names.raw, names.rke2]) {
      const r = await cli(
        a.dirs.config,
        'fetch',
        `${prefixA}${n}.age`,
        '--identity',
        file('age-b.txt'),
        '--allowed-signers',
        file('allowed_signers'),
        '--output',
        path.join(out, n),
        '--quiet',
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('raw snapshot verified, signed by node-a');
      expect(sha256(await readFile(path.join(out, n)))).toBe(sha256(await readFile(path.join(a.dirs.snapshots, n))));
      const restored = path.join(out, `${n}.etcd`);
      await run('etcdctl', ['snapshot', 'restore', path.join(out, n), '--data-dir', restored], { env: { ...process.env, ETCDCTL_API: '3' } });
      expect(await readdir(path.join(restored, 'member'))).toContain('snap');
    }
    // the zip, by its snapshot key and with the identity from the environment (an SSH key this time)
    const z = await runCli(['--config', a.dirs.config, 'fetch', `${prefixA}${names.rke1}`, '--output', path.join(out, names.rke1), '--quiet'], {
      ...env,
      ETCD_BACKUP_AGENT_IDENTITY_FILE: file('ssh-rec'),
    });
    outputs.push(z.stdout, z.stderr);
    expect(z.code, z.stderr).toBe(0);
    expect(z.stdout).toContain('zip snapshot verified');
    expect(sha256(await readFile(path.join(out, names.rke1)))).toBe(sha256(await readFile(path.join(a.dirs.snapshots, names.rke1))));

    // a restore host with a copy of the etcd host's config: its signing key and recipients file are not there
    const host = await dirsFor('enc-restore-');
    await writeConfig(host, world, bucket, {
      node: 'node-a',
      encryption: { recipientsFile: path.join(host.root, 'absent.txt') },
      signing: { keyFile: path.join(host.root, 'absent-key') },
    });
    const restoreHost = await cli(
      host.config,
      'fetch',
      `${prefixA}${names.raw}`,
      '--identity',
      file('age-a.txt'),
      '--allowed-signers',
      file('allowed_signers'),
      '--output',
      path.join(host.root, 'restored.db'),
    );
    expect(restoreHost.code, restoreHost.stderr).toBe(0);
    expect(sha256(await readFile(path.join(host.root, 'restored.db')))).toBe(sha256(await readFile(path.join(a.dirs.snapshots, names.raw))));
    const noKey = await cli(host.config, 'upload', path.join(host.root, 'restored.db'));
    expect(noKey.code).toBe(78);
    expect(noKey.stderr).toMatch(/signing\.keyFile: .*absent-key does not exist/);

    const none = await cli(a.dirs.config, 'fetch', `${prefixA}${names.raw}.age`, '--output', path.join(out, 'none.db'));
    expect(none.code).toBe(64);
    expect(none.stderr).toMatch(/refused \(identity\): .* is encrypted \(age\); pass --identity FILE/);
    await run('age-keygen', ['-o', path.join(out, 'stranger.txt')]);
    const wrong = await cli(
      a.dirs.config,
      'fetch',
      `${prefixA}${names.raw}.age`,
      '--identity',
      path.join(out, 'stranger.txt'),
      '--output',
      path.join(out, 'wrong.db'),
    );
    expect(wrong.code).toBe(64);
    expect(wrong.stderr).toMatch(
      /refused \(identity\): .*no identity matches: the file is encrypted to 2 X25519, 1 ssh-ed25519 recipient\(s\); the identities given are for age1/,
    );
    await onlyIn(out, [names.raw, names.rke2, names.rke1, `${names.raw}.etcd`, `${names.rke2}.etcd`, 'stranger.txt']);
    await rm(out, { recursive: true });
  });

  it('fetch --allowed-signers refuses an unlisted key, a .sig swapped between snapshots or nodes, an edited manifest (exit 65, saying which check)', async () => {
    const out = await temp('enc-sig-');
    const fetchSigned = (key: string, allowed = file('allowed_signers')) =>
      cli(a.dirs.config, 'fetch', key, '--identity', file('age-a.txt'), '--allowed-signers', allowed, '--output', path.join(out, 'x.db'));
    const refused = async (key: string, re: RegExp, allowed?: string): Promise<void> => {
      const r = await fetchSigned(key, allowed);
      expect(r.code, r.stdout + r.stderr).toBe(65);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).toMatch(/nothing written$/m);
      await onlyIn(out, []);
    };
    const raw = `${prefixA}${names.raw}`;
    const rke2 = `${prefixA}${names.rke2}`;

    await refused(`${raw}.age`, /refused \(signature\): .*snapshot signature refused \(.*not.*(allowed|listed)/i, file('allowed_x'));

    // the .sig of one snapshot put beside another of the same node
    const rke2Sig = await getBytes(`${rke2}.sig`);
    await put(`${rke2}.sig`, await getBytes(`${raw}.sig`));
    await refused(`${rke2}.age`, /refused \(signature\): .*snapshot signature refused/);
    await put(`${rke2}.sig`, rke2Sig);
    expect((await fetchSigned(`${rke2}.age`)).code).toBe(0);
    await rm(path.join(out, 'x.db'));

    // node-b ships the very same file under the same name with its own key; its .sig put at node-a's
    const b = await dirsFor('enc-b-');
    await writeConfig(b, world, bucket, { node: 'node-b', ...sealing('sign-b') });
    await copyFile(path.join(a.dirs.snapshots, names.raw), path.join(b.snapshots, names.raw));
    const up = await cli(b.config, 'upload', path.join(b.snapshots, names.raw));
    expect(up.code, up.stderr).toBe(0);
    const prefixB = 'etcd-backup/test/node-b/';
    const aSig = await getBytes(`${raw}.sig`);
    await put(`${raw}.sig`, await getBytes(`${prefixB}${names.raw}.sig`));
    await refused(`${raw}.age`, /refused \(signature\): .*snapshot signature refused/);
    // ssh-keygen agrees: node-b's signature over these very bytes is no signature of node-a
    await writeFile(path.join(K, 'swapped.sig'), await getBytes(`${raw}.sig`));
    expect(
      (
        await tool(
          'ssh-keygen',
          ['-Y', 'verify', '-f', file('allowed_signers'), '-I', 'node-a', '-n', 'etcd-backup-agent', '-s', path.join(K, 'swapped.sig')],
          await readFile(path.join(a.dirs.snapshots, names.raw)),
        )
      ).ok,
    ).toBe(false);
    await put(`${raw}.sig`, aSig);
    // node-b's object, signature and manifest copied over node-a's: the manifest names another object
    const aObjects = await Promise.all(['.age', '.sig', '.manifest.json'].map((s) => getBytes(`${raw}${s}`)));
    for (const s of ['.age', '.sig', '.manifest.json'])
      await s3().send(new CopyObjectCommand({ Bucket: bucket, CopySource: `${bucket}/${prefixB}${names.raw}${s}`, Key: `${raw}${s}` }));
    await refused(
      `${raw}.age`,
      /refused \(unverified\): .*its manifest cannot be used \(describes etcd-backup\/test\/node-b\/snap-1\.db\.age, not etcd-backup\/test\/node-a\/snap-1\.db\.age\)/,
    );
    // and read anyway, the manifest's signature is missing: node-b's signature does not make it node-a's
    const anyway = await cli(
      a.dirs.config,
      'fetch',
      `${raw}.age`,
      '--identity',
      file('age-a.txt'),
      '--allowed-signers',
      file('allowed_signers'),
      '--allow-unverified',
      '--output',
      path.join(out, 'x.db'),
    );
    expect(anyway.code).toBe(65);
    expect(anyway.stderr).toMatch(/refused \(signature\): .*(manifest is not signed|snapshot signature refused)/);
    await onlyIn(out, []);
    for (const [i, s] of ['.age', '.sig', '.manifest.json'].entries())
      await put(
        `${raw}${s}`,
        aObjects[i]!,
        s === '.age' ? (await s3().send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefixB}${names.raw}.age` }))).Metadata : undefined,
      );

    // the manifest edited: an older time, then another name
    const manifestKey = `${raw}.manifest.json`;
    const original = await getBytes(manifestKey);
    for (const edit of [
      (m: any) => (m.snapshot.time = new Date(Date.parse(m.snapshot.time) - 86_400_000).toISOString()),
      (m: any) => (m.snapshot.name = 'etcd-snapshot-node-a-1700000000'),
    ]) {
      const m = JSON.parse(original.toString());
      edit(m);
      await put(manifestKey, Buffer.from(JSON.stringify(m)));
      await refused(`${raw}.age`, /refused \(signature\): .*manifest signature refused/);
    }
    // its signature removed altogether
    const unsigned = JSON.parse(original.toString());
    delete unsigned.signature;
    await put(manifestKey, Buffer.from(JSON.stringify(unsigned)));
    await refused(`${raw}.age`, /refused \(signature\): .*manifest is not signed/);
    await put(manifestKey, original);
    const ok = await fetchSigned(`${raw}.age`);
    expect(ok.code, ok.stderr).toBe(0);
    await rm(path.join(out, 'x.db'));

    // the signing key rotated after this snapshot was shipped: the old key valid before, the new one after
    const sshTime = (ms: number): string => `${new Date(ms).toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
    const shippedAt = Date.parse(JSON.parse(original.toString()).shippedAt);
    const rotated = (cutoff: number): string =>
      `node-a namespaces="etcd-backup-agent",valid-before="${sshTime(cutoff)}" ${keys.pubA}\nnode-a valid-after="${sshTime(cutoff)}" ${keys.pubX}\n`;
    // the cut-over after the shipping, and (below) a second or more behind ssh-keygen's "now": its times
    // are whole seconds
    const cutoff = Math.max(shippedAt + 2_000, Date.now());
    await writeFile(file('allowed_rotated'), rotated(cutoff));
    const old = await fetchSigned(`${raw}.age`, file('allowed_rotated'));
    expect(old.code, old.stderr).toBe(0);
    expect(old.stdout).toContain('signed by node-a');
    await rm(path.join(out, 'x.db'));
    // ssh-keygen agrees when told the same time; as of now, the old key has expired
    const plain = await readFile(path.join(a.dirs.snapshots, names.raw));
    const verifyAt = (extra: string[]) =>
      tool(
        'ssh-keygen',
        ['-Y', 'verify', '-f', file('allowed_rotated'), '-I', 'node-a', '-n', 'etcd-backup-agent', '-s', path.join(K, 'raw.sig'), ...extra],
        plain,
      );
    await writeFile(path.join(K, 'raw.sig'), aSig);
    expect((await verifyAt([`-Overify-time=${sshTime(shippedAt + 1000).slice(0, 14)}`])).ok).toBe(true);
    await new Promise((r) => setTimeout(r, Math.max(0, cutoff + 2_000 - Date.now())));
    expect((await verifyAt([])).out).toMatch(/expired/);
    // a key retired before the snapshot was signed is refused
    await writeFile(file('allowed_rotated'), rotated(shippedAt - 120_000));
    await refused(`${raw}.age`, /refused \(signature\): .*snapshot signature refused/, file('allowed_rotated'));
    await rm(out, { recursive: true });
  });

  it('a restart sends nothing again: the ledger knows, and without it the manifests do', async () => {
    const before = await Promise.all(
      Object.values(names).map(async (n) => (await s3().send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefixA}${n}.age` }))).ETag),
    );
    expect(await a.agent.stop('SIGTERM')).toMatchObject({ code: 0 });
    const second = await startAgent(a.dirs, env, a.cfg);
    agents.push(second);
    for (const n of Object.values(names)) await second.waitFor((l) => l.msg === 'already confirmed in S3' && path.basename(String(l.file)) === n);
    expect(await second.metric('etcdbackup_uploads_total{result="success"}')).toBe(0);
    await second.stop();

    await rm(path.join(a.dirs.state, 'ledger.json'));
    const third = await startAgent(a.dirs, env, a.cfg);
    agents.push(third);
    expect((await third.waitMsg('ledger rebuilt from S3')).objects).toBe(3);
    for (const n of Object.values(names)) await third.waitFor((l) => l.msg === 'already confirmed in S3' && path.basename(String(l.file)) === n);
    expect(await third.metric('etcdbackup_uploads_total{result="success"}')).toBe(0);
    await third.stop();

    // without a ledger, a one-shot upload asks S3 itself: the manifest has this file's size and mtime
    await rm(path.join(a.dirs.state, 'ledger.json'));
    const again = await cli(a.dirs.config, 'upload', path.join(a.dirs.snapshots, names.raw));
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr + again.stdout).toContain('snapshot already in S3; not sent again');
    const after = await Promise.all(
      Object.values(names).map(async (n) => (await s3().send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefixA}${n}.age` }))).ETag),
    );
    expect(after).toEqual(before);
    expect(await listKeys(world, bucket, prefixA, { all: true })).toHaveLength(9);
  });

  it('turning encryption on: a snapshot already in S3 unencrypted is not sent again, nor its manifest overwritten; new ones are encrypted', async () => {
    const dirs = await dirsFor('enc-on-');
    await writeConfig(dirs, world, bucket, { node: 'node-s' });
    const p = 'etcd-backup/test/node-s/';
    const old = path.join(dirs.snapshots, 'before.db');
    await copyFile(fixturePath('etcd-small.db'), old);
    expect((await cli(dirs.config, 'upload', old)).code).toBe(0);
    const manifest = await getBytes(`${p}before.db.manifest.json`);
    // encryption on, and the ledger gone (a new state directory): S3 itself says the snapshot is there
    await writeConfig(dirs, world, bucket, { node: 'node-s', stateDir: path.join(dirs.root, 'state2'), ...sealing('sign-a') });
    const again = await cli(dirs.config, 'upload', old);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain(`already present: ${old} -> `);
    expect(again.stdout).toContain(`${p}before.db (`);
    expect(await getBytes(`${p}before.db.manifest.json`)).toEqual(manifest);
    await copyFile(fixturePath('etcd-small.db'), path.join(dirs.snapshots, 'after.db'));
    expect((await cli(dirs.config, 'upload', path.join(dirs.snapshots, 'after.db'))).code).toBe(0);
    expect(await listKeys(world, bucket, p)).toEqual([`${p}after.db.age`, `${p}before.db`]);
    const list = await cli(dirs.config, 'list');
    expect(list.stdout).toMatch(/before\.db .* - /);
    expect(list.stdout).toMatch(/after\.db\.age .* age/);
    // the one from before signing was on has no signature: --allowed-signers refuses it, saying so
    const unsigned = await cli(
      dirs.config,
      'fetch',
      `${p}before.db`,
      '--allowed-signers',
      file('allowed_signers'),
      '--output',
      path.join(dirs.root, 'before.out'),
    );
    expect(unsigned.code).toBe(65);
    expect(unsigned.stderr).toMatch(/refused \(signature\): .*has no signature \(etcd-backup\/test\/node-s\/before\.db\.sig is missing\)/);
  });

  it('remote retention deletes each object with its .sig and manifest', async () => {
    const dirs = await dirsFor('enc-r-');
    await writeConfig(dirs, world, bucket, { node: 'node-r', retention: { keep: 1, remote: { enabled: true, keep: 2 } }, ...sealing('sign-a') });
    const now = Date.now();
    for (const [i, n] of ['r1.db', 'r2.db', 'r3.db'].entries()) {
      const f = path.join(dirs.snapshots, n);
      await copyFile(fixturePath('etcd-small.db'), f);
      const t = new Date(now - (3 - i) * 3_600_000);
      await utimes(f, t, t);
      const r = await cli(dirs.config, 'upload', f);
      expect(r.code, r.stderr).toBe(0);
    }
    const p = 'etcd-backup/test/node-r/';
    expect(await listKeys(world, bucket, p, { all: true })).toHaveLength(9);
    const r = await cli(dirs.config, 'prune');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^deleted +${p}r1\\.db\\.age: `, 'm'));
    expect(await listKeys(world, bucket, p, { all: true })).toEqual(
      ['r2.db', 'r3.db'].flatMap((n) => [`${p}${n}.age`, `${p}${n}.manifest.json`, `${p}${n}.sig`]).sort(),
    );
    // what stays is still whole: it decrypts and its signature holds
    // node-r signs with node-a's key: a file that allows that key for node-a only refuses it
    const f = await cli(
      dirs.config,
      'fetch',
      `${p}r2.db.age`,
      '--identity',
      file('age-a.txt'),
      '--allowed-signers',
      file('allowed_signers'),
      '--output',
      path.join(dirs.root, 'r2.out'),
    );
    expect(f.code, f.stderr).toBe(65);
    await writeFile(file('allowed_r'), `node-r ${keys.pubA}\n`);
    const g = await cli(
      dirs.config,
      'fetch',
      `${p}r2.db.age`,
      '--identity',
      file('age-a.txt'),
      '--allowed-signers',
      file('allowed_r'),
      '--output',
      path.join(dirs.root, 'r2.out'),
    );
    expect(g.code, g.stderr).toBe(0);
  });

  it('age files written by the age CLI and by age-encryption are fetched and decrypted (with --allow-unverified: no manifest)', async () => {
    const plain = await readFile(fixturePath('etcd-small.db'));
    await writeFile(file('plain.db'), plain);
    const byCli = await tool('age', ['-e', '-R', file('recipients.txt'), '-r', keys.recA, file('plain.db')]);
    expect(byCli.ok, byCli.out).toBe(true);
    const enc = new typage.Encrypter();
    for (const r of [keys.recA, keys.recB]) enc.addRecipient(r);
    const byJs = Buffer.from(await enc.encrypt(plain));
    const p = 'etcd-backup/test/foreign/';
    await put(`${p}by-cli.db.age`, byCli.bytes);
    await put(`${p}by-js.db.age`, byJs);
    const out = await temp('enc-foreign-');
    for (const [n, id] of [
      ['by-cli.db', 'ssh-rec'],
      ['by-cli.db', 'age-a.txt'],
      ['by-js.db', 'age-b.txt'],
    ] as const) {
      const target = path.join(out, `${n}-${id}`);
      const refused = await cli(a.dirs.config, 'fetch', `${p}${n}.age`, '--identity', file(id), '--output', target);
      expect(refused.code).toBe(65);
      expect(refused.stderr).toMatch(/refused \(unverified\): .*no recorded sha256.*--allow-unverified/);
      const r = await cli(a.dirs.config, 'fetch', `${p}${n}.age`, '--identity', file(id), '--allow-unverified', '--output', target);
      expect(r.code, r.stderr).toBe(0);
      expect(sha256(await readFile(target))).toBe(sha256(plain));
    }
    await rm(out, { recursive: true });
  });

  it('check-config --offline: a bad recipient, key file or recipients file exits 78 naming the key and the fix', async () => {
    const dirs = await dirsFor('enc-bad-');
    await writeFile(file('empty-recipients.txt'), '# nobody yet\n\n');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ encryption: { recipients: ['age1notarecipient'] } }, /config error: .*: encryption\.recipients\[0\]: .*; use an age1… recipient/],
      [
        { encryption: { recipientsFile: file('empty-recipients.txt') } },
        /encryption\.recipientsFile: .*empty-recipients\.txt: no recipients \(only comments or blank lines\); one age1… or ssh-ed25519 recipient per line/,
      ],
      [{ signing: { keyFile: file('sign-a.pub') } }, /signing\.keyFile: .*sign-a\.pub.*; make one with ssh-keygen -t ed25519 -N ""/],
      [{ signing: { keyFile: file('age-a.txt') } }, /signing\.keyFile: .*age-a\.txt.*; make one with ssh-keygen/],
    ];
    for (const [over, re] of cases) {
      await writeConfig(dirs, world, bucket, { node: 'bad', ...over });
      const r = await cli(dirs.config, 'check-config', '--offline');
      expect(r.code, `${JSON.stringify(over)}: ${r.stdout}${r.stderr}`).toBe(78);
      expect(r.stderr).toMatch(re);
      expect(r.stderr).not.toContain('AGE-SECRET-KEY-');
    }
  });
});
