// Hand-made zips, for tests that need what the producers never write: malformed zips with every field's
// offset known (so a test can damage exactly one), and the shapes other writers use (Zip64 records on small
// files, sizes in the local header, comments, stored entries). Not a model of Go's archive/zip: zips as
// rke-tools and k3s write them come from Go itself (go-zip.ts).
import { createReadStream } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

export interface ZipInput {
  name: string;
  /** In-memory content, or… */
  data?: Uint8Array | string;
  /** …a file streamed from disk. */
  path?: string;
  /** Default 'deflate'. */
  method?: 'store' | 'deflate';
}

export interface WriteZipOptions {
  /** Zip64 extras and end records even when nothing needs them (forced anyway past 4 GiB). */
  zip64?: boolean;
  /** Sizes and CRC after the data, zeros in the local header (Go's archive/zip does this). Default true. */
  dataDescriptor?: boolean;
  /** Default 1970-01-01T00:00:00Z, as RKE writes. */
  mtime?: Date;
  comment?: string;
  /** Deflate level, default zlib's. */
  level?: number;
  /** Largest single write. Default 64 KiB. */
  chunkSize?: number;
}

export interface WrittenEntry {
  name: string;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  dataOffset: number;
  centralHeaderOffset: number;
}

/** Where everything landed, so tests can damage precise fields. */
export interface WrittenZip {
  size: number;
  entries: WrittenEntry[];
  cdOffset: number;
  cdSize: number;
  eocdOffset: number;
  zip64EocdOffset?: number;
}

interface Sink {
  pos: number;
  write(buf: Buffer): Promise<void>;
  patch(buf: Buffer, at: number): Promise<void>;
}

const U32 = 0xffffffff;
const RKE_EPOCH = new Date(0);

function dosDateTime(d: Date): { date: number; time: number } {
  // Years before 1980 wrap around in 16 bits, as in Go's archive/zip (RKE's 1970 dates look like this).
  const date = (d.getUTCDate() + ((d.getUTCMonth() + 1) << 5) + ((d.getUTCFullYear() - 1980) << 9)) & 0xffff;
  const time = ((d.getUTCSeconds() >> 1) + (d.getUTCMinutes() << 5) + (d.getUTCHours() << 11)) & 0xffff;
  return { date, time };
}

function extendedTimestamp(mtime: Date): Buffer {
  const b = Buffer.alloc(9);
  b.writeUInt16LE(0x5455, 0);
  b.writeUInt16LE(5, 2);
  b.writeUInt8(1, 4);
  b.writeUInt32LE(Math.max(0, Math.floor(mtime.getTime() / 1000)) >>> 0, 5);
  return b;
}

function zip64Extra(values: number[]): Buffer {
  const b = Buffer.alloc(4 + 8 * values.length);
  b.writeUInt16LE(0x0001, 0);
  b.writeUInt16LE(8 * values.length, 2);
  values.forEach((v, i) => b.writeBigUInt64LE(BigInt(v), 4 + 8 * i));
  return b;
}

async function* source(input: ZipInput, chunk: number): AsyncGenerator<Buffer> {
  if (input.path !== undefined) {
    for await (const b of createReadStream(input.path, { highWaterMark: Math.max(chunk, 1 << 16) })) yield b as Buffer;
    return;
  }
  const data = typeof input.data === 'string' ? Buffer.from(input.data) : Buffer.from(input.data ?? new Uint8Array());
  for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
}

async function inputSize(input: ZipInput): Promise<number> {
  if (input.path !== undefined) return (await stat(input.path)).size;
  return typeof input.data === 'string' ? Buffer.byteLength(input.data) : (input.data?.length ?? 0);
}

async function writeTo(sink: Sink, inputs: ZipInput[], opts: WriteZipOptions): Promise<WrittenZip> {
  const mtime = opts.mtime ?? RKE_EPOCH;
  const { date, time } = dosDateTime(mtime);
  const descriptor = opts.dataDescriptor ?? true;
  const chunk = opts.chunkSize ?? 1 << 16;
  const written: WrittenEntry[] = [];
  const centrals: Buffer[] = [];
  let anyZip64 = opts.zip64 ?? false;

  for (const input of inputs) {
    const method = input.method === 'store' ? 0 : 8;
    const zip64 = (opts.zip64 ?? false) || (await inputSize(input)) >= 0xffff0000 || sink.pos >= U32;
    anyZip64 ||= zip64;
    const name = Buffer.from(input.name, 'utf8');
    const utf8 = /[^\x20-\x7e]/.test(input.name) ? 0x0800 : 0;
    const flags = utf8 | (descriptor ? 0x0008 : 0);
    const version = zip64 ? 45 : 20;
    const localZip64 = zip64 ? zip64Extra([0, 0]) : Buffer.alloc(0);
    const localExtra = Buffer.concat([extendedTimestamp(mtime), localZip64]);

    const header = Buffer.alloc(30);
    header.writeUInt32LE(0x04034b50, 0);
    header.writeUInt16LE(version, 4);
    header.writeUInt16LE(flags, 6);
    header.writeUInt16LE(method, 8);
    header.writeUInt16LE(time, 10);
    header.writeUInt16LE(date, 12);
    if (zip64) {
      header.writeUInt32LE(U32, 18);
      header.writeUInt32LE(U32, 22);
    }
    header.writeUInt16LE(name.length, 26);
    header.writeUInt16LE(localExtra.length, 28);
    const localHeaderOffset = sink.pos;
    const local = Buffer.concat([header, name, localExtra]);
    await sink.write(local);
    const dataOffset = sink.pos;

    let crc = 0;
    let usize = 0;
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const b of source(input, chunk)) {
        crc = zlib.crc32(b, crc);
        usize += b.length;
        yield b;
      }
    }
    if (method === 0) {
      for await (const b of counted()) await sink.write(b);
    } else {
      const deflate = zlib.createDeflateRaw(opts.level === undefined ? {} : { level: opts.level });
      await pipeline(Readable.from(counted()), deflate, async (out: AsyncIterable<Buffer>) => {
        for await (const b of out) await sink.write(b);
      });
    }
    const csize = sink.pos - dataOffset;

    if (descriptor) {
      const d = Buffer.alloc(zip64 ? 24 : 16);
      d.writeUInt32LE(0x08074b50, 0);
      d.writeUInt32LE(crc, 4);
      if (zip64) {
        d.writeBigUInt64LE(BigInt(csize), 8);
        d.writeBigUInt64LE(BigInt(usize), 16);
      } else {
        d.writeUInt32LE(csize, 8);
        d.writeUInt32LE(usize, 12);
      }
      await sink.write(d);
    } else {
      local.writeUInt32LE(crc, 14);
      if (zip64) {
        const z = 30 + name.length + 9 + 4;
        local.writeBigUInt64LE(BigInt(usize), z);
        local.writeBigUInt64LE(BigInt(csize), z + 8);
      } else {
        local.writeUInt32LE(csize, 18);
        local.writeUInt32LE(usize, 22);
      }
      await sink.patch(local, localHeaderOffset);
    }

    const centralExtra = Buffer.concat([zip64 ? zip64Extra([usize, csize, localHeaderOffset]) : Buffer.alloc(0), extendedTimestamp(mtime)]);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE((3 << 8) | version, 4); // made by Unix
    c.writeUInt16LE(version, 6);
    c.writeUInt16LE(flags, 8);
    c.writeUInt16LE(method, 10);
    c.writeUInt16LE(time, 12);
    c.writeUInt16LE(date, 14);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(zip64 ? U32 : csize, 20);
    c.writeUInt32LE(zip64 ? U32 : usize, 24);
    c.writeUInt16LE(name.length, 28);
    c.writeUInt16LE(centralExtra.length, 30);
    c.writeUInt32LE((0o100600 << 16) >>> 0, 38);
    c.writeUInt32LE(zip64 ? U32 : localHeaderOffset, 42);
    centrals.push(Buffer.concat([c, name, centralExtra]));
    written.push({
      name: input.name,
      method,
      crc32: crc,
      compressedSize: csize,
      uncompressedSize: usize,
      localHeaderOffset,
      dataOffset,
      centralHeaderOffset: -1,
    });
  }

  const cdOffset = sink.pos;
  let at = cdOffset;
  centrals.forEach((c, i) => {
    written[i]!.centralHeaderOffset = at;
    at += c.length;
  });
  const central = Buffer.concat(centrals);
  await sink.write(central);
  const cdSize = central.length;
  const zip64 = anyZip64 || cdOffset >= U32 || inputs.length >= 0xffff;

  let zip64EocdOffset: number | undefined;
  if (zip64) {
    zip64EocdOffset = sink.pos;
    const r = Buffer.alloc(56 + 20);
    r.writeUInt32LE(0x06064b50, 0);
    r.writeBigUInt64LE(44n, 4);
    r.writeUInt16LE((3 << 8) | 45, 12);
    r.writeUInt16LE(45, 14);
    r.writeBigUInt64LE(BigInt(inputs.length), 24);
    r.writeBigUInt64LE(BigInt(inputs.length), 32);
    r.writeBigUInt64LE(BigInt(cdSize), 40);
    r.writeBigUInt64LE(BigInt(cdOffset), 48);
    r.writeUInt32LE(0x07064b50, 56);
    r.writeBigUInt64LE(BigInt(zip64EocdOffset), 64);
    r.writeUInt32LE(1, 72);
    await sink.write(r);
  }
  const comment = Buffer.from(opts.comment ?? '', 'utf8');
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(zip64 ? 0xffff : inputs.length, 8);
  e.writeUInt16LE(zip64 ? 0xffff : inputs.length, 10);
  e.writeUInt32LE(zip64 ? U32 : cdSize, 12);
  e.writeUInt32LE(zip64 ? U32 : cdOffset, 16);
  e.writeUInt16LE(comment.length, 20);
  const eocdOffset = sink.pos;
  await sink.write(Buffer.concat([e, comment]));
  const out: WrittenZip = { size: sink.pos, entries: written, cdOffset, cdSize, eocdOffset };
  if (zip64EocdOffset !== undefined) out.zip64EocdOffset = zip64EocdOffset;
  return out;
}

/** Writes a zip to `path`, streaming file inputs: for zips too large to build in memory. */
export async function writeZip(path: string, inputs: ZipInput[], opts: WriteZipOptions = {}): Promise<WrittenZip> {
  const chunk = opts.chunkSize ?? 1 << 16;
  const fh: FileHandle = await open(path, 'w', 0o600);
  try {
    const sink: Sink = {
      pos: 0,
      async write(buf) {
        for (let i = 0; i < buf.length; i += chunk) {
          const part = buf.subarray(i, i + chunk);
          let done = 0;
          while (done < part.length) done += (await fh.write(part, done, part.length - done, this.pos + done)).bytesWritten;
          this.pos += part.length;
        }
      },
      async patch(buf, at) {
        await fh.write(buf, 0, buf.length, at);
      },
    };
    return await writeTo(sink, inputs, opts);
  } finally {
    await fh.close();
  }
}

/** The same zip in memory, for unit tests. */
export async function zipBuffer(inputs: ZipInput[], opts: WriteZipOptions = {}): Promise<{ buffer: Buffer; layout: WrittenZip }> {
  const parts: Buffer[] = [];
  const patches: Array<[Buffer, number]> = [];
  const sink: Sink = {
    pos: 0,
    async write(buf) {
      parts.push(Buffer.from(buf));
      this.pos += buf.length;
    },
    async patch(buf, at) {
      patches.push([Buffer.from(buf), at]);
    },
  };
  const layout = await writeTo(sink, inputs, opts);
  const buffer = Buffer.concat(parts);
  for (const [buf, at] of patches) buf.copy(buffer, at);
  return { buffer, layout };
}
