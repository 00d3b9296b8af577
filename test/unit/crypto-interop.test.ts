// age interop with two implementations we did not write: the `age` CLI (Debian package `age`, the Go
// reference) and the `age-encryption` npm package (typage, pure JS). ssh-keygen (openssh-client) makes
// the SSH keys. RUN_LARGE=1 adds a 1 GiB round trip through the CLI in both directions.
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { finished, pipeline } from 'node:stream/promises';
import * as typage from 'age-encryption';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AgeDecryption,
  ageDecryptor,
  ageEncryptor,
  checkAgeStructure,
  CHUNK_SIZE,
  KeyError,
  parseIdentities,
  parseRecipientsFile,
  type AgeEncryptor,
  type AgeIdentity,
  type AgeRecipient,
} from '../../agent/crypto/age.js';
import { writeHeader } from '../../agent/crypto/age-header.js';
import { payloadKey, sealChunks } from '../../agent/crypto/age-stream.js';

const PART = 128 * 1024;
const MAX = 64 << 20;
let dir: string;
let cliKeyFile: string; // age-keygen identity file
let cliRecipient: string;
let jsIdentity: string; // typage identity
let jsRecipient: string;
let sshKeyFile: string;
let sshPub: string;
let recipients: AgeRecipient[];
let ours: { cli: AgeIdentity[]; js: AgeIdentity[]; ssh: AgeIdentity[] };

function run(cmd: string, args: string[], input?: Buffer): Buffer {
  try {
    return execFileSync(cmd, args, { input: input ?? Buffer.alloc(0), maxBuffer: MAX, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { code?: string; stderr?: Buffer; status?: number };
    if (err.code === 'ENOENT') throw new Error(`${cmd} is not installed: these tests need the Debian packages age and openssh-client`, { cause: e });
    throw new Error(`${cmd} ${args.join(' ')} exited ${err.status}: ${err.stderr?.toString().trim()}`, { cause: e });
  }
}

/** Runs `cmd` expecting failure; returns its stderr. */
function runFails(cmd: string, args: string[], input: Buffer): string {
  try {
    execFileSync(cmd, args, { input, maxBuffer: MAX, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    return (e as { stderr: Buffer }).stderr.toString();
  }
  throw new Error(`${cmd} accepted the input`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'age-interop-'));
  cliKeyFile = join(dir, 'cli-key.txt');
  run('age-keygen', ['-o', cliKeyFile]);
  cliRecipient = run('age-keygen', ['-y', cliKeyFile]).toString().trim();
  jsIdentity = await typage.generateIdentity();
  jsRecipient = await typage.identityToRecipient(jsIdentity);
  sshKeyFile = join(dir, 'id_ed25519');
  run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'backup@test', '-f', sshKeyFile]);
  sshPub = (await readFile(`${sshKeyFile}.pub`, 'utf8')).trim();
  const recFile = `# the CLI's key, typage's key and an SSH key\n${cliRecipient}\n\n${jsRecipient}\n${sshPub}\n`;
  await writeFile(join(dir, 'recipients.txt'), recFile);
  recipients = parseRecipientsFile(recFile, 'recipients.txt');
  ours = {
    cli: parseIdentities(await readFile(cliKeyFile, 'utf8'), cliKeyFile),
    js: parseIdentities(`${jsIdentity}\n`, 'js.txt'),
    ssh: parseIdentities(await readFile(sshKeyFile, 'utf8'), sshKeyFile),
  };
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Ours, part by part in reverse order, parts of `partSize`. */
function oursEncrypt(plain: Buffer, to = recipients, partSize = PART): Buffer {
  const enc: AgeEncryptor = ageEncryptor(to, plain.length);
  const out: Buffer[] = [];
  const offsets: number[] = [];
  for (let o = 0; o < plain.length || offsets.length === 0; o += partSize) offsets.push(o);
  for (const o of offsets.reverse()) {
    const p = plain.subarray(o, o + partSize);
    const buf = Buffer.alloc(enc.partCiphertextSize(o, p.length));
    enc.encryptPartInto(buf, p, o);
    out.unshift(buf);
  }
  return Buffer.concat(out);
}

function oursDecrypt(ct: Buffer, ids: AgeIdentity[]): Buffer {
  const d = new AgeDecryption(ids);
  const out: Buffer[] = [];
  for (let i = 0; i < ct.length; i += 50_000) out.push(...d.update(ct.subarray(i, i + 50_000)));
  return Buffer.concat([...out, ...d.finish()]);
}

const cliDecrypt = (ct: Buffer, identityFile: string): Buffer => run('age', ['-d', '-i', identityFile], ct);
const jsEncrypt = async (plain: Buffer, to: string[]): Promise<Buffer> => {
  const e = new typage.Encrypter();
  for (const r of to) e.addRecipient(r);
  return Buffer.from(await e.encrypt(plain));
};
const jsDecrypt = async (ct: Buffer): Promise<Buffer> => {
  const d = new typage.Decrypter();
  d.addIdentity(jsIdentity);
  return Buffer.from(await d.decrypt(ct));
};

const SIZES: [string, number][] = [
  ['empty', 0],
  ['one byte', 1],
  ['exactly one chunk', CHUNK_SIZE],
  ['one chunk and one byte', CHUNK_SIZE + 1],
  ['several 128 KiB parts, the last short', 3 * PART + 1000],
  ['several 128 KiB parts, the last full', 2 * PART],
];

describe.each(SIZES)('%s', (_name, size) => {
  const plain = randomBytes(size);

  it('ours → age CLI (X25519 and ssh-ed25519 identities) and → typage', async () => {
    const ct = oursEncrypt(plain);
    expect(cliDecrypt(ct, cliKeyFile).equals(plain)).toBe(true);
    expect(cliDecrypt(ct, sshKeyFile).equals(plain)).toBe(true);
    expect((await jsDecrypt(ct)).equals(plain)).toBe(true);
  });

  it('age CLI (to all three, one a recipients file with an SSH key) → ours', () => {
    const ct = run('age', ['-r', cliRecipient, '-R', join(dir, 'recipients.txt')], plain);
    for (const ids of [ours.cli, ours.js, ours.ssh]) expect(oursDecrypt(ct, ids).equals(plain)).toBe(true);
    const c = checkAgeStructure();
    c.update(ct);
    expect(c.finish()).toMatchObject({ ok: true, plaintextSize: size, ciphertextSize: ct.length });
  });

  it('typage → ours', async () => {
    const ct = await jsEncrypt(plain, [jsRecipient, cliRecipient]);
    expect(oursDecrypt(ct, ours.js).equals(plain)).toBe(true);
    expect(oursDecrypt(ct, ours.cli).equals(plain)).toBe(true);
  });
});

describe('what the reference implementations refuse, ours refuses too', () => {
  let ct: Buffer;
  let headerLen: number; // header, MAC line and nonce
  beforeAll(() => {
    ct = oursEncrypt(randomBytes(3 * PART + 1000));
    headerLen = ct.indexOf('\n---') + 1 + 48 + 16;
  });

  it('a flipped byte in each part', () => {
    for (let part = 0; part < 4; part++) {
      const at = part === 0 ? headerLen + 10 : headerLen + part * 2 * (CHUNK_SIZE + 16) + 10;
      const bad = Buffer.from(ct);
      bad[at] = bad[at]! ^ 1;
      expect(runFails('age', ['-d', '-i', cliKeyFile], bad)).toMatch(/failed to decrypt and authenticate payload chunk/);
      expect(() => oursDecrypt(bad, ours.cli)).toThrow(`chunk ${2 * part} (`);
    }
  });

  it('a missing final chunk, a swapped pair of parts, the wrong key', () => {
    const cut = ct.subarray(0, ct.length - 1016);
    expect(runFails('age', ['-d', '-i', cliKeyFile], cut)).toMatch(/unexpected EOF/);
    expect(() => oursDecrypt(cut, ours.cli)).toThrow('not marked final');
    const p = 2 * (CHUNK_SIZE + 16);
    const swapped = Buffer.concat([
      ct.subarray(0, headerLen + p),
      ct.subarray(headerLen + 2 * p, headerLen + 3 * p),
      ct.subarray(headerLen + p, headerLen + 2 * p),
      ct.subarray(headerLen + 3 * p),
    ]);
    expect(runFails('age', ['-d', '-i', cliKeyFile], swapped)).toMatch(/failed to decrypt and authenticate payload chunk/);
    expect(() => oursDecrypt(swapped, ours.cli)).toThrow('chunk 2 (');
    const other = join(dir, 'other.txt');
    run('age-keygen', ['-o', other]);
    expect(runFails('age', ['-d', '-i', other], ct)).toMatch(/no identity matched/);
    expect(() => oursDecrypt(ct, parseIdentities(run('cat', [other]).toString(), other))).toThrow(/^no identity matches/);
  });
});

describe('parts of a fixed ciphertext size (as lib-storage cuts a body)', () => {
  it('assemble to a file both references decrypt', async () => {
    const plain = randomBytes(5 * CHUNK_SIZE + 999);
    const enc = ageEncryptor(recipients, plain.length);
    const parts: Buffer[] = [];
    for (let start = 0; start < enc.ciphertextSize; start += 100_000) {
      const end = Math.min(enc.ciphertextSize, start + 100_000);
      const need = enc.plaintextFor(start, end);
      const out = Buffer.alloc(end - start);
      enc.encryptRange(out, start, end, plain.subarray(need.offset, need.offset + need.length));
      parts.push(out);
    }
    const ct = Buffer.concat(parts);
    expect(cliDecrypt(ct, sshKeyFile).equals(plain)).toBe(true);
    expect((await jsDecrypt(ct)).equals(plain)).toBe(true);
  });
});

describe('headers with stanzas of unknown types', () => {
  it('are valid age to the CLI, and ours skips those stanzas too', () => {
    const fileKey = randomBytes(16);
    const nonce = randomBytes(16);
    const plain = randomBytes(1000);
    const stanzas = [
      { type: 'example.com/grease', args: ['+/='], body: randomBytes(48) },
      ...recipients.map((r) => r.wrap(fileKey)),
      { type: 'x', args: [], body: Buffer.alloc(0) },
    ];
    const payload = Buffer.alloc(plain.length + 16);
    sealChunks(payloadKey(fileKey, nonce), payload, plain, 0, true);
    const ct = Buffer.concat([writeHeader(fileKey, stanzas), nonce, payload]);
    expect(cliDecrypt(ct, cliKeyFile).equals(plain)).toBe(true);
    expect(cliDecrypt(ct, sshKeyFile).equals(plain)).toBe(true);
    expect(oursDecrypt(ct, ours.ssh).equals(plain)).toBe(true);
  });
});

describe('SSH identities', () => {
  it('refuses a passphrase-protected key, naming the file', async () => {
    const locked = join(dir, 'id_locked');
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', 'correct horse', '-f', locked]);
    expect(() => parseIdentities(run('cat', [locked]).toString(), locked)).toThrow(KeyError);
    expect(() => parseIdentities(run('cat', [locked]).toString(), locked)).toThrow(`${locked}: the private key is protected by a passphrase`);
  });

  it('encrypts to an ssh-ed25519 recipient given alone', () => {
    const plain = randomBytes(1000);
    const ct = oursEncrypt(plain, parseRecipientsFile(`${sshPub}\n`, 'ssh.txt'));
    expect(cliDecrypt(ct, sshKeyFile).equals(plain)).toBe(true);
    expect(runFails('age', ['-d', '-i', cliKeyFile], ct)).toMatch(/no identity matched/);
  });
});

/** Deterministic fast pseudo-random bytes (AES-CTR over zeros), so 1 GiB needs no RNG time. */
function* prng(total: number, step: number): Generator<Buffer> {
  const c = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16));
  const zeros = Buffer.alloc(step);
  for (let o = 0; o < total; o += step) yield c.update(zeros.subarray(0, Math.min(step, total - o)));
}

describe.runIf(process.env.RUN_LARGE === '1')('1 GiB through the CLI both ways', () => {
  const SIZE = 1 << 30;
  const PART_SIZE = 8 << 20;

  it('ours (8 MiB parts) → age -d, and age → ours (Transform)', async () => {
    const ctFile = join(dir, 'big.age');
    const hash = createHash('sha256');
    const enc = ageEncryptor(recipients, SIZE);
    const out = createWriteStream(ctFile);
    const t0 = process.hrtime.bigint();
    let offset = 0;
    let encSeconds = 0;
    const buf = Buffer.alloc(enc.partCiphertextSize(0, PART_SIZE));
    for (const plain of prng(SIZE, PART_SIZE)) {
      hash.update(plain);
      const e0 = process.hrtime.bigint();
      const n = enc.encryptPartInto(buf, plain, offset);
      encSeconds += Number(process.hrtime.bigint() - e0) / 1e9;
      if (!out.write(Buffer.from(buf.subarray(0, n)))) await once(out, 'drain');
      offset += plain.length;
    }
    out.end();
    await finished(out);
    const want = hash.digest('hex');
    const decHash = createHash('sha256');
    const child = spawn('age', ['-d', '-i', cliKeyFile, ctFile]);
    await pipeline(child.stdout, decHash);
    expect(decHash.digest('hex')).toBe(want);
    console.log(
      `ours encrypt 1 GiB: ${(1024 / encSeconds).toFixed(0)} MiB/s (encryption only), ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(1)} s with CLI decrypt`,
    );

    const cliCt = join(dir, 'big-cli.age');
    const enc2 = spawn('age', ['-r', cliRecipient, '-o', cliCt]);
    await pipeline(async function* () {
      yield* prng(SIZE, PART_SIZE);
    }, enc2.stdin);
    await once(enc2, 'close');
    const ourHash = createHash('sha256');
    const d0 = process.hrtime.bigint();
    await pipeline(createReadStream(cliCt, { highWaterMark: 1 << 20 }), ageDecryptor(ours.cli), ourHash);
    console.log(`ours decrypt 1 GiB: ${(1024 / (Number(process.hrtime.bigint() - d0) / 1e9)).toFixed(0)} MiB/s incl. reading`);
    expect(ourHash.digest('hex')).toBe(want);
  }, 600_000);
});
