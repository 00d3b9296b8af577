// Pure: which file names are snapshots, who wrote them, and which must never be shipped.

export type Producer = 'etcdctl' | 'rke1' | 'rke1-oneshot' | 'rancher' | 'rke2' | 'custom';
export type Format = 'raw' | 'zip';

export interface SnapshotName {
  kind: 'snapshot';
  name: string;
  producer: Producer;
  format: Format;
  /** name without `.zip`: the raw file a zip replaces */
  base: string;
  /** time encoded in the name, when the producer puts one there */
  timestamp?: Date;
  /** RKE-family producers compress the raw file into `<name>.zip` and delete the raw */
  zips: boolean;
}

export type IgnoreReason = 'partial' | 'pki-bundle' | 'rkestate' | 'hidden' | 'excluded' | 'temp';

export type Classification =
  | SnapshotName
  | { kind: 'ignored'; name: string; reason: IgnoreReason }
  /** not a known name: only the file's first bytes can tell (`sniff`) */
  | { kind: 'unknown'; name: string };

const RFC3339 = String.raw`(\d{4}-\d{2}-\d{2}T\d{2}[:-]\d{2}[:-]\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}[:-]?\d{2}))`;

interface Rule {
  producer: Producer;
  re: RegExp;
  zips: boolean;
  time: (m: RegExpExecArray) => Date | undefined;
}

const rfc = (s: string | undefined): Date | undefined => {
  if (!s) return undefined;
  // safe_timestamp names replace ':' by '-' in the time part
  const fixed = s.replace(/T(\d{2})-(\d{2})-(\d{2})/, 'T$1:$2:$3').replace(/([+-]\d{2})-(\d{2})$/, '$1:$2');
  const d = new Date(fixed);
  return Number.isNaN(d.getTime()) ? undefined : d;
};
const unix = (s: string | undefined): Date | undefined => (s ? new Date(Number(s) * 1000) : undefined);

// Order matters: the first match wins.
const RULES: readonly Rule[] = [
  // rancher/rke-tools recurring: 2024-05-01T12:00:00Z_etcd
  { producer: 'rke1', re: new RegExp(`^${RFC3339}_etcd$`), zips: true, time: (m) => rfc(m[1]) },
  // rke etcd snapshot-save without --name
  { producer: 'rke1-oneshot', re: new RegExp(`^rke_etcd_snapshot_${RFC3339}$`), zips: true, time: (m) => rfc(m[1]) },
  // Rancher-managed RKE1: c-<cluster>-<kind>-<5 chars>_<time>
  { producer: 'rancher', re: new RegExp(`^c-[a-z0-9-]+?-[a-z]{1,3}-[a-z0-9]{5}_${RFC3339}$`), zips: true, time: (m) => rfc(m[1]) },
  // RKE2/k3s: etcd-snapshot-<node>-<unix>, on-demand-<node>-<unix>
  { producer: 'rke2', re: /^(?:etcd-snapshot|on-demand)-.+-(\d{9,11})$/, zips: true, time: (m) => unix(m[1]) },
  // plain etcdctl snapshot save, RKE one-time --name x.db
  { producer: 'etcdctl', re: /^.+\.db$/, zips: false, time: () => undefined },
];

/** Translates a shell glob (`*`, `?`, `[...]`) on a file name into a RegExp. */
export function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        let body = glob.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export interface NameRules {
  include: RegExp[];
  exclude: RegExp[];
}

export function compileRules(include: readonly string[], exclude: readonly string[]): NameRules {
  return { include: include.map(globToRegExp), exclude: exclude.map(globToRegExp) };
}

const NO_RULES: NameRules = { include: [], exclude: [] };

/** Classifies a file name (not a path) found in the snapshot directory. */
export function classify(name: string, rules: NameRules = NO_RULES): Classification {
  // Never shipped whatever the patterns say: half-written, key material, cluster state, dotfiles.
  if (name.endsWith('.part')) return { kind: 'ignored', name, reason: 'partial' };
  if (name === 'pki.bundle.tar.gz') return { kind: 'ignored', name, reason: 'pki-bundle' };
  if (name.endsWith('.rkestate')) return { kind: 'ignored', name, reason: 'rkestate' };
  if (name.startsWith('.')) return { kind: 'ignored', name, reason: 'hidden' };
  if (name.endsWith('.tmp') || name.endsWith('~')) return { kind: 'ignored', name, reason: 'temp' };
  if (rules.exclude.some((r) => r.test(name))) return { kind: 'ignored', name, reason: 'excluded' };

  const format: Format = name.endsWith('.zip') ? 'zip' : 'raw';
  const base = format === 'zip' ? name.slice(0, -4) : name;
  for (const rule of RULES) {
    const m = rule.re.exec(base);
    if (m) return { kind: 'snapshot', name, producer: rule.producer, format, base, timestamp: rule.time(m), zips: rule.zips };
  }
  if (rules.include.some((r) => r.test(name))) return { kind: 'snapshot', name, producer: 'custom', format, base, zips: false };
  return { kind: 'unknown', name };
}

/**
 * Decides an unknown name from its first bytes: a bbolt meta page is a raw snapshot (etcdctl with any
 * name, RKE one-time `--name N`); a zip whose first entry is `/backup/…` or `<base>` is an RKE/RKE2 zip.
 */
export function sniff(name: string, head: Buffer): SnapshotName | undefined {
  if (head.length >= 64 && head.readUInt16LE(8) === 0x04 && head.readUInt32LE(16) === 0xed0cdaed) {
    return { kind: 'snapshot', name, producer: 'etcdctl', format: 'raw', base: name, zips: false };
  }
  if (head.length >= 30 && head.readUInt32LE(0) === 0x04034b50) {
    const nameLen = head.readUInt16LE(26);
    if (head.length < 30 + nameLen) return undefined;
    const entry = head.subarray(30, 30 + nameLen).toString('utf8');
    const base = name.endsWith('.zip') ? name.slice(0, -4) : name;
    const entryBase = entry.slice(entry.lastIndexOf('/') + 1);
    if (entry.startsWith('/backup/') || entryBase === base) {
      return { kind: 'snapshot', name, producer: entry.startsWith('/backup/') ? 'rke1-oneshot' : 'custom', format: 'zip', base, zips: false };
    }
  }
  return undefined;
}

/** How many bytes `sniff` wants to see. */
export const SNIFF_BYTES = 4096;
