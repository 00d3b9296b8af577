// What one upload is asked to do and how: the file, its names, the options, and what came of it.
import type { FileHandle } from 'node:fs/promises';
import type { Fingerprint } from '../base/files.js';
import type { DeepCheck } from '../snapshot/deep.js';
import type { Rejected, SnapshotFormat, Verified } from '../snapshot/format.js';
import type { Manifest } from '../store/layout.js';
import type { ObjectLock, PartIntegrity } from '../store/store.js';
import type { Sealing } from '../crypto/seal.js';

export type { Sealing } from '../crypto/seal.js';

/** Age's chunk: parts hold whole chunks so that each part is encrypted (and retried) on its own. */
export const CHUNK = 64 * 1024;

export interface ShipRequest {
  fh: FileHandle;
  /** the file as it was when the pass started: it must be the same when the pass ends */
  fp: Fingerprint;
  name: string;
  producer: string;
  snapshotTime: Date;
  /** the snapshot key (the object gets `.age` appended when encrypted) */
  key: string;
  node: string;
  cluster: string;
  agent: string;
  /** expected from the name; the content decides */
  format?: SnapshotFormat;
}

export interface ShipOptions {
  signal?: AbortSignal;
  timeoutMs: number;
  partSize: number;
  queueSize: number;
  maxParts: number;
  integrity: PartIntegrity;
  bandwidthLimit?: number;
  deep?: DeepCheck;
  sealing?: Sealing;
  lock?: ObjectLock;
  /** plaintext bytes read and sent so far, after each part */
  onProgress?: (done: number, total: number) => void;
}

export type ShipOutcome =
  | { kind: 'shipped'; key: string; storedKey: string; verified: Verified; manifest: Manifest; partSize: number; parts: number }
  | { kind: 'present'; key: string; storedKey: string; sha256: string; lastModified?: Date; why: string }
  | { kind: 'rejected'; verdict: Rejected };

/** The plaintext part size: at least the configured one, a whole number of chunks, and few enough parts. */
export function partSizeFor(size: number, partSize: number, maxParts: number): number {
  const need = Math.max(partSize, Math.ceil(size / maxParts));
  return Math.ceil(need / CHUNK) * CHUNK;
}
