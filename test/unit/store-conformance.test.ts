// The store contract on the in-memory store, and proof that the suite catches a store that breaks it.
import { describe, expect, it } from 'vitest';
import type { ObjectInfo, PartChecksum } from '../../agent/store/store.js';
import { MemoryStore } from '../support/memory-store.js';
import { CHECKS, runConformance } from '../support/store-conformance.js';

/** Stores the bytes whatever checksum came with them: what the proof of stored bytes is there to catch. */
class IgnoresChecksums extends MemoryStore {
  override uploadPart(key: string, uploadId: string, n: number, body: Uint8Array, _c: PartChecksum, signal?: AbortSignal) {
    return super.uploadPart(key, uploadId, n, body, { kind: 'crc32', value: 'AAAAAA==' }, signal);
  }
}

/** Loses the last page of every listing: objects retention and the ledger would never see. */
class DropsLastPage extends MemoryStore {
  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const all: ObjectInfo[] = [];
    for await (const o of super.list(prefix)) all.push(o);
    yield* all.slice(0, Math.max(0, all.length - (all.length % 3 || 3)));
  }
}

describe('store conformance', () => {
  it('the memory store passes every check, with listings of three keys a page', async () => {
    const failed = await runConformance({ store: new MemoryStore({ pageSize: 3 }), prefix: 'conf/' });
    expect(failed).toEqual([]);
    expect(CHECKS.length).toBeGreaterThanOrEqual(10);
  });

  it('a store that stores parts whatever their checksum fails the integrity checks', async () => {
    const failed = await runConformance({ store: new IgnoresChecksums(), prefix: 'conf/' });
    expect(failed.map((f) => f.name)).toEqual([
      'a part whose signed payload SHA-256 does not match is refused, as damaged (integrity)',
      'a part whose Content-MD5 does not match is refused, as damaged (integrity)',
    ]);
  });

  it('a store that loses a page of its listing fails the listing check', async () => {
    const failed = await runConformance({ store: new DropsLastPage({ pageSize: 3 }), prefix: 'conf/' });
    expect(failed.map((f) => f.name)).toEqual(['a listing returns every object under the prefix exactly once, in key order, across pages']);
  });
});
