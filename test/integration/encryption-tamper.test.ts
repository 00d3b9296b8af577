// An attacker with write access to the bucket rewrites an encrypted snapshot (with the SDK, as anyone with the
// credentials could): a flipped byte in each part, a truncated last chunk, two parts swapped, a changed header,
// a whole new age file to the same (public) recipients. `fetch --identity` refuses each with its reason and
// writes nothing; `fetch --encrypted` and `verify` without a key check what they can, `verify --identity` the rest.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as typage from 'age-encryption';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { fixturePath, sha256 } from '../support/snapshots.js';
import { createBucket, emptyAndDeleteBucket, putKeys, readWorldEnv, run, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
const bucket = `enc-tamper-${Date.now().toString(36)}`;
const outputs: string[] = [];
let dirs: TestDirs;
let env: NodeJS.ProcessEnv;
let out: string;
let plain: Buffer;
let ct: Buffer;
let metadata: Record<string, string>;
let manifest: { object: { parts: number; firstPartBytes: number; partBytes: number; size: number }; snapshot: { sha256: string } };
let manifestBytes: Buffer;
let recipient: string;
const name = 'big.db';
const key = `etcd-backup/test/tamper/${name}.age`;
const k = (n: string): string => path.join(dirs.root, n);

async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runCli(['--config', dirs.config, ...args], env);
  outputs.push(r.stdout, r.stderr);
  return r;
}

async function putObject(k: string, body: Buffer, md?: Record<string, string>): Promise<void> {
  await s3Client(world).send(new PutObjectCommand({ Bucket: bucket, Key: k, Body: body, ...(md ? { Metadata: md } : {}) }));
}

/** The stored object as the attacker left it. */
const store = (body: Buffer): Promise<void> => putObject(key, body, metadata);

function ageDecrypt(file: string, identity: string): Promise<{ ok: boolean; bytes: Buffer; err: string }> {
  return new Promise((resolve) => {
    const c = spawn('age', ['-d', '-i', identity, file], { stdio: ['ignore', 'pipe', 'pipe'] });
    const o: Buffer[] = [];
    let err = '';
    c.stdout.on('data', (d: Buffer) => o.push(d));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('close', (code) => resolve({ ok: code === 0, bytes: Buffer.concat(o), err }));
  });
}

/** Where part i (0-based) starts and ends in the stored object, as the manifest lays it out. */
function part(i: number): { start: number; end: number } {
  const o = manifest.object;
  const start = i === 0 ? 0 : o.firstPartBytes + (i - 1) * o.partBytes;
  const end = i === 0 ? o.firstPartBytes : Math.min(o.size, start + o.partBytes);
  return { start, end };
}

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  env = agentEnv(world);
  await createBucket(world, bucket);
  dirs = await testDirs('enc-tamper-');
  out = path.join(dirs.root, 'out');
  await run('age-keygen', ['-o', k('age.txt')]);
  recipient = (await run('age-keygen', ['-y', k('age.txt')])).stdout.trim();
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tamper', '-f', k('sign')]);
  await writeFile(k('allowed_signers'), `tamper namespaces="etcd-backup-agent" ${(await readFile(k('sign.pub'), 'utf8')).trim()}\n`);
  await writeConfig(dirs, world, bucket, {
    node: 'tamper',
    s3: { partSize: '5MiB' },
    encryption: { recipients: [recipient] },
    signing: { keyFile: k('sign') },
  });
  // ~20 MiB of etcd data, so the object has several 5 MiB parts
  await putKeys(world, 16_000, 1024, '/registry/tamper/');
  const f = path.join(dirs.snapshots, name);
  await saveSnapshot(world, f);
  plain = await readFile(f);
  const up = await cli('upload', f);
  expect(up.code, up.stderr).toBe(0);
  const s3 = s3Client(world);
  ct = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray());
  metadata = (await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).Metadata ?? {};
  manifestBytes = Buffer.from(
    await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `etcd-backup/test/tamper/${name}.manifest.json` }))).Body!.transformToByteArray(),
  );
  manifest = JSON.parse(manifestBytes.toString());
});

afterAll(async () => {
  for (const o of outputs) expect(o).not.toContain(world.s3.secretAccessKey);
  await emptyAndDeleteBucket(world, bucket);
  if (dirs) await rm(dirs.root, { recursive: true, force: true });
});

/** fetch refuses the stored object: exit 65, the reason, nothing at --output and no temporary file. */
async function refused(re: RegExp, ...extra: string[]): Promise<string> {
  await rm(out, { recursive: true, force: true });
  const r = await cli('fetch', key, '--output', path.join(out, name), ...extra);
  expect(r.code, r.stdout + r.stderr).toBe(65);
  expect(r.stderr).toMatch(re);
  expect(r.stderr).toMatch(/nothing written$/m);
  expect(await readdir(out).catch(() => [])).toEqual([]);
  return r.stderr;
}

describe('tampering with an encrypted object in S3', () => {
  it('the object is several parts of whole age chunks, and the intact one fetches and verifies', async () => {
    expect(manifest.object.parts).toBeGreaterThanOrEqual(4);
    expect(ct.length).toBe(manifest.object.size);
    expect(part(manifest.object.parts - 1).end).toBe(ct.length);
    const r = await cli('fetch', key, '--identity', k('age.txt'), '--allowed-signers', k('allowed_signers'), '--output', path.join(out, name));
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(await readFile(path.join(out, name)))).toBe(sha256(plain));
    const v = await cli('verify', key, '--quiet');
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain('pass (stored bytes)');
    const d = await cli('verify', key, '--identity', k('age.txt'), '--allowed-signers', k('allowed_signers'), '--restore', '--quiet');
    expect(d.code, d.stdout + d.stderr).toBe(0);
    expect(d.stdout).toMatch(/pass \(deep, etcd(ctl|utl) snapshot restore: ok\)/);
  });

  it('fetch --encrypted keeps the ciphertext, which age decrypts to the snapshot', async () => {
    await rm(out, { recursive: true, force: true });
    const r = await cli('fetch', key, '--encrypted', '--output', path.join(out, `${name}.age`));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('age ciphertext, structure checked');
    expect(sha256(await readFile(path.join(out, `${name}.age`)))).toBe(sha256(ct));
    const d = await ageDecrypt(path.join(out, `${name}.age`), k('age.txt'));
    expect(d.ok, d.err).toBe(true);
    expect(sha256(d.bytes)).toBe(sha256(plain));
  });

  it('one flipped ciphertext byte in each part: refused naming the chunk; verify finds the part without the key', async () => {
    for (let i = 0; i < manifest.object.parts; i++) {
      const { start, end } = part(i);
      const at = i === 0 ? start + Math.floor((end - start) / 2) : start + 100;
      const bad = Buffer.from(ct);
      bad[at]! ^= 0x01;
      await store(bad);
      await refused(/refused \(decrypt\): .*chunk \d+.* failed authentication/, '--identity', k('age.txt'));
      const v = await cli('verify', key, '--quiet');
      expect(v.code).toBe(65);
      expect(v.stdout).toMatch(new RegExp(`FAIL hash: part ${i + 1} .*differs from what the server verified at upload`));
      if (i === 0 || i === manifest.object.parts - 1) {
        const d = await cli('verify', key, '--identity', k('age.txt'), '--quiet');
        expect(d.code).toBe(65);
        expect(d.stdout).toMatch(/FAIL decrypt: .*failed authentication/);
      }
      // ciphertext fetched without a key: the part checksums recorded at upload catch it too
      await refused(new RegExp(`part ${i + 1}`), '--encrypted');
    }
    await store(ct);
  });

  it('a truncated last chunk, a payload cut at a chunk boundary, two parts swapped, bytes appended: refused with the reason', async () => {
    await store(ct.subarray(0, ct.length - 100));
    await refused(/refused \(decrypt\): .*(final chunk|failed authentication)/, '--identity', k('age.txt'));
    await refused(/refused \((size|structure)\)/, '--encrypted');
    // the last chunk dropped whole: every chunk left is intact, none is marked final
    const tail = (plain.length % 65536 || 65536) + 16;
    await store(ct.subarray(0, ct.length - tail));
    await refused(/refused \(decrypt\): .*not marked final/, '--identity', k('age.txt'));
    // parts 2 and 3 (same size) swapped: each chunk authentic, in the wrong place
    const p2 = part(1);
    const p3 = part(2);
    expect(p3.end - p3.start).toBe(p2.end - p2.start);
    await store(Buffer.concat([ct.subarray(0, p2.start), ct.subarray(p3.start, p3.end), ct.subarray(p2.start, p2.end), ct.subarray(p3.end)]));
    await refused(/refused \(decrypt\): .*failed authentication: changed, reordered, or not from this file/, '--identity', k('age.txt'));
    const v = await cli('verify', key, '--quiet');
    expect(v.stdout).toMatch(/FAIL hash: part 2 /);
    // bytes appended after the final chunk
    await store(Buffer.concat([ct, Buffer.alloc(70_000, 1)]));
    await refused(/refused \(decrypt\): .*(data follows the final chunk|chunk \d+ .*failed authentication)/, '--identity', k('age.txt'));
    await refused(/refused \(size\): .*holds \d+ bytes, its manifest says/, '--encrypted');
    const longer = await cli('verify', key, '--quiet');
    expect(longer.code).toBe(65);
    expect(longer.stdout).toMatch(/FAIL size: (\S+ )?holds \d+ bytes, its manifest says/);
    await store(ct);
  });

  it('a changed header: refused as tampering (exit 65), not as a wrong key', async () => {
    const end = ct.indexOf('\n---') + 1;
    const header = ct.subarray(0, end).toString('latin1');
    // a character of the MAC swapped for another base64 character (a flipped bit could make it no base64
    // at all, which is a malformed header, not a changed one)
    const mac = Buffer.from(ct);
    mac[end + 6] = mac[end + 6] === 0x41 ? 0x42 : 0x41;
    await store(mac);
    await refused(/refused \(decrypt\): .*header MAC mismatch: the header was changed/, '--identity', k('age.txt'));
    // the recipient's stanza altered: the identity is one of the manifest's recipients, so this is no wrong key
    const stanza = header.indexOf('-> X25519 ') + 10;
    const changed = Buffer.from(ct);
    changed[stanza + 3] = changed[stanza + 3] === 0x41 ? 0x42 : 0x41;
    await store(changed);
    await refused(/refused \(decrypt\): .*header was changed/, '--identity', k('age.txt'));
    // a stanza added for the attacker's own key: the MAC no longer matches
    const b64 = (n: number): string => randomBytes(n).toString('base64').replace(/=+$/, '');
    const extra = Buffer.concat([Buffer.from(`${header}-> X25519 ${b64(32)}\n${b64(32)}\n`, 'latin1'), ct.subarray(end)]);
    await store(extra);
    await refused(/refused \(decrypt\): .*header MAC mismatch/, '--identity', k('age.txt'));
    await store(ct);
  });

  it('a whole new age file to the same public recipients: the sha256 refuses it; with its own manifest, only the signature does', async () => {
    const other = await readFile(fixturePath('etcd-small.db'));
    const e = new typage.Encrypter();
    e.addRecipient(recipient);
    const forged = Buffer.from(await e.encrypt(other));
    await store(forged);
    await refused(/refused \((size|hash)\)/, '--identity', k('age.txt'));
    // the attacker rewrites the manifest to match: without --allowed-signers nothing can tell
    const mKey = `etcd-backup/test/tamper/${name}.manifest.json`;
    const m = JSON.parse(JSON.stringify(manifest)) as Record<string, any>;
    m.snapshot.sha256 = sha256(other);
    m.snapshot.size = other.length;
    m.object.size = forged.length;
    delete m.object.partChecksums;
    await putObject(mKey, Buffer.from(JSON.stringify(m)));
    await rm(out, { recursive: true, force: true });
    const unsigned = await cli('fetch', key, '--identity', k('age.txt'), '--output', path.join(out, name));
    expect(unsigned.code, unsigned.stderr).toBe(0);
    await refused(/refused \(signature\): .*(snapshot|manifest) signature refused/, '--identity', k('age.txt'), '--allowed-signers', k('allowed_signers'));
    await putObject(mKey, manifestBytes);
    await store(ct);
    const back = await cli('verify', key, '--identity', k('age.txt'), '--allowed-signers', k('allowed_signers'), '--quiet');
    expect(back.code, back.stdout).toBe(0);
  });
});
