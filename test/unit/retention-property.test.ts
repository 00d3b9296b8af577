// Properties of the retention planners over random directories, ledgers, S3 states and policies. The
// "never" promises are checked directly on every deletion; "exactly what the policy says" against a small
// model written from the documented rules (docs/retention.md), not from the planner's code.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { planPrune, type FileState, type HeadFact, type LedgerFact, type LocalFile } from '../../agent/retention/local.js';
import { planRemote, type RemoteObject } from '../../agent/retention/remote.js';
import { planStaleUploads } from '../../agent/retention/uploads.js';

const RUNS = 1000;
const NOW = Date.parse('2024-05-08T12:00:00Z');
const H = 3_600_000;
const sha = (n: number): string => n.toString(16).padStart(64, '0');
const VERIFIED: FileState[] = ['queued', 'shipping', 'confirmed'];
const optional = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(a, { nil: undefined, freq: 3 });
// Weighted toward the path that ends in a deletion, so that most cases test where the rules bite.
const pick = <T>(...pairs: [T, number][]): fc.Arbitrary<T> => fc.oneof(...pairs.map(([v, weight]) => ({ arbitrary: fc.constant(v), weight })));

const localCase = fc.record({
  files: fc.array(
    fc.record({
      state: pick<FileState>(
        ['confirmed', 8],
        ['queued', 1],
        ['shipping', 1],
        ['unrecognised', 1],
        ['held', 1],
        ['settling', 1],
        ['rejected', 1],
        ['superseded', 1],
      ),
      // whole hours make ties; negative ages are future mtimes (clock jumps)
      ageHours: fc.oneof(fc.integer({ min: -72, max: 400 }), fc.integer({ min: -2, max: 6 })),
      size: fc.integer({ min: 1, max: 4 }),
      content: fc.integer({ min: 0, max: 3 }),
      ledger: pick(['match', 8], ['none', 1], ['other-sha', 1], ['other-size', 1], ['other-name', 1]),
      head: pick(['match', 10], ['unchecked', 1], ['missing', 1], ['other-sha', 1], ['other-size', 1], ['no-sha', 1]),
    }),
    { maxLength: 30, size: 'medium' },
  ),
  keep: optional(fc.integer({ min: 1, max: 10 })),
  maxAgeHours: optional(fc.integer({ min: 0, max: 300 })),
  confirmRemote: fc.boolean(),
  s3Down: fc.integer({ min: 0, max: 5 }).map((n) => n === 0),
});

function build(c: typeof localCase extends fc.Arbitrary<infer T> ? T : never) {
  const files: LocalFile[] = [];
  const ledger: LedgerFact[] = [];
  const heads = new Map<string, HeadFact>();
  c.files.forEach((g, i) => {
    const f: LocalFile = {
      name: `f${String(i).padStart(2, '0')}`,
      state: g.state,
      size: g.size,
      mtimeMs: NOW - g.ageHours * H,
      sha256: g.state === 'unrecognised' ? undefined : sha(g.content),
    };
    files.push(f);
    const key = `k/${f.name}`;
    const e = { name: f.name, key, size: f.size, sha256: sha(g.content) };
    if (g.ledger === 'match') ledger.push(e);
    if (g.ledger === 'other-sha') ledger.push({ ...e, sha256: sha(g.content + 10) });
    if (g.ledger === 'other-size') ledger.push({ ...e, size: f.size + 1 });
    if (g.ledger === 'other-name') ledger.push({ ...e, name: `g${i}` });
    const head: Record<string, HeadFact | undefined> = {
      match: { size: f.size, sha256: e.sha256 },
      unchecked: undefined,
      missing: null,
      'other-sha': { size: f.size, sha256: sha(99) },
      'other-size': { size: f.size + 1, sha256: e.sha256 },
      'no-sha': { size: f.size },
    };
    if (head[g.head] !== undefined) heads.set(key, head[g.head]!);
  });
  const policy = { keep: c.keep, maxAgeMs: c.maxAgeHours === undefined ? undefined : c.maxAgeHours * H, confirmRemote: c.confirmRemote };
  return { files, ledger, heads, policy, now: NOW, s3Unavailable: c.s3Down ? 'S3 unreachable (test)' : undefined };
}

describe('local planner properties', () => {
  it(`never deletes what it must not, and otherwise exactly what the policy says (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(localCase, (c) => {
        const input = build(c);
        const plan = planPrune(input);
        const { files, ledger, heads, policy, s3Unavailable } = input;

        // every file has exactly one decision, with a reason
        expect([...plan.delete, ...plan.keep].map((d) => d.name).sort()).toEqual(files.map((f) => f.name).sort());
        for (const d of [...plan.delete, ...plan.keep]) expect(d.reason).not.toBe('');

        const recency = (a: LocalFile, b: LocalFile): number => b.mtimeMs - a.mtimeMs || (a.name < b.name ? 1 : -1);
        const verified = files.filter((f) => VERIFIED.includes(f.state));
        const newest = [...verified].sort(recency)[0];
        const ranked = verified.filter((f) => f.mtimeMs <= NOW).sort(recency);
        const copyOf = (f: LocalFile): LedgerFact | undefined => ledger.find((e) => e.name === f.name && e.sha256 === f.sha256 && e.size === f.size);
        const headOk = (f: LocalFile): boolean => {
          const h = heads.get(copyOf(f)!.key);
          return !!h && h.size === f.size && h.sha256 === f.sha256;
        };

        const byName = new Map(files.map((f) => [f.name, f]));
        for (const d of plan.delete) {
          const f = byName.get(d.name)!;
          expect(f.state).toBe('confirmed'); // never unconfirmed, unrecognised, rejected, pending or unverified
          expect(f).not.toBe(newest);
          expect(f.mtimeMs).toBeLessThanOrEqual(NOW); // never a future-dated file
          expect(copyOf(f)?.key).toBe(d.key);
          if (policy.confirmRemote) {
            expect(s3Unavailable).toBeUndefined();
            expect(headOk(f)).toBe(true);
          }
        }

        const policySays = (f: LocalFile): boolean => {
          const rank = ranked.indexOf(f);
          return rank >= 0 && ((policy.keep !== undefined && rank >= policy.keep) || (policy.maxAgeMs !== undefined && NOW - f.mtimeMs > policy.maxAgeMs));
        };
        const safe = (f: LocalFile): boolean =>
          f.state === 'confirmed' && f !== newest && !!copyOf(f) && (!policy.confirmRemote || (!s3Unavailable && headOk(f)));
        const expected = files.filter((f) => policySays(f) && safe(f)).map((f) => f.name);
        expect(plan.delete.map((d) => d.name).sort()).toEqual(expected.sort());
      }),
      { numRuns: RUNS },
    );
  });
});

const P = 'etcd-backup/c1/node-a/';
const PLACES: Record<string, (n: string) => string> = {
  own: (n) => `${P}${n}`,
  'other-node': (n) => `etcd-backup/c1/node-b/${n}`,
  'lookalike-node': (n) => `etcd-backup/c1/node-ab/${n}`,
  'other-cluster': (n) => `etcd-backup/c2/node-a/${n}`,
  nested: (n) => `${P}sub/${n}`,
  root: (n) => n,
};

const remoteCase = fc.record({
  objects: fc.array(
    fc.record({
      place: pick(['own', 12], ...Object.keys(PLACES).map((k): [string, number] => [k, 1])),
      meta: pick(['ours', 10], ['none', 1], ['bad-sha', 1], ['forged-node', 1], ['forged-cluster', 1]),
      ageHours: fc.option(fc.oneof(fc.integer({ min: -10, max: 500 }), fc.integer({ min: 0, max: 4 })), { nil: undefined, freq: 20 }),
      local: fc.integer({ min: 0, max: 4 }).map((n) => n === 0),
    }),
    { maxLength: 30, size: 'medium' },
  ),
  keep: optional(fc.integer({ min: 1, max: 8 })),
  maxAgeHours: optional(fc.integer({ min: 0, max: 400 })),
});

describe('remote planner properties', () => {
  it(`touches only this node's own objects, keeps the newest N, deletes exactly what the policy says (${RUNS} cases)`, () => {
    fc.assert(
      fc.property(remoteCase, (c) => {
        const objects: RemoteObject[] = c.objects.map((g, i) => {
          const name = `s${String(i).padStart(2, '0')}`;
          const md: Record<string, string> = { sha256: sha(i), node: 'node-a', cluster: 'c1', name };
          if (g.meta === 'bad-sha') md.sha256 = 'not-a-sha';
          if (g.meta === 'forged-node') md.node = 'node-b';
          if (g.meta === 'forged-cluster') md.cluster = 'c2';
          return {
            key: PLACES[g.place]!(name),
            size: 1,
            lastModifiedMs: g.ageHours === undefined ? undefined : NOW - g.ageHours * H,
            metadata: g.meta === 'none' ? {} : md,
          };
        });
        const localNames = new Set(objects.filter((_, i) => c.objects[i]!.local).map((o) => o.metadata?.name ?? ''));
        const policy = { keep: c.keep, maxAgeMs: c.maxAgeHours === undefined ? undefined : c.maxAgeHours * H };
        const plan = planRemote({ objects, prefix: P, node: 'node-a', cluster: 'c1', policy, now: NOW, localNames });

        expect([...plan.delete, ...plan.keep].map((d) => d.key).sort()).toEqual(objects.map((o) => o.key).sort());
        const isOurs = (o: RemoteObject): boolean => {
          const rest = o.key.startsWith(P) ? o.key.slice(P.length) : '/';
          return (
            rest !== '' &&
            !rest.includes('/') &&
            /^[0-9a-f]{64}$/.test(o.metadata?.sha256 ?? '') &&
            o.metadata?.node === 'node-a' &&
            o.metadata?.cluster === 'c1'
          );
        };
        const byKey = new Map(objects.map((o) => [o.key, o]));
        for (const d of plan.delete) expect(isOurs(byKey.get(d.key)!)).toBe(true);

        const ours = objects.filter(isOurs).sort((a, b) => (b.lastModifiedMs ?? -Infinity) - (a.lastModifiedMs ?? -Infinity) || (a.key < b.key ? 1 : -1));
        const n = policy.keep ?? 1;
        const deleted = new Set(plan.delete.map((d) => d.key));
        for (const o of ours.slice(0, n)) expect(deleted.has(o.key)).toBe(false);

        const expected = ours.filter((o, rank) => {
          if (policy.keep === undefined && policy.maxAgeMs === undefined) return false;
          if (rank < n || o.lastModifiedMs === undefined || localNames.has(o.metadata!.name!)) return false;
          return policy.maxAgeMs === undefined || NOW - o.lastModifiedMs > policy.maxAgeMs;
        });
        expect([...deleted].sort()).toEqual(expected.map((o) => o.key).sort());
      }),
      { numRuns: RUNS },
    );
  });
});

describe('stale upload planner properties', () => {
  it(`aborts exactly this node's uploads at least as old as the threshold and not in flight (${RUNS} cases)`, () => {
    const uploadCase = fc.record({
      // small ranges too, so that an age equal to the threshold comes up
      uploads: fc.array(
        fc.record({
          place: fc.constantFrom(...Object.keys(PLACES)),
          ageMin: optional(fc.oneof(fc.integer({ min: -10, max: 3000 }), fc.integer({ min: 0, max: 3 }))),
          busy: fc.boolean(),
        }),
        { maxLength: 20 },
      ),
      maxAgeMin: fc.oneof(fc.integer({ min: 0, max: 2000 }), fc.integer({ min: 0, max: 3 })),
    });
    fc.assert(
      fc.property(uploadCase, (c) => {
        const uploads = c.uploads.map((g, i) => ({
          key: PLACES[g.place]!(`u${i}`),
          uploadId: `id${i}`,
          initiatedMs: g.ageMin === undefined ? undefined : NOW - g.ageMin * 60_000,
        }));
        const inFlightKeys = new Set(uploads.filter((_, i) => c.uploads[i]!.busy).map((u) => u.key));
        const plan = planStaleUploads({ uploads, prefix: P, now: NOW, maxAgeMs: c.maxAgeMin * 60_000, inFlightKeys });
        const expected = uploads.filter(
          (u) =>
            u.key.startsWith(P) &&
            !u.key.slice(P.length).includes('/') &&
            !inFlightKeys.has(u.key) &&
            u.initiatedMs !== undefined &&
            NOW - u.initiatedMs >= c.maxAgeMin * 60_000,
        );
        expect(plan.abort.map((u) => u.uploadId).sort()).toEqual(expected.map((u) => u.uploadId).sort());
        expect(plan.abort.length + plan.keep.length).toBe(uploads.length);
      }),
      { numRuns: RUNS },
    );
  });
});
