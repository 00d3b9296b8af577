// HTTPS endpoints with a private CA (RKE's custom_ca): refused without the CA with a line that says
// what to set, shipped with s3.caFile or inline s3.ca; over TLS part payloads go unsigned.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { makePrivateCa, startTlsFront, type PrivateCa, type TlsFront } from '../support/tls-front.js';
import { createBucket, emptyAndDeleteBucket, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
let ca: PrivateCa;
let front: TlsFront;
let dirs: TestDirs;
let snapshot: string;
const bucket = `tls-${Date.now().toString(36)}`;
const outputs: string[] = [];

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  ca = makePrivateCa();
  const target = new URL(world.s3.endpoint);
  front = await startTlsFront(ca, { host: target.hostname, port: Number(target.port) });
  dirs = await testDirs('tls-');
  snapshot = path.join(dirs.root, 'over-tls.db');
  await saveSnapshot(world, snapshot);
});

afterAll(async () => {
  for (const o of outputs) expect(o).not.toContain(world.s3.secretAccessKey);
  await front.close();
  await emptyAndDeleteBucket(world, bucket);
  await rm(ca.dir, { recursive: true, force: true });
});

async function cli(s3: Record<string, unknown>, node: string, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  await writeConfig(dirs, world, bucket, { node, s3: { ...s3, partSize: '5MiB' } });
  const r = await runCli(['--config', dirs.config, ...args], agentEnv(world));
  outputs.push(r.stdout, r.stderr);
  return r;
}

async function storedSha(key: string): Promise<string> {
  const obj = await s3Client(world).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const h = createHash('sha256');
  for await (const c of obj.Body as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

describe('HTTPS with a private CA', () => {
  it('without the CA: refused, one line saying to set s3.caFile or s3.ca, exit 69', async () => {
    const r = await cli({ endpoint: front.url }, 'no-ca', 'check-config');
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(/TLS failed talking to .*https:\/\/127\.0\.0\.1:\d+.*set s3\.caFile or s3\.ca/);
  });

  it('with s3.caFile: shipped and stored byte for byte; over TLS too each part carries a signed SHA-256 the server checks', async () => {
    front.heads.length = 0;
    const r = await cli({ endpoint: front.url, caFile: ca.caFile }, 'ca-file', 'upload', snapshot);
    expect(r.code, r.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/ca-file/over-tls.db')).toBe(await sha256File(snapshot));
    // TLS protects the wire, not what a server or a TLS-terminating proxy does with the bytes: the proof of
    // each part is the signed payload hash (RGW ignores CRC32 headers, as the start-up probe finds)
    const parts = front.heads.filter((h) => h.startsWith('PUT ') && h.includes('partNumber=') && !h.includes('etcd-backup-agent-probe'));
    expect(parts.length).toBeGreaterThan(0);
    for (const h of parts) expect(h.toLowerCase()).toMatch(/x-amz-content-sha256: [0-9a-f]{64}\r\n/);
  });

  it("with inline s3.ca and RKE's scheme-less host:port endpoint (HTTPS implied)", async () => {
    const r = await cli({ endpoint: `127.0.0.1:${front.port}`, ca: ca.caPem }, 'ca-inline', 'upload', snapshot);
    expect(r.code, r.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/ca-inline/over-tls.db')).toBe(await sha256File(snapshot));
  });

  it('over plain HTTP the part payloads stay signed (a SHA-256 the server checks)', async () => {
    const target = new URL(world.s3.endpoint);
    const plain = await startTlsFront(undefined, { host: target.hostname, port: Number(target.port) });
    try {
      const r = await cli({ endpoint: plain.url }, 'plain', 'upload', snapshot);
      expect(r.code, r.stderr).toBe(0);
      const puts = plain.heads.filter((h) => h.startsWith('PUT ') && !h.includes('etcd-backup-agent-probe'));
      expect(puts.length).toBeGreaterThan(0);
      for (const h of puts) expect(h.toLowerCase()).toMatch(/x-amz-content-sha256: [0-9a-f]{64}\r\n/);
    } finally {
      await plain.close();
    }
  });
});
