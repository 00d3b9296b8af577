// `upload PATH…`: each named file gets the daemon's decision and, when it is a complete snapshot, the
// daemon's one read pass (verify, encrypt, send, confirm) and key. Named files do not wait for a writer or
// a zip: what is not complete now is not uploaded.
import { basename } from 'node:path';
import { classifyError, describeError, exitCodeFor } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { fingerprint, NotRegularError, openRegular } from '../base/files.js';
import { formatBytes } from '../base/units.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import { examineFile, recognise } from '../detect/scan.js';
import type { Logger } from '../ops/log.js';
import { resolveIntegrity, shipOptions } from '../ship/options.js';
import { Uploader } from '../ship/upload.js';
import { compileRules, snapshotTime, unnameable } from '../snapshot/names.js';
import type { DeepCheck } from '../snapshot/deep.js';
import { objectKey } from '../store/layout.js';
import { Ledger, ledgerLocation } from '../store/ledger.js';
import type { Store } from '../store/store.js';
import { q, type Out } from './output.js';
import { Progress } from './progress.js';

export interface UploadOptions {
  version: string;
  sealing?: Sealing;
  deep?: DeepCheck;
  quiet?: boolean;
}

export async function uploadCommand(cfg: Config, store: Store, log: Logger, paths: string[], opts: UploadOptions, io: Out): Promise<ExitCode> {
  let worst: ExitCode = EXIT.OK;
  const rules = compileRules(cfg.include, cfg.exclude);
  let ledger: Ledger | undefined;
  try {
    ledger = (await Ledger.open(cfg.stateDir, ledgerLocation(cfg))).ledger;
  } catch (e) {
    io.err(`warning: state directory ${cfg.stateDir} unusable (${(e as NodeJS.ErrnoException).code}); the daemon will find these uploads in S3 instead`);
  }
  const bump = (c: ExitCode): void => {
    if (worst === EXIT.OK || c === EXIT.UNAVAILABLE) worst = c;
  };
  const uploader = new Uploader(store);
  let integrity: Awaited<ReturnType<typeof resolveIntegrity>> | undefined;
  for (const path of paths) {
    const name = basename(path);
    let opened;
    try {
      opened = await openRegular(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      io.err(`${q(path)}: ${e instanceof NotRegularError ? e.message : code === 'ENOENT' ? 'no such file' : `cannot open (${code})`}`);
      bump(code === 'ENOENT' ? EXIT.NO_INPUT : EXIT.IO);
      continue;
    }
    const { fh, st } = opened;
    try {
      const snap = await recognise(path, name, rules, st.size);
      if ('detail' in snap) {
        io.err(`${q(path)}: not an etcd snapshot (${snap.detail}); not uploaded`);
        bump(EXIT.DATA);
        continue;
      }
      const badName = unnameable(name);
      if (badName) {
        io.err(`${q(path)}: not uploaded: ${badName}`);
        bump(EXIT.DATA);
        continue;
      }
      const inMemory = ledger ?? Ledger.inMemory(cfg.stateDir, ledgerLocation(cfg));
      const { decision } = await examineFile(cfg, inMemory, path, snap, { now: Date.now(), zipping: false, explicit: true });
      if (decision.state === 'confirmed') {
        io.out(
          `already present: ${q(path)} -> ${store.location}/${q(decision.why.replace(/^confirmed in S3 as /, ''))} (the ledger records this file as shipped)`,
        );
        continue;
      }
      if (decision.action.kind !== 'ship') {
        io.err(`${q(path)}: not uploaded: ${decision.why}`);
        bump(EXIT.DATA);
        continue;
      }
      integrity ??= await resolveIntegrity(store, cfg, log);
      const key = objectKey(cfg, name);
      const progress = new Progress(io, opts.quiet ? false : undefined, name);
      // drawn from the start: the uploader reports after each whole part
      progress.update(0, st.size);
      try {
        const fp = fingerprint(st);
        const outcome = await uploader.ship(
          {
            fh,
            fp,
            name,
            producer: snap.producer,
            snapshotTime: snapshotTime(snap, fp.mtimeMs),
            key,
            node: cfg.node,
            cluster: cfg.cluster,
            agent: opts.version,
            format: snap.format,
          },
          shipOptions(cfg, {
            integrity,
            ...(opts.sealing ? { sealing: opts.sealing } : {}),
            ...(opts.deep ? { deep: opts.deep } : {}),
            onProgress: (done, total) => progress.update(done, total),
          }),
        );
        progress.done();
        if (outcome.kind === 'rejected') {
          io.err(`${q(path)}: not uploaded: ${outcome.verdict.reason}: ${outcome.verdict.detail}`);
          log.error('snapshot rejected: not shipped', { file: path, reason: outcome.verdict.reason, detail: outcome.verdict.detail });
          bump(EXIT.DATA);
          continue;
        }
        const sha256 = outcome.kind === 'shipped' ? outcome.verified.sha256 : outcome.sha256;
        await ledger
          ?.record({
            name,
            key: outcome.key,
            ...(outcome.storedKey !== outcome.key ? { storedKey: outcome.storedKey } : {}),
            size: st.size,
            sha256,
            mtimeMs: st.mtimeMs,
            producer: snap.producer,
            confirmedAt: new Date().toISOString(),
            snapshotTime: snapshotTime(snap, st.mtimeMs).toISOString(),
          })
          .catch((e) => io.err(`warning: ledger not written (${(e as NodeJS.ErrnoException).code})`));
        io.out(
          `${outcome.kind === 'shipped' ? 'uploaded' : 'already present'}: ${q(path)} -> ${store.location}/${q(outcome.storedKey)} (${formatBytes(st.size)}, sha256 ${sha256})`,
        );
        log.info(outcome.kind === 'shipped' ? 'snapshot shipped and confirmed' : 'snapshot already in S3; not sent again', {
          file: path,
          key: outcome.storedKey,
          sha256,
        });
      } catch (err) {
        progress.done();
        io.err(`${q(path)}: upload failed: ${describeError(err, { location: store.location, key })}`);
        bump(exitCodeFor(classifyError(err)));
      }
    } finally {
      await fh.close();
    }
  }
  return worst;
}
