// The one table of exit codes (sysexits.h numbering where one fits). The README prints this table.
export const EXIT = {
  OK: 0,
  /** unexpected failure (a bug): details in the log */
  FAILURE: 1,
  /** wrong command-line usage */
  USAGE: 64,
  /** a snapshot failed verification (upload, fetch) */
  DATA: 65,
  /** a named input does not exist: file to upload, object to fetch */
  NO_INPUT: 66,
  /** S3 unreachable, or credentials/bucket refused */
  UNAVAILABLE: 69,
  /** internal error */
  SOFTWARE: 70,
  /** cannot create an output file or the state directory */
  CANT_CREATE: 73,
  /** I/O error on a local file */
  IO: 74,
  /** invalid configuration */
  CONFIG: 78,
  /** stopped by a second SIGTERM/SIGINT before draining finished */
  INTERRUPTED: 130,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_TABLE: readonly [ExitCode, string][] = [
  [EXIT.OK, 'success; for `run`: drained and stopped after SIGTERM/SIGINT'],
  [EXIT.FAILURE, 'unexpected failure; the log says what'],
  [EXIT.USAGE, 'wrong command-line usage'],
  [EXIT.DATA, 'a snapshot failed verification (`upload`, `fetch`), or an input file is malformed (`import-rke`)'],
  [EXIT.NO_INPUT, 'a file to upload or an object to fetch does not exist'],
  [EXIT.UNAVAILABLE, 'S3 unreachable, or it refused the credentials or bucket'],
  [EXIT.SOFTWARE, 'internal error (a bug: please report it with the log)'],
  [EXIT.CANT_CREATE, 'cannot write the output file or the state directory'],
  [EXIT.IO, 'I/O error reading or writing a local file'],
  [EXIT.CONFIG, 'invalid configuration: each problem is printed with its key and the fix'],
  [EXIT.INTERRUPTED, 'a second SIGTERM/SIGINT stopped the agent before draining finished'],
];
