// One-shot verbs: upload, list, fetch, check-config. Each returns an exit code and prints for humans.
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { clusterPrefix, nodePrefix, objectKey, type Config } from '../config/config.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { openRegular, readAt, NotRegularError } from '../base/files.js';
import { Ledger } from '../store/ledger.js';
import type { Logger } from '../ops/log.js';
import { classify, compileRules, sniff, SNIFF_BYTES } from '../detect/producers.js';
import { classifyError, describeError, type ObjectInfo, type Store } from '../store/s3.js';
import { ship } from '../ship/upload.js';
import { formatFromName, verifyFile, verifyPath } from '../snapshot/verify.js';
import { formatBytes } from '../base/units.js';

export interface Out {
  out: (line: string) => void;
  err: (line: string) => void;
}

const UNAVAILABLE_REASONS = new Set(['network', 'timeout', 'tls', 'auth', 'bucket', 'throttled', 'server', 'client']);

/** `upload PATH…`: the daemon's checks and key, once, for each file given. */
export async function uploadFiles(cfg: Config, store: Store, log: Logger, paths: string[], version: string, io: Out): Promise<ExitCode> {
  let worst: ExitCode = EXIT.OK;
  const rules = compileRules(cfg.include, cfg.exclude);
  let ledger: Ledger | undefined;
  try {
    ledger = (await Ledger.open(cfg.stateDir)).ledger;
  } catch (e) {
    io.err(`warning: state directory ${cfg.stateDir} unusable (${(e as NodeJS.ErrnoException).code}); the daemon will find these uploads in S3 instead`);
  }
  const bump = (c: ExitCode): void => {
    if (worst === EXIT.OK || c === EXIT.UNAVAILABLE) worst = c;
  };
  for (const path of paths) {
    const name = basename(path);
    let opened;
    try {
      opened = await openRegular(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      io.err(`${path}: ${e instanceof NotRegularError ? e.message : code === 'ENOENT' ? 'no such file' : `cannot open (${code})`}`);
      bump(code === 'ENOENT' ? EXIT.NO_INPUT : EXIT.IO);
      continue;
    }
    const { fh, st } = opened;
    try {
      let cls = classify(name, rules);
      if (cls.kind === 'unknown') {
        cls = sniff(name, await readAt(fh, 0, Math.min(SNIFF_BYTES, st.size))) ?? cls;
      }
      if (cls.kind !== 'snapshot') {
        io.err(`${path}: not an etcd snapshot (${cls.kind === 'ignored' ? cls.reason : 'unrecognised name and content'}); not uploaded`);
        bump(EXIT.DATA);
        continue;
      }
      const verdict = await verifyFile(fh, st.size, { format: cls.format, name });
      if (!verdict.ok) {
        io.err(`${path}: not uploaded: ${verdict.reason}: ${verdict.detail}`);
        log.error('snapshot rejected: not shipped', { file: path, reason: verdict.reason, detail: verdict.detail });
        bump(EXIT.DATA);
        continue;
      }
      const key = objectKey(cfg, name);
      try {
        const res = await ship(store, { fh, name, size: st.size, sha256: verdict.sha256, mtimeMs: st.mtimeMs, producer: cls.producer, key, extraMetadata: { node: cfg.node, cluster: cfg.cluster, agent: version } }, { timeoutMs: cfg.upload.timeoutMs, bandwidthLimit: cfg.upload.bandwidthLimit, partSize: cfg.s3.partSize });
        await ledger?.record({ name, key: res.key, size: st.size, sha256: verdict.sha256, mtimeMs: st.mtimeMs, producer: cls.producer, confirmedAt: new Date().toISOString() }).catch((e) => io.err(`warning: ledger not written (${(e as NodeJS.ErrnoException).code})`));
        io.out(`${res.sent ? 'uploaded' : 'already present'}: ${path} -> ${store.location}/${res.key} (${formatBytes(st.size)}, sha256 ${verdict.sha256})`);
        log.info(res.sent ? 'snapshot shipped and confirmed' : 'snapshot already in S3 with the same sha256; not sent again', { file: path, key: res.key, sha256: verdict.sha256 });
      } catch (err) {
        io.err(`${path}: upload failed: ${describeError(err, { location: store.location, key })}`);
        bump(UNAVAILABLE_REASONS.has(classifyError(err)) ? EXIT.UNAVAILABLE : EXIT.FAILURE);
      }
    } finally {
      await fh.close();
    }
  }
  return worst;
}

export interface Listed extends ObjectInfo {
  node?: string;
}

/** This node's (or every node's) snapshots in S3, newest first, with their sha256 metadata. */
export async function listSnapshots(cfg: Config, store: Store, all: boolean): Promise<Listed[]> {
  const prefix = all ? clusterPrefix(cfg) : nodePrefix(cfg);
  const objects: ObjectInfo[] = [];
  for await (const o of store.list(prefix)) objects.push(o);
  const out: Listed[] = new Array(objects.length);
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(8, objects.length) }, async () => {
      while (i < objects.length) {
        const idx = i++;
        const o = objects[idx]!;
        const h = await store.head(o.key);
        out[idx] = { ...o, ...(h ?? {}), lastModified: h?.lastModified ?? o.lastModified, node: h?.metadata?.node };
      }
    }),
  );
  return out.filter((o) => o.sha256).sort((a, b) => (b.lastModified?.getTime() ?? 0) - (a.lastModified?.getTime() ?? 0));
}

export async function listCommand(cfg: Config, store: Store, all: boolean, json: boolean, io: Out): Promise<ExitCode> {
  try {
    const items = await listSnapshots(cfg, store, all);
    if (json) {
      for (const o of items) io.out(JSON.stringify({ key: o.key, size: o.size, lastModified: o.lastModified?.toISOString(), sha256: o.sha256, node: o.node }));
      return EXIT.OK;
    }
    if (items.length === 0) {
      io.out(`no snapshots under ${store.location}/${all ? clusterPrefix(cfg) : nodePrefix(cfg)}`);
      return EXIT.OK;
    }
    const w = Math.max(...items.map((o) => o.key.length), 3);
    io.out(`${'KEY'.padEnd(w)}  ${'SIZE'.padStart(10)}  ${'LAST MODIFIED (UTC)'.padEnd(20)}  SHA256`);
    for (const o of items) io.out(`${o.key.padEnd(w)}  ${formatBytes(o.size).padStart(10)}  ${(o.lastModified?.toISOString().slice(0, 19) ?? '').padEnd(20)}  ${o.sha256}`);
    return EXIT.OK;
  } catch (err) {
    io.err(`list failed: ${describeError(err, { location: store.location })}`);
    return EXIT.UNAVAILABLE;
  }
}

/** `fetch KEY|--latest --output PATH`: download, check sha256, verify the snapshot, then rename into place. */
export async function fetchCommand(cfg: Config, store: Store, keyArg: string | undefined, latest: boolean, output: string, io: Out): Promise<ExitCode> {
  let key = keyArg;
  try {
    if (latest) {
      const items = await listSnapshots(cfg, store, false);
      if (items.length === 0) {
        io.err(`no snapshots of node ${cfg.node} under ${store.location}/${nodePrefix(cfg)}; use --cluster via 'list --cluster' and fetch a KEY`);
        return EXIT.NO_INPUT;
      }
      key = items[0]!.key;
    }
    const head = await store.head(key!);
    if (!head) {
      io.err(`no object ${key} in ${store.location}; see 'etcd-backup-agent list'`);
      return EXIT.NO_INPUT;
    }
    // the snapshot holds every Secret of the cluster: directories made for it are private too
    await mkdir(dirname(output), { recursive: true, mode: 0o700 });
    const tmp = `${output}.part-${process.pid}`;
    let fh;
    try {
      fh = await open(tmp, 'wx', 0o600);
    } catch (e) {
      io.err(`cannot create ${tmp} (${(e as NodeJS.ErrnoException).code}); choose another --output`);
      return EXIT.CANT_CREATE;
    }
    const hash = createHash('sha256');
    let size = 0;
    try {
      const { body } = await store.get(key!);
      for await (const chunk of body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
        await fh.write(chunk);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    const digest = hash.digest('hex');
    if (head.sha256 && digest !== head.sha256) {
      await unlink(tmp).catch(() => undefined);
      io.err(`${key}: downloaded bytes do not match its sha256 metadata (${digest} != ${head.sha256}); nothing written`);
      return EXIT.DATA;
    }
    const verdict = await verifyPath(tmp, { format: formatFromName(key!) });
    if (!verdict.ok) {
      await unlink(tmp).catch(() => undefined);
      io.err(`${key}: downloaded, but it is not a valid snapshot: ${verdict.reason}: ${verdict.detail}; nothing written`);
      return EXIT.DATA;
    }
    await rename(tmp, output);
    io.out(`fetched ${store.location}/${key} -> ${output} (${formatBytes(size)}, sha256 ${digest}, ${verdict.format} snapshot verified)`);
    return EXIT.OK;
  } catch (err) {
    io.err(`fetch failed: ${describeError(err, { location: store.location, key })}`);
    return UNAVAILABLE_REASONS.has(classifyError(err)) ? EXIT.UNAVAILABLE : EXIT.FAILURE;
  }
}

/** `check-config`: the config parsed (else the caller already exited 78); now reach the bucket and the directories. */
export async function checkConfigCommand(cfg: Config, store: Store, io: Out, opts: { offline?: boolean } = {}): Promise<ExitCode> {
  io.out(`config ok: node ${cfg.node}, cluster ${cfg.cluster}, snapshots from ${cfg.snapshotDir} to ${store.location}/${nodePrefix(cfg)}`);
  let code: ExitCode = EXIT.OK;
  // Real operations, not access(): the unit grants read access through a capability, which access() ignores.
  try {
    await readdir(cfg.snapshotDir);
    io.out(`snapshot directory ok: ${cfg.snapshotDir}`);
  } catch (e) {
    io.out(`warning: snapshot directory ${cfg.snapshotDir}: ${(e as NodeJS.ErrnoException).code}; the agent will wait for it (check snapshotDir)`);
  }
  const probe = join(cfg.stateDir, `.check-config-${process.pid}`);
  try {
    await writeFile(probe, '', { mode: 0o600 });
    await unlink(probe);
    io.out(`state directory ok: ${cfg.stateDir}`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    io.out(code === 'ENOENT'
      ? `note: state directory ${cfg.stateDir} does not exist yet; the agent creates it (systemd: StateDirectory=)`
      : `warning: state directory ${cfg.stateDir} not writable (${code}); the ledger will be kept in memory only`);
  }
  if (opts.offline) return code;
  try {
    await store.check();
    io.out(`S3 ok: bucket reachable at ${store.location}`);
  } catch (err) {
    io.err(`S3 check failed: ${describeError(err, { location: store.location })}`);
    code = EXIT.UNAVAILABLE;
  }
  return code;
}
