// `list [--cluster] [--json]`: the snapshots in S3, newest first by snapshot time, with what restores them.
import { classifyError, describeError, exitCodeFor } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { formatBytes } from '../base/units.js';
import type { Config } from '../config/keys.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { clusterPrefix, nodePrefix } from '../store/layout.js';
import type { Store } from '../store/store.js';
import { jsonLine, q, type Out } from './output.js';
import { restoreHints } from './restore-hints.js';

function flags(e: CatalogEntry): string {
  return [e.encrypted ? 'age' : '', e.hasSignature ? 'signed' : '', e.manifest ? '' : e.complete ? 'legacy' : 'incomplete'].filter(Boolean).join(',') || '-';
}

export async function listCommand(cfg: Config, store: Store, all: boolean, json: boolean, io: Out): Promise<ExitCode> {
  const prefix = all ? clusterPrefix(cfg) : nodePrefix(cfg);
  let entries: CatalogEntry[];
  try {
    entries = (await readCatalog(store, prefix)).entries;
  } catch (err) {
    io.err(`list failed: ${describeError(err, { location: store.location })}`);
    return exitCodeFor(classifyError(err));
  }
  if (json) {
    for (const e of entries) {
      const db = e.manifest?.snapshot.db;
      io.out(
        jsonLine({
          key: e.object.key,
          name: e.name,
          size: e.size,
          storedSize: e.object.size,
          time: e.time.toISOString(),
          lastModified: e.object.lastModified?.toISOString(),
          sha256: e.sha256,
          node: e.node,
          cluster: e.cluster,
          encrypted: e.encrypted,
          signed: e.hasSignature,
          complete: e.complete,
          ...(db ? { revision: db.revision, keys: db.keys } : {}),
        }),
      );
    }
    return EXIT.OK;
  }
  if (entries.length === 0) {
    io.out(`no snapshots under ${store.location}/${q(prefix)}`);
    return EXIT.OK;
  }
  const w = Math.max(...entries.map((e) => q(e.object.key).length), 3);
  io.out(`${'KEY'.padEnd(w)}  ${'SIZE'.padStart(10)}  ${'SNAPSHOT TIME (UTC)'.padEnd(20)}  ${'REVISION'.padStart(10)}  ${'FLAGS'.padEnd(12)}  SHA256`);
  for (const e of entries) {
    const rev = e.manifest?.snapshot.db ? String(e.manifest.snapshot.db.revision) : '';
    io.out(
      `${q(e.object.key).padEnd(w)}  ${formatBytes(e.size).padStart(10)}  ${e.time.toISOString().slice(0, 19).padEnd(20)}  ${rev.padStart(10)}  ${flags(e).padEnd(12)}  ${e.sha256 ?? '(no sha256: not a confirmed backup)'}`,
    );
  }
  const newest = entries.find((e) => e.complete && (all || (e.node === cfg.node && e.cluster === cfg.cluster)));
  if (newest) {
    io.out('');
    for (const line of restoreHints(cfg, newest)) io.out(line);
  }
  return EXIT.OK;
}
