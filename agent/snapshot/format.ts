// What a snapshot's first bytes say it is: the one place that knows the bbolt and zip signatures.

export type SnapshotFormat = 'raw' | 'zip';
export type RejectReason = 'truncated' | 'corrupt' | 'format';

export interface DbInfo {
  /** etcd facts from the deep check, as `etcdctl snapshot status` prints them */
  revision: number;
  keys: number;
  hash?: number;
  pageSize: number;
  compactRevision?: number;
  consistentIndex?: number;
  term?: number;
}

export interface Verified {
  ok: true;
  format: SnapshotFormat;
  size: number;
  /** Hex SHA-256 of the whole file as stored: the bytes that are uploaded (before any encryption). */
  sha256: string;
  /** Bytes of the raw snapshot including its 32-byte hash (the inner entry for a zip; `size` for raw). */
  dbSize: number;
  /** Zip entry holding the snapshot. */
  entry?: string;
  /** present when the deep check ran */
  db?: DbInfo;
}
export interface Rejected {
  ok: false;
  reason: RejectReason;
  /** One short human line: what is wrong. */
  detail: string;
}
export type Verdict = Verified | Rejected;

export const reject = (reason: RejectReason, detail: string): Rejected => ({ ok: false, reason, detail });

export const META_MAGIC = 0xed0cdaed;
export const META_PAGE_FLAG = 0x04;
export const ZIP_LOCAL_SIG = Buffer.from('PK\x03\x04', 'latin1');

/** A bbolt meta page 0 at the start of `head`. */
export function looksLikeBbolt(head: Buffer): boolean {
  return head.length >= 20 && head.readUInt16LE(8) === META_PAGE_FLAG && head.readUInt32LE(16) === META_MAGIC;
}

/** Format from the first bytes (20 or more), or undefined when they say neither. */
export function sniffFormat(head: Buffer): SnapshotFormat | undefined {
  if (head.length >= 4 && head.subarray(0, 4).equals(ZIP_LOCAL_SIG)) return 'zip';
  if (looksLikeBbolt(head)) return 'raw';
  return undefined;
}

export function formatFromName(name: string): SnapshotFormat {
  return name.toLowerCase().endsWith('.zip') ? 'zip' : 'raw';
}

/** Content decides; the name is only a guess for files too short to say. */
export function formatOf(head: Buffer, name: string | undefined): SnapshotFormat {
  return sniffFormat(head) ?? (name !== undefined ? formatFromName(name) : 'raw');
}

export function formatMismatch(sniffed: SnapshotFormat | undefined, want: SnapshotFormat): Rejected | undefined {
  if (!sniffed || sniffed === want) return undefined;
  return reject('format', sniffed === 'zip' ? 'content is a zip, expected a raw snapshot' : 'content is a raw snapshot, expected a zip');
}
