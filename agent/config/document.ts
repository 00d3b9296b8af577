// Reading a config document (load): YAML text to the values it gives, key by key, each coerced to its
// key's kind. A document that is not readable YAML stops here; a bad key or value is one issue among many.
import { parseDocument } from 'yaml';
import { printable } from '../base/text.js';
import { KEYS } from './keys.js';
import { ConfigError, type ConfigIssue } from './issues.js';
import { coerce } from './values.js';

/** The coerced values of one document, with the key table's default for a key it leaves out. */
export interface Given {
  /** the value the document gives; undefined when it gives none (or a bad one) */
  get: <T>(key: string) => T | undefined;
  /** the value the document gives, else the key's default */
  def: <T>(key: string) => T;
  has: (key: string) => boolean;
}

const SECRET_KEYS = /(^|\.)(secret|secretKey|secretAccessKey|accessKey|accessKeyId|password|sessionToken|token|secret_key|access_key)$/i;

class AliasLoop extends Error {}

function flatten(obj: Record<string, unknown>, prefix = '', out = new Map<string, unknown>(), within = new Set<object>()): Map<string, unknown> {
  // a YAML alias can point at a mapping that contains it: an endless tree
  if (within.has(obj)) throw new AliasLoop(prefix);
  within.add(obj);
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, key, out, within);
    else out.set(key, v);
  }
  within.delete(obj);
  return out;
}

function closest(key: string): string | undefined {
  const dist = (a: string, b: string): number => {
    const d = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = d[0]!;
      d[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const tmp = d[j]!;
        d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
        prev = tmp;
      }
    }
    return d[b.length]!;
  };
  let best: string | undefined;
  let bestD = Infinity;
  for (const spec of KEYS) {
    const dd = dist(key, spec.key);
    if (dd < bestD) {
      bestD = dd;
      best = spec.key;
    }
  }
  return bestD <= Math.max(3, Math.floor(key.length / 4)) ? best : undefined;
}

/** The document as a flat map of dotted keys. Throws ConfigError when it cannot be read at all. */
function flatDocument(text: string, file: string): Map<string, unknown> {
  let raw: unknown;
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0] ? ` at line ${e.linePos[0].line}` : '';
    throw new ConfigError(file, [
      { key: '(file)', problem: `not valid YAML${line} (${e.code})`, fix: 'fix the syntax; indent with spaces and quote values containing ":" or "#"' },
    ]);
  }
  try {
    raw = doc.toJS({ maxAliasCount: 50 }) ?? {};
  } catch {
    throw new ConfigError(file, [{ key: '(file)', problem: 'YAML could not be read (too many aliases?)', fix: 'write the values out plainly' }]);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, [{ key: '(file)', problem: 'the top level is not a mapping', fix: 'start with keys such as "s3:" and "snapshotDir:"' }]);
  }
  try {
    return flatten(raw as Record<string, unknown>);
  } catch (e) {
    if (!(e instanceof AliasLoop)) throw e;
    throw new ConfigError(file, [
      { key: printable(e.message) || '(file)', problem: 'a YAML alias refers to the mapping that contains it', fix: 'write the values out plainly' },
    ]);
  }
}

/**
 * The values a document gives. Unreadable YAML throws ConfigError at once; unknown keys, secrets and values
 * of the wrong kind are added to `issues` so that one run reports them all.
 */
export function readDocument(text: string, file: string, issues: ConfigIssue[]): Given {
  const given = flatDocument(text, file);
  const specs = new Map(KEYS.map((s) => [s.key, s]));
  const values = new Map<string, unknown>();

  for (const [key, value] of given) {
    const spec = specs.get(key);
    if (!spec) {
      if (SECRET_KEYS.test(key)) {
        issues.push({
          key: printable(key),
          problem: 'secrets are not read from the config file',
          fix: 'put the keys in an AWS credentials file (mode 0600) named by s3.credentialsFile, or in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)',
        });
        continue;
      }
      const near = closest(key);
      issues.push({
        key: printable(key),
        problem: 'unknown key',
        fix: near ? `did you mean "${near}"?` : 'remove it; see the configuration reference in the README',
      });
      continue;
    }
    if (value === null || value === undefined || value === '') continue; // empty means "use the default"
    const v = coerce(spec, value, issues);
    if (v !== undefined) values.set(key, v);
  }

  return {
    get: <T>(key: string): T | undefined => values.get(key) as T | undefined,
    def: <T>(key: string): T => {
      const v = values.get(key);
      if (v !== undefined) return v as T;
      const spec = specs.get(key)!;
      return coerce(spec, spec.default, []) as T;
    },
    has: (key) => values.has(key),
  };
}
