// The compact per-page facts the streaming pass records (bbolt-runs.ts) and the tree walk reads
// (bbolt-tree.ts). Every page has a kind byte; the rest is kept only for the pages that need it:
//
// - a run head (a page whose header names its own id, says branch, leaf or freelist and whose overflow stays
//   within the file) gets a slot: a record in dense slot arrays, slots numbered in page order. Most pages of a
//   database of large values are overflow pages of a run, and those cost their kind byte alone.
// - a page whose header is bad (K_BAD_ID, K_BAD_FLAGS, K_BAD_OVERFLOW) keeps one u32 of what the header said,
//   for the error message should the tree reach it; numbered in page order among such pages.
//
// Which pages are heads is a bitmap; seal() adds the heads before each 32 pages, so that a head's slot is its
// rank. The slot arrays come in chunks of 4096 slots made once at their full size (never larger than the file
// has pages), so they never move and a parser writes its key prefixes straight into them.
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

const SHIFT = 12;
/** Slot s is entry s & SLOT_MASK of chunk at(s). */
export const SLOT_MASK = (1 << SHIFT) - 1;
const AUX_SHIFT = 14;
const AUX_MASK = (1 << AUX_SHIFT) - 1;

/**
 * The facts of up to 4096 run heads: flags u8, count u16, overflow u32, aux u32 (a branch's element base, a
 * leaf's CRC-32C when hashing), first-key hash u32, first/last key lengths u16, first/last key prefixes
 * 2 × 16 B, and with hashing the leaf's hashed length u32: 51 B per head, 55 B with hashing.
 */
export class Slots {
  readonly flags: Uint8Array;
  readonly count: Uint16Array;
  readonly overflow: Uint32Array;
  readonly aux: Uint32Array;
  readonly firstHash: Uint32Array;
  readonly firstLen: Uint16Array;
  readonly lastLen: Uint16Array;
  readonly firstPre: Uint8Array;
  readonly lastPre: Uint8Array;
  readonly crcLen: Uint32Array;

  constructor(n: number, hashing: boolean) {
    this.flags = new Uint8Array(n);
    this.count = new Uint16Array(n);
    this.overflow = new Uint32Array(n);
    this.aux = new Uint32Array(n);
    this.firstHash = new Uint32Array(n);
    this.firstLen = new Uint16Array(n);
    this.lastLen = new Uint16Array(n);
    this.firstPre = new Uint8Array(n * PREFIX);
    this.lastPre = new Uint8Array(n * PREFIX);
    this.crcLen = new Uint32Array(hashing ? n : 0);
  }
}

/** Set bits of a 32-bit word. */
function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
}

const isBadHeader = (k: number): boolean => k === K_BAD_ID || k === K_BAD_FLAGS || k === K_BAD_OVERFLOW;

/**
 * Per page: the kind byte and a head bit; per run head a slot (see Slots); per bad header a u32. Pages are
 * recorded in increasing order (addHead, addBad); once all were, seal() before slot() and aux().
 */
export class PageTable {
  cap = 0;
  kind = new Uint8Array(0);
  private headBits = new Uint32Array(0);
  private headBase = new Uint32Array(0);
  private heads = 0;
  private readonly chunks: Slots[] = [];
  private bads = 0;
  private readonly badAux: Uint32Array[] = [];

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
    const kind = new Uint8Array(cap);
    kind.set(this.kind);
    this.kind = kind;
    const bits = new Uint32Array((cap + 31) >>> 5);
    bits.set(this.headBits);
    this.headBits = bits;
    this.cap = cap;
  }

  /** Page p heads a run of `overflow` more pages: its new slot, the next one in page order. */
  addHead(p: number, overflow: number): number {
    const s = this.heads++;
    this.headBits[p >>> 5]! |= 1 << (p & 31);
    const c = s >>> SHIFT;
    // a chunk as large as it can ever need to be: there are at most as many heads as pages
    const chunk = (this.chunks[c] ??= new Slots(Math.min(SLOT_MASK + 1, this.pages - (c << SHIFT)), this.hashing));
    chunk.overflow[s & SLOT_MASK] = overflow;
    return s;
  }

  /** Page p has a bad header of kind k (K_BAD_ID, K_BAD_FLAGS or K_BAD_OVERFLOW); `aux` is what it said. */
  addBad(p: number, k: number, aux: number): void {
    this.kind[p] = k;
    const j = this.bads++;
    const c = j >>> AUX_SHIFT;
    const words = (this.badAux[c] ??= new Uint32Array(Math.min(AUX_MASK + 1, this.pages - (c << AUX_SHIFT))));
    words[j & AUX_MASK] = aux;
  }

  /** Once every page was recorded: the heads before each 32 pages, which slot() needs. */
  seal(): void {
    const bits = this.headBits;
    const base = new Uint32Array(bits.length);
    let n = 0;
    for (let w = 0; w < bits.length; w++) {
      base[w] = n;
      n += popcount(bits[w]!);
    }
    this.headBase = base;
  }

  /** The slot of run head p (after seal). */
  slot(p: number): number {
    const w = p >>> 5;
    return this.headBase[w]! + popcount(this.headBits[w]! & ~(-1 << (p & 31)));
  }

  /** The chunk of slot s; the slot is entry s & SLOT_MASK in it. */
  at(s: number): Slots {
    return this.chunks[s >>> SHIFT]!;
  }

  /** What the bad header of page p said. Only error messages need it: the pages before p are counted. */
  aux(p: number): number {
    let j = 0;
    for (let q = 0; q < p; q++) if (isBadHeader(this.kind[q]!)) j++;
    return this.badAux[j >>> AUX_SHIFT]![j & AUX_MASK]!;
  }
}
