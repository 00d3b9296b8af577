// lifecycle.decide(): the one place that says what state a snapshot file is in and what to do next.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decide, SETTLE_POLL_MAX_MS, type FileFacts } from '../../agent/snapshot/lifecycle.js';

const NOW = 1_700_000_000_000;
const base = (over: Partial<FileFacts> = {}): FileFacts => ({
  kind: 'file',
  fp: { ino: 1, size: 100, mtimeMs: NOW - 60_000 },
  now: NOW,
  firstSeenMs: NOW - 60_000,
  changedAtMs: NOW - 60_000,
  zipping: false,
  settleTimeoutMs: 120_000,
  zipWaitMs: 30_000,
  pollIntervalMs: 2_000,
  ...over,
});
const ok = { ok: true } as const;
const incomplete = { ok: false, reason: 'truncated' as const, detail: 'no end-of-central-directory record' };

describe('decide', () => {
  it.each<[string, Partial<FileFacts>, string, string]>([
    ['a symlink is never followed', { kind: 'symlink' }, 'rejected', 'reject'],
    ['a FIFO is no snapshot', { kind: 'special' }, 'rejected', 'reject'],
    ['the ledger holds this name, size and mtime', { confirmed: { key: 'k', sha256: 'a'.repeat(64) } }, 'confirmed', 'none'],
    ['unreadable at the same ctime stays rejected', { unreadable: { code: 'EACCES', ctimeMs: 5, nowCtimeMs: 5 } }, 'rejected', 'reject'],
    ['unreadable, then chmod (ctime moved): checked again', { unreadable: { code: 'EACCES', ctimeMs: 5, nowCtimeMs: 6 } }, 'settling', 'check'],
    ['not checked yet', {}, 'settling', 'check'],
    ['checks pass', { quick: ok }, 'queued', 'ship'],
    ['checks fail, changed recently: the writer is still at it', { quick: incomplete, changedAtMs: NOW - 1_000 }, 'settling', 'wait'],
    ['checks fail, quiet for settleTimeout: rejected', { quick: incomplete, changedAtMs: NOW - 200_000 }, 'rejected', 'reject'],
    [
      'the read pass found it corrupt, recently changed',
      { quick: ok, failed: { ok: false, reason: 'corrupt', detail: 'x' }, changedAtMs: NOW - 1_000 },
      'settling',
      'wait',
    ],
    [
      'the read pass found it corrupt, quiet since',
      { quick: ok, failed: { ok: false, reason: 'corrupt', detail: 'x' }, changedAtMs: NOW - 200_000 },
      'rejected',
      'reject',
    ],
    ['named explicitly: no waiting for a writer', { quick: incomplete, changedAtMs: NOW - 1_000, explicit: true }, 'rejected', 'reject'],
    ['raw of a zipping producer, just seen, no zip yet: held', { zipping: true, zip: 'absent', firstSeenMs: NOW - 1_000 }, 'held', 'wait'],
    ['raw of a zipping producer, its zip is being written', { zipping: true, zip: 'pending' }, 'superseded', 'none'],
    ['raw of a zipping producer, its zip is good', { zipping: true, zip: 'good', quick: ok }, 'superseded', 'none'],
    ['raw of a zipping producer, no zip came within zipWait: shipped', { zipping: true, zip: 'absent', quick: ok }, 'queued', 'ship'],
    [
      'raw whose zip failed verification (a full disk cut it): shipped',
      { zipping: true, zip: 'rejected', firstSeenMs: NOW - 1_000, quick: ok },
      'queued',
      'ship',
    ],
    ['named explicitly, a zip beside it: shipped all the same', { zipping: true, zip: 'good', explicit: true, quick: ok }, 'queued', 'ship'],
  ])('%s', (_what, over, state, action) => {
    const d = decide(base(over));
    expect(d.state).toBe(state);
    expect(d.action.kind).toBe(action);
    expect(d.why.length).toBeGreaterThan(5);
  });

  it('a wait is never longer than the poll interval while settling, nor negative', () => {
    const d = decide(base({ quick: incomplete, changedAtMs: NOW - 119_999 }));
    expect(d.action).toMatchObject({ kind: 'wait' });
    const ms = (d.action as { ms: number }).ms;
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThanOrEqual(2_000);
  });

  it('a settling file unchanged for long is looked at less often: pollInterval, then a tenth of its quiet time, up to 30 s', () => {
    const waitAfter = (quietMs: number, settleTimeoutMs = 7_200_000): number => {
      const d = decide(base({ quick: incomplete, changedAtMs: NOW - quietMs, settleTimeoutMs }));
      expect(d.action.kind).toBe('wait');
      return (d.action as { ms: number }).ms;
    };
    expect(waitAfter(1_000)).toBe(2_000);
    expect(waitAfter(60_000)).toBe(6_000);
    expect(waitAfter(3_600_000)).toBe(SETTLE_POLL_MAX_MS);
    // never past the settle timeout: the rejection comes on time
    expect(waitAfter(115_000, 120_000)).toBe(5_010);
  });

  it('the raw file held for its zip waits exactly until zipWait has passed since it was first seen', () => {
    const d = decide(base({ zipping: true, zip: 'absent', firstSeenMs: NOW - 10_000 }));
    expect(d.action).toEqual({ kind: 'wait', ms: 20_000 });
  });

  const facts = fc.record({
    kind: fc.constantFrom('file', 'symlink', 'directory', 'special'),
    confirmed: fc.option(fc.constant({ key: 'k', sha256: 'a'.repeat(64) }), { nil: undefined }),
    zipping: fc.boolean(),
    zip: fc.option(fc.constantFrom('absent', 'pending', 'good', 'rejected'), { nil: undefined }),
    quick: fc.option(fc.constantFrom<FileFacts['quick']>({ ok: true }, { ok: false, reason: 'truncated', detail: 'cut' }), { nil: undefined }),
    failed: fc.option(fc.constant({ ok: false, reason: 'corrupt' as const, detail: 'pages' }), { nil: undefined }),
    explicit: fc.boolean(),
    sinceChange: fc.integer({ min: 0, max: 600_000 }),
    sinceSeen: fc.integer({ min: 0, max: 600_000 }),
  });

  it('property: only a complete, unconfirmed regular file that passed its checks is ever shipped', () => {
    fc.assert(
      fc.property(facts, (f) => {
        const all = base({ ...f, kind: f.kind, zip: f.zip, changedAtMs: NOW - f.sinceChange, firstSeenMs: NOW - f.sinceSeen });
        const d = decide(all);
        if (d.action.kind === 'ship') {
          expect(f.kind).toBe('file');
          expect(f.confirmed).toBeUndefined();
          expect(f.quick?.ok).toBe(true);
          expect(f.failed).toBeUndefined();
          // a raw file whose zip is good or coming is left to its producer, unless named explicitly
          if (f.zipping && !f.explicit) expect(['absent', 'rejected', undefined]).toContain(f.zip);
        }
        // what is confirmed is never shipped again, whatever else is known
        if (f.confirmed && f.kind === 'file') expect(d.state).toBe('confirmed');
        // state and action agree
        if (d.action.kind === 'reject') expect(d.state).toBe('rejected');
        if (d.action.kind === 'ship') expect(d.state).toBe('queued');
        if (d.action.kind === 'wait') expect(['held', 'settling']).toContain(d.state);
        // a settling file is looked at again within max(pollInterval, 30 s), and not long after its settle timeout
        if (d.action.kind === 'wait' && d.state === 'settling') {
          expect(d.action.ms).toBeLessThanOrEqual(Math.max(all.pollIntervalMs, SETTLE_POLL_MAX_MS));
          expect(all.now + d.action.ms).toBeLessThanOrEqual(all.changedAtMs + all.settleTimeoutMs + 10);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
