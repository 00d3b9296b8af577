// Snapshot-shaped test data: real fixtures from `scripts/make-fixtures.sh`, and synthetic files with crafted
// bbolt meta pages (right page count and checksums) + filler pages + SHA-256 trailer, any size, for tests
// and benchmarks. Written independently of agent/verify.ts so the two check each other.
import { createHash, randomFillSync } from 'node:crypto';
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

export const FIXTURES_DIR = fileURLToPath(new URL('../fixtures/', import.meta.url));
export const fixturePath = (name: string): string => FIXTURES_DIR + name;

export const META_MAGIC = 0xed0cdaed;
/** Where etcdctl-made snapshots keep things, for tests that flip bytes on purpose. */
export const META_CHECKSUM_OFFSET = 72;
export const META_PGID_OFFSET = 56;
export const META_TXID_OFFSET = 64;
const NO_FREELIST = 0xffffffffffffffffn; // etcd runs bbolt with NoFreelistSync: the meta says "no freelist page"

export function fnv1a64(bytes: Uint8Array): bigint {
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h;
}

export interface MetaOptions {
  pageSize: number;
  id: 0 | 1;
  pgid: number;
  txid: number;
  root?: number;
  version?: number;
}

/** One bbolt meta page as `Tx.WriteTo` writes it. */
export function metaPage(o: MetaOptions): Buffer {
  const p = Buffer.alloc(o.pageSize);
  p.writeBigUInt64LE(BigInt(o.id), 0);
  p.writeUInt16LE(0x04, 8);
  p.writeUInt32LE(META_MAGIC, 16);
  p.writeUInt32LE(o.version ?? 2, 20);
  p.writeUInt32LE(o.pageSize, 24);
  p.writeUInt32LE(0, 28);
  p.writeBigUInt64LE(BigInt(o.root ?? Math.max(2, o.pgid - 1)), 32);
  p.writeBigUInt64LE(0n, 40);
  p.writeBigUInt64LE(NO_FREELIST, 48);
  p.writeBigUInt64LE(BigInt(o.pgid), 56);
  p.writeBigUInt64LE(BigInt(o.txid), 64);
  p.writeBigUInt64LE(fnv1a64(p.subarray(16, 72)), 72);
  return p;
}

/** Both meta pages: page 1 has txid − 1, like bbolt's `Tx.WriteTo` (and every etcd snapshot). */
export function metaPages(pageSize: number, pgid: number, txid = 7): Buffer {
  return Buffer.concat([metaPage({ pageSize, id: 0, pgid, txid }), metaPage({ pageSize, id: 1, pgid, txid: txid - 1 })]);
}

export function withTrailer(body: Uint8Array): Buffer {
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** A small snapshot-shaped buffer: `pages` pages in all (two of them meta), then the trailer. */
export function syntheticSnapshot(opts: { pages?: number; pageSize?: number; txid?: number; random?: boolean } = {}): Buffer {
  const pageSize = opts.pageSize ?? 4096;
  const pages = opts.pages ?? 8;
  const body = Buffer.alloc(pages * pageSize);
  metaPages(pageSize, pages, opts.txid).copy(body);
  if (opts.random) randomFillSync(body, 2 * pageSize);
  return withTrailer(body);
}

/** A copy of `buf` with the byte at `offset` (negative: from the end) inverted. */
export function flipByte(buf: Buffer, offset: number): Buffer {
  const out = Buffer.from(buf);
  const at = offset < 0 ? out.length + offset : offset;
  out[at] = out[at]! ^ 0xff;
  return out;
}

export interface SyntheticFile {
  path: string;
  size: number;
  sha256: string;
  pages: number;
  pageSize: number;
}

/**
 * Writes a snapshot-shaped file of about `bytes` bytes (rounded down to whole pages, plus the trailer)
 * without holding it in memory. `fill: 'random'` repeats one random MiB, which deflate cannot shrink
 * (its window is 32 KiB): a worst case for zip benchmarks; 'zero' compresses ~1000:1.
 */
export async function writeSyntheticSnapshot(
  path: string,
  opts: { bytes: number; pageSize?: number; fill?: 'zero' | 'random'; txid?: number },
): Promise<SyntheticFile> {
  const pageSize = opts.pageSize ?? 4096;
  const pages = Math.max(2, Math.floor(opts.bytes / pageSize));
  const total = pages * pageSize;
  const block = Buffer.alloc(1 << 20);
  if (opts.fill === 'random') randomFillSync(block);
  const hash = createHash('sha256');
  const fh = await open(path, 'w', 0o600);
  try {
    let pos = 0;
    const put = async (buf: Buffer): Promise<void> => {
      hash.update(buf);
      let done = 0;
      while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, pos + done)).bytesWritten;
      pos += buf.length;
    };
    await put(metaPages(pageSize, pages, opts.txid));
    while (pos < total) await put(block.subarray(0, Math.min(block.length, total - pos)));
    await put(hash.copy().digest());
  } finally {
    await fh.close();
  }
  return { path, size: total + 32, sha256: hash.digest('hex'), pages, pageSize };
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}
