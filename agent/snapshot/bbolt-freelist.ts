// The freelist page: its parser, and the ids it lists, collected for the walk.
// etcd runs bbolt with NoFreelistSync, so its snapshots usually name no freelist page at all.
import { PAGE_HEADER, fmtPgid } from './bbolt-format.js';

/**
 * The freelist page (flags 0x10): `count` page ids (u64), or, when count is 0xFFFF, the real count in the
 * first u64 and the ids after it (bbolt freelist.write). Ids are handed to `onId` as they stream past.
 */
export class FreelistParser {
  error: string | undefined;
  ids = 0;
  private fed = 0;
  private start = PAGE_HEADER;
  private end = -1;
  private readonly carry = Buffer.alloc(8);
  private carried = 0;

  constructor(
    count: number,
    private readonly runLen: number,
    private readonly onId: (lo: number, hi: number) => void,
  ) {
    if (count !== 0xffff) this.setEnd(PAGE_HEADER, count);
  }

  private setEnd(start: number, n: number): void {
    this.start = start;
    this.end = start + 8 * n;
    this.ids = n;
    if (this.end > this.runLen) this.error = `${n} free page ids do not fit in ${this.runLen} bytes`;
  }

  /** Same contract as NodeParser.feed. */
  feed(buf: Buffer, s: number, e: number): boolean {
    let at = this.fed;
    this.fed += e - s;
    while (this.error === undefined && s < e) {
      if (this.end >= 0 && at >= this.end) break;
      const from = this.end < 0 ? PAGE_HEADER : this.start;
      if (at < from) {
        const skip = Math.min(from - at, e - s);
        s += skip;
        at += skip;
        continue;
      }
      const room = Math.min(e - s, (this.end < 0 ? PAGE_HEADER + 8 : this.end) - at);
      if (this.carried > 0 || room < 8) {
        const n = Math.min(8 - this.carried, room);
        buf.copy(this.carry, this.carried, s, s + n);
        this.carried += n;
        s += n;
        at += n;
        if (this.carried === 8) {
          this.carried = 0;
          this.word(this.carry, 0);
        }
      } else if (this.end < 0) {
        this.word(buf, s);
        s += 8;
        at += 8;
      } else {
        const stop = s + (room & ~7);
        for (; s < stop; s += 8, at += 8) this.onId(buf.readUInt32LE(s), buf.readUInt32LE(s + 4));
      }
    }
    return this.error !== undefined || (this.end >= 0 && at >= this.end);
  }

  private word(b: Buffer, o: number): void {
    const lo = b.readUInt32LE(o);
    const hi = b.readUInt32LE(o + 4);
    if (this.end < 0) {
      if (hi !== 0 || lo > 0x7fffffff) this.error = `freelist count ${fmtPgid(lo, hi)} is implausible`;
      else this.setEnd(PAGE_HEADER + 8, lo);
    } else this.onId(lo, hi);
  }
}

/** The ids the meta's freelist page lists, as its parser hands them over; the first problem is kept. */
export class FreelistIds {
  ids = new Uint32Array(0);
  length = 0;
  error: string | undefined;
  done = false;

  /** `pages`: pages in the file; every listed id must be in 2..pages − 1. */
  constructor(private readonly pages: number) {}

  add(lo: number, hi: number): void {
    if (this.error !== undefined) return;
    if (hi !== 0 || lo >= this.pages || lo < 2) {
      this.error = `lists page ${fmtPgid(lo, hi)}, outside 2..${this.pages - 1}`;
      return;
    }
    if (this.length === this.ids.length) {
      const grown = new Uint32Array(Math.max(1024, this.ids.length * 2));
      grown.set(this.ids);
      this.ids = grown;
    }
    this.ids[this.length++] = lo;
  }

  /** The parser is done with the page (finished, broken or cut short by the end of its run). */
  settle(parser: FreelistParser): void {
    this.done = true;
    if (parser.error !== undefined) this.error ??= parser.error;
  }
}
