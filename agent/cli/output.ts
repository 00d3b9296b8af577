// How one-shot commands talk to the operator: lines on stdout (results) and stderr (problems), every key and
// file name escaped so that a name chosen by someone else cannot drive the terminal.
import { redactText } from '../base/secret.js';
import { jsonSafe, shown } from '../base/text.js';

export interface Out {
  out: (line: string) => void;
  err: (line: string) => void;
  /** stderr is a terminal (progress may be drawn there) */
  readonly tty?: boolean;
}

export const processOut: Out = {
  out: (l) => process.stdout.write(`${l}\n`),
  err: (l) => process.stderr.write(`${redactText(l)}\n`),
  tty: process.stderr.isTTY === true,
};

/** A name from the disk or a key from S3, safe to print. */
export const q = shown;

/** One JSON line for `--json` output: names escaped where JSON.stringify leaves them raw (bidi, C1). */
export const jsonLine = (v: unknown): string => jsonSafe(JSON.stringify(v));
