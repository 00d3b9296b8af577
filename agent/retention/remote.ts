// The remote planner: which of this node's objects in S3 may go. Pure; it never deletes outside this node's
// own snapshots, never a locked one, and ranks by the snapshot's own time (the producer's in its name, else
// its mtime), not by upload time: a backlog shipped after an outage goes up out of order.
import { formatDuration } from '../base/units.js';
import { isSha256, META, nameOf } from '../store/layout.js';
import { byRecency, iso } from './rank.js';

export interface RemoteObject {
  key: string;
  size: number;
  lastModifiedMs?: number;
  /** when the snapshot was taken (manifest, metadata or name); absent: LastModified */
  timeMs?: number;
  /** Object Lock: S3 refuses to delete it before then */
  retainUntilMs?: number;
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

/** The file name after this node's prefix, if the key sits directly under it (our keys never nest). */
export function ownName(key: string, prefix: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  return rest === '' || rest.includes('/') ? undefined : rest;
}

/** The local file name the object was made from (its metadata, else its key), for this node's keys only. */
export function objectName(o: RemoteObject, prefix: string): string | undefined {
  return ownName(o.key, prefix) === undefined ? undefined : nameOf(o.key, o.metadata);
}

const timeOf = (o: RemoteObject): number | undefined => o.timeMs ?? o.lastModifiedMs;

function remoteAge(o: RemoteObject, c: RemoteContext): number {
  return c.input.now - (timeOf(o) ?? 0);
}

// Whose object is it? Only this node's own snapshots are ranked and can ever be deleted.
const OWNERSHIP_RULES: readonly RemoteRule[] = [
  {
    rule: "only this node's prefix",
    keep: (o, c) => (ownName(o.key, c.input.prefix) === undefined ? `not directly under this node's prefix ${c.input.prefix}; never touched` : undefined),
  },
  {
    rule: 'only objects the agent wrote',
    keep: (o) => (isSha256(o.metadata?.[META.sha256]) ? undefined : 'no sha256 metadata or manifest: not a complete backup by the agent; never touched'),
  },
  {
    rule: "only this node's and cluster's objects",
    keep: (o, c) => {
      const md = o.metadata ?? {};
      return md[META.node] === c.input.node && md[META.cluster] === c.input.cluster
        ? undefined
        : `written for node ${md[META.node] ?? '(none)'} of cluster ${md[META.cluster] ?? '(none)'}; never touched`;
    },
  },
];

/** The remote rules, in order; the first reason keeps the object. */
export const REMOTE_RULES: readonly RemoteRule[] = [
  ...OWNERSHIP_RULES,
  {
    rule: 'a policy is set',
    keep: (o, c) =>
      c.input.policy.keep === undefined && c.input.policy.maxAgeMs === undefined
        ? 'no remote retention policy (retention.remote.keep and maxAge are unset)'
        : undefined,
  },
  {
    rule: 'the newest N always stay',
    keep: (o, c) => (c.rank.get(o)! < c.keepN ? `one of the newest ${c.keepN} of this node (number ${c.rank.get(o)! + 1})` : undefined),
  },
  {
    rule: 'age must be known',
    keep: (o) => (timeOf(o) === undefined ? 'neither its snapshot time nor a modification time is known; its age is unknown' : undefined),
  },
  {
    rule: 'maxAge',
    keep: (o, c) => {
      const max = c.input.policy.maxAgeMs;
      return max !== undefined && remoteAge(o, c) <= max
        ? `younger than maxAge ${formatDuration(max)} (age ${formatDuration(Math.max(0, remoteAge(o, c)))})`
        : undefined;
    },
  },
  {
    rule: 'never a locked object',
    keep: (o, c) =>
      o.retainUntilMs !== undefined && o.retainUntilMs > c.input.now
        ? `locked until ${iso(o.retainUntilMs)} (S3 Object Lock); kept, and deleted by a later pass once the lock ends`
        : undefined,
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
  const ranked = ours.sort((a, b) => byRecency({ t: timeOf(a) ?? -Infinity, id: a.key }, { t: timeOf(b) ?? -Infinity, id: b.key }));
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
