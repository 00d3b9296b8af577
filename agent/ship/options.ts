// The options of every upload, from the config, in one place: the daemon's shipper and `upload` both use it.
import { describeError } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import type { Logger } from '../ops/log.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { nodePrefix } from '../store/layout.js';
import { chooseIntegrity, probePartChecksum } from '../store/probe.js';
import type { ObjectLock, PartIntegrity, Store } from '../store/store.js';
import type { ShipOptions } from './upload.js';

/** Object Lock retention for an object written now, when the config asks for it. */
export function objectLockFor(cfg: Config, now = Date.now()): ObjectLock | undefined {
  const l = cfg.s3.objectLock;
  return l ? { mode: l.mode, until: new Date(now + l.retainForMs) } : undefined;
}

/**
 * The proof of each part when objects are written under Object Lock. AWS then refuses a part that carries
 * neither Content-MD5 nor an x-amz-checksum-* header it checks ("Content-MD5 OR x-amz-checksum- HTTP header
 * is required for Put Part requests with Object Lock parameters"); the signed payload SHA-256 does not count.
 * So a part that would be proven by the signed payload alone carries Content-MD5 instead; a CRC32 header the
 * server was probed to check stays. Ceph RGW 16 accepts either (tested), so nothing is lost there. Pure.
 */
export function integrityUnderLock(integrity: PartIntegrity, locked: boolean): PartIntegrity {
  return locked && integrity === 'sha256' ? 'md5' : integrity;
}

/**
 * How this store is to prove each part: probes it (unless the config insists on the signed payload) and says
 * once in the log when a CRC32 cannot be trusted there. A probe that cannot reach S3 keeps the signed payload.
 * Objects are written under Object Lock when the config asks for it or the bucket has it (a default retention
 * rule locks them too): then see integrityUnderLock.
 */
export async function resolveIntegrity(store: Store, cfg: Config, log: Logger): Promise<PartIntegrity> {
  let probe;
  let choice: { integrity: 'sha256' | 'crc32'; note?: string } = { integrity: 'sha256' };
  if (cfg.s3.checksum !== 'when_required') {
    try {
      probe = await probePartChecksum(store, nodePrefix(cfg));
    } catch (err) {
      log.warn('could not probe whether S3 checks part checksums; proving parts by their signed payload SHA-256', {
        error: describeError(err, { location: store.location }),
      });
    }
    choice = chooseIntegrity(cfg.s3.checksum, probe);
    if (choice.note) log.warn(choice.note);
  }
  const bucketLock = cfg.s3.objectLock ? undefined : await store.objectLockEnabled().catch(() => undefined);
  const locked = cfg.s3.objectLock !== undefined || bucketLock === true;
  const integrity = integrityUnderLock(choice.integrity, locked);
  const proof =
    integrity === 'crc32'
      ? 'CRC32 header, checked by the server (probed)'
      : integrity === 'md5'
        ? 'Content-MD5 (objects are written under Object Lock, where S3 wants it on every part)'
        : 'signed payload SHA-256';
  log.info('part integrity', { proof, probe: probe?.detail ?? (cfg.s3.checksum === 'when_required' ? 'not run (s3.checksum: when_required)' : undefined) });
  return integrity;
}

export function shipOptions(
  cfg: Config,
  extra: { integrity: PartIntegrity; sealing?: Sealing; deep?: DeepCheck; signal?: AbortSignal; onProgress?: (done: number, total: number) => void },
): ShipOptions {
  return {
    timeoutMs: cfg.upload.timeoutMs,
    partSize: cfg.s3.partSize,
    queueSize: cfg.s3.queueSize,
    maxParts: cfg.s3.maxParts,
    bandwidthLimit: cfg.upload.bandwidthLimit,
    lock: objectLockFor(cfg),
    ...extra,
  };
}
