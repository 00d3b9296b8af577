// The one invariant checker every fault test calls after its fault. It looks at the truth (the bucket,
// byte for byte; open multipart uploads; the local files) and at what the agent says about it (its
// metrics, its log), and returns every broken promise as a line. An empty list is a pass.
//
//  1. every verified snapshot is in S3 exactly once, and its bytes hash to the sha256 the test computed
//  2. no corrupt or partial object: every object's bytes match its size and its sha256 metadata, and
//     every object is one of the expected snapshots (nothing else was uploaded)
//  3. no multipart upload is left open
//  4. no unshipped local snapshot was deleted or changed
//  5. the metrics tell the truth: they agree with the agent's own log line for line, with S3, and with
//     what the test knows happened (pending, s3_up, rejections, failures)
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { FAILURE_REASONS, type FailureReason } from '../../agent/base/errors.js';
import type { AgentProcess, LogLine } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { s3Client, type World } from '../support/world.js';

export const REJECT_REASONS = ['truncated', 'corrupt', 'format', 'unreadable', 'name'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export const MSG = {
  shipped: 'snapshot shipped and confirmed',
  present: 'snapshot already in S3; not sent again',
  failed: 'upload failed; the snapshot stays pending and will be retried',
  changed: 'upload stopped: the file changed or could not be read; checking it again',
  rejected: 'snapshot rejected: not shipped and never deleted by the agent',
  queued: 'snapshot complete; queued for upload',
  pruned: 'retention: pruned local snapshot',
  ledgerFailures: [
    'could not write the ledger; the upload is confirmed in S3 and kept in memory',
    'state directory unusable; keeping the ledger in memory only',
    'could not write the rebuilt ledger; keeping it in memory',
    'could not write the ledger after a remote deletion; it is corrected in memory',
  ],
} as const;

export interface ExpectedSnapshot {
  /** file name in the snapshot directory: the key is PREFIX/name (or PREFIX/name.<sha12> beside other content) */
  name: string;
  sha256: string;
  size: number;
}

export interface LocalExpectation {
  dir: string;
  /** files that must still be there, unchanged; `mayBePruned`: retention may delete it once S3 holds it */
  files: { name: string; sha256: string; mayBePruned?: boolean }[];
}

export interface MetricExpectation {
  /** etcdbackup_snapshots_pending (default 0: everything shipped) */
  pending?: number;
  /** etcdbackup_s3_up (default 1: recovered) */
  s3Up?: 0 | 1;
  /** objects this agent process sent (etcdbackup_uploads_total{result="success"}) */
  uploadsSuccess?: number;
  /** exact etcdbackup_snapshots_rejected_total by reason; reasons not named must be 0 */
  rejected?: Partial<Record<RejectReason, number>>;
  /** etcdbackup_upload_failures_total must have counted at least these */
  failuresAtLeast?: Partial<Record<FailureReason, number>>;
  /** etcdbackup_ledger_write_failures_total at least */
  ledgerWriteFailuresAtLeast?: number;
  /** etcdbackup_local_snapshots: snapshot files (verified, pending or rejected) really in the directory */
  localSnapshots?: number;
}

export interface InvariantInput {
  world: World;
  bucket: string;
  /** this node's key prefix, e.g. etcd-backup/test/node-a/ */
  prefix: string;
  expected: ExpectedSnapshot[];
  /** content that must never reach S3 (a symlink's target, a corrupt file), by sha256 */
  forbidden?: { what: string; sha256: string }[];
  local?: LocalExpectation;
  /** open multipart uploads are expected now (right after a kill, before the cleanup; while the agent is still retrying) */
  openUploadsAllowed?: boolean;
  /** a running agent whose metrics and log are checked against each other and the truth */
  agent?: AgentProcess;
  metrics?: MetricExpectation;
}

interface ObjectFacts {
  key: string;
  size: number;
  sha256: string;
  /** what the agent recorded for it: its manifest's sha256 (objects of earlier agents: their metadata) */
  metaSha256?: string;
  contentLength?: number;
}

const MANIFEST = '.manifest.json';

const clients = new WeakMap<World, S3Client>();
function client(world: World): S3Client {
  let c = clients.get(world);
  if (!c) clients.set(world, (c = s3Client(world)));
  return c;
}

async function listObjects(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) keys.push(o.Key!);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

// bytes already hashed, by key and version (size, mtime, ETag): a check repeated after every kill of
// a long series would otherwise download the same GiB objects again each time
const hashed = new Map<string, ObjectFacts>();

/** The sha256 a manifest records for its snapshot, read as any client would (it is JSON). */
async function manifestSha(s3: S3Client, bucket: string, key: string): Promise<string | undefined> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${key}${MANIFEST}` }));
    const m = JSON.parse(await (r.Body as { transformToString(): Promise<string> }).transformToString()) as { snapshot?: { sha256?: string } };
    return m.snapshot?.sha256;
  } catch {
    return undefined;
  }
}

/** Downloads the object and hashes every byte; its manifest (or HeadObject) gives what the agent recorded. */
async function objectFacts(s3: S3Client, bucket: string, key: string): Promise<ObjectFacts> {
  const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  const recorded = (await manifestSha(s3, bucket, key)) ?? head.Metadata?.sha256;
  const version = `${bucket}/${key}:${head.ContentLength}:${head.LastModified?.getTime()}:${head.ETag}:${recorded}`;
  const known = hashed.get(version);
  if (known) return known;
  const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of r.Body as Readable) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  const facts = { key, size, sha256: hash.digest('hex'), metaSha256: recorded, contentLength: head.ContentLength };
  hashed.set(version, facts);
  return facts;
}

async function pool<T, R>(items: readonly T[], width: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

const short = (sha: string | undefined): string => (sha ? sha.slice(0, 12) : 'none');

/** Keys the agent may use for a file: PREFIX/name, or PREFIX/name.<12 hex> beside other content. */
function keyIsFor(key: string, prefix: string, name: string): boolean {
  if (!key.startsWith(prefix)) return false;
  const rest = key.slice(prefix.length);
  return rest === name || (rest.startsWith(`${name}.`) && /^[0-9a-f]{12}$/.test(rest.slice(name.length + 1)));
}

async function checkBucket(input: InvariantInput, out: string[]): Promise<Map<string, ObjectFacts>> {
  const s3 = client(input.world);
  const all = await listObjects(s3, input.bucket, input.prefix);
  // a manifest belongs to its object; one whose object is missing (a Complete that failed) claims nothing
  const keys = all.filter((k) => !k.endsWith(MANIFEST));
  const facts = await pool(keys, 6, (k) => objectFacts(s3, input.bucket, k));
  const byKey = new Map(facts.map((f) => [f.key, f]));

  // 2. no corrupt or partial object
  for (const f of facts) {
    if (f.contentLength !== f.size) out.push(`object ${f.key}: downloaded ${f.size} bytes but HeadObject says ${f.contentLength}`);
    if (!f.metaSha256) out.push(`object ${f.key} has no manifest (nor sha256 metadata): an upload never confirmed`);
    else if (f.metaSha256 !== f.sha256)
      out.push(`object ${f.key} is corrupt or partial: its bytes hash to ${short(f.sha256)}, its manifest says ${short(f.metaSha256)}`);
  }
  // 1. every expected snapshot exactly once
  for (const e of input.expected) {
    const matching = facts.filter((f) => keyIsFor(f.key, input.prefix, e.name) && f.sha256 === e.sha256);
    if (matching.length === 0) out.push(`verified snapshot ${e.name} (${short(e.sha256)}, ${e.size} bytes) is not in S3`);
    if (matching.length > 1)
      out.push(`verified snapshot ${e.name} (${short(e.sha256)}) is in S3 ${matching.length} times: ${matching.map((m) => m.key).join(', ')}`);
    for (const m of matching) if (m.size !== e.size) out.push(`object ${m.key} has ${m.size} bytes, the snapshot ${e.size}`);
  }
  // ... and nothing else
  for (const f of facts) {
    const known = input.expected.some((e) => keyIsFor(f.key, input.prefix, e.name) && e.sha256 === f.sha256);
    if (!known) out.push(`unexpected object ${f.key} (${f.size} bytes, sha256 ${short(f.sha256)}): not a verified snapshot of this test`);
  }
  for (const x of input.forbidden ?? []) {
    const hit = facts.find((f) => f.sha256 === x.sha256);
    if (hit) out.push(`${x.what} reached S3 as ${hit.key}`);
  }
  // 3. no open multipart upload
  const open = await s3.send(new ListMultipartUploadsCommand({ Bucket: input.bucket, Prefix: input.prefix }));
  if (!input.openUploadsAllowed && (open.Uploads ?? []).length > 0) {
    out.push(`${open.Uploads!.length} multipart upload(s) left open: ${open.Uploads!.map((u) => u.Key).join(', ')}`);
  }
  return byKey;
}

async function checkLocal(input: InvariantInput, objects: Map<string, ObjectFacts>, out: string[]): Promise<void> {
  const local = input.local;
  if (!local) return;
  for (const f of local.files) {
    const p = path.join(local.dir, f.name);
    const exists = await stat(p).then(
      (s) => s.isFile(),
      () => false,
    );
    if (!exists) {
      const copy = [...objects.values()].find((o) => keyIsFor(o.key, input.prefix, f.name) && o.sha256 === f.sha256);
      if (!f.mayBePruned) out.push(`local snapshot ${f.name} was deleted${copy ? '' : ' and S3 has no copy of it'}`);
      else if (!copy) out.push(`local snapshot ${f.name} was pruned but S3 has no copy of it`);
      continue;
    }
    const sha = await sha256File(p);
    if (sha !== f.sha256) out.push(`local snapshot ${f.name} changed (${short(sha)}, was ${short(f.sha256)})`);
  }
}

function metric(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  return undefined;
}

const count = (lines: LogLine[], msg: string): number => lines.filter((l) => l.msg === msg).length;
const countBy = (lines: LogLine[], msgs: readonly string[], field: string): Map<string, number> => {
  const m = new Map<string, number>();
  for (const l of lines) if (msgs.includes(l.msg)) m.set(String(l[field]), (m.get(String(l[field])) ?? 0) + 1);
  return m;
};

/** One comparison of the agent's metrics with its log, with S3 and with what the test knows. */
async function metricViolations(input: InvariantInput, objects: Map<string, ObjectFacts>): Promise<string[]> {
  const agent = input.agent!;
  const want = input.metrics ?? {};
  const out: string[] = [];
  const text = await agent.metrics();
  const lines = agent.lines;
  const eq = (series: string, expected: number, why: string): void => {
    const got = metric(text, series);
    if (got !== expected) out.push(`${series} is ${got}, expected ${expected} (${why})`);
  };

  const shipped = lines.filter((l) => l.msg === MSG.shipped);
  eq('etcdbackup_uploads_total{result="success"}', shipped.length, `"${MSG.shipped}" lines`);
  eq('etcdbackup_uploads_total{result="already_present"}', count(lines, MSG.present), `"${MSG.present}" lines`);
  eq('etcdbackup_uploads_total{result="failure"}', count(lines, MSG.failed) + count(lines, MSG.changed), 'upload failure lines');
  eq(
    'etcdbackup_upload_bytes_total',
    shipped.reduce((n, l) => n + Number(l.size), 0),
    'sizes in the shipped lines',
  );
  const failures = countBy(lines, [MSG.failed, MSG.changed], 'reason');
  for (const r of FAILURE_REASONS) eq(`etcdbackup_upload_failures_total{reason="${r}"}`, failures.get(r) ?? 0, `failure lines with reason ${r}`);
  const rejected = countBy(lines, [MSG.rejected], 'reason');
  for (const r of REJECT_REASONS) eq(`etcdbackup_snapshots_rejected_total{reason="${r}"}`, rejected.get(r) ?? 0, `rejection lines with reason ${r}`);
  eq(
    'etcdbackup_ledger_write_failures_total',
    lines.filter((l) => (MSG.ledgerFailures as readonly string[]).includes(l.msg)).length,
    'ledger write failure lines',
  );
  eq('etcdbackup_pruned_files_total{location="local"}', count(lines, MSG.pruned), `"${MSG.pruned}" lines`);

  // against the truth the test knows
  eq('etcdbackup_snapshots_pending', want.pending ?? 0, 'verified snapshots not yet in S3');
  eq('etcdbackup_s3_up', want.s3Up ?? 1, want.s3Up === 0 ? 'S3 is down' : 'S3 is up again');
  if (want.uploadsSuccess !== undefined) eq('etcdbackup_uploads_total{result="success"}', want.uploadsSuccess, 'objects this agent sent');
  if (want.rejected)
    for (const r of REJECT_REASONS)
      eq(`etcdbackup_snapshots_rejected_total{reason="${r}"}`, want.rejected[r] ?? 0, `files the test made that must be rejected as ${r}`);
  for (const [r, n] of Object.entries(want.failuresAtLeast ?? {})) {
    const got = metric(text, `etcdbackup_upload_failures_total{reason="${r}"}`) ?? 0;
    if (got < n) out.push(`etcdbackup_upload_failures_total{reason="${r}"} is ${got}, but the fault caused at least ${n}`);
  }
  if (want.localSnapshots !== undefined) eq('etcdbackup_local_snapshots', want.localSnapshots, 'snapshot files in the directory');
  if (want.ledgerWriteFailuresAtLeast !== undefined) {
    const got = metric(text, 'etcdbackup_ledger_write_failures_total') ?? 0;
    if (got < want.ledgerWriteFailuresAtLeast)
      out.push(`etcdbackup_ledger_write_failures_total is ${got}, but at least ${want.ledgerWriteFailuresAtLeast} ledger writes failed`);
  }
  // every upload the agent says it confirmed is in S3 with the sha256 it names
  for (const l of shipped) {
    const o = objects.get(String(l.key));
    if (!o) out.push(`the agent says it shipped ${l.key}, but S3 has no such object`);
    else if (o.sha256 !== l.sha256) out.push(`the agent says ${l.key} has sha256 ${short(String(l.sha256))}, S3 holds ${short(o.sha256)}`);
  }
  return out;
}

export async function checkInvariants(input: InvariantInput): Promise<string[]> {
  const out: string[] = [];
  const objects = await checkBucket(input, out);
  await checkLocal(input, objects, out);
  if (input.agent) {
    // A log line and its counter change in the same tick, but reach the test on two channels
    // (stdout pipe, HTTP): a difference is only believed if it lasts.
    let m = await metricViolations(input, objects);
    for (let i = 0; i < 6 && m.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 250));
      m = await metricViolations(input, objects);
    }
    out.push(...m);
  }
  return out;
}

/** An expectation from a real file. */
export async function expectFile(file: string, name = path.basename(file)): Promise<ExpectedSnapshot> {
  const st = await stat(file);
  return { name, sha256: await sha256File(file), size: st.size };
}

/** The invariants after a run in which one snapshot, `name` in `dir`, was to reach S3 exactly once under `prefix`. */
export function checkShippedOnce(
  at: { world: World; bucket: string; prefix: string; dir: string },
  name: string,
  snap: { sha256: string; size: number },
  agent: AgentProcess,
  metrics: MetricExpectation,
): Promise<string[]> {
  return checkInvariants({
    world: at.world,
    bucket: at.bucket,
    prefix: at.prefix,
    expected: [{ name, sha256: snap.sha256, size: snap.size }],
    local: { dir: at.dir, files: [{ name, sha256: snap.sha256 }] },
    agent,
    metrics,
  });
}
