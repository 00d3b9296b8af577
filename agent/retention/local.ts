// The local planner: which snapshot files in the directory may go, each with its reason. Pure: every safety
// promise is one numbered rule in LOCAL_RULES, tested by tables and property tests.
import { formatDuration } from '../base/units.js';
import { VERIFIED_STATES, type FileState, type LocalFile } from '../snapshot/lifecycle.js';
import { byRecency, iso } from './rank.js';

export type { FileState, LocalFile } from '../snapshot/lifecycle.js';

/** States of a complete, intact snapshot: the only files a count or age policy ranks. */
export const VERIFIED: ReadonlySet<FileState> = VERIFIED_STATES;

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

function policyVerdict(f: LocalFile, c: LocalContext): { delete: boolean; why: string } {
  const { keep, maxAgeMs } = c.input.policy;
  const rank = c.rank.get(f) ?? 0;
  const age = c.input.now - timeOf(f);
  const overCount = keep !== undefined && rank >= keep;
  const overAge = maxAgeMs !== undefined && age > maxAgeMs;
  if (overCount || overAge) {
    const why = [
      overCount && `beyond the newest ${keep} (it is number ${rank + 1})`,
      overAge && `older than maxAge ${formatDuration(maxAgeMs)} (age ${formatDuration(age)})`,
    ];
    return { delete: true, why: why.filter(Boolean).join(' and ') };
  }
  if (keep === undefined && maxAgeMs === undefined) return { delete: false, why: 'no local retention policy (retention.keep and retention.maxAge are unset)' };
  const why = [
    keep !== undefined && `one of the newest ${keep} (number ${rank + 1})`,
    maxAgeMs !== undefined && `younger than maxAge ${formatDuration(maxAgeMs)} (age ${formatDuration(age)})`,
  ];
  return { delete: false, why: `within policy: ${why.filter(Boolean).join(' and ')}` };
}

const WOULD = 'the policy would delete it, but';

/** A snapshot's time: the producer's in its name, else its mtime. */
const timeOf = (f: LocalFile): number => f.timeMs ?? f.mtimeMs;

/**
 * The local rules, in order: the first that gives a reason keeps the file; a file no rule keeps is
 * deleted. Every safety promise is exactly one entry here.
 */
export const LOCAL_RULES: readonly LocalRule[] = [
  {
    rule: 'only files recognised as snapshots',
    keep: (f) => (f.state === 'unrecognised' ? `not an etcd snapshot${f.detail ? ` (${f.detail})` : ''}; the agent never deletes it` : undefined),
  },
  {
    rule: 'never a file that failed verification',
    keep: (f) => (f.state === 'rejected' ? `failed verification${f.detail ? ` (${f.detail})` : ''}; kept for inspection, never deleted` : undefined),
  },
  {
    rule: 'only verified files',
    keep: (f) => (f.state === 'held' || f.state === 'settling' ? 'not verified yet (still being written, or waiting for its .zip)' : undefined),
  },
  {
    rule: 'raw files replaced by a zip belong to their producer',
    keep: (f) => (f.state === 'superseded' ? 'raw snapshot already replaced by its .zip; its producer deletes it' : undefined),
  },
  { rule: 'the newest verified snapshot always stays', keep: (f, c) => (f === c.newest ? 'newest verified snapshot; always kept' : undefined) },
  {
    rule: 'a future time is age 0',
    keep: (f, c) =>
      timeOf(f) > c.input.now
        ? `taken in the future (${iso(timeOf(f))}): the clock may have jumped, so it counts as new and is never deleted for its age`
        : undefined,
  },
  {
    rule: 'the policy (keep, maxAge)',
    keep: (f, c) => {
      const v = policyVerdict(f, c);
      return v.delete ? undefined : v.why;
    },
  },
  {
    rule: 'never before it is in S3',
    keep: (f) =>
      f.state === 'confirmed'
        ? undefined
        : `${WOULD} it is not in S3 yet (${f.state === 'shipping' ? 'uploading now' : 'unshipped: no confirmed upload in the ledger'})`,
  },
  {
    rule: 'the ledger confirms this content',
    keep: (f, c) => (c.copy(f) ? undefined : `${WOULD} the ledger has no confirmed upload with this sha256 and size`),
  },
  {
    rule: 'S3 answers',
    keep: (f, c) => (c.input.policy.confirmRemote && c.input.s3Unavailable ? `${WOULD} S3 could not confirm its copy: ${c.input.s3Unavailable}` : undefined),
  },
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
  const recency = (f: LocalFile): { t: number; id: string } => ({ t: timeOf(f), id: f.name });
  const newest = [...verified].sort((a, b) => byRecency(recency(a), recency(b)))[0];
  const ranked = verified.filter((f) => timeOf(f) <= input.now).sort((a, b) => byRecency(recency(a), recency(b)));
  const rank = new Map(ranked.map((f, i) => [f, i]));
  const byName = new Map<string, LedgerFact[]>();
  for (const e of input.ledger) byName.set(e.name, [...(byName.get(e.name) ?? []), e]);
  const copy = (f: LocalFile): LedgerFact | undefined =>
    f.sha256 === undefined ? undefined : byName.get(f.name)?.find((e) => e.sha256 === f.sha256 && e.size === f.size);
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
