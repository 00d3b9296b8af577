// Aborting a multipart upload when the store may be away (agent/store/abort.ts): what an outage left open is
// aborted once the store is back, what the store says is gone is not tried again, and a store that refuses the
// abort for another reason (credentials) is not hammered. Used by uploads and the start probe.
import { describe, expect, it } from 'vitest';
import { abortPending, abortUpload } from '../../agent/store/abort.js';
import { MemoryStore, s3Error } from '../support/memory-store.js';

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
const FAST = { firstRetryMs: 50, maxRetryMs: 200 };

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function openUpload(store: MemoryStore): Promise<string> {
  return store.createUpload('p/snap.db', { metadata: {} });
}

describe('abortUpload', () => {
  it('aborts at once when the store answers', async () => {
    const store = new MemoryStore();
    const id = await openUpload(store);
    expect(await abortUpload(store, 'p/snap.db', id, FAST)).toBe(true);
    expect(store.uploads.size).toBe(0);
  });

  it('an outage: still open right after, aborted in the background once the store is back, without throwing', async () => {
    const store = new MemoryStore();
    const id = await openUpload(store);
    store.failNext('abortUpload', refused(), 4);
    expect(await abortUpload(store, 'p/snap.db', id, FAST)).toBe(false);
    expect(store.uploads.size).toBe(1);
    await until('the upload aborted', () => store.uploads.size === 0, 3_000);
  });

  it('"no such upload" and a credentials refusal are not tried again', async () => {
    for (const err of [s3Error('NoSuchUpload', 404), s3Error('AccessDenied', 403)]) {
      const store = new MemoryStore();
      const id = await openUpload(store);
      store.failNext('abortUpload', err, 1);
      expect(await abortUpload(store, 'p/snap.db', id, FAST)).toBe(false);
      await new Promise((r) => setTimeout(r, 400));
      expect(store.uploads.size).toBe(1);
    }
  });
});

describe('abortPending', () => {
  it('before the next upload of a key, what an outage left open for it is aborted at once, not after the retry pause', async () => {
    const store = new MemoryStore();
    const id = await openUpload(store);
    // another key's upload, open and never given to abortUpload: not touched
    await store.createUpload('p/other.db', { metadata: {} });
    store.failNext('abortUpload', refused(), 1);
    expect(await abortUpload(store, 'p/snap.db', id, { firstRetryMs: 60_000, maxRetryMs: 60_000 })).toBe(false);
    await abortPending(store, 'p/snap.db');
    expect([...store.uploads.values()].map((u) => u.key)).toEqual(['p/other.db']);
    // nothing pending for a key without a failed abort
    await abortPending(store, 'p/other.db');
    expect(store.uploads.size).toBe(1);
  });
});
