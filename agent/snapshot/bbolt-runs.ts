// The body's pages after the two meta pages, as they stream past: each page's header is read where the page
// starts, its run (the page and its overflow pages) handed to a node or freelist parser, and what the parser
// found kept in the page table once the run is done. A run usually ends within the chunk it starts in; one
// that does not stays in flight and is fed from the following chunks.
import { ElementStore, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF, FLAG_META, PREFIX, type BucketRef, type Cand, type NodeEnv } from './bbolt-format.js';
import { FreelistIds, FreelistParser } from './bbolt-freelist.js';
import type { Meta } from './bbolt-meta.js';
import { NodeParser } from './bbolt-node.js';
import { K_BAD, K_BAD_FLAGS, K_BAD_ID, K_BAD_OVERFLOW, K_BRANCH, K_FREELIST, K_LEAF, K_META, K_ZERO, PageTable, SLOT_MASK } from './bbolt-page-table.js';
import { Corrupt, walk, type DeepFacts } from './bbolt-tree.js';

const MAX_ACTIVE = 64; // page runs parsed at once (a run overlaps others only when stale headers claim overflow)
const MAX_DETAILS = 4096;
const MAX_BUCKET_REFS = 1 << 17;
const MAX_CANDS = 1 << 16;

interface Active {
  pgid: number;
  slot: number;
  next: number; // absolute offset of the next byte the parser wants
  end: number; // absolute offset past its run
  parser: NodeParser | FreelistParser;
}

export class PageRuns {
  private readonly table: PageTable;
  private readonly elements: ElementStore;
  private readonly env: NodeEnv;
  private readonly pageSize: number;
  private readonly carry: Buffer;
  private carryLen = 0;
  private pos: number; // absolute offset of the next body byte to process as pages
  private nextPage = 2;
  private active: Active[] = [];
  private spare: NodeParser | undefined; // a finished parser, reused for the next page
  private readonly details = new Map<number, string>();
  private readonly buckets = new Map<number, BucketRef[]>();
  private readonly cands = new Map<number, Cand[]>();
  private taken = { bucket: 0, cand: 0 };
  private readonly free: FreelistIds;

  /** `bodySize`, when it agrees with the meta, sizes the page table once instead of growing it. */
  constructor(
    private readonly meta: Meta,
    private readonly hashing: boolean,
    bodySize: number | undefined,
  ) {
    const ps = meta.pageSize;
    this.pageSize = ps;
    this.carry = Buffer.allocUnsafe(ps);
    this.pos = 2 * ps;
    this.free = new FreelistIds(meta.pages);
    const table = new PageTable(meta.pages, hashing);
    this.table = table;
    this.elements = new ElementStore(Math.max(1 << 20, 4 * meta.pages));
    const taken = this.taken;
    this.env = {
      pages: meta.pages,
      pageSize: ps,
      hashing,
      elements: this.elements,
      take: (what) => (what === 'bucket' ? ++taken.bucket <= MAX_BUCKET_REFS : ++taken.cand <= MAX_CANDS),
    };
    table.ensure(bodySize === meta.pages * ps ? meta.pages : 2);
    table.kind[0] = K_META;
    table.kind[1] = K_META;
  }

  /** Body bytes after the meta pages, cut into whole pages (a page split between chunks is copied once). */
  data(chunk: Buffer): void {
    const ps = this.pageSize;
    const end = this.meta.pages * ps;
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

  /** Once every page was fed: the freelist page checked, then the tree walked. Throws Corrupt. */
  finish(): DeepFacts {
    const meta = this.meta;
    this.table.seal();
    let freelist: { pgid: number; ids: Uint32Array; length: number } | undefined;
    if (meta.freelist >= 0) {
      const k = this.table.kind[meta.freelist];
      if (k !== K_FREELIST) throw new Corrupt(`freelist page ${meta.freelist}: ${k === K_ZERO ? 'the page header is all zeros' : 'not a valid freelist page'}`);
      const fl = this.free;
      if (fl.error !== undefined || !fl.done) throw new Corrupt(`freelist page ${meta.freelist}: ${fl.error ?? 'cut short'}`);
      freelist = { pgid: meta.freelist, ids: fl.ids, length: fl.length };
    }
    return walk({
      table: this.table,
      elements: this.elements,
      pageSize: meta.pageSize,
      root: meta.root,
      freelist,
      buckets: this.buckets,
      cands: this.cands,
      details: this.details,
    });
  }

  /** Whole pages buf[s, e), starting at page nextPage. */
  private span(buf: Buffer, s: number, e: number): void {
    const ps = this.pageSize;
    const first = this.nextPage;
    const abs = first * ps;
    const absEnd = abs + (e - s);
    for (let k = 0; k < this.active.length;) {
      const a = this.active[k]!;
      const to = Math.min(a.end, absEnd);
      const done = a.parser.feed(buf, s + (a.next - abs), s + (to - abs));
      a.next = to;
      if (done || to === a.end) {
        this.settle(a.pgid, a.slot, a.parser);
        this.active[k] = this.active[this.active.length - 1]!;
        this.active.pop();
      } else k++;
    }
    const n = (e - s) / ps;
    this.table.ensure(first + n);
    for (let i = 0; i < n; i++) this.page(first + i, buf, s + i * ps, e, abs + i * ps);
    this.nextPage = first + n;
  }

  /** The page starting at buf[o] (absolute offset `at`); the buffer holds its bytes up to `e`. */
  private page(p: number, buf: Buffer, o: number, e: number, at: number): void {
    const t = this.table;
    const lo = buf.readUInt32LE(o);
    const hi = buf.readUInt32LE(o + 4);
    const flags = buf.readUInt16LE(o + 8);
    const count = buf.readUInt16LE(o + 10);
    const overflow = buf.readUInt32LE(o + 12);
    if (lo !== p || hi !== 0) {
      if ((lo | hi | flags | count | overflow) === 0) t.kind[p] = K_ZERO;
      else t.addBad(p, K_BAD_ID, lo);
      return;
    }
    if (overflow >= this.meta.pages - p) return t.addBad(p, K_BAD_OVERFLOW, overflow);
    const runLen = (overflow + 1) * this.pageSize;
    let parser: NodeParser | FreelistParser;
    let s: number;
    if (flags === FLAG_BRANCH || flags === FLAG_LEAF) {
      s = t.addHead(p, overflow);
      const c = t.at(s);
      const np = this.spare ?? new NodeParser(this.env);
      this.spare = undefined;
      parser = np.reset(flags === FLAG_BRANCH, count, runLen, false).target(c.firstPre, c.lastPre, (s & SLOT_MASK) * PREFIX);
    } else if (flags === FLAG_FREELIST) {
      t.kind[p] = K_FREELIST;
      s = t.addHead(p, overflow);
      if (p !== this.meta.freelist) return;
      const free = this.free;
      parser = new FreelistParser(count, runLen, (idLo, idHi) => free.add(idLo, idHi));
    } else if (flags === FLAG_META) {
      t.kind[p] = K_META;
      return;
    } else return t.addBad(p, K_BAD_FLAGS, flags);
    if (this.active.length >= MAX_ACTIVE) return this.bad(p, `more than ${MAX_ACTIVE} overlapping page runs in flight`);
    const to = Math.min(at + runLen, at + (e - o));
    if (parser.feed(buf, o, o + (to - at)) || to === at + runLen) this.settle(p, s, parser);
    else this.active.push({ pgid: p, slot: s, next: to, end: at + runLen, parser });
  }

  private bad(p: number, detail: string): void {
    this.table.kind[p] = K_BAD;
    if (this.details.size < MAX_DETAILS) this.details.set(p, detail);
  }

  /** Records what a finished parser found for page p, in its slot s (where the parser put the key prefixes). */
  private settle(p: number, s: number, parser: NodeParser | FreelistParser): void {
    if (parser instanceof FreelistParser) return this.free.settle(parser);
    this.spare = parser;
    if (parser.error !== undefined) return this.bad(p, parser.error);
    const t = this.table;
    const c = t.at(s);
    const i = s & SLOT_MASK;
    t.kind[p] = parser.branch ? K_BRANCH : K_LEAF;
    c.flags[i] = parser.flags;
    c.count[i] = parser.count;
    c.firstHash[i] = parser.firstHash;
    c.firstLen[i] = parser.firstLen;
    c.lastLen[i] = parser.lastLen;
    if (parser.branch) c.aux[i] = parser.elemBase;
    else if (this.hashing) {
      c.aux[i] = parser.crc;
      c.crcLen[i] = parser.crcLen;
    }
    if (parser.buckets) this.buckets.set(p, parser.buckets);
    if (parser.cands) this.cands.set(p, parser.cands);
  }
}
