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
 * How this store is to prove each part: probes it (unless the config insists on the signed payload) and says
 * once in the log when a CRC32 cannot be trusted there. A probe that cannot reach S3 keeps the signed payload.
 */
export async function resolveIntegrity(store: Store, cfg: Config, log: Logger): Promise<PartIntegrity> {
  if (cfg.s3.checksum === 'when_required') {
    log.info('part integrity', { proof: 'signed payload SHA-256', probe: 'not run (s3.checksum: when_required)' });
    return 'sha256';
  }
  let probe;
  try {
    probe = await probePartChecksum(store, nodePrefix(cfg));
  } catch (err) {
    log.warn('could not probe whether S3 checks part checksums; proving parts by their signed payload SHA-256', { error: describeError(err, { location: store.location }) });
  }
  const choice = chooseIntegrity(cfg.s3.checksum, probe);
  if (choice.note) log.warn(choice.note);
  log.info('part integrity', { proof: choice.integrity === 'crc32' ? 'CRC32 header, checked by the server (probed)' : 'signed payload SHA-256', probe: probe?.detail });
  return choice.integrity;
}

export function shipOptions(cfg: Config, extra: { integrity: PartIntegrity; sealing?: Sealing; deep?: DeepCheck; signal?: AbortSignal; onProgress?: (done: number, total: number) => void }): ShipOptions {
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
