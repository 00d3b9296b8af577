// Deep check of an etcd snapshot body (the bbolt database before the 32-byte SHA-256 trailer), in one
// sequential pass over its bytes with bounded memory: a body whose pages are broken but whose trailer was
// recomputed passes the trailer and meta checks, and `etcdctl snapshot status` panics on it.
//
// While the pages stream past, every page is parsed on its own (its header, its elements, its keys) and a few
// compact facts are kept per page (see PageTable). Only at finish() is the tree resolved from the root bucket
// the meta names: a page is judged when the tree reaches it, because free pages legitimately hold stale or
// half-overwritten copies and overflow pages hold value bytes.
//
// What a pass proves, for every page the tree uses: its header names its own position; its type is branch or
// leaf; its run lies inside the file; its element table fits and has the layout bbolt writes; keys are
// non-empty, at most 32 KiB and strictly increasing within the page; every branch key equals the first key of
// the child it points to (compared by a 32-bit hash of the whole key); the last key of each leaf is below the
// first key of the next leaf of the same bucket (compared on 16-byte prefixes and lengths: proven whenever
// the keys differ within 16 bytes or one is a prefix of the other, which covers etcd's 17/18-byte revision
// keys; longer keys that agree on 16 bytes are not ordered by this check); no page is used twice, none is
// its own ancestor, none is on the freelist; nested buckets (own pages or inline) have valid roots and pages;
// the freelist page, when there is one, lists each page at most once, all inside the file.
//
// Memory: 52 bytes per page (60 with the hash) for the page table, 8 bytes per branch element (about one
// per page in bbolt files; bounded at 4 per page), 3 bits per page at finish, the bucket references and fact
// candidates (bounded counts), plus at most 64 page runs being parsed at once (each: its element table, at
// most 1 MiB, and two 32 KiB key buffers). Measured on real etcd snapshots of 1.1 GiB (270k-290k pages):
// the finished checker retains 61-75 bytes per page, 16-21 MiB; an 8 GiB database of 4 KiB pages (2M pages)
// needs ~120-150 MiB.
import {
  ElementStore,
  FLAG_BRANCH,
  FLAG_FREELIST,
  FLAG_LEAF,
  FLAG_META,
  FreelistParser,
  PREFIX,
  fmtPgid,
  type BucketRef,
  type Cand,
  type NodeEnv,
} from './bbolt-format.js';
import { NodeParser } from './bbolt-node.js';
import { Corrupt, K_BAD, K_BAD_FLAGS, K_BAD_ID, K_BAD_OVERFLOW, K_BRANCH, K_FREELIST, K_LEAF, K_META, K_ZERO, PageTable, walk, type DeepFacts } from './bbolt-tree.js';

export type { BucketFacts, DeepFacts } from './bbolt-tree.js';

export type DeepResult = { ok: true; facts: DeepFacts } | { ok: false; reason: 'corrupt'; detail: string };

export interface BboltCheckerOptions {
  /**
   * Compute etcdctl's status hash (CRC-32C of every top-level key and value). Default true. It is a fact,
   * not a check — the SHA-256 trailer already covers the bytes — and adds 0.5-0.7 CPU s/GiB (JS CRC-32C).
   */
  hash?: boolean;
  /**
   * Bytes of the body, when known (file size − 32): if the meta agrees, the page table is allocated once at
   * its final size instead of growing as pages arrive. Without it (or if they disagree) it grows by doubling.
   */
  bodySize?: number;
}

const META_MAGIC = 0xed0cdaed;
const META_VERSION = 2;
const MIN_PAGE = 512;
const MAX_PAGE = 65536;
const HEAD_MAX = 2 * MAX_PAGE;
const MAX_PAGES = 0xffffffff; // page ids are kept in 32 bits: 16 TiB of 4 KiB pages
const MAX_ACTIVE = 64; // page runs parsed at once (a run overlaps others only when stale headers claim overflow)
const MAX_DETAILS = 4096;
const MAX_BUCKET_REFS = 1 << 17;
const MAX_CANDS = 1 << 16;

interface Meta {
  index: number;
  pageSize: number;
  root: number;
  freelist: number; // -1: no freelist page
  pages: number;
  txid: bigint;
}

interface Active {
  pgid: number;
  next: number; // absolute offset of the next byte the parser wants
  end: number; // absolute offset past its run
  parser: NodeParser | FreelistParser;
}

function fnv1a64(b: Buffer, s: number, e: number): bigint {
  let h = 0xcbf29ce484222325n;
  for (let i = s; i < e; i++) h = BigInt.asUintN(64, (h ^ BigInt(b[i]!)) * 0x100000001b3n);
  return h;
}

/** The meta at `off`, or a reason it is not valid (bbolt's meta.validate: magic, version, checksum). */
function readMeta(b: Buffer, off: number, index: number): Meta | string {
  if (b.length < off + 80) return `meta page ${index}: cut short`;
  if (b.readUInt32LE(off + 16) !== META_MAGIC) return `meta page ${index}: bad magic`;
  if (b.readUInt32LE(off + 20) !== META_VERSION) return `meta page ${index}: version ${b.readUInt32LE(off + 20)}`;
  if (b.readBigUInt64LE(off + 72) !== fnv1a64(b, off + 16, off + 72)) return `meta page ${index}: checksum mismatch`;
  const pageSize = b.readUInt32LE(off + 24);
  if (pageSize < MIN_PAGE || pageSize > MAX_PAGE || (pageSize & (pageSize - 1)) !== 0) return `meta page ${index}: page size ${pageSize}`;
  const root = b.readBigUInt64LE(off + 32);
  const freelist = b.readBigUInt64LE(off + 48);
  const pages = b.readBigUInt64LE(off + 56);
  if (pages < 3n || pages > BigInt(MAX_PAGES)) return `meta page ${index}: ${pages} pages`;
  if (root < 2n || root >= pages) return `meta page ${index}: root page ${root} outside 2..${pages - 1n}`;
  const none = freelist === 0xffffffffffffffffn;
  if (!none && (freelist < 2n || freelist >= pages)) return `meta page ${index}: freelist page ${freelist} outside 2..${pages - 1n}`;
  return { index, pageSize, root: Number(root), freelist: none ? -1 : Number(freelist), pages: Number(pages), txid: b.readBigUInt64LE(off + 64) };
}

export class BboltChecker {
  private failure: DeepResult | undefined;
  private readonly hashing: boolean;
  private bytes = 0;
  private head: Buffer | undefined = Buffer.allocUnsafe(HEAD_MAX);
  private headLen = 0;
  private meta: Meta | undefined;
  private table: PageTable | undefined;
  private elements: ElementStore | undefined;
  private env: NodeEnv | undefined;
  private pageSize = 0;
  private carry: Buffer = Buffer.alloc(0);
  private carryLen = 0;
  private pos = 0; // absolute offset of the next body byte to process as pages
  private nextPage = 2;
  private active: Active[] = [];
  private spare: NodeParser | undefined; // a finished parser, reused for the next page
  private readonly details = new Map<number, string>();
  private readonly buckets = new Map<number, BucketRef[]>();
  private readonly cands = new Map<number, Cand[]>();
  private taken = { bucket: 0, cand: 0 };
  private freeIds = new Uint32Array(0);
  private freeLen = 0;
  private freelistError: string | undefined;
  private freelistDone = false;

  private readonly bodySize: number | undefined;

  constructor(opts: BboltCheckerOptions = {}) {
    this.hashing = opts.hash ?? true;
    this.bodySize = opts.bodySize;
  }

  /** The next bytes of the body, in file order. Never throws: a problem is kept for finish(). */
  update(chunk: Buffer): void {
    if (this.failure) return;
    try {
      this.bytes += chunk.length;
      let rest = chunk;
      if (!this.meta) {
        const head = this.head!;
        const n = Math.min(chunk.length, head.length - this.headLen);
        chunk.copy(head, this.headLen, 0, n);
        this.headLen += n;
        rest = chunk.subarray(n);
        if (!this.resolveHead(this.headLen === head.length)) return;
      }
      if (rest.length > 0) this.data(rest);
    } catch (err) {
      this.failure = { ok: false, reason: 'corrupt', detail: `checker failed near byte ${this.bytes}: ${(err as Error).message}` };
    }
  }

  /** The verdict, once every byte of the body was fed. */
  finish(): DeepResult {
    if (this.failure) return this.failure;
    try {
      if (!this.meta && !this.resolveHead(true)) return this.failure ?? this.corrupt('no valid meta page');
      const meta = this.meta!;
      const want = meta.pages * meta.pageSize;
      if (this.bytes !== want) {
        return this.corrupt(`body is ${this.bytes} bytes; meta page ${meta.index} says ${meta.pages} pages × ${meta.pageSize} = ${want}`);
      }
      let freelist: { pgid: number; ids: Uint32Array; length: number } | undefined;
      if (meta.freelist >= 0) {
        const t = this.table!;
        const k = t.kind[meta.freelist];
        if (k !== K_FREELIST) return this.corrupt(`freelist page ${meta.freelist}: ${k === K_ZERO ? 'the page header is all zeros' : 'not a valid freelist page'}`);
        if (this.freelistError !== undefined || !this.freelistDone) return this.corrupt(`freelist page ${meta.freelist}: ${this.freelistError ?? 'cut short'}`);
        freelist = { pgid: meta.freelist, ids: this.freeIds, length: this.freeLen };
      }
      const facts = walk({
        table: this.table!,
        elements: this.elements!,
        pageSize: meta.pageSize,
        root: meta.root,
        freelist,
        buckets: this.buckets,
        cands: this.cands,
        details: this.details,
      });
      return { ok: true, facts };
    } catch (err) {
      if (err instanceof Corrupt) return this.corrupt(err.message);
      return this.corrupt(`checker failed: ${(err as Error).message}`);
    }
  }

  private corrupt(detail: string): DeepResult {
    this.failure = { ok: false, reason: 'corrupt', detail };
    return this.failure;
  }

  /**
   * Picks the meta as bbolt does (the valid one with the higher txid) once enough of the head is here.
   * The page size comes from meta 0; if meta 0 is broken, meta 1 is looked for at each page size.
   */
  private resolveHead(final: boolean): boolean {
    const head = this.head!.subarray(0, this.headLen);
    const m0 = readMeta(head, 0, 0);
    let ps = typeof m0 === 'string' ? 0 : m0.pageSize;
    if (ps > 0 && head.length < 2 * ps && !final) return false;
    if (ps === 0 && !final) return false;
    const found: Meta[] = typeof m0 === 'string' ? [] : [m0];
    const problems: string[] = typeof m0 === 'string' ? [m0] : [];
    const sizes = ps > 0 ? [ps] : [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
    for (const size of sizes) {
      const m1 = readMeta(head, size, 1);
      if (typeof m1 !== 'string' && m1.pageSize === size) {
        found.push(m1);
        break;
      }
      // with meta 0 broken, only a page that has the magic where a meta 1 would be is worth naming
      const magic = head.length >= size + 20 && head.readUInt32LE(size + 16) === META_MAGIC;
      if (ps > 0 || magic) problems.push(typeof m1 === 'string' ? m1 : `meta page 1: page size ${m1.pageSize}, meta page 0 says ${ps}`);
    }
    if (found.length === 0) {
      this.corrupt(`no valid meta page (${problems.join('; ') || 'meta page 1 not found'})`);
      return false;
    }
    const meta = found.reduce((a, b) => (b.txid > a.txid ? b : a));
    ps = meta.pageSize;
    if (head.length < 2 * ps) {
      this.corrupt(`only ${head.length} bytes, less than two ${ps}-byte meta pages`);
      return false;
    }
    if (found.some((m) => m.pageSize !== ps)) {
      this.corrupt('meta pages disagree on the page size');
      return false;
    }
    this.meta = meta;
    this.pageSize = ps;
    this.carry = Buffer.allocUnsafe(ps);
    this.pos = 2 * ps;
    const table = new PageTable(meta.pages, this.hashing);
    this.table = table;
    this.elements = new ElementStore(Math.max(1 << 20, 4 * meta.pages));
    const taken = this.taken;
    this.env = {
      pages: meta.pages,
      pageSize: ps,
      hashing: this.hashing,
      elements: this.elements,
      take: (what) => (what === 'bucket' ? ++taken.bucket <= MAX_BUCKET_REFS : ++taken.cand <= MAX_CANDS),
    };
    table.ensure(this.bodySize === meta.pages * ps ? meta.pages : 2);
    table.kind[0] = K_META;
    table.kind[1] = K_META;
    this.head = undefined;
    if (head.length > 2 * ps) this.data(head.subarray(2 * ps));
    return true;
  }

  /** Body bytes after the meta pages, cut into whole pages (a page split between chunks is copied once). */
  private data(chunk: Buffer): void {
    const ps = this.pageSize;
    const end = this.meta!.pages * ps;
    const e = Math.min(chunk.length, Math.max(0, end - this.pos)); // bytes past the high-water mark: counted, not parsed
    let s = 0;
    this.pos += e;
    if (this.carryLen > 0) {
      const n = Math.min(ps - this.carryLen, e);
      chunk.copy(this.carry, this.carryLen, 0, n);
      this.carryLen += n;
      s = n;
      if (this.carryLen < ps) return;
      this.span(this.carry, 0, ps);
      this.carryLen = 0;
    }
    const whole = Math.floor((e - s) / ps) * ps;
    if (whole > 0) this.span(chunk, s, s + whole);
    s += whole;
    if (s < e) {
      chunk.copy(this.carry, 0, s, e);
      this.carryLen = e - s;
    }
  }

  /** Whole pages buf[s, e), starting at page nextPage. */
  private span(buf: Buffer, s: number, e: number): void {
    const ps = this.pageSize;
    const first = this.nextPage;
    const abs = first * ps;
    const absEnd = abs + (e - s);
    for (let k = 0; k < this.active.length; ) {
      const a = this.active[k]!;
      const to = Math.min(a.end, absEnd);
      const done = a.parser.feed(buf, s + (a.next - abs), s + (to - abs));
      a.next = to;
      if (done || to === a.end) {
        this.settle(a.pgid, a.parser);
        this.active[k] = this.active[this.active.length - 1]!;
        this.active.pop();
      } else k++;
    }
    const n = (e - s) / ps;
    this.table!.ensure(first + n);
    for (let i = 0; i < n; i++) this.page(first + i, buf, s + i * ps, e, abs + i * ps);
    this.nextPage = first + n;
  }

  /** The page starting at buf[o] (absolute offset `at`); the buffer holds its bytes up to `e`. */
  private page(p: number, buf: Buffer, o: number, e: number, at: number): void {
    const t = this.table!;
    const lo = buf.readUInt32LE(o);
    const hi = buf.readUInt32LE(o + 4);
    const flags = buf.readUInt16LE(o + 8);
    const count = buf.readUInt16LE(o + 10);
    const overflow = buf.readUInt32LE(o + 12);
    if (lo !== p || hi !== 0) {
      if ((lo | hi | flags | count | overflow) === 0) t.kind[p] = K_ZERO;
      else {
        t.kind[p] = K_BAD_ID;
        t.aux[p] = lo;
      }
      return;
    }
    if (overflow >= this.meta!.pages - p) {
      t.kind[p] = K_BAD_OVERFLOW;
      t.aux[p] = overflow;
      return;
    }
    t.overflow[p] = overflow;
    const runLen = (overflow + 1) * this.pageSize;
    let parser: NodeParser | FreelistParser;
    if (flags === FLAG_BRANCH || flags === FLAG_LEAF) {
      const np = this.spare ?? new NodeParser(this.env!);
      this.spare = undefined;
      parser = np.reset(flags === FLAG_BRANCH, count, runLen, false).target(t.firstPre, t.lastPre, p * PREFIX);
    }
    else if (flags === FLAG_FREELIST) {
      t.kind[p] = K_FREELIST;
      if (p !== this.meta!.freelist) return;
      parser = new FreelistParser(count, runLen, (idLo, idHi) => this.freeId(idLo, idHi));
    } else {
      t.kind[p] = flags === FLAG_META ? K_META : K_BAD_FLAGS;
      t.aux[p] = flags;
      return;
    }
    if (this.active.length >= MAX_ACTIVE) return this.bad(p, `more than ${MAX_ACTIVE} overlapping page runs in flight`);
    const to = Math.min(at + runLen, at + (e - o));
    if (parser.feed(buf, o, o + (to - at)) || to === at + runLen) this.settle(p, parser);
    else this.active.push({ pgid: p, next: to, end: at + runLen, parser });
  }

  private bad(p: number, detail: string): void {
    this.table!.kind[p] = K_BAD;
    if (this.details.size < MAX_DETAILS) this.details.set(p, detail);
  }

  private freeId(lo: number, hi: number): void {
    if (this.freelistError !== undefined) return;
    if (hi !== 0 || lo >= this.meta!.pages || lo < 2) {
      this.freelistError = `lists page ${fmtPgid(lo, hi)}, outside 2..${this.meta!.pages - 1}`;
      return;
    }
    if (this.freeLen === this.freeIds.length) {
      const grown = new Uint32Array(Math.max(1024, this.freeIds.length * 2));
      grown.set(this.freeIds);
      this.freeIds = grown;
    }
    this.freeIds[this.freeLen++] = lo;
  }

  /** Records what a finished parser found for page p. */
  private settle(p: number, parser: NodeParser | FreelistParser): void {
    if (parser instanceof FreelistParser) {
      this.freelistDone = true;
      if (parser.error !== undefined) this.freelistError ??= parser.error;
      return;
    }
    this.spare = parser;
    if (parser.error !== undefined) return this.bad(p, parser.error);
    const t = this.table!;
    t.kind[p] = parser.branch ? K_BRANCH : K_LEAF;
    t.flags[p] = parser.flags;
    t.count[p] = parser.count;
    t.firstHash[p] = parser.firstHash;
    t.firstLen[p] = parser.firstLen;
    t.lastLen[p] = parser.lastLen;
    if (parser.branch) t.aux[p] = parser.elemBase;
    else if (this.hashing) {
      t.crc[p] = parser.crc;
      t.crcLen[p] = parser.crcLen;
    }
    if (parser.buckets) this.buckets.set(p, parser.buckets);
    if (parser.cands) this.cands.set(p, parser.cands);
    if (parser.firstPre !== t.firstPre) {
      // the table grew while this run was in flight: its prefixes went to the old arrays
      const o = p * PREFIX;
      t.firstPre.set(parser.firstPre.subarray(o, o + PREFIX), o);
      t.lastPre.set(parser.lastPre.subarray(o, o + PREFIX), o);
    }
  }
}

/** Checks a whole snapshot held in memory: the body, or the body plus its 32-byte trailer (ignored). */
export function checkBboltBuffer(buf: Buffer, opts: BboltCheckerOptions = {}): DeepResult {
  const body = buf.length % 512 === 32 ? buf.subarray(0, buf.length - 32) : buf;
  const c = new BboltChecker({ bodySize: body.length, ...opts });
  c.update(body);
  return c.finish();
}
