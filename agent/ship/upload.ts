// Ships one snapshot file in one read pass: each part is read once, fed to the verifier (hash, trailer,
// bbolt pages, zip CRC), encrypted if configured, given the checksum the server will verify, and sent.
// The multipart upload is completed only when the verifier's verdict at the end is good and the file did
// not change; otherwise it is aborted and nothing is left in S3. The manifest (hash, sizes, proofs,
// signatures) is stored just before Complete, and "shipped" needs HeadObject to show the completed object
// with the expected size and metadata.
import { AgentError } from '../base/errors.js';
import { readAt } from '../base/files.js';
import type { Rejected, Verified } from '../snapshot/format.js';
import { openVerifier, type Verifier } from '../snapshot/verifier.js';
import { abortPending, abortUpload } from '../store/abort.js';
import { objectMetadata } from '../store/layout.js';
import type { CompletedPart, Store } from '../store/store.js';
import { Throttle } from '../base/throttle.js';
import { confirmObject, writeManifest } from './finish.js';
import { partChecksum } from './part-checksum.js';
import { place } from './place.js';
import { CHUNK, partSizeFor, type ShipOptions, type ShipOutcome, type ShipRequest } from './request.js';
import { readExactly, unchanged } from './source.js';

export { CHUNK, partSizeFor, type Sealing, type ShipOptions, type ShipOutcome, type ShipRequest } from './request.js';

export class Uploader {
  constructor(private readonly store: Store) {}

  async ship(req: ShipRequest, opts: ShipOptions): Promise<ShipOutcome> {
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    try {
      return await this.shipWithin(req, opts, signal);
    } catch (err) {
      if (timeout.aborted && !opts.signal?.aborted)
        throw new AgentError('timeout', `upload of ${req.name} to ${req.key} exceeded upload.timeout; it was aborted and will be retried`);
      throw err;
    }
  }

  private async shipWithin(req: ShipRequest, opts: ShipOptions, signal: AbortSignal): Promise<ShipOutcome> {
    const verifier = await openVerifier((p, l) => readAt(req.fh, p, l), req.fp.size, { format: req.format, name: req.name, deep: opts.deep });
    if ('ok' in verifier) return { kind: 'rejected', verdict: verifier };
    let where;
    try {
      where = await place(this.store, req, Boolean(opts.sealing?.encrypt), signal);
    } catch (e) {
      verifier.destroy();
      throw e;
    }
    if (where.kind === 'present') {
      verifier.destroy();
      return where;
    }
    return this.upload(req, opts, signal, verifier, where.key, where.stored);
  }

  private async upload(req: ShipRequest, opts: ShipOptions, outer: AbortSignal, verifier: Verifier, key: string, stored: string): Promise<ShipOutcome> {
    const { store } = this;
    const size = req.fp.size;
    const enc = opts.sealing?.encrypt?.open(size);
    const partSize = partSizeFor(size, opts.partSize, opts.maxParts);
    const parts = Math.max(1, Math.ceil(size / partSize));
    const storedSize = enc ? enc.ciphertextSize : size;
    const metadata = objectMetadata({
      name: req.name,
      producer: req.producer,
      mtimeMs: req.fp.mtimeMs,
      snapshotTime: req.snapshotTime,
      format: verifier.format,
      node: req.node,
      cluster: req.cluster,
      agent: req.agent,
      encrypted: Boolean(enc),
    });

    await abortPending(store, stored);
    const ctl = new AbortController();
    const signal = AbortSignal.any([outer, ctl.signal]);
    const uploadId = await store.createUpload(stored, {
      metadata,
      lock: opts.lock,
      signal,
      ...(opts.integrity === 'crc32' ? { checksumAlgorithm: 'CRC32' } : {}),
    });

    const done = new Array<CompletedPart>(parts);
    const sums = new Array<string>(parts);
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
        await abortUpload(store, stored, uploadId);
        return { kind: 'rejected', verdict };
      }
      await Promise.allSettled([...inflight]);
      if (failure !== undefined) throw failure as Error;
      const verified = verdict as Verified;
      // The manifest goes first: the object then never exists without it. A Complete that fails leaves a
      // manifest whose object is missing, which no reader counts and retention removes.
      const layout = {
        sums,
        first: enc ? enc.header.length + enc.cipherLength(Math.min(partSize, size)) : Math.min(partSize, size),
        each: enc ? enc.cipherLength(partSize) : partSize,
      };
      const manifest = await writeManifest(store, req, opts, key, stored, storedSize, verified, partSize, layout);
      await store.completeUpload(stored, uploadId, done, signal);
      await confirmObject(store, stored, storedSize, metadata, opts.lock);
      return { kind: 'shipped', key, storedKey: stored, verified, manifest, partSize, parts };
    } catch (err) {
      // the first failure is the reason: parts aborted because of it must not stand in for it
      const first = failure ?? err;
      failure = first;
      ctl.abort(first);
      await Promise.allSettled([...inflight]);
      await abortUpload(store, stored, uploadId);
      throw first;
    } finally {
      verifier.destroy();
    }
  }
}
