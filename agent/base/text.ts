// Text that reaches a terminal or a log line: names from the disk and keys from S3 are chosen by others, so
// control characters, escape sequences and bidi overrides are shown escaped, never interpreted.

// C0 and C1 controls (terminal escapes, line breaks), DEL, the Unicode line and paragraph separators, the
// bidi embeddings/overrides/isolates that reorder printed text, and U+FFFD (what an invalid UTF-8 byte
// decodes to: it hides which byte it was)
export const CONTROL = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufffd]/;
const CONTROL_G = new RegExp(CONTROL.source, 'g');

/** Escapes what a terminal would act on: `\x1b`, `\u202e`; a backslash itself stays as is. */
export function shown(s: string): string {
  return s.replace(CONTROL_G, (c) => {
    const n = c.codePointAt(0)!;
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}

// What JSON.stringify leaves raw although a terminal acts on it: DEL, the C1 controls, bidi marks and
// overrides, and the Unicode line and paragraph separators (it escapes only the C0 controls)
const JSON_RAW = /[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** A serialized JSON text with those characters written as `\u` escapes of four hex digits: the same value once parsed. */
export function jsonSafe(json: string): string {
  return json.replace(JSON_RAW, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A value from a config file, safe to echo in an error: control and bidi characters become `?`. */
export function printable(s: string): string {
  return s.replace(CONTROL_G, '?');
}

/** True when the text holds something a terminal would act on or that hides bytes. */
export function hasControl(s: string): boolean {
  return CONTROL.test(s);
}

/** True when a file name read as UTF-8 lost bytes (invalid sequences became U+FFFD). */
export function isValidUtf8Name(raw: Buffer): boolean {
  return Buffer.from(raw.toString('utf8'), 'utf8').equals(raw);
}

/** A name's bytes as `\xNN` where they are not UTF-8 or not printable: for messages about such names. */
export function shownBytes(raw: Buffer): string {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    // take the longest valid UTF-8 sequence starting here
    let len = 0;
    const b = raw[i]!;
    if (b < 0x80) len = 1;
    else if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) len = 3;
    else if (b >= 0xf0 && b <= 0xf4) len = 4;
    const chunk = len ? raw.subarray(i, i + len) : undefined;
    if (chunk && chunk.length === len && isValidUtf8Name(chunk)) {
      out += shown(chunk.toString('utf8'));
      i += len;
    } else {
      out += `\\x${b.toString(16).padStart(2, '0')}`;
      i += 1;
    }
  }
  return out;
}
