import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AgeDecryption,
  AgeError,
  ageDecryptor,
  ageEncryptor,
  checkAgeStructure,
  CHUNK_SIZE,
  ENC_CHUNK_SIZE,
  generateAgeIdentity,
  KeyError,
  parseIdentities,
  parseRecipient,
  parseRecipientsFile,
  payloadSize,
  plaintextSizeOf,
  type AgeEncryptor,
  type AgeIdentity,
  type AgeRecipient,
} from '../../agent/crypto/age.js';
import { writeHeader } from '../../agent/crypto/age-header.js';
import { payloadKey, sealChunks } from '../../agent/crypto/age-stream.js';
import { bech32Decode, bech32Encode } from '../../agent/crypto/bech32.js';

const PART = 128 * 1024; // a small stand-in for the multipart part size, to cross part boundaries

const alice = generateAgeIdentity();
const bob = generateAgeIdentity();
const aliceIds = parseIdentities(alice.identity, 'alice.txt');
const bobIds = parseIdentities(bob.identity, 'bob.txt');
const both: AgeRecipient[] = [parseRecipient(alice.recipient), parseRecipient(bob.recipient)];

interface Part {
  offset: number;
  plain: Buffer;
}
function parts(plain: Buffer, partSize = PART): Part[] {
  const out: Part[] = [];
  for (let o = 0; o < plain.length || out.length === 0; o += partSize) out.push({ offset: o, plain: plain.subarray(o, o + partSize) });
  return out;
}

/** Encrypts part by part, in reverse order, each into its own buffer, as a retrying uploader would. */
function encryptParts(enc: AgeEncryptor, plain: Buffer, partSize = PART): Buffer[] {
  return parts(plain, partSize)
    .reverse()
    .map((p) => {
      const out = Buffer.alloc(enc.partCiphertextSize(p.offset, p.plain.length));
      expect(enc.encryptPartInto(out, p.plain, p.offset)).toBe(out.length);
      return { p, out };
    })
    .reverse()
    .map((x) => x.out);
}

function encrypt(plain: Buffer, recipients = both, partSize = PART): Buffer {
  const enc = ageEncryptor(recipients, plain.length);
  const ct = Buffer.concat(encryptParts(enc, plain, partSize));
  expect(ct.length).toBe(enc.ciphertextSize);
  return ct;
}

/** Decrypts through the push API, feeding the ciphertext in pieces of `step` bytes. */
function decrypt(ct: Buffer, ids: AgeIdentity[] = aliceIds, step = 10_000): Buffer {
  const d = new AgeDecryption(ids);
  const out: Buffer[] = [];
  for (let i = 0; i < ct.length; i += step) out.push(...d.update(ct.subarray(i, i + step)));
  out.push(...d.finish());
  return Buffer.concat(out);
}

function failure(ct: Buffer, ids: AgeIdentity[] = aliceIds): AgeError {
  try {
    decrypt(ct, ids);
  } catch (e) {
    if (e instanceof AgeError) return e;
    throw e;
  }
  throw new Error('decryption succeeded');
}

const flip = (b: Buffer, at: number): Buffer => {
  const c = Buffer.from(b);
  c[at] = c[at]! ^ 0x40;
  return c;
};

describe('bech32', () => {
  it('decodes the spec example identity to its recipient', () => {
    const id = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
    expect(parseIdentities(id, 'x')[0]!.recipient).toBe('age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj');
    const d = bech32Decode(id);
    expect(d.ok && bech32Encode(d.hrp, d.data, true)).toBe(id);
  });
  it('accepts BIP 173 vectors and refuses broken strings', () => {
    expect(bech32Decode('A12UEL5L')).toMatchObject({ ok: true, hrp: 'a' });
    expect(bech32Decode('abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw')).toMatchObject({ ok: true, hrp: 'abcdef' });
    expect(bech32Decode('A12uEL5L')).toMatchObject({ ok: false, problem: expect.stringContaining('mixes') });
    expect(bech32Decode('a12uel5m')).toMatchObject({ ok: false, problem: expect.stringContaining('checksum') });
    expect(bech32Decode('a1b2uel5l')).toMatchObject({ ok: false, problem: expect.stringContaining('alphabet') });
  });
});

describe('recipients and identities', () => {
  it('reads a recipients file with comments and blank lines, and names the bad line', () => {
    const file = `# backup keys\n\n${alice.recipient}\n  ${bob.recipient}  \n${alice.recipient}\n`;
    expect(parseRecipientsFile(file, 'r.txt').map((r) => r.text)).toEqual([alice.recipient, bob.recipient]);
    expect(() => parseRecipientsFile(`${alice.recipient}\nage1notakey\n`, 'r.txt')).toThrow(/^r\.txt:2: invalid age1 recipient/);
    expect(() => parseRecipientsFile('# nothing\n', 'r.txt')).toThrow('r.txt: no recipients');
    const typo = alice.recipient.slice(0, -1) + (alice.recipient.endsWith('q') ? 'p' : 'q');
    expect(() => parseRecipientsFile(`${typo}\n`, 'r.txt')).toThrow(/r\.txt:1: .*checksum/);
    expect(() => parseRecipient('ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ x')).toThrow(/'ssh-rsa' SSH keys are not supported/);
    expect(() => parseRecipient('age1pq1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsqj0jj6')).toThrow(KeyError);
    expect(() => parseRecipient('hello')).toThrow('recipient: not a recipient (expected age1… or ssh-ed25519 AAAA…)');
  });

  it('never repeats a secret key given where a recipient or identity was expected', () => {
    const messages: string[] = [];
    const catchMsg = (f: () => unknown): void => {
      try {
        f();
        messages.push('no error');
      } catch (e) {
        messages.push((e as Error).message);
      }
    };
    catchMsg(() => parseRecipientsFile(`${alice.recipient}\n${bob.identity}\n`, 'r.txt'));
    catchMsg(() => parseIdentities(`${alice.identity.slice(0, -1)}${alice.identity.endsWith('Q') ? 'P' : 'Q'}\n`, 'id.txt'));
    catchMsg(() => parseIdentities(`${alice.identity.toLowerCase().replace('age-secret-key-1', 'age-secrte-key-1')}\n`, 'id.txt'));
    catchMsg(() => parseIdentities(`${alice.identity}\n${alice.recipient}\n`, 'id.txt'));
    expect(messages[0]).toMatch(/^r\.txt:2: this is a secret key, not a recipient/);
    expect(messages[1]).toMatch(/^id\.txt:1: invalid age identity: it has a bad checksum/);
    expect(messages[2]).toMatch(/^id\.txt:1: not an age identity/);
    expect(messages[3]).toMatch(/^id\.txt:2: this is a recipient/);
    const secretBody = (s: string): string => s.slice(16, 60).toLowerCase();
    for (const m of messages) {
      expect(m.toLowerCase()).not.toContain(secretBody(alice.identity));
      expect(m.toLowerCase()).not.toContain(secretBody(bob.identity));
    }
    expect(String(Object.values(aliceIds[0]!))).not.toContain(alice.identity.slice(16));
  });
});

describe('payload sizes', () => {
  it('maps plaintext sizes to payload sizes and back', () => {
    expect(payloadSize(0)).toBe(16 + 16);
    expect(payloadSize(1)).toBe(16 + 1 + 16);
    expect(payloadSize(CHUNK_SIZE)).toBe(16 + ENC_CHUNK_SIZE);
    expect(payloadSize(CHUNK_SIZE + 1)).toBe(16 + ENC_CHUNK_SIZE + 17);
    fc.assert(fc.property(fc.nat(1 << 30), (n) => plaintextSizeOf(payloadSize(n)) === n));
    // an empty final chunk after full ones, or a chunk shorter than its tag, is never a valid payload
    expect(plaintextSizeOf(16 + ENC_CHUNK_SIZE + 16)).toBeUndefined();
    expect(plaintextSizeOf(16 + ENC_CHUNK_SIZE + 5)).toBeUndefined();
    expect(plaintextSizeOf(16 + 15)).toBeUndefined();
  });

  it('lays parts out so their ciphertexts tile the object exactly', () => {
    const size = 3 * PART + 1000;
    const enc = ageEncryptor(both, size);
    let next = 0;
    for (const p of parts(Buffer.alloc(size))) {
      const r = enc.cipherRange(p.offset, p.plain.length);
      expect(r.start).toBe(next);
      next = r.end;
    }
    expect(next).toBe(enc.ciphertextSize);
    expect(enc.cipherRange(0, PART)).toEqual({ start: 0, end: enc.header.length + 2 * ENC_CHUNK_SIZE });
    expect(() => enc.cipherRange(1000, PART)).toThrow('64 KiB chunk boundary');
    expect(() => enc.encryptChunks(Buffer.alloc(1000), 0, false)).toThrow('whole 64 KiB chunks');
    expect(() => enc.encryptChunks(Buffer.alloc(PART), 0, true)).toThrow('marked last ends at byte');
    expect(() => enc.encryptChunks(Buffer.alloc(1000), 6, false)).toThrow('ends the plaintext at byte');
    expect(() => enc.encryptInto(Buffer.alloc(10), Buffer.alloc(PART), 0, false)).toThrow('output buffer holds 10 bytes');
  });
});

describe('encrypt and decrypt (ours with ours)', () => {
  it('round-trips the sizes around chunk and part boundaries, for every recipient', () => {
    for (const size of [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, PART, 2 * PART + CHUNK_SIZE, 3 * PART + 7]) {
      const plain = randomBytes(size);
      const ct = encrypt(plain);
      expect(decrypt(ct, aliceIds).equals(plain)).toBe(true);
      expect(decrypt(ct, bobIds, 1 + (size % 9999)).equals(plain)).toBe(true);
    }
  });

  it('round-trips any size and split, parts written in any order', () => {
    fc.assert(
      fc.property(fc.nat(600_000), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1000, max: 200_000 }), (size, chunksPerPart, step) => {
        const plain = randomBytes(size);
        const ct = encrypt(plain, both, chunksPerPart * CHUNK_SIZE);
        return decrypt(ct, bobIds, step).equals(plain);
      }),
      { numRuns: 25 },
    );
  });

  it('produces any ciphertext range, for parts of a fixed ciphertext size, equal to the part-aligned bytes', () => {
    fc.assert(
      // tiny parts only with tiny plaintexts: each part re-seals the chunks it cuts
      fc.property(fc.nat(400_000), fc.integer({ min: 1, max: 300_000 }), (size0, cipherPart) => {
        const size = cipherPart < 4000 ? size0 % 3000 : size0;
        const plain = randomBytes(size);
        const enc = ageEncryptor(both, size);
        const whole = Buffer.concat(encryptParts(enc, plain));
        const pieces: Buffer[] = [];
        for (let start = 0; start < enc.ciphertextSize; start += cipherPart) {
          const end = Math.min(enc.ciphertextSize, start + cipherPart);
          const need = enc.plaintextFor(start, end);
          const out = Buffer.alloc(end - start);
          expect(enc.encryptRange(out, start, end, plain.subarray(need.offset, need.offset + need.length))).toBe(end - start);
          pieces.push(out);
        }
        return Buffer.concat(pieces).equals(whole) && decrypt(whole, aliceIds).equals(plain);
      }),
      { numRuns: 40 },
    );
    const enc = ageEncryptor(both, 1000);
    expect(enc.plaintextFor(0, 10)).toEqual({ offset: 0, length: 0 });
    expect(() => enc.encryptRange(Buffer.alloc(100), 0, 100, Buffer.alloc(5))).toThrow('needs 0 plaintext bytes');
    expect(() => enc.plaintextFor(0, enc.ciphertextSize + 1)).toThrow('is not inside');
  });

  it('gives a retried part the same bytes', () => {
    const plain = randomBytes(2 * PART + 5);
    const enc = ageEncryptor(both, plain.length);
    const a = encryptParts(enc, plain);
    const b = encryptParts(enc, plain);
    expect(a.map((x) => x.toString('hex'))).toEqual(b.map((x) => x.toString('hex')));
    // a new encryptor is a new file: other key, other nonce
    expect(ageEncryptor(both, plain.length).header.equals(enc.header)).toBe(false);
  });

  it('skips stanzas of unknown types (grease) in a well-formed header, whatever their body length', () => {
    const fileKey = randomBytes(16);
    const nonce = randomBytes(16);
    const plain = randomBytes(70_000);
    const grease = [
      { type: 'example.com/grease', args: ['a', '+/='], body: randomBytes(48) }, // body of exactly one full line
      { type: 'empty', args: [], body: Buffer.alloc(0) },
      { type: 'long', args: ['x'], body: randomBytes(200) },
    ];
    const header = writeHeader(fileKey, [grease[0]!, grease[1]!, ...both.map((r) => r.wrap(fileKey)), grease[2]!]);
    expect(header.toString('latin1')).toContain(`-> example.com/grease a +/=\n${grease[0]!.body.toString('base64')}\n\n-> empty\n\n`);
    const payload = Buffer.alloc(plain.length + 2 * 16);
    sealChunks(payloadKey(fileKey, nonce), payload, plain, 0, true);
    const ct = Buffer.concat([header, nonce, payload]);
    expect(decrypt(ct, bobIds, 100).equals(plain)).toBe(true);
  });

  it('decrypts through the Transform', async () => {
    const plain = randomBytes(5 * CHUNK_SIZE + 3);
    const ct = encrypt(plain);
    const pieces = [ct.subarray(0, 7), ct.subarray(7, 70_000), ct.subarray(70_000)];
    const got: Buffer[] = [];
    await pipeline(Readable.from(pieces), ageDecryptor(aliceIds), async function (src: AsyncIterable<unknown>) {
      for await (const b of src) got.push(b as Buffer);
    });
    expect(Buffer.concat(got).equals(plain)).toBe(true);
    const bad = flip(ct, ct.length - 10);
    await expect(
      pipeline(Readable.from([bad]), ageDecryptor(aliceIds), async function (src: AsyncIterable<unknown>) {
        for await (const _ of src) void _;
      }),
    ).rejects.toMatchObject({ reason: 'tampered', message: expect.stringContaining('chunk 5 ') });
  });
});

describe('refusals', () => {
  const plain = randomBytes(3 * PART + 1000); // 4 parts of 128 KiB: 2 chunks each, the last 1000 bytes
  const enc = ageEncryptor(both, plain.length);
  const partCts = encryptParts(enc, plain);
  const ct = Buffer.concat(partCts);

  it('a flipped byte in any part, naming the chunk', () => {
    partCts.forEach((_, i) => {
      const r = enc.cipherRange(i * PART, Math.min(PART, plain.length - i * PART));
      const at = (i === 0 ? enc.header.length : r.start) + 100;
      expect(failure(flip(ct, at))).toMatchObject({ reason: 'tampered', message: expect.stringContaining(`chunk ${2 * i} (`) });
      const inTag = r.end - 1; // the last tag byte of the part
      expect(failure(flip(ct, inTag))).toMatchObject({ reason: 'tampered', message: expect.stringContaining(`chunk ${Math.min(2 * i + 1, 6)} (`) });
    });
  });

  it('a truncated last chunk, or a file cut at a chunk boundary', () => {
    expect(failure(ct.subarray(0, ct.length - 1))).toMatchObject({ reason: 'tampered' });
    expect(failure(ct.subarray(0, ct.length - 1000 - 16))).toMatchObject({ reason: 'truncated', message: expect.stringContaining('not marked final') });
    expect(failure(ct.subarray(0, ct.length - 1010))).toMatchObject({ reason: 'truncated', message: expect.stringContaining('shorter than its 16-byte tag') });
    expect(failure(ct.subarray(0, enc.header.length))).toMatchObject({ reason: 'truncated', message: 'the payload has no chunks' });
    expect(failure(ct.subarray(0, enc.header.length - 5))).toMatchObject({ reason: 'truncated', message: expect.stringContaining('16-byte payload nonce') });
    expect(failure(ct.subarray(0, 60))).toMatchObject({ reason: 'truncated', message: expect.stringContaining('inside the age header') });
  });

  it('two parts swapped, and two chunks swapped inside a part', () => {
    const swapped = Buffer.concat([partCts[0]!, partCts[2]!, partCts[1]!, partCts[3]!]);
    expect(failure(swapped)).toMatchObject({ reason: 'tampered', message: expect.stringContaining('chunk 2 (') });
    const p1 = partCts[1]!;
    const chunkSwap = Buffer.concat([p1.subarray(ENC_CHUNK_SIZE), p1.subarray(0, ENC_CHUNK_SIZE)]);
    expect(failure(Buffer.concat([partCts[0]!, chunkSwap, partCts[2]!, partCts[3]!]))).toMatchObject({
      reason: 'tampered',
      message: expect.stringContaining('chunk 2 ('),
    });
  });

  it('a changed header, the wrong identity, trailing data', () => {
    const text = ct.subarray(0, enc.header.length - 16).toString('latin1');
    const macAt = text.lastIndexOf('\n--- ') + 1;
    const grease = Buffer.concat([ct.subarray(0, macAt), Buffer.from('-> grease x\nAAAA\n'), ct.subarray(macAt)]);
    expect(failure(grease)).toMatchObject({ reason: 'header_mac', message: expect.stringContaining('header MAC mismatch') });
    const macChanged = Buffer.from(ct);
    macChanged[macAt + 10] = macChanged[macAt + 10] === 0x41 ? 0x42 : 0x41; // another base64 letter
    expect(failure(macChanged)).toMatchObject({ reason: 'header_mac' });
    const carol = parseIdentities(generateAgeIdentity().identity, 'carol.txt');
    expect(failure(ct, carol)).toMatchObject({
      reason: 'no_identity',
      message: expect.stringMatching(/^no identity matches: the file is encrypted to 2 X25519 recipient/),
    });
    expect(failure(Buffer.concat([ct, Buffer.from('x')]))).toMatchObject({ reason: 'tampered' });
    const full = encrypt(randomBytes(2 * CHUNK_SIZE));
    expect(failure(Buffer.concat([full, Buffer.alloc(ENC_CHUNK_SIZE)]))).toMatchObject({
      reason: 'trailing_data',
      message: expect.stringContaining('data follows the final chunk (1)'),
    });
    expect(failure(Buffer.concat([full, Buffer.alloc(20)]))).toMatchObject({ reason: 'trailing_data' });
  });

  it('headers that break the format, by line', () => {
    const h = (s: string): Buffer => Buffer.from(s, 'latin1');
    expect(failure(h('hello world\n'))).toMatchObject({ reason: 'header_syntax', message: expect.stringContaining('not an age file') });
    expect(failure(h('age-encryption.org/v2\n'))).toMatchObject({ reason: 'unsupported' });
    expect(failure(h('-----BEGIN AGE ENCRYPTED FILE-----\n'))).toMatchObject({ reason: 'unsupported', message: expect.stringContaining('armored') });
    expect(failure(h('age-encryption.org/v1\n--- AAAA\n'))).toMatchObject({ message: 'malformed header line 2: the header has no recipient stanza' });
    expect(failure(h('age-encryption.org/v1\n-> X25519 abc\nAAA=\n'))).toMatchObject({ message: expect.stringMatching(/^malformed header line 3: /) });
    expect(failure(h('age-encryption.org/v1\n->  X25519\n\n'))).toMatchObject({ message: expect.stringMatching(/^malformed header line 2: /) });
    expect(failure(h('age-encryption.org/v1\r\n'))).toMatchObject({ reason: 'header_syntax' });
    expect(failure(h(`age-encryption.org/v1\n-> X25519 ${'A'.repeat(43)}\n${'A'.repeat(43)}\n--- ${'A'.repeat(42)}\n`))).toMatchObject({
      message: expect.stringMatching(/^malformed header line 4: /),
    });
    expect(failure(h(`age-encryption.org/v1\n-> scrypt AAAAAAAAAAAAAAAAAAAAAA 10\n${'A'.repeat(43)}\n--- ${'A'.repeat(43)}\n`))).toMatchObject({
      reason: 'unsupported',
      message: expect.stringContaining('passphrase'),
    });
    expect(failure(h(`age-encryption.org/v1\n-> X25519 AAAA\n${'A'.repeat(43)}\n--- ${'A'.repeat(43)}\n`))).toMatchObject({
      reason: 'header_syntax',
      message: expect.stringContaining('malformed X25519 stanza'),
    });
    expect(failure(Buffer.alloc(2 << 20, 0x41))).toMatchObject({ reason: 'header_syntax' });
  });
});

describe('structure check without a key', () => {
  const check = (ct: Buffer, step = 50_000) => {
    const c = checkAgeStructure();
    for (let i = 0; i < ct.length; i += step) c.update(ct.subarray(i, i + step));
    return c.finish();
  };

  it('reports stanzas and sizes of a valid file', () => {
    const plain = randomBytes(2 * PART + 99);
    const ct = encrypt(plain);
    expect(check(ct, 777)).toMatchObject({
      ok: true,
      plaintextSize: plain.length,
      ciphertextSize: ct.length,
      stanzas: [{ type: 'X25519', count: 2 }],
      summary: '2 X25519',
    });
    expect(check(encrypt(Buffer.alloc(0)))).toMatchObject({ ok: true, plaintextSize: 0 });
  });

  it('refuses bad framing and bad headers', () => {
    const ct = encrypt(randomBytes(CHUNK_SIZE + 100));
    expect(check(ct.subarray(0, ct.length - 100))).toMatchObject({ ok: false, reason: 'truncated' });
    expect(check(Buffer.concat([ct, Buffer.alloc(ENC_CHUNK_SIZE - 100)]))).toMatchObject({ ok: false, reason: 'truncated' });
    expect(check(Buffer.from('not age\n'))).toMatchObject({ ok: false, reason: 'header_syntax' });
    expect(check(Buffer.alloc(0))).toMatchObject({ ok: false, reason: 'truncated' });
  });

  it('cannot see tampering or a dropped final chunk: that needs the key', () => {
    const ct = encrypt(randomBytes(3 * CHUNK_SIZE));
    expect(check(flip(ct, ct.length - 500))).toMatchObject({ ok: true });
    expect(check(ct.subarray(0, ct.length - ENC_CHUNK_SIZE))).toMatchObject({ ok: true, plaintextSize: 2 * CHUNK_SIZE });
    expect(failure(ct.subarray(0, ct.length - ENC_CHUNK_SIZE))).toMatchObject({ reason: 'truncated' });
  });
});
