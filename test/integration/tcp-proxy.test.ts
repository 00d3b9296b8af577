// The fault-injecting proxy against a local echo server (no S3 needed).
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type TcpProxy } from '../support/tcp-proxy.js';

let echo: net.Server;
let echoPort: number;
let upstreamConns = 0;
let upstreamBytes = 0;
const upstreamClosed: Promise<void>[] = [];

beforeAll(async () => {
  echo = net.createServer((s) => {
    upstreamConns++;
    upstreamClosed.push(new Promise((r) => s.once('close', () => r())));
    s.on('data', (d) => (upstreamBytes += d.length));
    s.on('error', () => {});
    s.pipe(s);
  });
  echo.listen(0, '127.0.0.1');
  await once(echo, 'listening');
  echoPort = (echo.address() as net.AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => echo.close(() => r())));

let proxy: TcpProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

const start = async (extra: { resetAfterBytes?: number } = {}): Promise<TcpProxy> => {
  upstreamConns = 0;
  upstreamBytes = 0;
  proxy = await startProxy({ target: { host: '127.0.0.1', port: echoPort }, ...extra });
  return proxy;
};

const connect = async (port: number): Promise<net.Socket> => {
  const s = net.connect(port, '127.0.0.1');
  await once(s, 'connect');
  return s;
};

/** resolves with the first n echoed bytes */
const read = (s: net.Socket, n: number): Promise<Buffer> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (d: Buffer): void => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        s.off('data', onData);
        s.off('error', reject);
        resolve(Buffer.concat(chunks).subarray(0, n));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });

/** resolves with the error code that ends the socket (e.g. ECONNRESET) */
const failure = (s: net.Socket): Promise<string> =>
  new Promise((resolve) => {
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.once('close', () => resolve('closed'));
  });

const connectError = (port: number): Promise<string> =>
  new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => reject(new Error('connected')));
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });

describe('tcp proxy', () => {
  it('passes bytes both ways and counts them', async () => {
    const p = await start();
    expect(p.url).toBe(`http://127.0.0.1:${p.port}`);
    const s = await connect(p.port);
    const msg = Buffer.alloc(256 * 1024, 'x');
    s.write(msg);
    expect((await read(s, msg.length)).equals(msg)).toBe(true);
    expect(p.stats).toMatchObject({ accepted: 1, active: 1, bytesUp: msg.length, bytesDown: msg.length, resets: 0 });
    s.end();
    await once(s, 'close');
  });

  it('refuse: connections refused, open ones reset, same port listens again', async () => {
    const p = await start();
    const open = await connect(p.port);
    const openFails = failure(open);
    await p.setMode('refuse');
    expect(await openFails).toBe('ECONNRESET');
    expect(await connectError(p.port)).toBe('ECONNREFUSED');

    await p.setMode('pass');
    const s = await connect(p.port);
    s.write('again');
    expect((await read(s, 5)).toString()).toBe('again');
    s.destroy();
  });

  it('blackhole: accepts but forwards nothing until back to pass', async () => {
    const p = await start();
    await p.setMode('blackhole');
    const s = await connect(p.port);
    await new Promise<void>((r) => s.write('held', () => r()));
    expect(p.stats.accepted).toBe(1);
    expect(upstreamConns).toBe(0); // nothing reached the target
    expect(p.stats.bytesUp).toBe(0);

    await p.setMode('pass'); // a healed partition delivers what was held
    expect((await read(s, 4)).toString()).toBe('held');
    s.destroy();
  });

  it('blackhole stalls an open connection too', async () => {
    const p = await start();
    const s = await connect(p.port);
    s.write('a');
    await read(s, 1);
    await p.setMode('blackhole');
    const echoed = read(s, 1);
    await new Promise<void>((r) => s.write('b', () => r()));
    expect(p.stats.bytesUp).toBe(1);
    await p.setMode('pass');
    expect((await echoed).toString()).toBe('b');
    s.destroy();
  });

  it('reset: RSTs open and new connections', async () => {
    const p = await start();
    const open = await connect(p.port);
    open.write('x');
    await read(open, 1);
    const openFails = failure(open);
    await p.setMode('reset');
    expect(await openFails).toBe('ECONNRESET');

    const s = net.connect(p.port, '127.0.0.1');
    expect(await failure(s)).toBe('ECONNRESET');
    expect(p.stats.resets).toBe(2);
  });

  it('resetAll: RSTs open connections, keeps the mode', async () => {
    const p = await start();
    const a = await connect(p.port);
    const b = await connect(p.port);
    a.write('1');
    b.write('2');
    await Promise.all([read(a, 1), read(b, 1)]);
    const fails = Promise.all([failure(a), failure(b)]);
    p.resetAll();
    expect(await fails).toEqual(['ECONNRESET', 'ECONNRESET']);
    const c = await connect(p.port);
    c.write('3');
    expect((await read(c, 1)).toString()).toBe('3');
    c.destroy();
  });

  it('resets a connection after N bytes upstream, N counted from when the rule is set', async () => {
    const p = await start();
    const s = await connect(p.port);
    s.write(Buffer.alloc(1000));
    await read(s, 1000); // 1000 bytes before the rule: not counted
    p.setResetAfterBytes(10_000, 1);
    const fails = failure(s);
    s.write(Buffer.alloc(100_000));
    expect(await fails).toBe('ECONNRESET');
    await upstreamClosed.at(-1);
    expect(p.stats.bytesUp).toBe(11_000);
    expect(upstreamBytes).toBeLessThanOrEqual(11_000);
    expect(p.stats.resets).toBe(1);

    // times = 1: the rule is spent, the next connection passes
    const t = await connect(p.port);
    const big = Buffer.alloc(50_000, 'y');
    t.write(big);
    expect((await read(t, big.length)).equals(big)).toBe(true);
    t.destroy();
  });

  it('resetAfterBytes option applies to every new connection', async () => {
    const p = await start({ resetAfterBytes: 100 });
    for (let i = 0; i < 2; i++) {
      const s = await connect(p.port);
      const fails = failure(s);
      s.write(Buffer.alloc(1000));
      expect(await fails).toBe('ECONNRESET');
    }
    expect(p.stats.resets).toBe(2);
  });

  it('closes cleanly with connections open', async () => {
    const p = await start();
    const s = await connect(p.port);
    const fails = failure(s);
    await p.close();
    proxy = undefined;
    expect(await fails).toBe('ECONNRESET');
    expect(await connectError(p.port)).toBe('ECONNREFUSED');
  });
});
