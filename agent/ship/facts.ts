// What is known about one tracked file now: the facts lifecycle.decide() needs, from one lstat, the ledger
// and the state of its zip. Gathering only: deciding is decide()'s, acting on it the shipper's.
import { lstat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fingerprint, sameFingerprint } from '../base/files.js';
import type { Config } from '../config/keys.js';
import type { FileFacts } from '../snapshot/lifecycle.js';
import type { Ledger } from '../store/ledger.js';
import type { Track } from './track.js';

export interface FactsSource {
  cfg: Config;
  ledger: Ledger;
  /** the tracked file of that name, if any */
  tracked: (name: string) => Track | undefined;
  /** a zip has been seen in the directory; asked late, as one may be found while this file is looked at */
  dirHasZips: () => boolean;
}

/** The file's facts now, with its fingerprint noted in the track; undefined when it cannot be stat'ed. */
export async function factsOf(t: Track, src: FactsSource): Promise<FileFacts | undefined> {
  const { cfg, ledger } = src;
  let st;
  try {
    st = await lstat(t.path);
  } catch {
    return undefined;
  }
  const fp = fingerprint(st);
  if (!sameFingerprint(fp, t.fp)) {
    t.fp = fp;
    t.changedAt = Date.now();
  }
  if (t.unreadable && t.unreadable.ctimeMs !== st.ctimeMs) {
    // a chmod or ACL change: the same bytes may be readable now
    t.unreadable = undefined;
    t.quick = undefined;
  }
  const kind = st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'special';
  const confirmed = kind === 'file' ? ledger.findUnchanged(t.name, fp.size, fp.mtimeMs) : undefined;
  const zipping = t.snap.format === 'raw' && (t.snap.zips || src.dirHasZips());
  return {
    kind,
    fp,
    now: Date.now(),
    firstSeenMs: t.firstSeen,
    changedAtMs: t.changedAt,
    ...(confirmed ? { confirmed: { key: confirmed.key, sha256: confirmed.sha256 } } : {}),
    zipping,
    ...(zipping ? { zip: await zipState(t, src) } : {}),
    ...(t.quick && sameFingerprint(t.quick.fp, fp) ? { quick: t.quick.result } : {}),
    ...(t.failed && sameFingerprint(t.failed.fp, fp) ? { failed: t.failed.result } : {}),
    ...(t.unreadable ? { unreadable: { ...t.unreadable, nowCtimeMs: st.ctimeMs } } : {}),
    settleTimeoutMs: cfg.detect.settleTimeoutMs,
    zipWaitMs: cfg.detect.zipWaitMs,
    pollIntervalMs: cfg.detect.pollIntervalMs,
  };
}

/** How the zip of a raw file stands: a tracked zip by its state, an untracked one that exists is pending. */
async function zipState(t: Track, src: FactsSource): Promise<FileFacts['zip']> {
  const z = src.tracked(`${t.name}.zip`);
  if (z) {
    if (z.state === 'rejected') return 'rejected';
    return z.state === 'queued' || z.state === 'shipping' || z.state === 'confirmed' ? 'good' : 'pending';
  }
  return (await lstat(join(dirname(t.path), `${t.name}.zip`)).then(
    () => true,
    () => false,
  ))
    ? 'pending'
    : 'absent';
}
