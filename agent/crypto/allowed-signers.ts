// ssh-keygen's allowed_signers file: `principals [options] keytype base64-key [comment]` per line, `#`
// comments. Options: cert-authority, namespaces="…", valid-after="…", valid-before="…" (keywords in any
// case, values quoted). Principals and namespaces are OpenSSH pattern lists (`*`, `?`, `!` negation).
import { KeyError } from './errors.js';

export interface AllowedSigner {
  /** 1-based line in its file, for messages. */
  line: number;
  /** Pattern list of principals, as written. */
  principals: string;
  certAuthority: boolean;
  namespaces?: string;
  /** Unix seconds. */
  validAfter?: number;
  validBefore?: number;
  keyType: string;
  /** The key's wire form (what a signature's public key field carries). */
  keyBlob: Buffer;
}

const KEY_TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ssh-dss',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);
const isKeyType = (t: string): boolean => KEY_TYPES.has(t) || /-cert-v01@openssh\.com$/.test(t);

/** Splits off one whitespace-delimited field; a field may be a double-quoted string with spaces. */
function takeField(s: string): [string, string] | undefined {
  const t = s.replace(/^[ \t]+/, '');
  if (t === '') return undefined;
  if (t.startsWith('"')) {
    const close = t.indexOf('"', 1);
    if (close < 0) return undefined;
    return [t.slice(1, close), t.slice(close + 1)];
  }
  const m = /^[^ \t]+/.exec(t)!;
  return [m[0], t.slice(m[0].length)];
}

/** The options field ends at the first space or tab outside double quotes. */
function takeOptions(s: string): [string, string] | undefined {
  const t = s.replace(/^[ \t]+/, '');
  let quoted = false;
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    if (c === '"') quoted = !quoted;
    else if (!quoted && (c === ' ' || c === '\t')) return [t.slice(0, i), t.slice(i)];
  }
  return quoted ? undefined : [t, ''];
}

/** YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z]; local time unless Z, as ssh-keygen reads it. */
export function parseSshTime(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(Z?)$/i.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, sec] = m.slice(1, 7).map((v) => (v === undefined ? 0 : Number(v))) as [number, number, number, number, number, number];
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 59) return undefined;
  const ms = m[7] ? Date.UTC(y, mo - 1, d, h, mi, sec) : new Date(y, mo - 1, d, h, mi, sec).getTime();
  return Math.floor(ms / 1000);
}

function parseOptions(text: string, where: string, out: AllowedSigner): void {
  let rest = text;
  while (rest !== '') {
    const flag = /^cert-authority(?=,|$)/i.exec(rest);
    if (flag) {
      out.certAuthority = true;
      rest = rest.slice(flag[0].length);
    } else {
      const kv = /^(namespaces|valid-after|valid-before)="([^"]*)"(?=,|$)/i.exec(rest);
      if (!kv)
        throw new KeyError(
          `${where}: unknown or malformed option (known: cert-authority, namespaces="…", valid-after="…", valid-before="…", values in double quotes)`,
        );
      const name = kv[1]!.toLowerCase();
      const value = kv[2]!;
      if (name === 'namespaces') {
        if (out.namespaces !== undefined) throw new KeyError(`${where}: more than one namespaces option`);
        out.namespaces = value;
      } else {
        const t = parseSshTime(value);
        if (t === undefined || t === 0) throw new KeyError(`${where}: invalid ${name} time (expected YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z])`);
        const field = name === 'valid-after' ? 'validAfter' : 'validBefore';
        if (out[field] !== undefined) throw new KeyError(`${where}: more than one ${name} option`);
        out[field] = t;
      }
      rest = rest.slice(kv[0].length);
    }
    if (rest.startsWith(',')) {
      rest = rest.slice(1);
      if (rest === '') throw new KeyError(`${where}: the options end with a comma`);
    }
  }
  if (out.validAfter !== undefined && out.validBefore !== undefined && out.validBefore <= out.validAfter) {
    throw new KeyError(`${where}: valid-before is not after valid-after`);
  }
}

/** Parses a whole allowed_signers file; every problem names `source` and its line. */
export function parseAllowedSigners(text: string, source: string): AllowedSigner[] {
  const out: AllowedSigner[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const where = `${source}:${i + 1}`;
    const p = takeField(line);
    if (!p || p[0] === '') throw new KeyError(`${where}: missing principals`);
    const entry: AllowedSigner = { line: i + 1, principals: p[0], certAuthority: false, keyType: '', keyBlob: Buffer.alloc(0) };
    let rest = p[1];
    let type = takeField(rest);
    if (!type) throw new KeyError(`${where}: missing key`);
    if (!isKeyType(type[0])) {
      const opts = takeOptions(rest);
      if (!opts) throw new KeyError(`${where}: unterminated quote in the options`);
      parseOptions(opts[0], where, entry);
      rest = opts[1];
      type = takeField(rest);
      if (!type) throw new KeyError(`${where}: missing key after the options`);
      if (!isKeyType(type[0])) throw new KeyError(`${where}: expected a key type such as ssh-ed25519 after the options`);
    }
    const data = takeField(type[1]);
    if (!data || !/^[A-Za-z0-9+/]+={0,2}$/.test(data[0])) throw new KeyError(`${where}: missing or invalid base64 key data`);
    const blob = Buffer.from(data[0], 'base64');
    const declared = blob.length >= 4 ? blob.subarray(4, 4 + blob.readUInt32BE(0)).toString('latin1') : '';
    if (declared !== type[0]) throw new KeyError(`${where}: the key data does not hold a ${type[0]} key`);
    entry.keyType = type[0];
    entry.keyBlob = blob;
    out.push(entry);
  });
  return out;
}

function matchPattern(s: string, pattern: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 's').test(s);
}

/**
 * OpenSSH pattern-list matching: true if some pattern matches and no negated (`!`) pattern does.
 */
export function matchPatternList(s: string, list: string): boolean {
  let positive = false;
  for (const raw of list.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = negated ? raw.slice(1) : raw;
    if (matchPattern(s, pattern)) {
      if (negated) return false;
      positive = true;
    }
  }
  return positive;
}
