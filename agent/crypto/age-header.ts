// The age header (age-encryption.org/v1): a version line, one stanza per recipient, and an HMAC over all of
// it keyed by the file key. Written whole; read line by line as bytes arrive, with a size limit, so a
// stream that is not age (or never ends its header) costs bounded memory.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { AgeError } from './errors.js';
import type { AgeIdentity, Stanza } from './age-keys.js';
import { b64, hkdf, unb64 } from './primitives.js';

const VERSION_LINE = 'age-encryption.org/v1';
const COLUMNS = 64;
/** The header of a file with a few hundred recipients is tens of KiB; anything larger is not ours. */
export const MAX_HEADER = 1 << 20;
const ARG = /^[\x21-\x7e]+$/;

function headerMac(fileKey: Buffer, upToDashes: Buffer): Buffer {
  return createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header'))
    .update(upToDashes)
    .digest();
}

function stanzaText(s: Stanza): string {
  if (s.args.some((a) => !ARG.test(a)) || !ARG.test(s.type)) throw new Error('stanza arguments must be printable ASCII without spaces');
  const body = b64(s.body);
  const lines: string[] = [];
  for (let i = 0; i < body.length; i += COLUMNS) lines.push(body.slice(i, i + COLUMNS));
  // the body always ends with a line shorter than 64 columns, empty if need be
  if (body.length % COLUMNS === 0) lines.push('');
  return `-> ${[s.type, ...s.args].join(' ')}\n${lines.join('\n')}\n`;
}

/** The complete header text, MAC line included, for `fileKey` wrapped in `stanzas`. */
export function writeHeader(fileKey: Buffer, stanzas: Stanza[]): Buffer {
  if (stanzas.length === 0) throw new Error('an age header needs at least one recipient stanza');
  const upToDashes = Buffer.from(`${VERSION_LINE}\n${stanzas.map(stanzaText).join('')}---`, 'latin1');
  return Buffer.concat([upToDashes, Buffer.from(` ${b64(headerMac(fileKey, upToDashes))}\n`, 'latin1')]);
}

export interface ParsedHeader {
  stanzas: Stanza[];
  /** Header bytes including the MAC line (the payload starts right after). */
  size: number;
  /** The bytes the MAC covers: everything up to and including `---`. */
  upToDashes: Buffer;
  mac: Buffer;
}

function bad(line: number, what: string): AgeError {
  return new AgeError('header_syntax', `malformed header line ${line}: ${what}`);
}

/**
 * Reads a header from pushed bytes. `push` returns undefined until the MAC line is complete, then the
 * header and whatever bytes followed it in the same push (the start of the payload).
 */
export class HeaderReader {
  private buf: Buffer = Buffer.alloc(0);
  private scanned = 0; // bytes of buf already split into lines
  private lineNo = 0;
  private readonly stanzas: Stanza[] = [];
  private open: { stanza: Stanza; parts: Buffer[] } | undefined;

  push(data: Buffer): { header: ParsedHeader; rest: Buffer } | undefined {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    for (;;) {
      const nl = this.buf.indexOf(0x0a, this.scanned);
      if (nl < 0) break;
      const line = this.buf.toString('latin1', this.scanned, nl);
      const start = this.scanned;
      this.scanned = nl + 1;
      this.lineNo++;
      const mac = this.line(line);
      if (mac) {
        const header = { stanzas: this.stanzas, size: this.scanned, upToDashes: Buffer.from(this.buf.subarray(0, start + 3)), mac };
        const rest = this.buf.subarray(this.scanned);
        this.buf = Buffer.alloc(0);
        return { header, rest };
      }
    }
    if (this.buf.length > MAX_HEADER) {
      throw new AgeError('header_syntax', `no end of the age header within ${MAX_HEADER} bytes: not an age file, or a damaged one`);
    }
    if (this.lineNo === 0 && this.buf.length > 0) this.checkStart(this.buf.toString('latin1', 0, Math.min(this.buf.length, 64)));
    return undefined;
  }

  /** Called at end of input: the header never finished. */
  end(): AgeError {
    if (this.buf.length === 0) return new AgeError('truncated', 'empty input: not an age file');
    if (this.lineNo === 0) this.checkStart(this.buf.toString('latin1', 0, 64));
    return new AgeError('truncated', `the input ends inside the age header (after line ${this.lineNo})`);
  }

  /** Refuses early when the first bytes cannot begin an age header. */
  private checkStart(head: string): void {
    if (head.startsWith('-----BEGIN AGE ENCRYPTED FILE-----')) {
      throw new AgeError('unsupported', 'ASCII-armored age (age -a) is not supported; the agent reads binary age files');
    }
    const n = Math.min(head.length, VERSION_LINE.length);
    if (head.slice(0, n) !== VERSION_LINE.slice(0, n) && !head.startsWith('age-encryption.org/')) {
      throw new AgeError('header_syntax', 'not an age file: it does not start with age-encryption.org/v1');
    }
  }

  /** Handles one line (without its LF); returns the MAC when it was the last header line. */
  private line(line: string): Buffer | undefined {
    const n = this.lineNo;
    if (n === 1) {
      if (line === VERSION_LINE) return undefined;
      this.checkStart(line);
      if (/^age-encryption\.org\/[\x21-\x7e]{1,40}$/.test(line))
        throw new AgeError('unsupported', `age format version '${line.slice(19)}' is not supported (only v1)`);
      throw new AgeError('header_syntax', 'malformed header line 1: not the age version line (CRLF line endings, or not an age file)');
    }
    if (this.open) {
      const part = unb64(line);
      if (!part || line.length > COLUMNS) throw bad(n, 'a stanza body line must be canonical unpadded base64 of at most 64 columns');
      this.open.parts.push(part);
      if (line.length < COLUMNS) {
        this.open.stanza.body = Buffer.concat(this.open.parts);
        this.open = undefined;
      }
      return undefined;
    }
    if (line.startsWith('-> ')) {
      const fields = line.slice(3).split(' ');
      if (fields.some((f) => !ARG.test(f))) throw bad(n, 'stanza arguments must be non-empty printable ASCII separated by single spaces');
      const stanza: Stanza = { type: fields[0]!, args: fields.slice(1), body: Buffer.alloc(0) };
      this.stanzas.push(stanza);
      this.open = { stanza, parts: [] };
      return undefined;
    }
    if (line.startsWith('---')) {
      if (this.stanzas.length === 0) throw bad(n, 'the header has no recipient stanza');
      const mac = line.startsWith('--- ') ? unb64(line.slice(4)) : undefined;
      if (!mac || mac.length !== 32 || line.length !== 47) throw bad(n, 'the MAC line must be "--- " and 43 base64 characters');
      return mac;
    }
    throw bad(n, this.stanzas.length === 0 ? 'expected a recipient stanza ("-> ")' : 'expected a stanza ("-> ") or the MAC line ("--- ")');
  }
}

function stanzaSummary(stanzas: Stanza[]): string {
  const counts = new Map<string, number>();
  for (const s of stanzas) counts.set(s.type, (counts.get(s.type) ?? 0) + 1);
  return [...counts].map(([t, c]) => `${c} ${/^[\w./@-]{1,40}$/.test(t) ? t : 'other'}`).join(', ');
}

/**
 * The file key, from the first stanza one of `identities` opens, checked against the header MAC.
 * Stanzas of unknown types (including grease) are skipped, as age requires.
 */
export function openHeader(header: ParsedHeader, identities: readonly AgeIdentity[]): Buffer {
  const scrypt = header.stanzas.some((s) => s.type === 'scrypt');
  if (scrypt && header.stanzas.length > 1) throw new AgeError('header_syntax', 'a passphrase (scrypt) stanza must be the only stanza in the header');
  if (scrypt) throw new AgeError('unsupported', 'the file is encrypted with a passphrase (age -p), which the agent does not decrypt');
  let fileKey: Buffer | undefined;
  for (const s of header.stanzas) {
    for (const id of identities) {
      fileKey = id.unwrap(s);
      if (fileKey) break;
    }
    if (fileKey) break;
  }
  if (!fileKey) {
    const have = identities.map((i) => i.recipient).join(', ');
    throw new AgeError(
      'no_identity',
      `no identity matches: the file is encrypted to ${stanzaSummary(header.stanzas)} recipient(s); the identities given are for ${have || 'nothing'}`,
    );
  }
  if (fileKey.length !== 16) throw new AgeError('header_syntax', `the file key is ${fileKey.length} bytes, expected 16`);
  if (!timingSafeEqual(headerMac(fileKey, header.upToDashes), header.mac)) {
    throw new AgeError('header_mac', 'header MAC mismatch: the header was changed after it was written');
  }
  return fileKey;
}

export { stanzaSummary };
