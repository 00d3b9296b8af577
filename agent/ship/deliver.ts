// Delivers one queued snapshot to the store: opens it, runs the upload, records the outcome in the track,
// the metrics, the log and the ledger. A failure decides the wait before the next try: one backoff for the
// whole queue when S3 itself is at fault (every file would fail alike), one for the file otherwise.
import { classifyError, describeError, storeAtFault } from '../base/errors.js';
import { fingerprint, openRegular } from '../base/files.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { snapshotTime } from '../snapshot/names.js';
import type { Ledger } from '../store/ledger.js';
import { objectKey } from '../store/layout.js';
import type { PartIntegrity, Store } from '../store/store.js';
import { shipOptions } from './options.js';
import type { Track } from './track.js';
import { Uploader, type ShipOutcome } from './upload.js';

export interface DeliverDeps {
  cfg: Config;
  store: Store;
  ledger: Ledger;
  metrics: Metrics;
  log: Logger;
  version: string;
  /** how parts are proven (decided by the start-up probe) */
  integrity: () => PartIntegrity;
  deep?: DeepCheck;
  sealing?: Sealing;
}

/** What a delivery needs of the queue that owns the file. */
export interface DeliveryHooks {
  /** shutdown has begun: an aborted upload is then its doing, not a failure */
  closing: () => boolean;
  /** the file disappeared before it could be opened */
  gone: (path: string) => void;
  /** look at the file again after `delayMs` (it changed or could not be read) */
  recheck: (t: Track, delayMs: number) => void;
  /** the number of queued and shipping files may have changed */
  pendingChanged: () => void;
}

/** Exponential backoff with jitter, so many agents recovering together don't stampede S3. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number, random = Math.random()): number {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(30, Math.max(0, attempt - 1)));
  return Math.round(base / 2 + (random * base) / 2);
}

export class Delivery {
  private readonly uploader: Uploader;
  private readonly abort = new AbortController();
  /** store-wide failures in a row: the queue's backoff grows with them, and any success resets it */
  private storeFailures = 0;
  private until = 0;

  constructor(
    private readonly d: DeliverDeps,
    private readonly hooks: DeliveryHooks,
  ) {
    this.uploader = new Uploader(d.store);
  }

  /** No upload starts before then: S3 itself failed (0: no such wait). */
  get backoffUntil(): number {
    return this.until;
  }

  /** The queue may try again at once (S3 was seen to be back). */
  clearBackoff(): void {
    this.until = 0;
  }

  /** Shutdown's last step: the uploads in flight are aborted, their multipart uploads too. */
  abortUploads(): void {
    this.abort.abort();
  }

  async deliver(t: Track): Promise<void> {
    const { cfg, ledger, log, metrics } = this.d;
    const started = Date.now();
    let opened;
    try {
      opened = await openRegular(t.path);
    } catch (e) {
      t.state = 'settling';
      this.hooks.pendingChanged();
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') this.hooks.gone(t.path);
      return;
    }
    const { fh, st } = opened;
    const fp = fingerprint(st);
    const key = t.key ?? objectKey(cfg, t.name);
    log.debug('upload started', { file: t.path, key, size: fp.size, attempt: t.attempts + 1 });
    let lastProgressLog = Date.now();
    let outcome: ShipOutcome;
    try {
      outcome = await this.uploader.ship(
        {
          fh,
          fp,
          name: t.name,
          producer: t.snap.producer,
          snapshotTime: snapshotTime(t.snap, fp.mtimeMs),
          key,
          node: cfg.node,
          cluster: cfg.cluster,
          agent: this.d.version,
          format: t.snap.format,
        },
        shipOptions(cfg, {
          signal: this.abort.signal,
          integrity: this.d.integrity(),
          ...(this.d.deep ? { deep: this.d.deep } : {}),
          ...(this.d.sealing ? { sealing: this.d.sealing } : {}),
          onProgress: (done, total) => {
            t.progress = { done, total };
            if (Date.now() - lastProgressLog >= 30_000) {
              lastProgressLog = Date.now();
              log.debug('upload progress', { file: t.path, key, bytes: done, of: total, percent: Math.floor((done / total) * 100) });
            }
          },
        }),
      );
    } catch (err) {
      await fh.close().catch(() => undefined);
      this.failed(t, key, err);
      return;
    }
    await fh.close().catch(() => undefined);
    this.storeFailures = 0;
    if (outcome.kind === 'rejected') {
      // The one read pass found the file not to be a sound snapshot; the upload was aborted.
      t.failed = { fp, result: { ok: false, reason: outcome.verdict.reason, detail: outcome.verdict.detail } };
      t.state = 'settling';
      this.hooks.pendingChanged();
      return;
    }
    const sha256 = outcome.kind === 'shipped' ? outcome.verified.sha256 : outcome.sha256;
    metrics.snapshotSeen(fp.mtimeMs);
    const seconds = (Date.now() - started) / 1000;
    Object.assign(t, { key: outcome.key, sha256, state: 'confirmed' as const, attempts: 0, notBefore: 0, why: `confirmed in S3 as ${outcome.storedKey}` });
    this.hooks.pendingChanged();
    const confirmedAt = new Date();
    if (outcome.kind === 'shipped') {
      metrics.uploadSucceeded(fp.size, seconds, confirmedAt);
      if (outcome.verified.db) metrics.dbFacts(outcome.verified.db.revision, outcome.verified.db.keys, snapshotTime(t.snap, fp.mtimeMs).getTime());
      log.info('snapshot shipped and confirmed', {
        file: t.path,
        key: outcome.storedKey,
        size: fp.size,
        sha256,
        parts: outcome.parts,
        integrity: outcome.manifest.object.integrity,
        seconds: Number(seconds.toFixed(3)),
        mibPerSecond: Number((fp.size / 1048576 / Math.max(seconds, 0.001)).toFixed(1)),
      });
    } else {
      metrics.uploads.inc({ result: 'already_present' });
      // S3 already holds these bytes: the backup is as fresh as the newer of the object and this file
      metrics.confirmedAt(new Date(Math.max(outcome.lastModified?.getTime() ?? 0, fp.mtimeMs)));
      log.info('snapshot already in S3; not sent again', { file: t.path, key: outcome.storedKey, sha256, why: outcome.why });
    }
    // not awaited: the write waits for the ledger's pace (at most one a second), and the next upload need not
    ledger
      .record({
        name: t.name,
        key: outcome.key,
        ...(outcome.storedKey !== outcome.key ? { storedKey: outcome.storedKey } : {}),
        size: fp.size,
        sha256,
        mtimeMs: fp.mtimeMs,
        producer: t.snap.producer,
        confirmedAt: confirmedAt.toISOString(),
        snapshotTime: snapshotTime(t.snap, fp.mtimeMs).toISOString(),
      })
      .catch((e: unknown) => {
        // S3 has it; the ledger is a cache that the next write (or a rebuild) repairs.
        metrics.ledgerWriteFailures.inc();
        log.error('could not write the ledger; the upload is confirmed in S3 and kept in memory', {
          file: t.path,
          key: outcome.key,
          ledger: ledger.path,
          error: (e as NodeJS.ErrnoException).code ?? String(e),
        });
      });
  }

  private failed(t: Track, key: string, err: unknown): void {
    const { cfg, log, metrics, store } = this.d;
    const reason = classifyError(err);
    if (this.hooks.closing() && reason === 'aborted') {
      t.state = 'queued';
      log.warn('upload aborted by shutdown; it will be shipped after restart', { file: t.path, key });
      return;
    }
    metrics.uploads.inc({ result: 'failure' });
    metrics.uploadFailed(reason);
    t.attempts++;
    if (reason === 'changed' || reason === 'local_io') {
      log.warn('upload stopped: the file changed or could not be read; checking it again', {
        file: t.path,
        key,
        reason,
        detail: describeError(err, { location: store.location, key }),
      });
      t.state = 'settling';
      t.changedAt = Date.now();
      this.hooks.pendingChanged();
      this.hooks.recheck(t, cfg.detect.pollIntervalMs);
      return;
    }
    t.state = 'queued';
    const storeWide = storeAtFault(reason);
    const delay = backoffMs(storeWide ? ++this.storeFailures : t.attempts, cfg.upload.retryInitialMs, cfg.upload.retryMaxMs);
    if (storeWide) this.until = Date.now() + delay;
    else t.notBefore = Date.now() + delay;
    log.warn('upload failed; the snapshot stays pending and will be retried', {
      file: t.path,
      key,
      reason,
      error: describeError(err, { location: store.location, key }),
      attempt: t.attempts,
      retryInSeconds: Math.round(delay / 1000),
    });
  }
}
