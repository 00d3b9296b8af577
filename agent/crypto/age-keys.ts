// age recipients (who a snapshot is encrypted to) and identities (what decrypts it), native X25519 and
// SSH Ed25519 (age's `ssh-ed25519` stanza type), with the stanza each one writes or opens.
import { createHash, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { inspect } from 'node:util';
import { bech32Decode, bech32Encode } from './bech32.js';
import { AgeError, KeyError } from './errors.js';
import { b64, hkdf, openOnce, sealOnce, unb64, x25519, x25519PrivateKey, x25519PublicOf } from './primitives.js';
import { ed25519Blob, ed25519ToX25519Public, looksLikePrivateKeyPem, parseOpenSshPrivateKey, parseSshPublicLine } from './ssh-keys.js';

export interface Stanza {
  type: string;
  args: string[];
  body: Buffer;
}

const X25519_LABEL = 'age-encryption.org/v1/X25519';
const SSH_LABEL = 'age-encryption.org/v1/ssh-ed25519';
const RECIPIENT_HRP = 'age';
const IDENTITY_HRP = 'age-secret-key-';

export interface AgeRecipient {
  readonly type: 'X25519' | 'ssh-ed25519';
  /** The public form as a user writes it: `age1…` or `ssh-ed25519 AAAA…` (comment dropped). */
  readonly text: string;
  wrap(fileKey: Buffer): Stanza;
}

function ephemeral(): { key: KeyObject; share: Buffer } {
  const { privateKey } = generateKeyPairSync('x25519');
  return { key: privateKey, share: x25519PublicOf(privateKey) };
}

/** A recipient point that gives an all-zero shared secret with any scalar is of low order: useless. */
function lowOrder(point: Buffer): boolean {
  return x25519(randomBytes(32), point) === undefined;
}

class X25519Recipient implements AgeRecipient {
  readonly type = 'X25519' as const;
  readonly text: string;
  constructor(private readonly pub: Buffer) {
    this.text = bech32Encode(RECIPIENT_HRP, pub);
  }
  wrap(fileKey: Buffer): Stanza {
    const eph = ephemeral();
    const shared = x25519(eph.key, this.pub);
    if (!shared) throw new KeyError(`recipient ${this.text} is not a usable X25519 key`);
    const wrapKey = hkdf(shared, Buffer.concat([eph.share, this.pub]), X25519_LABEL);
    return { type: 'X25519', args: [b64(eph.share)], body: sealOnce(wrapKey, fileKey) };
  }
}

/** age's `ssh-ed25519` stanza tag: the first 4 bytes of SHA-256 of the key's wire form. */
function sshTag(blob: Buffer): string {
  return b64(createHash('sha256').update(blob).digest().subarray(0, 4));
}

/**
 * The SSH Ed25519 shared secret is X25519'd once more with a tweak, HKDF(ikm empty, salt = the key's wire
 * form), binding the secret to this SSH key rather than to any key with the same Montgomery point.
 */
function sshTweak(shared: Buffer, blob: Buffer): Buffer | undefined {
  return x25519(hkdf(Buffer.alloc(0), blob, SSH_LABEL), shared);
}

class SshEd25519Recipient implements AgeRecipient {
  readonly type = 'ssh-ed25519' as const;
  readonly text: string;
  constructor(
    private readonly blob: Buffer,
    private readonly mont: Buffer,
  ) {
    this.text = `ssh-ed25519 ${blob.toString('base64')}`;
  }
  wrap(fileKey: Buffer): Stanza {
    const eph = ephemeral();
    const raw = x25519(eph.key, this.mont);
    const shared = raw && sshTweak(raw, this.blob);
    if (!shared) throw new KeyError(`recipient ${this.text} is not a usable Ed25519 key`);
    const wrapKey = hkdf(shared, Buffer.concat([eph.share, this.mont]), SSH_LABEL);
    return { type: 'ssh-ed25519', args: [sshTag(this.blob), b64(eph.share)], body: sealOnce(wrapKey, fileKey) };
  }
}

/**
 * One recipient: `age1…` or `ssh-ed25519 AAAA… [comment]`. `where` ("recipients.txt:3") prefixes problems.
 * A secret key given by mistake is refused without being repeated.
 */
export function parseRecipient(input: string, where = 'recipient'): AgeRecipient {
  const s = input.trim();
  if (/^AGE-SECRET-KEY-/i.test(s) || looksLikePrivateKeyPem(s)) {
    throw new KeyError(
      `${where}: this is a secret key, not a recipient; give its public recipient (age-keygen -y, or the .pub file) and keep the secret key off this machine`,
    );
  }
  if (s.startsWith('ssh-') || s.startsWith('ecdsa-') || s.startsWith('sk-')) {
    const key = parseSshPublicLine(s, where);
    const mont = ed25519ToX25519Public(key.pub);
    if (!mont || lowOrder(mont)) throw new KeyError(`${where}: the ssh-ed25519 key is not a valid curve point`);
    return new SshEd25519Recipient(key.blob, mont);
  }
  if (/^age1/i.test(s)) {
    const d = bech32Decode(s);
    if (!d.ok) throw new KeyError(`${where}: invalid age1 recipient: it ${d.problem}`);
    if (d.hrp !== RECIPIENT_HRP) {
      throw new KeyError(
        `${where}: '${d.hrp}1…' recipients (post-quantum, tag or plugin types) are not supported; use an X25519 age1… recipient or an ssh-ed25519 key`,
      );
    }
    if (d.data.length !== 32) throw new KeyError(`${where}: invalid age1 recipient: ${d.data.length} bytes of key, expected 32`);
    if (lowOrder(d.data)) throw new KeyError(`${where}: invalid age1 recipient: not a usable X25519 key`);
    return new X25519Recipient(d.data);
  }
  throw new KeyError(`${where}: not a recipient (expected age1… or ssh-ed25519 AAAA…)`);
}

/**
 * A recipients file as `age -R` reads it: one recipient per line, `#` comments and blank lines ignored.
 * Problems name `source` and the line number. Duplicate recipients collapse into one stanza.
 */
export function parseRecipientsFile(text: string, source: string): AgeRecipient[] {
  const out = new Map<string, AgeRecipient>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const r = parseRecipient(line, `${source}:${i + 1}`);
    if (!out.has(r.text)) out.set(r.text, r);
  });
  if (out.size === 0) throw new KeyError(`${source}: no recipients (only comments or blank lines)`);
  return [...out.values()];
}

export interface AgeIdentity {
  readonly type: 'X25519' | 'ssh-ed25519';
  /** The matching recipient, public (safe to log). */
  readonly recipient: string;
  /**
   * The file key if `stanza` is addressed to this identity and opens; undefined if it is not ours. Throws
   * AgeError('header_syntax') for a stanza of our type that breaks its format.
   */
  unwrap(stanza: Stanza): Buffer | undefined;
}

function malformed(type: string, what: string): AgeError {
  return new AgeError('header_syntax', `malformed ${type} stanza: ${what}`);
}

/** The ephemeral share argument and the 32-byte body every X25519-based stanza carries. */
function shareAndBody(stanza: Stanza, arg: string | undefined): Buffer {
  const share = arg === undefined ? undefined : unb64(arg);
  if (!share || share.length !== 32) throw malformed(stanza.type, 'the share is not 32 bytes of canonical base64');
  if (stanza.body.length !== 32) throw malformed(stanza.type, `the body is ${stanza.body.length} bytes, expected 32`);
  return share;
}

class X25519Identity implements AgeIdentity {
  readonly type = 'X25519' as const;
  readonly recipient: string;
  readonly #key: KeyObject;
  readonly #pub: Buffer;
  constructor(scalar: Buffer) {
    this.#key = x25519PrivateKey(scalar);
    this.#pub = x25519PublicOf(this.#key);
    this.recipient = bech32Encode(RECIPIENT_HRP, this.#pub);
  }
  unwrap(stanza: Stanza): Buffer | undefined {
    if (stanza.type !== 'X25519') return undefined;
    if (stanza.args.length !== 1) throw malformed('X25519', `${stanza.args.length} arguments, expected 1`);
    const share = shareAndBody(stanza, stanza.args[0]);
    const shared = x25519(this.#key, share);
    if (!shared) throw malformed('X25519', 'the share is a low-order point');
    return openOnce(hkdf(shared, Buffer.concat([share, this.#pub]), X25519_LABEL), stanza.body);
  }
  [inspect.custom](): string {
    return `age X25519 identity for ${this.recipient}`;
  }
}

class SshEd25519Identity implements AgeIdentity {
  readonly type = 'ssh-ed25519' as const;
  readonly recipient: string;
  readonly #key: KeyObject;
  readonly #mont: Buffer;
  readonly #blob: Buffer;
  readonly #tag: string;
  constructor(scalar: Buffer, pub: Buffer) {
    this.#key = x25519PrivateKey(scalar);
    this.#mont = x25519PublicOf(this.#key);
    this.#blob = ed25519Blob(pub);
    this.#tag = sshTag(this.#blob);
    this.recipient = `ssh-ed25519 ${this.#blob.toString('base64')}`;
  }
  unwrap(stanza: Stanza): Buffer | undefined {
    if (stanza.type !== 'ssh-ed25519') return undefined;
    if (stanza.args.length !== 2) throw malformed('ssh-ed25519', `${stanza.args.length} arguments, expected 2`);
    const share = shareAndBody(stanza, stanza.args[1]);
    if (stanza.args[0] !== this.#tag) return undefined;
    const raw = x25519(this.#key, share);
    const shared = raw && sshTweak(raw, this.#blob);
    if (!shared) throw malformed('ssh-ed25519', 'the share is a low-order point');
    return openOnce(hkdf(shared, Buffer.concat([share, this.#mont]), SSH_LABEL), stanza.body);
  }
  [inspect.custom](): string {
    return `age ssh-ed25519 identity for ${this.recipient}`;
  }
}

/**
 * Identities from one file's text: an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments, blank
 * lines) or an unencrypted OpenSSH ssh-ed25519 private key. `source` (the file name) prefixes problems; no
 * problem repeats a line of the file.
 */
export function parseIdentities(text: string, source: string): AgeIdentity[] {
  if (looksLikePrivateKeyPem(text)) {
    const key = parseOpenSshPrivateKey(text, source);
    return [new SshEd25519Identity(key.x25519Scalar(), key.publicKey)];
  }
  const out: AgeIdentity[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const where = `${source}:${i + 1}`;
    if (/^age1/i.test(line) || line.startsWith('ssh-'))
      throw new KeyError(`${where}: this is a recipient (public key); decrypting needs the identity (secret key)`);
    if (/^AGE-PLUGIN-/i.test(line)) throw new KeyError(`${where}: age plugin identities are not supported`);
    if (!/^AGE-SECRET-KEY-1/i.test(line)) {
      const pq = /^AGE-SECRET-KEY-PQ-/i.test(line);
      throw new KeyError(`${where}: ${pq ? 'post-quantum identities are not supported' : 'not an age identity (expected AGE-SECRET-KEY-1…)'}`);
    }
    const d = bech32Decode(line);
    if (!d.ok) throw new KeyError(`${where}: invalid age identity: it ${d.problem}`);
    if (d.hrp !== IDENTITY_HRP || d.data.length !== 32) throw new KeyError(`${where}: invalid age identity: not a 32-byte X25519 key`);
    out.push(new X25519Identity(d.data));
  });
  if (out.length === 0) throw new KeyError(`${source}: no identities (only comments or blank lines)`);
  return out;
}

/** A new X25519 identity (the `AGE-SECRET-KEY-1…` text, a secret) and its recipient, like `age-keygen`. */
export function generateAgeIdentity(): { identity: string; recipient: string } {
  const scalar = randomBytes(32);
  return { identity: bech32Encode(IDENTITY_HRP, scalar, true), recipient: new X25519Identity(scalar).recipient };
}
