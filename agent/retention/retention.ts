// Retention: which snapshots may go, and making them go. The planners are pure functions over plain data,
// so each safety rule is one entry in a list below, tested by tables and by property tests. The executor
// does the I/O (HeadObject, unlink, DeleteObject, AbortMultipartUpload); the scheduler runs it on node-cron.
import { lstat, unlink } from 'node:fs/promises';
import { createTask, type Logger as CronLogger, type ScheduledTask } from 'node-cron';
import type { Config } from '../config/config.js';
import { nodePrefix } from '../config/config.js';
import type { Ledger } from '../store/ledger.js';
import { META } from '../store/ledger.js';
import type { Logger } from '../ops/log.js';
import type { Metrics } from '../ops/metrics.js';
import type { LocalSnapshot, TrackState } from '../ship/shipper.js';
import { classifyError, describeError, type Store } from '../store/s3.js';
import { formatDuration } from '../base/units.js';

// ───────────────────────────── local planner (pure) ─────────────────────────────

/** What the agent knows of a file in the snapshot directory; `unrecognised`: not a snapshot at all. */
export type FileState = TrackState | 'unrecognised';

/** States of a complete, intact snapshot: the only files a count or age policy ranks. */
export const VERIFIED: ReadonlySet<FileState> = new Set<FileState>(['queued', 'shipping', 'confirmed']);

export interface LocalFile {
  name: string;
  state: FileState;
  size: number;
  mtimeMs: number;
  /** of the whole file, once verified */
  sha256?: string;
  /** why it is not a snapshot, or why it failed verification */
  detail?: string;
}

/** A confirmed upload as the ledger records it. */
export interface LedgerFact {
  name: string;
  key: string;
  size: number;
  sha256: string;
}

/** HeadObject at prune time: null when S3 has no such object. */
export type HeadFact = { size: number; sha256?: string } | null;

export interface LocalPolicy {
  keep?: number;
  maxAgeMs?: number;
  /** HeadObject must confirm each copy before its local file goes (off only for offline tests) */
  confirmRemote: boolean;
}

export interface LocalPlanInput {
  files: readonly LocalFile[];
  ledger: readonly LedgerFact[];
  /** by object key; a key missing here was not checked */
  heads: ReadonlyMap<string, HeadFact>;
  policy: LocalPolicy;
  now: number;
  /** S3 could not be asked: nothing whose copy needs confirming is deleted */
  s3Unavailable?: string;
}

export interface Decision {
  name: string;
  reason: string;
  size: number;
  /** the confirmed copy in S3, when there is one */
  key?: string;
}

export interface LocalPlan {
  delete: Decision[];
  keep: Decision[];
}

interface LocalContext {
  input: LocalPlanInput;
  newest: LocalFile | undefined;
  /** 0 = newest, among verified files with a trustworthy mtime */
  rank: ReadonlyMap<LocalFile, number>;
  copy(f: LocalFile): LedgerFact | undefined;
}

interface LocalRule {
  rule: string;
  /** a reason to keep the file, or undefined to let the next rule decide */
  keep(f: LocalFile, c: LocalContext): string | undefined;
}

const byRecency = (a: { t: number; id: string }, b: { t: number; id: string }): number => b.t - a.t || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
const iso = (ms: number): string => (Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms));

function policyVerdict(f: LocalFile, c: LocalContext): { delete: boolean; why: string } {
  const { keep, maxAgeMs } = c.input.policy;
  const rank = c.rank.get(f) ?? 0;
  const age = c.input.now - f.mtimeMs;
  const overCount = keep !== undefined && rank >= keep;
  const overAge = maxAgeMs !== undefined && age > maxAgeMs;
  if (overCount || overAge) {
    const why = [overCount && `beyond the newest ${keep} (it is number ${rank + 1})`, overAge && `older than maxAge ${formatDuration(maxAgeMs!)} (age ${formatDuration(age)})`];
    return { delete: true, why: why.filter(Boolean).join(' and ') };
  }
  if (keep === undefined && maxAgeMs === undefined) return { delete: false, why: 'no local retention policy (retention.keep and retention.maxAge are unset)' };
  const why = [keep !== undefined && `one of the newest ${keep} (number ${rank + 1})`, maxAgeMs !== undefined && `younger than maxAge ${formatDuration(maxAgeMs)} (age ${formatDuration(age)})`];
  return { delete: false, why: `within policy: ${why.filter(Boolean).join(' and ')}` };
}

const WOULD = 'the policy would delete it, but';

/**
 * The local rules, in order: the first that gives a reason keeps the file; a file no rule keeps is
 * deleted. Every safety promise is exactly one entry here.
 */
export const LOCAL_RULES: readonly LocalRule[] = [
  { rule: 'only files recognised as snapshots', keep: (f) => (f.state === 'unrecognised' ? `not an etcd snapshot${f.detail ? ` (${f.detail})` : ''}; the agent never deletes it` : undefined) },
  { rule: 'never a file that failed verification', keep: (f) => (f.state === 'rejected' ? `failed verification${f.detail ? ` (${f.detail})` : ''}; kept for inspection, never deleted` : undefined) },
  { rule: 'only verified files', keep: (f) => (f.state === 'held' || f.state === 'settling' ? 'not verified yet (still being written, or waiting for its .zip)' : undefined) },
  { rule: 'raw files replaced by a zip belong to their producer', keep: (f) => (f.state === 'superseded' ? 'raw snapshot already replaced by its .zip; its producer deletes it' : undefined) },
  { rule: 'the newest verified snapshot always stays', keep: (f, c) => (f === c.newest ? 'newest verified snapshot; always kept' : undefined) },
  { rule: 'a future mtime is age 0', keep: (f, c) => (f.mtimeMs > c.input.now ? `modified in the future (${iso(f.mtimeMs)}): the clock may have jumped, so it counts as new and is never deleted for its age` : undefined) },
  {
    rule: 'the policy (keep, maxAge)',
    keep: (f, c) => {
      const v = policyVerdict(f, c);
      return v.delete ? undefined : v.why;
    },
  },
  { rule: 'never before it is in S3', keep: (f) => (f.state === 'confirmed' ? undefined : `${WOULD} it is not in S3 yet (${f.state === 'shipping' ? 'uploading now' : 'unshipped: no confirmed upload in the ledger'})`) },
  { rule: 'the ledger confirms this content', keep: (f, c) => (c.copy(f) ? undefined : `${WOULD} the ledger has no confirmed upload with this sha256 and size`) },
  { rule: 'S3 answers', keep: (f, c) => (c.input.policy.confirmRemote && c.input.s3Unavailable ? `${WOULD} S3 could not confirm its copy: ${c.input.s3Unavailable}` : undefined) },
  { rule: 'HeadObject confirms the copy', keep: (f, c) => (c.input.policy.confirmRemote ? headProblem(f, c.copy(f)!.key, c.input.heads) : undefined) },
];

function headProblem(f: LocalFile, key: string, heads: ReadonlyMap<string, HeadFact>): string | undefined {
  const h = heads.get(key);
  if (h === undefined) return `${WOULD} its copy ${key} was not checked in S3`;
  if (h === null) return `${WOULD} S3 has no object ${key} although the ledger says it was confirmed`;
  if (h.size !== f.size || h.sha256 !== f.sha256) return `${WOULD} the object ${key} in S3 does not match it (size ${h.size}, sha256 ${h.sha256 ?? 'missing'})`;
  return undefined;
}

function localContext(input: LocalPlanInput): LocalContext {
  const verified = input.files.filter((f) => VERIFIED.has(f.state));
  const recency = (f: LocalFile): { t: number; id: string } => ({ t: f.mtimeMs, id: f.name });
  const newest = [...verified].sort((a, b) => byRecency(recency(a), recency(b)))[0];
  const ranked = verified.filter((f) => f.mtimeMs <= input.now).sort((a, b) => byRecency(recency(a), recency(b)));
  const rank = new Map(ranked.map((f, i) => [f, i]));
  const byName = new Map<string, LedgerFact[]>();
  for (const e of input.ledger) byName.set(e.name, [...(byName.get(e.name) ?? []), e]);
  const copy = (f: LocalFile): LedgerFact | undefined => (f.sha256 === undefined ? undefined : byName.get(f.name)?.find((e) => e.sha256 === f.sha256 && e.size === f.size));
  return { input, newest, rank, copy };
}

/** Decides, for every local file, whether it goes and why. Pure. */
export function planPrune(input: LocalPlanInput): LocalPlan {
  const c = localContext(input);
  const plan: LocalPlan = { delete: [], keep: [] };
  for (const f of input.files) {
    let reason: string | undefined;
    for (const r of LOCAL_RULES) if ((reason = r.keep(f, c)) !== undefined) break;
    const key = c.copy(f)?.key;
    if (reason !== undefined) {
      plan.keep.push({ name: f.name, reason, size: f.size, ...(key ? { key } : {}) });
      continue;
    }
    const confirmedBy = input.policy.confirmRemote ? 'the ledger and HeadObject (sha256 and size)' : 'the ledger only (retention.confirmRemote is off)';
    plan.delete.push({ name: f.name, size: f.size, key, reason: `${policyVerdict(f, c).why}; its copy ${key} is confirmed by ${confirmedBy}` });
  }
  return plan;
}

/** The object keys whose HeadObject decides the plan: the copies of the files the policy would delete. */
export function keysToConfirm(input: Omit<LocalPlanInput, 'heads' | 's3Unavailable'>): string[] {
  const candidates = planPrune({ ...input, heads: new Map(), policy: { ...input.policy, confirmRemote: false } });
  return candidates.delete.map((d) => d.key!);
}

// ───────────────────────────── remote planner (pure) ─────────────────────────────

export interface RemoteObject {
  key: string;
  size: number;
  lastModifiedMs?: number;
  /** user metadata from HeadObject */
  metadata?: Record<string, string>;
}

export interface RemotePolicy {
  keep?: number;
  maxAgeMs?: number;
}

export interface RemotePlanInput {
  objects: readonly RemoteObject[];
  /** this node's prefix, nodePrefix(cfg) */
  prefix: string;
  node: string;
  cluster: string;
  policy: RemotePolicy;
  now: number;
  /** names still in the snapshot directory */
  localNames: ReadonlySet<string>;
}

export interface RemoteDecision {
  key: string;
  reason: string;
  size: number;
  name?: string;
}

export interface RemotePlan {
  delete: RemoteDecision[];
  keep: RemoteDecision[];
}

interface RemoteContext {
  input: RemotePlanInput;
  /** how many of the newest always stay: `keep`, or 1 when only maxAge is set */
  keepN: number;
  rank: ReadonlyMap<RemoteObject, number>;
}

interface RemoteRule {
  rule: string;
  keep(o: RemoteObject, c: RemoteContext): string | undefined;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The file name after this node's prefix, if the key sits directly under it (our keys never nest). */
function ownName(key: string, prefix: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  return rest === '' || rest.includes('/') ? undefined : rest;
}

function objectName(o: RemoteObject, prefix: string): string | undefined {
  const raw = o.metadata?.[META.name];
  if (raw) {
    try {
      return decodeURIComponent(raw);
    } catch {
      /* fall back to the key */
    }
  }
  return ownName(o.key, prefix);
}

function remoteAge(o: RemoteObject, c: RemoteContext): number {
  return c.input.now - (o.lastModifiedMs ?? 0);
}

// Whose object is it? Only this node's own snapshots are ranked and can ever be deleted.
const OWNERSHIP_RULES: readonly RemoteRule[] = [
  { rule: "only this node's prefix", keep: (o, c) => (ownName(o.key, c.input.prefix) === undefined ? `not directly under this node's prefix ${c.input.prefix}; never touched` : undefined) },
  { rule: 'only objects the agent wrote', keep: (o) => (SHA256_HEX.test(o.metadata?.[META.sha256] ?? '') ? undefined : 'no sha256 metadata: not written by the agent; never touched') },
  {
    rule: "only this node's and cluster's objects",
    keep: (o, c) => {
      const md = o.metadata ?? {};
      return md[META.node] === c.input.node && md[META.cluster] === c.input.cluster ? undefined : `written for node ${md[META.node] ?? '(none)'} of cluster ${md[META.cluster] ?? '(none)'}; never touched`;
    },
  },
];

/** The remote rules, in order; the first reason keeps the object. */
export const REMOTE_RULES: readonly RemoteRule[] = [
  ...OWNERSHIP_RULES,
  { rule: 'a policy is set', keep: (o, c) => (c.input.policy.keep === undefined && c.input.policy.maxAgeMs === undefined ? 'no remote retention policy (retention.remote.keep and maxAge are unset)' : undefined) },
  { rule: 'the newest N always stay', keep: (o, c) => (c.rank.get(o)! < c.keepN ? `one of the newest ${c.keepN} of this node (number ${c.rank.get(o)! + 1})` : undefined) },
  { rule: 'age must be known', keep: (o) => (o.lastModifiedMs === undefined ? 'S3 gave no modification time; its age is unknown' : undefined) },
  {
    rule: 'maxAge',
    keep: (o, c) => {
      const max = c.input.policy.maxAgeMs;
      return max !== undefined && remoteAge(o, c) <= max ? `younger than maxAge ${formatDuration(max)} (age ${formatDuration(Math.max(0, remoteAge(o, c)))})` : undefined;
    },
  },
  {
    rule: 'never while the local file exists',
    keep: (o, c) => {
      const names = [objectName(o, c.input.prefix), ownName(o.key, c.input.prefix)];
      const local = names.find((n) => n !== undefined && c.input.localNames.has(n));
      return local ? `its snapshot ${local} is still in the local directory; deleting the object would make the agent upload it again` : undefined;
    },
  },
];

function remoteContext(input: RemotePlanInput): RemoteContext {
  const bare: RemoteContext = { input, keepN: 0, rank: new Map() };
  const ours = input.objects.filter((o) => OWNERSHIP_RULES.every((r) => r.keep(o, bare) === undefined));
  const ranked = ours.sort((a, b) => byRecency({ t: a.lastModifiedMs ?? -Infinity, id: a.key }, { t: b.lastModifiedMs ?? -Infinity, id: b.key }));
  return { input, keepN: input.policy.keep ?? 1, rank: new Map(ranked.map((o, i) => [o, i])) };
}

/** Decides which of the listed objects go. Pure; never deletes outside this node's own objects. */
export function planRemote(input: RemotePlanInput): RemotePlan {
  const c = remoteContext(input);
  const plan: RemotePlan = { delete: [], keep: [] };
  for (const o of input.objects) {
    let reason: string | undefined;
    for (const r of REMOTE_RULES) if ((reason = r.keep(o, c)) !== undefined) break;
    const name = objectName(o, input.prefix);
    const d = { key: o.key, size: o.size, ...(name ? { name } : {}) };
    if (reason !== undefined) {
      plan.keep.push({ ...d, reason });
      continue;
    }
    const max = input.policy.maxAgeMs;
    const age = max !== undefined ? ` and older than maxAge ${formatDuration(max)} (age ${formatDuration(remoteAge(o, c))})` : '';
    plan.delete.push({ ...d, reason: `beyond the newest ${c.keepN} of this node (number ${c.rank.get(o)! + 1})${age}` });
  }
  return plan;
}

// ───────────────────────────── stale multipart uploads (pure) ─────────────────────────────

export interface OpenUpload {
  key: string;
  uploadId: string;
  initiatedMs?: number;
}

export interface UploadDecision extends OpenUpload {
  reason: string;
}

export interface UploadPlan {
  abort: UploadDecision[];
  keep: UploadDecision[];
}

/** Multipart uploads of this node that a crash left behind: older than maxAgeMs and not in flight here. */
export function planStaleUploads(input: { uploads: readonly OpenUpload[]; prefix: string; now: number; maxAgeMs: number; inFlightKeys: ReadonlySet<string> }): UploadPlan {
  const plan: UploadPlan = { abort: [], keep: [] };
  for (const u of input.uploads) {
    const age = u.initiatedMs === undefined ? undefined : input.now - u.initiatedMs;
    let reason: string | undefined;
    if (ownName(u.key, input.prefix) === undefined) reason = `not under this node's prefix ${input.prefix}; never touched`;
    else if (input.inFlightKeys.has(u.key)) reason = 'the agent is uploading this key now';
    else if (age === undefined) reason = 'S3 gave no start time; its age is unknown';
    else if (age < input.maxAgeMs) reason = `younger than ${formatDuration(input.maxAgeMs)} (started ${formatDuration(Math.max(0, age))} ago)`;
    if (reason !== undefined) plan.keep.push({ ...u, reason });
    else plan.abort.push({ ...u, reason: `incomplete for ${formatDuration(age!)} (threshold ${formatDuration(input.maxAgeMs)}): left by a crashed or killed upload` });
  }
  return plan;
}

// ───────────────────────────── executor ─────────────────────────────

export interface RetentionDeps {
  cfg: Config;
  store: Store;
  ledger: Ledger;
  log: Logger;
  metrics?: Metrics;
  /** the clock; injectable so tests can age uploads and files without waiting */
  now?: () => number;
}

/** A local file and where it is; `ino` lets the executor notice a file replaced since it was planned. */
export interface LocalFileAt extends LocalFile {
  path: string;
  ino?: number;
}

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

/** Runs fn over items, at most `width` at a time; the first error rejects and stops the rest. */
async function each<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (!failed && next < items.length) {
        try {
          await fn(items[next++]!);
        } catch (e) {
          failed = true;
          throw e;
        }
      }
    }),
  );
}

const ioCode = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? String(e);
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
      log.warn(`retention: ${s3Trouble(err)}; ${phase === 'remote' ? 'remote retention stopped' : 'no stale upload aborted'} this pass`, { error: detail, prefix: nodePrefix(cfg) });
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
    if (ok) metrics.lastPruneSuccess.set(clock() / 1000);
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

async function pruneLocal(deps: RetentionDeps, files: readonly LocalFileAt[], dryRun: boolean, problems: Problem[], stopped: () => boolean): Promise<PassReport['local']> {
  const { cfg, store, ledger, log, metrics } = deps;
  const now = (deps.now ?? Date.now)();
  const policy: LocalPolicy = { keep: cfg.retention.keep, maxAgeMs: cfg.retention.maxAgeMs, confirmRemote: cfg.retention.confirmRemote };
  const base = { files, ledger: ledger.entries(), policy, now };
  const heads = new Map<string, HeadFact>();
  let s3Unavailable: string | undefined;
  if (policy.confirmRemote) {
    let asking: string | undefined;
    try {
      await each(keysToConfirm(base), 4, async (key) => {
        asking = key;
        const h = await store.head(key);
        heads.set(key, h ? { size: h.size, sha256: h.sha256 } : null);
      });
    } catch (err) {
      s3Unavailable = describeError(err, { location: store.location, key: asking });
      problems.push({ phase: 'local', s3: true, detail: s3Unavailable });
      log.warn(`retention: ${s3Trouble(err)}; no local snapshot pruned this pass (copies cannot be confirmed)`, { error: s3Unavailable, candidates: keysToConfirm(base).length });
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
        log.error('retention: cannot delete local snapshot', { file: f.path, key: d.key, error: ioCode(e), fix: 'the agent needs write access to the snapshot directory (systemd: ReadWritePaths=)' });
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

async function pruneRemote(deps: RetentionDeps, localNames: ReadonlySet<string>, dryRun: boolean, stopped: () => boolean): Promise<NonNullable<PassReport['remote']>> {
  const { cfg, store, ledger, log, metrics } = deps;
  const prefix = nodePrefix(cfg);
  const listed: { key: string; size: number; lastModified?: Date }[] = [];
  for await (const o of store.list(prefix)) listed.push(o);
  const objects: RemoteObject[] = [];
  // metadata decides ownership, so every listed object is looked at; one that vanished meanwhile is skipped
  await each(listed, 4, async (o) => {
    const h = await store.head(o.key);
    if (h) objects.push({ key: o.key, size: h.size, lastModifiedMs: (h.lastModified ?? o.lastModified)?.getTime(), metadata: h.metadata });
  });
  const { keep, maxAgeMs } = cfg.retention.remote;
  const plan = planRemote({ objects, prefix, node: cfg.node, cluster: cfg.cluster, policy: { keep, maxAgeMs }, now: (deps.now ?? Date.now)(), localNames });
  const kept = [...plan.keep];
  const deleted = await carryOut(plan.delete, kept, {
    dryRun,
    stopped,
    wouldDo: (d) => log.info('retention (dry run): would delete remote snapshot', { key: d.key, file: d.name, size: d.size, reason: d.reason }),
    act: async (d) => {
      await store.delete(d.key);
      metrics?.pruned.inc({ location: 'remote' });
      metrics?.prunedBytes.inc({ location: 'remote' }, d.size);
      log.info('retention: deleted remote snapshot', { key: d.key, file: d.name, size: d.size, reason: d.reason });
      // the ledger records what S3 holds
      await ledger.forget(d.key).catch((e) => {
        metrics?.ledgerWriteFailures.inc();
        log.error('could not write the ledger after a remote deletion; it is corrected in memory', { key: d.key, ledger: ledger.path, error: ioCode(e) });
      });
      return 'done';
    },
  });
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
  const fields = (u: UploadDecision): Record<string, unknown> => ({ key: u.key, uploadId: u.uploadId, initiated: u.initiatedMs === undefined ? undefined : iso(u.initiatedMs), reason: u.reason });
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

// ───────────────────────────── scheduler ─────────────────────────────

/** The first pass waits for the start scan and the S3 sync, so that it sees verified files. */
export const START_DELAY_MS = 60_000;

/** What the daemon's shipper knows of a file, as the planner reads it. */
export function fromTracked(s: LocalSnapshot): LocalFileAt {
  return { name: s.name, path: s.path, state: s.state, size: s.fp?.size ?? 0, mtimeMs: s.fp?.mtimeMs ?? 0, ino: s.fp?.ino, sha256: s.sha256, detail: s.rejectReason };
}

function cronLogger(log: Logger): CronLogger {
  const text = (m: string | Error): string => (m instanceof Error ? m.message : String(m));
  return {
    info: (m) => log.debug(`node-cron: ${m}`, { task: 'retention' }),
    debug: (m) => log.debug(`node-cron: ${text(m)}`, { task: 'retention' }),
    warn: (m) => log.warn(`node-cron: ${m}`, { task: 'retention' }),
    error: (m, err) => log.error(`node-cron: ${text(m)}`, { task: 'retention', ...(err ? { error: err.message } : {}) }),
  };
}

export interface SchedulerDeps extends RetentionDeps {
  /** the daemon's current view of the snapshot directory */
  files: () => LocalSnapshot[];
}

/** Runs a pass on the configured cron schedule and once shortly after start; never two at once. */
export class RetentionScheduler {
  private task: ScheduledTask | undefined;
  private startTimer: NodeJS.Timeout | undefined;
  private running: Promise<PassReport | undefined> | undefined;
  private readonly abort = new AbortController();

  constructor(
    private readonly d: SchedulerDeps,
    private readonly startDelayMs = START_DELAY_MS,
  ) {}

  start(): void {
    const { cfg, log } = this.d;
    const r = cfg.retention;
    this.task = createTask(r.schedule, () => this.runNow('schedule'), { name: 'retention', timezone: r.timezone, noOverlap: true, logger: cronLogger(log), unref: true });
    void this.task.start();
    this.startTimer = setTimeout(() => void this.runNow('start'), this.startDelayMs);
    this.startTimer.unref();
    log.info('retention scheduled', {
      schedule: r.schedule,
      timezone: r.timezone,
      nextRun: this.task.getNextRun()?.toISOString(),
      firstPassInSeconds: this.startDelayMs / 1000,
      keep: r.keep,
      maxAge: r.maxAgeMs === undefined ? undefined : formatDuration(r.maxAgeMs),
      remote: r.remote.enabled ? { keep: r.remote.keep, maxAge: r.remote.maxAgeMs === undefined ? undefined : formatDuration(r.remote.maxAgeMs) } : false,
      staleUploadAge: formatDuration(r.staleUploadAgeMs),
      dryRun: r.dryRun,
      confirmRemote: r.confirmRemote,
    });
  }

  /** One pass now; while one runs, callers share it instead of starting another. */
  runNow(trigger = 'manual'): Promise<PassReport | undefined> {
    if (this.abort.signal.aborted) return Promise.resolve(undefined);
    if (this.running) {
      this.d.log.debug('retention pass still running; not starting another', { trigger });
      return this.running;
    }
    const tracked = this.d.files();
    const inFlightKeys = new Set(tracked.filter((s) => s.state === 'shipping' && s.key).map((s) => s.key!));
    this.running = prunePass(this.d, tracked.map(fromTracked), { trigger, inFlightKeys, signal: this.abort.signal })
      .catch((e: unknown) => {
        this.d.metrics?.pruneFailures.inc();
        this.d.log.error('retention pass failed', { trigger, error: (e as Error)?.message ?? String(e) });
        return undefined;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** No new passes; a pass in progress stops deleting and gets a few seconds to finish its current call. */
  async stop(waitMs = 10_000): Promise<void> {
    this.abort.abort();
    clearTimeout(this.startTimer);
    await this.task?.destroy();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
  }
}

/** A short human account of the policy, for `prune` output. */
export function describePolicy(cfg: Config): string {
  const r = cfg.retention;
  const rules = (keep?: number, maxAgeMs?: number): string => [keep !== undefined && `keep ${keep}`, maxAgeMs !== undefined && `maxAge ${formatDuration(maxAgeMs)}`].filter(Boolean).join(', ');
  const local = rules(r.keep, r.maxAgeMs) || 'no local policy';
  const remote = r.remote.enabled ? `remote: ${rules(r.remote.keep, r.remote.maxAgeMs)}` : 'remote retention off';
  const confirm = r.confirmRemote ? 'HeadObject confirms each copy' : 'copies confirmed by the ledger only';
  return `${local}; ${remote}; ${confirm}; stale uploads aborted after ${formatDuration(r.staleUploadAgeMs)}`;
}
