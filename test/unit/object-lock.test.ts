// Object Lock in the uploader and in retention, against the in-memory store playing two servers: Ceph RGW 16
// (drops the lock given at CreateMultipartUpload) and AWS (wants Content-MD5 or a checksum header on every
// part of a locked upload). The real RGW is in test/integration/object-lock.test.ts.
import { mkdtemp, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { fingerprint } from '../../agent/base/files.js';
import { parseConfig } from '../../agent/config/parse.js';
import { createLogger } from '../../agent/ops/log.js';
import { prunePass } from '../../agent/retention/executor.js';
import { integrityUnderLock, objectLockFor, resolveIntegrity, shipOptions } from '../../agent/ship/options.js';
import { Uploader } from '../../agent/ship/upload.js';
import { manifestKey, objectKey } from '../../agent/store/layout.js';
import { Ledger, ledgerLocation } from '../../agent/store/ledger.js';
import type { PartIntegrity } from '../../agent/store/store.js';
import { MemoryStore, s3Error } from '../support/memory-store.js';

const FIXTURE = join(import.meta.dirname, '../fixtures/etcd-small.db');

function config(extra: Record<string, unknown> = {}) {
  return parseConfig(
    stringify({
      cluster: 'c1',
      node: 'node-a',
      snapshotDir: tmpdir(),
      stateDir: tmpdir(),
      s3: { bucket: 'backups', objectLock: { mode: 'COMPLIANCE', retainFor: '7d' }, ...extra },
    }),
    'test',
    {},
  );
}

function logger() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _e, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger('debug', sink), lines };
}

async function ship(store: MemoryStore, integrity: PartIntegrity, cfg = config()) {
  const fh = await open(FIXTURE, 'r');
  try {
    const fp = fingerprint(await fh.stat());
    const key = objectKey(cfg, 'etcd-small.db');
    return await new Uploader(store).ship(
      { fh, fp, name: 'etcd-small.db', producer: 'etcdctl', snapshotTime: new Date(fp.mtimeMs), key, node: cfg.node, cluster: cfg.cluster, agent: 'test' },
      shipOptions(cfg, { integrity }),
    );
  } finally {
    await fh.close();
  }
}

describe('part proof under Object Lock', () => {
  it('a part proven only by the signed payload gets Content-MD5 instead; a probed CRC32 stays', () => {
    expect(integrityUnderLock('sha256', true)).toBe('md5');
    expect(integrityUnderLock('crc32', true)).toBe('crc32');
    expect(integrityUnderLock('sha256', false)).toBe('sha256');
  });

  it('resolveIntegrity: locked by the config or by the bucket -> md5; neither -> the signed payload', async () => {
    const { log, lines } = logger();
    expect(await resolveIntegrity(new MemoryStore({ objectLock: true }), config(), log)).toBe('md5');
    expect(await resolveIntegrity(new MemoryStore({ objectLock: true }), config({ objectLock: undefined }), log)).toBe('md5');
    expect(await resolveIntegrity(new MemoryStore({ objectLock: true }), config({ checksum: 'when_required' }), log)).toBe('md5');
    expect(await resolveIntegrity(new MemoryStore({ objectLock: false }), config({ objectLock: undefined }), log)).toBe('sha256');
    // a server that checks CRC32 (AWS) keeps it: it satisfies the lock's requirement too
    expect(await resolveIntegrity(new MemoryStore({ objectLock: true, checksCrc32: true }), config(), log)).toBe('crc32');
    expect(lines.filter((l) => l.msg === 'part integrity').map((l) => l.proof)).toContain(
      'Content-MD5 (objects are written under Object Lock, where S3 wants it on every part)',
    );
  });

  it('AWS refuses a locked upload whose parts carry only the signed payload; with md5 it ships', async () => {
    await expect(ship(new MemoryStore({ objectLock: true, lockNeedsPartChecksum: true }), 'sha256')).rejects.toThrow(/Content-MD5 OR x-amz-checksum-/);
    const store = new MemoryStore({ objectLock: true, lockNeedsPartChecksum: true });
    const out = await ship(store, 'md5');
    expect(out.kind).toBe('shipped');
  });
});

describe('retention on every object the upload writes', () => {
  it('object and manifest carry the retention asked for', async () => {
    const store = new MemoryStore({ objectLock: true });
    const t0 = Date.now();
    const out = await ship(store, 'md5');
    if (out.kind !== 'shipped') throw new Error(out.kind);
    for (const k of [out.storedKey, manifestKey(out.key)]) {
      const h = await store.head(k);
      expect(h?.lockMode, k).toBe('COMPLIANCE');
      expect(h!.retainUntil!.getTime()).toBeGreaterThanOrEqual(t0 + 7 * 86_400_000 - 1000);
    }
    expect(store.calls.filter((c) => c.op === 'setRetention')).toEqual([]);
  });

  it('a server that drops the lock at Complete (Ceph RGW 16) gets it set again, and the upload says so only if that fails', async () => {
    const store = new MemoryStore({ objectLock: true, dropsMultipartLock: true });
    const out = await ship(store, 'md5');
    if (out.kind !== 'shipped') throw new Error(out.kind);
    expect(store.calls.filter((c) => c.op === 'setRetention').map((c) => c.key)).toEqual([out.storedKey]);
    expect((await store.head(out.storedKey))?.lockMode).toBe('COMPLIANCE');

    const refusing = new MemoryStore({ objectLock: true, dropsMultipartLock: true });
    refusing.failNext('setRetention', s3Error('AccessDenied', 403, 'Access Denied'));
    await expect(ship(refusing, 'md5')).rejects.toMatchObject({ name: 'AccessDenied' });
  });

  it('objectLockFor: the retention runs from the time of the upload', () => {
    const l = objectLockFor(config(), 1_000_000);
    expect(l).toEqual({ mode: 'COMPLIANCE', until: new Date(1_000_000 + 7 * 86_400_000) });
    expect(objectLockFor(config({ objectLock: undefined }))).toBeUndefined();
  });
});

describe('remote retention and locked objects', () => {
  async function twoShipped(store: MemoryStore) {
    const root = await mkdtemp(join(tmpdir(), 'lock-retention-'));
    const cfg = parseConfig(
      stringify({
        cluster: 'c1',
        node: 'node-a',
        snapshotDir: root,
        stateDir: join(root, 'state'),
        s3: { bucket: 'backups', objectLock: { mode: 'GOVERNANCE', retainFor: '1d' } },
        retention: { remote: { enabled: true, keep: 1 } },
      }),
      'test',
      {},
    );
    const { ledger } = await Ledger.open(cfg.stateDir, ledgerLocation(cfg));
    // two objects of this node: older and newer, by their snapshot time in the manifest
    const fh = await open(FIXTURE, 'r');
    const fp = fingerprint(await fh.stat());
    const up = new Uploader(store);
    for (const [name, t] of [
      ['old.db', Date.now() - 3 * 86_400_000],
      ['new.db', Date.now() - 3_600_000],
    ] as const) {
      await up.ship(
        { fh, fp, name, producer: 'etcdctl', snapshotTime: new Date(t), key: objectKey(cfg, name), node: cfg.node, cluster: cfg.cluster, agent: 'test' },
        shipOptions(cfg, { integrity: 'md5' }),
      );
    }
    await fh.close();
    return { cfg, ledger };
  }

  it('a locked object is kept with "locked until", and nothing is asked of S3 for it', async () => {
    const store = new MemoryStore({ objectLock: true });
    const { cfg, ledger } = await twoShipped(store);
    const { log } = logger();
    const report = await prunePass({ cfg, store, ledger, log }, []);
    const old = report.remote!.kept.find((k) => k.key.endsWith('/old.db'));
    expect(old?.reason).toMatch(/^locked until \d{4}-\d\d-\d\dT.* \(S3 Object Lock\); kept, and deleted by a later pass once the lock ends$/);
    expect(store.calls.filter((c) => c.op === 'delete')).toEqual([]);
  });

  it('a delete S3 refuses anyway is reported once (warn, and in the report), not retried within the pass', async () => {
    const store = new MemoryStore({ objectLock: true });
    const { cfg, ledger } = await twoShipped(store);
    // the lock has ended (the clock moved two days on): the planner may delete the old one, but a bucket
    // policy refuses, as S3 would with AccessDenied
    const later = Date.now() + 2 * 86_400_000;
    store.failNext('delete', s3Error('AccessDenied', 403, 'Access Denied'), 5, (k) => Boolean(k?.endsWith('/old.db')));
    const { log, lines } = logger();
    const report = await prunePass({ cfg, store, ledger, log, now: () => later }, []);
    const old = report.remote!.kept.find((k) => k.key.endsWith('/old.db'));
    expect(old?.reason).toMatch(
      /^S3 refused to delete it \(S3 refused the credentials or access .*AccessDenied.*\); an Object Lock or a bucket policy protects it\. Kept; the next retention pass tries once more$/,
    );
    expect(store.calls.filter((c) => c.op === 'delete' && c.key?.endsWith('/old.db'))).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'retention: S3 refused to delete a remote snapshot; kept')).toHaveLength(1);
    expect(report.remote!.deleted).toEqual([]);
  });
});
