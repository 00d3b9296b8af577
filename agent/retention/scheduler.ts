// Runs retention passes on the configured cron schedule and once shortly after start; never two at once.
import { createTask, type ScheduledTask } from 'node-cron';
import { formatDuration } from '../base/units.js';
import { cronLogger } from '../ops/log.js';
import { prunePass, type LocalFileAt, type PassReport, type RetentionDeps } from './executor.js';
/** The first pass waits for the start scan and the S3 sync, so that it sees verified files. */
export const START_DELAY_MS = 60_000;

export interface SchedulerDeps extends RetentionDeps {
  /** the daemon's current view of the snapshot directory */
  files: () => LocalFileAt[];
  /** keys being uploaded right now: their multipart uploads are not stale */
  inFlightKeys: () => ReadonlySet<string>;
}

/** Runs a pass on the configured cron schedule and once shortly after start; never two at once. */
export class RetentionScheduler {
  private task: ScheduledTask | undefined;
  private startTimer: NodeJS.Timeout | undefined;
  private running: Promise<PassReport | undefined> | undefined;
  private readonly abort = new AbortController();

  constructor(
    private readonly d: SchedulerDeps,
    private readonly startDelayMs = START_DELAY_MS,
  ) {}

  start(): void {
    const { cfg, log } = this.d;
    const r = cfg.retention;
    this.task = createTask(r.schedule, () => this.runNow('schedule'), {
      name: 'retention',
      timezone: r.timezone,
      noOverlap: true,
      logger: cronLogger(log, 'retention'),
      unref: true,
    });
    void this.task.start();
    this.startTimer = setTimeout(() => void this.runNow('start'), this.startDelayMs);
    this.startTimer.unref();
    log.info('retention scheduled', {
      schedule: r.schedule,
      timezone: r.timezone,
      nextRun: this.task.getNextRun()?.toISOString(),
      firstPassInSeconds: this.startDelayMs / 1000,
      keep: r.keep,
      maxAge: r.maxAgeMs === undefined ? undefined : formatDuration(r.maxAgeMs),
      remote: r.remote.enabled ? { keep: r.remote.keep, maxAge: r.remote.maxAgeMs === undefined ? undefined : formatDuration(r.remote.maxAgeMs) } : false,
      staleUploadAge: formatDuration(r.staleUploadAgeMs),
      dryRun: r.dryRun,
      confirmRemote: r.confirmRemote,
    });
  }

  /** One pass now; while one runs, callers share it instead of starting another. */
  runNow(trigger = 'manual'): Promise<PassReport | undefined> {
    if (this.abort.signal.aborted) return Promise.resolve(undefined);
    if (this.running) {
      this.d.log.debug('retention pass still running; not starting another', { trigger });
      return this.running;
    }
    this.running = prunePass(this.d, this.d.files(), { trigger, inFlightKeys: this.d.inFlightKeys(), signal: this.abort.signal })
      .catch((e: unknown) => {
        this.d.metrics?.pruneFailures.inc();
        this.d.log.error('retention pass failed', { trigger, error: (e as Error)?.message ?? String(e) });
        return undefined;
      })
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** No new passes; a pass in progress stops deleting and gets a few seconds to finish its current call. */
  async stop(waitMs = 10_000): Promise<void> {
    this.abort.abort();
    clearTimeout(this.startTimer);
    await this.task?.destroy();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
  }
}
