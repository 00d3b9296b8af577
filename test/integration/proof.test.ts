// "Shipped and confirmed" rests on the server's own check of every part. Against real servers: bytes
// flipped in transit are refused (RGW checks the signed payload SHA-256; it ignores CRC32 headers, so the
// agent never relies on them there), a server that answers a part before reading it does not crash the
// agent, and a server's part limit is met by larger parts.
import { copyFile, utimes } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, startAgent, testDirs, writeConfig, type AgentProcess } from '../support/agent.js';
import { startHttpFaultProxy, type HttpFaultProxy } from '../support/http-fault-proxy.js';
import { sha256File } from '../support/snapshots.js';
import {
  createBucket,
  createSwiftBucket,
  emptyAndDeleteBucket,
  listKeys,
  putKeys,
  readWorldEnv,
  recorded,
  s3Client,
  saveSnapshot,
  startSwift,
  swiftClient,
  type ExtraSwift,
  type World,
} from '../support/world.js';

let world: World;
let proxy: HttpFaultProxy;
const bucket = `proof-${Date.now().toString(36)}`;
const agents: AgentProcess[] = [];
let snap: string;
let big: string;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  proxy = await startHttpFaultProxy({ target: world.s3.endpoint });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'proof-'));
  snap = path.join(dir, 'snap.db');
  await putKeys(world, 600, 1024, '/registry/proof/');
  await saveSnapshot(world, snap);
  // about 20 MiB: four 5 MiB parts, one more than the small Swift below takes
  await putKeys(world, 1900, 10 * 1024, '/registry/proof-big/');
  big = path.join(dir, 'big.db');
  await saveSnapshot(world, big);
});

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await proxy?.close();
  await emptyAndDeleteBucket(world, bucket);
});

async function agentVia(
  node: string,
  s3: Record<string, unknown>,
  endpoint = proxy.url,
  retention: Record<string, unknown> = {},
): Promise<{ agent: AgentProcess; dir: string; prefix: string; config: string }> {
  const dirs = await testDirs();
  const cfg = await writeConfig(dirs, world, bucket, {
    node,
    s3: { endpoint, partSize: '5MiB', ...s3 },
    upload: { retryInitial: '200ms', retryMax: '1s' },
    retention,
  });
  const agent = await startAgent(dirs, agentEnv(world), cfg);
  agents.push(agent);
  return { agent, dir: dirs.snapshots, prefix: `etcd-backup/test/${node}/`, config: dirs.config };
}

describe('proof of stored bytes', () => {
  it.each(['auto', 'when_required', 'when_supported'])(
    's3.checksum %s: a flipped byte in a part is refused by RGW, nothing is recorded, prune keeps the file; then it ships intact',
    async (mode) => {
      const node = `flip-${mode.replace('_', '-')}`;
      proxy.flipNext('UploadPart', 1_000);
      try {
        const { agent, dir, prefix, config } = await agentVia(node, { checksum: mode }, proxy.url, { maxAge: '1s' });
        const integrity = await agent.waitMsg('part integrity');
        // RGW 16 accepts a wrong CRC32 header: the probe sees it, so every mode proves parts by the signed payload
        expect(integrity.proof).toBe('signed payload SHA-256');
        if (mode !== 'when_required') expect(String(integrity.probe)).toMatch(/accepted: the server does not check it/);
        // two snapshots, the older past retention.maxAge: only "not in S3 yet" keeps it
        await copyFile(snap, path.join(dir, 'snap.db'));
        const old = new Date(Date.now() - 3_600_000);
        await utimes(path.join(dir, 'snap.db'), old, old);
        await copyFile(snap, path.join(dir, 'newer.db'));
        const failed = await agent.waitMsg('upload failed; the snapshot stays pending and will be retried', 'snap.db');
        expect(failed.reason).toBe('integrity');
        expect(String(failed.error)).toMatch(/refused the bytes it received as damaged \(XAmzContentSHA256Mismatch/);
        expect(await listKeys(world, bucket, prefix, { all: true })).toEqual([]);
        expect(agent.lines.some((l) => l.msg === 'snapshot shipped and confirmed')).toBe(false);
        // prune, run as an operator would meanwhile, keeps the only copy
        const pruned = await runCli(['--config', config, 'prune'], agentEnv(world, { AWS_EC2_METADATA_DISABLED: 'true' }));
        expect(pruned.stdout).toMatch(/kept\s+snap\.db: .*not in S3 yet/);
        proxy.heal();
        const shipped = await agent.waitMsg('snapshot shipped and confirmed', 'snap.db', 60_000);
        expect(shipped.integrity).toBe('sha256');
        const rec = await recorded(world, bucket, `${prefix}snap.db`);
        expect(rec.sha256).toBe(await sha256File(snap));
        // and the bytes in S3 really are the file's, downloaded and hashed
        const got = await s3Client(world).send(new (await import('@aws-sdk/client-s3')).GetObjectCommand({ Bucket: bucket, Key: `${prefix}snap.db` }));
        const h = (await import('node:crypto')).createHash('sha256');
        for await (const c of got.Body as AsyncIterable<Buffer>) h.update(c);
        expect(h.digest('hex')).toBe(rec.sha256);
        expect(await agent.metric('etcdbackup_upload_failures_total{reason="integrity"}')).toBeGreaterThanOrEqual(1);
        await agent.stop();
      } finally {
        proxy.heal();
      }
    },
  );

  it('a part answered with 400 before its body is read, the connection closed: a classified failure, the daemon lives, no upload left open', async () => {
    const { agent, dir, prefix } = await agentVia('early-400', {});
    await agent.waitMsg('part integrity');
    // every part is answered early until the upload fails (the SDK retries a part whose connection broke,
    // so a few early answers could be absorbed by its retries), whichever way the client sees them: the
    // 400, or the broken pipe
    proxy.rejectEarlyNext('UploadPart', 1_000_000, {
      status: 400,
      code: 'InvalidArgument',
      message: 'Part number must be an integer between 1 and 1000, inclusive',
    });
    await copyFile(big, path.join(dir, 'big.db'));
    const failed = await agent.waitMsg('upload failed; the snapshot stays pending and will be retried', 'big.db', 60_000);
    expect(['refused', 'network']).toContain(failed.reason);
    proxy.heal();
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', 'big.db', 120_000);
    expect(shipped.sha256).toBe(await sha256File(big));
    expect(agent.child.exitCode).toBeNull();
    const open = await s3Client(world).send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    expect(open.Uploads ?? []).toEqual([]);
    expect(agent.stderr).not.toMatch(/fatal|EPIPE/);
    await agent.stop();
  });

  it('a multipart upload aborted by another client mid-way: classified, retried, shipped; the daemon lives', async () => {
    const { agent, dir, prefix } = await agentVia('aborted-elsewhere', { queueSize: 1 }, world.s3.endpoint);
    await agent.waitMsg('part integrity');
    const s3 = s3Client(world);
    await copyFile(big, path.join(dir, 'big.db'));
    await agent.waitMsg('upload started', 'big.db');
    // the first upload id that shows up is aborted from outside
    for (let i = 0; i < 200; i++) {
      const open = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      const u = open.Uploads?.[0];
      if (u) {
        await s3.send(new (await import('@aws-sdk/client-s3')).AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key!, UploadId: u.UploadId! }));
        break;
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', 'big.db', 120_000);
    expect(shipped.sha256).toBe(await sha256File(big));
    expect(agent.child.exitCode).toBeNull();
    await agent.stop();
  });
});

describe("a server's part limit", () => {
  let swift: ExtraSwift;
  let swiftDir: string;
  const sBucket = 'partlimit';

  beforeAll(async () => {
    swiftDir = await mkdtemp(path.join(os.tmpdir(), 'swift3-'));
    swift = await startSwift(swiftDir, { maxParts: 3 });
    await createSwiftBucket(swift, sBucket);
  });
  afterAll(async () => {
    await swift?.stop();
    await rm(swiftDir, { recursive: true, force: true });
  });

  async function swiftAgent(node: string, s3: Record<string, unknown>): Promise<{ agent: AgentProcess; dir: string }> {
    const dirs = await testDirs();
    const cfg = await writeConfig(dirs, world, sBucket, {
      node,
      s3: { bucket: sBucket, endpoint: swift.endpoint, partSize: '5MiB', region: swift.region, ...s3 },
      upload: { retryInitial: '200ms', retryMax: '1s' },
    });
    const agent = await startAgent(
      dirs,
      agentEnv(world, { AWS_ACCESS_KEY_ID: swift.accessKeyId, AWS_SECRET_ACCESS_KEY: swift.secretAccessKey, AWS_REGION: swift.region }),
      cfg,
    );
    agents.push(agent);
    return { agent, dir: dirs.snapshots };
  }

  it('s3.maxParts 3: the part size grows so that a 20 MiB snapshot goes in 3 parts, and Swift takes it', async () => {
    const { agent, dir } = await swiftAgent('within-limit', { maxParts: 3 });
    await copyFile(big, path.join(dir, 'big.db'));
    const shipped = await agent.waitMsg('snapshot shipped and confirmed', 'big.db', 120_000);
    expect(shipped.parts).toBe(3);
    const m = (await recorded(world, sBucket, 'etcd-backup/test/within-limit/big.db', swiftClient(swift))).manifest!;
    expect(m.object.parts).toBe(3);
    expect(m.object.partSize).toBeGreaterThan(5 * 1024 * 1024);
    expect(m.snapshot.sha256).toBe(await sha256File(big));
    await agent.stop();
  });

  it('s3.maxParts above the server limit: part 4 is refused before its body is read; a classified failure, the daemon lives, no upload left open', async () => {
    const { agent, dir } = await swiftAgent('over-limit', { maxParts: 1000 });
    await copyFile(big, path.join(dir, 'big.db'));
    const failed = await agent.waitMsg('upload failed; the snapshot stays pending and will be retried', 'big.db', 120_000);
    expect(['refused', 'network']).toContain(failed.reason);
    expect(String(failed.error)).not.toMatch(/^$/);
    await new Promise((r) => setTimeout(r, 1500));
    expect(agent.child.exitCode).toBeNull();
    expect(agent.stderr).not.toMatch(/fatal/);
    // every failed attempt aborted its upload; the one in flight at stop is aborted by the drain
    expect(await agent.stop()).toEqual({ code: 0, signal: null });
    const open = await swiftClient(swift).send(new ListMultipartUploadsCommand({ Bucket: sBucket }));
    expect((open.Uploads ?? []).filter((u) => u.Key?.includes('over-limit'))).toEqual([]);
  });
});
