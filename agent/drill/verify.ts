// Verifying one backup where it lives: streamed back from S3 once, nothing written to disk, and checked as
// deeply as the keys at hand allow.
//  - plain object, or encrypted with an identity: size and sha256 against the manifest, the zip (CRC-32,
//    inner snapshot), every bbolt page and the facts `etcdctl snapshot status` prints; with signers, the
//    signatures; with `restore`, the snapshot is also written to a temp dir and restored by etcdutl/etcdctl.
//  - encrypted without an identity (the drill on an etcd host, where the private key never is): each stored
//    part's checksum recomputed and compared with the one the server verified at upload, and the age
//    structure. That proves the stored bytes are the ones uploaded, which were deep-checked before upload.
import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createInflateRaw } from 'node:zlib';
import { readAt } from '../base/files.js';
import { checkAgeStructure, type AgeIdentity } from '../crypto/age.js';
import type { AllowedSigner } from '../crypto/sshsig.js';
import type { VerifyFailure } from '../ops/metrics.js';
import { deepCheckWithHash } from '../snapshot/deep.js';
import type { DbInfo, Rejected } from '../snapshot/format.js';
import { openVerifier, type Verifier } from '../snapshot/verifier.js';
import { METHOD_DEFLATE, readLocalHeaders, readZipDirectory } from '../snapshot/zip.js';
import type { CatalogEntry } from '../store/catalog.js';
import type { Store } from '../store/store.js';
import type { Throttle } from '../base/throttle.js';
import { partCheck } from './parts.js';
import { ObjectGone, plainReader, readBack, type ReadProblem } from './read.js';

export interface VerifyOptions {
  identities?: readonly AgeIdentity[];
  signers?: readonly AllowedSigner[];
  /** also restore the snapshot with etcdutl/etcdctl in a temp dir (needs the plaintext) */
  restore?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  /** reads from S3 at most this fast (the drill honours upload.bandwidthLimit) */
  throttle?: Throttle;
}

export interface VerifyReport {
  key: string;
  ok: boolean;
  /** `deep`: the snapshot itself was checked; `stored`: the stored (encrypted) bytes against their part checksums */
  depth: 'deep' | 'stored';
  /** why it failed, as a metric label */
  reason?: VerifyFailure;
  detail: string;
  size: number;
  time: Date;
  db?: DbInfo;
  restore?: { tool: string; ok: boolean; detail: string };
}

const PROBLEM: Record<ReadProblem, VerifyFailure> = {
  missing: 'missing',
  unverified: 'hash',
  identity: 'decrypt',
  decrypt: 'decrypt',
  size: 'size',
  hash: 'hash',
  signature: 'signature',
  structure: 'format',
};
const REJECT: Record<Rejected['reason'], VerifyFailure> = { truncated: 'truncated', corrupt: 'corrupt', format: 'format' };

export async function verifyEntry(store: Store, e: CatalogEntry, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const base = { key: e.object.key, size: e.size, time: e.time };
  if (!e.complete) return { ...base, ok: false, depth: 'deep', reason: 'hash', detail: 'no manifest and no sha256 metadata: not a backup the agent confirmed' };
  const depth = e.encrypted && !opts.identities?.length ? 'stored' : 'deep';
  // the listing already tells an object cut short or replaced by one of another size: no need to read it
  const recorded = e.manifest?.object.size;
  if (recorded !== undefined && e.object.size !== recorded)
    return {
      ...base,
      ok: false,
      depth,
      reason: 'size',
      detail: `${e.object.key} holds ${e.object.size} bytes, its manifest says ${recorded}: cut short or replaced in S3`,
    };
  if (depth === 'stored') return verifyStored(store, e, opts, base);

  // the few bytes the verifier reads before the stream (a zip's directory sits at the end)
  let verifier: Verifier | Rejected;
  try {
    const reader = await plainReader(store, e, opts.identities);
    verifier = await openVerifier(reader.read, reader.size, { deep: deepCheckWithHash });
  } catch (err) {
    if (err instanceof ObjectGone) return { ...base, ok: false, depth: 'deep', reason: 'missing', detail: err.message };
    if ((err as Error).name === 'AgeError') return { ...base, ok: false, depth: 'deep', reason: 'decrypt', detail: (err as Error).message };
    throw err;
  }
  if ('ok' in verifier) return { ...base, ok: false, depth: 'deep', reason: REJECT[verifier.reason], detail: `${verifier.reason}: ${verifier.detail}` };
  const v = verifier;
  let restoreFile: { path: string; dir: string; write: (b: Buffer) => Promise<void>; close: () => Promise<void> } | undefined;
  if (opts.restore) restoreFile = await tempSnapshot();
  let early: Rejected | undefined;
  try {
    const read = await readBack(
      store,
      e,
      async (chunk) => {
        await opts.throttle?.take(chunk.length, opts.signal);
        if (!early) early = await v.update(chunk);
        await restoreFile?.write(chunk);
      },
      {
        ...(opts.identities ? { identities: opts.identities } : {}),
        ...(opts.signers ? { signers: opts.signers } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      },
    );
    await restoreFile?.close();
    if (!read.ok) return { ...base, ok: false, depth: 'deep', reason: PROBLEM[read.problem], detail: read.detail };
    const verdict = early ?? (await v.finish());
    if (!verdict.ok) return { ...base, ok: false, depth: 'deep', reason: REJECT[verdict.reason], detail: `${verdict.reason}: ${verdict.detail}` };
    const report: VerifyReport = {
      ...base,
      ok: true,
      depth: 'deep',
      detail: `sound: sha256 and size as shipped, ${verdict.format}${verdict.entry ? ` (entry ${verdict.entry})` : ''}, every bbolt page checked${read.signedBy ? `, signed by ${read.signedBy}` : ''}`,
      ...(verdict.db ? { db: verdict.db } : {}),
    };
    if (restoreFile) {
      const r = await restoreWith(restoreFile.path, restoreFile.dir, verdict.format === 'zip' ? verdict.entry : undefined);
      report.restore = r;
      if (!r.ok) return { ...report, ok: false, reason: 'restore', detail: `${r.tool}: ${r.detail}` };
    }
    return report;
  } finally {
    v.destroy();
    if (restoreFile) await rm(restoreFile.dir, { recursive: true, force: true });
  }
}

/** An encrypted object checked without its key: the stored bytes against what the server verified at upload. */
async function verifyStored(store: Store, e: CatalogEntry, opts: VerifyOptions, base: { key: string; size: number; time: Date }): Promise<VerifyReport> {
  const parts = partCheck(e.manifest?.object);
  if (!parts)
    return {
      ...base,
      ok: false,
      depth: 'stored',
      reason: 'decrypt',
      detail: 'encrypted, and its manifest records no part checksums: only --identity can verify it',
    };
  const got = await store.get(e.object.key, opts.signal ? { signal: opts.signal } : {});
  if (!got) return { ...base, ok: false, depth: 'stored', reason: 'missing', detail: `${e.object.key} is gone from S3` };
  const structure = checkAgeStructure();
  let total = 0;
  for await (const c of got.body) {
    const b = Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    await opts.throttle?.take(b.length, opts.signal);
    structure.update(b);
    total += b.length;
    const bad = parts.update(b);
    if (bad) return { ...base, ok: false, depth: 'stored', reason: 'hash', detail: bad };
    opts.onProgress?.(total, e.object.size);
  }
  const bad = parts.finish();
  if (bad) return { ...base, ok: false, depth: 'stored', reason: total === e.manifest!.object.size ? 'hash' : 'size', detail: bad };
  const s = structure.finish();
  if (!s.ok) return { ...base, ok: false, depth: 'stored', reason: 'format', detail: s.detail };
  return {
    ...base,
    ok: true,
    depth: 'stored',
    detail: `stored bytes intact: all ${parts.parts} part checksums match what the server verified at upload, age structure sound (decrypting needs --identity)`,
  };
}

async function tempSnapshot(): Promise<{ path: string; dir: string; write: (b: Buffer) => Promise<void>; close: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'etcd-backup-verify-'));
  const path = join(dir, 'snapshot');
  const fh = await open(path, 'wx', 0o600);
  return { path, dir, write: async (b) => void (await fh.write(b)), close: () => fh.close() };
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCDCTL_API: '3' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e) => resolve({ code: null, out: (e as NodeJS.ErrnoException).code ?? String(e) }));
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** `etcdutl snapshot restore`, else `etcdctl snapshot restore`, on the raw snapshot (unzipped first). */
async function restoreWith(path: string, dir: string, zipEntry: string | undefined): Promise<{ tool: string; ok: boolean; detail: string }> {
  let db = path;
  if (zipEntry !== undefined) {
    db = join(dir, 'snapshot.db');
    await extractEntry(path, zipEntry, db);
  }
  const dataDir = join(dir, 'restored');
  for (const tool of ['etcdutl', 'etcdctl']) {
    const r = await run(tool, ['snapshot', 'restore', db, '--data-dir', dataDir]);
    if (r.code === null && r.out === 'ENOENT') continue;
    const last = r.out.trim().split('\n').filter(Boolean).pop() ?? '';
    return {
      tool: `${tool} snapshot restore`,
      ok: r.code === 0,
      detail: r.code === 0 ? 'restored into a temporary data directory (removed again)' : last.slice(0, 300),
    };
  }
  return { tool: 'etcdutl/etcdctl', ok: false, detail: 'neither etcdutl nor etcdctl is on PATH' };
}

/** The snapshot entry of a (verified) zip, inflated to its own file. */
async function extractEntry(zip: string, entry: string, to: string): Promise<void> {
  const src = await open(zip, 'r');
  try {
    const size = (await src.stat()).size;
    const read = (p: number, l: number): Promise<Buffer> => readAt(src, p, l);
    const dir = await readZipDirectory(read, size);
    await readLocalHeaders(read, dir);
    const e = dir.entries.find((x) => x.name === entry)!;
    const input = createReadStream(zip, { start: e.dataOffset, end: e.dataOffset + e.compressedSize - 1 });
    const out = createWriteStream(to, { flags: 'wx', mode: 0o600 });
    if (e.method === METHOD_DEFLATE) await pipeline(input, createInflateRaw(), out);
    else await pipeline(input, out);
  } finally {
    await src.close();
  }
}
