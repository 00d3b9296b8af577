// The second layer of the node parser (bbolt-node.ts): a cursor over the node's data that hands on each key,
// and each value the last layer asked for, whole, however the run was cut into pieces. A key or value split
// between pieces is copied; one inside a piece is handed on as a view into it. The leaf's CRC-32C (etcdctl's
// status hash) is taken here over the data in one stretch, or, when the leaf holds a bucket, element by
// element (the values here, the keys in key()) leaving the buckets' values out.
import { crc32c } from './crc32c.js';
import { BUCKET_LEAF, ELEMENT, EMPTY, MAX_KEY, u32 } from './bbolt-format.js';
import { NodeTable } from './bbolt-node-table.js';

/**
 * The caller feeds the run's bytes in order from its first byte (the page header) with feed(); feed returns
 * true once the node is complete or broken (`error` set). Views into a fed buffer are never kept past the
 * call: what must survive (table, previous key) is copied.
 */
export abstract class NodeCursor extends NodeTable {
  crc = 0;
  crcLen = 0;

  private fed = 0;
  // cursor over the data: element i, its key start, sizes and flag; c = next unprocessed run offset
  protected i = 0;
  private kS = 0;
  protected ks = 0;
  protected vs = 0;
  protected bucketEl = false;
  private c = 0;
  private keyBuf: Buffer = EMPTY; // a key being collected across pieces
  private ownA: Buffer = EMPTY; // two key buffers: one may hold `prev` while the other collects a key
  private ownB: Buffer = EMPTY;
  protected prev: Buffer = EMPTY; // previous key, for the order check
  protected prevS = 0;
  protected prevE = 0;
  protected capture: 0 | 1 | 2 = 0; // value wanted: 1 bucket, 2 fact candidate
  private capBuf: Buffer = EMPTY;

  /** One whole key: kb[ks, ke), of element i. `elemCrc`: the key goes into the leaf's CRC. */
  protected abstract key(kb: Buffer, ks: number, ke: number, elemCrc: boolean): void;
  /** The whole value of element i, when key() set `capture`: vb[vs, ve). */
  protected abstract value(vb: Buffer, vs: number, ve: number): void;

  override reset(branch: boolean, count: number, runLen: number, inline: boolean): this {
    super.reset(branch, count, runLen, inline);
    this.crc = 0;
    this.crcLen = 0;
    this.fed = 0;
    this.i = 0;
    this.kS = 0;
    this.ks = 0;
    this.vs = 0;
    this.bucketEl = false;
    this.c = 0;
    this.keyBuf = EMPTY;
    this.prev = EMPTY;
    this.capture = 0;
    return this;
  }

  /** Feeds buf[s, e), the next bytes of the run. True when done. */
  feed(buf: Buffer, s: number, e: number): boolean {
    if (this.error !== undefined) return true;
    const at = this.fed;
    const end = at + (e - s);
    this.fed = end;
    if (!this.ready) {
      if (!this.gather(buf, s, at, end)) return false;
      if (!this.readTable()) return true;
      this.c = this.tableEnd;
      this.kS = this.tableEnd;
      if (this.count > 0) this.load(0);
    }
    if (end > this.c && this.c < this.dataEnd) this.data(buf, s, at, end);
    if (this.error !== undefined || this.i >= this.count) return true;
    if (!this.tblOwned) this.keepTable();
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
}
