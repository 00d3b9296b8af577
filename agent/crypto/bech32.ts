// Bech32 (BIP 173 checksum, constant 1) without BIP 173's 90-character limit, as age uses it for
// `age1…` recipients and `AGE-SECRET-KEY-1…` identities. A string is all lower or all upper case; the
// checksum is computed over the lower-case form.
const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GENERATOR[i]!;
  }
  return chk >>> 0;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) >> 5);
  out.push(0);
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) & 31);
  return out;
}

/** Regroups bits; when decoding (`pad` false) leftover bits must be fewer than `from` and all zero. */
function convertBits(data: ArrayLike<number>, from: number, to: number, pad: boolean): number[] | undefined {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const max = (1 << to) - 1;
  for (let i = 0; i < data.length; i++) {
    acc = (acc << from) | data[i]!;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & max);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & max);
  } else if (bits >= from || acc !== 0) {
    return undefined;
  }
  return out;
}

/** Encodes `data` under `hrp` (given in lower case); `upper` returns the upper-case form. */
export function bech32Encode(hrp: string, data: Buffer, upper = false): string {
  const words = convertBits(data, 8, 5, true)!;
  const mod = polymod([...hrpExpand(hrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  const s = `${hrp}1${[...words, ...checksum].map((w) => CHARSET[w]).join('')}`;
  return upper ? s.toUpperCase() : s;
}

export type Bech32Result = { ok: true; hrp: string; data: Buffer } | { ok: false; problem: string };

/** Decodes a Bech32 string; `hrp` comes back in lower case. Problems are described without the input. */
export function bech32Decode(s: string): Bech32Result {
  if (s !== s.toLowerCase() && s !== s.toUpperCase()) return { ok: false, problem: 'mixes upper and lower case' };
  const lower = s.toLowerCase();
  const sep = lower.lastIndexOf('1');
  if (sep < 1) return { ok: false, problem: 'has no human-readable prefix' };
  if (sep + 7 > lower.length) return { ok: false, problem: 'is too short' };
  const hrp = lower.slice(0, sep);
  for (let i = 0; i < hrp.length; i++) {
    const c = hrp.charCodeAt(i);
    if (c < 33 || c > 126) return { ok: false, problem: 'has an invalid character in its prefix' };
  }
  const words: number[] = [];
  for (const ch of lower.slice(sep + 1)) {
    const w = CHARSET.indexOf(ch);
    if (w < 0) return { ok: false, problem: 'has a character outside the Bech32 alphabet' };
    words.push(w);
  }
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) return { ok: false, problem: 'has a bad checksum (mistyped or cut short?)' };
  const bytes = convertBits(words.slice(0, -6), 5, 8, false);
  if (!bytes) return { ok: false, problem: 'has invalid padding' };
  return { ok: true, hrp, data: Buffer.from(bytes) };
}
