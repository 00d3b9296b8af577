// The end of an upload: the signature and the manifest stored (before Complete, so an object never exists
// without them), and the completed object confirmed by HeadObject, not assumed from Complete's answer.
import { AgentError } from '../base/errors.js';
import type { Verified } from '../snapshot/format.js';
import { canonicalManifest, encodeManifest, manifestKey, META, signatureKey, type Manifest } from '../store/layout.js';
import type { ObjectInfo, ObjectLock, Store } from '../store/store.js';
import type { ShipOptions, ShipRequest } from './request.js';

/**
 * HeadObject shows the object complete: the size S3 assembled and the metadata this upload set, and under
 * Object Lock the retention asked for. Ceph RGW 16 drops the lock given at CreateMultipartUpload (the object
 * comes out unlocked, and deletable), so a missing or shorter retention is put on the object again here.
 */
export async function confirmObject(store: Store, stored: string, size: number, metadata: Record<string, string>, lock: ObjectLock | undefined): Promise<void> {
  let info = await store.head(stored);
  if (info && lock && !lockedUntil(info, lock)) {
    await store.setRetention(stored, lock);
    info = await store.head(stored);
    if (info && !lockedUntil(info, lock))
      throw new AgentError(
        'refused',
        `S3 did not keep the Object Lock retention (${lock.mode} until ${lock.until.toISOString()}) on ${stored}: it shows ${info.retainUntil ? `${info.lockMode ?? '?'} until ${info.retainUntil.toISOString()}` : 'none'}; check that the bucket has Object Lock (check-config)`,
      );
  }
  if (!info) throw new AgentError('verify', `${stored} is missing right after its upload completed`);
  const md = info.metadata ?? {};
  const differs = [META.name, META.node, META.cluster, META.mtime].filter((k) => md[k] !== metadata[k]);
  if (info.size !== size || differs.length) {
    throw new AgentError(
      'verify',
      `${stored} in S3 is not what was uploaded (size ${info.size} of ${size}${differs.length ? `, metadata ${differs.join(', ')} differ` : ''})`,
    );
  }
}

/** The signature and the manifest, each a small PUT whose Content-MD5 the server checks. */
export async function writeManifest(
  store: Store,
  req: ShipRequest,
  opts: ShipOptions,
  key: string,
  stored: string,
  storedSize: number,
  v: Verified,
  partSize: number,
  parts: { sums: string[]; first: number; each: number },
): Promise<Manifest> {
  const sealing = opts.sealing;
  const manifest: Manifest = {
    manifest: 1,
    key,
    node: req.node,
    cluster: req.cluster,
    agent: req.agent,
    shippedAt: new Date().toISOString(),
    snapshot: {
      name: req.name,
      producer: req.producer,
      format: v.format,
      time: req.snapshotTime.toISOString(),
      mtimeMs: req.fp.mtimeMs,
      size: v.size,
      sha256: v.sha256,
      ...(v.db ? { db: { revision: v.db.revision, keys: v.db.keys, ...(v.db.hash !== undefined ? { hash: v.db.hash } : {}), pageSize: v.db.pageSize } } : {}),
    },
    object: {
      key: stored,
      size: storedSize,
      parts: parts.sums.length,
      partSize,
      integrity: opts.integrity,
      partChecksums: parts.sums,
      firstPartBytes: parts.first,
      partBytes: parts.each,
      ...(sealing?.encrypt ? { encryption: { scheme: 'age' as const, recipients: sealing.encrypt.recipients } } : {}),
    },
  };
  const small = {
    metadata: { [META.node]: req.node, [META.cluster]: req.cluster, [META.agent]: req.agent, [META.name]: encodeURIComponent(req.name) },
    lock: opts.lock,
    signal: opts.signal,
  };
  if (sealing?.sign) {
    const sig = sealing.sign.signDigest(Buffer.from(v.sha256, 'hex'));
    await store.putObject(signatureKey(key), Buffer.from(sig), { ...small, contentType: 'text/plain' });
    manifest.signature = {
      scheme: 'sshsig',
      namespace: sealing.sign.namespace,
      publicKey: sealing.sign.publicKey,
      snapshotSignature: signatureKey(key),
      manifestSignature: '',
    };
    manifest.signature.manifestSignature = sealing.sign.signData(canonicalManifest(manifest));
  }
  await store.putObject(manifestKey(key), encodeManifest(manifest), { ...small, contentType: 'application/json' });
  return manifest;
}

/** The object is locked at least as long as asked (S3 keeps the date to the second or the millisecond). */
function lockedUntil(info: ObjectInfo, lock: ObjectLock): boolean {
  return info.retainUntil !== undefined && info.retainUntil.getTime() >= lock.until.getTime() - 1000;
}
