// The local file behind an upload: read exactly, checked unchanged at the end, hashed when a conflict needs
// it. Failures here are the host's (local_io) or the file's (changed), never S3's.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { AgentError } from '../base/errors.js';
import type { ShipRequest } from './request.js';

export async function readExactly(req: ShipRequest, into: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < into.length) {
    let n: number;
    try {
      ({ bytesRead: n } = await req.fh.read(into, got, into.length - got, position + got));
    } catch (e) {
      throw new AgentError('local_io', `reading ${req.name} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (n === 0)
      throw new AgentError(
        'changed',
        `${req.name} shrank while it was being uploaded (ended at byte ${position + got} of ${req.fp.size}); upload aborted, it will be verified again`,
      );
    got += n;
  }
}

export async function unchanged(req: ShipRequest): Promise<void> {
  let st;
  try {
    st = await req.fh.stat();
  } catch (e) {
    throw new AgentError('local_io', `cannot stat ${req.name} after reading it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  if (st.size !== req.fp.size || st.mtimeMs !== req.fp.mtimeMs) {
    throw new AgentError(
      'changed',
      `${req.name} changed while it was being uploaded (now ${st.size} of ${req.fp.size} bytes, mtime ${st.mtimeMs === req.fp.mtimeMs ? 'unchanged' : 'changed'}); upload aborted, it will be verified again`,
    );
  }
}

export async function hashFile(fh: FileHandle, size: number, signal: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.min(size, 4 << 20) || 1);
  for (let pos = 0; pos < size;) {
    signal.throwIfAborted();
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
    if (bytesRead === 0) throw new AgentError('changed', 'the file shrank while it was being hashed');
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return h.digest('hex');
}
