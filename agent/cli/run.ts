// `run`: the daemon, until SIGTERM. Warns once at start about setups an operator should know are risky.
import { statSync } from 'node:fs';
import { EXIT, type ExitCode } from '../base/exit.js';
import type { Config } from '../config/keys.js';
import { Daemon, type DaemonOptions } from '../daemon/daemon.js';
import type { Logger } from '../ops/log.js';
import { ServerSetupError } from '../ops/server.js';
import type { Out } from './output.js';

/** Things that work but expose more than they should: said once in the log at start. */
export function startWarnings(cfg: Config, stat: (p: string) => { mode: number } | undefined = (p) => statSync(p, { throwIfNoEntry: false })): string[] {
  const out: string[] = [];
  const cf = cfg.s3.credentialsFile;
  const mode = cf ? stat(cf)?.mode : undefined;
  if (cf && mode !== undefined && (mode & 0o077) !== 0) {
    out.push(`credentials file ${cf} is mode ${(mode & 0o777).toString(8).padStart(4, '0')}: other users can read the S3 keys; chmod 600 it`);
  }
  const m = cfg.metrics;
  const host = m.listen.slice(0, m.listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  const allInterfaces = host === '' || host === '0.0.0.0' || host === '::';
  if (m.enabled && allInterfaces && !m.basicAuthUser) {
    out.push(
      `metrics endpoint listens on all interfaces (${m.listen}) without authentication: anyone who can reach this host reads backup state; set metrics.listen to a private address, or metrics.basicAuthUser/basicAuthPasswordFile`,
    );
  }
  return out;
}

export async function runCommand(cfg: Config, log: Logger, opts: DaemonOptions, io: Out): Promise<ExitCode> {
  for (const w of startWarnings(cfg)) log.warn(w);
  const daemon = new Daemon(cfg, log, opts);
  try {
    await daemon.start();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (e instanceof ServerSetupError) {
      io.err(`config error: ${e.message}`);
      log.error('metrics endpoint cannot be set up', { error: e.message });
      return EXIT.CONFIG;
    }
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      log.error('cannot listen for metrics', { listen: cfg.metrics.listen, error: code, fix: 'choose another metrics.listen or stop the other process' });
      return EXIT.UNAVAILABLE;
    }
    throw e;
  }
  return daemon.exited;
}
