// A real terminal for tests: tmux (Debian, scripts/install-deps.sh) runs a command in a detached session of
// a fixed size on its own server socket, and the test reads what the screen shows (capture-pane) while the
// command runs, as a person watching it would. Only this test's tmux server is ever stopped.
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TerminalRun {
  /** every distinct screen seen, in order (lines joined by \n, trailing blanks trimmed) */
  screens: string[];
  /** the last screen, after the command exited */
  final: string;
  code: number;
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs argv in a `cols`×`rows` terminal with exactly `env` (plus tmux's own TERM) and samples the screen every
 * `everyMs` until the command exits.
 */
export async function onTerminal(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  opts: { cols?: number; rows?: number; everyMs?: number; timeoutMs?: number } = {},
): Promise<TerminalRun> {
  const socket = `ebt-${process.pid}-${randomBytes(3).toString('hex')}`;
  const marker = `__exit_${randomBytes(3).toString('hex')}__`;
  // the shell prints the exit code and keeps the pane open so the last screen can be read
  const script = `${argv.map(quote).join(' ')}; echo "${marker}$?"; sleep 60`;
  const tmux = (...args: string[]) => run('tmux', ['-L', socket, '-f', '/dev/null', ...args], { env });
  await new Promise<void>((resolve, reject) => {
    const p = spawn(
      'tmux',
      ['-L', socket, '-f', '/dev/null', 'new-session', '-d', '-s', 't', '-x', String(opts.cols ?? 160), '-y', String(opts.rows ?? 40), 'sh', '-c', script],
      { env, stdio: 'ignore' },
    );
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`tmux new-session exited ${code}`))));
  });
  const screens: string[] = [];
  const deadline = Date.now() + (opts.timeoutMs ?? 90_000);
  try {
    for (;;) {
      const { stdout } = await tmux('capture-pane', '-p', '-t', 't');
      const screen = stdout
        .split('\n')
        .map((l) => l.trimEnd())
        .join('\n')
        .trimEnd();
      if (screens[screens.length - 1] !== screen) screens.push(screen);
      const m = new RegExp(`${marker}(\\d+)`).exec(screen);
      if (m) return { screens, final: screen.replace(new RegExp(`${marker}\\d+`), '').trimEnd(), code: Number(m[1]) };
      if (Date.now() > deadline) throw new Error(`the command did not finish on the terminal; last screen:\n${screen}`);
      await new Promise((r) => setTimeout(r, opts.everyMs ?? 100));
    }
  } finally {
    await tmux('kill-server').catch(() => undefined);
  }
}
