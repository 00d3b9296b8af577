// SSHSIG against OpenSSH's own ssh-keygen (Debian openssh-client): keys it generates, signatures it makes
// and checks. Ed25519 is deterministic, so our armored signature must equal ssh-keygen's byte for byte.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyError } from '../../agent/crypto/errors.js';
import {
  matchPatternList,
  parseAllowedSigners,
  parseOpenSshPrivateKey,
  SNAPSHOT_NAMESPACE,
  sshsigSign,
  sshsigVerify,
  type SshEd25519PrivateKey,
} from '../../agent/crypto/sshsig.js';

let dir: string;
let keyFile: string;
let key: SshEd25519PrivateKey;
let otherFile: string;
let other: SshEd25519PrivateKey;
let seq = 0;

function sshKeygen(args: string[], input?: Buffer): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('ssh-keygen', args, { input: input ?? Buffer.alloc(0) });
  if (r.error) throw new Error(`ssh-keygen could not run (Debian package openssh-client): ${r.error.message}`);
  return { status: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

async function newKey(name: string, extra: string[] = []): Promise<string> {
  const f = join(dir, name);
  const r = sshKeygen(['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@test`, '-f', f, ...extra]);
  if (r.status !== 0) throw new Error(r.stderr);
  return f;
}

const sha512 = (b: Buffer): Buffer => createHash('sha512').update(b).digest();

/** Writes data and (unless empty: ssh-keygen -Y sign will write it) a signature; returns their paths. */
async function files(data: Buffer, sig: string): Promise<{ data: string; sig: string }> {
  const n = ++seq;
  const d = join(dir, `data-${n}`);
  await writeFile(d, data);
  if (sig) await writeFile(`${d}.sig`, sig);
  return { data: d, sig: `${d}.sig` };
}

/** ssh-keygen -Y verify, the reference verdict. */
async function keygenVerify(data: Buffer, sig: string, allowed: string, principal: string, namespace = SNAPSHOT_NAMESPACE) {
  const f = await files(data, sig);
  const a = join(dir, `allowed-${seq}`);
  await writeFile(a, allowed);
  return sshKeygen(['-Y', 'verify', '-f', a, '-I', principal, '-n', namespace, '-s', f.sig], data);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sshsig-'));
  keyFile = await newKey('signer');
  key = parseOpenSshPrivateKey(await readFile(keyFile, 'utf8'), keyFile);
  otherFile = await newKey('other');
  other = parseOpenSshPrivateKey(await readFile(otherFile, 'utf8'), otherFile);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('OpenSSH private keys', () => {
  it('reads an ssh-keygen ed25519 key: public line and fingerprint as ssh-keygen prints them', async () => {
    expect(key.publicLine).toBe((await readFile(`${keyFile}.pub`, 'utf8')).trim());
    expect(sshKeygen(['-l', '-f', keyFile]).stdout).toContain(key.fingerprint);
    // printing the key object shows only public facts
    expect(String(key)).toBe(`ssh-ed25519 private key ${key.fingerprint}`);
    expect(JSON.stringify({ key })).not.toMatch(/BEGIN|[A-Za-z0-9+/]{60}/);
  });

  it('refuses passphrase-protected, RSA, PEM and damaged keys, naming the file', async () => {
    const locked = await newKey('locked', ['-N', 'hunter2 hunter2']);
    expect(() => parseOpenSshPrivateKey(sshKeygenRead(locked), locked)).toThrow(`${locked}: the private key is protected by a passphrase`);
    const rsa = join(dir, 'rsa');
    sshKeygen(['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-f', rsa]);
    expect(() => parseOpenSshPrivateKey(sshKeygenRead(rsa), rsa)).toThrow(`${rsa}: the key is a 'ssh-rsa' key, not ssh-ed25519`);
    const pem = join(dir, 'rsa-pem');
    sshKeygen(['-q', '-t', 'rsa', '-b', '2048', '-N', '', '-m', 'PEM', '-f', pem]);
    expect(() => parseOpenSshPrivateKey(sshKeygenRead(pem), pem)).toThrow(`${pem}: a PEM private key (RSA)`);
    const text = sshKeygenRead(keyFile);
    const lines = text.split('\n');
    lines[3] = lines[3]!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
    expect(() => parseOpenSshPrivateKey(lines.join('\n'), 'damaged')).toThrow(KeyError);
    expect(() => parseOpenSshPrivateKey('hello', 'k')).toThrow('k: not an OpenSSH private key');
    expect(() => parseOpenSshPrivateKey(text.slice(0, 200), 'cut')).toThrow(/^cut: /);
  });
});

function sshKeygenRead(f: string): string {
  return execFileSync('cat', [f], { encoding: 'utf8' });
}

describe('signing', () => {
  it.each([
    ['empty', 0],
    ['small', 100],
    ['1 MiB', 1 << 20],
  ])('equals ssh-keygen -Y sign byte for byte (%s data)', async (_n, size) => {
    const data = randomBytes(size);
    const f = await files(data, '');
    const r = sshKeygen(['-Y', 'sign', '-f', keyFile, '-n', SNAPSHOT_NAMESPACE, f.data]);
    expect(r.status).toBe(0);
    const theirs = await readFile(`${f.data}.sig`, 'utf8');
    expect(sshsigSign({ privateKey: key, namespace: SNAPSHOT_NAMESPACE, digest: sha512(data) })).toBe(theirs);
  });

  it('is verified by ssh-keygen -Y verify', async () => {
    const data = randomBytes(5000);
    const sig = sshsigSign({ privateKey: key, namespace: SNAPSHOT_NAMESPACE, digest: sha512(data) });
    const r = await keygenVerify(data, sig, `backup@cluster-a ${key.publicLine}\n`, 'backup@cluster-a');
    expect(r).toMatchObject({ status: 0, stdout: expect.stringContaining('Good "etcd-backup-agent" signature for backup@cluster-a') });
  });

  it('refuses a digest of the wrong size and an empty namespace', () => {
    expect(() => sshsigSign({ privateKey: key, namespace: SNAPSHOT_NAMESPACE, digest: Buffer.alloc(32) })).toThrow('a sha512 digest is 64 bytes');
    expect(() => sshsigSign({ privateKey: key, namespace: '', digest: Buffer.alloc(64) })).toThrow('namespace');
  });
});

describe('verifying', () => {
  const data = randomBytes(3000);
  let theirs: string; // made by ssh-keygen
  let allowed: string;
  beforeAll(async () => {
    const f = await files(data, '');
    expect(sshKeygen(['-Y', 'sign', '-f', keyFile, '-n', SNAPSHOT_NAMESPACE, f.data]).status).toBe(0);
    theirs = await readFile(`${f.data}.sig`, 'utf8');
    allowed = `# signers\n\nops@example.com,backup@cluster-a namespaces="etcd-backup-agent,file" ${key.publicLine}\n`;
  });
  const verify = (sig: string, d: Buffer, principal?: string, ns = SNAPSHOT_NAMESPACE, signers = allowed) =>
    sshsigVerify(sig, sha512(d), ns, parseAllowedSigners(signers, 'allowed_signers'), principal === undefined ? {} : { principal });

  it("accepts ssh-keygen's signature and says which principal matched", () => {
    expect(verify(theirs, data, 'backup@cluster-a')).toEqual({ ok: true, principal: 'backup@cluster-a', fingerprint: key.fingerprint, line: 3 });
    expect(verify(theirs, data)).toMatchObject({ ok: true, principal: 'ops@example.com,backup@cluster-a' });
  });

  it('refuses, with the same verdict as ssh-keygen, other data, another namespace, an unlisted key', async () => {
    const cases: [string, Buffer, string, string, string, string][] = [
      ['other data', randomBytes(3000), 'backup@cluster-a', SNAPSHOT_NAMESPACE, allowed, 'signature'],
      ['other namespace', data, 'backup@cluster-a', 'file', allowed, 'namespace'],
      ['unlisted key', data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `backup@cluster-a ${other.publicLine}\n`, 'key_not_allowed'],
      ['other principal', data, 'eve@example.com', SNAPSHOT_NAMESPACE, allowed, 'key_not_allowed'],
      ['namespace not allowed', data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `backup@cluster-a namespaces="file" ${key.publicLine}\n`, 'key_not_allowed'],
      ['expired', data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `backup@cluster-a valid-before="20200101Z" ${key.publicLine}\n`, 'key_not_allowed'],
      ['listed as a CA only', data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `backup@cluster-a cert-authority ${key.publicLine}\n`, 'key_not_allowed'],
      ['negated principal', data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `*@cluster-a,!backup@* ${key.publicLine}\n`, 'key_not_allowed'],
    ];
    for (const [name, d, principal, ns, signers, reason] of cases) {
      const ref = await keygenVerify(d, theirs, signers, principal, ns);
      expect(ref.status, `${name}: ssh-keygen accepted`).not.toBe(0);
      expect(verify(theirs, d, principal, ns, signers), name).toMatchObject({ ok: false, reason });
    }
    expect(verify(theirs, data, 'backup@cluster-a', SNAPSHOT_NAMESPACE, `*@cluster-a valid-after="20200101" ${key.publicLine}\n`)).toMatchObject({ ok: true });
    expect(verify(theirs, data, 'eve@example.com')).toMatchObject({ detail: expect.stringContaining('line 3 lists it for other principals') });
  });

  it('says what is wrong with a damaged signature', () => {
    expect(verify('hello', data)).toMatchObject({ ok: false, reason: 'armor' });
    expect(verify(theirs.replace('-----END SSH SIGNATURE-----', ''), data)).toMatchObject({ ok: false, reason: 'armor' });
    const lines = theirs.split('\n');
    lines[2] = lines[2]!.slice(0, 10) + (lines[2]![10] === 'A' ? 'B' : 'A') + lines[2]!.slice(11);
    expect(verify(lines.join('\n'), data)).toMatchObject({ ok: false });
    const blob = Buffer.from(theirs.split('\n').slice(1, -2).join(''), 'base64');
    const rearmor = (b: Buffer): string => `-----BEGIN SSH SIGNATURE-----\n${b.toString('base64')}\n-----END SSH SIGNATURE-----\n`;
    expect(verify(rearmor(Buffer.concat([blob, Buffer.from([0])])), data)).toMatchObject({
      ok: false,
      reason: 'format',
      detail: expect.stringContaining('after the signature'),
    });
    const v2 = Buffer.from(blob);
    v2[9] = 2;
    expect(verify(rearmor(v2), data)).toMatchObject({ ok: false, reason: 'format', detail: expect.stringContaining('version 2') });
    expect(verify(rearmor(blob.subarray(0, 100)), data)).toMatchObject({ ok: false, reason: 'format' });
    // CRLF line endings are read as ssh-keygen reads them
    expect(verify(theirs.replace(/\n/g, '\r\n'), data, 'backup@cluster-a')).toMatchObject({ ok: true });
  });

  it('reads a sha256 signature only against a sha256 digest', async () => {
    const f = await files(data, '');
    expect(sshKeygen(['-Y', 'sign', '-O', 'hashalg=sha256', '-f', keyFile, '-n', SNAPSHOT_NAMESPACE, f.data]).status).toBe(0);
    const s256 = await readFile(`${f.data}.sig`, 'utf8');
    expect(verify(s256, data)).toMatchObject({ ok: false, reason: 'hash_alg' });
    const d256 = createHash('sha256').update(data).digest();
    expect(sshsigVerify(s256, d256, SNAPSHOT_NAMESPACE, parseAllowedSigners(allowed, 'a'), { hashAlg: 'sha256' })).toMatchObject({ ok: true });
  });
});

describe('allowed_signers', () => {
  it('reads principals, options and keys, with quoted fields and comments', () => {
    const k = key.publicLine;
    const s = parseAllowedSigners(`# c\n"a@b c@d" ${k}\n  x@y NAMESPACES="etcd-*",valid-after="202001011200Z" ${k} comment here\n`, 'f');
    expect(s).toHaveLength(2);
    expect(s[0]).toMatchObject({ line: 2, principals: 'a@b c@d', certAuthority: false, keyType: 'ssh-ed25519' });
    expect(s[1]).toMatchObject({ line: 3, principals: 'x@y', namespaces: 'etcd-*', validAfter: Date.UTC(2020, 0, 1, 12) / 1000 });
  });

  it('names the line of each problem', () => {
    const k = key.publicLine;
    expect(() => parseAllowedSigners(`a@b\n`, 'f')).toThrow('f:1: missing key');
    expect(() => parseAllowedSigners(`\na@b bogus=1 ${k}\n`, 'f')).toThrow(/^f:2: unknown or malformed option/);
    expect(() => parseAllowedSigners(`a@b namespaces=x ${k}\n`, 'f')).toThrow(/^f:1: unknown or malformed option/);
    expect(() => parseAllowedSigners(`a@b valid-after="2020" ${k}\n`, 'f')).toThrow('f:1: invalid valid-after time');
    expect(() => parseAllowedSigners(`a@b valid-after="20200101",valid-before="20190101" ${k}\n`, 'f')).toThrow('f:1: valid-before is not after valid-after');
    expect(() => parseAllowedSigners(`a@b ssh-ed25519 !!!\n`, 'f')).toThrow('f:1: missing or invalid base64 key data');
    expect(() => parseAllowedSigners(`a@b ssh-rsa ${k.split(' ')[1]}\n`, 'f')).toThrow('f:1: the key data does not hold a ssh-rsa key');
  });

  it('matches OpenSSH pattern lists', () => {
    expect(matchPatternList('backup@cluster-a', '*@cluster-?')).toBe(true);
    expect(matchPatternList('backup@cluster-ab', '*@cluster-?')).toBe(false);
    expect(matchPatternList('backup@cluster-a', '*,!backup@*')).toBe(false);
    expect(matchPatternList('a.b', 'a?b')).toBe(true);
    expect(matchPatternList('axb', 'a.b')).toBe(false);
    expect(matchPatternList('x', '!y')).toBe(false);
  });
});
