// Bytes, rate and ETA of one long transfer on a terminal (upload, fetch, verify), drawn with cli-progress on
// stderr. Nothing is drawn on a pipe, in CI, with --quiet or for JSON output: stdout stays clean either way.
import cliProgress from 'cli-progress';
import { formatBytes } from '../base/units.js';
import { q, type Out } from './output.js';

/** Draw only for a person: stderr is a terminal, not CI, not dumb. `force` overrides (false: --quiet). */
export function wantsProgress(io: Pick<Out, 'tty'>, force?: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (force !== undefined) return force;
  return io.tty === true && !env.CI && env.TERM !== 'dumb';
}

export class Progress {
  private bar: cliProgress.SingleBar | undefined;
  private readonly on: boolean;
  // the transfer starts with this object: the first update comes only after a whole part went, and a rate
  // measured from then would show that part as sent in no time
  private readonly started = Date.now();

  constructor(
    io: Pick<Out, 'tty'>,
    force: boolean | undefined,
    private readonly label: string,
  ) {
    this.on = wantsProgress(io, force);
  }

  update(done: number, total: number): void {
    if (!this.on) return;
    if (!this.bar) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${q(this.label).slice(0, 40)} [{bar}] {percentage}% {doneText}/{totalText} {rate}/s ETA {eta_formatted}`,
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 20,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(total, 0, { doneText: formatBytes(0), totalText: formatBytes(total), rate: formatBytes(0) });
    }
    const seconds = Math.max(0.001, (Date.now() - this.started) / 1000);
    this.bar.update(done, { doneText: formatBytes(done), totalText: formatBytes(total), rate: formatBytes(Math.round(done / seconds)) });
  }

  done(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
