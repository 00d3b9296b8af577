// The stored bytes of an object checked against the part checksums its manifest recorded at upload (the ones
// the server verified when it took each part), streaming, without any key. For an encrypted object it is the
// only check of its contents that needs no identity: a changed, swapped or missing byte shows as the part
// that holds it.
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { Manifest } from '../store/layout.js';

type Digest = { update(b: Buffer): void; end(): string };

function partHash(kind: Manifest['object']['integrity']): Digest {
  if (kind === 'crc32') {
    let v = 0;
    return {
      update: (b) => (v = crc32(b, v)),
      end: () => {
        const out = Buffer.alloc(4);
        out.writeUInt32BE(v >>> 0);
        return out.toString('base64');
      },
    };
  }
  const h = createHash(kind);
  return { update: (b) => h.update(b), end: () => h.digest(kind === 'sha256' ? 'hex' : 'base64') };
}

export interface PartCheck {
  /** the first mismatching part, as a sentence, once its last byte was seen */
  update(b: Buffer): string | undefined;
  /** the last part and the total size */
  finish(): string | undefined;
  readonly parts: number;
}

/** A checker for the manifest's layout, or undefined when the manifest records no part checksums. */
export function partCheck(o: Manifest['object'] | undefined): PartCheck | undefined {
  if (!o?.partChecksums?.length || o.firstPartBytes === undefined || o.partBytes === undefined) return undefined;
  const sums = o.partChecksums;
  const first = o.firstPartBytes;
  const each = o.partBytes;
  let part = 0;
  let want = first;
  let start = 0;
  let total = 0;
  let h = partHash(o.integrity);
  const close = (): string | undefined => {
    if (h.end() !== sums[part]) return `part ${part + 1} (stored bytes ${start}…${total - 1}) differs from what the server verified at upload`;
    part++;
    start = total;
    want = each;
    h = partHash(o.integrity);
    return undefined;
  };
  return {
    parts: sums.length,
    update(b: Buffer): string | undefined {
      while (b.length) {
        // the last part takes whatever remains: its size shows in finish()
        const n = part < sums.length - 1 ? Math.min(want, b.length) : b.length;
        h.update(b.subarray(0, n));
        total += n;
        want -= n;
        b = b.subarray(n);
        if (want === 0 && part < sums.length - 1) {
          const bad = close();
          if (bad) return bad;
        }
      }
      return undefined;
    },
    finish(): string | undefined {
      if (total !== o.size) return `holds ${total} bytes, its manifest says ${o.size}`;
      return close();
    },
  };
}
