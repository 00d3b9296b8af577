// Which proxy, if any, carries the requests to the S3 endpoint: `s3.proxy` from the config, else the
// environment read the way curl reads it (and Go, where the two agree). Pure: no sockets here.
//  - https endpoints: https_proxy, HTTPS_PROXY; http endpoints: http_proxy, HTTP_PROXY; then all_proxy,
//    ALL_PROXY. The lowercase name wins when both are set (curl's order).
//  - NO_PROXY / no_proxy (lowercase wins): a comma (or blank) separated list. `*` alone: no proxy for
//    anything. A name matches itself and every name below it, with or without a leading dot (`.example.com`
//    and `example.com` both match `example.com` and `s3.example.com`, not `notexample.com`); `*.example.com`
//    is read as `.example.com` (Go). An IP address matches itself, or its network in CIDR form (`10.0.0.0/8`,
//    `fd00::/8`). An entry with a port (`host:9000`, `[::1]:9000`) only matches that port (Go; curl has no
//    ports there). Names compare without case and without a trailing dot.
//  - Loopback is not special: curl proxies 127.0.0.1 unless NO_PROXY says otherwise (Go never does).
//  - A proxy written without a scheme is http:// (curl's default).
// `s3.proxy` wins over all of these, NO_PROXY included: the config names the one endpoint it is for.
import { isIP } from 'node:net';

export interface ProxyChoice {
  /** the proxy's URL, credentials included (never print it: use `shownProxy`) */
  url: URL;
  /** where it came from: `s3.proxy`, or the environment variable's name */
  source: string;
}

export type ProxyDecision = { proxy: ProxyChoice } | { direct: string };

const lookup = (env: NodeJS.ProcessEnv, names: readonly string[]): { name: string; value: string } | undefined => {
  for (const name of names) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
};

/** Parses a proxy URL as curl would take it; throws a message without the credentials when it is not one. */
export function parseProxyUrl(value: string, source: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new Error(`${source} is not a proxy URL (${shownProxyText(value)}); write it as http://[user:password@]host:port`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`${source} uses ${url.protocol.slice(0, -1)}, which the agent does not speak; use an http:// or https:// proxy`);
  }
  if (!url.hostname) throw new Error(`${source} names no host (${shownProxyText(value)})`);
  return url;
}

/** The proxy to use for this endpoint, or why none is used. Throws when the chosen proxy URL is unusable. */
export function chooseProxy(endpoint: URL, configured: string | undefined, env: NodeJS.ProcessEnv): ProxyDecision {
  if (configured) return { proxy: { url: parseProxyUrl(configured, 's3.proxy'), source: 's3.proxy' } };
  const https = endpoint.protocol === 'https:';
  const found = lookup(env, https ? ['https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'] : ['http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY']);
  if (!found) return { direct: 'no proxy configured' };
  const no = lookup(env, ['no_proxy', 'NO_PROXY']);
  if (no) {
    const port = Number(endpoint.port) || (https ? 443 : 80);
    const hit = noProxyMatch(endpoint.hostname, port, no.value);
    if (hit) return { direct: `${no.name} lists ${hit}` };
  }
  return { proxy: { url: parseProxyUrl(found.value, found.name), source: found.name } };
}

/** The NO_PROXY entry that exempts host:port, or undefined. */
export function noProxyMatch(hostname: string, port: number, list: string): string | undefined {
  const host = unbracket(hostname).toLowerCase().replace(/\.$/, '');
  const entries = list.split(/[\s,]+/).filter(Boolean);
  if (entries.length === 1 && entries[0] === '*') return '*';
  const hostIp = isIP(host);
  for (const entry of entries) {
    const { name, port: entryPort } = splitPort(entry.toLowerCase());
    if (entryPort !== undefined && entryPort !== port) continue;
    if (hostIp) {
      if (ipMatches(host, hostIp, name)) return entry;
      continue;
    }
    let pattern = name.replace(/\.$/, '');
    if (pattern.startsWith('*.')) pattern = pattern.slice(1);
    if (pattern.startsWith('.')) pattern = pattern.slice(1);
    if (!pattern || isIP(pattern)) continue;
    if (host === pattern || host.endsWith(`.${pattern}`)) return entry;
  }
  return undefined;
}

const unbracket = (h: string): string => (h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h);

/** `host:port`, `[v6]:port`, a bare v6 address (its colons are not a port), or a name. */
function splitPort(entry: string): { name: string; port?: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  if (v6) return { name: v6[1]!, ...(v6[2] ? { port: Number(v6[2]) } : {}) };
  const m = /^([^:]+):(\d+)$/.exec(entry);
  if (m) return { name: m[1]!, port: Number(m[2]) };
  return { name: entry };
}

function ipMatches(host: string, family: number, entry: string): boolean {
  const slash = entry.indexOf('/');
  const net = slash < 0 ? entry : entry.slice(0, slash);
  if (isIP(net) !== family) return false;
  const width = family === 4 ? 32 : 128;
  const bits = slash < 0 ? width : Number(entry.slice(slash + 1));
  if (!Number.isInteger(bits) || bits < 0 || bits > width) return false;
  const a = ipBits(host, family);
  const b = ipBits(net, family);
  const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(width - bits);
  return (a & mask) === (b & mask);
}

function ipBits(ip: string, family: number): bigint {
  if (family === 4) return ip.split('.').reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n);
  // expand `::`, and a trailing dotted quad (::ffff:1.2.3.4)
  let text = ip;
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const v4 = ipBits(quad[1]!, 4);
    text = `${text.slice(0, -quad[1]!.length)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

/** The proxy as it may be printed: scheme, host and port, credentials left out. */
export function shownProxy(url: URL): string {
  return `${url.protocol}//${url.host}${url.username || url.password ? ' (with credentials)' : ''}`;
}

/** A proxy value that did not parse, printed without whatever stood before an `@`. */
function shownProxyText(value: string): string {
  const at = value.lastIndexOf('@');
  if (at < 0) return value;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(value)?.[0] ?? '';
  return `${scheme}…@${value.slice(at + 1)}`;
}

/** Every form in which a proxy's credentials could show up in text: the agent registers them as secrets. */
export function proxyCredentialForms(url: URL): string[] {
  if (!url.username && !url.password) return [];
  const user = safeDecode(url.username);
  const pass = safeDecode(url.password);
  const pair = `${user}:${pass}`;
  return [...new Set([url.password, pass, `${url.username}:${url.password}`, pair, Buffer.from(pair).toString('base64'), url.href])].filter(Boolean);
}

export const safeDecode = (s: string): string => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

/** One line for logs and check-config: the proxy S3 requests go through, or why they go direct. */
export function describeProxy(d: ProxyDecision): string {
  return 'proxy' in d ? `${shownProxy(d.proxy.url)} (from ${d.proxy.source})` : `none (${d.direct})`;
}
