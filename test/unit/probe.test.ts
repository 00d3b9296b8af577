// The start probe leaves no multipart upload open, even when the store goes away between its calls.
import { describe, expect, it } from 'vitest';
import { probePartChecksum } from '../../agent/store/probe.js';
import { MemoryStore, s3Error } from '../support/memory-store.js';

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('probePartChecksum', () => {
  it('aborts its upload at once when the store answers', async () => {
    const store = new MemoryStore();
    await probePartChecksum(store, 'p/');
    expect(store.uploads.size).toBe(0);
  });

  it('an abort refused by an outage is tried again until the store is back', async () => {
    const store = new MemoryStore();
    store.failNext('abortUpload', refused(), 2);
    await probePartChecksum(store, 'p/');
    // the outage: still open right after the probe, and after the first retry (1 s)
    expect(store.uploads.size).toBe(1);
    await until('the upload aborted', () => store.uploads.size === 0, 6_000);
  });

  it('an abort the store answers with "no such upload" is not tried again', async () => {
    const store = new MemoryStore();
    store.failNext('abortUpload', s3Error('NoSuchUpload', 404), 1);
    await probePartChecksum(store, 'p/');
    const before = store.uploads.size;
    await new Promise((r) => setTimeout(r, 1_500));
    expect(store.uploads.size).toBe(before);
  });
});
