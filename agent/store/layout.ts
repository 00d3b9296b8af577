// Where a snapshot goes in the bucket and what is written beside it: the key template, the metadata set
// when the upload starts, and the manifest written once the upload is complete and proven.
//
// One read pass means the snapshot's SHA-256 is known only after its last byte went up, while S3 metadata is
// fixed when the upload starts. So every snapshot object `<key>` (or `<key>.age` when encrypted) gets a small
// JSON manifest `<key>.manifest.json`, written after the last part and before CompleteMultipartUpload, that
// carries the hash, sizes, how each part was proven, and (when signing) the signatures: an object never
// exists without its manifest. A manifest whose object is missing (Complete failed) counts for nothing.
// Objects written by agents before the manifest carry `sha256` in their metadata; every reader accepts both.
import { ENCRYPTED_SUFFIX, MANIFEST_SUFFIX, PROBE_MARK, SIGNATURE_SUFFIX } from '../snapshot/names.js';

export { PROBE_MARK };

export interface KeyConfig {
  cluster: string;
  node: string;
  s3: { prefix: string; keyTemplate: string };
}

function render(cfg: KeyConfig, template: string, name: string): string {
  const key = template.replaceAll('{prefix}', cfg.s3.prefix).replaceAll('{cluster}', cfg.cluster).replaceAll('{node}', cfg.node).replaceAll('{name}', name);
  return key.replace(/\/{2,}/g, '/').replace(/^\//, '');
}

/** The snapshot's key (without `.age`), from the template. */
export function objectKey(cfg: KeyConfig, name: string): string {
  return render(cfg, cfg.s3.keyTemplate, name);
}

/** Key prefix under which this node's objects live (the template up to {name}). */
export function nodePrefix(cfg: KeyConfig): string {
  return render(cfg, cfg.s3.keyTemplate, '');
}

/** Key prefix under which every node of the cluster lives (for `list --cluster`). */
export function clusterPrefix(cfg: KeyConfig): string {
  const t = cfg.s3.keyTemplate;
  return render(cfg, t.slice(0, t.indexOf('{node}')), '');
}

/** Where a different object already sits under the snapshot's key, ours goes beside it, never over it. */
export function conflictKey(key: string, sha256: string): string {
  return `${key}.${sha256.slice(0, 12)}`;
}

export const storedKey = (key: string, encrypted: boolean): string => (encrypted ? `${key}${ENCRYPTED_SUFFIX}` : key);
export const manifestKey = (key: string): string => `${key}${MANIFEST_SUFFIX}`;
export const signatureKey = (key: string): string => `${key}${SIGNATURE_SUFFIX}`;

export type KeyRole =
  { role: 'snapshot'; key: string; encrypted: boolean } | { role: 'manifest'; key: string } | { role: 'signature'; key: string } | { role: 'probe' };

/** What a listed key is: a snapshot object (its snapshot key), a manifest or signature of one, or a probe. */
export function keyRole(stored: string): KeyRole {
  const base = stored.slice(stored.lastIndexOf('/') + 1);
  if (base.startsWith(PROBE_MARK)) return { role: 'probe' };
  if (stored.endsWith(MANIFEST_SUFFIX)) return { role: 'manifest', key: stored.slice(0, -MANIFEST_SUFFIX.length) };
  if (stored.endsWith(SIGNATURE_SUFFIX)) return { role: 'signature', key: stored.slice(0, -SIGNATURE_SUFFIX.length) };
  if (stored.endsWith(ENCRYPTED_SUFFIX)) return { role: 'snapshot', key: stored.slice(0, -ENCRYPTED_SUFFIX.length), encrypted: true };
  return { role: 'snapshot', key: stored, encrypted: false };
}

// ───────────────────────────── metadata (set when the upload starts) ─────────────────────────────

/** User-metadata names (S3 lower-cases them; values are ASCII). */
export const META = {
  /** legacy: objects from agents before the manifest carry the whole file's SHA-256 here */
  sha256: 'sha256',
  name: 'name',
  producer: 'producer',
  /** the file's mtime in seconds with a fraction, as rclone writes and reads it */
  mtime: 'mtime',
  /** when the snapshot was taken: the producer's time in its name, else the file's mtime (ISO 8601) */
  snapshotTime: 'snapshot-time',
  format: 'format',
  node: 'node',
  cluster: 'cluster',
  agent: 'agent',
  /** `age` when the object is an age file */
  encryption: 'encryption',
} as const;

export interface ObjectMeta {
  name: string;
  producer: string;
  mtimeMs: number;
  snapshotTime: Date;
  format: 'raw' | 'zip';
  node: string;
  cluster: string;
  agent: string;
  encrypted: boolean;
}

/** rclone's `mtime`: seconds since the epoch with a fraction. Milliseconds keep their three decimals. */
export function formatMtime(ms: number): string {
  const s = (ms / 1000).toFixed(6);
  return s.replace(/\.?0+$/, '');
}

/** Reads rclone's seconds-with-fraction, and the plain milliseconds earlier agents wrote. */
export function parseMtime(v: string | undefined): number | undefined {
  if (!v || !/^\d+(\.\d+)?$/.test(v)) return undefined;
  const n = Number(v);
  // 1e11 s is the year 5138; earlier agents wrote milliseconds (13 digits today)
  return v.includes('.') || n < 1e11 ? n * 1000 : n;
}

export function objectMetadata(m: ObjectMeta): Record<string, string> {
  return {
    [META.name]: encodeURIComponent(m.name),
    [META.producer]: m.producer,
    [META.mtime]: formatMtime(m.mtimeMs),
    [META.snapshotTime]: m.snapshotTime.toISOString(),
    [META.format]: m.format,
    [META.node]: m.node,
    [META.cluster]: m.cluster,
    [META.agent]: m.agent,
    ...(m.encrypted ? { [META.encryption]: 'age' } : {}),
  };
}

/** The file name an object was made from: its `name` metadata, else the last part of its key. */
export function nameOf(key: string, md: Record<string, string> | undefined): string {
  const raw = md?.[META.name];
  if (raw) {
    try {
      return decodeURIComponent(raw);
    } catch {
      /* fall back to the key */
    }
  }
  const k = keyRole(key);
  const bare = k.role === 'probe' ? key : k.key;
  return bare.slice(bare.lastIndexOf('/') + 1);
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
export const isSha256 = (v: unknown): v is string => typeof v === 'string' && SHA256_HEX.test(v);

// ───────────────────────────── manifest (written after the upload is proven) ─────────────────────────────

export interface DbFacts {
  /** etcd's revision and key count, as `etcdctl snapshot status` reports them */
  revision: number;
  keys: number;
  hash?: number;
  pageSize?: number;
}

export interface Manifest {
  manifest: 1;
  /** the snapshot key (the object is this, plus `.age` when encrypted) */
  key: string;
  node: string;
  cluster: string;
  agent: string;
  shippedAt: string;
  snapshot: {
    name: string;
    producer: string;
    format: 'raw' | 'zip';
    /** ISO 8601: the producer's time in the name, else the file's mtime */
    time: string;
    mtimeMs: number;
    /** of the snapshot file as it was on disk (the plaintext) */
    size: number;
    sha256: string;
    db?: DbFacts;
  };
  object: {
    key: string;
    size: number;
    parts: number;
    partSize: number;
    /** how the server proved each part intact: the signed payload SHA-256, or a CRC32 it was shown to check */
    integrity: 'sha256' | 'crc32' | 'md5';
    /**
     * Each part's checksum as sent and verified by the server (hex SHA-256, or base64 CRC32/MD5), and where
     * parts end in the stored object: the first part holds `firstPartBytes`, the others `partBytes`, the last
     * the rest. A drill recomputes them over the stored bytes: it proves an encrypted object unchanged
     * without its key.
     */
    partChecksums?: string[];
    firstPartBytes?: number;
    partBytes?: number;
    encryption?: { scheme: 'age'; recipients: string[] };
  };
  signature?: {
    scheme: 'sshsig';
    namespace: string;
    publicKey: string;
    /** the `.sig` object: the snapshot's own signature, for `ssh-keygen -Y verify` */
    snapshotSignature: string;
    /** SSHSIG over canonicalManifest(): binds node, cluster, name and time to the snapshot's hash */
    manifestSignature: string;
  };
}

/** The bytes a manifest signature covers: the manifest without its manifest signature, keys sorted. */
export function canonicalManifest(m: Manifest): Buffer {
  const copy = JSON.parse(JSON.stringify(m)) as Manifest;
  if (copy.signature) copy.signature.manifestSignature = '';
  return Buffer.from(stableJson(copy), 'utf8');
}

function stableJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export function encodeManifest(m: Manifest): Buffer {
  return Buffer.from(`${JSON.stringify(m, null, 1)}\n`, 'utf8');
}

/** Parses a manifest; undefined when it is not one of ours or is malformed (a reason is returned). */
export function parseManifest(text: string): { manifest: Manifest } | { problem: string } {
  let m: Manifest;
  try {
    m = JSON.parse(text) as Manifest;
  } catch {
    return { problem: 'not JSON' };
  }
  if (!m || typeof m !== 'object' || m.manifest !== 1) return { problem: 'not an etcd-backup-agent manifest (version 1)' };
  const s = m.snapshot;
  const o = m.object;
  if (typeof m.key !== 'string' || !s || !o) return { problem: 'missing key, snapshot or object' };
  if (!isSha256(s.sha256) || !Number.isSafeInteger(s.size) || !Number.isSafeInteger(o.size) || typeof s.name !== 'string')
    return { problem: 'bad snapshot hash, name or sizes' };
  if (s.format !== 'raw' && s.format !== 'zip') return { problem: 'bad snapshot format' };
  if (Number.isNaN(new Date(s.time).getTime())) return { problem: 'bad snapshot time' };
  return { manifest: m };
}
