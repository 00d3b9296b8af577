// The compact per-page facts the streaming pass records (bbolt-runs.ts) and the tree walk reads
// (bbolt-tree.ts): one entry per page, in typed arrays indexed by page id.
import { PREFIX } from './bbolt-format.js';

// Page kinds. Bad kinds are kept, not reported: most pages are never referenced (free pages hold stale
// copies and overflow pages hold value bytes), so a page is judged only when the tree reaches it.
export const K_NONE = 0;
export const K_BRANCH = 1;
export const K_LEAF = 2;
export const K_FREELIST = 3;
export const K_META = 4;
export const K_ZERO = 5; // header all zeros
export const K_BAD_ID = 6; // aux = the id the header claims (low 32 bits)
export const K_BAD_FLAGS = 7; // aux = flags
export const K_BAD_OVERFLOW = 8; // aux = overflow
export const K_BAD = 9; // details map says what

/**
 * Per page: kind u8, flags u8, count u16, overflow u32, aux u32 (branch: index of its elements), first-key
 * hash u32, first/last key lengths u16, first/last key prefixes 2 × 16 B, and with hashing the leaf's CRC-32C
 * and hashed length 2 × u32: 52 B per page, 60 B with hashing.
 */
export class PageTable {
  cap = 0;
  kind = new Uint8Array(0);
  flags = new Uint8Array(0);
  count = new Uint16Array(0);
  overflow = new Uint32Array(0);
  aux = new Uint32Array(0);
  firstHash = new Uint32Array(0);
  firstLen = new Uint16Array(0);
  lastLen = new Uint16Array(0);
  firstPre = new Uint8Array(0);
  lastPre = new Uint8Array(0);
  crc = new Uint32Array(0);
  crcLen = new Uint32Array(0);

  constructor(
    readonly pages: number,
    readonly hashing: boolean,
  ) {}

  /** Grows (doubling, at most to `pages`) so that page n − 1 fits. */
  ensure(n: number): void {
    if (n <= this.cap) return;
    let cap = Math.max(this.cap * 2, Math.min(n, 1 << 14));
    while (cap < n) cap *= 2;
    cap = Math.min(cap, this.pages);
    const grow = <T extends Uint8Array | Uint16Array | Uint32Array>(a: T, make: (n: number) => T, per = 1): T => {
      const b = make(cap * per);
      b.set(a);
      return b;
    };
    this.kind = grow(this.kind, (k) => new Uint8Array(k));
    this.flags = grow(this.flags, (k) => new Uint8Array(k));
    this.count = grow(this.count, (k) => new Uint16Array(k));
    this.overflow = grow(this.overflow, (k) => new Uint32Array(k));
    this.aux = grow(this.aux, (k) => new Uint32Array(k));
    this.firstHash = grow(this.firstHash, (k) => new Uint32Array(k));
    this.firstLen = grow(this.firstLen, (k) => new Uint16Array(k));
    this.lastLen = grow(this.lastLen, (k) => new Uint16Array(k));
    this.firstPre = grow(this.firstPre, (k) => new Uint8Array(k), PREFIX);
    this.lastPre = grow(this.lastPre, (k) => new Uint8Array(k), PREFIX);
    if (this.hashing) {
      this.crc = grow(this.crc, (k) => new Uint32Array(k));
      this.crcLen = grow(this.crcLen, (k) => new Uint32Array(k));
    }
    this.cap = cap;
  }
}
