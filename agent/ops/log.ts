import winston from 'winston';
import { redactDeep, redactText } from '../base/secret.js';

export type Logger = winston.Logger;
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug'];

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

/** One JSON object per line on stdout (stderr would interleave with it in journald). */
export function createLogger(level: LogLevel = 'info', stream: NodeJS.WritableStream = process.stdout): Logger {
  return winston.createLogger({
    level,
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), redact(), shape(), winston.format.json()),
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
