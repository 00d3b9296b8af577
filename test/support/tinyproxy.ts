// A real forward proxy for tests: tinyproxy from Debian (scripts/install-deps.sh), started in the foreground
// on 127.0.0.1 with its own config, log and pid file in a temp dir (no root, no system dirs needed). Its
// log at level Connect names every request and CONNECT tunnel it carried; `Bind` makes it connect out from
// another loopback address, so a server can tell the proxy's connections from direct ones.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './agent.js';

export interface Tinyproxy {
  port: number;
  /** http://127.0.0.1:PORT, or with user:password@ when started with basicAuth */
  url: string;
  /** the address it connects out from */
  bindAddress: string;
  /** its log so far */
  log(): Promise<string>;
  /** `CONNECT host:port` tunnels and absolute-URI requests it carried, from its log */
  carried(): Promise<string[]>;
  stop(): Promise<void>;
}

export interface TinyproxyOptions {
  basicAuth?: { user: string; password: string };
  /** the source address for its outgoing connections (default 127.0.0.2, still loopback) */
  bindAddress?: string;
}

export async function startTinyproxy(opts: TinyproxyOptions = {}): Promise<Tinyproxy> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tinyproxy-'));
  const port = await freePort();
  const bindAddress = opts.bindAddress ?? '127.0.0.2';
  const logFile = path.join(dir, 'tinyproxy.log');
  const conf = [
    `Port ${port}`,
    'Listen 127.0.0.1',
    `Bind ${bindAddress}`,
    'Timeout 120',
    `LogFile "${logFile}"`,
    'LogLevel Connect',
    `PidFile "${path.join(dir, 'tinyproxy.pid')}"`,
    'MaxClients 64',
    'Allow 127.0.0.1',
    // no ConnectPort line: CONNECT to any port (the test endpoints are on high ports)
    ...(opts.basicAuth ? [`BasicAuth ${opts.basicAuth.user} ${opts.basicAuth.password}`] : []),
  ].join('\n');
  await writeFile(path.join(dir, 'tinyproxy.conf'), `${conf}\n`);
  const child: ChildProcess = spawn('tinyproxy', ['-d', '-c', path.join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  // listening once a connection is accepted
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`tinyproxy did not start on 127.0.0.1:${port}: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const auth = opts.basicAuth ? `${encodeURIComponent(opts.basicAuth.user)}:${encodeURIComponent(opts.basicAuth.password)}@` : '';
  const log = (): Promise<string> => readFile(logFile, 'utf8').catch(() => '');
  return {
    port,
    url: `http://${auth}127.0.0.1:${port}`,
    bindAddress,
    log,
    carried: async () => [...(await log()).matchAll(/Request \(file descriptor \d+\): (CONNECT \S+|[A-Z]+ http:\/\/\S+)/g)].map((m) => m[1]!),
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
