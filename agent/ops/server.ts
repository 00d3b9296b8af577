// HTTP endpoints for Prometheus and for liveness/readiness probes. The agent runs on every etcd host,
// often on a shared network, so the endpoint can be served over TLS and behind basic auth (the same
// choices as exporter-toolkit's web config: every path is protected, files are re-read when they change).
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { Registry } from 'prom-client';
import { jsonSafe } from '../base/text.js';
import type { Config } from '../config/keys.js';
import type { StatusDoc } from './status.js';
import type { Logger } from './log.js';
import { Secret } from '../base/secret.js';

export interface Health {
  /** process alive and its event loop turning */
  live(): { ok: boolean; detail: string };
  /** watching the directory and S3 reachable at the last check */
  ready(): { ok: boolean; detail: string };
  /** `status` as JSON (behind the same TLS and basic auth as /metrics) */
  status?(): Promise<StatusDoc>;
}

export interface ServerOptions {
  listen: string;
  tls?: { certFile: string; keyFile: string };
  basicAuth?: { user: string; passwordFile: string };
  /** how often changed certificate, key and password files are picked up */
  reloadIntervalMs?: number;
}

export const REALM = 'etcd-backup-agent';
const DEFAULT_RELOAD_MS = 60_000;
// one line per minute is enough to notice a misconfigured scraper without flooding the journal
const REJECT_LOG_INTERVAL_MS = 60_000;

export function parseListen(listen: string): { host?: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host: host || undefined, port: Number(listen.slice(i + 1)) };
}

/** The server options a config asks for (config.ts has already checked the keys come in pairs). */
export function serverOptions(m: Config['metrics']): ServerOptions {
  return {
    listen: m.listen,
    tls: m.tlsCertFile && m.tlsKeyFile ? { certFile: m.tlsCertFile, keyFile: m.tlsKeyFile } : undefined,
    basicAuth: m.basicAuthUser && m.basicAuthPasswordFile ? { user: m.basicAuthUser, passwordFile: m.basicAuthPasswordFile } : undefined,
  };
}

/** Problems with the endpoint's own files: the message names the config key and the fix. */
export class ServerSetupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ServerSetupError';
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/**
 * True if the Authorization header carries exactly this user and password. Both are compared as
 * SHA-256 digests, so the comparison takes the same time whatever the input's length or content.
 */
export function checkBasicAuth(header: string | undefined, user: string, password: string): boolean {
  const m = /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header ?? '');
  const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
  const i = decoded.indexOf(':');
  const gotUser = i < 0 ? '' : decoded.slice(0, i);
  const gotPassword = i < 0 ? '' : decoded.slice(i + 1);
  const userOk = timingSafeEqual(digest(gotUser), digest(user));
  const passwordOk = timingSafeEqual(digest(gotPassword), digest(password));
  return i >= 0 && userOk && passwordOk;
}

async function readSetupFile(key: string, path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    const problem = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not readable by the agent' : `cannot be read (${code})`;
    throw new ServerSetupError(`${key}: ${path} ${problem}; point it at ${what}`);
  }
}

async function readPassword(path: string): Promise<Secret> {
  // Prometheus trims the same way when it reads its password_file, so one file can serve both sides.
  const pw = (await readSetupFile('metrics.basicAuthPasswordFile', path, 'a file holding the password')).toString('utf8').trim();
  if (!pw) throw new ServerSetupError(`metrics.basicAuthPasswordFile: ${path} is empty; write the password into it`);
  return new Secret(pw);
}

async function readTls(tls: { certFile: string; keyFile: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const cert = await readSetupFile('metrics.tlsCertFile', tls.certFile, 'a PEM certificate (chain)');
  const key = await readSetupFile('metrics.tlsKeyFile', tls.keyFile, 'the PEM private key of metrics.tlsCertFile');
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new ServerSetupError(
      `metrics.tlsCertFile/metrics.tlsKeyFile: ${tls.certFile} and ${tls.keyFile} are not a usable PEM certificate and matching key (${(e as Error).message})`,
    );
  }
  return { cert, key };
}

async function fileStamp(paths: string[]): Promise<string> {
  const parts = await Promise.all(
    paths.map((p) =>
      stat(p).then(
        (s) => `${s.ino}:${s.size}:${s.mtimeMs}`,
        () => 'missing',
      ),
    ),
  );
  return parts.join('|');
}

export class MetricsServer {
  private server: Server | HttpsServer | undefined;
  private password: Secret | undefined;
  private stamp = '';
  private reloadTimer: NodeJS.Timeout | undefined;
  private lastRejectLog = 0;

  constructor(
    private readonly opts: ServerOptions,
    private readonly registry: Registry,
    private readonly health: Health,
    private readonly log: Logger,
  ) {}

  get scheme(): 'http' | 'https' {
    return this.opts.tls ? 'https' : 'http';
  }

  async start(): Promise<AddressInfo> {
    const { tls, basicAuth } = this.opts;
    if (basicAuth) this.password = await readPassword(basicAuth.passwordFile);
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.handle(req, res);
    const server = tls ? createHttpsServer(await readTls(tls), handler) : createHttpServer(handler);
    // a slow or stuck client must not hold a connection on an etcd host for minutes
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    this.server = server;
    this.stamp = await fileStamp(this.watchedFiles());
    const { host, port } = parseListen(this.opts.listen);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    if (this.watchedFiles().length) {
      this.reloadTimer = setInterval(() => void this.reload(), this.opts.reloadIntervalMs ?? DEFAULT_RELOAD_MS);
      this.reloadTimer.unref();
    }
    const addr = server.address() as AddressInfo;
    this.log.info('serving metrics', {
      address: `${addr.address}:${addr.port}`,
      scheme: this.scheme,
      basicAuth: Boolean(basicAuth),
      paths: ['/metrics', '/healthz', '/readyz', ...(this.health.status ? ['/status'] : [])],
    });
    return addr;
  }

  private watchedFiles(): string[] {
    const { tls, basicAuth } = this.opts;
    return [...(tls ? [tls.certFile, tls.keyFile] : []), ...(basicAuth ? [basicAuth.passwordFile] : [])];
  }

  /** Certificates and passwords rotate; a changed file is picked up without a restart. A bad one is refused. */
  private async reload(): Promise<void> {
    const stamp = await fileStamp(this.watchedFiles());
    if (stamp === this.stamp) return;
    this.stamp = stamp;
    const { tls, basicAuth } = this.opts;
    try {
      if (tls && this.server && 'setSecureContext' in this.server) {
        this.server.setSecureContext(await readTls(tls));
      }
      if (basicAuth) this.password = await readPassword(basicAuth.passwordFile);
      this.log.info('metrics endpoint files reloaded', { files: this.watchedFiles() });
    } catch (e) {
      // keep serving with what worked; the next change is tried again
      this.log.error('metrics endpoint files changed but cannot be used; keeping the previous ones', { error: (e as Error).message });
    }
  }

  private authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const auth = this.opts.basicAuth;
    if (!auth || checkBasicAuth(req.headers.authorization, auth.user, this.password!.reveal())) return true;
    res.writeHead(401, { 'WWW-Authenticate': `Basic realm="${REALM}", charset="UTF-8"`, 'Content-Type': 'text/plain; charset=utf-8' }).end('unauthorized\n');
    const now = Date.now();
    if (now - this.lastRejectLog >= REJECT_LOG_INTERVAL_MS) {
      this.lastRejectLog = now;
      // neither the user nor the password sent: a client that swapped them would put the password in the log
      this.log.warn('metrics request refused: missing or wrong basic-auth credentials', {
        remote: req.socket.remoteAddress,
        credentials: req.headers.authorization ? 'wrong' : 'missing',
        fix: 'give the scraper metrics.basicAuthUser and the password in metrics.basicAuthPasswordFile (Prometheus: basic_auth)',
      });
    }
    return false;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    if (!this.authorized(req, res)) return;
    try {
      if (path === '/metrics') {
        const body = await this.registry.metrics();
        res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(body);
      } else if (path === '/healthz' || path === '/readyz') {
        const h = path === '/healthz' ? this.health.live() : this.health.ready();
        res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${h.ok ? 'ok' : 'not ok'}: ${h.detail}\n`);
      } else if (path === '/status' && this.health.status) {
        res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8' }).end(`${jsonSafe(JSON.stringify(await this.health.status()))}\n`);
      } else if (path === '/') {
        res
          .writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' })
          .end(
            '<html><body><h1>etcd-backup-agent</h1><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a> <a href="/readyz">/readyz</a></body></html>\n',
          );
      } else {
        res.writeHead(404).end();
      }
    } catch (e) {
      this.log.warn('metrics request failed', { path, error: String(e) });
      if (!res.headersSent) res.writeHead(500).end();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.reloadTimer);
    const s = this.server;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    s.closeAllConnections();
    await closed;
  }
}
