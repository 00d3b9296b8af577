// The two meta pages at the head of a bbolt file (magic, version, checksum, as bbolt validates them) and the choice
// between them, made as bbolt makes it when it opens the file.

const META_MAGIC = 0xed0cdaed;
const META_VERSION = 2;
const MIN_PAGE = 512;
const MAX_PAGE = 65536;
const MAX_PAGES = 0xffffffff; // page ids are kept in 32 bits: 16 TiB of 4 KiB pages
/** Bytes of the body that always suffice to choose the meta: two meta pages of the largest size. */
export const HEAD_MAX = 2 * MAX_PAGE;

export interface Meta {
  index: number;
  pageSize: number;
  root: number;
  freelist: number; // -1: no freelist page
  pages: number;
  txid: bigint;
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

/**
 * Picks the meta as bbolt does (the valid one with the higher txid) from the first bytes of the body:
 * undefined while more bytes are needed (`final`: no more will come), a reason when none will do.
 * The page size comes from meta 0; if meta 0 is broken, meta 1 is looked for at each page size.
 */
export function pickMeta(head: Buffer, final: boolean): Meta | string | undefined {
  const m0 = readMeta(head, 0, 0);
  let ps = typeof m0 === 'string' ? 0 : m0.pageSize;
  if (ps > 0 && head.length < 2 * ps && !final) return undefined;
  if (ps === 0 && !final) return undefined;
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
  if (found.length === 0) return `no valid meta page (${problems.join('; ') || 'meta page 1 not found'})`;
  const meta = found.reduce((a, b) => (b.txid > a.txid ? b : a));
  ps = meta.pageSize;
  if (head.length < 2 * ps) return `only ${head.length} bytes, less than two ${ps}-byte meta pages`;
  if (found.some((m) => m.pageSize !== ps)) return 'meta pages disagree on the page size';
  return meta;
}
