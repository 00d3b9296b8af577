// `check-config [--offline]`: the config parsed (else main already exited 78); now everything the first
// upload would meet, asked of the real server with small probe objects under this node's prefix that are
// deleted at once: the bucket and credentials, server-side encryption and storage class, Object Lock, how
// parts can be proven, and the encryption and signing keys.
import { readdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { classifyError, describeError, exitCodeFor } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { formatDuration } from '../base/units.js';
import type { Config } from '../config/keys.js';
import type { Sealing } from '../crypto/seal.js';
import { proxyDecision } from '../store/client.js';
import { nodePrefix } from '../store/layout.js';
import { describeProxy } from '../store/proxy-env.js';
import { chooseIntegrity, probePartChecksum, probeWrite } from '../store/probe.js';
import type { Store } from '../store/store.js';
import { objectLockFor } from '../ship/options.js';
import { q, type Out } from './output.js';

export interface CheckOptions {
  offline?: boolean;
  sealing?: Sealing;
  /** where the credentials come from, as main found them (said, never the keys) */
  credentialsFrom: string;
}

export async function checkConfigCommand(cfg: Config, store: Store, io: Out, opts: CheckOptions): Promise<ExitCode> {
  io.out(`config ok: node ${cfg.node}, cluster ${cfg.cluster}, snapshots from ${q(cfg.snapshotDir)} to ${store.location}/${q(nodePrefix(cfg))}`);
  let code: ExitCode = EXIT.OK;
  const worse = (c: ExitCode): void => {
    if (code === EXIT.OK) code = c;
  };
  // Real operations, not access(): the unit grants read access through a capability, which access() ignores.
  try {
    await readdir(cfg.snapshotDir);
    io.out(`snapshot directory ok: ${q(cfg.snapshotDir)}`);
  } catch (e) {
    io.out(`warning: snapshot directory ${q(cfg.snapshotDir)}: ${(e as NodeJS.ErrnoException).code}; the agent will wait for it (check snapshotDir)`);
  }
  const probe = join(cfg.stateDir, `.check-config-${process.pid}`);
  try {
    await writeFile(probe, '', { mode: 0o600 });
    await unlink(probe);
    io.out(`state directory ok: ${q(cfg.stateDir)}`);
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    io.out(
      c === 'ENOENT'
        ? `note: state directory ${q(cfg.stateDir)} does not exist yet; the agent creates it (systemd: StateDirectory=)`
        : `warning: state directory ${q(cfg.stateDir)} not writable (${c}); the ledger will be kept in memory only`,
    );
  }
  const s = opts.sealing;
  io.out(
    s?.encrypt
      ? `encryption: age to ${s.encrypt.recipients.length} recipient(s): objects are <key>.age`
      : 'encryption: off (objects are plaintext snapshots: whoever reads the bucket reads every Secret)',
  );
  io.out(s?.sign ? `signing: SSHSIG by ${s.sign.publicKey} (namespace ${s.sign.namespace})` : 'signing: off');
  io.out(
    `deep check before upload: ${cfg.verify.beforeUpload ? 'on (every bbolt page of each snapshot)' : 'off (verify.beforeUpload: false; only the drill reads the pages)'}`,
  );
  io.out(
    cfg.verify.enabled
      ? `restore drill: cron ${q(cfg.verify.schedule)} (UTC)${cfg.verify.sample ? `, the newest object and ${cfg.verify.sample} older` : ', the newest object'}; on demand: etcd-backup-agent verify --latest`
      : 'restore drill: off (verify.enabled: false)',
  );
  io.out(`credentials: ${opts.credentialsFrom}`);
  io.out(`proxy: ${describeProxy(proxyDecision(cfg))}`);
  if (opts.offline) return code;

  const prefix = nodePrefix(cfg);
  try {
    await store.check();
    io.out(`S3 ok: bucket reachable at ${store.location}`);
  } catch (err) {
    io.err(`S3 check failed: ${describeError(err, { location: store.location })}`);
    return exitCodeFor(classifyError(err));
  }
  try {
    const lock = await store.objectLockEnabled();
    if (cfg.s3.objectLock) {
      if (lock === false) {
        io.err(
          `Object Lock: the config asks for ${cfg.s3.objectLock.mode} retention but bucket ${cfg.s3.bucket} has no Object Lock; create the bucket with Object Lock enabled, or remove s3.objectLock`,
        );
        worse(EXIT.CONFIG);
      } else
        io.out(
          `Object Lock: ${lock ? 'enabled on the bucket' : 'the server does not say'}; every object is kept ${cfg.s3.objectLock.mode} for ${formatDuration(cfg.s3.objectLock.retainForMs)}`,
        );
    } else io.out(`Object Lock: ${lock ? 'enabled on the bucket (s3.objectLock is not set: objects get the bucket default retention, if any)' : 'off'}`);
    const w = await probeWrite(store, prefix, objectLockFor(cfg));
    const asked = [
      cfg.s3.sse !== 'none' && `sse ${cfg.s3.sse}`,
      cfg.s3.storageClass && `storage class ${cfg.s3.storageClass}`,
      cfg.s3.objectLock && 'Object Lock',
    ]
      .filter(Boolean)
      .join(', ');
    if (w.ok) io.out(`write probe ok: a small object${asked ? ` with ${asked}` : ''} was written and deleted under ${q(prefix)}`);
    else {
      io.err(`write probe refused${asked ? ` (the config asks for ${asked})` : ''}: ${w.detail}`);
      worse(EXIT.REFUSED);
    }
    if (cfg.s3.checksum === 'when_required') io.out('part integrity: signed payload SHA-256 (s3.checksum: when_required)');
    else {
      const p = await probePartChecksum(store, prefix);
      const choice = chooseIntegrity(cfg.s3.checksum, p);
      io.out(
        `part integrity: ${choice.integrity === 'crc32' ? 'CRC32 header (the server refused a wrong one)' : 'signed payload SHA-256'}; probe: ${p.detail}`,
      );
      if (choice.note) io.out(`note: ${choice.note}`);
    }
  } catch (err) {
    io.err(`S3 probe failed: ${describeError(err, { location: store.location })}`);
    worse(exitCodeFor(classifyError(err)));
  }
  return code;
}
