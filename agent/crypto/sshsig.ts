// OpenSSH's SSHSIG detached signatures (PROTOCOL.sshsig), Ed25519 only: what `ssh-keygen -Y sign` writes
// and `ssh-keygen -Y verify` checks. The caller hashes the data in a stream and passes the digest, so a
// multi-GiB snapshot is never held in memory. Ed25519 is deterministic: the same key, namespace and data
// give the same armored text as ssh-keygen, byte for byte.
import { verify as edVerify } from 'node:crypto';
import { matchPatternList, type AllowedSigner } from './allowed-signers.js';
import { ed25519PublicKey } from './primitives.js';
import { ed25519Blob, ed25519FromBlob, sshFingerprint, SshReader, sshString, type SshEd25519PrivateKey } from './ssh-keys.js';

export { parseAllowedSigners, matchPatternList, type AllowedSigner } from './allowed-signers.js';
export { parseOpenSshPrivateKey, sshPublicLine, sshFingerprint, SshEd25519PrivateKey } from './ssh-keys.js';

/** The namespace the agent signs snapshots in: `ssh-keygen -Y verify -n etcd-backup-agent`. */
export const SNAPSHOT_NAMESPACE = 'etcd-backup-agent';
export type SshsigHash = 'sha512' | 'sha256';

const MAGIC = Buffer.from('SSHSIG', 'latin1');
const VERSION = 1;
const BEGIN = '-----BEGIN SSH SIGNATURE-----';
const END = '-----END SSH SIGNATURE-----';
const DIGEST_SIZE: Record<SshsigHash, number> = { sha512: 64, sha256: 32 };

/** The bytes the key actually signs: preamble, namespace, reserved, hash algorithm, H(message). */
function signedData(namespace: string, hashAlg: string, digest: Buffer): Buffer {
  return Buffer.concat([MAGIC, sshString(namespace), sshString(''), sshString(hashAlg), sshString(digest)]);
}

function checkDigest(digest: Buffer, hashAlg: SshsigHash): void {
  if (digest.length !== DIGEST_SIZE[hashAlg]) throw new RangeError(`a ${hashAlg} digest is ${DIGEST_SIZE[hashAlg]} bytes, got ${digest.length}`);
}

export interface SshsigSignInput {
  privateKey: SshEd25519PrivateKey;
  namespace: string;
  /** H(data) computed by the caller, e.g. createHash('sha512') over the snapshot stream. */
  digest: Buffer;
  hashAlg?: SshsigHash;
}

/** The armored signature (`-----BEGIN SSH SIGNATURE-----` …, base64 in 70 columns, final newline). */
export function sshsigSign({ privateKey, namespace, digest, hashAlg = 'sha512' }: SshsigSignInput): string {
  if (namespace === '') throw new RangeError('the SSHSIG namespace must not be empty');
  checkDigest(digest, hashAlg);
  const sig = privateKey.sign(signedData(namespace, hashAlg, digest));
  const blob = Buffer.concat([
    MAGIC,
    Buffer.from([0, 0, 0, VERSION]),
    sshString(ed25519Blob(privateKey.publicKey)),
    sshString(namespace),
    sshString(''),
    sshString(hashAlg),
    sshString(Buffer.concat([sshString('ssh-ed25519'), sshString(sig)])),
  ]);
  const text = blob.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < text.length; i += 70) lines.push(text.slice(i, i + 70));
  return `${BEGIN}\n${lines.join('\n')}\n${END}\n`;
}

export type SshsigFailure =
  /** not an armored SSH signature */
  | 'armor'
  /** armored, but the blob inside is malformed or of a newer version */
  | 'format'
  /** signed for another namespace */
  | 'namespace'
  /** signed over a digest of another algorithm than the one given */
  | 'hash_alg'
  /** the signing key is not Ed25519 */
  | 'unsupported_key'
  /** the signature does not match the data (or was altered) */
  | 'signature'
  /** a valid signature, by a key allowed_signers does not allow here */
  | 'key_not_allowed';

export type SshsigVerdict = { ok: true; principal: string; fingerprint: string; line: number } | { ok: false; reason: SshsigFailure; detail: string };

interface ParsedSig {
  keyBlob: Buffer;
  namespace: string;
  hashAlg: string;
  signature: Buffer;
}

function dearmor(armored: string): Buffer | string {
  const text = armored.replace(/^\s+/, '');
  if (!text.startsWith(BEGIN)) return `does not start with ${BEGIN}`;
  const end = text.indexOf(`\n${END}`);
  if (end < 0) return `has no ${END} line`;
  const body = text.slice(BEGIN.length, end).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) return 'holds invalid base64';
  return Buffer.from(body, 'base64');
}

function parseBlob(blob: Buffer): ParsedSig | string {
  try {
    if (blob.length < 10 || !blob.subarray(0, 6).equals(MAGIC)) return 'does not start with SSHSIG';
    const r = new SshReader(blob.subarray(6));
    const version = r.u32('version');
    if (version !== VERSION) return `is SSHSIG version ${version}; only version 1 is known`;
    const keyBlob = r.string('public key');
    const namespace = r.text('namespace');
    r.string('reserved'); // ignored when not empty, as the format asks
    const hashAlg = r.text('hash algorithm');
    const signature = r.string('signature');
    if (r.remaining !== 0) return 'has data after the signature';
    return { keyBlob, namespace, hashAlg, signature };
  } catch (e) {
    return (e as Error).message;
  }
}

export interface SshsigVerifyOptions {
  /** Require this principal (`ssh-keygen -Y verify -I`); without it the first matching line's principals are returned. */
  principal?: string;
  hashAlg?: SshsigHash;
  /** Verification time for valid-after/valid-before (default now). */
  now?: Date;
}

/**
 * Verifies an armored SSHSIG over `digest` in `namespace` against allowed_signers entries, as
 * `ssh-keygen -Y verify -f allowed_signers -I principal -n namespace` does: the signature must be good and
 * its key listed (not as cert-authority) for the principal, with the namespace and time allowed.
 */
export function sshsigVerify(
  armored: string,
  digest: Buffer,
  namespace: string,
  allowedSigners: readonly AllowedSigner[],
  opts: SshsigVerifyOptions = {},
): SshsigVerdict {
  const hashAlg = opts.hashAlg ?? 'sha512';
  checkDigest(digest, hashAlg);
  const blob = dearmor(armored);
  if (typeof blob === 'string') return { ok: false, reason: 'armor', detail: `the signature ${blob}` };
  const sig = parseBlob(blob);
  if (typeof sig === 'string') return { ok: false, reason: 'format', detail: `the signature ${sig}` };
  if (sig.namespace !== namespace) {
    return { ok: false, reason: 'namespace', detail: `signed for namespace '${sig.namespace.slice(0, 64)}', expected '${namespace}'` };
  }
  if (sig.hashAlg !== hashAlg)
    return { ok: false, reason: 'hash_alg', detail: `signed over a ${sig.hashAlg.slice(0, 32)} digest, a ${hashAlg} digest was given` };
  const pub = ed25519FromBlob(sig.keyBlob);
  if (typeof pub === 'string') return { ok: false, reason: 'unsupported_key', detail: `the signing key ${pub}` };
  const fingerprint = sshFingerprint(pub);
  let raw: Buffer | undefined;
  try {
    const r = new SshReader(sig.signature);
    if (r.text('signature type') === 'ssh-ed25519') raw = r.string('signature');
    if (r.remaining !== 0) raw = undefined;
  } catch {
    raw = undefined;
  }
  if (!raw || raw.length !== 64) return { ok: false, reason: 'format', detail: 'the signature field is not an ssh-ed25519 signature' };
  if (!edVerify(null, signedData(namespace, hashAlg, digest), ed25519PublicKey(pub), raw)) {
    return { ok: false, reason: 'signature', detail: `the signature by ${fingerprint} does not match this data` };
  }
  return allowed(sig.keyBlob, fingerprint, namespace, allowedSigners, opts);
}

function allowed(keyBlob: Buffer, fingerprint: string, namespace: string, signers: readonly AllowedSigner[], opts: SshsigVerifyOptions): SshsigVerdict {
  const now = Math.floor((opts.now ?? new Date()).getTime() / 1000);
  const why: string[] = [];
  for (const s of signers) {
    if (s.certAuthority || !s.keyBlob.equals(keyBlob)) continue;
    if (opts.principal !== undefined && !matchPatternList(opts.principal, s.principals)) {
      why.push(`line ${s.line} lists it for other principals`);
      continue;
    }
    if (s.namespaces !== undefined && !matchPatternList(namespace, s.namespaces)) {
      why.push(`line ${s.line} does not allow namespace '${namespace}'`);
      continue;
    }
    if (s.validAfter !== undefined && now < s.validAfter) {
      why.push(`line ${s.line} is not valid yet`);
      continue;
    }
    if (s.validBefore !== undefined && now > s.validBefore) {
      why.push(`line ${s.line} has expired`);
      continue;
    }
    return { ok: true, principal: opts.principal ?? s.principals, fingerprint, line: s.line };
  }
  const who = opts.principal === undefined ? '' : ` for principal '${opts.principal}'`;
  return { ok: false, reason: 'key_not_allowed', detail: `key ${fingerprint} is not an allowed signer${who}${why.length ? `: ${why.join('; ')}` : ''}` };
}
