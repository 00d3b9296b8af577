// Test world: Ceph RGW (S3), etcd and OpenStack Swift (a second S3 server) started by
// scripts/world/up.sh, and helpers to use them.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPTS = path.join(PROJECT_ROOT, 'scripts/world');
const ETCDCTL = '/usr/bin/etcdctl';

/** An S3 endpoint and its credentials. */
export interface S3Server {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
}

/** OpenStack Swift 2.30 through its S3 API (s3api). */
export interface SwiftServer extends S3Server {
  /** s3api max_upload_part_num: UploadPart with a higher part number is refused */
  maxParts: number;
}

export interface World {
  dir: string;
  s3: S3Server;
  /** undefined when the world was started with WORLD_SWIFT=0 (see requireSwift) */
  swift: SwiftServer | undefined;
  etcd: { endpoints: string };
  /** every KEY=VALUE of DIR/env, e.g. to pass to a child process */
  env: Record<string, string>;
  stop(): Promise<void>;
  restartRgw(): Promise<void>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Run a program; reject with its stderr (the world scripts print log tails there) on failure. */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    // TERM first: up.sh cleans up on TERM
    const timer =
      opts.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
          }, opts.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (code === 0) resolve(res);
      else reject(new Error(`${path.basename(file)} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${res.stderr || res.stdout}`));
    });
    // EPIPE when the child exits without reading stdin is reported by 'close' already
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input);
  });
}

function script(name: string, dir: string): Promise<RunResult> {
  return run('bash', [path.join(SCRIPTS, name), dir], { timeoutMs: 170_000 });
}

/** Start RGW + etcd + Swift in dir (default: a new temp dir). */
export async function startWorld(dir?: string): Promise<World> {
  const d = dir ?? (await mkdtemp(path.join(os.tmpdir(), 'world-')));
  try {
    await script('up.sh', d);
  } catch (e) {
    await script('down.sh', d).catch(() => {}); // in case up.sh was killed before its own cleanup
    throw e;
  }
  return readWorldEnv(d);
}

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

/** Attach to a world that up.sh started in dir (reads DIR/env; does not check it is alive). */
export async function readWorldEnv(dir: string): Promise<World> {
  const abs = path.resolve(dir);
  const env = parseEnv(await readFile(path.join(abs, 'env'), 'utf8'));
  const need = (k: string): string => {
    const v = env[k];
    if (!v) throw new Error(`${abs}/env has no ${k}: is the world running (scripts/world/up.sh ${abs})?`);
    return v;
  };
  return {
    dir: abs,
    swift: env.SWIFT_S3_ENDPOINT === undefined ? undefined : swiftFromEnv(env, `${abs}/env`),
    s3: {
      endpoint: need('S3_ENDPOINT'),
      accessKeyId: need('AWS_ACCESS_KEY_ID'),
      secretAccessKey: need('AWS_SECRET_ACCESS_KEY'),
      region: need('AWS_REGION'),
    },
    etcd: { endpoints: need('ETCDCTL_ENDPOINTS') },
    env,
    stop: async () => {
      await script('down.sh', abs);
    },
    restartRgw: async () => {
      await script('rgw-restart.sh', abs);
    },
  };
}

function swiftFromEnv(env: Record<string, string>, file: string): SwiftServer {
  const need = (k: string): string => {
    const v = env[k];
    if (!v) throw new Error(`${file} has SWIFT_S3_ENDPOINT but no ${k}`);
    return v;
  };
  return {
    endpoint: need('SWIFT_S3_ENDPOINT'),
    accessKeyId: need('SWIFT_AWS_ACCESS_KEY_ID'),
    secretAccessKey: need('SWIFT_AWS_SECRET_ACCESS_KEY'),
    region: need('SWIFT_AWS_REGION'),
    maxParts: Number(need('SWIFT_MAX_PARTS')),
  };
}

/** The world's Swift; a clear failure when the world runs without one. */
export function requireSwift(world: World): SwiftServer {
  if (!world.swift) throw new Error(`the world in ${world.dir} has no Swift: it was started with WORLD_SWIFT=0, or WORLD_DIR points to an older world`);
  return world.swift;
}

/** True if S3, etcd and (when the world has it) Swift answer (used to reuse WORLD_DIR). */
export async function worldHealthy(world: World): Promise<boolean> {
  try {
    const res = await fetch(`${world.s3.endpoint}/`, { signal: AbortSignal.timeout(3000) });
    await res.arrayBuffer();
    if (world.swift) {
      const sw = await fetch(`${world.swift.endpoint}/healthcheck`, { signal: AbortSignal.timeout(3000) });
      await sw.arrayBuffer();
      if (!sw.ok) return false;
    }
    await etcdctl(world, ['endpoint', 'health'], { timeoutMs: 5000 });
    return true;
  } catch {
    return false;
  }
}

/** New S3 client for the world; checksums only when required (RGW 16 rejects aws-chunked trailers). */
export function s3Client(world: World, overrides: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    endpoint: world.s3.endpoint,
    region: world.s3.region,
    credentials: { accessKeyId: world.s3.accessKeyId, secretAccessKey: world.s3.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    ...overrides,
  });
}

// one shared client per world for the helpers below
const clients = new WeakMap<World, S3Client>();
function client(world: World): S3Client {
  let c = clients.get(world);
  if (!c) clients.set(world, (c = s3Client(world)));
  return c;
}

export async function createBucket(world: World, name: string): Promise<void> {
  await client(world).send(new CreateBucketCommand({ Bucket: name }));
}

/** Abort open uploads, delete every object version, delete the bucket. Missing bucket is fine. */
export async function emptyAndDeleteBucket(world: World, name: string): Promise<void> {
  const s3 = client(world);
  try {
    for (let keyMarker: string | undefined, idMarker: string | undefined; ;) {
      const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: name, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      await Promise.all((r.Uploads ?? []).map((u) => s3.send(new AbortMultipartUploadCommand({ Bucket: name, Key: u.Key!, UploadId: u.UploadId! }))));
      if (!r.IsTruncated) break;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
    for (;;) {
      // from the start each round: we delete what we list
      const r = await s3.send(new ListObjectVersionsCommand({ Bucket: name, MaxKeys: 1000 }));
      const all = [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])];
      if (all.length === 0) break;
      const r2 = await s3.send(
        new DeleteObjectsCommand({
          Bucket: name,
          Delete: { Objects: all.map((v) => ({ Key: v.Key!, VersionId: v.VersionId })), Quiet: true },
        }),
      );
      if (r2.Errors?.length) throw new Error(`delete in ${name}: ${JSON.stringify(r2.Errors.slice(0, 3))}`);
    }
    await s3.send(new DeleteBucketCommand({ Bucket: name }));
  } catch (e) {
    if ((e as { name?: string }).name === 'NoSuchBucket') return;
    throw e;
  }
}

/**
 * Swift answers DeleteObjects without a Content-MD5 header with 400 InvalidRequest ("Missing
 * required header for this request: Content-MD5"), and SDK v3 sends only a CRC32 checksum.
 * This build-step middleware adds the MD5 of the serialized body to that one command.
 */
export function addContentMd5ForDeleteObjects(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const req = args.request as { headers?: Record<string, string>; body?: unknown };
      if (context.commandName === 'DeleteObjectsCommand' && req.headers) {
        const body = req.body;
        if (typeof body === 'string' || body instanceof Uint8Array) req.headers['content-md5'] = createHash('md5').update(body).digest('base64');
      }
      return next(args);
    },
    { step: 'build', name: 'contentMd5ForDeleteObjects' },
  );
}

/** New S3 client for a Swift (the world's or one from startSwift), DeleteObjects made to work. */
export function swiftClient(swift: S3Server, overrides: Partial<S3ClientConfig> = {}): S3Client {
  const c = new S3Client({
    endpoint: swift.endpoint,
    region: swift.region,
    credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
    ...overrides,
  });
  addContentMd5ForDeleteObjects(c);
  return c;
}

const swiftClients = new WeakMap<S3Server, S3Client>();
function sharedSwiftClient(swift: S3Server): S3Client {
  let c = swiftClients.get(swift);
  if (!c) swiftClients.set(swift, (c = swiftClient(swift)));
  return c;
}

export async function createSwiftBucket(swift: S3Server, name: string): Promise<void> {
  await sharedSwiftClient(swift).send(new CreateBucketCommand({ Bucket: name }));
}

/**
 * Abort open uploads, delete every object, delete the bucket. Missing bucket is fine. Unlike
 * emptyAndDeleteBucket it lists with ListObjectsV2: the world's Swift keeps no versions.
 */
export async function emptyAndDeleteSwiftBucket(swift: S3Server, name: string): Promise<void> {
  const s3 = sharedSwiftClient(swift);
  try {
    for (let keyMarker: string | undefined, idMarker: string | undefined; ;) {
      const r = await s3.send(new ListMultipartUploadsCommand({ Bucket: name, KeyMarker: keyMarker, UploadIdMarker: idMarker }));
      await Promise.all((r.Uploads ?? []).map((u) => s3.send(new AbortMultipartUploadCommand({ Bucket: name, Key: u.Key!, UploadId: u.UploadId! }))));
      if (!r.IsTruncated) break;
      keyMarker = r.NextKeyMarker;
      idMarker = r.NextUploadIdMarker;
    }
    for (;;) {
      // from the start each round: we delete what we list
      const r = await s3.send(new ListObjectsV2Command({ Bucket: name, MaxKeys: 1000 }));
      const keys = (r.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length === 0) break;
      const r2 = await s3.send(new DeleteObjectsCommand({ Bucket: name, Delete: { Objects: keys, Quiet: true } }));
      if (r2.Errors?.length) throw new Error(`delete in ${name}: ${JSON.stringify(r2.Errors.slice(0, 3))}`);
    }
    await s3.send(new DeleteBucketCommand({ Bucket: name }));
  } catch (e) {
    if ((e as { name?: string }).name === 'NoSuchBucket') return;
    throw e;
  }
}

export interface StartSwiftOptions {
  /** s3api max_upload_part_num (default 1000, Swift's own) */
  maxParts?: number;
  /** keymaster + encryption in the pipeline, so SSE AES256 is accepted (default true) */
  encryption?: boolean;
}

export interface ExtraSwift extends SwiftServer {
  dir: string;
  stop(): Promise<void>;
}

/**
 * Start a Swift of its own in dir (scripts/world/swift-up.sh), apart from the world's, e.g. with
 * a part limit a test can reach with a few 5 MiB parts. ~2-4 s on 2 busy cores; stop() it.
 */
export async function startSwift(dir: string, opts: StartSwiftOptions = {}): Promise<ExtraSwift> {
  const abs = path.resolve(dir);
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (opts.maxParts !== undefined) env.SWIFT_MAX_PARTS = String(opts.maxParts);
  if (opts.encryption !== undefined) env.SWIFT_ENCRYPTION = opts.encryption ? '1' : '0';
  const stop = async (): Promise<void> => {
    await run('bash', [path.join(SCRIPTS, 'swift-down.sh'), abs], { timeoutMs: 60_000 });
  };
  try {
    await run('bash', [path.join(SCRIPTS, 'swift-up.sh'), abs], { env, timeoutMs: 120_000 });
  } catch (e) {
    await stop().catch(() => {}); // in case swift-up.sh was killed before its own cleanup
    throw e;
  }
  const file = path.join(abs, 'swift.env');
  return { ...swiftFromEnv(parseEnv(await readFile(file, 'utf8')), file), dir: abs, stop };
}

/** All keys under prefix, sorted. */
/**
 * The snapshot objects under a prefix, sorted. The manifests and signatures the agent writes beside each
 * snapshot are left out unless `all` (a snapshot's manifest is checked through `recorded`).
 */
export async function listKeys(world: World, bucket: string, prefix = '', opts: { all?: boolean } = {}): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const r = await client(world).send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) if (opts.all || !/\.(manifest\.json|sig)$/.test(o.Key!)) keys.push(o.Key!);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return keys.sort();
}

/** Run /usr/bin/etcdctl (API v3) against the world's etcd. */
export function etcdctl(world: World, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return run(ETCDCTL, args, {
    ...opts,
    env: { ...process.env, ...opts.env, ETCDCTL_API: '3', ETCDCTL_ENDPOINTS: world.etcd.endpoints },
  });
}

const ALNUM = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789');
function randomValue(n: number): string {
  const b = randomBytes(n);
  for (let i = 0; i < n; i++) b[i] = ALNUM[b[i]! % 62]!;
  return b.toString('latin1');
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * Put n keys `${prefix}00000000`… with random alphanumeric values of valueBytes (they deflate
 * by ~25 %, like real data). Small values go in ~1 MiB `etcdctl txn` batches, 3 at a time:
 * 20k × 1 KiB in ~1.4 s (as fast as etcd's JSON gateway; one put per key is ~50× slower).
 * txn parses its input slowly, so values ≥ 256 KiB go one `etcdctl put` each, value on stdin
 * (3× faster there). Batches rely on etcd-up.sh's --max-txn-ops; etcd caps a request at 1.5 MiB.
 */
export async function putKeys(world: World, n: number, valueBytes: number, prefix = '/registry/test/'): Promise<void> {
  const key = (i: number): string => prefix + String(i).padStart(8, '0');
  const opts = { timeoutMs: 60_000 };
  if (valueBytes >= 256 * 1024) {
    const keys = Array.from({ length: n }, (_, i) => key(i));
    await pool(keys, 3, (k) => etcdctl(world, ['put', k], { ...opts, input: randomValue(valueBytes) }));
    return;
  }
  const MAX_BYTES = 1 << 20;
  const MAX_OPS = 10_000;
  const batches: string[] = [];
  let lines: string[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const line = `put ${JSON.stringify(key(i))} ${randomValue(valueBytes)}`;
    if (lines.length > 0 && (lines.length >= MAX_OPS || bytes + line.length > MAX_BYTES)) {
      batches.push(lines.join('\n'));
      lines = [];
      bytes = 0;
    }
    lines.push(line);
    bytes += line.length;
  }
  if (lines.length > 0) batches.push(lines.join('\n'));
  // txn on stdin: compares, blank line, success ops, blank line, failure ops
  await pool(batches, 3, (b) => etcdctl(world, ['txn'], { ...opts, input: `\n${b}\n\n\n` }));
}

/** `etcdctl snapshot save file` (writes file.part, then renames); resolves to the file's size. */
export async function saveSnapshot(world: World, file: string): Promise<number> {
  await etcdctl(world, ['snapshot', 'save', file], { timeoutMs: 120_000 });
  return (await stat(file)).size;
}

/**
 * What the agent recorded for a snapshot object when it confirmed it: its manifest (`<key>.manifest.json`,
 * plain JSON any client can read), or the `sha256` metadata of objects written before manifests.
 */
export async function recorded(
  world: World,
  bucket: string,
  key: string,
  client: S3Client = s3Client(world),
): Promise<{ sha256?: string; size?: number; storedSize?: number; producer?: string; node?: string; manifest?: Record<string, any> }> {
  const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
  try {
    const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${key.replace(/\.age$/, '')}.manifest.json` }));
    const m = JSON.parse(await r.Body!.transformToString()) as Record<string, any>;
    return { sha256: m.snapshot.sha256, size: m.snapshot.size, storedSize: head.ContentLength, producer: m.snapshot.producer, node: m.node, manifest: m };
  } catch {
    return {
      sha256: head.Metadata?.sha256,
      size: head.ContentLength,
      storedSize: head.ContentLength,
      producer: head.Metadata?.producer,
      node: head.Metadata?.node,
    };
  }
}
