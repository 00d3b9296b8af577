// HTTP endpoints for Prometheus and for liveness/readiness probes.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from './log.js';

export interface Health {
  /** process alive and its event loop turning */
  live(): { ok: boolean; detail: string };
  /** watching the directory and S3 reachable at the last check */
  ready(): { ok: boolean; detail: string };
}

export interface ServerOptions {
  listen: string;
}

export function parseListen(listen: string): { host?: string; port: number } {
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  return { host: host || undefined, port: Number(listen.slice(i + 1)) };
}

export class MetricsServer {
  private server: Server | undefined;

  constructor(
    private readonly opts: ServerOptions,
    private readonly registry: Registry,
    private readonly health: Health,
    private readonly log: Logger,
  ) {}

  async start(): Promise<AddressInfo> {
    const server = createServer((req, res) => void this.handle(req, res));
    this.server = server;
    const { host, port } = parseListen(this.opts.listen);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as AddressInfo;
    this.log.info('serving metrics', { address: `${addr.address}:${addr.port}`, paths: ['/metrics', '/healthz', '/readyz'] });
    return addr;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    try {
      if (path === '/metrics') {
        const body = await this.registry.metrics();
        res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(body);
      } else if (path === '/healthz' || path === '/readyz') {
        const h = path === '/healthz' ? this.health.live() : this.health.ready();
        res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`${h.ok ? 'ok' : 'not ok'}: ${h.detail}\n`);
      } else if (path === '/') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end('<html><body><h1>etcd-backup-agent</h1><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a> <a href="/readyz">/readyz</a></body></html>\n');
      } else {
        res.writeHead(404).end();
      }
    } catch (e) {
      this.log.warn('metrics request failed', { path, error: String(e) });
      if (!res.headersSent) res.writeHead(500).end();
    }
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    s.closeAllConnections();
    await closed;
  }
}
