// Where a snapshot goes, decided from what the bucket already holds under its key, without reading the
// object: the same file already there (present), another version there (a second key beside it, named after
// this content's hash), or the key is free. Nothing is ever overwritten that holds other content.
import { AgentError } from '../base/errors.js';
import { readManifest } from '../store/catalog.js';
import { conflictKey, isSha256, keyRole, manifestKey, META, nameOf, parseMtime, storedKey as storedKeyOf } from '../store/layout.js';
import type { ObjectInfo, Store } from '../store/store.js';
import type { ShipRequest } from './request.js';
import { hashFile } from './source.js';

/** What the bucket already holds under a key, as far as it says without reading the object. */
interface Existing {
  info: ObjectInfo;
  /** of the plaintext, from the manifest or (objects of earlier agents) the `sha256` metadata */
  sha256?: string;
  size?: number;
  mtimeMs?: number;
  ours: boolean;
}

export type Placement =
  { kind: 'present'; key: string; storedKey: string; sha256: string; lastModified?: Date; why: string } | { kind: 'upload'; key: string; stored: string };

export async function place(store: Store, req: ShipRequest, encrypted: boolean, signal: AbortSignal): Promise<Placement> {
  let key = req.key;
  let stored = storedKeyOf(key, encrypted);
  let existing = await existingAt(store, stored, req);
  // The snapshot key is one snapshot whether its object is plain or `.age`: one uploaded before encryption
  // was turned on (or off) is this snapshot too, and its manifest must not be overwritten by the other form.
  let at = stored;
  if (!existing) {
    const other = storedKeyOf(key, !encrypted);
    existing = await existingAt(store, other, req);
    if (existing?.sha256 !== undefined) at = other;
    else existing = undefined;
  }
  if (existing) {
    const form = at === stored ? '' : encrypted ? ', unencrypted (uploaded before encryption was turned on)' : ', encrypted (uploaded while encryption was on)';
    const same =
      existing.sha256 !== undefined && existing.size === req.fp.size && existing.mtimeMs !== undefined && Math.abs(existing.mtimeMs - req.fp.mtimeMs) < 0.001;
    if (same) {
      return {
        kind: 'present',
        key,
        storedKey: at,
        sha256: existing.sha256!,
        lastModified: existing.info.lastModified,
        why: `S3 holds this file (same name, size and mtime in its manifest${form})`,
      };
    }
    if (existing.sha256 !== undefined || !existing.ours) {
      // Another version sits at the key. Telling whether it is this content needs this file's hash first:
      // a second read, only in this rare case (a snapshot rewritten, or a name reused).
      const sha256 = await hashFile(req.fh, req.fp.size, signal);
      if (existing.sha256 === sha256) {
        return {
          kind: 'present',
          key,
          storedKey: at,
          sha256,
          lastModified: existing.info.lastModified,
          why: `S3 holds the same content under this key${form}`,
        };
      }
      key = conflictKey(req.key, sha256);
      stored = storedKeyOf(key, encrypted);
      existing = await existingAt(store, stored, req);
      if (existing?.sha256 === sha256) {
        return { kind: 'present', key, storedKey: stored, sha256, lastModified: existing.info.lastModified, why: 'S3 holds the same content beside the key' };
      }
      if (existing && (existing.sha256 !== undefined || !existing.ours)) {
        throw new AgentError(
          'verify',
          `both ${storedKeyOf(req.key, encrypted)} and ${stored} hold other content than ${req.name}; not overwriting a backup — move one of them away`,
        );
      }
    }
    // else: this agent's own upload that never got its manifest; it was never counted as shipped
  }
  return { kind: 'upload', key, stored };
}

async function existingAt(store: Store, stored: string, req: ShipRequest): Promise<Existing | undefined> {
  const info = await store.head(stored);
  if (!info) return undefined;
  const md = info.metadata ?? {};
  const ours = md[META.node] === req.node && md[META.cluster] === req.cluster && nameOf(stored, md) === req.name;
  const role = keyRole(stored);
  const r = await readManifest(store, manifestKey(role.role === 'snapshot' ? role.key : stored));
  const m = r && 'manifest' in r ? r.manifest : undefined;
  if (m && m.object.key === stored) return { info, sha256: m.snapshot.sha256, size: m.snapshot.size, mtimeMs: m.snapshot.mtimeMs, ours };
  if (isSha256(md[META.sha256])) return { info, sha256: md[META.sha256], size: info.size, mtimeMs: parseMtime(md[META.mtime]), ours };
  return { info, ours };
}
