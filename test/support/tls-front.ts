// A TLS endpoint in front of a plain-HTTP S3 server, with a certificate from a private CA made by
// openssl: the setting an operator with an internal CA (RKE's custom_ca) has. It also keeps the
// decrypted request heads so a test can see how requests were signed.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createServer, type Server } from 'node:tls';

export interface PrivateCa {
  dir: string;
  caFile: string;
  caPem: string;
  certFile: string;
  keyFile: string;
}

/** A CA and a server certificate for 127.0.0.1 signed by it. */
export function makePrivateCa(): PrivateCa {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'private-ca-'));
  const f = (n: string): string => path.join(dir, n);
  const ssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=etcd-backup test CA', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('server.key'), '-out', f('server.csr'));
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ssl(
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    f('san.ext'),
    '-out',
    f('server.pem'),
  );
  return { dir, caFile: f('ca.pem'), caPem: readFileSync(f('ca.pem'), 'utf8'), certFile: f('server.pem'), keyFile: f('server.key') };
}

export interface TlsFront {
  port: number;
  url: string;
  /** the first bytes of every request seen, decrypted */
  heads: string[];
  /** connections refused because `allowFrom` did not list their source address */
  refused: string[];
  /** source addresses of the connections let through */
  accepted: string[];
  close(): Promise<void>;
}

/**
 * Without a CA: the same front in plain HTTP, to look at how requests are signed there. `allowFrom`: the only
 * source addresses let through (e.g. the address a proxy connects from); others are closed at once.
 */
export async function startTlsFront(
  ca: PrivateCa | undefined,
  target: { host: string; port: number },
  opts: { allowFrom?: readonly string[] } = {},
): Promise<TlsFront> {
  const heads: string[] = [];
  const refused: string[] = [];
  const accepted: string[] = [];
  const gate = (s: Socket): boolean => {
    const from = s.remoteAddress ?? '?';
    if (opts.allowFrom && !opts.allowFrom.includes(from)) {
      refused.push(from);
      s.destroy();
      return false;
    }
    accepted.push(from);
    return true;
  };
  const onClient = (client: Socket): void => {
    if (ca === undefined && !gate(client)) return;
    const upstream = connect(target.port, target.host);
    client.on('data', (d: Buffer) => {
      const text = d.subarray(0, 2048).toString('latin1');
      if (/^[A-Z]+ \S+ HTTP\/1\.1\r\n/.test(text)) heads.push(text.slice(0, text.indexOf('\r\n\r\n') + 1 || undefined));
    });
    client.pipe(upstream).pipe(client);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  };
  const server: Server | NetServer = ca
    ? createServer({ cert: readFileSync(ca.certFile), key: readFileSync(ca.keyFile) }, onClient)
    : createNetServer(onClient);
  // over TLS the gate acts on the TCP connection, before any handshake
  if (ca) server.on('connection', (s: Socket) => void gate(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${ca ? 'https' : 'http'}://127.0.0.1:${port}`,
    heads,
    refused,
    accepted,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
