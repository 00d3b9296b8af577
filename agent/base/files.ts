import { constants, readdirSync, type Stats } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

const CHUNK = 2 << 20;

/**
 * The names in a directory, listed on the main thread. The async readdir lists in a libuv worker thread,
 * which allocates an entry per name from its own malloc arena; after listings of tens of thousands of names
 * that memory stayed with the arena (measured: 25 MiB of RSS kept after 120 listings of 80,000 names, none
 * this way). The price is blocking for ~1 ms per 1,500 names, which only a huge directory notices.
 */
export async function listNames(dir: string, encoding: 'utf8' | 'latin1' = 'utf8'): Promise<string[]> {
  return readdirSync(dir, { encoding });
}

/**
 * Replaces a file atomically with `text` (mode 0600): a temp file beside it, fsync, rename, then an fsync of
 * the directory so the rename survives a power cut. A reader sees the old file or the new one, never a part.
 */
export async function replaceFile(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  await rename(tmp, path);
  const dh = await open(dirname(path), 'r');
  await dh.sync().catch(() => undefined);
  await dh.close();
}

/** What identifies one version of a file without reading it. */
export interface Fingerprint {
  ino: number;
  size: number;
  mtimeMs: number;
}

export function fingerprint(st: Stats): Fingerprint {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs };
}

export function sameFingerprint(a: Fingerprint | undefined, b: Fingerprint | undefined): boolean {
  return !!a && !!b && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

export class NotRegularError extends Error {
  override name = 'NotRegularError';
}

/**
 * Opens a file for reading without following a symlink and without blocking on a FIFO, and checks
 * that what was opened is a regular file: a name in the snapshot directory must not lead the agent
 * into uploading some other file.
 */
export async function openRegular(path: string): Promise<{ fh: FileHandle; st: Stats }> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw new NotRegularError('is a symbolic link; snapshots are never read through links');
    throw e;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new NotRegularError(`not a regular file (${fileKind(st)})`);
  }
  return { fh, st };
}

export function fileKind(st: Stats): string {
  if (st.isFile()) return 'regular file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symbolic link';
  if (st.isFIFO()) return 'FIFO';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'special file';
}

/** Reads `length` bytes at `position`, or fewer if the file is shorter. */
export async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

/** The file ended before the size it had when it was opened. */
export class EndedEarly extends Error {}

/**
 * Yields [0, size) in order, in views of one of two reused buffers: the next read is in flight while the
 * caller works on the current view, which is valid until the caller asks for the next one.
 */
export async function* chunks(fh: FileHandle, size: number, signal: AbortSignal | undefined): AsyncGenerator<Buffer> {
  const bufs = [Buffer.allocUnsafe(Math.min(CHUNK, size)), Buffer.allocUnsafe(Math.min(CHUNK, Math.max(0, size - CHUNK)))];
  const fill = async (buf: Buffer, pos: number): Promise<number> => {
    const want = Math.min(buf.length, size - pos);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return got;
  };
  let pos = 0;
  let i = 0;
  let pending: Promise<number> | undefined = size > 0 ? fill(bufs[0]!, 0) : undefined;
  try {
    while (pending) {
      const got = await pending;
      pending = undefined;
      const want = Math.min(bufs[i]!.length, size - pos);
      const view = bufs[i]!.subarray(0, got);
      pos += got;
      if (got < want) {
        if (got > 0) yield view;
        throw new EndedEarly(`file ended at byte ${pos} of ${size} (shrank while being read)`);
      }
      signal?.throwIfAborted();
      i ^= 1;
      if (pos < size) pending = fill(bufs[i]!, pos);
      yield view;
    }
  } finally {
    // Never leave a read running into a buffer (or a handle) the caller is about to drop.
    if (pending) await pending.catch(() => 0);
  }
}
