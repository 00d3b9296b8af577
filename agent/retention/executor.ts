// One retention pass: the planners decide, this carries it out (HeadObject, unlink, DeleteObject,
// AbortMultipartUpload), stopping cleanly when the agent stops and saying why every file stayed.
import { lstat, unlink } from 'node:fs/promises';
import { classifyError, describeError, ioCode } from '../base/errors.js';
import type { Config } from '../config/keys.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import { asRemoteFacts, companions, confirmCopy, eachLimited, readCatalog, type CatalogEntry } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import type { Ledger } from '../store/ledger.js';
import type { Store } from '../store/store.js';
import type { LocalFileAt } from '../snapshot/lifecycle.js';
import { keysToConfirm, planPrune, type Decision, type HeadFact, type LocalPolicy } from './local.js';
import { iso } from './rank.js';
import { planRemote, type RemoteDecision } from './remote.js';
import { planStaleUploads, type UploadDecision } from './uploads.js';

/** Manifests and signatures left by a deletion that stopped halfway are removed once this old. */
const ORPHAN_AGE_MS = 86_400_000;
export interface RetentionDeps {
  cfg: Config;
  store: Store;
  ledger: Ledger;
  log: Logger;
  metrics?: Metrics;
  /** the clock; injectable so tests can age uploads and files without waiting */
  now?: () => number;
}

export type { LocalFileAt } from '../snapshot/lifecycle.js';

export interface PassOptions {
  /** what started the pass, for the log: start, schedule, cli */
  trigger?: string;
  dryRun?: boolean;
  /** overrides retention.staleUploadAge for this pass (`prune --stale-upload-age`) */
  staleUploadAgeMs?: number;
  /** keys this process is uploading right now: their multipart uploads are not stale */
  inFlightKeys?: ReadonlySet<string>;
  /** stop deleting (shutdown); decisions already carried out stay carried out */
  signal?: AbortSignal;
}

export interface Problem {
  phase: 'local' | 'remote' | 'uploads';
  /** true when S3 did not answer or refused; false for local I/O */
  s3: boolean;
  detail: string;
}

export interface PassReport {
  dryRun: boolean;
  /** deleted, or in a dry run: would be deleted */
  local: { deleted: Decision[]; kept: Decision[] };
  remote?: { deleted: RemoteDecision[]; kept: RemoteDecision[] };
  uploads?: { aborted: UploadDecision[]; kept: UploadDecision[] };
  problems: Problem[];
  ok: boolean;
}

/**
 * Carries out a plan's removals in order, one loop for local files, remote objects and stale uploads:
 * once the agent is stopping the rest is kept for the next pass; a dry run only logs. `act` removes one
 * and says how it went: done, already gone, or kept with a reason.
 */
async function carryOut<D extends { reason: string }>(
  todo: readonly D[],
  kept: D[],
  opts: { dryRun: boolean; stopped: () => boolean; wouldDo: (d: D) => void; act: (d: D) => Promise<'done' | 'gone' | { kept: string }> },
): Promise<D[]> {
  const done: D[] = [];
  for (const d of todo) {
    if (opts.stopped()) {
      kept.push({ ...d, reason: 'the agent is stopping; left for the next pass' });
      continue;
    }
    if (opts.dryRun) {
      opts.wouldDo(d);
      done.push(d);
      continue;
    }
    const how = await opts.act(d);
    if (how === 'done') done.push(d);
    else if (how !== 'gone') kept.push({ ...d, reason: how.kept });
  }
  return done;
}

// a put-only bucket policy refusing DeleteObject is not an outage, and the log should say which it is
const s3Trouble = (e: unknown): string => (['network', 'timeout', 'tls'].includes(classifyError(e)) ? 'S3 unreachable' : 'S3 refused the request');

/** One retention pass: local files, then (when enabled) this node's objects, then stale uploads. */
export async function prunePass(deps: RetentionDeps, files: readonly LocalFileAt[], opts: PassOptions = {}): Promise<PassReport> {
  const { cfg, store, log, metrics } = deps;
  const clock = deps.now ?? Date.now;
  const started = clock();
  const dryRun = opts.dryRun ?? cfg.retention.dryRun;
  const problems: Problem[] = [];
  const stopped = (): boolean => opts.signal?.aborted === true;

  const local = await pruneLocal(deps, files, dryRun, problems, stopped);
  let unreachable = problems.find((p) => p.s3);
  let remote: PassReport['remote'];

  const s3Phase = async <T>(phase: Problem['phase'], run: () => Promise<T>): Promise<T | undefined> => {
    if (stopped()) return undefined;
    // one unanswered S3 is enough for this pass; don't wait for its timeouts again
    if (unreachable) {
      problems.push({ phase, s3: true, detail: unreachable.detail });
      return undefined;
    }
    try {
      return await run();
    } catch (err) {
      const detail = describeError(err, { location: store.location });
      unreachable = { phase, s3: true, detail };
      problems.push(unreachable);
      log.warn(`retention: ${s3Trouble(err)}; ${phase === 'remote' ? 'remote retention stopped' : 'no stale upload aborted'} this pass`, {
        error: detail,
        prefix: nodePrefix(cfg),
      });
      return undefined;
    }
  };
  if (cfg.retention.remote.enabled) {
    const present = new Set(files.map((f) => f.name));
    for (const d of local.deleted) if (!dryRun) present.delete(d.name);
    remote = await s3Phase('remote', () => pruneRemote(deps, present, dryRun, stopped));
  }
  const uploads = await s3Phase('uploads', () => abortStaleUploads(deps, opts, dryRun, stopped));

  const ok = problems.length === 0;
  if (metrics) {
    if (ok) metrics.pruneSucceeded(clock());
    else metrics.pruneFailures.inc();
  }
  const summary = {
    trigger: opts.trigger,
    dryRun,
    localDeleted: local.deleted.length,
    localKept: local.kept.length,
    localDeletedBytes: local.deleted.reduce((n, d) => n + d.size, 0),
    remoteDeleted: remote?.deleted.length ?? 0,
    uploadsAborted: uploads?.aborted.length ?? 0,
    seconds: Number(((clock() - started) / 1000).toFixed(3)),
  };
  if (ok) log.info('retention pass finished', summary);
  else log.warn('retention pass incomplete', { ...summary, problems: problems.map((p) => `${p.phase}: ${p.detail}`) });
  return { dryRun, local, remote, uploads, problems, ok };
}

async function pruneLocal(
  deps: RetentionDeps,
  files: readonly LocalFileAt[],
  dryRun: boolean,
  problems: Problem[],
  stopped: () => boolean,
): Promise<PassReport['local']> {
  const { cfg, store, ledger, log, metrics } = deps;
  const now = (deps.now ?? Date.now)();
  const policy: LocalPolicy = { keep: cfg.retention.keep, maxAgeMs: cfg.retention.maxAgeMs, confirmRemote: cfg.retention.confirmRemote };
  const base = { files, ledger: ledger.entries(), policy, now };
  const heads = new Map<string, HeadFact>();
  let s3Unavailable: string | undefined;
  if (policy.confirmRemote) {
    let asking: string | undefined;
    try {
      await eachLimited(keysToConfirm(base), 4, async (key) => {
        asking = key;
        heads.set(key, await confirmCopy(store, key, ledger.getByKey(key)?.storedKey));
      });
    } catch (err) {
      s3Unavailable = describeError(err, { location: store.location, key: asking });
      problems.push({ phase: 'local', s3: true, detail: s3Unavailable });
      log.warn(`retention: ${s3Trouble(err)}; no local snapshot pruned this pass (copies cannot be confirmed)`, {
        error: s3Unavailable,
        candidates: keysToConfirm(base).length,
      });
    }
  }
  const plan = planPrune({ ...base, heads, s3Unavailable });
  const at = new Map(files.map((f) => [f.name, f]));
  const kept = [...plan.keep];
  const deleted = await carryOut(plan.delete, kept, {
    dryRun,
    stopped,
    wouldDo: (d) => log.info('retention (dry run): would prune local snapshot', { file: at.get(d.name)!.path, key: d.key, size: d.size, reason: d.reason }),
    act: async (d) => {
      const f = at.get(d.name)!;
      try {
        // the producer may have written a new file under the same name since the plan was made
        const st = await lstat(f.path);
        if (!st.isFile() || st.size !== f.size || st.mtimeMs !== f.mtimeMs || (f.ino !== undefined && st.ino !== f.ino)) {
          log.warn('retention: not pruning a snapshot that changed since it was checked', { file: f.path, key: d.key });
          return { kept: 'changed since it was checked; the next pass decides again' };
        }
        await unlink(f.path);
      } catch (e) {
        if (ioCode(e) === 'ENOENT') {
          log.debug('retention: snapshot already gone', { file: f.path, key: d.key });
          return 'gone';
        }
        problems.push({ phase: 'local', s3: false, detail: `cannot delete ${f.path} (${ioCode(e)})` });
        log.error('retention: cannot delete local snapshot', {
          file: f.path,
          key: d.key,
          error: ioCode(e),
          fix: 'the agent needs write access to the snapshot directory (systemd: ReadWritePaths=)',
        });
        return { kept: `could not be deleted (${ioCode(e)})` };
      }
      metrics?.pruned.inc({ location: 'local' });
      metrics?.prunedBytes.inc({ location: 'local' }, d.size);
      log.info('retention: pruned local snapshot', { file: f.path, key: d.key, size: d.size, reason: d.reason });
      return 'done';
    },
  });
  for (const k of plan.keep) log.debug('retention: kept local snapshot', { file: at.get(k.name)?.path ?? k.name, key: k.key, reason: k.reason });
  return { deleted, kept };
}

async function pruneRemote(
  deps: RetentionDeps,
  localNames: ReadonlySet<string>,
  dryRun: boolean,
  stopped: () => boolean,
): Promise<NonNullable<PassReport['remote']>> {
  const { cfg, store, ledger, log, metrics } = deps;
  const prefix = nodePrefix(cfg);
  const now = (deps.now ?? Date.now)();
  // ownership, snapshot time and Object Lock decide, so every object is read: its manifest and its HeadObject
  const catalog = await readCatalog(store, prefix, { head: true });
  const byKey = new Map<string, CatalogEntry>(catalog.entries.map((e) => [e.object.key, e]));
  const { keep, maxAgeMs } = cfg.retention.remote;
  const plan = planRemote({
    objects: catalog.entries.map(asRemoteFacts),
    prefix,
    node: cfg.node,
    cluster: cfg.cluster,
    policy: { keep, maxAgeMs },
    now,
    localNames,
  });
  const kept = [...plan.keep];
  const forgets: Promise<void>[] = [];
  const deleted = await carryOut(plan.delete, kept, {
    dryRun,
    stopped,
    wouldDo: (d) => log.info('retention (dry run): would delete remote snapshot', { key: d.key, file: d.name, size: d.size, reason: d.reason }),
    act: async (d) => {
      const e = byKey.get(d.key)!;
      // the object first: a deletion that stops halfway leaves a manifest without object (an orphan, removed
      // later), never an object without its manifest (which would look like an unconfirmed upload)
      for (const k of companions(e)) {
        try {
          await store.delete(k);
        } catch (err) {
          if (classifyError(err) !== 'auth') throw err;
          const error = describeError(err, { location: store.location, key: k });
          if (k !== e.object.key) {
            // the snapshot object is gone already: this one is an orphan, removed by a later pass
            log.warn('retention: S3 refused to delete a manifest or signature of a deleted snapshot; a later pass removes it', { key: k, error });
            continue;
          }
          // Refused: said once here and in the report, tried again only by the next pass (never in a loop).
          // The planner already leaves objects whose lock it can see; this is a lock it could not see, or a
          // bucket policy that denies deletion.
          log.warn('retention: S3 refused to delete a remote snapshot; kept', { key: d.key, file: d.name, error });
          return { kept: `S3 refused to delete it (${error}); an Object Lock or a bucket policy protects it. Kept; the next retention pass tries once more` };
        }
      }
      metrics?.pruned.inc({ location: 'remote' });
      metrics?.prunedBytes.inc({ location: 'remote' }, d.size);
      log.info('retention: deleted remote snapshot', { key: d.key, file: d.name, size: d.size, reason: d.reason });
      // the ledger records what S3 holds; its writes are paced, so the pass waits for them once, at its end
      forgets.push(
        ledger.forget(e.key).catch((err) => {
          metrics?.ledgerWriteFailures.inc();
          log.error('could not write the ledger after a remote deletion; it is corrected in memory', { key: d.key, ledger: ledger.path, error: ioCode(err) });
        }),
      );
      return 'done';
    },
  });
  await Promise.all(forgets);
  for (const o of catalog.orphans) {
    if (stopped() || dryRun || now - (o.lastModified?.getTime() ?? now) < ORPHAN_AGE_MS) continue;
    try {
      await store.delete(o.key);
    } catch (err) {
      if (classifyError(err) !== 'auth') throw err;
      log.debug('retention: S3 refused to delete a manifest or signature whose snapshot object is gone (locked); left for a later pass', { key: o.key });
      continue;
    }
    log.info('retention: deleted a manifest or signature whose snapshot object is gone', { key: o.key });
  }
  for (const k of plan.keep) log.debug('retention: kept remote snapshot', { key: k.key, file: k.name, reason: k.reason });
  return { deleted, kept };
}

async function abortStaleUploads(deps: RetentionDeps, opts: PassOptions, dryRun: boolean, stopped: () => boolean): Promise<NonNullable<PassReport['uploads']>> {
  const { cfg, store, log } = deps;
  const prefix = nodePrefix(cfg);
  const uploads = (await store.listUploads(prefix)).map((u) => ({ key: u.key, uploadId: u.uploadId, initiatedMs: u.initiated?.getTime() }));
  const maxAgeMs = opts.staleUploadAgeMs ?? cfg.retention.staleUploadAgeMs;
  const plan = planStaleUploads({ uploads, prefix, now: (deps.now ?? Date.now)(), maxAgeMs, inFlightKeys: opts.inFlightKeys ?? new Set() });
  const kept = [...plan.keep];
  const fields = (u: UploadDecision): Record<string, unknown> => ({
    key: u.key,
    uploadId: u.uploadId,
    initiated: u.initiatedMs === undefined ? undefined : iso(u.initiatedMs),
    reason: u.reason,
  });
  const aborted = await carryOut(plan.abort, kept, {
    dryRun,
    stopped,
    wouldDo: (u) => log.info('retention (dry run): would abort stale multipart upload', fields(u)),
    act: async (u) => {
      await store.abortUpload(u.key, u.uploadId);
      log.info('retention: aborted stale multipart upload', fields(u));
      return 'done';
    },
  });
  return { aborted, kept };
}
