// The S3 client's sockets through an HTTP(S) proxy: https-proxy-agent (CONNECT, then TLS to the endpoint
// inside the tunnel) for https endpoints, http-proxy-agent (absolute-URI requests) for http ones. Around
// them, what an operator needs when the proxy is the problem: every failure names the proxy (never its
// credentials), a proxy that does not answer fails within the connect timeout, and an answer from the proxy
// itself (407, 403, 502…) is not mistaken for one from S3.
import type { ClientRequest } from 'node:http';
import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { AgentConnectOpts } from 'agent-base';
import debug from 'debug';
import { HttpProxyAgent } from 'http-proxy-agent';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { AgentError, type FailureReason } from '../base/errors.js';
import { registerSecret } from '../base/secret.js';
import { proxyCredentialForms, safeDecode, shownProxy, type ProxyChoice } from './proxy-env.js';

/** A failure at the proxy, before S3 was reached. Keeps the socket error's code so the SDK retries it. */
export class ProxyError extends AgentError {
  override name = 'ProxyError';
  constructor(
    reason: FailureReason,
    message: string,
    readonly proxy: string,
    readonly code?: string,
    /** the proxy's HTTP status, when it answered */
    readonly status?: number,
  ) {
    super(reason, message);
    // 5xx from the proxy (it could not reach S3) is as transient for the SDK's retry as a 5xx from S3
    if (status !== undefined && status >= 500) Object.assign(this, { $metadata: { httpStatusCode: status } });
  }
}

/** What the proxy's own answer means for the agent. */
export function proxyAnswer(status: number, text = ''): { reason: FailureReason; meaning: string } {
  const said = `${status}${text ? ` ${text}` : ''}`;
  // tinyproxy answers wrong credentials with 401 rather than 407
  if (status === 407 || status === 401)
    return {
      reason: 'auth',
      meaning: `the proxy wants credentials, or refused the ones given (${said}); put them in the proxy URL: http://user:password@host:port`,
    };
  if (status === 403) return { reason: 'network', meaning: `the proxy does not allow this destination (${said}); ask for the S3 endpoint to be allowed` };
  if (status >= 500) return { reason: 'network', meaning: `the proxy could not reach the S3 endpoint (${said})` };
  return { reason: 'refused', meaning: `the proxy answered ${said}` };
}

export interface ProxyAgentOptions {
  keepAlive: boolean;
  maxSockets: number;
  /** trust for the endpoint's TLS, and for the proxy's when it is https:// */
  ca?: string[];
  /** TCP connect + CONNECT answer, in ms */
  connectTimeoutMs: number;
}

type Connect = (req: ClientRequest, opts: AgentConnectOpts) => Promise<unknown>;

/** Runs the library's connect with a deadline and turns whatever fails there into a ProxyError. */
async function guarded(connect: Connect, req: ClientRequest, opts: AgentConnectOpts, proxy: string, timeoutMs: number): Promise<unknown> {
  const target = `${opts.host}:${opts.port}`;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ProxyError(
            'timeout',
            `the proxy ${proxy} did not connect to ${target} within ${timeoutMs} ms; check that it is up and reachable (s3.proxy, HTTPS_PROXY/HTTP_PROXY, NO_PROXY)`,
            proxy,
            'ETIMEDOUT',
          ),
        ),
      timeoutMs,
    );
  });
  try {
    return await Promise.race([connect(req, opts), deadline]);
  } catch (err) {
    if (err instanceof ProxyError) throw err;
    const e = err as NodeJS.ErrnoException;
    const code = e.code ?? (/ended before/i.test(e.message ?? '') ? 'ECONNRESET' : undefined);
    // the library's message may quote the proxy URL; the code says it all
    throw new ProxyError(
      'network',
      `S3 unreachable through the proxy ${proxy} (${code ?? 'connection failed'} talking to the proxy, for ${target}); check that the proxy is up and reachable (s3.proxy, HTTPS_PROXY/HTTP_PROXY, NO_PROXY)`,
      proxy,
      code ?? 'ECONNRESET',
    );
  } finally {
    clearTimeout(timer);
  }
}

/** CONNECT tunnels for https endpoints; a refused CONNECT fails the request instead of reaching the SDK. */
class TunnelAgent extends HttpsProxyAgent<string> {
  constructor(
    url: URL,
    auth: Record<string, string>,
    private readonly shown: string,
    private readonly o: ProxyAgentOptions,
  ) {
    super(url.href, { headers: auth, keepAlive: o.keepAlive, maxSockets: o.maxSockets, ...(o.ca ? { ca: o.ca } : {}) });
  }

  override async connect(req: ClientRequest, opts: AgentConnectOpts): Promise<never> {
    let answer: { statusCode: number; statusText?: string } | undefined;
    const seen = (connect: { statusCode: number; statusText?: string }, r: ClientRequest): void => {
      if (r === req) answer = connect;
    };
    this.on('proxyConnect', seen);
    // The endpoint's TLS inside the tunnel gets the same trust as without a proxy. The library drops `host`
    // from the TLS options and sets no servername for an IP address, so Node would check the certificate
    // against "localhost": an endpoint addressed by IP is checked against that IP instead.
    const ip = opts.host && isIP(opts.host) ? opts.host : undefined;
    const withCa = opts.secureEndpoint
      ? {
          ...opts,
          ...(this.o.ca ? { ca: this.o.ca } : {}),
          ...(ip ? { checkServerIdentity: (_: string, cert: PeerCertificate) => checkServerIdentity(ip, cert) } : {}),
        }
      : opts;
    try {
      const socket = await guarded((r, op) => super.connect(r, op), req, withCa, this.shown, this.o.connectTimeoutMs);
      if (answer && answer.statusCode !== 200) {
        (socket as { destroy?: () => void }).destroy?.();
        const { reason, meaning } = proxyAnswer(answer.statusCode, answer.statusText);
        throw new ProxyError(
          reason,
          `the proxy ${this.shown} refused the tunnel to ${opts.host}:${opts.port}: ${meaning}`,
          this.shown,
          undefined,
          answer.statusCode,
        );
      }
      return socket as never;
    } finally {
      this.off('proxyConnect', seen);
    }
  }
}

/** Absolute-URI requests for http endpoints. */
class ForwardAgent extends HttpProxyAgent<string> {
  constructor(
    url: URL,
    auth: Record<string, string>,
    private readonly shown: string,
    private readonly o: ProxyAgentOptions,
  ) {
    super(url.href, { headers: auth, keepAlive: o.keepAlive, maxSockets: o.maxSockets, ...(o.ca ? { ca: o.ca } : {}) });
  }

  override async connect(req: ClientRequest, opts: AgentConnectOpts): Promise<never> {
    return (await guarded(
      (r, op) => super.connect(r as Parameters<HttpProxyAgent<string>['connect']>[0], op),
      req,
      opts,
      this.shown,
      this.o.connectTimeoutMs,
    )) as never;
  }
}

export interface ProxyAgents {
  httpAgent: HttpProxyAgent<string>;
  httpsAgent: HttpsProxyAgent<string>;
  /** the proxy as it may be printed */
  shown: string;
}

/** Agents for both schemes through one proxy. Registers the proxy's credentials as secrets first. */
export function proxyAgents(choice: ProxyChoice, o: ProxyAgentOptions): ProxyAgents {
  for (const form of proxyCredentialForms(choice.url)) registerSecret(form);
  // The libraries get the proxy without its credentials, and the Proxy-Authorization header apart: then no
  // message of theirs can quote the password. Their DEBUG output prints the request heads, that header
  // included, straight to stderr where the log's redaction cannot reach: it stays off whatever DEBUG says.
  const bare = new URL(choice.url.href);
  bare.username = '';
  bare.password = '';
  const auth: Record<string, string> = {};
  if (choice.url.username || choice.url.password) {
    const pair = `${safeDecode(choice.url.username)}:${safeDecode(choice.url.password)}`;
    auth['Proxy-Authorization'] = `Basic ${Buffer.from(pair).toString('base64')}`;
  }
  const on = debug.disable();
  debug.enable([on, '-https-proxy-agent*', '-http-proxy-agent*', '-agent-base*', '-proxy-agent*'].filter(Boolean).join(','));
  const shown = `${shownProxy(choice.url)} (from ${choice.source})`;
  return { httpAgent: new ForwardAgent(bare, auth, shown, o), httpsAgent: new TunnelAgent(bare, auth, shown, o), shown };
}

/**
 * For http endpoints the proxy answers in place of S3: 407 (401), or 5xx when it cannot reach the endpoint. S3
 * servers put x-amz-request-id on every answer, errors included, so only an answer without one can be the
 * proxy's; and since a load balancer in front of S3 answers 502 without one too, a 403 or 5xx counts as the
 * proxy's only when the answer names a proxy (Via, Server: squid/tinyproxy, X-Squid-Error); so does a 401 (tinyproxy's answer to
 * wrong credentials).
 */
export function proxyOwnAnswer(
  res: { statusCode: number; reason?: string; headers: Record<string, string | string[] | undefined> },
  shown: string,
): ProxyError | undefined {
  const status = res.statusCode;
  if (!(status === 407 || status === 401 || status === 403 || status >= 500) || res.headers['x-amz-request-id'] !== undefined) return undefined;
  if (status !== 407) {
    const server = String(res.headers['server'] ?? '');
    const named = res.headers['via'] !== undefined || res.headers['x-squid-error'] !== undefined || /proxy|squid/i.test(server);
    if (!named) return undefined;
  }
  const { reason, meaning } = proxyAnswer(status, res.reason);
  return new ProxyError(reason, `the proxy ${shown} answered instead of S3: ${meaning}`, shown, undefined, status);
}
