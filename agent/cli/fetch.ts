// `fetch KEY|--latest --output PATH`: download a snapshot (decrypting it with --identity), check its sha256,
// size, signatures (--allowed-signers) and format from its content, and only then put it at PATH. The
// output is written to a private temporary file beside PATH and renamed into place, so PATH never holds a
// partial or unchecked snapshot; it is never a device, directory, symlink or FIFO, and an existing file is
// replaced only with --force. Local failures name the local path and exit 73/74, never 65 or 69.
import { link, lstat, mkdir, open, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { classifyError, describeError, exitCodeFor, ioCode } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { fileKind } from '../base/files.js';
import { formatBytes } from '../base/units.js';
import type { Config } from '../config/keys.js';
import { KeyError, parseIdentities, type AgeIdentity } from '../crypto/age.js';
import { parseAllowedSigners, type AllowedSigner } from '../crypto/sshsig.js';
import { readBack } from '../drill/read.js';
import { verifyFile } from '../snapshot/verifier.js';
import { readCatalog, type CatalogEntry } from '../store/catalog.js';
import { keyRole, nodePrefix } from '../store/layout.js';
import type { Store } from '../store/store.js';
import { q, type Out } from './output.js';
import { Progress } from './progress.js';

export interface FetchOptions {
  key?: string;
  latest: boolean;
  output: string;
  force: boolean;
  allowUnverified: boolean;
  identityFile?: string;
  allowedSigners?: string;
  encrypted: boolean;
  quiet: boolean;
}

class LocalError extends Error {
  constructor(
    readonly code: ExitCode,
    message: string,
  ) {
    super(message);
  }
}

/** Where the snapshot may be written: a new file, or (with --force) a regular file that is replaced. */
async function checkOutput(output: string, force: boolean): Promise<void> {
  let st;
  try {
    st = await lstat(output);
  } catch (e) {
    if (ioCode(e) === 'ENOENT') return;
    throw new LocalError(EXIT.CANT_CREATE, `cannot use --output ${q(output)} (${ioCode(e)})`);
  }
  if (!st.isFile())
    throw new LocalError(
      EXIT.CANT_CREATE,
      `--output ${q(output)} is a ${fileKind(st)}, not a regular file; it is never replaced (not even with --force): choose a new file name`,
    );
  if (!force) throw new LocalError(EXIT.CANT_CREATE, `--output ${q(output)} exists; pass --force to replace it, or choose another name`);
}

/**
 * Moves the checked snapshot to --output. The download took a while: what is at --output now is checked
 * again, and without --force the file is linked into place, which fails if a file appeared meanwhile
 * (rename would silently replace it).
 */
async function place(tmp: string, output: string, force: boolean): Promise<void> {
  await checkOutput(output, force);
  const fail = (e: unknown): LocalError =>
    ioCode(e) === 'EEXIST'
      ? new LocalError(EXIT.CANT_CREATE, `--output ${q(output)} appeared while the snapshot was downloaded; not replaced (pass --force to replace a file)`)
      : new LocalError(EXIT.CANT_CREATE, `cannot put the snapshot at ${q(output)} (${ioCode(e)})`);
  if (!force) {
    try {
      await link(tmp, output);
      await unlink(tmp);
      return;
    } catch (e) {
      // a filesystem without hard links: rename, right after the check above
      if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK'].includes(ioCode(e))) throw fail(e);
    }
  }
  await rename(tmp, output).catch((e: unknown) => {
    throw fail(e);
  });
}

/** Reads an identity or allowed-signers file the operator named; problems are usage errors that name it. */
async function keyFile<T>(what: string, path: string, parse: (text: string) => T): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new LocalError(EXIT.NO_INPUT, `${what} ${q(path)} cannot be read (${ioCode(e)})`);
  }
  try {
    return parse(text);
  } catch (e) {
    throw new LocalError(EXIT.DATA, `${what} ${q(path)}: ${e instanceof KeyError ? e.message : (e as Error).message}`);
  }
}

/** The entry to fetch: this node's newest complete backup, or the named key (the object or its snapshot key). */
async function pick(cfg: Config, store: Store, opts: FetchOptions): Promise<CatalogEntry | string> {
  if (opts.latest) {
    const own = (await readCatalog(store, nodePrefix(cfg))).entries.filter((e) => e.complete && e.node === cfg.node && e.cluster === cfg.cluster);
    return (
      own[0] ??
      `no confirmed snapshot of node ${cfg.node} (cluster ${cfg.cluster}) under ${store.location}/${q(nodePrefix(cfg))}; see 'etcd-backup-agent list --cluster' and fetch a KEY`
    );
  }
  const role = keyRole(opts.key!);
  const key = role.role === 'snapshot' ? role.key : opts.key!;
  // listing the key as a prefix finds the object (plain or .age) with its manifest and signature
  const found = (await readCatalog(store, key)).entries.find((e) => e.key === key);
  return found ?? `no object ${q(opts.key!)} in ${store.location}; see 'etcd-backup-agent list'`;
}

export async function fetchCommand(cfg: Config, store: Store, opts: FetchOptions, io: Out): Promise<ExitCode> {
  let tmp: string | undefined;
  let fh: FileHandle | undefined;
  let key = opts.key;
  try {
    await checkOutput(opts.output, opts.force);
    const identityFile = opts.identityFile ?? process.env.ETCD_BACKUP_AGENT_IDENTITY_FILE;
    const identities: AgeIdentity[] | undefined = identityFile
      ? await keyFile('identity file', identityFile, (t) => parseIdentities(t, identityFile))
      : undefined;
    const signers: AllowedSigner[] | undefined = opts.allowedSigners
      ? await keyFile('allowed signers file', opts.allowedSigners, (t) => parseAllowedSigners(t, opts.allowedSigners!))
      : undefined;

    const picked = await pick(cfg, store, opts);
    if (typeof picked === 'string') {
      io.err(picked);
      return EXIT.NO_INPUT;
    }
    key = picked.object.key;
    // the snapshot holds every Secret of the cluster: directories made for it are private too
    const dir = dirname(opts.output);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      tmp = join(dir, `.${basename(opts.output)}.part-${process.pid}`);
      // read back as well: the bytes written are verified through the same descriptor, never by path
      fh = await open(tmp, 'wx+', 0o600);
    } catch (e) {
      tmp = undefined;
      throw new LocalError(EXIT.CANT_CREATE, `cannot create a file in ${q(dir)} for --output (${ioCode(e)}); choose another --output`);
    }
    const out = fh;
    const progress = new Progress(io, opts.quiet ? false : undefined, picked.name);
    const result = await readBack(
      store,
      picked,
      async (chunk) => {
        try {
          // a write may take fewer bytes than given (a disk filling up takes what fits, then says ENOSPC)
          for (let off = 0; off < chunk.length;) {
            const { bytesWritten } = await out.write(chunk, off, chunk.length - off);
            if (bytesWritten <= 0) throw Object.assign(new Error('write wrote nothing'), { code: 'EIO' });
            off += bytesWritten;
          }
        } catch (e) {
          throw new LocalError(EXIT.IO, `writing ${q(opts.output)} failed (${ioCode(e)}); nothing was written there`);
        }
      },
      {
        ...(identities ? { identities } : {}),
        ...(signers ? { signers } : {}),
        allowUnverified: opts.allowUnverified,
        ciphertext: opts.encrypted,
        onProgress: (d, t) => progress.update(d, t),
      },
    ).finally(() => progress.done());
    const local = (e: unknown): LocalError => new LocalError(EXIT.IO, `writing ${q(opts.output)} failed (${ioCode(e)}); nothing was written there`);
    await out.sync().catch((e: unknown) => {
      throw local(e);
    });
    if (!result.ok) {
      io.err(`${q(key)}: refused (${result.problem}): ${result.detail}; nothing written`);
      return result.problem === 'identity' ? EXIT.USAGE : EXIT.DATA;
    }
    let what = 'age ciphertext, structure checked (decrypt with: age -d -i KEY)';
    if (!(picked.encrypted && opts.encrypted)) {
      // the format comes from the bytes, whatever the key is called
      const verdict = await verifyFile(out, result.size, { name: picked.name }).catch((e: unknown) => {
        throw local(e);
      });
      if (!verdict.ok) {
        io.err(`${q(key)}: downloaded, but it is not a valid snapshot: ${verdict.reason}: ${verdict.detail}; nothing written`);
        return EXIT.DATA;
      }
      what = `${verdict.format} snapshot verified${result.signedBy ? `, signed by ${q(result.signedBy)}` : ''}`;
    }
    fh = undefined;
    await out.close().catch((e: unknown) => {
      throw local(e);
    });
    await place(tmp, opts.output, opts.force);
    tmp = undefined;
    io.out(`fetched ${store.location}/${q(key)} -> ${q(opts.output)} (${formatBytes(result.size)}, sha256 ${result.sha256}, ${what})`);
    return EXIT.OK;
  } catch (err) {
    if (err instanceof LocalError) {
      io.err(err.message);
      return err.code;
    }
    io.err(`fetch failed: ${describeError(err, { location: store.location, ...(key ? { key: q(key) } : {}) })}`);
    return exitCodeFor(classifyError(err));
  } finally {
    await fh?.close().catch(() => undefined);
    if (tmp) await unlink(tmp).catch(() => undefined);
  }
}
