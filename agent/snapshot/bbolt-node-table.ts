// The element table of one bbolt node, the first layer of the node parser (bbolt-node.ts): gathered from the
// run's first bytes and checked before any key is read.
//
// Layout: a 16-byte header {id u64, flags u16, count u16, overflow u32},
// then `count` 16-byte elements, then the data. Leaf element {flags, pos, ksize, vsize}, branch element
// {pos, ksize, pgid u64}; `pos` is relative to the element itself. bbolt's node.write puts key and value of
// element 0, then of element 1, ... back to back right after the table, so every `pos` is determined by the
// sizes; a table that says otherwise was not written by bbolt and is rejected.
import { BUCKET_LEAF, ELEMENT, EMPTY, MAX_KEY, PAGE_HEADER, fmtPgid, u32, type NodeEnv } from './bbolt-format.js';

export abstract class NodeTable {
  error: string | undefined;
  elemBase = -1; // branch: where its children are in env.elements
  branch = false;
  count = 0;

  protected env: NodeEnv;
  protected runLen = 0;
  protected inline = false;
  protected tableEnd = 0;
  protected dataEnd = 0;
  // the table: a view into the fed buffer while the call lasts, else a copy (tblOwned)
  protected tbl: Buffer = EMPTY;
  protected tblOff = 0;
  protected tblOwned = false;
  protected ready = false;
  protected hasBucket = false;

  constructor(env: NodeEnv) {
    this.env = env;
  }

  /** Starts a node (parsers are reused: one per page would keep the garbage collector busy). */
  reset(branch: boolean, count: number, runLen: number, inline: boolean): this {
    this.error = undefined;
    this.elemBase = -1;
    this.branch = branch;
    this.count = count;
    this.runLen = runLen;
    this.inline = inline;
    this.dataEnd = 0;
    this.tbl = EMPTY;
    this.tblOff = 0;
    this.tblOwned = false;
    this.ready = false;
    this.hasBucket = false;
    this.tableEnd = PAGE_HEADER + ELEMENT * count;
    if (this.tableEnd > runLen) this.error = `${count} elements do not fit in ${runLen} bytes`;
    else if (branch && count === 0) this.error = 'branch page with no elements';
    return this;
  }

  /**
   * Takes run bytes [at, end), held at buf[s, ...), towards the table; true (and `ready`) once it is whole.
   * A table fed whole in the first piece is only borrowed: see keepTable.
   */
  protected gather(buf: Buffer, s: number, at: number, end: number): boolean {
    const need = this.tableEnd;
    if (at === 0 && end >= need) {
      this.tbl = buf;
      this.tblOff = s + PAGE_HEADER;
    } else {
      if (!this.tblOwned) {
        this.tbl = Buffer.allocUnsafe(need - PAGE_HEADER);
        this.tblOff = 0;
        this.tblOwned = true;
      }
      const from = Math.max(at, PAGE_HEADER);
      const to = Math.min(end, need);
      if (to > from) buf.copy(this.tbl, from - PAGE_HEADER, s + (from - at), s + (to - at));
      if (end < need) return false;
    }
    this.ready = true;
    return true;
  }

  /** Copies a borrowed table out of the fed buffer, before the feed that lent it returns. */
  protected keepTable(): void {
    this.tbl = Buffer.from(this.tbl.subarray(this.tblOff, this.tblOff + this.tableEnd - PAGE_HEADER));
    this.tblOff = 0;
    this.tblOwned = true;
  }

  protected fail(what: string): false {
    this.error = what;
    return false;
  }

  /** Checks the element table against the layout bbolt writes; sets dataEnd. */
  protected readTable(): boolean {
    const t = this.tbl;
    const env = this.env;
    let cur = this.tableEnd;
    if (this.branch) {
      const base = this.env.elements.alloc(this.count);
      if (base < 0) return this.fail('more branch elements than the memory bound allows');
      this.elemBase = base;
    }
    for (let i = 0; i < this.count; i++) {
      const o = this.tblOff + ELEMENT * i;
      const self = PAGE_HEADER + ELEMENT * i;
      let pos: number;
      let ks: number;
      let vs = 0;
      if (this.branch) {
        pos = u32(t, o);
        ks = u32(t, o + 4);
        const lo = u32(t, o + 8);
        const hi = u32(t, o + 12);
        if (hi !== 0 || lo >= env.pages) return this.fail(`element ${i} points to page ${fmtPgid(lo, hi)}, past the end (${env.pages} pages)`);
        if (lo < 2) return this.fail(`element ${i} points to meta page ${lo}`);
        env.elements.child[this.elemBase + i] = lo;
      } else {
        const fl = u32(t, o);
        pos = u32(t, o + 4);
        ks = u32(t, o + 8);
        vs = u32(t, o + 12);
        if (fl === BUCKET_LEAF) {
          if (this.inline) return this.fail(`element ${i} is a bucket inside an inline bucket, which bbolt never writes`);
          this.hasBucket = true;
        } else if (fl !== 0) return this.fail(`element ${i} has flags 0x${fl.toString(16)}`);
      }
      if (ks === 0 || ks > MAX_KEY) return this.fail(`element ${i} has a key of ${ks} bytes`);
      if (pos !== cur - self) return this.fail(`element ${i} data at offset ${self + pos}, bbolt writes it at ${cur}`);
      cur += ks + vs;
      if (cur > this.runLen) return this.fail(`element ${i} ends at byte ${cur}, past the ${this.runLen}-byte page`);
    }
    this.dataEnd = cur;
    if (!this.inline) {
      // bbolt allocates floor(size/ps)+1 pages (up to v1.3) or ceil(size/ps) (later) for a node
      const ps = env.pageSize;
      const pages = this.runLen / ps;
      if (pages !== Math.floor(cur / ps) + 1 && pages !== Math.ceil(cur / ps)) {
        return this.fail(`${pages - 1} overflow pages for ${cur} bytes of node; bbolt allocates ${Math.ceil(cur / ps) - 1}`);
      }
    }
    return true;
  }
}
