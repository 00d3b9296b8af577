// The snapshot directory seen in one go, without a daemon to ask (`prune`, `upload`, `status` offline): each
// file's facts gathered now and given to lifecycle.decide(), the same function the daemon's shipper asks.
// Unlike the daemon it cannot wait, so a file that fails its checks but changed within detect.settleTimeout
// counts as still being written, and a file not yet confirmed is verified in full to tell "unshipped" from
// "rejected".
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fingerprint, NotRegularError, openRegular, readAt } from '../base/files.js';
import { isValidUtf8Name, shownBytes } from '../base/text.js';
import type { Config } from '../config/keys.js';
import { decide, type CheckResult, type Decision, type FileFacts, type LocalFileAt } from '../snapshot/lifecycle.js';
import {
  classify,
  compileRules,
  snapshotTime,
  sniffName,
  SNIFF_BYTES,
  unnameable,
  type IgnoreReason,
  type NameRules,
  type SnapshotName,
} from '../snapshot/names.js';
import { quickCheck, verifyFile } from '../snapshot/verifier.js';
import type { Ledger } from '../store/ledger.js';

export const IGNORED: Record<IgnoreReason, string> = {
  partial: 'a partial file (*.part) from an interrupted writer',
  'pki-bundle': 'the cluster PKI bundle',
  rkestate: 'an RKE cluster state file',
  hidden: 'a hidden file',
  excluded: 'matches an exclude pattern',
  temp: 'a temporary file',
  reserved: 'named like the manifest, signature or encrypted object the agent writes beside a snapshot',
};

/** What a name in the directory is: a snapshot (by name, else by its first bytes), or why not. */
export async function recognise(path: string, name: string, rules: NameRules, size: number): Promise<SnapshotName | { detail: string }> {
  const cls = classify(name, rules);
  if (cls.kind === 'ignored') return { detail: IGNORED[cls.reason] };
  if (cls.kind === 'snapshot') return cls;
  if (size >= 64) {
    try {
      const { fh, st } = await openRegular(path);
      try {
        const snap = sniffName(name, await readAt(fh, 0, Math.min(SNIFF_BYTES, st.size)));
        if (snap) return snap;
      } finally {
        await fh.close();
      }
    } catch {
      /* unreadable: not recognisable either */
    }
  }
  return { detail: 'unrecognised name and content' };
}

export interface Examined {
  decision: Decision;
  facts: FileFacts;
  /** the file's SHA-256 when it was verified in full and passed */
  sha256?: string;
}

/** Facts about one snapshot file now, and what decide() makes of them. */
export async function examineFile(
  cfg: Config,
  ledger: Ledger,
  path: string,
  snap: SnapshotName,
  opts: { now: number; zip?: FileFacts['zip']; zipping: boolean; explicit?: boolean; full?: boolean },
): Promise<Examined> {
  const st = await lstat(path);
  const fp = fingerprint(st);
  const kind = st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'special';
  const confirmed = kind === 'file' ? ledger.findUnchanged(snap.name, fp.size, fp.mtimeMs) : undefined;
  const facts: FileFacts = {
    kind,
    fp,
    now: opts.now,
    // offline, the file's mtime is the best guess of when it was last written
    firstSeenMs: st.mtimeMs,
    changedAtMs: st.mtimeMs,
    ...(confirmed ? { confirmed: { key: confirmed.key, sha256: confirmed.sha256 } } : {}),
    zipping: opts.zipping,
    ...(opts.zip ? { zip: opts.zip } : {}),
    ...(opts.explicit ? { explicit: true } : {}),
    settleTimeoutMs: cfg.detect.settleTimeoutMs,
    zipWaitMs: cfg.detect.zipWaitMs,
    pollIntervalMs: cfg.detect.pollIntervalMs,
  };
  let sha256: string | undefined;
  for (;;) {
    const decision = decide(facts);
    if (decision.action.kind === 'check') {
      facts.quick = await check(path, snap, facts);
      continue;
    }
    // the daemon would verify this file in its upload pass; offline, verify it now to tell good from rejected
    if (decision.action.kind === 'ship' && opts.full && !facts.failed && sha256 === undefined) {
      const full = await fullCheck(path, snap);
      if (!full.ok) {
        facts.failed = full;
        continue;
      }
      sha256 = full.sha256!;
      const same = ledger.find(snap.name, sha256);
      if (same && same.size === fp.size) {
        facts.confirmed = { key: same.key, sha256 };
        continue;
      }
    }
    return { decision, facts, ...(sha256 ? { sha256 } : {}) };
  }
}

async function check(path: string, snap: SnapshotName, facts: FileFacts): Promise<CheckResult> {
  try {
    const { fh, st } = await openRegular(path);
    try {
      const r = await quickCheck(fh, st.size, snap.format, snap.name);
      return r ? { ok: false, reason: r.reason, detail: r.detail } : { ok: true };
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (e instanceof NotRegularError) return { ok: false, reason: 'format', detail: e.message };
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    facts.unreadable = { code, ctimeMs: 0, nowCtimeMs: 0 };
    return { ok: false, reason: 'format', detail: `cannot read it (${code})` };
  }
}

async function fullCheck(path: string, snap: SnapshotName): Promise<CheckResult & { sha256?: string }> {
  try {
    const { fh, st } = await openRegular(path);
    try {
      const v = await verifyFile(fh, st.size, { format: snap.format, name: snap.name });
      if (!v.ok) return { ok: false, reason: v.reason, detail: v.detail };
      const after = await fh.stat();
      if (after.size !== st.size || after.mtimeMs !== st.mtimeMs) return { ok: false, reason: 'truncated', detail: 'changed while it was being verified' };
      return { ok: true, sha256: v.sha256 };
    } finally {
      await fh.close();
    }
  } catch (e) {
    return { ok: false, reason: 'format', detail: e instanceof NotRegularError ? e.message : `unreadable (${(e as NodeJS.ErrnoException).code ?? String(e)})` };
  }
}

/** Every file in the snapshot directory, as retention reads them: state, size, time, and why. */
export async function scanDirectory(cfg: Config, ledger: Ledger, now = Date.now()): Promise<LocalFileAt[]> {
  const rules = compileRules(cfg.include, cfg.exclude);
  const raw = await readdir(cfg.snapshotDir, { encoding: 'buffer' });
  const out: LocalFileAt[] = [];
  const snapshots: { f: LocalFileAt; snap: SnapshotName }[] = [];
  for (const bytes of raw.sort((a, b) => Buffer.compare(a, b))) {
    const name = bytes.toString('utf8');
    const path = join(cfg.snapshotDir, name);
    if (!isValidUtf8Name(bytes)) {
      out.push({
        name: shownBytes(bytes),
        path,
        state: 'unrecognised',
        size: 0,
        mtimeMs: 0,
        detail: 'its file name is not valid UTF-8; rename it to have it shipped',
      });
      continue;
    }
    let st;
    try {
      st = await lstat(path);
    } catch {
      continue; // gone since the listing
    }
    const f: LocalFileAt = { name, path, state: 'unrecognised', size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
    out.push(f);
    if (!st.isFile()) {
      f.detail = st.isDirectory() ? 'a directory' : st.isSymbolicLink() ? 'a symlink, never followed' : 'not a regular file';
      continue;
    }
    const snap = await recognise(path, name, rules, st.size);
    if ('detail' in snap) {
      f.detail = snap.detail;
      continue;
    }
    f.timeMs = snapshotTime(snap, st.mtimeMs).getTime();
    const badName = unnameable(name);
    if (badName) {
      Object.assign(f, { state: 'rejected', detail: `name: ${badName}` });
      continue;
    }
    snapshots.push({ f, snap });
  }
  const dirHasZips = snapshots.some((s) => s.snap.format === 'zip');
  // zips first: a raw file's fate depends on its zip's
  const zipStates = new Map<string, FileFacts['zip']>();
  const ordered = [...snapshots].sort((a, b) => Number(b.snap.format === 'zip') - Number(a.snap.format === 'zip'));
  for (const { f, snap } of ordered) {
    const zipping = snap.format === 'raw' && (snap.zips || dirHasZips);
    const zip = zipping ? (zipStates.get(`${f.name}.zip`) ?? 'absent') : undefined;
    let e: Examined;
    try {
      e = await examineFile(cfg, ledger, f.path, snap, { now, zipping, ...(zip ? { zip } : {}), full: true });
    } catch {
      continue; // gone meanwhile
    }
    f.state = e.decision.state;
    if (e.decision.state === 'rejected' || e.decision.state === 'settling' || e.decision.state === 'held')
      f.detail = e.decision.why.replace(/^failed verification \((.*)\)$/, '$1');
    f.sha256 = e.facts.confirmed?.sha256 ?? e.sha256;
    if (snap.format === 'zip') {
      const s = e.decision.state;
      zipStates.set(f.name, s === 'rejected' ? 'rejected' : s === 'queued' || s === 'confirmed' ? 'good' : 'pending');
    }
  }
  return out;
}
