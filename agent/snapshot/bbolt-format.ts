// bbolt's on-disk format as the deep check reads it (pages, elements, buckets), the types the node
// parser and the tree walk share, and small byte helpers.

export const PAGE_HEADER = 16;
export const ELEMENT = 16;
export const FLAG_BRANCH = 0x01;
export const FLAG_LEAF = 0x02;
export const FLAG_META = 0x04;
export const FLAG_FREELIST = 0x10;
export const BUCKET_LEAF = 0x01; // leaf element flag: the value is a bucket
export const BUCKET_HEADER = 16; // {root pgid u64, sequence u64}
/** bbolt refuses longer keys on Put, so no file it wrote holds one. */
export const MAX_KEY = 32768;
/** Bytes of a key kept per page for cross-page ordering. */
export const PREFIX = 16;
/** Leaf summary flags. */
export const F_REV_KEYS = 1; // every key looks like an etcd revision: 8-byte main, '_', 8-byte sub, optional 't'
export const F_PLAIN = 2; // holds at least one plain key/value (not a bucket)

/** Branch children of every parsed branch page, in one append-only store (child pgid, key hash). */
export class ElementStore {
  child = new Uint32Array(1 << 12);
  keyHash = new Uint32Array(1 << 12);
  length = 0;
  constructor(readonly limit: number) {}
  /** Room for n elements; -1 when that would pass the memory bound. */
  alloc(n: number): number {
    const base = this.length;
    if (base + n > this.limit) return -1;
    if (base + n > this.child.length) {
      let cap = this.child.length * 2;
      while (cap < base + n) cap *= 2;
      const c = new Uint32Array(cap);
      c.set(this.child);
      const h = new Uint32Array(cap);
      h.set(this.keyHash);
      this.child = c;
      this.keyHash = h;
    }
    this.length += n;
    return base;
  }
}

export interface NodeEnv {
  /** Pages in the file (the meta's pgid): every page id must be below it. */
  readonly pages: number;
  readonly pageSize: number;
  readonly hashing: boolean;
  readonly elements: ElementStore;
  /** Counts one retained bucket reference or fact candidate; false once the bound is reached. */
  take(what: 'bucket' | 'cand'): boolean;
}

/** What one inline bucket's page holds, kept with the reference to it. */
export interface InlineSummary {
  count: number;
  crc: number;
  crcLen: number;
  flags: number;
  lastLen: number;
  lastPrefix: Uint8Array;
  cands: Cand[] | undefined;
}

/** A bucket stored as a leaf value: its name (the key) and either its root page or its inline page. */
export interface BucketRef {
  name: string;
  nameCrc: number;
  nameLen: number;
  root: number;
  inline: InlineSummary | undefined;
}

/** A key/value kept because it may be one of the etcd facts (meta bucket keys, member ids). */
export interface Cand {
  key: string;
  value: Buffer | undefined;
}

/** Little-endian u32 at b[o] (Buffer.readUInt32LE with its range checks costs more in the element loops). */
export function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** 32-bit FNV-1a of a key: equal keys hash equal; a branch key is matched to its child's first key by it. */
export function keyHash(b: Uint8Array, s: number, e: number): number {
  let h = 0x811c9dc5;
  for (let i = s; i < e; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return h >>> 0;
}

export function copyPrefix(src: Uint8Array, s: number, len: number, dst: Uint8Array, off: number): void {
  const n = len < PREFIX ? len : PREFIX;
  for (let i = 0; i < n; i++) dst[off + i] = src[s + i]!;
}

/** -1, 0, 1 as a[as, ae) compares to b[bs, be), bytewise like bytes.Compare. */
export function compareBytes(a: Uint8Array, as: number, ae: number, b: Uint8Array, bs: number, be: number): number {
  const la = ae - as;
  const lb = be - bs;
  const n = la < lb ? la : lb;
  if (n > 48) return Buffer.compare(a.subarray(as, as + n), b.subarray(bs, bs + n)) || (la === lb ? 0 : la < lb ? -1 : 1);
  for (let i = 0; i < n; i++) {
    const x = a[as + i]!;
    const y = b[bs + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return la === lb ? 0 : la < lb ? -1 : 1;
}

export function fmtPgid(lo: number, hi: number): string {
  return hi === 0 ? String(lo) : String((BigInt(hi) << 32n) | BigInt(lo));
}

/** A zero-length buffer: what the node parser's buffer fields hold when they hold nothing. */
export const EMPTY = Buffer.alloc(0);
