// A zip holding a snapshot (RKE, RKE2/k3s with compression): its directory is read first from the tail (a
// few KiB), then every entry's data is streamed in file order: inflated, sized and CRC-checked, and the
// snapshot entry's bytes handed to the raw checks.
import { basename } from 'node:path';
import zlib from 'node:zlib';
import { formatMismatch, reject, sniffFormat, ZIP_LOCAL_SIG, type DbInfo, type Rejected } from './format.js';
import type { DeepCheck } from './deep.js';
import { RawStream, TRAILER } from './raw.js';
import {
  FLAG_ENCRYPTED,
  FLAG_STRONG_ENCRYPTION,
  METHOD_DEFLATE,
  METHOD_STORE,
  ZipError,
  hex8,
  readLocalHeaders,
  readZipDirectory,
  type ReadAt,
  type ZipDirectory,
  type ZipEntry,
} from './zip.js';

const INFLATE_CHUNK = 256 << 10;

const couldBeZipStart = (head: Buffer): boolean => {
  const n = Math.min(4, head.length);
  return head.subarray(0, n).equals(ZIP_LOCAL_SIG.subarray(0, n));
};

function entryBase(name: string): string {
  const i = name.lastIndexOf('/');
  return i < 0 ? name : name.slice(i + 1);
}

function listNames(entries: ZipEntry[]): string {
  const names = entries.slice(0, 3).map((e) => e.name || '""');
  return entries.length > 3 ? `${names.join(', ')}, …` : names.join(', ');
}

/**
 * The entry holding the snapshot: the one named like the zip without `.zip` (RKE: `/backup/<name>`, RKE2:
 * `<name>`), else the only entry that is not an `.rkestate` or a directory.
 */
export function pickSnapshotEntry(entries: ZipEntry[], zipName?: string): ZipEntry | Rejected {
  if (zipName) {
    const want = basename(zipName).replace(/\.zip$/i, '');
    const named = entries.filter((e) => !e.name.endsWith('/') && entryBase(e.name) === want);
    if (named.length === 1) return named[0]!;
  }
  const candidates = entries.filter(isCandidate);
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length === 0) return reject('format', `no snapshot entry in zip (entries: ${listNames(entries) || 'none'})`);
  return reject('format', `cannot tell which of ${candidates.length} zip entries is the snapshot (${listNames(candidates)})`);
}

const isCandidate = (e: ZipEntry): boolean => !e.name.endsWith('/') && !e.name.endsWith('.rkestate');

function checkEntries(entries: ZipEntry[]): Rejected | undefined {
  for (const e of entries) {
    if (e.flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) return reject('format', `zip entry ${e.name} is encrypted`);
    if (e.method !== METHOD_STORE && e.method !== METHOD_DEFLATE) {
      return reject('format', `zip entry ${e.name} uses unsupported compression method ${e.method}`);
    }
    if (e.method === METHOD_STORE && e.compressedSize !== e.uncompressedSize) {
      return reject('format', `stored zip entry ${e.name} has ${e.compressedSize} bytes but declares ${e.uncompressedSize}`);
    }
  }
  return undefined;
}

export interface OpenedZip {
  dir: ZipDirectory;
  /** Undefined when no name was given and the choice is ambiguous (quickCheck only). */
  snapshot: ZipEntry | undefined;
}

/** Reads the end records, the central directory and the local headers; picks the snapshot entry. */
export async function openZip(read: ReadAt, size: number, name: string | undefined, needSnapshot: boolean): Promise<OpenedZip | Rejected> {
  if (size === 0) return reject('truncated', 'empty file');
  const head = await read(0, Math.min(size, 64));
  if (!couldBeZipStart(head)) {
    return formatMismatch(sniffFormat(head), 'zip') ?? reject('format', 'not a zip (no local header signature at offset 0)');
  }
  try {
    const dir = await readZipDirectory(read, size);
    await readLocalHeaders(read, dir);
    const bad = checkEntries(dir.entries);
    if (bad) return bad;
    const picked = pickSnapshotEntry(dir.entries, name);
    if (!('ok' in picked)) return { dir, snapshot: picked };
    // quickCheck knows no name: several candidates only matter to the full verification, which has it.
    if (!needSnapshot && dir.entries.filter(isCandidate).length > 1) return { dir, snapshot: undefined };
    return picked;
  } catch (err) {
    if (err instanceof ZipError) return reject(err.reason, err.message);
    throw err;
  }
}

/** Inflates (or passes through) one entry's data, checking size and CRC, feeding the snapshot checker. */
class EntrySink {
  failure: Rejected | undefined;
  /** the deep check's facts, once the snapshot entry passed */
  db: DbInfo | undefined;
  private crc = 0;
  private produced = 0;
  private readonly inflater: zlib.InflateRaw | undefined;
  private readonly done: Promise<void> | undefined;

  constructor(
    readonly entry: ZipEntry,
    private readonly raw: RawStream | undefined,
  ) {
    if (entry.method !== METHOD_DEFLATE) return;
    const inflater = zlib.createInflateRaw({ chunkSize: INFLATE_CHUNK });
    this.inflater = inflater;
    inflater.on('data', (buf: Buffer) => this.output(buf));
    this.done = new Promise<void>((resolve) => {
      inflater.once('end', resolve);
      inflater.once('error', (err: NodeJS.ErrnoException) => {
        // Every declared compressed byte was there (the end records prove the zip complete), so a stream
        // that wants more is damaged, not unfinished.
        this.fail(
          err.code === 'Z_BUF_ERROR'
            ? reject('corrupt', `zip entry ${entry.name}: deflate stream does not end within its ${entry.compressedSize} bytes`)
            : reject('corrupt', `zip entry ${entry.name}: invalid deflate data (${err.message})`),
        );
        resolve();
      });
    });
  }

  private fail(r: Rejected): void {
    this.failure ??= r;
  }

  private output(buf: Buffer): void {
    if (this.failure) return;
    this.produced += buf.length;
    if (this.produced > this.entry.uncompressedSize) {
      this.fail(reject('corrupt', `zip entry ${this.entry.name} inflates to more than its declared ${this.entry.uncompressedSize} bytes`));
      return;
    }
    this.crc = zlib.crc32(buf, this.crc);
    // The snapshot's own verdict waits for finish(): the zip's size and CRC are judged first.
    this.raw?.update(buf);
  }

  /** Resolves once `buf` is consumed, so the caller may reuse it. */
  write(buf: Buffer): Promise<void> | undefined {
    if (this.failure) return undefined;
    if (!this.inflater) {
      this.output(buf);
      return undefined;
    }
    const inflater = this.inflater;
    // zlib drops the write callback when it fails mid-chunk; `done` settles on that error.
    return Promise.race([new Promise<void>((resolve) => inflater.write(buf, () => resolve())), this.done!]);
  }

  async finish(): Promise<Rejected | undefined> {
    if (this.inflater && !this.failure) {
      this.inflater.end();
      await this.done;
    }
    if (this.failure) return this.failure;
    const e = this.entry;
    if (this.inflater && this.inflater.bytesWritten < e.compressedSize) {
      return reject('corrupt', `zip entry ${e.name}: ${e.compressedSize - this.inflater.bytesWritten} bytes of data after the end of its deflate stream`);
    }
    const short = this.produced < e.uncompressedSize;
    // A damaged deflate stream can end cleanly but early: the CRC tells damage from a short entry.
    if (this.crc !== e.crc32) {
      const held = short ? ` (holds ${this.produced} of ${e.uncompressedSize} bytes)` : '';
      return reject('corrupt', `zip entry ${e.name}: CRC-32 ${hex8(this.crc)} does not match the declared ${hex8(e.crc32)}${held}`);
    }
    if (short) return reject('truncated', `zip entry ${e.name} holds ${this.produced} bytes, declares ${e.uncompressedSize}`);
    if (this.raw) {
      const r = this.raw.finish();
      if ('ok' in r) return prefixed(e, r);
      this.db = r.db;
    }
    return undefined;
  }

  destroy(): void {
    this.inflater?.destroy();
  }
}

const prefixed = (e: ZipEntry, r: Rejected): Rejected => reject(r.reason, `zip entry ${e.name}: ${r.detail}`);

/**
 * The data of every entry, fed in file order (bytes of local headers and the directory pass by). Memory is
 * fixed: one inflater per entry, no buffering beyond zlib's own.
 */
export class ZipStream {
  private readonly sinks: EntrySink[];
  private next = 0; // first sink whose data has not been fully fed
  private pos = 0;
  private failure: Rejected | undefined;

  constructor(
    private readonly opened: OpenedZip,
    deep?: DeepCheck,
  ) {
    const snapshot = opened.snapshot!;
    this.sinks = [...opened.dir.entries]
      .sort((a, b) => a.dataOffset - b.dataOffset)
      .map(
        (e) =>
          new EntrySink(e, e === snapshot ? new RawStream(e.uncompressedSize, true, undefined, deep?.(Math.max(0, e.uncompressedSize - TRAILER))) : undefined),
      );
  }

  /** Resolves once `chunk` is consumed (the caller may reuse it); a rejection stops the stream. */
  async update(chunk: Buffer): Promise<Rejected | undefined> {
    if (this.failure) return this.failure;
    const { pos } = this;
    const end = pos + chunk.length;
    const writes: Promise<void>[] = [];
    for (let k = this.next; k < this.sinks.length; k++) {
      const e = this.sinks[k]!.entry;
      if (e.dataOffset >= end) break;
      const from = Math.max(e.dataOffset, pos);
      const to = Math.min(e.dataOffset + e.compressedSize, end);
      if (to > from) {
        const w = this.sinks[k]!.write(chunk.subarray(from - pos, to - pos));
        if (w) writes.push(w);
      }
    }
    await Promise.all(writes);
    this.pos = end;
    while (this.next < this.sinks.length && this.sinks[this.next]!.entry.dataOffset + this.sinks[this.next]!.entry.compressedSize <= end) {
      const bad = await this.sinks[this.next]!.finish();
      if (bad) return (this.failure = bad);
      this.next++;
    }
    for (let k = this.next; k < this.sinks.length; k++) {
      const bad = this.sinks[k]!.failure;
      if (bad) return (this.failure = bad);
    }
    return undefined;
  }

  async finish(): Promise<Rejected | { dbSize: number; entry: string; db?: DbInfo }> {
    if (this.failure) return this.failure;
    for (; this.next < this.sinks.length; this.next++) {
      const bad = await this.sinks[this.next]!.finish();
      if (bad) return bad;
    }
    const snapshot = this.opened.snapshot!;
    const sink = this.sinks.find((s) => s.entry === snapshot)!;
    return { dbSize: snapshot.uncompressedSize, entry: snapshot.name, ...(sink.db ? { db: sink.db } : {}) };
  }

  destroy(): void {
    for (const s of this.sinks) s.destroy();
  }
}
