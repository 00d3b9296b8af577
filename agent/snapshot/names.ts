// Pure: which file names are snapshots, who wrote them, and which must never be shipped.
import { looksLikeBbolt, ZIP_LOCAL_SIG } from './format.js';

// The objects written beside a snapshot in S3 end so (see store/layout.ts); a file named so would collide.
export const ENCRYPTED_SUFFIX = '.age';
export const MANIFEST_SUFFIX = '.manifest.json';
export const SIGNATURE_SUFFIX = '.sig';
/** Probe objects of check-config and the start-up capability probe: `<nodePrefix>.probe-…`, deleted at once. */
export const PROBE_MARK = '.etcd-backup-agent-probe-';

/** File names that would collide with the objects written beside a snapshot are never snapshots. */
export function reservedName(name: string): boolean {
  return name.endsWith(MANIFEST_SUFFIX) || name.endsWith(SIGNATURE_SUFFIX) || name.endsWith(ENCRYPTED_SUFFIX) || name.startsWith(PROBE_MARK);
}

// C0 and C1 controls and DEL: S3 servers list keys in XML, which cannot carry them (Swift refuses to list a
// prefix holding one, or to start an upload of one), and a terminal acts on them.
const CONTROL_CHARS = /[\x00-\x1f\x7f-\x9f]/;

/** Why a snapshot's file name cannot become an S3 key, or undefined when it can. */
export function unnameable(name: string): string | undefined {
  if (CONTROL_CHARS.test(name))
    return 'its file name holds control characters, which S3 servers cannot list or name reliably (Swift refuses them); rename it to have it shipped';
  return undefined;
}

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

export type IgnoreReason = 'partial' | 'pki-bundle' | 'rkestate' | 'hidden' | 'excluded' | 'temp' | 'reserved';

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
  // RKE's recurring backups: 2024-05-01T12:00:00Z_etcd
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
  // its object would collide with the manifest, signature or encrypted object of another snapshot
  if (reservedName(name)) return { kind: 'ignored', name, reason: 'reserved' };
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
export function sniffName(name: string, head: Buffer): SnapshotName | undefined {
  if (head.length >= 64 && looksLikeBbolt(head)) {
    return { kind: 'snapshot', name, producer: 'etcdctl', format: 'raw', base: name, zips: false };
  }
  if (head.length >= 30 && head.subarray(0, 4).equals(ZIP_LOCAL_SIG)) {
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

/** How many bytes `sniffName` wants to see. */
export const SNIFF_BYTES = 4096;

/** When the snapshot was taken: the producer's time in its name, else the file's mtime. */
export function snapshotTime(snap: Pick<SnapshotName, 'timestamp'>, mtimeMs: number): Date {
  return snap.timestamp ?? new Date(mtimeMs);
}

/** The time a name says a snapshot was taken, for names from S3 (`list`, retention); undefined if none. */
export function timeFromName(name: string): Date | undefined {
  const c = classify(name);
  return c.kind === 'snapshot' ? c.timestamp : undefined;
}
