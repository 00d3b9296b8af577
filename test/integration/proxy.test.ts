// S3 through a real forward proxy (tinyproxy from Debian) on 127.0.0.1: plain HTTP endpoints (absolute-URI
// requests) and HTTPS endpoints with a private CA (CONNECT, TLS inside the tunnel), the environment as curl
// reads it, s3.proxy over it, NO_PROXY, a proxy that is down, one that wants basic auth.
// "Nothing around the proxy": the endpoints are gates that let through only connections from 127.0.0.2,
// the address the proxy connects out from; the agent itself connects from 127.0.0.1, so a request that
// bypassed the proxy would be refused, and the first test shows that it is.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { agentEnv, freePort, runCli, testDirs, writeConfig, type TestDirs } from '../support/agent.js';
import { sha256File } from '../support/snapshots.js';
import { startTinyproxy, type Tinyproxy } from '../support/tinyproxy.js';
import { makePrivateCa, startTlsFront, type PrivateCa, type TlsFront } from '../support/tls-front.js';
import { createBucket, emptyAndDeleteBucket, putKeys, readWorldEnv, s3Client, saveSnapshot, type World } from '../support/world.js';

let world: World;
let ca: PrivateCa;
let proxy: Tinyproxy;
let authProxy: Tinyproxy;
let httpGate: TlsFront;
let httpsGate: TlsFront;
let dirs: TestDirs;
let snapshot: string;
let snapshotSha: string;
const bucket = `proxy-${Date.now().toString(36)}`;
const PASSWORD = 'Pr0xy-S3cret-9f2c';
const outputs: string[] = [];
// never inherited from the machine running the tests
const NO_PROXY_ENV = { HTTPS_PROXY: '', https_proxy: '', HTTP_PROXY: '', http_proxy: '', ALL_PROXY: '', all_proxy: '', NO_PROXY: '', no_proxy: '' };

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  await createBucket(world, bucket);
  ca = makePrivateCa();
  const rgw = new URL(world.s3.endpoint);
  const target = { host: rgw.hostname, port: Number(rgw.port) };
  proxy = await startTinyproxy();
  authProxy = await startTinyproxy({ basicAuth: { user: 'agent', password: PASSWORD } });
  httpGate = await startTlsFront(undefined, target, { allowFrom: [proxy.bindAddress] });
  httpsGate = await startTlsFront(ca, target, { allowFrom: [proxy.bindAddress] });
  dirs = await testDirs('proxy-');
  snapshot = path.join(dirs.root, 'via-proxy.db');
  // several 5 MiB parts: bodies of 2 MiB and more are where a proxy path can damage them (Expect: 100-continue)
  if ((await saveSnapshot(world, snapshot)) < 11 * 1024 * 1024) {
    await putKeys(world, 10_000, 1024, `/proxy-test/${bucket}/`);
    await saveSnapshot(world, snapshot);
  }
  snapshotSha = await sha256File(snapshot);
});

afterAll(async () => {
  for (const o of outputs) {
    expect(o).not.toContain(world.s3.secretAccessKey);
    expect(o).not.toContain(PASSWORD);
    expect(o).not.toContain(Buffer.from(`agent:${PASSWORD}`).toString('base64'));
  }
  await Promise.all([proxy?.stop(), authProxy?.stop(), httpGate?.close(), httpsGate?.close()]);
  await emptyAndDeleteBucket(world, bucket);
  await rm(ca.dir, { recursive: true, force: true });
  await rm(dirs.root, { recursive: true, force: true });
});

async function cli(
  s3: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  node: string,
  ...args: string[]
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  await writeConfig(dirs, world, bucket, { node, s3: { ...s3, partSize: '5MiB' }, log: { level: 'debug' } });
  const t0 = Date.now();
  const r = await runCli(['--config', dirs.config, ...args], agentEnv(world, { ...NO_PROXY_ENV, ...env }), 60_000);
  outputs.push(r.stdout, r.stderr);
  return { ...r, ms: Date.now() - t0 };
}

async function storedSha(key: string): Promise<string> {
  const obj = await s3Client(world).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const h = createHash('sha256');
  for await (const c of obj.Body as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

const since = async (p: Tinyproxy, before: number): Promise<string[]> => (await p.carried()).slice(before);

describe('through a forward proxy', () => {
  it('the gates refuse a direct connection: without the proxy the upload fails (exit 69)', async () => {
    const r = await cli({ endpoint: httpGate.url }, {}, 'direct', 'upload', snapshot);
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(/S3 unreachable/);
    expect(httpGate.refused).toContain('127.0.0.1');
  });

  it('HTTP endpoint with HTTP_PROXY: every request goes through the proxy, and the object is stored intact', async () => {
    const before = (await proxy.carried()).length;
    const refused = httpGate.refused.length;
    const r = await cli({ endpoint: httpGate.url }, { HTTP_PROXY: proxy.url }, 'http-env', 'upload', snapshot);
    expect(r.code, r.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/http-env/via-proxy.db')).toBe(snapshotSha);
    const carried = await since(proxy, before);
    // the part PUTs, the HEAD that confirms, the manifest: all as absolute URIs through the proxy
    expect(carried.filter((c) => c.startsWith(`PUT ${httpGate.url}/${bucket}/etcd-backup/test/http-env/via-proxy.db?`)).length).toBeGreaterThan(0);
    expect(carried.some((c) => c.startsWith(`PUT ${httpGate.url}/${bucket}/etcd-backup/test/http-env/via-proxy.db.manifest.json`))).toBe(true);
    expect(httpGate.refused.length).toBe(refused);
  });

  it('HTTPS endpoint with a private CA and https_proxy: a CONNECT tunnel, TLS to the endpoint inside it', async () => {
    const before = (await proxy.carried()).length;
    httpsGate.heads.length = 0;
    const r = await cli({ endpoint: httpsGate.url, caFile: ca.caFile }, { https_proxy: proxy.url }, 'https-env', 'upload', snapshot);
    expect(r.code, r.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/https-env/via-proxy.db')).toBe(snapshotSha);
    const carried = await since(proxy, before);
    expect(carried.length).toBeGreaterThan(0);
    expect(carried.every((c) => c === `CONNECT 127.0.0.1:${httpsGate.port}`)).toBe(true);
    // the front decrypted the requests: the tunnel carried TLS made with the private CA, end to end
    expect(httpsGate.heads.some((h) => h.startsWith(`PUT /${bucket}/etcd-backup/test/https-env/via-proxy.db?`))).toBe(true);
    expect(httpsGate.refused).toEqual([]);
    expect(httpsGate.accepted.every((a) => a === proxy.bindAddress)).toBe(true);
  });

  it('the private CA is still needed through the tunnel: without it, a TLS failure that says so', async () => {
    const r = await cli({ endpoint: httpsGate.url }, { HTTPS_PROXY: proxy.url }, 'https-no-ca', 'check-config');
    expect(r.code).toBe(69);
    expect(r.stderr).toMatch(/TLS failed .*set s3\.caFile or s3\.ca/);
  });

  it('s3.proxy wins over the environment (here a dead HTTPS_PROXY), and check-config says which proxy', async () => {
    const dead = await freePort();
    const r = await cli(
      { endpoint: httpsGate.url, caFile: ca.caFile, proxy: proxy.url },
      { HTTPS_PROXY: `http://127.0.0.1:${dead}` },
      'cfg-proxy',
      'check-config',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`proxy: http://127.0.0.1:${proxy.port} (from s3.proxy)`);
    expect(r.stdout).toContain('S3 ok');
  });

  it('NO_PROXY: a listed endpoint is reached directly, the proxy sees nothing', async () => {
    const before = (await proxy.carried()).length;
    const env = { HTTP_PROXY: proxy.url, NO_PROXY: 'example.com, 127.0.0.0/8' };
    const check = await cli({ endpoint: world.s3.endpoint }, env, 'no-proxy', 'check-config');
    expect(check.code, check.stderr).toBe(0);
    expect(check.stdout).toContain('proxy: none (NO_PROXY lists 127.0.0.0/8)');
    const r = await cli({ endpoint: world.s3.endpoint }, env, 'no-proxy', 'upload', snapshot);
    expect(r.code, r.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/no-proxy/via-proxy.db')).toBe(snapshotSha);
    expect(await since(proxy, before)).toEqual([]);
  });

  it('a proxy that is down: a network failure naming the proxy within seconds, exit 69', async () => {
    const dead = await freePort();
    const r = await cli(
      { endpoint: httpsGate.url, caFile: ca.caFile },
      { HTTPS_PROXY: `http://agent:${PASSWORD}@127.0.0.1:${dead}` },
      'proxy-down',
      'check-config',
    );
    expect(r.code).toBe(69);
    expect(r.stderr).toContain(`S3 unreachable through the proxy http://127.0.0.1:${dead} (with credentials) (from HTTPS_PROXY) (ECONNREFUSED`);
    // three attempts with the SDK's backoff, no hang
    expect(r.ms).toBeLessThan(15_000);
  });

  it('a proxy with basic auth: refused without credentials (407, said plainly), used with them', async () => {
    for (const endpoint of [httpsGate.url, httpGate.url]) {
      const r = await cli(
        { endpoint, caFile: ca.caFile },
        { HTTPS_PROXY: authProxy.url.replace(/\/\/[^@]+@/, '//'), HTTP_PROXY: authProxy.url.replace(/\/\/[^@]+@/, '//') },
        'auth-none',
        'check-config',
      );
      expect(r.code, endpoint).toBe(69);
      expect(r.stderr, endpoint).toMatch(
        /the proxy http:\/\/127\.0\.0\.1:\d+ \(from HTTPS?_PROXY\) (refused the tunnel to 127\.0\.0\.1:\d+|answered instead of S3): the proxy wants credentials, or refused the ones given \(407/,
      );
    }
    // tinyproxy answers a wrong password with 401 instead of 407: the same words
    for (const endpoint of [httpsGate.url, httpGate.url]) {
      const wrong = await cli({ endpoint, caFile: ca.caFile, proxy: authProxy.url.replace(PASSWORD, 'wrong-password') }, {}, 'auth-wrong', 'check-config');
      expect(wrong.code, wrong.stderr).toBe(69);
      expect(wrong.stderr, endpoint).toMatch(/the proxy wants credentials, or refused the ones given \(401 Unauthorized\)/);
      expect(wrong.stderr).not.toContain('wrong-password');
    }
  });

  it('with the credentials in the proxy URL both schemes work, and the password shows up nowhere', async () => {
    // the gates admit the proxy's outgoing address; this proxy uses the same one
    expect(authProxy.bindAddress).toBe(proxy.bindAddress);
    // DEBUG=*: the proxy libraries' debug output (request heads, the proxy URL) would go straight to stderr
    const https = await cli({ endpoint: httpsGate.url, caFile: ca.caFile, proxy: authProxy.url }, { DEBUG: '*' }, 'auth-https', 'upload', snapshot);
    expect(https.code, https.stderr).toBe(0);
    const http = await cli({ endpoint: httpGate.url }, { HTTP_PROXY: authProxy.url, DEBUG: '*' }, 'auth-http', 'upload', snapshot);
    expect(http.code, http.stderr).toBe(0);
    expect(await storedSha('etcd-backup/test/auth-https/via-proxy.db')).toBe(snapshotSha);
    expect(await storedSha('etcd-backup/test/auth-http/via-proxy.db')).toBe(snapshotSha);
    const check = await cli({ endpoint: httpsGate.url, caFile: ca.caFile, proxy: authProxy.url }, {}, 'auth-https', 'check-config');
    expect(check.stdout).toContain(`proxy: http://127.0.0.1:${authProxy.port} (with credentials) (from s3.proxy)`);
    // afterAll checks every output of this file for the password, plain and base64
  });
});
