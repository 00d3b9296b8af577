// `verify [KEY…] [--latest] [--all] [--cluster] [--json] [--restore]`: each object streamed back from S3 and
// checked (drill/verify.ts), one line per object. Exit 0 when all pass, 65 when any fails, 69 when S3
// cannot be read.
import { readFile } from 'node:fs/promises';
import { classifyError, describeError, exitCodeFor, ioCode } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { formatBytes } from '../base/units.js';
import type { Config } from '../config/keys.js';
import { parseIdentities, type AgeIdentity } from '../crypto/age.js';
import { parseAllowedSigners, type AllowedSigner } from '../crypto/sshsig.js';
import { verifyEntry, type VerifyReport } from '../drill/verify.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { clusterPrefix, keyRole, nodePrefix } from '../store/layout.js';
import type { Store } from '../store/store.js';
import { jsonLine, q, type Out } from './output.js';
import { Progress } from './progress.js';

export interface VerifyCommandOptions {
  keys: string[];
  latest: boolean;
  all: boolean;
  cluster: boolean;
  json: boolean;
  restore: boolean;
  identityFile?: string;
  allowedSigners?: string;
  quiet: boolean;
}

async function readKeys<T>(what: string, path: string, parse: (t: string) => T, io: Out): Promise<T | ExitCode> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    io.err(`${what} ${q(path)} cannot be read (${ioCode(e)})`);
    return EXIT.NO_INPUT;
  }
  try {
    return parse(text);
  } catch (e) {
    io.err(`${what} ${q(path)}: ${(e as Error).message}`);
    return EXIT.DATA;
  }
}

export async function verifyCommand(cfg: Config, store: Store, opts: VerifyCommandOptions, io: Out): Promise<ExitCode> {
  const identityFile = opts.identityFile ?? process.env.ETCD_BACKUP_AGENT_IDENTITY_FILE;
  let identities: AgeIdentity[] | undefined;
  let signers: AllowedSigner[] | undefined;
  if (identityFile) {
    const r = await readKeys('identity file', identityFile, (t) => parseIdentities(t, identityFile), io);
    if (typeof r === 'number') return r;
    identities = r;
  }
  if (opts.allowedSigners) {
    const r = await readKeys('allowed signers file', opts.allowedSigners, (t) => parseAllowedSigners(t, opts.allowedSigners!), io);
    if (typeof r === 'number') return r;
    signers = r;
  }
  let targets: CatalogEntry[];
  try {
    if (opts.keys.length) {
      targets = [];
      for (const k of opts.keys) {
        const role = keyRole(k);
        const key = role.role === 'snapshot' ? role.key : k;
        const e = (await readCatalog(store, key)).entries.find((x) => x.key === key);
        if (!e) {
          io.err(`no object ${q(k)} in ${store.location}; see 'etcd-backup-agent list'`);
          return EXIT.NO_INPUT;
        }
        targets.push(e);
      }
    } else {
      const entries = (await readCatalog(store, opts.cluster ? clusterPrefix(cfg) : nodePrefix(cfg))).entries;
      const own = opts.cluster ? entries : entries.filter((e) => e.node === cfg.node && e.cluster === cfg.cluster);
      // the default is this node's newest, as the drill does
      targets = opts.all ? own : own.slice(0, 1);
      if (!targets.length) {
        io.err(`no snapshots under ${store.location}/${q(opts.cluster ? clusterPrefix(cfg) : nodePrefix(cfg))}`);
        return EXIT.NO_INPUT;
      }
    }
  } catch (err) {
    io.err(`verify failed: ${describeError(err, { location: store.location })}`);
    return exitCodeFor(classifyError(err));
  }

  let code: ExitCode = EXIT.OK;
  if (!opts.json)
    io.out(`${'KEY'.padEnd(48)}  ${'REVISION'.padStart(9)}  ${'KEYS'.padStart(8)}  ${'SIZE'.padStart(10)}  ${'SNAPSHOT TIME (UTC)'.padEnd(20)}  VERDICT`);
  for (const e of targets) {
    const progress = new Progress(io, opts.quiet || opts.json ? false : undefined, e.name);
    let r: VerifyReport;
    try {
      r = await verifyEntry(store, e, {
        ...(identities ? { identities } : {}),
        ...(signers ? { signers } : {}),
        restore: opts.restore,
        onProgress: (d, t) => progress.update(d, t),
      });
    } catch (err) {
      progress.done();
      io.err(`${q(e.object.key)}: ${describeError(err, { location: store.location, key: q(e.object.key) })}`);
      return exitCodeFor(classifyError(err));
    } finally {
      progress.done();
    }
    if (!r.ok) code = EXIT.DATA;
    if (opts.json) {
      io.out(
        jsonLine({
          key: r.key,
          ok: r.ok,
          depth: r.depth,
          revision: r.db?.revision,
          keys: r.db?.keys,
          hash: r.db?.hash,
          size: r.size,
          time: r.time.toISOString(),
          verdict: r.ok ? 'pass' : r.reason,
          detail: r.detail,
          ...(r.restore ? { restore: r.restore } : {}),
        }),
      );
    } else {
      const verdict = r.ok
        ? `pass (${r.depth === 'deep' ? 'deep' : 'stored bytes'}${r.restore ? `, ${r.restore.tool}: ok` : ''})`
        : `FAIL ${r.reason}: ${r.detail}`;
      io.out(
        `${q(r.key).padEnd(48)}  ${String(r.db?.revision ?? '-').padStart(9)}  ${String(r.db?.keys ?? '-').padStart(8)}  ${formatBytes(r.size).padStart(10)}  ${r.time.toISOString().slice(0, 19).padEnd(20)}  ${q(verdict)}`,
      );
    }
  }
  return code;
}
