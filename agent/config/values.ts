// One config value against its key's kind: coerced to the type the agent uses, or a problem that names
// the key and says what to write instead. Values are echoed bounded and printable, secrets never.
import { isAbsolute } from 'node:path';
import { CONTROL } from '../base/text.js';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../base/units.js';
import type { Kind, KeySpec } from './keys.js';
import type { ConfigIssue } from './issues.js';

export function describe(value: unknown, sensitive = false): string {
  if (sensitive) return 'the given value';
  let s: string;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : (JSON.stringify(value) ?? String(value));
  } catch {
    s = String(value);
  }
  // hostile or huge values: show a bounded, printable excerpt
  s = s.replace(/[^\x20-\x7e]/g, '?');
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

// PEM needs its line breaks
const PEM_CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/;

export const KIND_HINT: Record<Kind, string> = {
  string: 'a string',
  path: 'an absolute path',
  int: 'a whole number',
  bool: 'true or false',
  duration: 'a duration like 30s, 5m, 2h or 3d',
  size: 'a size like 16MiB or 64MB',
  list: 'a list of strings',
};

export function coerce(spec: KeySpec, value: unknown, issues: ConfigIssue[]): unknown {
  // a default described in words (`<hostname>`) stands for "computed": the same as unset
  if (value === undefined || (typeof value === 'string' && value === spec.default && /^<.*>$/.test(value))) return undefined;
  const bad = (problem?: string): undefined => {
    issues.push({
      key: spec.key,
      problem: problem ?? `${describe(value, spec.sensitive)} is not ${KIND_HINT[spec.kind]}`,
      fix: spec.values
        ? `use one of: ${spec.values.join(', ')}`
        : `write ${KIND_HINT[spec.kind]}${spec.default !== undefined ? ` (default ${JSON.stringify(spec.default)})` : ''}`,
    });
    return undefined;
  };
  const show = (n: number): string => (spec.kind === 'duration' ? formatDuration(n) : spec.kind === 'size' ? formatBytes(n).replace(' ', '') : String(n));
  const range = (n: number, shown: string): number | undefined => {
    if (spec.min !== undefined && n < spec.min) return bad(`${shown} is below the minimum of ${show(spec.min)}`);
    if (spec.max !== undefined && n > spec.max) return bad(`${shown} is above the maximum of ${show(spec.max)}`);
    return n;
  };
  switch (spec.kind) {
    case 'string': {
      if (typeof value !== 'string' && typeof value !== 'number') return bad();
      const s = String(value);
      if (s.length > 4096 && spec.key !== 's3.ca') return bad('is longer than 4096 characters');
      // values are printed (check-config, logs): no terminal escapes, line breaks or bidi overrides; PEM needs lines
      if ((spec.key === 's3.ca' ? PEM_CONTROL : CONTROL).test(s)) return bad('contains control characters');
      if (spec.values && !spec.values.includes(s)) return bad(`${describe(s)} is not allowed`);
      return s;
    }
    case 'path': {
      if (typeof value !== 'string' || value.length === 0 || value.length > 4096 || value.includes('\0')) return bad();
      // it is printed in logs and by check-config: escape sequences would reach the operator's terminal
      if (CONTROL.test(value)) return bad('contains control characters');
      if (!isAbsolute(value)) return bad(`${describe(value)} is not an absolute path`);
      return value.replace(/\/+$/, '') || '/';
    }
    case 'int': {
      const n = typeof value === 'string' && /^\d+$/.test(value.trim()) ? Number(value) : value;
      if (typeof n !== 'number' || !Number.isSafeInteger(n)) return bad();
      return range(n, String(n));
    }
    case 'bool':
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === 'false') return value === 'true';
      return bad();
    case 'duration': {
      const ms = parseDuration(value);
      if (ms === undefined || ms > 366 * 86_400_000) return bad(ms === undefined ? undefined : `${describe(value)} is longer than a year`);
      return range(ms, describe(value));
    }
    case 'size': {
      const n = parseSize(value);
      if (n === undefined) return bad();
      return range(n, describe(value));
    }
    case 'list': {
      const arr = typeof value === 'string' ? [value] : value;
      if (!Array.isArray(arr) || arr.some((x) => typeof x !== 'string' || x.length === 0 || x.length > 256)) return bad();
      const strings = arr as string[];
      if (strings.some((x) => CONTROL.test(x))) return bad('contains control characters');
      return strings;
    }
  }
}
