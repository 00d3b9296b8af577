// A raw etcd snapshot: a bbolt database followed by the SHA-256 of everything before it. The cheap checks
// (size alignment, meta pages, page count) need only the first bytes; the hash needs every byte, fed in order.
import { createHash, type Hash } from 'node:crypto';
import { META_MAGIC, META_PAGE_FLAG, reject, type DbInfo, type Rejected } from './format.js';

export const TRAILER = 32;
const ALIGN = 512;
const META_VERSION = 2;
const META_END = 80; // page header (16) + meta fields up to and including the checksum
// bbolt uses the OS page size: 4 KiB on x86, up to 64 KiB on arm64/ppc64 kernels.
const MIN_PAGE = 512;
const MAX_PAGE = 65536;
/** Enough of the start for the raw checks whatever the page size. */
export const HEAD_BYTES = MAX_PAGE + META_END;
/** Enough of the start for the raw checks when pages are 4 KiB (a second read fetches more if not). */
export const QUICK_HEAD = 8192;

/**
 * A check of the database's pages, fed the bytes before the trailer in order (the deep bbolt check). It
 * never throws: a broken file is a reason.
 */
export interface BodyCheck {
  update(buf: Buffer): void;
  finish(): { ok: true; db: DbInfo } | { ok: false; detail: string };
}

interface MetaCheck {
  index: 0 | 1;
  hasMagic: boolean;
  version: number;
  pgid: bigint;
  txid: bigint;
  problem?: string;
}

export interface RawLayout {
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
  const want: Array<[number, number]> = [
    [0, 0],
    [1, 0],
    [2, 0],
    [3, 0],
    [4, 0],
    [5, 0],
    [6, 0],
    [7, 0],
    [8, 0x04],
    [9, 0],
    [16, 0xed],
    [17, 0xda],
    [18, 0x0c],
    [19, 0xed],
  ];
  return want.every(([i, v]) => i >= head.length || head[i] === v);
}

/**
 * The cheap raw checks over the first bytes of a snapshot of `size` bytes: magic, size alignment, meta
 * pages, and that the meta's page count fills the file exactly. `head` must hold the first
 * min(size, HEAD_BYTES) bytes, or at least up to meta page 1's checksum.
 */
export function checkRawHead(head: Buffer, size: number): RawLayout | Rejected {
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
    return want > BigInt(dbLen) ? reject('truncated', `${says} but only ${dbLen} precede the hash`) : reject('format', `${says} but ${dbLen} precede the hash`);
  }
  return { pageSize, metaProblems: problems };
}

/**
 * Streams the bytes of one raw snapshot of known size: hashes the body (copying the hash state at the
 * body's end, so the same pass also yields the whole-file digest), keeps the 32-byte trailer and,
 * optionally, the head for the meta checks. Memory is fixed.
 */
export class RawStream {
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
    private readonly deep?: BodyCheck,
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
      const part = body === buf.length ? buf : buf.subarray(0, body);
      this.hash.update(part);
      this.deep?.update(part);
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
  finish(): Rejected | { sha256: string; db?: DbInfo } {
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
    // The trailer proves the bytes are what etcd wrote; the deep check, that what etcd wrote is a sound database.
    const deep = this.deep?.finish();
    if (deep && !deep.ok) return reject('corrupt', `bbolt pages: ${deep.detail}`);
    return { sha256: this.hash.digest('hex'), ...(deep?.ok ? { db: deep.db } : {}) };
  }
}
