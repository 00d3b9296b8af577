// Random access into an age file (crypto/age-random.ts), as `verify --identity` reads a zip's directory at the
// end of an encrypted object: any plaintext range of files made by ours and by the age CLI, each chunk
// authenticated; a changed chunk, a cut payload and the wrong key refused as the stream decryptor refuses them.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AgeError, ageEncryptor, CHUNK_SIZE, generateAgeIdentity, parseIdentities, parseRecipient } from '../../agent/crypto/age.js';
import { AgeRandomAccess } from '../../agent/crypto/age-random.js';

const alice = generateAgeIdentity();
const ids = parseIdentities(alice.identity, 'alice.txt');

function ours(plain: Buffer): Buffer {
  const enc = ageEncryptor([parseRecipient(alice.recipient)], plain.length);
  const out = Buffer.alloc(enc.ciphertextSize);
  enc.encryptPartInto(out, plain, 0);
  return out;
}

function byCli(plain: Buffer): Buffer {
  try {
    return execFileSync('age', ['-e', '-r', alice.recipient], { input: plain, maxBuffer: 1 << 26 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('age is not installed (Debian package age)', { cause: e });
    throw e;
  }
}

let reads = 0;
const reader =
  (ct: Buffer) =>
  async (pos: number, len: number): Promise<Buffer> => {
    reads++;
    return Buffer.from(ct.subarray(pos, pos + len));
  };
const open = (ct: Buffer) => AgeRandomAccess.open(reader(ct), ct.length, ids);

async function refusal(p: Promise<unknown>): Promise<AgeError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AgeError) return e;
    throw e;
  }
  throw new Error('accepted');
}

describe('AgeRandomAccess', () => {
  const sizes = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 77];
  for (const size of sizes) {
    it(`reads any range of a ${size}-byte plaintext, from ours and from the age CLI`, async () => {
      const plain = randomBytes(size);
      for (const ct of [ours(plain), byCli(plain)]) {
        const ra = await open(ct);
        expect(ra.plaintextSize).toBe(size);
        expect((await ra.readPlain(0, size + 10)).equals(plain)).toBe(true);
        await fc.assert(
          fc.asyncProperty(fc.nat(size + 2), fc.nat(2 * CHUNK_SIZE), async (pos, len) => {
            expect((await ra.readPlain(pos, len)).equals(plain.subarray(pos, pos + len))).toBe(true);
          }),
          { numRuns: 25 },
        );
      }
    });
  }

  it('reads only the chunks a range needs', async () => {
    const ct = ours(randomBytes(40 * CHUNK_SIZE));
    const ra = await open(ct);
    reads = 0;
    await ra.readPlain(39 * CHUNK_SIZE + 5, 10);
    expect(reads).toBe(1);
  });

  it('refuses a changed chunk, a cut payload, the wrong key and a changed header', async () => {
    const plain = randomBytes(3 * CHUNK_SIZE + 10);
    const ct = ours(plain);
    const hdr = ct.indexOf('\n---') + 1;
    const changed = Buffer.from(ct);
    changed[ct.length - CHUNK_SIZE]! ^= 1; // inside chunk 2
    const ra = await open(changed);
    expect((await ra.readPlain(0, CHUNK_SIZE)).equals(plain.subarray(0, CHUNK_SIZE))).toBe(true);
    const t = await refusal(ra.readPlain(2 * CHUNK_SIZE, 1));
    expect(t.reason).toBe('tampered');
    expect(t.message).toMatch(/chunk 2 failed authentication/);

    expect((await refusal(open(ct.subarray(0, ct.length - 10)))).reason).toBe('truncated');
    // cut at a chunk boundary: the size is plausible, but the new last chunk is not marked final
    const cut = await open(ct.subarray(0, ct.length - 10 - 16));
    expect((await refusal(cut.readPlain(2 * CHUNK_SIZE, 1))).reason).toBe('tampered');
    const bob = parseIdentities(generateAgeIdentity().identity, 'bob.txt');
    expect((await refusal(AgeRandomAccess.open(reader(ct), ct.length, bob))).reason).toBe('no_identity');
    const mac = Buffer.from(ct);
    // another base64 letter in the MAC (a flipped bit could make it no base64 at all: a syntax error)
    mac[hdr + 6] = mac[hdr + 6] === 0x41 ? 0x42 : 0x41;
    expect((await refusal(open(mac))).reason).toBe('header_mac');
  });
});
