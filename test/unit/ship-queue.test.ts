// The queue's pure decisions: which queued snapshot goes next, and how long the queue waits after a store
// failure.
import { describe, expect, it } from 'vitest';
import { backoffMs } from '../../agent/ship/deliver.js';
import { newTrack, nextQueued, type Track } from '../../agent/ship/track.js';
import { classify, compileRules } from '../../agent/snapshot/names.js';

function queued(name: string, mtimeMs: number, notBefore = 0): Track {
  const c = classify(name, compileRules(['*.db'], []));
  if (c.kind !== 'snapshot') throw new Error(`${name} is not a snapshot name`);
  const t = newTrack(`/snapshots/${name}`, c, 0);
  t.state = 'queued';
  t.fp = { size: 1, mtimeMs, ino: 1 };
  t.notBefore = notBefore;
  return t;
}

describe('nextQueued', () => {
  it('takes the newest by the producer time in the name, not by mtime', () => {
    const older = queued('2024-05-01T12:00:00Z_etcd.zip', Date.parse('2024-05-02T00:00:00Z'));
    const newer = queued('2024-05-01T13:00:00Z_etcd.zip', Date.parse('2024-05-01T13:00:10Z'));
    expect(nextQueued([older, newer], 0)?.name).toBe(newer.name);
    expect(nextQueued([newer, older], 0)?.name).toBe(newer.name);
  });

  it('breaks a tie in snapshot time by name, whatever the order it is given in', () => {
    const a = queued('a.db', 1_000);
    const b = queued('b.db', 1_000);
    expect(nextQueued([a, b], 0)?.name).toBe('b.db');
    expect(nextQueued([b, a], 0)?.name).toBe('b.db');
  });

  it('skips a file waiting out its own backoff while another is due; when all wait, the one due soonest', () => {
    const newest = queued('c.db', 3_000, 10_000);
    const older = queued('a.db', 1_000);
    expect(nextQueued([newest, older], 5_000)?.name).toBe('a.db');
    const later = queued('b.db', 2_000, 20_000);
    expect(nextQueued([newest, later], 5_000)?.name).toBe('c.db');
  });

  it('ignores what is not queued', () => {
    const t = queued('a.db', 1_000);
    t.state = 'settling';
    expect(nextQueued([t], 0)).toBeUndefined();
  });
});

describe('backoffMs', () => {
  it('doubles from the initial delay up to the maximum, with jitter between half and all of it', () => {
    expect(backoffMs(1, 1_000, 60_000, 1)).toBe(1_000);
    expect(backoffMs(2, 1_000, 60_000, 1)).toBe(2_000);
    expect(backoffMs(3, 1_000, 60_000, 0)).toBe(2_000);
    expect(backoffMs(10, 1_000, 60_000, 1)).toBe(60_000);
    expect(backoffMs(1_000, 1_000, 60_000, 0.5)).toBe(45_000);
  });
});
