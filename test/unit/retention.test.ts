// The retention planners are pure: one table per rule, then properties over random directories,
// ledgers, S3 states and policies (retention-property.test.ts).
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../agent/config/parse.js';
import {
  LOCAL_RULES,
  planPrune,
  keysToConfirm,
  type FileState,
  type HeadFact,
  type LedgerFact,
  type LocalFile,
  type LocalPolicy,
} from '../../agent/retention/local.js';
import { REMOTE_RULES, planRemote, type RemoteObject } from '../../agent/retention/remote.js';
import { planStaleUploads } from '../../agent/retention/uploads.js';

const NOW = Date.parse('2024-05-08T12:00:00Z');
const H = 3_600_000;
const sha = (s: string): string => Buffer.from(s).toString('hex').padEnd(64, '0').slice(0, 64);

function file(name: string, hoursAgo: number, state: FileState = 'confirmed', extra: Partial<LocalFile> = {}): LocalFile {
  return { name, state, size: 100, mtimeMs: NOW - hoursAgo * H, sha256: state === 'unrecognised' ? undefined : sha(name), ...extra };
}
const shipped = (files: LocalFile[]): LedgerFact[] =>
  files.filter((f) => f.state === 'confirmed').map((f) => ({ name: f.name, key: `p/${f.name}`, size: f.size, sha256: f.sha256! }));
const headsFor = (ledger: LedgerFact[]): Map<string, HeadFact> => new Map(ledger.map((e) => [e.key, { size: e.size, sha256: e.sha256 }]));

function plan(files: LocalFile[], policy: Partial<LocalPolicy>, o: { ledger?: LedgerFact[]; heads?: Map<string, HeadFact>; s3Unavailable?: string } = {}) {
  const ledger = o.ledger ?? shipped(files);
  return planPrune({ files, ledger, heads: o.heads ?? headsFor(ledger), policy: { confirmRemote: true, ...policy }, now: NOW, s3Unavailable: o.s3Unavailable });
}
const gone = (p: { delete: { name: string }[] }): string[] => p.delete.map((d) => d.name).sort();
const why = (p: { keep: { name: string; reason: string }[] }, name: string): string => p.keep.find((k) => k.name === name)?.reason ?? '(deleted)';
const hourly = (n: number, state: FileState = 'confirmed'): LocalFile[] =>
  Array.from({ length: n }, (_, i) => file(`s${String(i).padStart(3, '0')}`, i, state));

describe('local planner: the policy', () => {
  it('keep N keeps the newest N', () => {
    const p = plan(hourly(5), { keep: 2 });
    expect(gone(p)).toEqual(['s002', 's003', 's004']);
    expect(p.delete[0]!.reason).toMatch(/^beyond the newest 2 \(it is number 3\); its copy p\/s002 is confirmed by the ledger and HeadObject/);
    expect(why(p, 's001')).toBe('within policy: one of the newest 2 (number 2)');
  });

  it('maxAge deletes what is older, and says how old', () => {
    const p = plan(hourly(100), { maxAgeMs: 72 * H });
    expect(gone(p)).toHaveLength(27); // ages 73h..99h
    expect(p.delete.find((d) => d.name === 's073')!.reason).toMatch(/^older than maxAge 3d \(age 3d1h\)/);
    expect(why(p, 's072')).toBe('within policy: younger than maxAge 3d (age 3d)');
  });

  it('keep and maxAge combine: a file goes when either says so', () => {
    const files = [file('a', 1), file('b', 3), file('c', 5), file('d', 7)];
    expect(gone(plan(files, { keep: 3, maxAgeMs: 2 * H }))).toEqual(['b', 'c', 'd']);
    expect(gone(plan(files, { keep: 1, maxAgeMs: 6 * H }))).toEqual(['b', 'c', 'd']);
    expect(plan(files, { keep: 3, maxAgeMs: 4 * H }).delete.find((d) => d.name === 'd')!.reason).toMatch(
      /^beyond the newest 3 \(it is number 4\) and older than maxAge 4h/,
    );
  });

  it('no policy: nothing goes', () => {
    const p = plan(hourly(10), {});
    expect(p.delete).toEqual([]);
    expect(why(p, 's009')).toMatch(/no local retention policy/);
  });

  it('RKE backup_config maps to an age: interval_hours 12 × retention 6 = 72h; v0.1 retention: 24h is an age', () => {
    const base = 's3:\n  bucket: backups\nretention:\n  rke:\n';
    const rke = parseConfig(`${base}    intervalHours: 12\n    retention: 6\n`, 'test', {}).retention;
    expect(rke.maxAgeMs).toBe(72 * H);
    expect(gone(plan(hourly(80), { maxAgeMs: rke.maxAgeMs }))).toEqual(['s073', 's074', 's075', 's076', 's077', 's078', 's079']);
    expect(parseConfig(`${base}    retention: 24h\n`, 'test', {}).retention.maxAgeMs).toBe(24 * H);
  });
});

describe('local planner: safety rules', () => {
  it('never deletes a file the agent did not recognise, that failed verification, or that is not verified', () => {
    for (const state of ['unrecognised', 'rejected', 'held', 'settling', 'superseded'] as const) {
      const files = [file('new', 0), file('odd', 500, state, { detail: 'some detail' })];
      const p = plan(files, { keep: 1, maxAgeMs: H }, { ledger: [...shipped(files), { name: 'odd', key: 'p/odd', size: 100, sha256: sha('odd') }] });
      expect(gone(p), state).toEqual([]);
    }
    const files = [
      file('new', 0),
      file('notes.txt', 500, 'unrecognised', { detail: 'unrecognised name and content' }),
      file('bad.db', 500, 'rejected', { detail: 'corrupt: trailer mismatch' }),
    ];
    const p = plan(files, { keep: 1 });
    expect(why(p, 'notes.txt')).toBe('not an etcd snapshot (unrecognised name and content); the agent never deletes it');
    expect(why(p, 'bad.db')).toBe('failed verification (corrupt: trailer mismatch); kept for inspection, never deleted');
  });

  it('files that are not verified snapshots take no place in the count', () => {
    const files = [file('rejected', 0, 'rejected'), file('held', 0, 'held'), file('a', 1), file('b', 2)];
    expect(gone(plan(files, { keep: 2 }))).toEqual([]);
    expect(gone(plan(files, { keep: 1 }))).toEqual(['b']);
  });

  it('never deletes a snapshot that is not in S3 yet (pending, uploading), whatever its age', () => {
    const files = [file('new', 0), file('queued', 300, 'queued'), file('shipping', 300, 'shipping'), file('old', 300)];
    const p = plan(files, { keep: 1 });
    expect(gone(p)).toEqual(['old']);
    expect(why(p, 'queued')).toBe('the policy would delete it, but it is not in S3 yet (unshipped: no confirmed upload in the ledger)');
    expect(why(p, 'shipping')).toMatch(/not in S3 yet \(uploading now\)/);
  });

  it('pending snapshots still count as local snapshots for keep N', () => {
    const files = [file('q1', 0, 'queued'), file('q2', 1, 'queued'), file('c', 2)];
    expect(gone(plan(files, { keep: 2 }))).toEqual(['c']);
  });

  it('the ledger must confirm this very content: same name, sha256 and size', () => {
    const files = [file('new', 0), file('old', 10)];
    const entry = { name: 'old', key: 'p/old', size: 100, sha256: sha('old') };
    for (const [label, e] of [
      ['other sha256', { ...entry, sha256: sha('x') }],
      ['other size', { ...entry, size: 99 }],
      ['other name', { ...entry, name: 'older' }],
    ] as const) {
      const p = plan(files, { keep: 1 }, { ledger: [e], heads: headsFor([e]) });
      expect(gone(p), label).toEqual([]);
      expect(why(p, 'old')).toMatch(/ledger has no confirmed upload with this sha256 and size/);
    }
  });

  it('HeadObject must confirm the copy: missing, other size, other sha256, not checked → kept', () => {
    const files = [file('new', 0), file('old', 10)];
    const cases: [string, HeadFact | undefined, RegExp][] = [
      ['missing', null, /S3 has no object p\/old although the ledger says it was confirmed/],
      ['size', { size: 99, sha256: sha('old') }, /does not match it \(size 99/],
      ['sha', { size: 100, sha256: sha('zz') }, /does not match it/],
      ['no metadata', { size: 100 }, /sha256 missing/],
      ['unchecked', undefined, /its copy p\/old was not checked in S3/],
    ];
    for (const [label, head, reason] of cases) {
      const heads = new Map<string, HeadFact>(head === undefined ? [] : [['p/old', head]]);
      const p = plan(files, { keep: 1 }, { heads });
      expect(gone(p), label).toEqual([]);
      expect(why(p, 'old'), label).toMatch(reason);
    }
    // confirmRemote: false skips only the HEAD (offline tests), never the ledger
    const offline = plan(files, { keep: 1, confirmRemote: false }, { heads: new Map() });
    expect(gone(offline)).toEqual(['old']);
    expect(offline.delete[0]!.reason).toMatch(/confirmed by the ledger only \(retention.confirmRemote is off\)/);
  });

  it('S3 unreachable: nothing is deleted and every candidate says why', () => {
    const p = plan(hourly(6), { keep: 1 }, { s3Unavailable: 'S3 unreachable at s3://b (ECONNREFUSED)' });
    expect(p.delete).toEqual([]);
    expect(why(p, 's005')).toBe('the policy would delete it, but S3 could not confirm its copy: S3 unreachable at s3://b (ECONNREFUSED)');
  });

  it('the newest verified snapshot always stays, whatever the policy', () => {
    const p = plan([file('a', 500), file('b', 400), file('c', 300), file('bad', 1, 'rejected')], { maxAgeMs: H });
    expect(gone(p)).toEqual(['a', 'b']);
    expect(why(p, 'c')).toBe('newest verified snapshot; always kept');
  });

  it('future times (clock jumps) count as age 0: never deleted for age, and take no place in the count', () => {
    const files = [file('future1', -48), file('future2', -1), file('a', 1), file('b', 2), file('c', 100)];
    const p = plan(files, { keep: 1, maxAgeMs: 24 * H });
    expect(gone(p)).toEqual(['b', 'c']);
    expect(why(p, 'future1')).toBe('newest verified snapshot; always kept');
    expect(why(p, 'future2')).toMatch(/^taken in the future \(2024-05-08T13:00:00.000Z\): the clock may have jumped/);
    expect(why(p, 'a')).toMatch(/within policy: one of the newest 1/);
  });

  it('every file gets exactly one decision with a reason; HEADs are asked only for candidates', () => {
    const files = [...hourly(8), file('x', 3, 'rejected'), file('y', 3, 'unrecognised'), file('z', 3, 'queued')];
    const p = plan(files, { keep: 3 });
    expect([...p.delete, ...p.keep].map((d) => d.name).sort()).toEqual(files.map((f) => f.name).sort());
    for (const d of [...p.delete, ...p.keep]) expect(d.reason.length).toBeGreaterThan(10);
    const ledger = shipped(files);
    expect(keysToConfirm({ files, ledger, policy: { keep: 3, confirmRemote: true }, now: NOW }).sort()).toEqual([
      'p/s003',
      'p/s004',
      'p/s005',
      'p/s006',
      'p/s007',
    ]);
  });

  it('the rules read as a list', () => {
    expect(LOCAL_RULES.map((r) => r.rule)).toEqual([
      'only files recognised as snapshots',
      'never a file that failed verification',
      'only verified files',
      'raw files replaced by a zip belong to their producer',
      'the newest verified snapshot always stays',
      'a future time is age 0',
      'the policy (keep, maxAge)',
      'never before it is in S3',
      'the ledger confirms this content',
      'S3 answers',
      'HeadObject confirms the copy',
    ]);
    expect(REMOTE_RULES.map((r) => r.rule)).toEqual([
      "only this node's prefix",
      'only objects the agent wrote',
      "only this node's and cluster's objects",
      'a policy is set',
      'the newest N always stay',
      'age must be known',
      'maxAge',
      'never a locked object',
      'never while the local file exists',
    ]);
  });
});

describe('remote planner', () => {
  const P = 'etcd-backup/c1/node-a/';
  const ours = (name: string, hoursAgo: number, md: Record<string, string> = {}): RemoteObject => ({
    key: `${P}${name}`,
    size: 10,
    lastModifiedMs: NOW - hoursAgo * H,
    metadata: { sha256: sha(name), node: 'node-a', cluster: 'c1', name, ...md },
  });
  const remote = (objects: RemoteObject[], policy: { keep?: number; maxAgeMs?: number }, localNames: string[] = []) =>
    planRemote({ objects, prefix: P, node: 'node-a', cluster: 'c1', policy, now: NOW, localNames: new Set(localNames) });
  const keys = (p: { delete: { key: string }[] }): string[] => p.delete.map((d) => d.key.slice(P.length)).sort();

  it("keep N: deletes this node's objects beyond the newest N", () => {
    const p = remote([ours('a', 1), ours('b', 2), ours('c', 3), ours('d', 4)], { keep: 2 });
    expect(keys(p)).toEqual(['c', 'd']);
    expect(p.delete.find((d) => d.key.endsWith('/c'))!.reason).toBe('beyond the newest 2 of this node (number 3)');
  });

  it('maxAge alone still keeps the newest one; with keep, the newest N stay however old', () => {
    expect(keys(remote([ours('a', 100), ours('b', 200)], { maxAgeMs: H }))).toEqual(['b']);
    expect(keys(remote([ours('a', 1), ours('b', 50), ours('c', 100), ours('d', 200)], { keep: 2, maxAgeMs: 72 * H }))).toEqual(['c', 'd']);
    expect(keys(remote([ours('a', 1), ours('b', 50), ours('c', 60)], { keep: 1, maxAgeMs: 72 * H }))).toEqual([]);
  });

  it('never touches another node, another cluster, a nested key, or an object without our metadata', () => {
    const objects: RemoteObject[] = [
      ours('new', 0),
      { ...ours('b1', 500), key: 'etcd-backup/c1/node-b/b1' },
      { ...ours('b2', 500), key: 'etcd-backup/c1/node-ab/b2' },
      { ...ours('c2', 500), key: 'etcd-backup/c2/node-a/c2' },
      { ...ours('n', 500), key: `${P}sub/n` },
      { key: `${P}README`, size: 1, lastModifiedMs: NOW - 500 * H, metadata: {} },
      ours('forged', 500, { node: 'node-b' }),
      ours('forged-cluster', 500, { cluster: 'c2' }),
      ours('badsha', 500, { sha256: 'abc' }),
    ];
    const p = remote(objects, { keep: 1 });
    expect(p.delete).toEqual([]);
    expect(p.keep.find((k) => k.key === `${P}README`)!.reason).toBe('no sha256 metadata or manifest: not a complete backup by the agent; never touched');
    expect(p.keep.find((k) => k.key.endsWith('forged'))!.reason).toBe('written for node node-b of cluster c1; never touched');
    expect(p.keep.find((k) => k.key === 'etcd-backup/c1/node-b/b1')!.reason).toMatch(/not directly under this node's prefix/);
  });

  it('never deletes an object whose snapshot is still local (it would be uploaded again)', () => {
    const p = remote([ours('a', 1), ours('b', 2), ours('c', 3)], { keep: 1 }, ['c']);
    expect(keys(p)).toEqual(['b']);
    expect(p.keep.find((k) => k.key.endsWith('/c'))!.reason).toMatch(/still in the local directory/);
  });

  it('no policy, or no modification time: kept', () => {
    expect(remote([ours('a', 1), ours('b', 2)], {}).delete).toEqual([]);
    expect(remote([ours('a', 1), { ...ours('b', 2), lastModifiedMs: undefined }], { keep: 1 }).delete).toEqual([]);
  });
});

describe('stale multipart uploads', () => {
  const P = 'etcd-backup/c1/node-a/';
  const up = (key: string, hoursAgo: number | undefined) => ({
    key,
    uploadId: `id-${key}`,
    initiatedMs: hoursAgo === undefined ? undefined : NOW - hoursAgo * H,
  });
  it("aborts only this node's uploads older than the threshold and not in flight", () => {
    const uploads = [up(`${P}old`, 25), up(`${P}young`, 23), up(`${P}busy`, 30), up('etcd-backup/c1/node-b/old', 100), up(`${P}unknown`, undefined)];
    const p = planStaleUploads({ uploads, prefix: P, now: NOW, maxAgeMs: 24 * H, inFlightKeys: new Set([`${P}busy`]) });
    expect(p.abort.map((u) => u.key)).toEqual([`${P}old`]);
    expect(p.abort[0]!.reason).toBe('incomplete for 1d1h (threshold 1d): left by a crashed or killed upload');
    expect(Object.fromEntries(p.keep.map((u) => [u.key.slice(u.key.lastIndexOf('/') + 1), u.reason]))).toMatchObject({
      young: 'younger than 1d (started 23h ago)',
      busy: 'the agent is uploading this key now',
      unknown: 'S3 gave no start time; its age is unknown',
    });
    expect(planStaleUploads({ uploads, prefix: P, now: NOW, maxAgeMs: 0, inFlightKeys: new Set() }).abort).toHaveLength(3);
  });
});
