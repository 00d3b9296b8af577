// Decides whether a file is a complete, intact etcd snapshot, raw or zipped, from its content alone: a file
// that exists is not a file that is finished (in-place zips, stalled writers), so names and quiet periods are
// never trusted. Pure over an open file; one sequential read pass with fixed memory, whatever the size.
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { NotRegularError, openRegular, readAt } from '../base/files.js';
import zlib from 'node:zlib';
import {
  FLAG_ENCRYPTED,
  FLAG_STRONG_ENCRYPTION,
  METHOD_DEFLATE,
  METHOD_STORE,
  ZipError,
  hex8,
  readLocalHeaders,
  readZipDirectory,
  type ZipDirectory,
  type ZipEntry,
} from './zip.js';

export type SnapshotFormat = 'raw' | 'zip';
export type RejectReason = 'truncated' | 'corrupt' | 'format';
export interface Verified {
  ok: true;
  format: SnapshotFormat;
  size: number;
  /** Hex SHA-256 of the whole file as stored: the bytes that will be uploaded. */
  sha256: string;
  /** Bytes of the raw snapshot including its 32-byte hash (the inner entry for a zip; `size` for raw). */
  dbSize: number;
  /** Zip entry holding the snapshot. */
  entry?: string;
}
export interface Rejected {
  ok: false;
  reason: RejectReason;
  /** One short human line: what is wrong. */
  detail: string;
}
export type Verdict = Verified | Rejected;

export interface VerifyOptions {
  format?: SnapshotFormat;
  /** The file's base name; picks the zip entry (`<name>.zip` holds `<name>`). */
  name?: string;
  signal?: AbortSignal;
}

const TRAILER = 32;
const ALIGN = 512;
const META_MAGIC = 0xed0cdaed;
const META_PAGE_FLAG = 0x04;
const META_VERSION = 2;
const META_END = 80; // page header (16) + meta fields up to and including the checksum
// bbolt uses the OS page size: 4 KiB on x86, up to 64 KiB on arm64/ppc64 kernels.
const MIN_PAGE = 512;
const MAX_PAGE = 65536;
const HEAD_BYTES = MAX_PAGE + META_END;
const QUICK_HEAD = 8192;
const CHUNK = 2 << 20;
const INFLATE_CHUNK = 256 << 10;
const ZIP_LOCAL_SIG = Buffer.from('PK\x03\x04', 'latin1');

const reject = (reason: RejectReason, detail: string): Rejected => ({ ok: false, reason, detail });

/** Format from the first bytes (64 or more if the file has them), or undefined when they say neither. */
export function sniffFormat(head: Buffer): SnapshotFormat | undefined {
  if (head.length >= 4 && head.subarray(0, 4).equals(ZIP_LOCAL_SIG)) return 'zip';
  if (head.length >= 20 && head.readUInt16LE(8) === META_PAGE_FLAG && head.readUInt32LE(16) === META_MAGIC) return 'raw';
  return undefined;
}

export function formatFromName(name: string): SnapshotFormat {
  return name.toLowerCase().endsWith('.zip') ? 'zip' : 'raw';
}

// ---------------------------------------------------------------------------------------------------------
// Raw snapshot: bbolt database + SHA-256 of it.

interface MetaCheck {
  index: 0 | 1;
  hasMagic: boolean;
  version: number;
  pgid: bigint;
  txid: bigint;
  problem?: string;
}

interface RawLayout {
  pageSize: number;
  /** Problems with one meta page while the other is valid; the hash decides whether that matters. */
  metaProblems: string[];
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const U64 = 0xffffffffffffffffn;

/** bbolt's meta checksum: FNV-1a 64 over the meta fields before the checksum. */
function fnv1a64(buf: Buffer): bigint {
  let h = FNV_OFFSET;
  for (const b of buf) h = ((h ^ BigInt(b)) * FNV_PRIME) & U64;
  return h;
}

const isPageSize = (n: number): boolean => n >= MIN_PAGE && n <= MAX_PAGE && (n & (n - 1)) === 0;
const hasMagicAt = (head: Buffer, off: number): boolean => head.length >= off + 20 && head.readUInt32LE(off + 16) === META_MAGIC;

function checkMeta(head: Buffer, index: 0 | 1, pageSize: number): MetaCheck {
  const off = index * pageSize;
  const m: MetaCheck = { index, hasMagic: hasMagicAt(head, off), version: 0, pgid: 0n, txid: 0n };
  const say = (what: string): MetaCheck => ({ ...m, problem: `meta page ${index}: ${what}` });
  if (!m.hasMagic) return say('bad magic');
  m.version = head.readUInt32LE(off + 20);
  m.pgid = head.readBigUInt64LE(off + 56);
  m.txid = head.readBigUInt64LE(off + 64);
  const flags = head.readUInt16LE(off + 8);
  if (flags !== META_PAGE_FLAG) return say(`page flags 0x${flags.toString(16)}, want 0x04`);
  const stored = head.readBigUInt64LE(off + 72);
  const sum = fnv1a64(head.subarray(off + 16, off + 72));
  if (stored !== sum) return say('checksum mismatch');
  if (m.version !== META_VERSION) return say(`bbolt version ${m.version}, want ${META_VERSION}`);
  const ps = head.readUInt32LE(off + 24);
  if (ps !== pageSize) return say(`page size ${ps} differs from ${pageSize}`);
  return m;
}

/** True when the few bytes of a tiny file agree with the start of a bbolt meta page 0. */
function couldBeSnapshotStart(head: Buffer): boolean {
  const want: Array<[number, number]> = [[0, 0], [1, 0], [2, 0], [3, 0], [4, 0], [5, 0], [6, 0], [7, 0], [8, 0x04], [9, 0], [16, 0xed], [17, 0xda], [18, 0x0c], [19, 0xed]];
  return want.every(([i, v]) => i >= head.length || head[i] === v);
}

/**
 * The cheap raw checks over the first bytes of a snapshot of `size` bytes: magic, size alignment, meta
 * pages, and that the meta's page count fills the file exactly. `head` must hold the first
 * min(size, HEAD_BYTES) bytes, or at least up to meta page 1's checksum.
 */
function checkRawHead(head: Buffer, size: number): RawLayout | Rejected {
  if (size === 0) return reject('truncated', 'empty file');
  if (size < META_END) {
    return couldBeSnapshotStart(head)
      ? reject('truncated', `only ${size} bytes, too short for a snapshot`)
      : reject('format', 'not a bbolt snapshot (no bbolt magic at offset 16)');
  }

  let pageSize = 0;
  const magic0 = hasMagicAt(head, 0);
  const ps0 = head.readUInt32LE(24);
  if (magic0 && isPageSize(ps0)) pageSize = ps0;
  else {
    // Meta page 0 is damaged: find meta page 1 where its own page size field says it should be.
    for (let ps = MIN_PAGE; ps <= MAX_PAGE; ps *= 2) {
      if (head.length >= ps + META_END && hasMagicAt(head, ps) && head.readUInt32LE(ps + 24) === ps) {
        pageSize = ps;
        break;
      }
    }
  }
  if (pageSize === 0) {
    return magic0
      ? reject('corrupt', `meta page 0: invalid page size ${ps0} and no meta page 1 found`)
      : reject('format', 'not a bbolt snapshot (no bbolt magic in the meta pages)');
  }

  const rem = size % ALIGN;
  if (rem !== TRAILER) {
    return reject('truncated', `size ${size} is not a bbolt snapshot plus 32-byte hash (size % 512 = ${rem}, want 32)`);
  }
  const dbLen = size - TRAILER;
  if (dbLen < 2 * pageSize) return reject('truncated', `only ${dbLen} bytes before the hash, less than two ${pageSize}-byte meta pages`);
  if (head.length < pageSize + META_END) throw new Error(`internal: head of ${head.length} bytes too short for page size ${pageSize}`);

  const metas = [checkMeta(head, 0, pageSize), checkMeta(head, 1, pageSize)];
  const valid = metas.filter((m) => !m.problem);
  const problems = metas.flatMap((m) => (m.problem ? [m.problem] : []));
  if (valid.length === 0) {
    const versions = metas.filter((m) => m.hasMagic && m.version !== META_VERSION);
    if (versions.length === 2 && metas.every((m) => m.problem?.includes('version'))) {
      return reject('format', `unsupported bbolt version ${versions[0]!.version}`);
    }
    return reject('corrupt', `no valid meta page (${problems.join('; ')})`);
  }
  const best = valid.reduce((a, b) => (b.txid > a.txid ? b : a));
  const want = best.pgid * BigInt(pageSize);
  if (want !== BigInt(dbLen)) {
    const says = `bbolt meta page ${best.index} says ${best.pgid} pages × ${pageSize} = ${want} bytes`;
    return want > BigInt(dbLen)
      ? reject('truncated', `${says} but only ${dbLen} precede the hash`)
      : reject('format', `${says} but ${dbLen} precede the hash`);
  }
  return { pageSize, metaProblems: problems };
}

/**
 * Streams the bytes of one raw snapshot of known size: hashes the body (copying the hash state at the
 * body's end, so the same pass also yields the whole-file digest), keeps the 32-byte trailer and,
 * optionally, the head for the meta checks. Memory is fixed.
 */
class RawStream {
  readonly hash: Hash = createHash('sha256');
  failure: Rejected | undefined;
  private pos = 0;
  private bodyDigest: Buffer | undefined;
  private readonly trailer = Buffer.alloc(TRAILER);
  private readonly head: Buffer | undefined;
  private headLen = 0;
  private layout: RawLayout | undefined;

  constructor(
    readonly size: number,
    collectHead: boolean,
    layout?: RawLayout,
  ) {
    this.head = collectHead ? Buffer.allocUnsafe(Math.min(size, HEAD_BYTES)) : undefined;
    this.layout = layout;
  }

  update(buf: Buffer): void {
    if (this.failure) return;
    const bodyEnd = this.size - TRAILER;
    if (this.head && this.headLen < this.head.length) {
      const n = buf.copy(this.head, this.headLen, 0, Math.min(buf.length, this.head.length - this.headLen));
      this.headLen += n;
      if (this.headLen === this.head.length) this.checkHead();
      if (this.failure) return;
    }
    let body = 0;
    if (this.pos < bodyEnd) {
      body = Math.min(buf.length, bodyEnd - this.pos);
      this.hash.update(body === buf.length ? buf : buf.subarray(0, body));
      if (this.pos + body === bodyEnd) this.bodyDigest = this.hash.copy().digest();
    }
    if (body < buf.length) {
      const rest = buf.subarray(body);
      rest.copy(this.trailer, this.pos + body - bodyEnd);
      this.hash.update(rest);
    }
    this.pos += buf.length;
  }

  private checkHead(): void {
    const r = checkRawHead(this.head!, this.size);
    if ('ok' in r) this.failure = r;
    else this.layout = r;
  }

  /** Call once every byte was fed. */
  finish(): Rejected | { sha256: string } {
    if (this.failure) return this.failure;
    if (this.pos !== this.size) return reject('truncated', `snapshot ended at byte ${this.pos} of ${this.size}`);
    if (!this.layout) {
      this.checkHead();
      if (this.failure) return this.failure;
    }
    if (!this.bodyDigest || !this.bodyDigest.equals(this.trailer)) {
      const also = this.layout?.metaProblems.length ? `; ${this.layout.metaProblems.join('; ')}` : '';
      return reject('corrupt', `SHA-256 of the first ${this.size - TRAILER} bytes does not match the 32-byte trailer${also}`);
    }
    return { sha256: this.hash.digest('hex') };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reading.

/** Enough of the start for the raw checks: a few KiB, or 64 KiB when the page size is large or unknown. */
async function readHead(fh: FileHandle, size: number, first?: Buffer): Promise<Buffer> {
  const head = first ?? (await readAt(fh, 0, Math.min(size, QUICK_HEAD)));
  if (head.length < QUICK_HEAD) return head;
  if (hasMagicAt(head, 0)) {
    const ps = head.readUInt32LE(24);
    if (isPageSize(ps) && ps + META_END <= head.length) return head;
  }
  return readAt(fh, 0, Math.min(size, HEAD_BYTES));
}

class EndedEarly extends Error {}

/**
 * Yields [0, size) in order, in views of one of two reused buffers: the next read is in flight while the
 * caller works on the current view, which is valid until the caller asks for the next one.
 */
async function* chunks(fh: FileHandle, size: number, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  const bufs = [Buffer.allocUnsafe(Math.min(CHUNK, size)), Buffer.allocUnsafe(Math.min(CHUNK, Math.max(0, size - CHUNK)))];
  const fill = async (buf: Buffer, pos: number): Promise<number> => {
    const want = Math.min(buf.length, size - pos);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  };
  let pos = 0;
  let i = 0;
  let pending: Promise<number> | undefined = size > 0 ? fill(bufs[0]!, 0) : undefined;
  try {
    while (pending) {
      const got = await pending;
      pending = undefined;
      const want = Math.min(bufs[i]!.length, size - pos);
      const view = bufs[i]!.subarray(0, got);
      pos += got;
      if (got < want) {
        if (got > 0) yield view;
        throw new EndedEarly(`file ended at byte ${pos} of ${size} (shrank while being read)`);
      }
      signal?.throwIfAborted();
      i ^= 1;
      if (pos < size) pending = fill(bufs[i]!, pos);
      yield view;
    }
  } finally {
    // Never leave a read running into a buffer (or a handle) the caller is about to drop.
    if (pending) await pending.catch(() => 0);
  }
}

async function sizeChanged(fh: FileHandle, size: number): Promise<Rejected | undefined> {
  const now = (await fh.stat()).size;
  return now === size ? undefined : reject('truncated', `file changed size while being verified (${size} → ${now} bytes)`);
}

function formatMismatch(sniffed: SnapshotFormat | undefined, want: SnapshotFormat): Rejected | undefined {
  if (!sniffed || sniffed === want) return undefined;
  return reject('format', sniffed === 'zip' ? 'content is a zip, expected a raw snapshot' : 'content is a raw snapshot, expected a zip');
}

// ---------------------------------------------------------------------------------------------------------
// Zip.

const couldBeZipStart = (head: Buffer): boolean => {
  const n = Math.min(4, head.length);
  return head.subarray(0, n).equals(ZIP_LOCAL_SIG.subarray(0, n));
};

function entryBase(name: string): string {
  const i = name.lastIndexOf('/');
  return i < 0 ? name : name.slice(i + 1);
}

function listNames(entries: ZipEntry[]): string {
  const names = entries.slice(0, 3).map((e) => e.name || '""');
  return entries.length > 3 ? `${names.join(', ')}, …` : names.join(', ');
}

/**
 * The entry holding the snapshot: the one named like the zip without `.zip` (RKE: `/backup/<name>`, RKE2:
 * `<name>`), else the only entry that is not an `.rkestate` or a directory.
 */
export function pickSnapshotEntry(entries: ZipEntry[], zipName?: string): ZipEntry | Rejected {
  if (zipName) {
    const want = basename(zipName).replace(/\.zip$/i, '');
    const named = entries.filter((e) => !e.name.endsWith('/') && entryBase(e.name) === want);
    if (named.length === 1) return named[0]!;
  }
  const candidates = entries.filter(isCandidate);
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length === 0) return reject('format', `no snapshot entry in zip (entries: ${listNames(entries) || 'none'})`);
  return reject('format', `cannot tell which of ${candidates.length} zip entries is the snapshot (${listNames(candidates)})`);
}

const isCandidate = (e: ZipEntry): boolean => !e.name.endsWith('/') && !e.name.endsWith('.rkestate');

function checkEntries(entries: ZipEntry[]): Rejected | undefined {
  for (const e of entries) {
    if (e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) return reject('format', `zip entry ${e.name} is encrypted`);
    if (e.method !== METHOD_STORE && e.method !== METHOD_DEFLATE) {
      return reject('format', `zip entry ${e.name} uses unsupported compression method ${e.method}`);
    }
    if (e.method === METHOD_STORE && e.compressedSize !== e.uncompressedSize) {
      return reject('format', `stored zip entry ${e.name} has ${e.compressedSize} bytes but declares ${e.uncompressedSize}`);
    }
  }
  return undefined;
}

interface OpenedZip {
  dir: ZipDirectory;
  /** Undefined when no name was given and the choice is ambiguous (quickCheck only). */
  snapshot: ZipEntry | undefined;
}

async function openZip(fh: FileHandle, size: number, name: string | undefined, needSnapshot: boolean): Promise<OpenedZip | Rejected> {
  if (size === 0) return reject('truncated', 'empty file');
  const head = await readAt(fh, 0, Math.min(size, 64));
  if (!couldBeZipStart(head)) {
    return formatMismatch(sniffFormat(head), 'zip') ?? reject('format', 'not a zip (no local header signature at offset 0)');
  }
  try {
    const dir = await readZipDirectory(fh, size);
    await readLocalHeaders(fh, dir);
    const bad = checkEntries(dir.entries);
    if (bad) return bad;
    const picked = pickSnapshotEntry(dir.entries, name);
    if (!('ok' in picked)) return { dir, snapshot: picked };
    // quickCheck knows no name: several candidates only matter to the full verification, which has it.
    if (!needSnapshot && dir.entries.filter(isCandidate).length > 1) return { dir, snapshot: undefined };
    return picked;
  } catch (err) {
    if (err instanceof ZipError) return reject(err.reason, err.message);
    throw err;
  }
}

/** Inflates (or passes through) one entry's data, checking size and CRC, feeding the snapshot checker. */
class EntrySink {
  failure: Rejected | undefined;
  private crc = 0;
  private produced = 0;
  private readonly inflater: zlib.InflateRaw | undefined;
  private readonly done: Promise<void> | undefined;

  constructor(
    readonly entry: ZipEntry,
    private readonly raw: RawStream | undefined,
  ) {
    if (entry.method !== METHOD_DEFLATE) return;
    const inflater = zlib.createInflateRaw({ chunkSize: INFLATE_CHUNK });
    this.inflater = inflater;
    inflater.on('data', (buf: Buffer) => this.output(buf));
    this.done = new Promise<void>((resolve) => {
      inflater.once('end', resolve);
      inflater.once('error', (err: NodeJS.ErrnoException) => {
        // Every declared compressed byte was there (the end records prove the zip complete), so a stream
        // that wants more is damaged, not unfinished.
        this.fail(
          err.code === 'Z_BUF_ERROR'
            ? reject('corrupt', `zip entry ${entry.name}: deflate stream does not end within its ${entry.compressedSize} bytes`)
            : reject('corrupt', `zip entry ${entry.name}: invalid deflate data (${err.message})`),
        );
        resolve();
      });
    });
  }

  private fail(r: Rejected): void {
    this.failure ??= r;
  }

  private output(buf: Buffer): void {
    if (this.failure) return;
    this.produced += buf.length;
    if (this.produced > this.entry.uncompressedSize) {
      this.fail(reject('corrupt', `zip entry ${this.entry.name} inflates to more than its declared ${this.entry.uncompressedSize} bytes`));
      return;
    }
    this.crc = zlib.crc32(buf, this.crc);
    // The snapshot's own verdict waits for finish(): the zip's size and CRC are judged first.
    this.raw?.update(buf);
  }

  /** Resolves once `buf` is consumed, so the caller may reuse it. */
  write(buf: Buffer): Promise<void> | undefined {
    if (this.failure) return undefined;
    if (!this.inflater) {
      this.output(buf);
      return undefined;
    }
    const inflater = this.inflater;
    // zlib drops the write callback when it fails mid-chunk; `done` settles on that error.
    return Promise.race([new Promise<void>((resolve) => inflater.write(buf, () => resolve())), this.done!]);
  }

  async finish(): Promise<Rejected | undefined> {
    if (this.inflater && !this.failure) {
      this.inflater.end();
      await this.done;
    }
    if (this.failure) return this.failure;
    const e = this.entry;
    if (this.inflater && this.inflater.bytesWritten < e.compressedSize) {
      return reject('corrupt', `zip entry ${e.name}: ${e.compressedSize - this.inflater.bytesWritten} bytes of data after the end of its deflate stream`);
    }
    const short = this.produced < e.uncompressedSize;
    // A damaged deflate stream can end cleanly but early: the CRC tells damage from a short entry.
    if (this.crc !== e.crc32) {
      const held = short ? ` (holds ${this.produced} of ${e.uncompressedSize} bytes)` : '';
      return reject('corrupt', `zip entry ${e.name}: CRC-32 ${hex8(this.crc)} does not match the declared ${hex8(e.crc32)}${held}`);
    }
    if (short) return reject('truncated', `zip entry ${e.name} holds ${this.produced} bytes, declares ${e.uncompressedSize}`);
    if (this.raw) {
      const r = this.raw.finish();
      if ('ok' in r) return prefixed(e, r);
    }
    return undefined;
  }

  destroy(): void {
    this.inflater?.destroy();
  }
}

const prefixed = (e: ZipEntry, r: Rejected): Rejected => reject(r.reason, `zip entry ${e.name}: ${r.detail}`);

async function verifyZip(fh: FileHandle, size: number, name: string | undefined, signal: AbortSignal | undefined): Promise<Verdict> {
  const opened = await openZip(fh, size, name, true);
  if ('ok' in opened) return opened;
  const { dir } = opened;
  const snapshot = opened.snapshot!;
  const sinks = [...dir.entries]
    .sort((a, b) => a.dataOffset - b.dataOffset)
    .map((e) => new EntrySink(e, e === snapshot ? new RawStream(e.uncompressedSize, true) : undefined));
  const fileHash = createHash('sha256');
  let next = 0; // first sink whose data has not been fully fed
  let pos = 0;
  try {
    for await (const chunk of chunks(fh, size, signal)) {
      const end = pos + chunk.length;
      const writes: Promise<void>[] = [];
      for (let k = next; k < sinks.length; k++) {
        const e = sinks[k]!.entry;
        if (e.dataOffset >= end) break;
        const from = Math.max(e.dataOffset, pos);
        const to = Math.min(e.dataOffset + e.compressedSize, end);
        if (to > from) {
          const w = sinks[k]!.write(chunk.subarray(from - pos, to - pos));
          if (w) writes.push(w);
        }
      }
      // Inflate runs on the thread pool while this thread hashes the same bytes.
      fileHash.update(chunk);
      await Promise.all(writes);
      while (next < sinks.length && sinks[next]!.entry.dataOffset + sinks[next]!.entry.compressedSize <= end) {
        const bad = await sinks[next]!.finish();
        if (bad) return bad;
        next++;
      }
      for (let k = next; k < sinks.length; k++) {
        const bad = sinks[k]!.failure;
        if (bad) return bad;
      }
      pos = end;
    }
    for (; next < sinks.length; next++) {
      const bad = await sinks[next]!.finish();
      if (bad) return bad;
    }
  } catch (err) {
    if (err instanceof EndedEarly) return reject('truncated', err.message);
    throw err;
  } finally {
    for (const s of sinks) s.destroy();
  }
  const changed = await sizeChanged(fh, size);
  if (changed) return changed;
  return { ok: true, format: 'zip', size, sha256: fileHash.digest('hex'), dbSize: snapshot.uncompressedSize, entry: snapshot.name };
}

// ---------------------------------------------------------------------------------------------------------

async function verifyRaw(fh: FileHandle, size: number, head: Buffer, signal: AbortSignal | undefined): Promise<Verdict> {
  const mismatch = formatMismatch(sniffFormat(head), 'raw');
  if (mismatch) return mismatch;
  const layout = checkRawHead(head, size);
  if ('ok' in layout) return layout;
  const raw = new RawStream(size, false, layout);
  try {
    for await (const chunk of chunks(fh, size, signal)) raw.update(chunk);
  } catch (err) {
    if (err instanceof EndedEarly) return reject('truncated', err.message);
    throw err;
  }
  const r = raw.finish();
  if ('ok' in r) return r;
  const changed = await sizeChanged(fh, size);
  if (changed) return changed;
  return { ok: true, format: 'raw', size, sha256: r.sha256, dbSize: size };
}

/**
 * Cheap completeness check, a few KiB of reads: raw → size alignment, meta pages, page count × page size;
 * zip → end records, central directory, local headers. Undefined when the file may be complete.
 */
export async function quickCheck(fh: FileHandle, size: number, format: SnapshotFormat): Promise<Rejected | undefined> {
  assertSize(size);
  if (format === 'zip') {
    const opened = await openZip(fh, size, undefined, false);
    return 'ok' in opened ? opened : undefined;
  }
  const head = await readHead(fh, size);
  const mismatch = formatMismatch(sniffFormat(head), 'raw');
  if (mismatch) return mismatch;
  const layout = checkRawHead(head, size);
  return 'ok' in layout ? layout : undefined;
}

/**
 * Full verification of the first `size` bytes of an open file, in one sequential pass. The format comes from
 * `opts.format`, else the content, else the name. Throws only on I/O errors and on abort (the signal's
 * reason); every problem with the content is a Rejected verdict.
 */
export async function verifyFile(fh: FileHandle, size: number, opts: VerifyOptions = {}): Promise<Verdict> {
  assertSize(size);
  opts.signal?.throwIfAborted();
  const first = await readAt(fh, 0, Math.min(size, QUICK_HEAD));
  const format = opts.format ?? sniffFormat(first) ?? (opts.name !== undefined ? formatFromName(opts.name) : 'raw');
  if (format === 'zip') return verifyZip(fh, size, opts.name, opts.signal);
  return verifyRaw(fh, size, await readHead(fh, size, first), opts.signal);
}

/**
 * Opens `path` without following a final symlink and without blocking on a FIFO, refuses anything but a
 * regular file, verifies it, closes it. I/O errors (ENOENT, EACCES, EIO) throw.
 */
export async function verifyPath(path: string, opts: { format?: SnapshotFormat; signal?: AbortSignal } = {}): Promise<Verdict> {
  let opened;
  try {
    opened = await openRegular(path);
  } catch (err) {
    if (err instanceof NotRegularError) return reject('format', err.message);
    throw err;
  }
  const { fh, st } = opened;
  try {
    const o: VerifyOptions = { name: basename(path) };
    if (opts.format) o.format = opts.format;
    if (opts.signal) o.signal = opts.signal;
    return await verifyFile(fh, st.size, o);
  } finally {
    await fh.close();
  }
}

function assertSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new TypeError(`size must be a non-negative integer, got ${size}`);
}
