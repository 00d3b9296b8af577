// Zip central-directory reader: just enough of APPNOTE.TXT to find every entry of a snapshot zip and where its
// data lies, including Zip64 (snapshots pass 4 GiB). Reads only the tail and the local headers, never the data.

/** Reads `len` bytes at `pos` (fewer at the end): a file, a ranged GET, or a decrypted range. */
export type ReadAt = (pos: number, len: number) => Promise<Buffer>;

export type ZipProblemReason = 'truncated' | 'corrupt' | 'format';

/** A zip that cannot be read; `reason` uses the same words as the verifier's verdicts. */
export class ZipError extends Error {
  constructor(
    readonly reason: ZipProblemReason,
    message: string,
  ) {
    super(message);
    this.name = 'ZipError';
  }
}

export interface ZipEntry {
  index: number;
  name: string;
  nameBytes: Buffer;
  flags: number;
  method: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  localHeaderOffset: number;
  /** First byte of the entry's data, known after the local header was read. */
  dataOffset: number;
}

export interface ZipDirectory {
  entries: ZipEntry[];
  cdOffset: number;
  cdSize: number;
  eocdOffset: number;
  zip64: boolean;
}

export const SIG_LOCAL = 0x04034b50;
export const SIG_CENTRAL = 0x02014b50;
export const SIG_EOCD = 0x06054b50;
export const SIG_ZIP64_EOCD = 0x06064b50;
export const SIG_ZIP64_LOCATOR = 0x07064b50;
export const SIG_DATA_DESCRIPTOR = 0x08074b50;

export const METHOD_STORE = 0;
export const METHOD_DEFLATE = 8;
export const FLAG_ENCRYPTED = 0x0001;
export const FLAG_DATA_DESCRIPTOR = 0x0008;
export const FLAG_UTF8 = 0x0800;
export const FLAG_STRONG_ENCRYPTION = 0x0040;

const EOCD_LEN = 22;
const ZIP64_LOCATOR_LEN = 20;
const ZIP64_EOCD_LEN = 56;
const CENTRAL_LEN = 46;
const LOCAL_LEN = 30;
const MAX_COMMENT = 0xffff;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

export interface ReadDirectoryOptions {
  /** Snapshot zips hold one or two entries; refusing huge directories keeps the cheap check cheap. */
  maxEntries?: number;
  maxDirectoryBytes?: number;
}

function u64(buf: Buffer, off: number, what: string): number {
  const v = buf.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError('format', `${what} ${v} is out of range`);
  return Number(v);
}

/**
 * Offset of the end-of-central-directory record within `tail` (the last bytes of a file of `size` bytes), or
 * -1. Scans backwards so a comment may follow; the comment length must reach exactly the end of the file,
 * which also rejects the signature bytes turning up inside compressed data.
 */
export function findEocd(tail: Buffer, tailStart: number, size: number): number {
  for (let i = tail.length - EOCD_LEN; i >= 0; i--) {
    if (tail[i] !== 0x50 || tail.readUInt32LE(i) !== SIG_EOCD) continue;
    if (tailStart + i + EOCD_LEN + tail.readUInt16LE(i + 20) === size) return i;
  }
  return -1;
}

/** Finds the end records and parses the central directory. Throws ZipError. */
export async function readZipDirectory(read: ReadAt, size: number, opts: ReadDirectoryOptions = {}): Promise<ZipDirectory> {
  const maxEntries = opts.maxEntries ?? 64;
  const maxDirectoryBytes = opts.maxDirectoryBytes ?? 1 << 20;
  if (size === 0) throw new ZipError('truncated', 'empty file');
  if (size < EOCD_LEN) throw new ZipError('truncated', `only ${size} bytes, no end-of-central-directory record`);

  // Producers write no comment, so the last few KiB nearly always hold the end records; this is called
  // repeatedly while a zip is being written, so try small first.
  let tail: Buffer = Buffer.alloc(0);
  let tailStart = size;
  let at = -1;
  for (const want of [4096, EOCD_LEN + MAX_COMMENT + ZIP64_LOCATOR_LEN]) {
    const tailLen = Math.min(size, want);
    if (tailLen <= tail.length) break;
    tailStart = size - tailLen;
    tail = await read(tailStart, tailLen);
    if (tail.length < tailLen) throw new ZipError('truncated', `file shorter than ${size} bytes while reading`);
    at = findEocd(tail, tailStart, size);
    if (at >= ZIP64_LOCATOR_LEN || (at >= 0 && tailStart === 0)) break;
  }
  if (at < 0) throw new ZipError('truncated', 'no end-of-central-directory record (zip incomplete)');
  const eocdOffset = tailStart + at;

  const disk = tail.readUInt16LE(at + 4);
  const cdDisk = tail.readUInt16LE(at + 6);
  let entriesOnDisk = tail.readUInt16LE(at + 8);
  let count = tail.readUInt16LE(at + 10);
  let cdSize = tail.readUInt32LE(at + 12);
  let cdOffset = tail.readUInt32LE(at + 16);
  let zip64 = false;
  let directoryEnd = eocdOffset;

  const loc = at - ZIP64_LOCATOR_LEN;
  if (loc >= 0 && tail.readUInt32LE(loc) === SIG_ZIP64_LOCATOR) {
    zip64 = true;
    const recOffset = u64(tail, loc + 8, 'zip64 end record offset');
    if (tail.readUInt32LE(loc + 4) !== 0 || tail.readUInt32LE(loc + 16) > 1) {
      throw new ZipError('format', 'multi-disk zip is not supported');
    }
    const locatorOffset = tailStart + loc;
    if (recOffset + ZIP64_EOCD_LEN > locatorOffset) {
      throw new ZipError('format', `zip64 end record offset ${recOffset} overlaps its locator at ${locatorOffset}`);
    }
    const rec = await read(recOffset, ZIP64_EOCD_LEN);
    if (rec.length < ZIP64_EOCD_LEN || rec.readUInt32LE(0) !== SIG_ZIP64_EOCD) {
      throw new ZipError('format', `no zip64 end record at offset ${recOffset}`);
    }
    const recLen = u64(rec, 4, 'zip64 end record size');
    if (recLen < ZIP64_EOCD_LEN - 12 || recOffset + 12 + recLen > locatorOffset) {
      throw new ZipError('format', `zip64 end record claims ${recLen} bytes, which does not fit before its locator`);
    }
    if (rec.readUInt32LE(16) !== 0 || rec.readUInt32LE(20) !== 0) throw new ZipError('format', 'multi-disk zip is not supported');
    entriesOnDisk = u64(rec, 24, 'zip64 entry count');
    count = u64(rec, 32, 'zip64 entry count');
    cdSize = u64(rec, 40, 'zip64 central directory size');
    cdOffset = u64(rec, 48, 'zip64 central directory offset');
    directoryEnd = recOffset;
    // The 32-bit record must say the same or be saturated (Go saturates all, Python only what overflows).
    const same = (v32: number, max: number, v64: number): boolean => v32 === max || v32 === v64;
    if (
      disk !== 0 ||
      cdDisk !== 0 ||
      !same(tail.readUInt16LE(at + 8), U16_MAX, entriesOnDisk) ||
      !same(tail.readUInt16LE(at + 10), U16_MAX, count) ||
      !same(tail.readUInt32LE(at + 12), U32_MAX, cdSize) ||
      !same(tail.readUInt32LE(at + 16), U32_MAX, cdOffset)
    ) {
      throw new ZipError('format', 'end record disagrees with the zip64 end record');
    }
  } else {
    if (disk !== 0 || cdDisk !== 0) throw new ZipError('format', 'multi-disk zip is not supported');
    if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      throw new ZipError('format', 'end record points to zip64 fields but the zip64 locator is missing');
    }
  }
  if (entriesOnDisk !== count) throw new ZipError('format', 'multi-disk zip is not supported');
  if (count > maxEntries) throw new ZipError('format', `zip has ${count} entries, too many for a snapshot zip (max ${maxEntries})`);
  if (cdSize > maxDirectoryBytes) throw new ZipError('format', `central directory of ${cdSize} bytes is too large for a snapshot zip`);
  if (cdOffset + cdSize > directoryEnd) {
    throw new ZipError('format', `central directory (${cdOffset}+${cdSize}) runs past the end record at ${directoryEnd}`);
  }

  const cd = await read(cdOffset, cdSize);
  if (cd.length < cdSize) throw new ZipError('truncated', 'file ended inside the central directory');
  const entries = parseCentralDirectory(cd, count);
  return { entries, cdOffset, cdSize, eocdOffset, zip64 };
}

/** Parses `count` central-directory headers. Throws ZipError. */
export function parseCentralDirectory(cd: Buffer, count: number): ZipEntry[] {
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_LEN > cd.length) throw new ZipError('format', `central directory holds fewer than the ${count} entries declared`);
    if (cd.readUInt32LE(p) !== SIG_CENTRAL) throw new ZipError('format', `central directory entry ${i}: bad signature`);
    const flags = cd.readUInt16LE(p + 8);
    const method = cd.readUInt16LE(p + 10);
    const crc32 = cd.readUInt32LE(p + 16);
    let compressedSize = cd.readUInt32LE(p + 20);
    let uncompressedSize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    const diskStart = cd.readUInt16LE(p + 34);
    let localHeaderOffset = cd.readUInt32LE(p + 42);
    const end = p + CENTRAL_LEN + nameLen + extraLen + commentLen;
    if (end > cd.length) throw new ZipError('format', `central directory entry ${i} runs past the directory`);
    const nameBytes = Buffer.from(cd.subarray(p + CENTRAL_LEN, p + CENTRAL_LEN + nameLen));
    const name = nameBytes.toString(flags & FLAG_UTF8 ? 'utf8' : 'latin1');

    if (diskStart !== 0 && diskStart !== U16_MAX) throw new ZipError('format', 'multi-disk zip is not supported');
    if (uncompressedSize === U32_MAX || compressedSize === U32_MAX || localHeaderOffset === U32_MAX) {
      const z = findExtra(cd.subarray(p + CENTRAL_LEN + nameLen, p + CENTRAL_LEN + nameLen + extraLen), 0x0001);
      if (!z) throw new ZipError('format', `entry ${name}: 32-bit field saturated but no zip64 extra field`);
      let q = 0;
      const take = (what: string): number => {
        if (q + 8 > z.length) throw new ZipError('format', `entry ${name}: zip64 extra field too short for ${what}`);
        const v = u64(z, q, `entry ${name}: ${what}`);
        q += 8;
        return v;
      };
      if (uncompressedSize === U32_MAX) uncompressedSize = take('size');
      if (compressedSize === U32_MAX) compressedSize = take('compressed size');
      if (localHeaderOffset === U32_MAX) localHeaderOffset = take('local header offset');
    }
    entries.push({ index: i, name, nameBytes, flags, method, crc32, compressedSize, uncompressedSize, localHeaderOffset, dataOffset: -1 });
    p = end;
  }
  return entries;
}

/** The body of extra field `id`, if present. */
export function findExtra(extra: Buffer, id: number): Buffer | undefined {
  let p = 0;
  while (p + 4 <= extra.length) {
    const tag = extra.readUInt16LE(p);
    const len = extra.readUInt16LE(p + 2);
    if (p + 4 + len > extra.length) return undefined;
    if (tag === id) return extra.subarray(p + 4, p + 4 + len);
    p += 4 + len;
  }
  return undefined;
}

/**
 * Reads every entry's local header, checks it agrees with the central directory, and fills `dataOffset`.
 * Also checks the entries' data lie in order, without overlap, before the central directory.
 */
export async function readLocalHeaders(read: ReadAt, dir: ZipDirectory): Promise<void> {
  const byOffset = [...dir.entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  let floor = 0;
  for (const e of byOffset) {
    if (e.localHeaderOffset < floor) throw new ZipError('format', `entry ${e.name} overlaps the entry before it`);
    const fixed = await read(e.localHeaderOffset, LOCAL_LEN);
    if (fixed.length < LOCAL_LEN || fixed.readUInt32LE(0) !== SIG_LOCAL) {
      throw new ZipError('format', `entry ${e.name}: no local header at offset ${e.localHeaderOffset}`);
    }
    const flags = fixed.readUInt16LE(6);
    const method = fixed.readUInt16LE(8);
    const nameLen = fixed.readUInt16LE(26);
    const extraLen = fixed.readUInt16LE(28);
    const varPart = await read(e.localHeaderOffset + LOCAL_LEN, nameLen + extraLen);
    if (varPart.length < nameLen + extraLen) throw new ZipError('truncated', `entry ${e.name}: file ends inside its local header`);
    if (!varPart.subarray(0, nameLen).equals(e.nameBytes)) {
      throw new ZipError('format', `entry ${e.name}: local header names it ${JSON.stringify(varPart.subarray(0, nameLen).toString('latin1'))}`);
    }
    if (method !== e.method) throw new ZipError('format', `entry ${e.name}: local header method ${method}, directory says ${e.method}`);
    if ((flags & FLAG_ENCRYPTED) !== (e.flags & FLAG_ENCRYPTED))
      throw new ZipError('format', `entry ${e.name}: local header and directory disagree on encryption`);
    const crc = fixed.readUInt32LE(14);
    let csize = fixed.readUInt32LE(18);
    let usize = fixed.readUInt32LE(22);
    if (csize === U32_MAX || usize === U32_MAX) {
      const z = findExtra(varPart.subarray(nameLen), 0x0001);
      if (!z || z.length < 16) throw new ZipError('format', `entry ${e.name}: local header lacks its zip64 sizes`);
      usize = u64(z, 0, 'local size');
      csize = u64(z, 8, 'local compressed size');
    }
    // With a data descriptor (Go's archive/zip, streaming writers) the local CRC and sizes are zero, but
    // some writers fill them in anyway: whatever is there must agree.
    const lax = (flags & FLAG_DATA_DESCRIPTOR) !== 0;
    const agrees = (local: number, central: number): boolean => local === central || (lax && local === 0);
    if (!agrees(crc, e.crc32) || !agrees(csize, e.compressedSize) || !agrees(usize, e.uncompressedSize)) {
      throw new ZipError(
        'corrupt',
        `entry ${e.name}: local header (crc ${hex8(crc)}, ${csize}/${usize} bytes) disagrees with the directory (crc ${hex8(e.crc32)}, ${e.compressedSize}/${e.uncompressedSize} bytes)`,
      );
    }
    e.dataOffset = e.localHeaderOffset + LOCAL_LEN + nameLen + extraLen;
    floor = e.dataOffset + e.compressedSize;
    if (floor > dir.cdOffset) {
      throw new ZipError('format', `entry ${e.name}: data (${e.dataOffset}+${e.compressedSize}) runs into the central directory at ${dir.cdOffset}`);
    }
    if (flags & FLAG_DATA_DESCRIPTOR) floor += await checkDataDescriptor(read, e, floor, dir.cdOffset);
  }
}

/**
 * The data descriptor after an entry's data must agree with the directory (Go's archive/zip, which k3s
 * restores with, rejects a CRC mismatch there). Returns its length.
 */
async function checkDataDescriptor(read: ReadAt, e: ZipEntry, at: number, limit: number): Promise<number> {
  const d = await read(at, Math.min(24, limit - at));
  const sig = d.length >= 4 && d.readUInt32LE(0) === SIG_DATA_DESCRIPTOR ? 4 : 0;
  if (d.length < sig + 12) throw new ZipError('format', `entry ${e.name}: no room for its data descriptor`);
  if (d.readUInt32LE(sig) !== e.crc32) {
    throw new ZipError('corrupt', `entry ${e.name}: data descriptor CRC ${hex8(d.readUInt32LE(sig))} disagrees with the directory (${hex8(e.crc32)})`);
  }
  // Sizes are 4 bytes, or 8 for Zip64; writers differ in when they choose 8, so accept either that matches.
  if (d.readUInt32LE(sig + 4) === e.compressedSize && d.readUInt32LE(sig + 8) === e.uncompressedSize) return sig + 12;
  if (d.length >= sig + 20 && d.readBigUInt64LE(sig + 4) === BigInt(e.compressedSize) && d.readBigUInt64LE(sig + 12) === BigInt(e.uncompressedSize)) {
    return sig + 20;
  }
  throw new ZipError('corrupt', `entry ${e.name}: data descriptor sizes disagree with the directory`);
}

export function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}
