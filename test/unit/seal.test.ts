// Sealing from config (crypto/seal.ts): the keys an operator makes with age-keygen and ssh-keygen are taken;
// every wrong one is a config error that names its key, the file and the fix, all problems at once, and
// never repeats a secret. What it seals is read by the age CLI and ssh-keygen.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../agent/config/parse.js';
import { sealingFrom } from '../../agent/crypto/seal.js';
import { createHash } from 'node:crypto';

let dir: string;
const f = (n: string): string => join(dir, n);
let recipient: string;

function tool(cmd: string, args: string[], input?: Buffer): Buffer {
  return execFileSync(cmd, args, { input: input ?? Buffer.alloc(0), stdio: ['pipe', 'pipe', 'pipe'] });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'seal-'));
  tool('age-keygen', ['-o', f('age.txt')]);
  recipient = tool('age-keygen', ['-y', f('age.txt')])
    .toString()
    .trim();
  tool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'signer', '-f', f('sign')]);
  tool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'pw', '-f', f('locked')]);
  tool('ssh-keygen', ['-q', '-t', 'ecdsa', '-N', '', '-f', f('ecdsa')]);
  await writeFile(f('empty-recipients'), '# none yet\n\n');
  await writeFile(f('recipients'), `# escrow\n${recipient}\n${(await readFile(f('sign.pub'), 'utf8')).trim()}\n`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const cfg = (encryption: { recipients?: string[]; recipientsFile?: string }, keyFile?: string) => ({
  encryption: { recipients: encryption.recipients ?? [], ...(encryption.recipientsFile ? { recipientsFile: encryption.recipientsFile } : {}) },
  signing: keyFile ? { keyFile } : {},
});

function issues(c: ReturnType<typeof cfg>): { key: string; problem: string; fix: string }[] {
  try {
    sealingFrom(c, 'cfg.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues;
  }
  throw new Error('accepted');
}

describe('sealingFrom', () => {
  it('nothing configured: no sealing', () => {
    expect(sealingFrom(cfg({}))).toBeUndefined();
  });

  it('10,000 bad recipients: every one is an issue, but the message shows 20 and counts the rest', () => {
    let err: ConfigError | undefined;
    try {
      sealingFrom(cfg({ recipients: Array.from({ length: 10_000 }, (_, i) => `x${i}`) }), 'cfg.yaml');
    } catch (e) {
      err = e as ConfigError;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect(err!.issues).toHaveLength(10_000);
    const lines = err!.message.split('\n');
    expect(lines).toHaveLength(21);
    expect(lines[19]).toMatch(/^cfg\.yaml: encryption\.recipients\[19\]: /);
    expect(lines[20]).toBe('cfg.yaml: 9980 more problems not shown; fix those above and run again to see them');
  });

  it('age-keygen and ssh-keygen keys: encrypts to every recipient, signs for ssh-keygen -Y verify', async () => {
    const s = sealingFrom(cfg({ recipients: [recipient], recipientsFile: f('recipients') }, f('sign')))!;
    // the listed key, then the file's two (the same age key again, and an SSH key)
    expect(s.encrypt!.recipients).toHaveLength(3);
    const plain = Buffer.from('a snapshot, in one part');
    const enc = s.encrypt!.open(plain.length);
    const out = Buffer.alloc(enc.header.length + enc.cipherLength(plain.length));
    enc.header.copy(out);
    const n = enc.encryptInto(out.subarray(enc.header.length), plain, 0, true);
    expect(enc.header.length + n).toBe(enc.ciphertextSize);
    await writeFile(f('ct'), out.subarray(0, enc.ciphertextSize));
    expect(tool('age', ['-d', '-i', f('age.txt'), f('ct')])).toEqual(plain);
    expect(tool('age', ['-d', '-i', f('sign'), f('ct')])).toEqual(plain);

    expect(s.sign!.publicKey).toBe((await readFile(f('sign.pub'), 'utf8')).trim());
    await writeFile(f('x.sig'), s.sign!.signDigest(createHash('sha256').update(plain).digest()));
    await writeFile(f('allowed'), `node-a ${s.sign!.publicKey}\n`);
    const v = spawnSync('ssh-keygen', ['-Y', 'verify', '-f', f('allowed'), '-I', 'node-a', '-n', 'etcd-backup-agent', '-s', f('x.sig')], { input: plain });
    expect(v.status, v.stderr.toString()).toBe(0);
  });

  it('refuses each bad key with its config key, the file and the fix, all at once, without repeating secrets', async () => {
    const secret = (await readFile(f('age.txt'), 'utf8')).split('\n').find((l) => l.startsWith('AGE-SECRET-KEY-'))!;
    await writeFile(f('unreadable'), 'x');
    await chmod(f('unreadable'), 0);
    const all = issues(cfg({ recipients: ['age1qqqq', secret, recipient], recipientsFile: f('empty-recipients') }, f('locked')));
    expect(all.map((i) => i.key)).toEqual(['encryption.recipients[0]', 'encryption.recipients[1]', 'encryption.recipientsFile', 'signing.keyFile']);
    expect(all[0]!.problem).toBe('invalid age1 recipient: it is too short');
    expect(all[0]!.fix).toMatch(/age1… recipient \(age-keygen -y KEYFILE\)/);
    expect(all[2]!.problem).toMatch(/empty-recipients: no recipients/);
    expect(all[3]!.problem).toMatch(/locked.*passphrase/);
    expect(all[3]!.fix).toMatch(/ssh-keygen -t ed25519 -N "" -f FILE/);
    expect(JSON.stringify(all)).not.toContain(secret.slice(15));

    const cases: [string, RegExp][] = [
      [f('ecdsa'), /ecdsa|ed25519/i],
      [f('sign.pub'), /sign\.pub/],
      [f('age.txt'), /age\.txt/],
      [f('missing'), /missing cannot be read \(ENOENT\)/],
    ];
    if (process.getuid?.() !== 0) cases.push([f('unreadable'), /unreadable cannot be read \(EACCES\)/]);
    for (const [file, re] of cases) {
      const [i] = issues(cfg({}, file));
      expect(i!.key).toBe('signing.keyFile');
      expect(i!.problem).toMatch(re);
      expect(i!.fix).toMatch(/ssh-keygen -t ed25519/);
    }
    const [r] = issues(cfg({ recipientsFile: f('missing-recipients') }));
    expect(r).toMatchObject({ key: 'encryption.recipientsFile' });
    expect(r!.problem).toMatch(/missing-recipients cannot be read \(ENOENT\)/);
    const [bad] = issues(cfg({ recipientsFile: f('sign') }));
    expect(bad!.key).toBe('encryption.recipientsFile');
    expect(bad!.problem).not.toContain('PRIVATE KEY-----\n');
  });
});
