// Upload parts read straight from the snapshot into a small pool of reused buffers.
//
// lib-storage copies a stream into a fresh buffer per part (Buffer.concat), and every part's fresh
// memory makes V8 run a full GC: measured here on 1 GiB, 33 MiB allocated per 16 MiB part, ~65
// mark-compacts, 0.6 s of GC and 0.25 s of copying, 3.9 CPU s in all. Given a Uint8Array instead,
// lib-storage only calls `byteLength` and `subarray(start, end)` once per part, in order. This class
// answers `subarray` by reading that range of the file into a pooled buffer, which the store gives
// back once the request carrying it has finished (retries included).
import { fstatSync, readSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { FileHandle } from 'node:fs/promises';
import { lendPart, ShipError } from '../store/s3.js';

// Each part's request leaves some kilobytes of SDK garbage that V8 lets pile up in old space for
// lack of pressure (RSS grew 30 MiB over an 8 GiB upload, then levelled off). A full collection every
// 256 MiB read costs a few milliseconds and keeps peak RSS for 8 GiB within 10 % of that for 1 GiB.
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
const COLLECT_EVERY = 256 * 1024 * 1024;

export interface PartSource {
  fh: FileHandle;
  name: string;
  size: number;
  /** mtime when the file was verified: reading must end on the same version */
  mtimeMs: number;
}

export class FileParts extends Uint8Array {
  private readonly free: Buffer<ArrayBuffer>[] = [];
  private sinceCollect = 0;

  constructor(
    private readonly src: PartSource,
    private readonly partSize: number,
  ) {
    super(0);
  }

  override get byteLength(): number {
    return this.src.size;
  }

  override get length(): number {
    return this.src.size;
  }

  /**
   * Synchronous because lib-storage's chunker is: a part is read in a few milliseconds from the page
   * cache (the file was just verified), while sending it takes far longer.
   */
  override subarray(start = 0, end = this.src.size): Uint8Array<ArrayBuffer> {
    const len = end - start;
    let buf = this.free.pop();
    if (!buf || buf.length < len) buf = Buffer.allocUnsafeSlow(Math.max(len, Math.min(this.partSize, this.src.size)));
    const owned = buf;
    const part = buf.subarray(0, len);
    let got = 0;
    try {
      while (got < len) {
        const n = readSync(this.src.fh.fd, part, got, len - got, start + got);
        if (n === 0) break;
        got += n;
      }
    } catch (e) {
      throw new ShipError('local_io', `reading ${this.src.name} failed: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    // The last part read is the moment to prove the file did not change: before it and Complete are sent.
    if (got < len || end >= this.src.size) {
      const st = fstatSync(this.src.fh.fd);
      if (got < len || st.size !== this.src.size || st.mtimeMs !== this.src.mtimeMs) {
        throw new ShipError('changed', `${this.src.name} changed while it was being uploaded (now ${st.size} of ${this.src.size} bytes, mtime ${st.mtimeMs === this.src.mtimeMs ? 'unchanged' : 'changed'}); upload aborted, it will be verified again`);
      }
    }
    lendPart(part, () => this.free.push(owned));
    this.sinceCollect += len;
    if (this.sinceCollect >= COLLECT_EVERY) {
      this.sinceCollect = 0;
      collect();
    }
    return part as Uint8Array<ArrayBuffer>;
  }
}
