// Reading the config file and probing the files it names (completing a config that parsed), so that a
// missing CA or credentials file fails at start with its key, not at the first upload.
import { closeSync, constants as fsc, fstatSync, openSync, readSync } from 'node:fs';
import { formatBytes } from '../base/units.js';
import { FILE_KEYS, type Config } from './keys.js';
import { ConfigError, type ConfigIssue } from './issues.js';
import { parseConfig } from './parse.js';

function checkReadable(key: string, path: string, issues: ConfigIssue[], what: string): void {
  let fd: number | undefined;
  try {
    // opened, never read: a FIFO would block a read and /dev/zero never end one
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const st = fstatSync(fd);
    // read whole later (by the SDK or the metrics server): a huge or unreadable file must fail here, not crash there
    if (!st.isFile()) issues.push({ key, problem: `${path} is not a regular file`, fix: `point it at ${what}` });
    else if (st.size > 16 * 1024 * 1024) issues.push({ key, problem: `${path} is ${formatBytes(st.size)}, far too large`, fix: `point it at ${what}` });
    else readSync(fd, Buffer.alloc(1), 0, 1, 0);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'error';
    const problem =
      code === 'ENOENT' ? `${path} does not exist` : code === 'EACCES' ? `${path} is not readable by this user` : `${path} cannot be read (${code})`;
    issues.push({ key, problem, fix: `point it at ${what}` });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
/** Reads and validates the config file; `probe` picks the file keys whose files must be there (default all). */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env, probe?: (key: string) => boolean): Config {
  const notConfig = (problem: string): ConfigError => new ConfigError(path, [{ key: '(file)', problem, fix: 'this is not a config file; pass --config PATH' }]);
  const limit = 1024 * 1024;
  const buf = Buffer.alloc(limit + 1);
  let got = 0;
  let fd: number | undefined;
  try {
    // a FIFO must not hang the start, nor /dev/zero fill the memory: a regular file, read up to the limit
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    if (!fstatSync(fd).isFile()) throw notConfig('is not a regular file');
    for (let n = 1; n > 0 && got < buf.length; got += n) n = readSync(fd, buf, got, buf.length - got, got);
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by this user' : `cannot be read (${code})`;
    throw new ConfigError(path, [
      { key: '(file)', problem, fix: `create it (a minimal file is "s3:\\n  bucket: NAME\\n  endpoint: URL") or pass --config PATH` },
    ]);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (got > limit) throw notConfig('is larger than 1 MiB');
  return completeConfig(parseConfig(buf.subarray(0, got).toString('utf8'), path, env), path, probe);
}

/** The value of a dotted key in a parsed config. */
function valueAt(cfg: Config, key: string): unknown {
  let v: unknown = cfg;
  for (const part of key.split('.')) v = v === undefined || v === null ? undefined : (v as Record<string, unknown>)[part];
  return v;
}

/** Every file the config names (of the keys `probe` picks) must be a readable regular file of sane size. Throws ConfigError. */
export function completeConfig(cfg: Config, file = 'config', probe: (key: string) => boolean = () => true): Config {
  const issues: ConfigIssue[] = [];
  for (const k of FILE_KEYS) {
    if (!probe(k.key)) continue;
    const path = valueAt(cfg, k.key);
    if (typeof path === 'string') checkReadable(k.key, path, issues, k.file!);
  }
  if (issues.length) throw new ConfigError(file, issues);
  return cfg;
}
