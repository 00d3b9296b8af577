// Which proxy carries S3 requests (s3.proxy, then the environment as curl reads it), NO_PROXY as curl
// matches it, and what a failure at the proxy looks like. The real proxy is in test/integration/proxy.test.ts.
import { createServer, type AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { classifyError, describeError } from '../../agent/base/errors.js';
import { redactText } from '../../agent/base/secret.js';
import { parseConfig } from '../../agent/config/parse.js';
import { S3Store } from '../../agent/store/s3.js';
import { ProxyError, proxyOwnAnswer } from '../../agent/store/proxy.js';
import { chooseProxy, describeProxy, noProxyMatch } from '../../agent/store/proxy-env.js';

const ep = (u: string): URL => new URL(u);
const via = (d: ReturnType<typeof chooseProxy>): string => ('proxy' in d ? `${d.proxy.url.host} ${d.proxy.source}` : `direct: ${d.direct}`);

describe('chooseProxy', () => {
  it('https endpoints use https_proxy, then HTTPS_PROXY, then all_proxy; lowercase first', () => {
    expect(via(chooseProxy(ep('https://s3.example.com'), undefined, { HTTPS_PROXY: 'http://up:1', https_proxy: 'http://low:2' }))).toBe('low:2 https_proxy');
    expect(via(chooseProxy(ep('https://s3.example.com'), undefined, { HTTPS_PROXY: 'http://up:1' }))).toBe('up:1 HTTPS_PROXY');
    expect(via(chooseProxy(ep('https://s3.example.com'), undefined, { ALL_PROXY: 'http://all:3' }))).toBe('all:3 ALL_PROXY');
    // an http proxy variable does not carry https traffic (curl and Go agree)
    expect(via(chooseProxy(ep('https://s3.example.com'), undefined, { HTTP_PROXY: 'http://h:4' }))).toBe('direct: no proxy configured');
  });

  it('http endpoints use http_proxy or HTTP_PROXY, not HTTPS_PROXY', () => {
    expect(via(chooseProxy(ep('http://rgw:7480'), undefined, { HTTP_PROXY: 'http://h:4', HTTPS_PROXY: 'http://s:5' }))).toBe('h:4 HTTP_PROXY');
    expect(via(chooseProxy(ep('http://rgw:7480'), undefined, { HTTPS_PROXY: 'http://s:5' }))).toBe('direct: no proxy configured');
  });

  it('s3.proxy wins over the environment, NO_PROXY included', () => {
    const d = chooseProxy(ep('https://s3.example.com'), 'http://cfg:8', { HTTPS_PROXY: 'http://env:9', NO_PROXY: '*' });
    expect(via(d)).toBe('cfg:8 s3.proxy');
  });

  it('a proxy without a scheme is http://; other schemes are refused with a reason that hides credentials', () => {
    const d = chooseProxy(ep('https://s3.example.com'), undefined, { HTTPS_PROXY: 'proxy.corp:3128' });
    expect('proxy' in d && d.proxy.url.protocol).toBe('http:');
    expect(() => chooseProxy(ep('https://s3.example.com'), undefined, { HTTPS_PROXY: 'socks5://u:hunter2hunter2@p:1080' })).toThrow(
      /HTTPS_PROXY uses socks5.*http:\/\/ or https:\/\//,
    );
    try {
      chooseProxy(ep('https://s3.example.com'), undefined, { HTTPS_PROXY: 'http://u:hunter2hunter2@[bad' });
    } catch (e) {
      expect((e as Error).message).not.toContain('hunter2');
      expect((e as Error).message).toContain('HTTPS_PROXY is not a proxy URL');
    }
  });

  it('NO_PROXY turns the proxy off for a listed endpoint, and says which entry', () => {
    expect(via(chooseProxy(ep('http://127.0.0.1:7480'), undefined, { http_proxy: 'http://p:1', no_proxy: 'localhost,127.0.0.1' }))).toBe(
      'direct: no_proxy lists 127.0.0.1',
    );
    expect(describeProxy(chooseProxy(ep('http://127.0.0.1:7480'), undefined, { http_proxy: 'http://u:secretsecret@p:1' }))).toBe(
      'http://p:1 (with credentials) (from http_proxy)',
    );
  });
});

describe('NO_PROXY matching (curl semantics; ports and *. as Go)', () => {
  it.each([
    // [host, port, list, matching entry or undefined]
    ['s3.example.com', 443, 'example.com', 'example.com'],
    ['example.com', 443, 'example.com', 'example.com'],
    ['s3.example.com', 443, '.example.com', '.example.com'],
    ['example.com', 443, '.example.com', '.example.com'], // curl ignores the leading dot (Go would not match)
    ['s3.example.com', 443, '*.example.com', '*.example.com'],
    ['notexample.com', 443, 'example.com', undefined],
    ['S3.Example.COM.', 443, 'example.com.', 'example.com.'],
    ['s3.example.com', 443, 'other.org, example.com', 'example.com'],
    ['s3.example.com', 443, 'other.org example.com', 'example.com'],
    ['anything', 80, '*', '*'],
    ['anything', 80, '*.x,*', undefined], // `*` is special only alone (curl)
    ['s3.example.com', 9000, 'example.com:9000', 'example.com:9000'],
    ['s3.example.com', 443, 'example.com:9000', undefined],
    ['10.1.2.3', 443, '10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3', 443, '10.1.2.3', '10.1.2.3'],
    ['10.1.2.3', 443, '10.1.2.4', undefined],
    ['11.1.2.3', 443, '10.0.0.0/8', undefined],
    ['10.1.2.3', 443, '3', undefined], // a name never matches an IP by suffix
    ['[fd00::5]', 443, 'fd00::/8', 'fd00::/8'],
    ['[fd00::5]', 443, '[fd00::5]:443', '[fd00::5]:443'],
    ['[::ffff:10.0.0.1]', 443, '::ffff:10.0.0.0/120', '::ffff:10.0.0.0/120'],
    ['[fe80::1]', 443, 'fd00::/8', undefined],
    ['127.0.0.1', 7480, '', undefined],
  ])('%s:%d with NO_PROXY=%j -> %s', (host, port, list, hit) => {
    expect(noProxyMatch(host, port, list)).toBe(hit);
  });
});

describe('failures at the proxy', () => {
  // credentials the SDK finds at once, so the request gets as far as the proxy
  beforeEach(() => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDEXAMPLEEXAMPLE00');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'secretexamplesecretexamplesecretexample0');
    vi.stubEnv('AWS_EC2_METADATA_DISABLED', 'true');
    for (const v of ['HTTPS_PROXY', 'https_proxy', 'HTTP_PROXY', 'http_proxy', 'ALL_PROXY', 'all_proxy', 'NO_PROXY', 'no_proxy']) vi.stubEnv(v, '');
  });
  afterEach(() => vi.unstubAllEnvs());

  it("a proxy's own error page is told from S3's by the missing request id", () => {
    expect(proxyOwnAnswer({ statusCode: 407, headers: { 'proxy-authenticate': 'Basic realm="x"' } }, 'P')?.reason).toBe('auth');
    expect(proxyOwnAnswer({ statusCode: 500, reason: 'Unable to connect', headers: { server: 'tinyproxy/1.11.1' } }, 'P')?.message).toBe(
      'the proxy P answered instead of S3: the proxy could not reach the S3 endpoint (500 Unable to connect)',
    );
    expect(proxyOwnAnswer({ statusCode: 503, headers: { server: 'squid/5.7', 'x-squid-error': 'ERR_CONNECT_FAIL 111' } }, 'P')?.reason).toBe('network');
    // a load balancer in front of S3 answering 502 is not the proxy
    expect(proxyOwnAnswer({ statusCode: 502, headers: { server: 'nginx' } }, 'P')).toBeUndefined();
    // S3's own 503 SlowDown has a request id: it stays S3's
    expect(proxyOwnAnswer({ statusCode: 503, headers: { 'x-amz-request-id': 'tx1' } }, 'P')).toBeUndefined();
    // a 403 without request id is the proxy's only if it says so
    expect(proxyOwnAnswer({ statusCode: 403, headers: {} }, 'P')).toBeUndefined();
    expect(proxyOwnAnswer({ statusCode: 403, headers: { via: '1.1 tinyproxy (tinyproxy/1.11.1)' } }, 'P')?.reason).toBe('network');
    const e = new ProxyError('network', 'x', 'P', undefined, 502);
    expect((e as unknown as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode).toBe(502);
  });

  it('a proxy that is down: a network failure within moments, naming the proxy and never its password', async () => {
    // a port that refuses: bind one, note it, close it
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const cfg = parseConfig(
      `s3: { bucket: bkt, endpoint: "http://127.0.0.1:1", proxy: "http://agent:pr0xy-passw0rd@127.0.0.1:${port}" }\nupload: { attempts: 2 }\nnode: n\n`,
      'c',
      {},
    );
    const store = new S3Store(cfg);
    const t0 = Date.now();
    const err = await store.check().then(
      () => undefined,
      (e: unknown) => e,
    );
    store.close();
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(classifyError(err)).toBe('network');
    const line = describeError(err, { location: store.location });
    expect(line).toContain(`the proxy http://127.0.0.1:${port} (with credentials) (from s3.proxy)`);
    expect(line).toContain('ECONNREFUSED');
    expect(line).not.toContain('pr0xy-passw0rd');
    // registered as a secret: the log format would scrub it from any text
    expect(redactText(`x http://agent:pr0xy-passw0rd@h y ${Buffer.from('agent:pr0xy-passw0rd').toString('base64')}`)).not.toMatch(/pr0xy|YWdlbnQ6cHIweHk/);
  });

  it('a proxy that accepts and never answers fails within the connect timeout, as a timeout naming the proxy', async () => {
    const held: import('node:net').Socket[] = [];
    const srv = createServer((s) => held.push(s));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const port = (srv.address() as AddressInfo).port;
    const cfg = parseConfig(
      `s3: { bucket: bkt, endpoint: "https://127.0.0.1:1", proxy: "http://127.0.0.1:${port}", connectTimeout: 500ms }\nupload: { attempts: 1 }\nnode: n\n`,
      'c',
      {},
    );
    const store = new S3Store(cfg);
    const t0 = Date.now();
    const err = await store.check().then(
      () => undefined,
      (e: unknown) => e,
    );
    store.close();
    for (const s of held) s.destroy();
    srv.close();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(classifyError(err)).toBe('timeout');
    expect(describeError(err, { location: store.location })).toMatch(
      new RegExp(`the proxy http://127\\.0\\.0\\.1:${port} \\(from s3\\.proxy\\) did not connect to 127\\.0\\.0\\.1:1 within 500 ms`),
    );
  });
});
