// The `prune` verb: one retention pass from the command line. It has no daemon to ask, so it looks at the
// snapshot directory the way the daemon's shipper does (name rules, content sniffing, the ledger, full
// verification), then runs the daemon's executor and prints a line for every file: gone, or why it stayed.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { nodePrefix, type Config } from '../config/config.js';
import type { Out } from './commands.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { fingerprint, NotRegularError, openRegular, sameFingerprint } from '../base/files.js';
import { Ledger } from '../store/ledger.js';
import type { Logger } from '../ops/log.js';
import { classify, compileRules, sniff, SNIFF_BYTES, type IgnoreReason, type SnapshotName } from '../detect/producers.js';
import { describePolicy, prunePass, type LocalFileAt } from '../retention/retention.js';
import type { Store } from '../store/s3.js';
import { formatBytes } from '../base/units.js';
import { verifyFile } from '../snapshot/verify.js';

const IGNORED: Record<IgnoreReason, string> = {
  partial: 'a partial file (*.part) from an interrupted writer',
  'pki-bundle': 'the cluster PKI bundle',
  rkestate: 'an RKE cluster state file',
  hidden: 'a hidden file',
  excluded: 'matches an exclude pattern',
  temp: 'a temporary file',
};

async function readHead(path: string): Promise<Buffer | undefined> {
  try {
    const { fh, st } = await openRegular(path);
    try {
      const buf = Buffer.alloc(Math.min(SNIFF_BYTES, st.size));
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return undefined;
  }
}

/**
 * What the daemon would know of each file in the snapshot directory, found in one go: a file the ledger
 * holds unchanged is confirmed; anything else is verified now. Unlike the daemon it cannot wait, so a file
 * that fails verification but changed within detect.settleTimeout counts as still being written.
 */
export async function scanDirectory(cfg: Config, ledger: Ledger, now = Date.now()): Promise<LocalFileAt[]> {
  const rules = compileRules(cfg.include, cfg.exclude);
  const entries = await readdir(cfg.snapshotDir);
  const present = new Set(entries);
  const out: LocalFileAt[] = [];
  const snapshots: { f: LocalFileAt; snap: SnapshotName }[] = [];
  for (const name of entries.sort()) {
    const path = join(cfg.snapshotDir, name);
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
    let cls = classify(name, rules);
    if (cls.kind === 'ignored') {
      f.detail = IGNORED[cls.reason];
      continue;
    }
    if (cls.kind === 'unknown') {
      const head = st.size >= 64 ? await readHead(path) : undefined;
      cls = (head && sniff(name, head)) || cls;
    }
    if (cls.kind !== 'snapshot') {
      f.detail = 'unrecognised name and content';
      continue;
    }
    snapshots.push({ f, snap: cls });
  }
  const dirHasZips = snapshots.some((s) => s.snap.format === 'zip');
  for (const { f, snap } of snapshots) await examine(cfg, ledger, f, snap, { dirHasZips, present, now });
  return out;
}

async function examine(cfg: Config, ledger: Ledger, f: LocalFileAt, snap: SnapshotName, dir: { dirHasZips: boolean; present: ReadonlySet<string>; now: number }): Promise<void> {
  const shipped = ledger.findUnchanged(f.name, f.size, f.mtimeMs);
  if (shipped) {
    Object.assign(f, { state: 'confirmed', sha256: shipped.sha256 });
    return;
  }
  // as the shipper does: RKE-family producers zip the raw file and then delete it
  if (snap.format === 'raw' && (snap.zips || dir.dirHasZips)) {
    if (dir.present.has(`${f.name}.zip`)) {
      f.state = 'superseded';
      return;
    }
    if (dir.now - f.mtimeMs < cfg.detect.zipWaitMs) {
      f.state = 'held';
      return;
    }
  }
  try {
    const { fh, st } = await openRegular(f.path);
    try {
      const before = fingerprint(st);
      const verdict = await verifyFile(fh, before.size, { format: snap.format, name: f.name });
      if (!sameFingerprint(before, fingerprint(await fh.stat()))) {
        Object.assign(f, { state: 'settling', detail: 'changed while it was being verified' });
        return;
      }
      if (!verdict.ok) {
        const recent = dir.now - f.mtimeMs < cfg.detect.settleTimeoutMs;
        Object.assign(f, { state: recent ? 'settling' : 'rejected', detail: `${verdict.reason}: ${verdict.detail}` });
        return;
      }
      f.sha256 = verdict.sha256;
      const same = ledger.find(f.name, verdict.sha256);
      f.state = same && same.size === verdict.size ? 'confirmed' : 'queued';
    } finally {
      await fh.close();
    }
  } catch (e) {
    Object.assign(f, { state: 'rejected', detail: e instanceof NotRegularError ? e.message : `unreadable (${(e as NodeJS.ErrnoException).code ?? String(e)})` });
  }
}

export interface PruneCommandOptions {
  dryRun: boolean;
  staleUploadAgeMs?: number;
}

const line = (label: string, what: string, why: string): string => `${label.padEnd(12)}  ${what}: ${why}`;
const byName = <T extends { name?: string; key?: string }>(a: T, b: T): number => ((a.name ?? a.key ?? '') < (b.name ?? b.key ?? '') ? -1 : 1);

/** `prune [--dry-run] [--stale-upload-age D]`: one pass with the configured policy. */
export async function pruneCommand(cfg: Config, store: Store, log: Logger, opts: PruneCommandOptions, io: Out): Promise<ExitCode> {
  let ledger: Ledger;
  try {
    const opened = await Ledger.open(cfg.stateDir);
    ledger = opened.ledger;
    if (opened.status !== 'ok') io.err(`warning: ledger ${ledger.path} is ${opened.status}; every local snapshot counts as unshipped, so none is deleted locally (the daemon rebuilds the ledger from S3 at start)`);
  } catch (e) {
    ledger = Ledger.inMemory(cfg.stateDir);
    io.err(`warning: state directory ${cfg.stateDir} unusable (${(e as NodeJS.ErrnoException).code}); every local snapshot counts as unshipped, so none is deleted locally`);
  }
  let files: LocalFileAt[];
  try {
    files = await scanDirectory(cfg, ledger);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    io.err(`cannot read the snapshot directory ${cfg.snapshotDir} (${code}); check snapshotDir and the agent's read access`);
    return code === 'ENOENT' ? EXIT.NO_INPUT : EXIT.IO;
  }
  const dryRun = opts.dryRun || cfg.retention.dryRun;
  const report = await prunePass({ cfg, store, ledger, log }, files, { trigger: 'cli', dryRun, staleUploadAgeMs: opts.staleUploadAgeMs });

  const gone = dryRun ? 'would delete' : 'deleted';
  io.out(`${dryRun ? 'dry run (nothing is deleted): ' : ''}${cfg.snapshotDir}: ${describePolicy(cfg)}`);
  for (const d of [...report.local.deleted].sort(byName)) io.out(line(gone, d.name, `${formatBytes(d.size)}; ${d.reason}`));
  for (const k of [...report.local.kept].sort(byName)) io.out(line('kept', k.name, k.reason));
  if (report.remote) {
    io.out(`remote ${store.location}/${nodePrefix(cfg)}:`);
    for (const d of [...report.remote.deleted].sort(byName)) io.out(line(gone, d.key, `${formatBytes(d.size)}; ${d.reason}`));
    for (const k of [...report.remote.kept].sort(byName)) io.out(line('kept', k.key, k.reason));
  }
  if (report.uploads && report.uploads.aborted.length + report.uploads.kept.length > 0) {
    io.out(`multipart uploads under ${nodePrefix(cfg)}:`);
    for (const u of report.uploads.aborted) io.out(line(dryRun ? 'would abort' : 'aborted', `${u.key} (upload ${u.uploadId})`, u.reason));
    for (const u of report.uploads.kept) io.out(line('left', `${u.key} (upload ${u.uploadId})`, u.reason));
  }
  const bytes = report.local.deleted.reduce((n, d) => n + d.size, 0);
  const parts = [`local: ${gone} ${report.local.deleted.length} (${formatBytes(bytes)}), kept ${report.local.kept.length}`];
  if (report.remote) parts.push(`remote: ${gone} ${report.remote.deleted.length}, kept ${report.remote.kept.length}`);
  if (report.uploads) parts.push(`stale uploads: ${dryRun ? 'would abort' : 'aborted'} ${report.uploads.aborted.length}`);
  io.out(`summary: ${parts.join('; ')}`);
  // one unreachable S3 fails every phase with the same words: say it once
  const details = new Map<string, string[]>();
  for (const p of report.problems) details.set(p.detail, [...(details.get(p.detail) ?? []), p.phase]);
  for (const [detail, phases] of details) io.err(`warning: ${phases.join(', ')} retention incomplete: ${detail}${phases.includes('local') ? '; no local snapshot was deleted' : ''}`);
  if (report.problems.some((p) => p.s3)) return EXIT.UNAVAILABLE;
  return report.problems.length ? EXIT.IO : EXIT.OK;
}
