// The walk over the page table once every page was seen: from the root bucket down every branch, leaf and
// nested bucket, in key order, as bbolt and etcdctl read it, and the facts it gathers on the way.
import { crc32cCombine } from './crc32c.js';
import { F_PLAIN, F_REV_KEYS, PREFIX, type BucketRef, type Cand, type ElementStore } from './bbolt-format.js';
import { K_BAD, K_BAD_FLAGS, K_BAD_ID, K_BAD_OVERFLOW, K_BRANCH, K_FREELIST, K_LEAF, K_META, K_ZERO, SLOT_MASK, type PageTable } from './bbolt-page-table.js';

export interface BucketFacts {
  name: string;
  keys: number;
}

export interface DeepFacts {
  pageSize: number;
  /** The meta's high-water mark: pages in the file. */
  pages: number;
  /** pages × pageSize, what etcdctl reports as totalSize. */
  totalSize: number;
  /** Main revision of the last key of the `key` bucket (0 when empty), as etcdctl reports it. */
  revision: number;
  compactRevision?: number;
  /** Keys directly in the top-level buckets, nested bucket names included, as etcdctl counts them. */
  totalKeys: number;
  /** etcdctl's status hash: CRC-32C over each top-level bucket's name, keys and values in order. */
  hash?: number;
  consistentIndex?: number;
  term?: number;
  /** Member ids (hex) in the `members` bucket; etcd keeps no cluster id in its backend. */
  memberIds?: string[];
  clusterVersion?: string;
  storageVersion?: string;
  buckets: BucketFacts[];
  /** Pages below the high-water mark the tree does not use (on the freelist, or all of them with no freelist page). */
  freePages: number;
  /** With a freelist page: pages neither in use nor on it (bbolt's check calls them "unreachable unfreed"). */
  leakedPages: number;
}

export class Corrupt extends Error {}

export interface WalkInput {
  table: PageTable;
  elements: ElementStore;
  pageSize: number;
  root: number;
  /** The freelist page run and the ids it lists, when the meta names one. */
  freelist: { pgid: number; ids: Uint32Array; length: number } | undefined;
  buckets: Map<number, BucketRef[]>;
  cands: Map<number, Cand[]>;
  details: Map<number, string>;
}

const bitGet = (b: Uint8Array, i: number): boolean => (b[i >>> 3]! & (1 << (i & 7))) !== 0;
const bitSet = (b: Uint8Array, i: number): void => {
  b[i >>> 3]! |= 1 << (i & 7);
};
const bitClear = (b: Uint8Array, i: number): void => {
  b[i >>> 3]! &= ~(1 << (i & 7));
};

function describe(inp: WalkInput, p: number): string {
  const t = inp.table;
  switch (t.kind[p]) {
    case K_FREELIST:
      return 'a freelist page where a branch or leaf page belongs';
    case K_META:
      return 'a meta page where a branch or leaf page belongs';
    case K_ZERO:
      return 'the page header is all zeros';
    case K_BAD_ID:
      return `the page header says page ${t.aux(p)}`;
    case K_BAD_FLAGS:
      return `unknown page flags 0x${t.aux(p).toString(16)}`;
    case K_BAD_OVERFLOW:
      return `${t.aux(p)} overflow pages run past the end (${t.pages} pages)`;
    case K_BAD:
      return inp.details.get(p) ?? 'invalid page structure';
    default:
      return 'page never parsed';
  }
}

/**
 * Order of two keys known by length and 16-byte prefix: -1, 0, 1, or NaN when both are longer than the
 * prefix and the prefixes are equal (the order is then not provable from what was kept).
 */
function comparePrefixed(a: Uint8Array, ao: number, alen: number, b: Uint8Array, bo: number, blen: number): number {
  const na = Math.min(alen, PREFIX);
  const nb = Math.min(blen, PREFIX);
  const n = Math.min(na, nb);
  for (let i = 0; i < n; i++) {
    const x = a[ao + i]!;
    const y = b[bo + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  if (alen <= PREFIX && blen <= PREFIX) return alen === blen ? 0 : alen < blen ? -1 : 1;
  if (alen <= PREFIX) return -1;
  if (blen <= PREFIX) return 1;
  return NaN;
}

/** etcd's main revision: the first 8 bytes of a revision key, big-endian int64. */
function mainRevision(prefix: Uint8Array, off: number): number {
  return Number(Buffer.from(prefix.buffer, prefix.byteOffset + off, 8).readBigInt64BE(0));
}

/**
 * Resolves the tree from the root bucket; throws Corrupt with one line saying what and where. The table is
 * sealed: a branch or leaf page's facts are in its slot s (PageTable.slot), entry s & SLOT_MASK of t.at(s).
 */
export function walk(inp: WalkInput): DeepFacts {
  const t = inp.table;
  const el = inp.elements;
  const pages = t.pages;
  const reach = new Uint8Array((pages + 7) >>> 3);
  const onPath = new Uint8Array((pages + 7) >>> 3);
  bitSet(reach, 0);
  bitSet(reach, 1);
  let freed: Uint8Array | undefined;
  if (inp.freelist) {
    const fl = inp.freelist;
    freed = new Uint8Array((pages + 7) >>> 3);
    for (let i = 0; i < fl.length; i++) {
      const id = fl.ids[i]!;
      if (bitGet(freed, id)) throw new Corrupt(`freelist page ${fl.pgid}: lists page ${id} twice`);
      bitSet(freed, id);
    }
    const fs = t.slot(fl.pgid);
    for (let q = fl.pgid; q <= fl.pgid + t.at(fs).overflow[fs & SLOT_MASK]!; q++) {
      if (bitGet(freed, q)) throw new Corrupt(`freelist page ${fl.pgid}: lists page ${q}, which holds the freelist itself`);
      bitSet(reach, q);
    }
  }

  const stackPg: number[] = [];
  const stackSlot: number[] = [];
  const stackIdx: number[] = [];
  let where = '';
  let prevLeaf = -1;
  let prevSlot = 0;
  const ctx = (parent: number, idx: number): string => (parent < 0 ? `root of ${where}` : `element ${idx} of branch page ${parent}, ${where}`);
  /** Takes page p into the tree being walked (its parent in slot ps); a leaf goes to `leaf`, a branch onto the stack. */
  const enter = (p: number, parent: number, ps: number, idx: number, leaf: (p: number, s: number) => void): void => {
    const k = t.kind[p]!;
    if (k !== K_BRANCH && k !== K_LEAF) throw new Corrupt(`page ${p} (${ctx(parent, idx)}): ${describe(inp, p)}`);
    if (bitGet(onPath, p)) throw new Corrupt(`page ${p} (${ctx(parent, idx)}): cycle, the page is its own ancestor`);
    const s = t.slot(p);
    const c = t.at(s);
    const i = s & SLOT_MASK;
    const last = p + c.overflow[i]!;
    for (let q = p; q <= last; q++) {
      if (bitGet(reach, q)) throw new Corrupt(`page ${q} (${ctx(parent, idx)}): referenced twice`);
      if (freed && bitGet(freed, q)) throw new Corrupt(`page ${q} (${ctx(parent, idx)}): in use and on the freelist`);
      bitSet(reach, q);
    }
    if (parent >= 0) {
      if (c.count[i] === 0) throw new Corrupt(`page ${p} (${ctx(parent, idx)}): empty page below a branch`);
      if (c.firstHash[i] !== el.keyHash[t.at(ps).aux[ps & SLOT_MASK]! + idx])
        throw new Corrupt(`page ${p} (${ctx(parent, idx)}): first key differs from the key the branch holds for it`);
    }
    if (k === K_BRANCH) {
      bitSet(onPath, p);
      stackPg.push(p);
      stackSlot.push(s);
      stackIdx.push(0);
      return;
    }
    if (c.count[i]! > 0) {
      if (prevLeaf >= 0) {
        const pc = t.at(prevSlot);
        const pi = prevSlot & SLOT_MASK;
        const cmp = comparePrefixed(pc.lastPre, pi * PREFIX, pc.lastLen[pi]!, c.firstPre, i * PREFIX, c.firstLen[i]!);
        if (cmp >= 0) throw new Corrupt(`page ${p} (${ctx(parent, idx)}): first key is not greater than the last key of page ${prevLeaf}`);
      }
      prevLeaf = p;
      prevSlot = s;
    }
    leaf(p, s);
  };
  /** Walks one bucket's page tree in key order; `leaf` sees each leaf page and its slot. */
  const tree = (root: number, name: string, leaf: (p: number, s: number) => void): void => {
    where = name;
    prevLeaf = -1;
    enter(root, -1, 0, 0, leaf);
    while (stackPg.length > 0) {
      const top = stackPg.length - 1;
      const p = stackPg[top]!;
      const s = stackSlot[top]!;
      const c = t.at(s);
      const i = stackIdx[top]!;
      if (i < c.count[s & SLOT_MASK]!) {
        stackIdx[top] = i + 1;
        enter(el.child[c.aux[s & SLOT_MASK]! + i]!, p, s, i, leaf);
      } else {
        bitClear(onPath, p);
        stackPg.pop();
        stackSlot.pop();
        stackIdx.pop();
      }
    }
  };

  const top: BucketRef[] = [];
  tree(inp.root, 'the root bucket', (p, s) => {
    if (t.at(s).flags[s & SLOT_MASK]! & F_PLAIN) throw new Corrupt(`page ${p} (leaf of the root bucket): holds a plain key where only buckets belong`);
    const refs = inp.buckets.get(p);
    if (refs) for (const r of refs) top.push(r);
  });

  let hash = 0;
  let totalKeys = 0;
  let revision = 0;
  const cands: Array<{ bucket: string; cand: Cand }> = [];
  const nested: Array<{ ref: BucketRef; where: string }> = [];
  const buckets: BucketFacts[] = [];
  for (const b of top) {
    const name = `bucket ${JSON.stringify(b.name)}`;
    const isKey = b.name === 'key';
    const notRevision = (at: string): Corrupt => new Corrupt(`${at} (${name}): holds a key that is not an etcd revision (8-byte main, '_', 8-byte sub)`);
    let keys = 0;
    if (t.hashing) hash = crc32cCombine(hash, b.nameCrc, b.nameLen);
    if (b.inline) {
      const s = b.inline;
      keys = s.count;
      if (t.hashing) hash = crc32cCombine(hash, s.crc, s.crcLen);
      if (isKey && s.count > 0) {
        if (!(s.flags & F_REV_KEYS)) throw notRevision('inline page');
        revision = mainRevision(s.lastPrefix, 0);
      }
      for (const c of s.cands ?? []) cands.push({ bucket: b.name, cand: c });
    } else {
      let lastSlot = -1; // of the last non-empty leaf
      tree(b.root, name, (p, s) => {
        const sl = t.at(s);
        const i = s & SLOT_MASK;
        const n = sl.count[i]!;
        keys += n;
        if (t.hashing) hash = crc32cCombine(hash, sl.aux[i]!, sl.crcLen[i]!);
        if (isKey && n > 0) {
          if (!(sl.flags[i]! & F_REV_KEYS)) throw notRevision(`page ${p}`);
          lastSlot = s;
        }
        const cs = inp.cands.get(p);
        if (cs) for (const c of cs) cands.push({ bucket: b.name, cand: c });
        const rs = inp.buckets.get(p);
        if (rs) for (const r of rs) nested.push({ ref: r, where: name });
      });
      if (lastSlot >= 0) revision = mainRevision(t.at(lastSlot).lastPre, (lastSlot & SLOT_MASK) * PREFIX);
    }
    totalKeys += keys;
    buckets.push({ name: b.name, keys });
  }
  // Nested buckets: etcdctl neither hashes nor counts their contents, but bbolt still reads their pages.
  while (nested.length > 0) {
    const { ref, where: outer } = nested.pop()!;
    if (ref.inline) continue;
    const inner = `${outer} / ${JSON.stringify(ref.name)}`;
    tree(ref.root, inner, (p) => {
      const rs = inp.buckets.get(p);
      if (rs) for (const r of rs) nested.push({ ref: r, where: inner });
    });
  }

  let freePages = 0;
  let leakedPages = 0;
  for (let p = 2; p < pages; p++) {
    if (bitGet(reach, p)) continue;
    if (!freed || bitGet(freed, p)) freePages++;
    else leakedPages++;
  }

  const facts: DeepFacts = {
    pageSize: inp.pageSize,
    pages,
    totalSize: pages * inp.pageSize,
    revision,
    totalKeys,
    buckets,
    freePages,
    leakedPages,
  };
  if (t.hashing) facts.hash = hash;
  addEtcdFacts(facts, cands);
  return facts;
}

function addEtcdFacts(facts: DeepFacts, cands: Array<{ bucket: string; cand: Cand }>): void {
  const u64 = (v: Buffer | undefined): number | undefined => (v?.length === 8 ? Number(v.readBigUInt64BE(0)) : undefined);
  const rev = (v: Buffer | undefined): number | undefined => (v && v.length >= 8 ? Number(v.readBigInt64BE(0)) : undefined);
  const members: string[] = [];
  for (const { bucket, cand } of cands) {
    const v = cand.value;
    if (bucket === 'meta') {
      if (cand.key === 'consistent_index') facts.consistentIndex = u64(v);
      else if (cand.key === 'term') facts.term = u64(v);
      else if (cand.key === 'finishedCompactRev') facts.compactRevision = rev(v);
      else if (cand.key === 'storageVersion' && v) facts.storageVersion = v.toString('utf8');
    } else if (bucket === 'cluster' && cand.key === 'clusterVersion' && v) facts.clusterVersion = v.toString('utf8');
    else if (bucket === 'members' && /^[0-9a-f]{1,16}$/.test(cand.key)) members.push(cand.key);
  }
  for (const k of ['consistentIndex', 'term', 'compactRevision'] as const) if (facts[k] === undefined) delete facts[k];
  if (members.length > 0) facts.memberIds = members;
}
