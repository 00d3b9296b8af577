// Snapshot zips written by Go's own archive/zip, called the way rke-tools and k3s call it
// (test/support/gozip/main.go): tests that model those producers read the producers' bytes, not our idea of
// them. The binary is built on first use by scripts/build-gozip.sh into a cache outside the repository.
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const BUILD_SCRIPT = fileURLToPath(new URL('../../scripts/build-gozip.sh', import.meta.url));

export type GoZipKind = 'rke' | 'k3s';

export interface GoZipOptions {
  /** Snapshot name in the entry names (`/backup/<name>` or `<name>`); default: the raw file's base name. */
  name?: string;
  /** rke: a state file, zipped as `/etc/kubernetes/<name>.rkestate` (rke-tools adds it when it exists). */
  rkestate?: string;
  /** k3s: the entry's time; default now, rounded to the second, as k3s stamps it. */
  mtime?: Date;
  /** The disk fills after this many bytes of zip: later writes fail with ENOSPC, as on a full disk. */
  truncateAt?: number;
  /** Starts the zip this many bytes into the file, after a hole: Go's Zip64 offset records, cheaply. */
  offset?: number;
  /**
   * Then does what the producer does next. rke: after a success (as rke-tools sees it), removes the raw file
   * and the state file and makes the zip 0600. k3s: removes the raw file whatever happened.
   */
  finish?: boolean;
  /** Zone for the DOS dates Go computes. Default UTC, as in the rke-tools container. */
  tz?: string;
}

export interface GoZipResult {
  /** Whether the producer would have seen success: both ignore errors from Close, so a zip cut short at
   *  its very end still counts as success. */
  ok: boolean;
  /** What the producer would have logged when it saw a failure. */
  stderr: string;
}

/** One entry as Go's archive/zip reader sees it: an independent reading to compare ours with. */
export interface GoListedEntry {
  name: string;
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  uncompressedSize: number;
  dataOffset: number;
  /** Unix seconds. */
  modified: number;
  readerVersion: number;
  creatorVersion: number;
  externalAttrs: number;
  /** Central-directory extra fields, hex. */
  extra: string;
  /** 'ok' when the entry inflated whole and its CRC-32 matched, else Go's error. */
  read: string;
}

let binary: Promise<string> | undefined;

/** Path of the gozip binary, built once per source and Go version. */
export function goZipBinary(): Promise<string> {
  binary ??= run('bash', [BUILD_SCRIPT], { encoding: 'utf8' }).then(
    (r) => r.stdout.trim(),
    (err: { stderr?: string; message: string }) => {
      binary = undefined;
      throw new Error(`building gozip failed: ${(err.stderr ?? '').trim() || err.message}`);
    },
  );
  return binary;
}

function argsFor(kind: GoZipKind, rawPath: string, outPath: string, o: GoZipOptions, pauseAt?: number): string[] {
  const args: string[] = [kind];
  if (o.name !== undefined) args.push('--name', o.name);
  if (o.mtime !== undefined) {
    if (kind !== 'k3s') throw new Error('goZip: mtime is for k3s; rke-tools always writes 1970');
    args.push('--mtime', String(Math.floor(o.mtime.getTime() / 1000)));
  }
  if (o.truncateAt !== undefined) args.push('--truncate-at', String(o.truncateAt));
  if (pauseAt !== undefined) args.push('--pause-at', String(pauseAt));
  if (o.offset !== undefined) args.push('--offset', String(o.offset));
  if (o.finish) args.push('--finish');
  args.push(outPath, rawPath);
  if (o.rkestate !== undefined) {
    if (kind !== 'rke') throw new Error('goZip: only RKE zips carry a .rkestate');
    args.push(o.rkestate);
  }
  return args;
}

/** A writer stopped part-way (see startGoZip). */
export interface GoZipRun {
  /** Resolves with the zip's size once the writer stops (the file already holds those bytes); rejects when
   *  the zip was finished before reaching `pauseAt`. */
  paused: Promise<number>;
  /** Lets the writer go on. */
  resume: () => void;
  done: Promise<GoZipResult>;
}

/**
 * Zips `rawPath` into `outPath` in place, as `kind` does. Rejects when the producer would have failed without
 * an injected fault (a broken test setup); with `truncateAt`, resolves with `ok: false` instead.
 */
export function goZip(kind: GoZipKind, rawPath: string, outPath: string, opts: GoZipOptions = {}): Promise<GoZipResult> {
  return start(kind, rawPath, outPath, opts).done;
}

/**
 * Like goZip, but the writer stops after the write that brings the zip to `pauseAt` bytes or more (Go writes
 * in 4 KiB steps), until `resume()`: the in-place zip a reader finds while a producer stalls.
 */
export function startGoZip(kind: GoZipKind, rawPath: string, outPath: string, opts: GoZipOptions & { pauseAt: number }): GoZipRun {
  const { pauseAt, ...rest } = opts;
  return start(kind, rawPath, outPath, rest, pauseAt);
}

function start(kind: GoZipKind, rawPath: string, outPath: string, opts: GoZipOptions, pauseAt?: number): GoZipRun {
  let paused!: (n: number) => void;
  let notPaused!: (err: Error) => void;
  const pausedP = new Promise<number>((res, rej) => {
    paused = res;
    notPaused = rej;
  });
  let resume: () => void = () => undefined;
  const done = (async (): Promise<GoZipResult> => {
    const args = argsFor(kind, rawPath, outPath, opts, pauseAt);
    const child = spawn(await goZipBinary(), args, { env: { ...process.env, TZ: opts.tz ?? 'UTC' }, stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => undefined); // the writer may be gone already
    if (pauseAt === undefined) child.stdin.end();
    else resume = () => child.stdin.end('\n');
    let stderr = '';
    let stdout = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const m = /^paused (\d+)\n/m.exec(stdout); // whole lines only: a chunk may end mid-number
      if (m) paused(Number(m[1]));
    });
    const code = await new Promise<number | null>((res, rej) => {
      child.on('error', rej);
      child.on('close', res);
    });
    notPaused(new Error(`gozip finished without pausing: the zip never reached ${pauseAt} bytes`));
    if (code === 0) return { ok: true, stderr };
    if (code === 1 && opts.truncateAt !== undefined) return { ok: false, stderr };
    throw new Error(`gozip ${args.join(' ')} exited ${code}: ${stderr.trim()}`);
  })();
  // Either promise may go unawaited when the other one failed first.
  pausedP.catch(() => undefined);
  done.catch((err: Error) => notPaused(err));
  return { paused: pausedP, resume: () => resume(), done };
}

/** What Go's archive/zip reader finds in a zip; rejects with Go's error when it is not a readable zip. */
export async function goList(zipPath: string): Promise<GoListedEntry[]> {
  const bin = await goZipBinary();
  try {
    const r = await run(bin, ['list', zipPath], { encoding: 'utf8', maxBuffer: 1 << 20 });
    return (JSON.parse(r.stdout) as { entries: GoListedEntry[] }).entries;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`Go's archive/zip cannot read ${zipPath}: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
}
