// One bbolt node (a branch or leaf page run, or the inline page of a small bucket), parsed from its bytes as
// they stream past, in any number of pieces, with memory bounded by its element table and two keys.
//
// Layout (etcd-io/bbolt page.go, node.go): a 16-byte header {id u64, flags u16, count u16, overflow u32},
// then `count` 16-byte elements, then the data. Leaf element {flags, pos, ksize, vsize}, branch element
// {pos, ksize, pgid u64}; `pos` is relative to the element itself. bbolt's node.write puts key and value of
// element 0, then of element 1, ... back to back right after the table, so every `pos` is determined by the
// sizes; a table that says otherwise was not written by bbolt and is rejected.
import { crc32c } from './crc32c.js';
import {
  BUCKET_HEADER,
  BUCKET_LEAF,
  ELEMENT,
  F_PLAIN,
  F_REV_KEYS,
  FLAG_LEAF,
  MAX_KEY,
  PAGE_HEADER,
  PREFIX,
  compareBytes,
  copyPrefix,
  fmtPgid,
  keyHash,
  u32,
  type BucketRef,
  type Cand,
  type InlineSummary,
  type NodeEnv,
} from './bbolt-format.js';

const CAND_VALUE_MAX = 64;
const META_LENGTHS = new Set([4, 14, 16, 18, 19]);
const META_KEYS = new Set(['term', 'consistent_index', 'finishedCompactRev', 'scheduledCompactRev', 'clusterVersion', 'storageVersion']);

function isHexId(b: Buffer, s: number, e: number): boolean {
  if (e - s > 16) return false;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/**
 * Parses one node. The caller feeds the run's bytes in order from its first byte (the page header) with
 * feed(); feed returns true once the node is complete or broken (`error` set). Views into a fed buffer are
 * never kept past the call: what must survive (table, previous key) is copied.
 */
export class NodeParser {
  error: string | undefined;
  // results
  crc = 0;
  crcLen = 0;
  flags = F_REV_KEYS;
  firstHash = 0;
  firstLen = 0;
  lastLen = 0;
  elemBase = -1;
  buckets: BucketRef[] | undefined;
  cands: Cand[] | undefined;
  branch = false;
  count = 0;
  /** Where the first and last keys' prefixes go: the page table's arrays at preOff, or the parser's own. */
  firstPre: Uint8Array;
  lastPre: Uint8Array;
  preOff = 0;

  private env: NodeEnv;
  private runLen = 0;
  private inline = false;
  private fed = 0;
  private tableEnd = 0;
  private dataEnd = 0;
  private tbl: Buffer = EMPTY;
  private tblOff = 0;
  private tblOwned = false;
  private ready = false;
  private hasBucket = false;
  // cursor over the data: element i, its key start, sizes and flag; c = next unprocessed run offset
  private i = 0;
  private kS = 0;
  private ks = 0;
  private vs = 0;
  private bucketEl = false;
  private c = 0;
  private keyBuf: Buffer = EMPTY; // a key being collected across pieces
  private ownA: Buffer = EMPTY; // two key buffers: one may hold `prev` while the other collects a key
  private ownB: Buffer = EMPTY;
  private prev: Buffer = EMPTY; // previous key, for the order check
  private prevS = 0;
  private prevE = 0;
  private capture: 0 | 1 | 2 = 0; // value wanted: 1 bucket, 2 fact candidate
  private capBuf: Buffer = EMPTY;
  private capName = '';
  private capNameCrc = 0;

  constructor(env: NodeEnv) {
    this.env = env;
    this.firstPre = new Uint8Array(PREFIX);
    this.lastPre = new Uint8Array(PREFIX);
  }

  /** Starts a node (parsers are reused: one per page would keep the garbage collector busy). */
  reset(branch: boolean, count: number, runLen: number, inline: boolean): this {
    this.error = undefined;
    this.crc = 0;
    this.crcLen = 0;
    this.flags = F_REV_KEYS;
    this.firstHash = 0;
    this.firstLen = 0;
    this.lastLen = 0;
    this.elemBase = -1;
    this.buckets = undefined;
    this.cands = undefined;
    this.branch = branch;
    this.count = count;
    this.runLen = runLen;
    this.inline = inline;
    this.fed = 0;
    this.dataEnd = 0;
    this.tbl = EMPTY;
    this.tblOff = 0;
    this.tblOwned = false;
    this.ready = false;
    this.hasBucket = false;
    this.i = 0;
    this.kS = 0;
    this.ks = 0;
    this.vs = 0;
    this.bucketEl = false;
    this.c = 0;
    this.keyBuf = EMPTY;
    this.prev = EMPTY;
    this.capture = 0;
    this.tableEnd = PAGE_HEADER + ELEMENT * count;
    if (this.tableEnd > runLen) this.error = `${count} elements do not fit in ${runLen} bytes`;
    else if (branch && count === 0) this.error = 'branch page with no elements';
    return this;
  }

  /** Prefixes go to first[off, off+16) and last[off, off+16). */
  target(first: Uint8Array, last: Uint8Array, off: number): this {
    this.firstPre = first;
    this.lastPre = last;
    this.preOff = off;
    return this;
  }

  /** Feeds buf[s, e), the next bytes of the run. True when done. */
  feed(buf: Buffer, s: number, e: number): boolean {
    if (this.error !== undefined) return true;
    const at = this.fed;
    const end = at + (e - s);
    this.fed = end;
    if (!this.ready) {
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
      if (!this.readTable()) return true;
    }
    if (end > this.c && this.c < this.dataEnd) this.data(buf, s, at, end);
    if (this.error !== undefined || this.i >= this.count) return true;
    if (!this.tblOwned) {
      this.tbl = Buffer.from(this.tbl.subarray(this.tblOff, this.tblOff + this.tableEnd - PAGE_HEADER));
      this.tblOff = 0;
      this.tblOwned = true;
    }
    if (this.prev === buf) {
      const own = this.ownBuffer(this.keyBuf);
      buf.copy(own, 0, this.prevS, this.prevE);
      this.prevE -= this.prevS;
      this.prevS = 0;
      this.prev = own;
    }
    return false;
  }

  /** One of the two owned key buffers, not `avoid`. */
  private ownBuffer(avoid: Buffer): Buffer {
    if (this.ownA === EMPTY) this.ownA = Buffer.allocUnsafe(MAX_KEY);
    if (this.ownA !== avoid) return this.ownA;
    if (this.ownB === EMPTY) this.ownB = Buffer.allocUnsafe(MAX_KEY);
    return this.ownB;
  }

  private fail(what: string): false {
    this.error = what;
    return false;
  }

  /** Checks the element table against the layout bbolt writes; sets dataEnd. */
  private readTable(): boolean {
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
    this.c = this.tableEnd;
    this.kS = this.tableEnd;
    if (this.count > 0) this.load(0);
    return true;
  }

  private load(i: number): void {
    const o = this.tblOff + ELEMENT * i;
    if (this.branch) {
      this.ks = u32(this.tbl, o + 4);
      this.vs = 0;
    } else {
      this.bucketEl = u32(this.tbl, o) === BUCKET_LEAF;
      this.ks = u32(this.tbl, o + 8);
      this.vs = u32(this.tbl, o + 12);
    }
  }

  /** Processes run bytes [max(at, c), end) held at buf[s + (x - at)]. */
  private data(buf: Buffer, s: number, at: number, end: number): void {
    const bulkCrc = this.env.hashing && !this.branch && !this.hasBucket;
    if (bulkCrc) {
      const to = Math.min(end, this.dataEnd);
      this.crc = crc32c(this.crc, buf, s + (this.c - at), s + (to - at));
      this.crcLen += to - this.c;
    }
    const elemCrc = this.env.hashing && !this.branch && this.hasBucket;
    while (this.i < this.count) {
      const kE = this.kS + this.ks;
      const vE = kE + this.vs;
      if (this.c < kE) {
        if (this.c === this.kS && end >= kE) {
          this.key(buf, s + (kE - this.ks - at), s + (kE - at), elemCrc);
        } else {
          if (this.c === this.kS) this.keyBuf = this.ownBuffer(this.prev);
          const to = Math.min(end, kE);
          buf.copy(this.keyBuf, this.c - this.kS, s + (this.c - at), s + (to - at));
          if (to < kE) {
            this.c = to;
            return;
          }
          const kb = this.keyBuf;
          this.keyBuf = EMPTY;
          this.key(kb, 0, this.ks, elemCrc);
        }
        if (this.error !== undefined) return;
        this.c = kE;
      }
      if (this.c < vE) {
        const to = Math.min(end, vE);
        if (this.capture !== 0) {
          if (this.c === kE && to === vE) this.value(buf, s + (kE - at), s + (vE - at));
          else {
            if (this.c === kE) this.capBuf = Buffer.allocUnsafe(this.vs);
            buf.copy(this.capBuf, this.c - kE, s + (this.c - at), s + (to - at));
            if (to === vE) this.value(this.capBuf, 0, this.vs);
          }
        }
        if (elemCrc && !this.bucketEl) {
          this.crc = crc32c(this.crc, buf, s + (this.c - at), s + (to - at));
          this.crcLen += to - this.c;
        }
        this.c = to;
        if (to < vE) return;
        if (this.error !== undefined) return;
      } else if (this.capture !== 0) {
        this.value(EMPTY, 0, 0);
        if (this.error !== undefined) return;
      }
      this.i++;
      this.kS = vE;
      if (this.i < this.count) this.load(this.i);
    }
  }

  /** One whole key: kb[ks, ke). */
  private key(kb: Buffer, ks: number, ke: number, elemCrc: boolean): void {
    const i = this.i;
    const len = ke - ks;
    if (i === 0) {
      this.firstHash = keyHash(kb, ks, ke);
      this.firstLen = len;
      copyPrefix(kb, ks, len, this.firstPre, this.preOff);
    } else if (compareBytes(this.prev, this.prevS, this.prevE, kb, ks, ke) >= 0) {
      this.error = `key of element ${i} is not greater than the key before it`;
      return;
    }
    if (i === this.count - 1) {
      this.lastLen = len;
      copyPrefix(kb, ks, len, this.lastPre, this.preOff);
    }
    this.prev = kb;
    this.prevS = ks;
    this.prevE = ke;
    if (this.branch) {
      this.env.elements.keyHash[this.elemBase + i] = i === 0 ? this.firstHash : keyHash(kb, ks, ke);
      return;
    }
    if (!((len === 17 || (len === 18 && kb[ks + 17] === 0x74)) && kb[ks + 8] === 0x5f)) this.flags &= ~F_REV_KEYS;
    if (elemCrc) {
      this.crc = crc32c(this.crc, kb, ks, ke);
      this.crcLen += len;
    }
    this.capture = 0;
    if (this.bucketEl) {
      if (this.vs < BUCKET_HEADER || this.vs > BUCKET_HEADER + this.env.pageSize / 4) {
        this.error = `bucket ${quote(kb, ks, ke)} has a ${this.vs}-byte value; bbolt writes 16 bytes, or at most ${BUCKET_HEADER + this.env.pageSize / 4} for an inline bucket`;
        return;
      }
      this.capture = 1;
      this.capName = kb.toString('utf8', ks, Math.min(ke, ks + 256));
      this.capNameCrc = this.env.hashing ? crc32c(0, kb, ks, ke) : 0;
      return;
    }
    this.flags |= F_PLAIN;
    // fact candidates start with a lowercase letter or a digit; etcd revision keys with 0x00
    if (len <= 19 && kb[ks]! >= 0x30) {
      const f = kb[ks]!;
      const maybeMeta = META_LENGTHS.has(len) && (f === 0x63 || f === 0x66 || f === 0x73 || f === 0x74); // c f s t
      const named = isHexId(kb, ks, ke) ? false : maybeMeta && META_KEYS.has(kb.toString('latin1', ks, ke)) ? true : undefined;
      if (named !== undefined && this.env.take('cand')) {
        this.capName = kb.toString('latin1', ks, ke);
        if (named && this.vs <= CAND_VALUE_MAX) this.capture = 2;
        else (this.cands ??= []).push({ key: this.capName, value: undefined });
      }
    }
  }

  /** The whole value of the current element, when captured: vb[vs, ve). */
  private value(vb: Buffer, vs: number, ve: number): void {
    const cap = this.capture;
    this.capture = 0;
    if (cap === 2) {
      (this.cands ??= []).push({ key: this.capName, value: Buffer.from(vb.subarray(vs, ve)) });
      return;
    }
    const name = this.capName;
    const len = ve - vs;
    const lo = vb.readUInt32LE(vs);
    const hi = vb.readUInt32LE(vs + 4);
    let ref: BucketRef;
    if (lo !== 0 || hi !== 0) {
      if (len !== BUCKET_HEADER) return void (this.error = `bucket "${name}" has root page ${fmtPgid(lo, hi)} and a ${len}-byte value; bbolt writes 16`);
      if (hi !== 0 || lo >= this.env.pages) return void (this.error = `bucket "${name}" has root page ${fmtPgid(lo, hi)}, past the end (${this.env.pages} pages)`);
      if (lo < 2) return void (this.error = `bucket "${name}" has meta page ${lo} as its root`);
      ref = { name, nameCrc: this.capNameCrc, nameLen: this.ks, root: lo, inline: undefined };
    } else {
      if (len < BUCKET_HEADER + PAGE_HEADER) return void (this.error = `inline bucket "${name}" has a ${len}-byte value, too short for its page`);
      const p = vs + BUCKET_HEADER;
      const flags = vb.readUInt16LE(p + 8);
      if (flags !== FLAG_LEAF) return void (this.error = `inline bucket "${name}" has page flags 0x${flags.toString(16)}, bbolt writes a leaf (0x02)`);
      const sub = new NodeParser(this.env).reset(false, vb.readUInt16LE(p + 10), ve - p, true);
      sub.feed(vb, p, ve);
      if (sub.error !== undefined) return void (this.error = `inline bucket "${name}": ${sub.error}`);
      const inline: InlineSummary = {
        count: sub.count,
        crc: sub.crc,
        crcLen: sub.crcLen,
        flags: sub.flags,
        lastLen: sub.lastLen,
        lastPrefix: sub.lastPre,
        cands: sub.cands,
      };
      ref = { name, nameCrc: this.capNameCrc, nameLen: this.ks, root: 0, inline };
    }
    if (!this.env.take('bucket')) return void (this.error = 'more bucket references than the memory bound allows');
    (this.buckets ??= []).push(ref);
  }
}

const EMPTY = Buffer.alloc(0);

function quote(b: Buffer, s: number, e: number): string {
  return JSON.stringify(b.toString('utf8', s, Math.min(e, s + 64)));
}
