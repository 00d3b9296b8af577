// Two-stage signal handling: the first SIGTERM or SIGINT drains (the upload in flight may finish), a second
// exits at once for an operator who will not wait.
import { EXIT, type ExitCode } from '../base/exit.js';
import type { Logger } from '../ops/log.js';

export interface SignalDeps {
  log: Logger;
  /** how long a drain may take, as configured */
  shutdownTimeoutMs: number;
  /** the first stage: stop and drain */
  drain: () => Promise<ExitCode>;
  /** ends the process's run with this code */
  exit: (code: ExitCode) => void;
}

export function installSignals(d: SignalDeps): void {
  let count = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      d.log.info('signal received: draining (a second signal exits at once)', { signal: sig, drainSeconds: d.shutdownTimeoutMs / 1000 });
      void d.drain().then((code) => d.exit(code));
    } else {
      d.log.warn('second signal: exiting now', { signal: sig });
      d.exit(EXIT.INTERRUPTED);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
