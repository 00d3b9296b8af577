// Ships one snapshot file in one read pass: each part is read once, fed to the verifier (hash, trailer,
// bbolt pages, zip CRC), encrypted if configured, given the checksum the server will verify, and sent.
// The multipart upload is completed only when the verifier's verdict at the end is good and the file did
// not change; otherwise it is aborted and nothing is left in S3. The manifest (hash, sizes, proofs,
// signatures) is stored just before Complete, and "shipped" needs HeadObject to show the completed object
// with the expected size and metadata.
import { createHash, webcrypto } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { AgentError, classifyError } from '../base/errors.js';
import { readAt, type Fingerprint } from '../base/files.js';
import type { Rejected, SnapshotFormat, Verified } from '../snapshot/format.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { openVerifier, type Verifier } from '../snapshot/verifier.js';
import { readManifest } from '../store/catalog.js';
import { canonicalManifest, conflictKey, encodeManifest, isSha256, keyRole, manifestKey, META, nameOf, objectMetadata, parseMtime, signatureKey, storedKey as storedKeyOf, type Manifest } from '../store/layout.js';
import type { CompletedPart, ObjectInfo, ObjectLock, PartChecksum, PartIntegrity, Store } from '../store/store.js';
import { Throttle } from '../base/throttle.js';
import type { Sealing } from '../crypto/seal.js';

export type { Sealing } from '../crypto/seal.js';

/** Age's chunk: parts hold whole chunks so that each part is encrypted (and retried) on its own. */
export const CHUNK = 64 * 1024;

export interface ShipRequest {
  fh: FileHandle;
  /** the file as it was when the pass started: it must be the same when the pass ends */
  fp: Fingerprint;
  name: string;
  producer: string;
  snapshotTime: Date;
  /** the snapshot key (the object gets `.age` appended when encrypted) */
  key: string;
  node: string;
  cluster: string;
  agent: string;
  /** expected from the name; the content decides */
  format?: SnapshotFormat;
}

export interface ShipOptions {
  signal?: AbortSignal;
  timeoutMs: number;
  partSize: number;
  queueSize: number;
  maxParts: number;
  integrity: PartIntegrity;
  bandwidthLimit?: number;
  deep?: DeepCheck;
  sealing?: Sealing;
  lock?: ObjectLock;
  /** plaintext bytes read and sent so far, after each part */
  onProgress?: (done: number, total: number) => void;
}

export type ShipOutcome =
  | { kind: 'shipped'; key: string; storedKey: string; verified: Verified; manifest: Manifest; partSize: number; parts: number }
  | { kind: 'present'; key: string; storedKey: string; sha256: string; lastModified?: Date; why: string }
  | { kind: 'rejected'; verdict: Rejected };

/** The plaintext part size: at least the configured one, a whole number of chunks, and few enough parts. */
export function partSizeFor(size: number, partSize: number, maxParts: number): number {
  const need = Math.max(partSize, Math.ceil(size / maxParts));
  return Math.ceil(need / CHUNK) * CHUNK;
}

/** What the bucket already holds under a key, as far as it says without reading the object. */
interface Existing {
  info: ObjectInfo;
  /** of the plaintext, from the manifest or (objects of earlier agents) the `sha256` metadata */
  sha256?: string;
  size?: number;
  mtimeMs?: number;
  ours: boolean;
}

export class Uploader {
  /** uploads that could not be aborted (S3 was unreachable): aborted before the next upload of the key */
  private readonly unaborted = new Map<string, Set<string>>();

  constructor(private readonly store: Store) {}

  async ship(req: ShipRequest, opts: ShipOptions): Promise<ShipOutcome> {
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    try {
      return await this.shipWithin(req, opts, signal);
    } catch (err) {
      if (timeout.aborted && !opts.signal?.aborted) throw new AgentError('timeout', `upload of ${req.name} to ${req.key} exceeded upload.timeout; it was aborted and will be retried`);
      throw err;
    }
  }

  private async shipWithin(req: ShipRequest, opts: ShipOptions, signal: AbortSignal): Promise<ShipOutcome> {
    const encrypted = Boolean(opts.sealing?.encrypt);
    const verifier = await openVerifier((p, l) => readAt(req.fh, p, l), req.fp.size, { format: req.format, name: req.name, deep: opts.deep });
    if ('ok' in verifier) return { kind: 'rejected', verdict: verifier };

    let key = req.key;
    let stored = storedKeyOf(key, encrypted);
    let existing = await this.existing(stored, req);
    // The snapshot key is one snapshot whether its object is plain or `.age`: one uploaded before encryption
    // was turned on (or off) is this snapshot too, and its manifest must not be overwritten by the other form.
    let at = stored;
    if (!existing) {
      const other = storedKeyOf(key, !encrypted);
      existing = await this.existing(other, req);
      if (existing?.sha256 !== undefined) at = other;
      else existing = undefined;
    }
    if (existing) {
      const form = at === stored ? '' : encrypted ? ', unencrypted (uploaded before encryption was turned on)' : ', encrypted (uploaded while encryption was on)';
      const same = existing.sha256 !== undefined && existing.size === req.fp.size && existing.mtimeMs !== undefined && Math.abs(existing.mtimeMs - req.fp.mtimeMs) < 0.001;
      if (same) {
        verifier.destroy();
        return { kind: 'present', key, storedKey: at, sha256: existing.sha256!, lastModified: existing.info.lastModified, why: `S3 holds this file (same name, size and mtime in its manifest${form})` };
      }
      if (existing.sha256 !== undefined || !existing.ours) {
        // Another version sits at the key. Telling whether it is this content needs this file's hash first:
        // a second read, only in this rare case (a snapshot rewritten, or a name reused).
        const sha256 = await hashFile(req.fh, req.fp.size, signal);
        if (existing.sha256 === sha256) {
          verifier.destroy();
          return { kind: 'present', key, storedKey: at, sha256, lastModified: existing.info.lastModified, why: `S3 holds the same content under this key${form}` };
        }
        key = conflictKey(req.key, sha256);
        stored = storedKeyOf(key, encrypted);
        existing = await this.existing(stored, req);
        if (existing?.sha256 === sha256) {
          verifier.destroy();
          return { kind: 'present', key, storedKey: stored, sha256, lastModified: existing.info.lastModified, why: 'S3 holds the same content beside the key' };
        }
        if (existing && (existing.sha256 !== undefined || !existing.ours)) {
          verifier.destroy();
          throw new AgentError('verify', `both ${storedKeyOf(req.key, encrypted)} and ${stored} hold other content than ${req.name}; not overwriting a backup — move one of them away`);
        }
      }
      // else: this agent's own upload that never got its manifest; it was never counted as shipped
    }
    return this.upload(req, opts, signal, verifier, key, stored);
  }

  private async existing(stored: string, req: ShipRequest): Promise<Existing | undefined> {
    const info = await this.store.head(stored);
    if (!info) return undefined;
    const md = info.metadata ?? {};
    const ours = md[META.node] === req.node && md[META.cluster] === req.cluster && nameOf(stored, md) === req.name;
    const role = keyRole(stored);
    const r = await readManifest(this.store, manifestKey(role.role === 'snapshot' ? role.key : stored));
    const m = r && 'manifest' in r ? r.manifest : undefined;
    if (m && m.object.key === stored) return { info, sha256: m.snapshot.sha256, size: m.snapshot.size, mtimeMs: m.snapshot.mtimeMs, ours };
    if (isSha256(md[META.sha256])) return { info, sha256: md[META.sha256], size: info.size, mtimeMs: parseMtime(md[META.mtime]), ours };
    return { info, ours };
  }

  private async upload(req: ShipRequest, opts: ShipOptions, outer: AbortSignal, verifier: Verifier, key: string, stored: string): Promise<ShipOutcome> {
    const { store } = this;
    const size = req.fp.size;
    const enc = opts.sealing?.encrypt?.open(size);
    const partSize = partSizeFor(size, opts.partSize, opts.maxParts);
    const parts = Math.max(1, Math.ceil(size / partSize));
    const storedSize = enc ? enc.ciphertextSize : size;
    const metadata = objectMetadata({ name: req.name, producer: req.producer, mtimeMs: req.fp.mtimeMs, snapshotTime: req.snapshotTime, format: verifier.format, node: req.node, cluster: req.cluster, agent: req.agent, encrypted: Boolean(enc) });

    await this.abortLeftovers(stored);
    const ctl = new AbortController();
    const signal = AbortSignal.any([outer, ctl.signal]);
    const uploadId = await store.createUpload(stored, { metadata, lock: opts.lock, signal, ...(opts.integrity === 'crc32' ? { checksumAlgorithm: 'CRC32' } : {}) });

    const done: CompletedPart[] = new Array(parts);
    const sums: string[] = new Array(parts);
    const inflight = new Set<Promise<void>>();
    const plainPool: Buffer[] = [];
    const cipherPool: Buffer[] = [];
    const throttle = opts.bandwidthLimit ? new Throttle(opts.bandwidthLimit) : undefined;
    let failure: unknown;
    let sentPlain = 0;
    const fail = (e: unknown): void => {
      if (failure === undefined) failure = e;
      ctl.abort(e);
    };
    let rejected: Rejected | undefined;
    try {
      for (let i = 0; i < parts && failure === undefined; i++) {
        while (inflight.size >= opts.queueSize) await Promise.race(inflight);
        if (failure !== undefined) break;
        signal.throwIfAborted();
        const start = i * partSize;
        const len = Math.min(partSize, size - start);
        const last = i === parts - 1;
        const plainBuf = plainPool.pop() ?? Buffer.allocUnsafeSlow(Math.min(partSize, Math.max(size, 1)));
        const plain = plainBuf.subarray(0, len);
        await readExactly(req, plain, start);
        const bad = await verifier.update(plain);
        if (bad) {
          rejected = bad;
          plainPool.push(plainBuf);
          break;
        }
        let body: Buffer = plain;
        let owner = plainBuf;
        let pool = plainPool;
        if (enc) {
          const head = i === 0 ? enc.header.length : 0;
          const out = cipherPool.pop() ?? Buffer.allocUnsafeSlow(enc.header.length + enc.cipherLength(partSize));
          if (head) enc.header.copy(out, 0);
          const n = enc.encryptInto(out.subarray(head), plain, start / CHUNK, last);
          plainPool.push(plainBuf);
          body = out.subarray(0, head + n);
          owner = out;
          pool = cipherPool;
        }
        if (throttle) await throttle.take(body.length, signal);
        const task = (async () => {
          const checksum = await partChecksum(body, opts.integrity);
          const { etag } = await store.uploadPart(stored, uploadId, i + 1, body, checksum, signal);
          done[i] = { partNumber: i + 1, etag, ...(checksum.kind === 'crc32' ? { checksumCrc32: checksum.value } : {}) };
          sums[i] = checksum.value;
          sentPlain += len;
          opts.onProgress?.(sentPlain, size);
        })()
          .catch(fail)
          .finally(() => {
            pool.push(owner);
            inflight.delete(task);
          });
        inflight.add(task);
      }
      let verdict: Verified | Rejected | undefined = rejected;
      if (!verdict && failure === undefined) {
        verdict = await verifier.finish();
        // the bytes just verified and sent are those of the file that was opened: it did not change meanwhile
        if (verdict.ok) await unchanged(req);
      }
      if (verdict && !verdict.ok) {
        // A file that changed while it was read is not corrupt: it is checked again (unchanged() throws).
        await unchanged(req);
        // a file that is not a sound snapshot never becomes an object: stop sending, drop the parts
        ctl.abort();
        await Promise.allSettled([...inflight]);
        await this.abort(stored, uploadId);
        return { kind: 'rejected', verdict };
      }
      await Promise.allSettled([...inflight]);
      if (failure !== undefined) throw failure;
      const verified = verdict as Verified;
      // The manifest goes first: the object then never exists without it. A Complete that fails leaves a
      // manifest whose object is missing, which no reader counts and retention removes.
      const layout = { sums, first: enc ? enc.header.length + enc.cipherLength(Math.min(partSize, size)) : Math.min(partSize, size), each: enc ? enc.cipherLength(partSize) : partSize };
      const manifest = await this.seal(req, opts, key, stored, storedSize, verified, partSize, layout);
      await store.completeUpload(stored, uploadId, done, signal);
      await this.confirm(stored, storedSize, metadata, opts.lock);
      return { kind: 'shipped', key, storedKey: stored, verified, manifest, partSize, parts };
    } catch (err) {
      // the first failure is the reason: parts aborted because of it must not stand in for it
      const first = failure ?? err;
      failure = first;
      ctl.abort(first);
      await Promise.allSettled([...inflight]);
      await this.abort(stored, uploadId);
      throw first;
    } finally {
      verifier.destroy();
    }
  }

  /**
   * HeadObject shows the object complete: the size S3 assembled and the metadata this upload set, and under
   * Object Lock the retention asked for. Ceph RGW 16 drops the lock given at CreateMultipartUpload (the object
   * comes out unlocked, and deletable), so a missing or shorter retention is put on the object again here.
   */
  private async confirm(stored: string, size: number, metadata: Record<string, string>, lock: ObjectLock | undefined): Promise<void> {
    let info = await this.store.head(stored);
    if (info && lock && !lockedUntil(info, lock)) {
      await this.store.setRetention(stored, lock);
      info = await this.store.head(stored);
      if (info && !lockedUntil(info, lock)) throw new AgentError('refused', `S3 did not keep the Object Lock retention (${lock.mode} until ${lock.until.toISOString()}) on ${stored}: it shows ${info.retainUntil ? `${info.lockMode ?? '?'} until ${info.retainUntil.toISOString()}` : 'none'}; check that the bucket has Object Lock (check-config)`);
    }
    if (!info) throw new AgentError('verify', `${stored} is missing right after its upload completed`);
    const md = info.metadata ?? {};
    const differs = [META.name, META.node, META.cluster, META.mtime].filter((k) => md[k] !== metadata[k]);
    if (info.size !== size || differs.length) {
      throw new AgentError('verify', `${stored} in S3 is not what was uploaded (size ${info.size} of ${size}${differs.length ? `, metadata ${differs.join(', ')} differ` : ''})`);
    }
  }

  /** The signature and the manifest, each a small PUT whose Content-MD5 the server checks. */
  private async seal(req: ShipRequest, opts: ShipOptions, key: string, stored: string, storedSize: number, v: Verified, partSize: number, parts: { sums: string[]; first: number; each: number }): Promise<Manifest> {
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
    const small = { metadata: { [META.node]: req.node, [META.cluster]: req.cluster, [META.agent]: req.agent, [META.name]: encodeURIComponent(req.name) }, lock: opts.lock, signal: opts.signal };
    if (sealing?.sign) {
      const sig = sealing.sign.signDigest(Buffer.from(v.sha256, 'hex'));
      await this.store.putObject(signatureKey(key), Buffer.from(sig), { ...small, contentType: 'text/plain' });
      manifest.signature = { scheme: 'sshsig', namespace: sealing.sign.namespace, publicKey: sealing.sign.publicKey, snapshotSignature: signatureKey(key), manifestSignature: '' };
      manifest.signature.manifestSignature = sealing.sign.signData(canonicalManifest(manifest));
    }
    await this.store.putObject(manifestKey(key), encodeManifest(manifest), { ...small, contentType: 'application/json' });
    return manifest;
  }

  private async abort(stored: string, uploadId: string): Promise<void> {
    try {
      await this.store.abortUpload(stored, uploadId);
    } catch {
      // S3 unreachable now: the next upload of this key aborts it first (and retention's stale-upload pass)
      let ids = this.unaborted.get(stored);
      if (!ids) this.unaborted.set(stored, (ids = new Set()));
      ids.add(uploadId);
    }
  }

  private async abortLeftovers(stored: string): Promise<void> {
    const ids = this.unaborted.get(stored);
    if (!ids) return;
    for (const id of [...ids]) {
      await this.store.abortUpload(stored, id).then(
        () => ids.delete(id),
        (e) => {
          // already gone is as good as aborted
          if (classifyError(e) === 'refused') ids.delete(id);
        },
      );
    }
    if (ids.size === 0) this.unaborted.delete(stored);
  }
}

/** The object is locked at least as long as asked (S3 keeps the date to the second or the millisecond). */
function lockedUntil(info: ObjectInfo, lock: ObjectLock): boolean {
  return info.retainUntil !== undefined && info.retainUntil.getTime() >= lock.until.getTime() - 1000;
}

async function partChecksum(body: Buffer, kind: PartIntegrity): Promise<PartChecksum> {
  switch (kind) {
    case 'sha256':
      // on the thread pool, while this thread reads and verifies the next part
      return { kind, value: Buffer.from(await webcrypto.subtle.digest('SHA-256', body)).toString('hex') };
    case 'crc32': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(crc32(body) >>> 0);
      return { kind, value: b.toString('base64') };
    }
    case 'md5':
      return { kind, value: createHash('md5').update(body).digest('base64') };
  }
}

async function readExactly(req: ShipRequest, into: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < into.length) {
    let n: number;
    try {
      ({ bytesRead: n } = await req.fh.read(into, got, into.length - got, position + got));
    } catch (e) {
      throw new AgentError('local_io', `reading ${req.name} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (n === 0) throw new AgentError('changed', `${req.name} shrank while it was being uploaded (ended at byte ${position + got} of ${req.fp.size}); upload aborted, it will be verified again`);
    got += n;
  }
}

async function unchanged(req: ShipRequest): Promise<void> {
  let st;
  try {
    st = await req.fh.stat();
  } catch (e) {
    throw new AgentError('local_io', `cannot stat ${req.name} after reading it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  if (st.size !== req.fp.size || st.mtimeMs !== req.fp.mtimeMs) {
    throw new AgentError('changed', `${req.name} changed while it was being uploaded (now ${st.size} of ${req.fp.size} bytes, mtime ${st.mtimeMs === req.fp.mtimeMs ? 'unchanged' : 'changed'}); upload aborted, it will be verified again`);
  }
}

async function hashFile(fh: FileHandle, size: number, signal: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(size, 4 << 20) || 1);
  for (let pos = 0; pos < size; ) {
    signal.throwIfAborted();
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) throw new AgentError('changed', 'the file shrank while it was being hashed');
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return h.digest('hex');
}
