// A small, independent bbolt reader and writer for tests of agent/snapshot/bbolt.ts: the reader finds the
// live pages of real snapshots (to damage exactly the bytes that matter), the writer makes databases etcd
// never makes (nested buckets, deep trees, freelist pages). Plain recursive code, no streaming, no sharing
// with the checker. The writer's output is accepted by bbolt itself (the tests run `etcdctl snapshot status`,
// which runs bbolt's consistency check, on it).
import { fnv1a64 } from './snapshots.js';

const HDR = 16;
const EL = 16;

export interface PageHeader {
  id: bigint;
  flags: number;
  count: number;
  overflow: number;
}

export function header(body: Buffer, ps: number, p: number): PageHeader {
  const o = p * ps;
  return { id: body.readBigUInt64LE(o), flags: body.readUInt16LE(o + 8), count: body.readUInt16LE(o + 10), overflow: body.readUInt32LE(o + 12) };
}

export interface LivePage {
  pgid: number;
  kind: 'branch' | 'leaf';
  bucket: string;
  parent: number | undefined;
  count: number;
  overflow: number;
  /** Byte offset (in the body) of the end of the node's data; bytes after it up to the run's end are unused. */
  dataEnd: number;
}

export interface BucketRef {
  name: string;
  /** Leaf page holding the bucket's element, and the element's index there. */
  leaf: number;
  index: number;
  /** Body offset of the bucket value (its 16-byte header). */
  valueAt: number;
  root: number;
}

export interface Live {
  ps: number;
  pages: number;
  root: number;
  metaTxids: [bigint, bigint];
  live: Map<number, LivePage>;
  buckets: BucketRef[];
}

/** Every page the tree of `body` uses (meta 0 assumed valid and newest, as in etcdctl snapshots). */
export function readLive(body: Buffer): Live {
  const ps = body.readUInt32LE(24);
  const out: Live = {
    ps,
    pages: Number(body.readBigUInt64LE(56)),
    root: Number(body.readBigUInt64LE(32)),
    metaTxids: [body.readBigUInt64LE(64), body.readBigUInt64LE(ps + 64)],
    live: new Map(),
    buckets: [],
  };
  const visit = (p: number, bucket: string, parent: number | undefined): void => {
    const h = header(body, ps, p);
    const base = p * ps;
    const kind = h.flags === 1 ? 'branch' : 'leaf';
    let end = base + HDR + EL * h.count;
    for (let i = 0; i < h.count; i++) {
      const e = base + HDR + EL * i;
      if (kind === 'branch') {
        end = e + body.readUInt32LE(e) + body.readUInt32LE(e + 4);
      } else {
        const ks = body.readUInt32LE(e + 8);
        const at = e + body.readUInt32LE(e + 4);
        end = at + ks + body.readUInt32LE(e + 12);
        if (body.readUInt32LE(e) === 1) {
          const name = body.toString('utf8', at, at + ks);
          const root = Number(body.readBigUInt64LE(at + ks));
          out.buckets.push({ name, leaf: p, index: i, valueAt: at + ks, root });
          if (root !== 0) visit(root, name, undefined);
        }
      }
    }
    out.live.set(p, { pgid: p, kind, bucket, parent, count: h.count, overflow: h.overflow, dataEnd: end });
    if (kind === 'branch') for (let i = 0; i < h.count; i++) visit(Number(body.readBigUInt64LE(base + HDR + EL * i + 8)), bucket, p);
  };
  visit(out.root, '', undefined);
  return out;
}

/** Pages neither meta nor used by the tree (overflow pages of live runs count as used). */
export function freePages(l: Live): number[] {
  const used = new Set<number>([0, 1]);
  for (const p of l.live.values()) for (let q = p.pgid; q <= p.pgid + p.overflow; q++) used.add(q);
  const free: number[] = [];
  for (let p = 2; p < l.pages; p++) if (!used.has(p)) free.push(p);
  return free;
}

/** Rewrites both meta pages' field at `off` (u64) and their checksums. */
export function setMetaField(body: Buffer, off: number, value: bigint): void {
  const ps = body.readUInt32LE(24);
  for (const m of [0, ps]) {
    body.writeBigUInt64LE(value, m + off);
    body.writeBigUInt64LE(fnv1a64(body.subarray(m + 16, m + 72)), m + 72);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Writer.

/** A bucket: keys (latin1, so any byte can be written) map to values (Buffer or string) or to nested buckets. */
export interface Tree {
  [key: string]: Buffer | string | Tree;
}

export interface WriteOptions {
  pageSize?: number;
  /** Buckets (by path, "a/b") to store inline; bbolt inlines small buckets without nested buckets. */
  inline?: (path: string) => boolean;
  /** Most elements per node: small values make deep trees. */
  fanout?: number;
  /** Free pages to add after the tree, filled with this byte. */
  freePages?: number;
  /** Write a freelist page listing the free pages (else the meta says "no freelist", as etcd runs bbolt). */
  freelist?: boolean;
  txid?: number;
}

interface Item {
  key: Buffer;
  value: Buffer;
  flags: number;
  child?: number;
}

/** An etcd revision key (8-byte main, '_', 8-byte sub) as a latin1 string, for Tree keys. */
export function revKey(main: number, sub = 0): string {
  const b = Buffer.alloc(17);
  b.writeBigUInt64BE(BigInt(main), 0);
  b[8] = 0x5f;
  b.writeBigUInt64BE(BigInt(sub), 9);
  return b.toString('latin1');
}

export function writeBbolt(tree: Tree, o: WriteOptions = {}): Buffer {
  const ps = o.pageSize ?? 4096;
  const fanout = o.fanout ?? 64;
  const runs: Buffer[] = [];
  let next = 2;
  const node = (items: Item[], branch: boolean, forInline = false): Buffer => {
    let size = HDR + EL * items.length;
    for (const it of items) size += it.key.length + (branch ? 0 : it.value.length);
    const b = Buffer.alloc(forInline ? size : Math.ceil(size / ps) * ps);
    b.writeUInt16LE(branch ? 1 : 2, 8);
    b.writeUInt16LE(items.length, 10);
    let off = HDR + EL * items.length;
    items.forEach((it, i) => {
      const e = HDR + EL * i;
      if (branch) {
        b.writeUInt32LE(off - e, e);
        b.writeUInt32LE(it.key.length, e + 4);
        b.writeBigUInt64LE(BigInt(it.child!), e + 8);
      } else {
        b.writeUInt32LE(it.flags, e);
        b.writeUInt32LE(off - e, e + 4);
        b.writeUInt32LE(it.key.length, e + 8);
        b.writeUInt32LE(it.value.length, e + 12);
      }
      it.key.copy(b, off);
      off += it.key.length;
      if (!branch) {
        it.value.copy(b, off);
        off += it.value.length;
      }
    });
    return b;
  };
  const place = (b: Buffer): number => {
    const id = next;
    b.writeBigUInt64LE(BigInt(id), 0);
    b.writeUInt32LE(b.length / ps - 1, 12);
    runs.push(b);
    next += b.length / ps;
    return id;
  };
  const bucket = (t: Tree, path: string): number => {
    const items: Item[] = Object.keys(t)
      .sort((a, b) => Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')))
      .map((k) => {
        const v = t[k]!;
        const key = Buffer.from(k, 'latin1');
        if (typeof v === 'string' || Buffer.isBuffer(v)) return { key, value: Buffer.from(v), flags: 0 };
        const sub = path ? `${path}/${k}` : k;
        const value = Buffer.alloc(16);
        if (o.inline?.(sub)) {
          const inner = Object.keys(v)
            .sort((a, b) => Buffer.compare(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1')))
            .map((ik) => ({ key: Buffer.from(ik, 'latin1'), value: Buffer.from(v[ik] as Buffer | string), flags: 0 }));
          return { key, value: Buffer.concat([value, node(inner, false, true)]), flags: 1 };
        }
        value.writeBigUInt64LE(BigInt(bucket(v, sub)), 0);
        return { key, value, flags: 1 };
      });
    let level: Item[] = [];
    for (let i = 0; i < Math.max(1, items.length); i += fanout) {
      const part = items.slice(i, i + fanout);
      level.push({ key: part[0]?.key ?? Buffer.alloc(0), value: Buffer.alloc(0), flags: 0, child: place(node(part, false)) });
    }
    while (level.length > 1) {
      const up: Item[] = [];
      for (let i = 0; i < level.length; i += fanout) {
        const part = level.slice(i, i + fanout);
        up.push({ key: part[0]!.key, value: Buffer.alloc(0), flags: 0, child: place(node(part, true)) });
      }
      level = up;
    }
    return level[0]!.child!;
  };
  const root = bucket(tree, '');
  const free: number[] = [];
  for (let i = 0; i < (o.freePages ?? 0); i++) {
    free.push(next);
    runs.push(Buffer.alloc(ps, 0xa5));
    next++;
  }
  let freelist = 0xffffffffffffffffn;
  if (o.freelist) {
    const b = Buffer.alloc(Math.ceil((HDR + 8 * free.length) / ps) * ps);
    b.writeUInt16LE(0x10, 8);
    b.writeUInt16LE(free.length, 10);
    free.forEach((id, i) => b.writeBigUInt64LE(BigInt(id), HDR + 8 * i));
    freelist = BigInt(place(b));
  }
  const metas = Buffer.alloc(2 * ps);
  const txid = BigInt(o.txid ?? 5);
  for (const m of [0, 1]) {
    const at = m * ps;
    metas.writeBigUInt64LE(BigInt(m), at);
    metas.writeUInt16LE(0x04, at + 8);
    metas.writeUInt32LE(0xed0cdaed, at + 16);
    metas.writeUInt32LE(2, at + 20);
    metas.writeUInt32LE(ps, at + 24);
    metas.writeBigUInt64LE(BigInt(root), at + 32);
    metas.writeBigUInt64LE(freelist, at + 48);
    metas.writeBigUInt64LE(BigInt(next), at + 56);
    metas.writeBigUInt64LE(txid - BigInt(m), at + 64);
    metas.writeBigUInt64LE(fnv1a64(metas.subarray(at + 16, at + 72)), at + 72);
  }
  return Buffer.concat([metas, ...runs]);
}
