// Issue 10, item 8, the pure parts: what reaches a terminal or the journal cannot drive it. Before: names were
// printed raw by `list`, `prune` and `fetch`; log lines went through JSON.stringify, which escapes C0 controls
// but leaves U+202E (and every bidi override), C1 controls and U+2028 raw; an unparsable s3.endpoint could be
// echoed with its userinfo when it had no scheme or its password held a '/', '?' or '#'.
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { jsonLine } from '../../agent/cli/output.js';
import { jsonSafe, shown } from '../../agent/base/text.js';
import { ConfigError, parseConfig } from '../../agent/config/parse.js';
import { closeLogger, createLogger } from '../../agent/ops/log.js';
import { classify, unnameable } from '../../agent/snapshot/names.js';
import { urlDecodedKey } from '../../agent/store/s3.js';

// what a terminal acts on or reorders: C0 but the newline, DEL, C1, bidi embeddings/overrides/isolates/marks, LS/PS
const RAW = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
const HOSTILE = [
  'esc\x1b[31mred\x1b[0m.db',
  'title\x1b]0;pwned\x07.db',
  'bell\x07.db',
  'cr\roverwritten.db',
  'bidi\u202egnp.exe.db',
  'c1\u009b31m.db',
  'ls\u2028ps\u2029.db',
  'del\x7f.db',
  'isolate\u2067x\u2069.db',
];

async function logged(fn: (log: ReturnType<typeof createLogger>) => void): Promise<string> {
  const sink = new PassThrough();
  let out = '';
  sink.on('data', (d: Buffer) => (out += d.toString('utf8')));
  const log = createLogger('debug', sink);
  fn(log);
  await closeLogger(log);
  return out;
}

describe('log lines carry no raw control, C1 or bidi characters, and parse back to the same values', () => {
  it.each(HOSTILE)('%j in the message and in fields', async (name) => {
    const out = await logged((log) => log.error(`rejected ${name}`, { file: `/snapshots/${name}`, nested: { key: `p/${name}` } }));
    const lines = out.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(out.trimEnd()).not.toMatch(RAW);
    const parsed = JSON.parse(lines[0]!) as { msg: string; file: string; nested: { key: string } };
    expect(parsed.msg).toBe(`rejected ${name}`);
    expect(parsed.file).toBe(`/snapshots/${name}`);
    expect(parsed.nested.key).toBe(`p/${name}`);
  });

  it('JSON.stringify alone leaves U+202E, C1 and U+2028 raw (what the format adds)', () => {
    expect(JSON.stringify('a\u202eb\u0085c\u2028d')).toMatch(RAW);
    expect(jsonSafe(JSON.stringify('a\u202eb\u0085c\u2028d'))).toBe('"a\\u202eb\\u0085c\\u2028d"');
    expect(jsonLine({ k: 'x\u202ey' })).toBe('{"k":"x\\u202ey"}');
  });
});

describe('shown(): names printed by list, prune, fetch, status', () => {
  it.each(HOSTILE)('%j is printed escaped', (name) => {
    const s = shown(name);
    expect(s).not.toMatch(RAW);
    expect(s).toMatch(/\\x[0-9a-f]{2}|\\u[0-9a-f]{4}/);
  });

  it('ordinary names, spaces and non-Latin letters stay as they are', () => {
    for (const n of ['etcd-snapshot-node-1714564800.zip', 'snap shot.db', 'снимок.db', '2024-05-01T12:00:00Z_etcd']) expect(shown(n)).toBe(n);
  });
});

describe('snapshot names that cannot become S3 keys', () => {
  it('C0, DEL and C1 controls: rejected with a reason; bidi marks and ordinary names: shipped (printed escaped)', () => {
    for (const n of ['esc\x1b[31m.db', 'bell\x07.db', 'cr\r.db', 'tab\t.db', 'del\x7f.db', 'c1\u0085.db'])
      expect(unnameable(n), n).toMatch(/control characters/);
    for (const n of ['bidi\u202egnp.db', 'plain.db', 'snap shot.db', '2024-05-01T12:00:00Z_etcd.zip']) expect(unnameable(n), n).toBeUndefined();
    // they are snapshots by name: the rejection is about the name, not the content
    expect(classify('esc\x1b[31m.db').kind).toBe('snapshot');
  });
});

describe('listing keys asked for url-encoded', () => {
  it("decodes what RGW (%2F for /) and Swift (/ kept) send, and AWS's + for a space", () => {
    expect(urlDecodedKey('p%2Fesc%1B%5B31mred.db')).toBe('p/esc\x1b[31mred.db');
    expect(urlDecodedKey('p/bidi%E2%80%AEgnp.db')).toBe('p/bidi\u202egnp.db');
    expect(urlDecodedKey('q%2Fsp%20ace%2Bplus%25pct.db')).toBe('q/sp ace+plus%pct.db');
    expect(urlDecodedKey('q/sp+ace.db')).toBe('q/sp ace.db');
    // not valid percent-encoding: kept as sent
    expect(urlDecodedKey('q/100%.db')).toBe('q/100%.db');
  });
});

describe('an unparsable s3.endpoint or s3.proxy is never echoed with its userinfo', () => {
  const issues = (text: string): string => {
    try {
      parseConfig(text, 'x', {});
      return '';
    } catch (e) {
      if (e instanceof ConfigError) return JSON.stringify(e.issues);
      throw e;
    }
  };
  it.each([
    ['with a scheme', 'http://admin:hunter2@host:port:x'],
    ['without a scheme (RKE writes host:port)', 'admin:hunter2@host:port:x'],
    ["a '/' in the password", 'http://admin:hun/ter2@host:x'],
    ["a '?' in the password", 'http://admin:hun?ter2@host:x'],
    ["a '#' in the password", 'https://admin:hun#ter2@host:x'],
    ["an '@' in the password", 'http://admin:hun@ter2@host:x'],
  ])('endpoint %s', (_what, endpoint) => {
    const out = issues(`s3: {bucket: bkt, endpoint: ${JSON.stringify(endpoint)}}`);
    expect(out).toContain('s3.endpoint');
    expect(out).not.toMatch(/hunter2|hun.?ter2|ter2/);
  });
  it.each(['ftp://u:hunter3@p', 'http://u:hun/ter3@p:x', 'u:hunter3@p:x:y'])('proxy %s', (proxy) => {
    const out = issues(`s3: {bucket: bkt, proxy: ${JSON.stringify(proxy)}}`);
    expect(out).toContain('s3.proxy');
    expect(out).not.toMatch(/hunter3|ter3/);
  });
});
