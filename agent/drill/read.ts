// Reading a snapshot back from S3, once, as a stream: decrypted when it is an age file and an identity is at
// hand, hashed, sized, handed chunk by chunk to a consumer (a file for `fetch`, the verifier for `verify`
// and the drill), and checked at the end against what was recorded when it was shipped: the manifest's
// sha256 and size (or the metadata of earlier agents), and, when asked, the SSH signatures.
import { createHash } from 'node:crypto';
import { AgeDecryption, AgeError, checkAgeStructure, type AgeIdentity } from '../crypto/age.js';
import { AgeRandomAccess } from '../crypto/age-random.js';
import { sshsigVerify, SNAPSHOT_NAMESPACE, type AllowedSigner } from '../crypto/sshsig.js';
import type { CatalogEntry } from '../store/catalog.js';
import { canonicalManifest, signatureKey } from '../store/layout.js';
import { partCheck } from './parts.js';
import type { Store } from '../store/store.js';

export type ReadProblem = 'missing' | 'unverified' | 'identity' | 'decrypt' | 'size' | 'hash' | 'signature' | 'structure';

export interface ReadOptions {
  identities?: readonly AgeIdentity[];
  /** require a valid signature from one of these, for this entry's node */
  signers?: readonly AllowedSigner[];
  /** an object without a recorded sha256 is read anyway */
  allowUnverified?: boolean;
  /** an encrypted object is passed on as ciphertext, its structure checked (no identity needed) */
  ciphertext?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export type ReadResult = { ok: true; sha256: string; size: number; signedBy?: string } | { ok: false; problem: ReadProblem; detail: string };

const fail = (problem: ReadProblem, detail: string): ReadResult => ({ ok: false, problem, detail });

/** Everything of a small object (a `.sig`), at most 64 KiB. */
async function small(store: Store, key: string): Promise<string | undefined> {
  const got = await store.get(key);
  if (!got) return undefined;
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of got.body) {
    n += c.length;
    if (n > 65536) return undefined;
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts).toString('utf8');
}

/**
 * Streams the entry's object to `consume`. Bytes handed over before the result are provisional: only an
 * ok result says they are the snapshot that was shipped. S3 errors throw; content problems are results.
 */
export async function readBack(store: Store, e: CatalogEntry, consume: (chunk: Buffer) => Promise<void> | void, opts: ReadOptions = {}): Promise<ReadResult> {
  if (!e.sha256 && !opts.allowUnverified) {
    const why = e.manifestProblem ? `its manifest cannot be used (${e.manifestProblem}) and it has no sha256 metadata` : 'no manifest, no sha256 metadata';
    return fail(
      'unverified',
      `${e.object.key} has no recorded sha256 (${why}): it is not a backup the agent confirmed; pass --allow-unverified to read it anyway`,
    );
  }
  const decrypt = e.encrypted && !opts.ciphertext;
  if (decrypt && !opts.identities?.length)
    return fail(
      'identity',
      `${e.object.key} is encrypted (age); pass --identity FILE (or set ETCD_BACKUP_AGENT_IDENTITY_FILE), or --encrypted to fetch the ciphertext`,
    );
  const got = await store.get(e.object.key, { signal: opts.signal });
  if (!got) return fail('missing', `${e.object.key} is gone from S3`);
  const hash = createHash('sha256');
  const dec = decrypt ? new AgeDecryption(opts.identities!) : undefined;
  const structure = e.encrypted && opts.ciphertext ? checkAgeStructure() : undefined;
  // without the key, the part checksums recorded at upload are what can tell changed ciphertext
  const parts = structure ? partCheck(e.manifest?.object) : undefined;
  let size = 0;
  let read = 0;
  const emit = async (b: Buffer): Promise<void> => {
    if (b.length === 0) return;
    hash.update(b);
    size += b.length;
    await consume(b);
  };
  try {
    for await (const chunk of got.body) {
      const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      read += b.length;
      if (dec) for (const p of dec.update(b)) await emit(p);
      else {
        structure?.update(b);
        const bad = parts?.update(b);
        if (bad) return fail('hash', `${e.object.key}: ${bad}`);
        await emit(b);
      }
      opts.onProgress?.(read, e.object.size);
    }
    if (dec) for (const p of dec.finish()) await emit(p);
  } catch (err) {
    if (err instanceof AgeError) return ageFailure(e, err, opts.identities ?? []);
    throw err;
  }
  if (structure) {
    if (e.manifest && e.manifest.object.size !== size) return fail('size', `${e.object.key} holds ${size} bytes, its manifest says ${e.manifest.object.size}`);
    const bad = parts?.finish();
    if (bad) return fail('hash', `${e.object.key}: ${bad}`);
    const s = structure.finish();
    if (!s.ok) return fail('structure', `${e.object.key}: ${s.detail}`);
    return { ok: true, sha256: hash.digest('hex'), size };
  }
  const sha256 = hash.digest('hex');
  if (e.sha256 && size !== e.size)
    return fail('size', `${e.object.key} holds ${size} bytes of snapshot, ${e.manifest ? 'its manifest' : 'its metadata'} says ${e.size}`);
  if (e.sha256 && sha256 !== e.sha256) return fail('hash', `${e.object.key}: the bytes read do not match the recorded sha256 (${sha256} != ${e.sha256})`);
  if (opts.signers) {
    const who = await checkSignatures(store, e, Buffer.from(sha256, 'hex'), opts.signers);
    if (typeof who !== 'string') return who;
    return { ok: true, sha256, size, signedBy: who };
  }
  return { ok: true, sha256, size };
}

/**
 * A wrong key is the operator's to fix (exit 64); changed ciphertext is the object's fault (65). A header MAC
 * that fails after a stanza opened means the header changed. No stanza opening for an identity that the
 * manifest lists among the recipients means the same: its stanza was altered.
 */
function ageFailure(e: CatalogEntry, err: AgeError, identities: readonly AgeIdentity[]): ReadResult {
  if (err.reason !== 'no_identity') return fail('decrypt', `${e.object.key}: ${err.message}`);
  const listed = new Set(e.manifest?.object.encryption?.recipients ?? []);
  const ours = identities.map((i) => i.recipient).find((r) => listed.has(r));
  if (ours) return fail('decrypt', `${e.object.key}: the header was changed: the manifest lists ${ours} as a recipient, but no stanza opens with its identity`);
  return fail('identity', `${e.object.key}: ${err.message}`);
}

/**
 * The snapshot's own signature (`<key>.sig`, what `ssh-keygen -Y verify` checks) and the manifest's, which
 * binds node, cluster, name and time to that hash: both by an allowed key for this entry's node.
 */
async function checkSignatures(store: Store, e: CatalogEntry, digest: Buffer, signers: readonly AllowedSigner[]): Promise<string | ReadResult> {
  const node = e.node ?? '';
  // Keys are checked against valid-after/valid-before as of when the agent signed (the manifest's shippedAt,
  // itself covered by the manifest signature), as git does with commit times: a retired key's old backups
  // stay verifiable. Without a manifest, as of now.
  const shipped = e.manifest ? new Date(e.manifest.shippedAt) : undefined;
  const at = shipped && !Number.isNaN(shipped.getTime()) ? shipped : new Date();
  const armored = await small(store, signatureKey(e.key));
  if (!armored) return fail('signature', `${e.object.key} has no signature (${signatureKey(e.key)} is missing)`);
  const v = sshsigVerify(armored, digest, SNAPSHOT_NAMESPACE, signers, { principal: node, hashAlg: 'sha256', now: at });
  if (!v.ok) return fail('signature', `${e.object.key}: snapshot signature refused (${v.reason}: ${v.detail})`);
  const m = e.manifest;
  if (!m?.signature?.manifestSignature)
    return fail('signature', `${e.object.key}: its manifest is not signed, so its node, name and time are not bound to the snapshot`);
  const md = createHash('sha512').update(canonicalManifest(m)).digest();
  const mv = sshsigVerify(m.signature.manifestSignature, md, SNAPSHOT_NAMESPACE, signers, { principal: node, hashAlg: 'sha512', now: at });
  if (!mv.ok) return fail('signature', `${e.object.key}: manifest signature refused (${mv.reason}: ${mv.detail})`);
  if (m.snapshot.sha256 !== digest.toString('hex')) return fail('signature', `${e.object.key}: the signed manifest names another snapshot`);
  return v.principal;
}

/** The object was listed but is gone when read: deleted meanwhile, or lost by the store. */
export class ObjectGone extends Error {
  override readonly name = 'ObjectGone';
  constructor(readonly key: string) {
    super(`${key} is gone from S3`);
  }
}

/** Plaintext bytes at any offset of the entry's object (ranged GETs; decrypted chunk by chunk for age). */
export async function plainReader(
  store: Store,
  e: CatalogEntry,
  identities?: readonly AgeIdentity[],
): Promise<{ read: (pos: number, len: number) => Promise<Buffer>; size: number }> {
  const ranged = async (pos: number, len: number): Promise<Buffer> => {
    if (len <= 0 || pos >= e.object.size) return Buffer.alloc(0);
    const got = await store.get(e.object.key, { range: { start: pos, end: Math.min(e.object.size, pos + len) - 1 } });
    if (!got) throw new ObjectGone(e.object.key);
    const parts: Buffer[] = [];
    for await (const c of got.body) parts.push(Buffer.from(c));
    return Buffer.concat(parts);
  };
  if (!e.encrypted) return { read: ranged, size: e.object.size };
  const ra = await AgeRandomAccess.open(ranged, e.object.size, identities ?? []);
  return { read: (p, l) => ra.readPlain(p, l), size: ra.plaintextSize };
}
