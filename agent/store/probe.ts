// Asking the server what it really does, with small objects under this node's own prefix that are removed
// at once (`<prefix>.etcd-backup-agent-probe-<random>`):
//  - does it check a part's CRC32 header? A part is sent with a deliberately wrong one: a server that checks
//    refuses it. Ceph RGW 16 and Swift 2.30 accept it (they ignore the header), AWS refuses it. Only where it
//    was refused may a CRC32 stand in for the signed payload SHA-256 as the proof of each part.
//  - does it accept the configured server-side encryption, storage class and Object Lock? A one-byte object
//    written the way snapshots are written gets the server's own answer before the first upload would.
import { randomBytes } from 'node:crypto';
import { classifyError, describeError } from '../base/errors.js';
import { abortUpload } from './abort.js';
import { PROBE_MARK } from './layout.js';
import type { ObjectLock, Store } from './store.js';

export interface IntegrityProbe {
  /** the server refused a part whose CRC32 was wrong: a CRC32 header proves a part there */
  crc32Checked: boolean;
  detail: string;
}

const probeKey = (prefix: string): string => `${prefix}${PROBE_MARK}${process.pid}-${randomBytes(4).toString('hex')}`;

// a part of "probe" bytes whose true CRC32 is not zero; zero is the wrong value sent
const BODY = Buffer.from('etcd-backup-agent part checksum probe\n');
const WRONG_CRC = Buffer.alloc(4).toString('base64');

/** Sends one part with a wrong CRC32 and sees whether the server refuses it. Never leaves an upload open. */
export async function probePartChecksum(store: Store, prefix: string): Promise<IntegrityProbe> {
  const key = probeKey(prefix);
  let uploadId: string;
  try {
    uploadId = await store.createUpload(key, { metadata: {}, checksumAlgorithm: 'CRC32' });
  } catch (err) {
    const reason = classifyError(err);
    if (reason === 'refused' || reason === 'client')
      return { crc32Checked: false, detail: `the server refused a CRC32 multipart upload (${describeError(err, { location: store.location, key })})` };
    throw err;
  }
  try {
    await store.uploadPart(key, uploadId, 1, BODY, { kind: 'crc32', value: WRONG_CRC });
    return { crc32Checked: false, detail: 'a part with a wrong CRC32 header was accepted: the server does not check it' };
  } catch (err) {
    const reason = classifyError(err);
    if (reason === 'integrity' || reason === 'refused' || reason === 'client')
      return { crc32Checked: true, detail: `a part with a wrong CRC32 header was refused (${reason})` };
    throw err;
  } finally {
    await abortUpload(store, key, uploadId);
  }
}

export interface WriteProbe {
  ok: boolean;
  /** the server's answer when it refused */
  detail?: string;
}

/**
 * Writes and deletes a one-byte object with the options snapshots get (SSE, storage class, Object Lock):
 * what the first upload would meet. With Object Lock the probe cannot be deleted before its retention ends,
 * so its lock lasts one day.
 */
export async function probeWrite(store: Store, prefix: string, lock: ObjectLock | undefined): Promise<WriteProbe> {
  const key = probeKey(prefix);
  const probeLock = lock ? { mode: lock.mode, until: new Date(Date.now() + 86_400_000) } : undefined;
  try {
    await store.putObject(key, Buffer.from('probe\n'), { metadata: {}, contentType: 'text/plain', lock: probeLock });
  } catch (err) {
    const reason = classifyError(err);
    if (reason === 'refused' || reason === 'client' || reason === 'integrity')
      return { ok: false, detail: describeError(err, { location: store.location, key }) };
    throw err;
  }
  await store.delete(key).catch(() => undefined);
  return { ok: true };
}

/** How parts are proven, from the configured mode and what the probe saw. Pure. */
export function chooseIntegrity(
  mode: 'auto' | 'when_required' | 'when_supported',
  probe: IntegrityProbe | undefined,
): { integrity: 'sha256' | 'crc32'; note?: string } {
  if (mode === 'when_required') return { integrity: 'sha256' };
  if (probe?.crc32Checked) return { integrity: 'crc32' };
  if (mode === 'when_supported') {
    return {
      integrity: 'sha256',
      note: `s3.checksum is when_supported, but ${probe ? probe.detail : 'the server could not be probed'}; each part is proven by its signed payload SHA-256 instead`,
    };
  }
  return { integrity: 'sha256' };
}
