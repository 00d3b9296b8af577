// The few primitives age and SSHSIG are built from, all from node:crypto (OpenSSL): X25519 over raw 32-byte
// values, HKDF-SHA-256, ChaCha20-Poly1305, Ed25519 from a raw seed, and the unpadded base64 age uses.
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, hkdfSync, type KeyObject } from 'node:crypto';

// DER prefixes that turn a raw 32-byte key into PKCS#8 / SPKI, the only raw forms node:crypto imports
// for X25519 and Ed25519 (RFC 8410).
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex');
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');

export const TAG_SIZE = 16;

function rawKey(prefix: Buffer, raw: Buffer, what: string): Buffer {
  if (raw.length !== 32) throw new Error(`${what} must be 32 bytes, got ${raw.length}`);
  return Buffer.concat([prefix, raw]);
}

export function x25519PrivateKey(scalar: Buffer): KeyObject {
  return createPrivateKey({ key: rawKey(X25519_PKCS8, scalar, 'X25519 scalar'), format: 'der', type: 'pkcs8' });
}

export function x25519PublicKey(point: Buffer): KeyObject {
  return createPublicKey({ key: rawKey(X25519_SPKI, point, 'X25519 point'), format: 'der', type: 'spki' });
}

/** The 32-byte public point of an X25519 private key. */
export function x25519PublicOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(-32);
}

/**
 * X25519(scalar, point). OpenSSL refuses a result of all zeros (a low-order point), which age requires
 * implementations to reject; that refusal becomes `undefined` here so the caller can say what it means.
 */
export function x25519(scalar: KeyObject | Buffer, point: Buffer): Buffer | undefined {
  const privateKey = Buffer.isBuffer(scalar) ? x25519PrivateKey(scalar) : scalar;
  let out: Buffer;
  try {
    out = diffieHellman({ privateKey, publicKey: x25519PublicKey(point) });
  } catch {
    return undefined;
  }
  return out.every((b) => b === 0) ? undefined : out;
}

export function ed25519PrivateKey(seed: Buffer): KeyObject {
  return createPrivateKey({ key: rawKey(ED25519_PKCS8, seed, 'Ed25519 seed'), format: 'der', type: 'pkcs8' });
}

export function ed25519PublicKey(pub: Buffer): KeyObject {
  return createPublicKey({ key: rawKey(ED25519_SPKI, pub, 'Ed25519 public key'), format: 'der', type: 'spki' });
}

export function ed25519PublicOf(key: KeyObject): Buffer {
  return createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(-32);
}

export function hkdf(ikm: Buffer, salt: Buffer, info: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from(info, 'latin1'), length));
}

const ZERO_NONCE = Buffer.alloc(12);

/** ChaCha20-Poly1305 with a zero nonce, as every age stanza uses it (each wrap key is used once). */
export function sealOnce(key: Buffer, plaintext: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_SIZE });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

export function openOnce(key: Buffer, sealed: Buffer): Buffer | undefined {
  if (sealed.length < TAG_SIZE) return undefined;
  const d = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_SIZE });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const out = d.update(sealed.subarray(0, sealed.length - TAG_SIZE));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return out;
}

/** Unpadded standard base64, as age writes it. */
export function b64(buf: Buffer): string {
  return buf.toString('base64').replace(/=+$/, '');
}

const B64_CHARS = /^[A-Za-z0-9+/]*$/;

/**
 * Strict unpadded base64: only the 64 characters, no `=`, and canonical (the unused low bits of the last
 * character are zero), so one byte string has exactly one text form. Undefined when `s` is not that.
 */
export function unb64(s: string): Buffer | undefined {
  if (!B64_CHARS.test(s) || s.length % 4 === 1) return undefined;
  const out = Buffer.from(s, 'base64');
  return b64(out) === s ? out : undefined;
}
