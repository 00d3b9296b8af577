// OpenSSH key formats, for Ed25519 only: `ssh-ed25519 AAAA… comment` public lines, the wire encoding
// (RFC 4251 strings), and unencrypted `openssh-key-v1` private key files. Also the Edwards-to-Montgomery
// maps age uses to encrypt to an SSH Ed25519 key.
import { createHash, sign as edSign, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import { KeyError } from './errors.js';
import { ed25519PrivateKey, ed25519PublicOf } from './primitives.js';

export const SSH_ED25519 = 'ssh-ed25519';

/** Reads RFC 4251 values; every read checks bounds and throws a plain Error naming what was short. */
export class SshReader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  get remaining(): number {
    return this.buf.length - this.pos;
  }
  u32(what: string): number {
    if (this.remaining < 4) throw new Error(`${what} is cut short`);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  bytes(n: number, what: string): Buffer {
    if (this.remaining < n) throw new Error(`${what} is cut short`);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }
  string(what: string): Buffer {
    return this.bytes(this.u32(what), what);
  }
  text(what: string): string {
    return this.string(what).toString('utf8');
  }
}

export function sshString(value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(v.length);
  return Buffer.concat([len, v]);
}

/** The wire form of an Ed25519 public key: string "ssh-ed25519", string key. */
export function ed25519Blob(pub: Buffer): Buffer {
  return Buffer.concat([sshString(SSH_ED25519), sshString(pub)]);
}

/** The 32-byte key inside an `ssh-ed25519` wire blob, or a description of why it is not one. */
export function ed25519FromBlob(blob: Buffer): Buffer | string {
  try {
    const r = new SshReader(blob);
    const type = r.text('key type');
    if (type !== SSH_ED25519) return `is a ${printable(type)} key, not ssh-ed25519`;
    const pub = r.string('public key');
    if (pub.length !== 32 || r.remaining !== 0) return 'is not a well-formed ssh-ed25519 key';
    return Buffer.from(pub);
  } catch {
    return 'is not a well-formed ssh-ed25519 key';
  }
}

/** Key type names are short ASCII words; anything else is not repeated back. */
function printable(s: string): string {
  return /^[A-Za-z0-9@.+-]{1,64}$/.test(s) ? `'${s}'` : 'non-ssh-ed25519';
}

export interface SshPublicKey {
  pub: Buffer;
  blob: Buffer;
  comment: string;
}

/**
 * Parses `ssh-ed25519 AAAA… [comment]`. `where` prefixes problems ("recipients.txt:3"). Other SSH key
 * types are named in the refusal; their key text is not repeated.
 */
export function parseSshPublicLine(line: string, where: string): SshPublicKey {
  const fields = line.trim().split(/[ \t]+/);
  const [type, data] = fields;
  if (type !== SSH_ED25519) {
    if (type && /^(ssh-|ecdsa-|sk-)/.test(type)) throw new KeyError(`${where}: ${printable(type)} SSH keys are not supported; use an ssh-ed25519 key`);
    throw new KeyError(`${where}: not an ssh-ed25519 public key`);
  }
  if (!data || !/^[A-Za-z0-9+/]+={0,2}$/.test(data)) throw new KeyError(`${where}: ssh-ed25519 key has no base64 key data`);
  const blob = Buffer.from(data, 'base64');
  if (blob.toString('base64') !== data) throw new KeyError(`${where}: ssh-ed25519 key data is not canonical base64`);
  const pub = ed25519FromBlob(blob);
  if (typeof pub === 'string') throw new KeyError(`${where}: key data ${pub}`);
  return { pub, blob, comment: fields.slice(2).join(' ') };
}

export function sshPublicLine(pub: Buffer, comment = ''): string {
  const line = `${SSH_ED25519} ${ed25519Blob(pub).toString('base64')}`;
  return comment ? `${line} ${comment}` : line;
}

/** `SHA256:…` as `ssh-keygen -l` prints it. */
export function sshFingerprint(pub: Buffer): string {
  return `SHA256:${createHash('sha256').update(ed25519Blob(pub)).digest('base64').replace(/=+$/, '')}`;
}

/** An unencrypted OpenSSH Ed25519 private key. The seed stays inside; printing the object shows the public key. */
export class SshEd25519PrivateKey {
  readonly #key: KeyObject;
  readonly #seed: Buffer;
  constructor(
    seed: Buffer,
    readonly publicKey: Buffer,
    readonly comment: string,
  ) {
    this.#seed = Buffer.from(seed);
    this.#key = ed25519PrivateKey(this.#seed);
  }
  get publicLine(): string {
    return sshPublicLine(this.publicKey, this.comment);
  }
  get fingerprint(): string {
    return sshFingerprint(this.publicKey);
  }
  /** Ed25519 signature (deterministic, RFC 8032) over `data`. */
  sign(data: Buffer): Buffer {
    return edSign(null, data, this.#key);
  }
  /** age's X25519 scalar for this key: the first half of SHA-512(seed), the Ed25519 secret scalar. */
  x25519Scalar(): Buffer {
    return createHash('sha512').update(this.#seed).digest().subarray(0, 32);
  }
  toString(): string {
    return `ssh-ed25519 private key ${this.fingerprint}`;
  }
  toJSON(): string {
    return this.toString();
  }
  [inspect.custom](): string {
    return this.toString();
  }
}

const BEGIN = '-----BEGIN OPENSSH PRIVATE KEY-----';
const END = '-----END OPENSSH PRIVATE KEY-----';
const AUTH_MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');

/** True when `text` looks like a private key of some kind (so identity parsing can route it here). */
export function looksLikePrivateKeyPem(text: string): boolean {
  return /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(text);
}

/**
 * Parses an OpenSSH private key file (`ssh-keygen -t ed25519`). Refuses, naming `file`: passphrase-protected
 * keys, other key types, PEM/PKCS#8 files, and anything malformed. Never includes key material in errors.
 */
export function parseOpenSshPrivateKey(text: string, file: string): SshEd25519PrivateKey {
  const start = text.indexOf(BEGIN);
  const end = text.indexOf(END);
  if (start < 0 || end < start) {
    if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(text)) {
      throw new KeyError(`${file}: the private key is protected by a passphrase; the agent needs an unencrypted ssh-ed25519 key (ssh-keygen -t ed25519 -N '')`);
    }
    const pem = /-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----/.exec(text);
    if (pem) throw new KeyError(`${file}: a PEM private key (${pem[1]?.trim() || 'PKCS#8'}); the agent reads OpenSSH ssh-ed25519 keys (ssh-keygen -t ed25519)`);
    throw new KeyError(`${file}: not an OpenSSH private key (no ${BEGIN} line)`);
  }
  const body = text.slice(start + BEGIN.length, end).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body)) throw new KeyError(`${file}: the OpenSSH private key is not valid base64`);
  const raw = Buffer.from(body, 'base64');
  try {
    return parseKeyV1(raw, file);
  } catch (e) {
    if (e instanceof KeyError) throw e;
    throw new KeyError(`${file}: malformed OpenSSH private key: ${(e as Error).message}`);
  }
}

function parseKeyV1(raw: Buffer, file: string): SshEd25519PrivateKey {
  if (raw.length < AUTH_MAGIC.length || !raw.subarray(0, AUTH_MAGIC.length).equals(AUTH_MAGIC)) {
    throw new KeyError(`${file}: not an openssh-key-v1 private key`);
  }
  const r = new SshReader(raw.subarray(AUTH_MAGIC.length));
  const cipher = r.text('cipher name');
  const kdf = r.text('kdf name');
  r.string('kdf options');
  if (cipher !== 'none' || kdf !== 'none') {
    throw new KeyError(
      `${file}: the private key is protected by a passphrase; the agent needs an unencrypted ssh-ed25519 key (remove it with ssh-keygen -p -N '' -f ${file}, and keep the file mode 0600)`,
    );
  }
  const count = r.u32('key count');
  if (count !== 1) throw new KeyError(`${file}: holds ${count} keys; the agent reads files with exactly one`);
  const pubBlob = r.string('public key');
  const pub = ed25519FromBlob(pubBlob);
  if (typeof pub === 'string') throw new KeyError(`${file}: the key ${pub}; the agent signs and decrypts with ssh-ed25519 keys only`);
  const secret = new SshReader(r.string('private section'));
  if (r.remaining !== 0) throw new Error('data after the private section');
  if (secret.u32('check') !== secret.u32('check')) throw new Error('check integers differ');
  const type = secret.text('key type');
  if (type !== 'ssh-ed25519') throw new Error('private section holds another key type');
  const pub2 = secret.string('public key');
  const priv = secret.string('private key');
  const comment = secret.text('comment');
  // the rest is padding 1, 2, 3, … up to the cipher block size (8 for "none")
  const pad = secret.bytes(secret.remaining, 'padding');
  if (pad.length >= 8 || pad.some((b, i) => b !== i + 1)) throw new Error('bad padding');
  if (priv.length !== 64 || !pub2.equals(pub) || !priv.subarray(32).equals(pub)) throw new Error('inconsistent key halves');
  const key = new SshEd25519PrivateKey(priv.subarray(0, 32), pub, comment);
  if (!ed25519PublicOf(ed25519PrivateKey(priv.subarray(0, 32))).equals(pub)) throw new Error('the public key does not belong to the private key');
  return key;
}

// Curve25519 field prime 2^255 - 19.
const P = (1n << 255n) - 19n;

function modPow(base: bigint, exp: bigint): bigint {
  let result = 1n;
  let b = base % P;
  let e = exp;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return result;
}

/**
 * The X25519 public point of an Ed25519 public key: Montgomery u = (1 + y) / (1 - y), where y is the
 * Edwards y-coordinate (the key, little-endian, without its sign bit). Undefined for y ≥ p or y = 1.
 */
export function ed25519ToX25519Public(pub: Buffer): Buffer | undefined {
  if (pub.length !== 32) return undefined;
  const le = Buffer.from(pub);
  le[31] = le[31]! & 0x7f;
  const y = BigInt(`0x${Buffer.from(le).reverse().toString('hex')}`);
  if (y >= P || y === 1n) return undefined;
  const u = (((1n + y) % P) * modPow((1n - y + P) % P, P - 2n)) % P;
  return Buffer.from(u.toString(16).padStart(64, '0'), 'hex').reverse();
}
