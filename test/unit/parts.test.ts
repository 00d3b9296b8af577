// The stored bytes against the part checksums a manifest recorded (drill/parts.ts): any split of the stream,
// every checksum kind the uploader uses; a changed byte names its part, a longer or shorter object its size.
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { partCheck } from '../../agent/drill/parts.js';
import type { Manifest } from '../../agent/store/layout.js';

type Kind = Manifest['object']['integrity'];

function sum(kind: Kind, b: Buffer): string {
  if (kind === 'crc32') {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(crc32(b) >>> 0);
    return out.toString('base64');
  }
  return createHash(kind)
    .update(b)
    .digest(kind === 'sha256' ? 'hex' : 'base64');
}

/** A manifest's object record for `body` cut into a first part of `first` bytes and then parts of `each`. */
function layout(body: Buffer, first: number, each: number, kind: Kind): Manifest['object'] {
  const cuts = [0, Math.min(first, body.length)];
  while (cuts[cuts.length - 1]! < body.length) cuts.push(Math.min(body.length, cuts[cuts.length - 1]! + each));
  const partChecksums = cuts.slice(1).map((end, i) => sum(kind, body.subarray(cuts[i], end)));
  return {
    key: 'k.age',
    size: body.length,
    parts: partChecksums.length,
    partSize: each,
    integrity: kind,
    partChecksums,
    firstPartBytes: first,
    partBytes: each,
  };
}

function run(o: Manifest['object'], stored: Buffer, splits: number[]): string | undefined {
  const c = partCheck(o)!;
  let at = 0;
  for (const n of splits) {
    const bad = c.update(stored.subarray(at, at + n));
    at += n;
    if (bad) return bad;
  }
  return c.update(stored.subarray(at)) ?? c.finish();
}

describe('partCheck', () => {
  const body = randomBytes(10_000);
  for (const kind of ['sha256', 'crc32', 'md5'] as const) {
    it(`${kind}: accepts the stored bytes under any split, names the part of a changed byte`, () => {
      const o = layout(body, 3000, 2000, kind);
      expect(o.parts).toBe(5);
      fc.assert(
        fc.property(fc.array(fc.nat(4000), { maxLength: 8 }), fc.nat(body.length - 1), (splits, at) => {
          expect(run(o, body, splits)).toBeUndefined();
          const bad = Buffer.from(body);
          bad[at]! ^= 0x80;
          const part = at < 3000 ? 1 : 2 + Math.floor((at - 3000) / 2000);
          expect(run(o, bad, splits)).toMatch(new RegExp(`^part ${part} \\(stored bytes \\d+…\\d+\\) differs`));
        }),
        { numRuns: 50 },
      );
    });
  }

  it('a longer or shorter object is refused by its size, never loops', () => {
    const o = layout(body, 3000, 2500, 'sha256');
    expect(run(o, Buffer.concat([body, Buffer.alloc(70_000)]), [5000])).toBe(`holds 80000 bytes, its manifest says 10000`);
    expect(run(o, body.subarray(0, 9000), [])).toBe('holds 9000 bytes, its manifest says 10000');
    const one = layout(body, 20_000, 20_000, 'crc32');
    expect(one.parts).toBe(1);
    expect(run(one, Buffer.concat([body, body]), [1, 15_000])).toBe('holds 20000 bytes, its manifest says 10000');
  });

  it('no checksums recorded: nothing to check with', () => {
    expect(partCheck(undefined)).toBeUndefined();
    expect(partCheck({ key: 'k', size: 1, parts: 1, partSize: 1, integrity: 'sha256' })).toBeUndefined();
  });
});
