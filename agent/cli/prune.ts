// `prune [--dry-run] [--stale-upload-age D]`: one retention pass from the command line. It has no daemon to
// ask, so it sees the directory through detect/scan.ts (the same lifecycle.decide() as the daemon), runs the
// daemon's executor and prints a line for every file: gone, or why it stayed.
import { EXIT, type ExitCode } from '../base/exit.js';
import { formatBytes } from '../base/units.js';
import type { Config } from '../config/keys.js';
import { scanDirectory } from '../detect/scan.js';
import type { Logger } from '../ops/log.js';
import { prunePass } from '../retention/executor.js';
import { describePolicy } from '../retention/policy.js';
import type { LocalFileAt } from '../snapshot/lifecycle.js';
import { nodePrefix } from '../store/layout.js';
import { Ledger, ledgerLocation } from '../store/ledger.js';
import type { Store } from '../store/store.js';
import { q, type Out } from './output.js';

export interface PruneCommandOptions {
  dryRun: boolean;
  staleUploadAgeMs?: number;
}

const line = (label: string, what: string, why: string): string => `${label.padEnd(12)}  ${q(what)}: ${q(why)}`;
const byName = <T extends { name?: string; key?: string }>(a: T, b: T): number => ((a.name ?? a.key ?? '') < (b.name ?? b.key ?? '') ? -1 : 1);

/** `prune [--dry-run] [--stale-upload-age D]`: one pass with the configured policy. */
export async function pruneCommand(cfg: Config, store: Store, log: Logger, opts: PruneCommandOptions, io: Out): Promise<ExitCode> {
  let ledger: Ledger;
  try {
    const opened = await Ledger.open(cfg.stateDir, ledgerLocation(cfg));
    ledger = opened.ledger;
    if (opened.status !== 'ok')
      io.err(
        `warning: ledger ${ledger.path} is ${opened.status}; every local snapshot counts as unshipped, so none is deleted locally (the daemon rebuilds the ledger from S3 at start)`,
      );
  } catch (e) {
    ledger = Ledger.inMemory(cfg.stateDir, ledgerLocation(cfg));
    io.err(
      `warning: state directory ${cfg.stateDir} unusable (${(e as NodeJS.ErrnoException).code}); every local snapshot counts as unshipped, so none is deleted locally`,
    );
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
  io.out(`${dryRun ? 'dry run (nothing is deleted): ' : ''}${cfg.snapshotDir}: ${describePolicy(cfg, opts.staleUploadAgeMs)}`);
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
  for (const [detail, phases] of details)
    io.err(`warning: ${phases.join(', ')} retention incomplete: ${detail}${phases.includes('local') ? '; no local snapshot was deleted' : ''}`);
  if (report.problems.some((p) => p.s3)) return EXIT.UNAVAILABLE;
  return report.problems.length ? EXIT.IO : EXIT.OK;
}
