// Fault-injecting TCP proxy on 127.0.0.1 for tests (e.g. between the agent and RGW).
//
// Modes apply to new AND existing connections, like a network that breaks "now":
//   pass       forward both ways
//   refuse     stop listening (connect → ECONNREFUSED) and reset open connections;
//              back to another mode listens again on the same port
//   blackhole  accept, forward nothing (senders stall once buffers fill); going back to
//              'pass' delivers what was held, like a healed partition
//   reset      RST every open and new connection
import net from 'node:net';

export type ProxyMode = 'pass' | 'refuse' | 'blackhole' | 'reset';

export interface ProxyOptions {
  target: { host: string; port: number };
  /** listen port (default: a free one) */
  port?: number;
  /** reset a connection once it has forwarded this many bytes upstream (see setResetAfterBytes) */
  resetAfterBytes?: number;
}

export interface ProxyStats {
  /** connections accepted (any mode) */
  accepted: number;
  /** connections currently open */
  active: number;
  /** connections this proxy reset (mode 'reset'/'refuse', resetAll, resetAfterBytes) */
  resets: number;
  /** bytes forwarded client → target and target → client */
  bytesUp: number;
  bytesDown: number;
  /** failed connects to the target */
  upstreamErrors: number;
}

export interface TcpProxy {
  readonly port: number;
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly mode: ProxyMode;
  readonly stats: ProxyStats;
  setMode(mode: ProxyMode): Promise<void>;
  /** RST all open connections (mode unchanged) */
  resetAll(): void;
  /**
   * Reset (RST to both sides) each connection after it forwards `bytes` more bytes upstream,
   * counted from now; `times` resets at most, then the rule switches itself off. null: off.
   */
  setResetAfterBytes(bytes: number | null, times?: number): void;
  /** Resolves once `bytes` more bytes have gone upstream, counted from now (to aim a fault mid-transfer). */
  bytesUpReached(bytes: number): Promise<void>;
  close(): Promise<void>;
}

interface Conn {
  client: net.Socket;
  upstream?: net.Socket;
  up: number; // bytes forwarded upstream
  base: number; // `up` when the current resetAfterBytes rule started
  cut: boolean; // resetAfterBytes fired: forward nothing more
  dead: boolean;
}

const HOST = '127.0.0.1';

export async function startProxy(opts: ProxyOptions): Promise<TcpProxy> {
  const conns = new Set<Conn>();
  const stats: ProxyStats = { accepted: 0, active: 0, resets: 0, bytesUp: 0, bytesDown: 0, upstreamErrors: 0 };
  let mode: ProxyMode = 'pass';
  let rule: { bytes: number; left: number } | null = opts.resetAfterBytes === undefined ? null : { bytes: opts.resetAfterBytes, left: Infinity };
  let listening = false;
  const upWaiters: { at: number; resolve: () => void }[] = [];
  const countUp = (n: number): void => {
    stats.bytesUp += n;
    for (const w of [...upWaiters]) {
      if (stats.bytesUp >= w.at) {
        upWaiters.splice(upWaiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };

  const rst = (s: net.Socket | undefined): void => {
    if (!s || s.destroyed) return;
    // resetAndDestroy throws on a socket that is still connecting
    if (s.connecting) s.destroy();
    else s.resetAndDestroy();
  };
  // counted: a reset the proxy chose to make (not one passed on from a socket error)
  const kill = (c: Conn, counted = true): void => {
    if (c.dead) return;
    c.dead = true;
    if (counted) stats.resets++;
    rst(c.client);
    rst(c.upstream);
  };
  const drop = (c: Conn): void => {
    if (conns.delete(c)) stats.active--;
  };

  // (re)apply the mode to one connection's data flow
  const apply = (c: Conn): void => {
    if (c.dead) return;
    if (mode === 'reset' || mode === 'refuse') return kill(c);
    if (c.cut) return;
    if (mode === 'blackhole') {
      c.client.pause(); // unread data stays in kernel buffers: the sender stalls
      c.upstream?.pause();
      return;
    }
    if (!c.upstream) return connectUpstream(c);
    if (!c.upstream.connecting) {
      if (c.upstream.writableNeedDrain === false) c.client.resume();
      if (c.client.writableNeedDrain === false) c.upstream.resume();
    }
  };

  const connectUpstream = (c: Conn): void => {
    // half-open allowed both ways: a client's FIN must not cut the reply short
    const u = net.connect({ host: opts.target.host, port: opts.target.port, allowHalfOpen: true });
    c.upstream = u;
    u.pause();
    let connected = false;
    u.on('connect', () => {
      connected = true;
      apply(c);
    });
    u.on('error', () => {
      if (!connected) stats.upstreamErrors++;
      kill(c, false);
    });
    u.on('data', (d: Buffer) => {
      stats.bytesDown += d.length;
      if (!c.client.write(d)) u.pause();
    });
    // FINs are passed on as FINs; errors become RSTs (kill)
    u.on('end', () => c.client.end());
    u.on('drain', () => mode === 'pass' && !c.cut && c.client.resume());
    c.client.on('drain', () => mode === 'pass' && u.resume());
  };

  const onClient = (c: Conn) => (d: Buffer) => {
    const u = c.upstream!;
    if (c.cut) return;
    if (rule && c.up - c.base + d.length >= rule.bytes) {
      const part = d.subarray(0, Math.max(0, rule.bytes - (c.up - c.base)));
      c.up += part.length;
      countUp(part.length);
      if (--rule.left <= 0) rule = null;
      c.cut = true;
      c.client.pause();
      // RST once the last allowed bytes left (a RST discards unsent data)
      if (part.length > 0) u.write(part, () => kill(c));
      else kill(c);
      return;
    }
    c.up += d.length;
    countUp(d.length);
    if (!u.write(d)) c.client.pause();
  };

  // paused until the mode says what to do with the bytes
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (client) => {
    stats.accepted++;
    stats.active++;
    const c: Conn = { client, up: 0, base: 0, cut: false, dead: false };
    conns.add(c);
    client.on('error', () => kill(c, false));
    client.on('close', () => drop(c));
    client.on('end', () => c.upstream?.end());
    client.on('data', onClient(c));
    apply(c);
  });

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      server.once('error', onError);
      server.listen({ host: HOST, port }, () => {
        server.off('error', onError);
        listening = true;
        resolve();
      });
    });
  const unlisten = (): Promise<void> =>
    new Promise((resolve) => {
      if (!listening) return resolve();
      listening = false;
      // the callback waits for open connections, which the caller resets first
      server.close(() => resolve());
    });

  await listen(opts.port ?? 0);
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    url: `http://${HOST}:${port}`,
    get mode() {
      return mode;
    },
    stats,
    async setMode(next: ProxyMode) {
      mode = next;
      for (const c of conns) apply(c);
      if (next === 'refuse') await unlisten();
      else if (!listening) await listen(port);
    },
    resetAll() {
      for (const c of conns) kill(c);
    },
    setResetAfterBytes(bytes: number | null, times = Infinity) {
      rule = bytes === null ? null : { bytes, left: times };
      for (const c of conns) c.base = c.up;
    },
    bytesUpReached(bytes: number) {
      return new Promise<void>((resolve) => {
        upWaiters.push({ at: stats.bytesUp + bytes, resolve });
        countUp(0);
      });
    },
    async close() {
      mode = 'reset';
      for (const c of conns) kill(c);
      await unlisten();
    },
  };
}
