// One store contract, checked the same way against every store: the in-memory one (unit tests), Ceph RGW and
// OpenStack Swift (integration tests). Each check is a plain async function that throws when the store
// breaks the contract, so a test can also show that a deliberately broken store fails the suite.
import { createHash } from 'node:crypto';
import { classifyError } from '../../agent/base/errors.js';
import type { PartChecksum, Store } from '../../agent/store/store.js';

export interface ConformanceContext {
  store: Store;
  /** a fresh prefix for this run, ending in '/' */
  prefix: string;
}

export interface Check {
  name: string;
  run(c: ConformanceContext): Promise<void>;
}

class ContractError extends Error {}
const must = (cond: unknown, what: string): void => {
  if (!cond) throw new ContractError(what);
};

const sha = (b: Buffer): PartChecksum => ({ kind: 'sha256', value: createHash('sha256').update(b).digest('hex') });
const md5 = (b: Buffer): PartChecksum => ({ kind: 'md5', value: createHash('md5').update(b).digest('base64') });
const MiB = 1024 * 1024;

async function readAll(store: Store, key: string, range?: { start: number; end: number }): Promise<Buffer | undefined> {
  const got = await store.get(key, range ? { range } : {});
  if (!got) return undefined;
  const parts: Buffer[] = [];
  for await (const c of got.body) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

async function rejects(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new ContractError('the call succeeded but had to fail');
}

async function multipart(store: Store, key: string, parts: Buffer[], metadata: Record<string, string> = {}): Promise<void> {
  const id = await store.createUpload(key, { metadata });
  const done = [];
  for (const [i, b] of parts.entries()) done.push({ partNumber: i + 1, ...(await store.uploadPart(key, id, i + 1, b, sha(b))) });
  await store.completeUpload(key, id, done);
}

export const CHECKS: readonly Check[] = [
  {
    name: 'a small object is stored with its metadata; head and get return it',
    async run({ store, prefix }) {
      const key = `${prefix}small`;
      const body = Buffer.from('manifest {"a":1}\n');
      await store.putObject(key, body, { metadata: { node: 'n1', name: encodeURIComponent('a b.db') }, contentType: 'application/json' });
      const h = await store.head(key);
      must(h && h.size === body.length, `head size ${h?.size}`);
      must(h!.metadata?.node === 'n1' && h!.metadata?.name === 'a%20b.db', `metadata ${JSON.stringify(h!.metadata)}`);
      must((await readAll(store, key))?.equals(body), 'get returns the bytes put');
    },
  },
  {
    name: 'a multipart upload becomes an object only on Complete, byte for byte, with the metadata set at Create',
    async run({ store, prefix }) {
      const key = `${prefix}multi`;
      const a = Buffer.alloc(5 * MiB, 1);
      const b = Buffer.from('tail of the object');
      const id = await store.createUpload(key, { metadata: { sha256: 'x'.repeat(3) } });
      const p1 = await store.uploadPart(key, id, 1, a, sha(a));
      const p2 = await store.uploadPart(key, id, 2, b, sha(b));
      must(!(await store.head(key)), 'no object before Complete');
      await store.completeUpload(key, id, [
        { partNumber: 1, ...p1 },
        { partNumber: 2, ...p2 },
      ]);
      const h = await store.head(key);
      must(h?.size === a.length + b.length, `size ${h?.size}`);
      must(h!.metadata?.sha256 === 'xxx', 'metadata from Create');
      const all = await readAll(store, key);
      must(
        all &&
          createHash('md5').update(all).digest('hex') ===
            createHash('md5')
              .update(Buffer.concat([a, b]))
              .digest('hex'),
        'bytes match',
      );
      must(!(await store.listUploads(prefix)).some((u) => u.uploadId === id), 'upload gone after Complete');
    },
  },
  {
    name: 'a ranged get returns exactly the range, across a part boundary',
    async run({ store, prefix }) {
      const key = `${prefix}ranged`;
      const a = Buffer.alloc(5 * MiB, 7);
      const b = Buffer.from('0123456789');
      await multipart(store, key, [a, b]);
      const r = await readAll(store, key, { start: a.length - 3, end: a.length + 4 });
      must(r?.equals(Buffer.concat([Buffer.alloc(3, 7), Buffer.from('01234')])), `range bytes ${r?.toString('hex')}`);
    },
  },
  {
    name: 'a part whose signed payload SHA-256 does not match is refused, as damaged (integrity)',
    async run({ store, prefix }) {
      const key = `${prefix}bad-sha`;
      const id = await store.createUpload(key, { metadata: {} });
      try {
        const body = Buffer.from('what was sent');
        const e = await rejects(store.uploadPart(key, id, 1, body, sha(Buffer.from('what was meant'))));
        must(classifyError(e) === 'integrity', `classified ${classifyError(e)} (${(e as Error).name})`);
      } finally {
        await store.abortUpload(key, id);
      }
    },
  },
  {
    name: 'a part whose Content-MD5 does not match is refused, as damaged (integrity)',
    async run({ store, prefix }) {
      const key = `${prefix}bad-md5`;
      const id = await store.createUpload(key, { metadata: {} });
      try {
        const e = await rejects(store.uploadPart(key, id, 1, Buffer.from('one'), md5(Buffer.from('two'))));
        must(classifyError(e) === 'integrity', `classified ${classifyError(e)} (${(e as Error).name})`);
      } finally {
        await store.abortUpload(key, id);
      }
    },
  },
  {
    name: 'open uploads are listed under their prefix and gone once aborted',
    async run({ store, prefix }) {
      const key = `${prefix}open`;
      const id = await store.createUpload(key, { metadata: {} });
      await store.uploadPart(key, id, 1, Buffer.from('x'), sha(Buffer.from('x')));
      const listed = await store.listUploads(prefix);
      must(
        listed.some((u) => u.key === key && u.uploadId === id && u.initiated instanceof Date),
        'listed with its start',
      );
      must(!(await store.listUploads(`${prefix}other/`)).some((u) => u.uploadId === id), 'not under another prefix');
      await store.abortUpload(key, id);
      must(!(await store.listUploads(prefix)).some((u) => u.uploadId === id), 'gone after abort');
      must(!(await store.head(key)), 'no object from an aborted upload');
    },
  },
  {
    name: 'an upload aborted mid-put cannot be completed and leaves no object',
    async run({ store, prefix }) {
      const key = `${prefix}aborted`;
      const id = await store.createUpload(key, { metadata: {} });
      const a = Buffer.alloc(5 * MiB, 3);
      const p1 = await store.uploadPart(key, id, 1, a, sha(a));
      await store.abortUpload(key, id);
      // AWS and Swift answer NoSuchUpload; Ceph RGW 16 a 500 "multipart completion is already in progress":
      // what matters is that it fails and nothing appears
      await rejects(store.completeUpload(key, id, [{ partNumber: 1, ...p1 }]));
      must(!(await store.head(key)), 'no object');
    },
  },
  {
    name: 'a listing returns every object under the prefix exactly once, in key order, across pages',
    async run({ store, prefix }) {
      const keys = Array.from({ length: 7 }, (_, i) => `${prefix}list/k${i}`);
      for (const k of keys) await store.putObject(k, Buffer.from(k), { metadata: {} });
      await store.putObject(`${prefix}listed-not/x`, Buffer.from('x'), { metadata: {} });
      const seen: string[] = [];
      for await (const o of store.list(`${prefix}list/`)) {
        seen.push(o.key);
        must(o.size === Buffer.byteLength(o.key) && o.lastModified instanceof Date, `size and time of ${o.key}`);
      }
      must(JSON.stringify(seen) === JSON.stringify(keys), `listed ${JSON.stringify(seen)}`);
    },
  },
  {
    name: 'delete removes an object; a missing object is undefined to head and get, and deleting it is no error',
    async run({ store, prefix }) {
      const key = `${prefix}gone`;
      await store.putObject(key, Buffer.from('bye'), { metadata: {} });
      await store.delete(key);
      must((await store.head(key)) === undefined, 'head of a deleted object');
      must((await store.get(key)) === undefined, 'get of a deleted object');
      await store.delete(key);
    },
  },
  {
    name: 'the bucket check passes on a bucket the credentials may use',
    async run({ store }) {
      await store.check();
    },
  },
];

/** Runs every check; returns the failures (name and why) instead of stopping at the first. */
export async function runConformance(c: ConformanceContext, checks: readonly Check[] = CHECKS): Promise<{ name: string; error: string }[]> {
  const failed: { name: string; error: string }[] = [];
  for (const check of checks) {
    try {
      await check.run(c);
    } catch (e) {
      failed.push({ name: check.name, error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
    }
  }
  return failed;
}
