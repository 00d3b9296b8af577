import type { Logger as CronLogger } from 'node-cron';
import winston from 'winston';
import { redactDeep, redactText } from '../base/secret.js';
import { jsonSafe } from '../base/text.js';

export type Logger = winston.Logger;
import type { LogLevel } from '../config/keys.js';

// Scrubs known secrets from the message and every field, whatever produced them.
const redact = winston.format((info) => {
  for (const key of Object.keys(info)) {
    if (key === 'level') continue;
    (info as Record<string, unknown>)[key] = redactDeep((info as Record<string, unknown>)[key]);
  }
  if (typeof info.message === 'string') info.message = redactText(info.message);
  return info;
});

// journald keeps its own timestamp, but files and `docker logs`-style capture do not.
const shape = winston.format((info) => {
  const { level, message, timestamp, ...rest } = info as Record<string, unknown>;
  const out: Record<string | symbol, unknown> = { time: timestamp, level, msg: message, ...rest };
  for (const sym of Object.getOwnPropertySymbols(info)) out[sym] = (info as Record<symbol, unknown>)[sym];
  return out as winston.Logform.TransformableInfo;
});

// Names in log lines come from the disk and from S3: JSON.stringify escapes C0 controls but leaves bidi
// overrides and C1 controls raw, which a terminal showing the journal would act on.
const MESSAGE = Symbol.for('message');
const terminalSafe = winston.format((info) => {
  const line = (info as unknown as Record<symbol, unknown>)[MESSAGE];
  if (typeof line === 'string') (info as unknown as Record<symbol, unknown>)[MESSAGE] = jsonSafe(line);
  return info;
});

/** One JSON object per line on stdout (stderr would interleave with it in journald). */
export function createLogger(level: LogLevel = 'info', stream: NodeJS.WritableStream = process.stdout): Logger {
  return winston.createLogger({
    level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: winston.format.combine(
      winston.format.timestamp(),
      winston.format.errors({ stack: false }),
      redact(),
      shape(),
      winston.format.json(),
      terminalSafe(),
    ),
    transports: [new winston.transports.Stream({ stream })],
  });
}

/** Flushes pending lines before the process exits. */
export function closeLogger(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    log.on('finish', () => resolve());
    log.end();
    setTimeout(resolve, 500).unref();
  });
}

/** node-cron's own messages, into the agent's log (debug unless something failed). */
export function cronLogger(log: Logger, task: string): CronLogger {
  const text = (m: string | Error): string => (m instanceof Error ? m.message : String(m));
  return {
    info: (m) => log.debug(`node-cron: ${m}`, { task }),
    debug: (m) => log.debug(`node-cron: ${text(m)}`, { task }),
    warn: (m) => log.warn(`node-cron: ${m}`, { task }),
    error: (m, err) => log.error(`node-cron: ${text(m)}`, { task, ...(err ? { error: err.message } : {}) }),
  };
}
