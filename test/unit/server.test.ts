// The metrics endpoint on a real socket: plain HTTP, TLS with a certificate made by openssl, basic auth,
// reloading rotated files, and the password kept out of every log line.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { Gauge, Registry } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../agent/ops/log.js';
import { redactText } from '../../agent/base/secret.js';
import { checkBasicAuth, MetricsServer, ServerSetupError, serverOptions, type Health, type ServerOptions } from '../../agent/ops/server.js';

const dir = mkdtempSync(path.join(tmpdir(), 'server-test-'));
const PASSWORD = 'correct horse: battery staple';

/** A self-signed certificate for 127.0.0.1, as an operator would make one. */
function makeCert(name: string, cn: string): { cert: string; key: string } {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${cn}`,
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { cert, key };
}

let first: { cert: string; key: string };
let second: { cert: string; key: string };
beforeAll(() => {
  first = makeCert('first', 'first-cert');
  second = makeCert('second', 'second-cert');
});

class LogCapture extends Writable {
  text = '';
  private waiters: { msg: string; resolve: () => void }[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.text += chunk.toString();
    for (const w of [...this.waiters]) if (this.text.includes(`"msg":"${w.msg}"`)) w.resolve();
    done();
  }
  /** Resolves when a log line with this message has been written (now or later). */
  waitMsg(msg: string): Promise<void> {
    if (this.text.includes(`"msg":"${msg}"`)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ msg, resolve }));
  }
  count(msg: string): number {
    return this.text.split('\n').filter((l) => l.includes(`"msg":"${msg}"`)).length;
  }
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  peerCn?: string;
}

function request(url: string, opts: { ca?: string; auth?: string; header?: string; method?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (opts.auth !== undefined) headers.authorization = `Basic ${Buffer.from(opts.auth).toString('base64')}`;
    if (opts.header !== undefined) headers.authorization = opts.header;
    const mod = u.protocol === 'https:' ? https : http;
    // agent: false, so every request makes a new connection (and sees the current certificate)
    const req = mod.request(u, { method: opts.method ?? 'GET', headers, ca: opts.ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const sock = res.socket as TLSSocket;
        const peer = typeof sock.getPeerX509Certificate === 'function' ? sock.getPeerX509Certificate() : undefined;
        resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString(), peerCn: peer?.subject.replace(/^CN=/, '') });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

let health = { live: true, ready: false };
const fakeHealth: Health = {
  live: () => ({ ok: health.live, detail: 'event loop last turned 3 ms ago' }),
  ready: () => ({ ok: health.ready, detail: 'watching /snapshots; S3 unreachable' }),
};

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  health = { live: true, ready: false };
});

async function serve(opts: Omit<ServerOptions, 'listen'>, logs = new LogCapture()): Promise<{ url: string; logs: LogCapture; server: MetricsServer }> {
  const registry = new Registry();
  new Gauge({ name: 'test_gauge', help: 'A gauge for the test.', registers: [registry] }).set(42);
  const server = new MetricsServer({ listen: '127.0.0.1:0', ...opts }, registry, fakeHealth, createLogger('debug', logs));
  servers.push(server);
  const addr = await server.start();
  return { url: `${server.scheme}://127.0.0.1:${addr.port}`, logs, server };
}

function passwordFile(content: string): string {
  const f = path.join(dir, `pw-${Math.random().toString(36).slice(2)}`);
  writeFileSync(f, content, { mode: 0o600 });
  return f;
}

describe('plain HTTP', () => {
  it('serves /metrics, /healthz and /readyz with their status codes', async () => {
    const { url } = await serve({});
    const m = await request(`${url}/metrics`);
    expect(m.status).toBe(200);
    expect(m.headers['content-type']).toContain('text/plain');
    expect(m.body).toContain('test_gauge 42');
    expect((await request(`${url}/healthz`)).status).toBe(200);
    const notReady = await request(`${url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(notReady.body).toBe('not ok: watching /snapshots; S3 unreachable\n');
    health.ready = true;
    expect((await request(`${url}/readyz`)).status).toBe(200);
    health.live = false;
    expect((await request(`${url}/healthz`)).status).toBe(503);
    expect((await request(`${url}/nope`)).status).toBe(404);
    const post = await request(`${url}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('takes its options from the metrics config keys', () => {
    expect(serverOptions({ enabled: true, listen: ':9479' })).toEqual({ listen: ':9479', tls: undefined, basicAuth: undefined });
    expect(serverOptions({ enabled: true, listen: ':1', tlsCertFile: '/c', tlsKeyFile: '/k', basicAuthUser: 'u', basicAuthPasswordFile: '/p' })).toEqual({
      listen: ':1',
      tls: { certFile: '/c', keyFile: '/k' },
      basicAuth: { user: 'u', passwordFile: '/p' },
    });
  });
});

describe('TLS', () => {
  it('serves HTTPS with the configured certificate; plain HTTP and untrusted clients get nothing', async () => {
    const { url, logs } = await serve({ tls: { certFile: first.cert, keyFile: first.key } });
    expect(url).toMatch(/^https:/);
    const ok = await request(`${url}/metrics`, { ca: readFileSync(first.cert, 'utf8') });
    expect(ok.status).toBe(200);
    expect(ok.body).toContain('test_gauge 42');
    expect(ok.peerCn).toBe('first-cert');
    await expect(request(`${url}/metrics`)).rejects.toThrow(/self-signed|self signed/i);
    await expect(request(url.replace('https:', 'http:') + '/metrics')).rejects.toThrow();
    expect(logs.text).toContain('"scheme":"https"');
  });

  it('picks up a rotated certificate without a restart, and refuses a key that does not match', async () => {
    const cert = path.join(dir, 'rotating.crt');
    const key = path.join(dir, 'rotating.key');
    writeFileSync(cert, readFileSync(first.cert));
    writeFileSync(key, readFileSync(first.key));
    const { url, logs } = await serve({ tls: { certFile: cert, keyFile: key }, reloadIntervalMs: 50 });
    const bothCas = readFileSync(first.cert, 'utf8') + readFileSync(second.cert, 'utf8');
    expect((await request(`${url}/metrics`, { ca: bothCas })).peerCn).toBe('first-cert');

    // a certificate without its key: refused, the old pair keeps serving
    writeFileSync(`${cert}.new`, readFileSync(second.cert));
    renameSync(`${cert}.new`, cert);
    await logs.waitMsg('metrics endpoint files changed but cannot be used; keeping the previous ones');
    expect((await request(`${url}/metrics`, { ca: bothCas })).peerCn).toBe('first-cert');

    writeFileSync(`${key}.new`, readFileSync(second.key));
    renameSync(`${key}.new`, key);
    await logs.waitMsg('metrics endpoint files reloaded');
    const after = await request(`${url}/metrics`, { ca: bothCas });
    expect(after.status).toBe(200);
    expect(after.peerCn).toBe('second-cert');
    expect(new X509Certificate(readFileSync(cert)).subject).toBe('CN=second-cert');
  });

  it('a missing or mismatched certificate stops the start with the config key in the message', async () => {
    const missing = new MetricsServer(
      { listen: '127.0.0.1:0', tls: { certFile: path.join(dir, 'nope.crt'), keyFile: first.key } },
      new Registry(),
      fakeHealth,
      createLogger('error', new LogCapture()),
    );
    await expect(missing.start()).rejects.toThrow(/^metrics\.tlsCertFile: .*nope\.crt does not exist/);
    const mismatched = new MetricsServer(
      { listen: '127.0.0.1:0', tls: { certFile: first.cert, keyFile: second.key } },
      new Registry(),
      fakeHealth,
      createLogger('error', new LogCapture()),
    );
    const err = await mismatched.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerSetupError);
    expect(String((err as Error).message)).toMatch(/not a usable PEM certificate and matching key/);
    // no errno code: the CLI must not mistake it for "address in use / not permitted"
    expect((err as NodeJS.ErrnoException).code).toBeUndefined();
  });
});

describe('basic auth', () => {
  it('refuses missing and wrong credentials with 401 and a challenge, on every path', async () => {
    const { url } = await serve({ basicAuth: { user: 'prometheus', passwordFile: passwordFile(`${PASSWORD}\n`) } });
    for (const p of ['/metrics', '/healthz', '/readyz', '/']) {
      const r = await request(`${url}${p}`);
      expect(r.status, p).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Basic realm="etcd-backup-agent", charset="UTF-8"');
      expect(r.body).not.toContain('test_gauge');
    }
    for (const auth of [`prometheus:${PASSWORD.slice(0, -1)}`, `prometheus:${PASSWORD}x`, `Prometheus:${PASSWORD}`, `prometheus:`, `:${PASSWORD}`, PASSWORD]) {
      expect((await request(`${url}/metrics`, { auth })).status, auth).toBe(401);
    }
    for (const header of ['Bearer abc', 'Basic', 'Basic !!!', `Digest ${Buffer.from(`prometheus:${PASSWORD}`).toString('base64')}`]) {
      expect((await request(`${url}/metrics`, { header })).status, header).toBe(401);
    }
  });

  it("accepts the right user and password (the file's trailing newline is not part of it)", async () => {
    const { url } = await serve({ basicAuth: { user: 'prometheus', passwordFile: passwordFile(`${PASSWORD}\n`) } });
    const r = await request(`${url}/metrics`, { auth: `prometheus:${PASSWORD}` });
    expect(r.status).toBe(200);
    expect(r.body).toContain('test_gauge 42');
    health.ready = true;
    expect((await request(`${url}/readyz`, { auth: `prometheus:${PASSWORD}` })).status).toBe(200);
    // "basic" is case-insensitive (RFC 7617)
    expect((await request(`${url}/metrics`, { header: `basic ${Buffer.from(`prometheus:${PASSWORD}`).toString('base64')}` })).status).toBe(200);
  });

  it('works over TLS', async () => {
    const { url } = await serve({ tls: { certFile: first.cert, keyFile: first.key }, basicAuth: { user: 'prometheus', passwordFile: passwordFile(PASSWORD) } });
    const ca = readFileSync(first.cert, 'utf8');
    expect((await request(`${url}/metrics`, { ca })).status).toBe(401);
    expect((await request(`${url}/metrics`, { ca, auth: `prometheus:${PASSWORD}` })).status).toBe(200);
  });

  it('never logs the password, or the credentials a client sent; refusals are logged at most once a minute', async () => {
    const { url, logs } = await serve({ basicAuth: { user: 'prometheus', passwordFile: passwordFile(PASSWORD) } });
    const sent = 'prometheus:some-wrong-password-1234';
    await request(`${url}/metrics`, { auth: sent });
    await request(`${url}/metrics`, { auth: `${PASSWORD}:${PASSWORD}` });
    await request(`${url}/metrics`);
    await request(`${url}/metrics`, { auth: `prometheus:${PASSWORD}` });
    expect(logs.count('metrics request refused: missing or wrong basic-auth credentials')).toBe(1);
    expect(logs.text).toContain('"credentials":"wrong"');
    expect(logs.text).toContain('"remote":"127.0.0.1"');
    expect(logs.text).not.toContain(PASSWORD);
    expect(logs.text).not.toContain('some-wrong-password');
    expect(logs.text).not.toContain(Buffer.from(sent).toString('base64'));
    // registered as a secret: any text that ever carries it (an error, a stack) is scrubbed by the logger
    expect(redactText(`oops ${PASSWORD} oops`)).toBe('oops **redacted** oops');
  });

  it('an empty or missing password file stops the start', async () => {
    const empty = new MetricsServer(
      { listen: '127.0.0.1:0', basicAuth: { user: 'u', passwordFile: passwordFile(' \n') } },
      new Registry(),
      fakeHealth,
      createLogger('error', new LogCapture()),
    );
    await expect(empty.start()).rejects.toThrow(/^metrics\.basicAuthPasswordFile: .* is empty/);
    const missing = new MetricsServer(
      { listen: '127.0.0.1:0', basicAuth: { user: 'u', passwordFile: path.join(dir, 'nope') } },
      new Registry(),
      fakeHealth,
      createLogger('error', new LogCapture()),
    );
    await expect(missing.start()).rejects.toThrow(/^metrics\.basicAuthPasswordFile: .* does not exist/);
  });

  it('picks up a changed password without a restart', async () => {
    const file = passwordFile(PASSWORD);
    const { url, logs } = await serve({ basicAuth: { user: 'prometheus', passwordFile: file }, reloadIntervalMs: 50 });
    expect((await request(`${url}/metrics`, { auth: `prometheus:${PASSWORD}` })).status).toBe(200);
    const next = 'a-completely-new-password-5678';
    writeFileSync(`${file}.new`, `${next}\n`);
    renameSync(`${file}.new`, file);
    await logs.waitMsg('metrics endpoint files reloaded');
    expect((await request(`${url}/metrics`, { auth: `prometheus:${PASSWORD}` })).status).toBe(401);
    expect((await request(`${url}/metrics`, { auth: `prometheus:${next}` })).status).toBe(200);
    expect(logs.text).not.toContain(next);
  });
});

describe('checkBasicAuth', () => {
  const header = (s: string): string => `Basic ${Buffer.from(s).toString('base64')}`;
  it.each([
    [header('u:p'), true],
    [header('u:p:with:colons'), false],
    [header('u:'), false],
    [header('u'), false],
    [undefined, false],
    ['', false],
    [`Basic ${Buffer.from('u:p').toString('base64')}  `, true],
  ])('%s → %s', (h, ok) => {
    expect(checkBasicAuth(h, 'u', 'p')).toBe(ok);
  });
  it('splits at the first colon: the password may contain colons', () => {
    expect(checkBasicAuth(header('u:p:with:colons'), 'u', 'p:with:colons')).toBe(true);
  });
});
