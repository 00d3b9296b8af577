import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

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
