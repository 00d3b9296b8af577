// HTTP-level fault proxy on 127.0.0.1 for tests: forwards S3 requests to a target (RGW) and answers
// chosen ones with a real S3 error instead, e.g. `503 SlowDown` bursts on UploadPart.
//
// The Host header is forwarded unchanged: SigV4 signs it, and RGW (path-style) accepts any host.
// `Expect: 100-continue` is answered here (Node does it) and not forwarded: SigV4 never signs it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** S3 operations told apart by method and query, enough to aim a fault. */
export type S3Op =
  | 'CreateMultipartUpload'
  | 'UploadPart'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'ListMultipartUploads'
  | 'PutObject'
  | 'GetObject'
  | 'HeadObject'
  | 'HeadBucket'
  | 'ListObjects'
  | 'DeleteObject'
  | 'Other';

export function s3Op(method: string, url: string): S3Op {
  const u = new URL(url, 'http://x');
  const q = u.searchParams;
  const segments = u.pathname.split('/').filter(Boolean);
  const onBucket = segments.length <= 1;
  switch (method) {
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      return 'Other';
    case 'PUT':
      if (q.has('uploadId') && q.has('partNumber')) return 'UploadPart';
      return onBucket ? 'Other' : 'PutObject';
    case 'DELETE':
      return q.has('uploadId') ? 'AbortMultipartUpload' : onBucket ? 'Other' : 'DeleteObject';
    case 'HEAD':
      return onBucket ? 'HeadBucket' : 'HeadObject';
    case 'GET':
      if (onBucket) return q.has('uploads') ? 'ListMultipartUploads' : 'ListObjects';
      return 'GetObject';
    default:
      return 'Other';
  }
}

export interface S3ErrorReply {
  status: number;
  code: string;
  message: string;
}

export const SLOW_DOWN: S3ErrorReply = { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' };

export interface HttpFaultStats {
  /** requests seen, by operation */
  seen: Partial<Record<S3Op, number>>;
  /** requests answered with an injected error, by operation */
  injected: Partial<Record<S3Op, number>>;
  /** requests forwarded to the target */
  forwarded: number;
}

export interface HttpFaultProxy {
  readonly port: number;
  /** http://127.0.0.1:PORT */
  readonly url: string;
  readonly stats: HttpFaultStats;
  /** Answer the next `count` requests of `op` with `reply` (default 503 SlowDown) instead of forwarding them. */
  failNext(op: S3Op, count: number, reply?: S3ErrorReply): void;
  /**
   * Answer the next `count` requests of `op` with `reply` as soon as their headers arrive, without reading
   * the body, and close the connection: what Swift does over its part limit, or any server refusing early.
   */
  rejectEarlyNext(op: S3Op, count: number, reply: S3ErrorReply): void;
  /** Forward the next `count` requests of `op` with one byte of the body flipped: damage in transit. */
  flipNext(op: S3Op, count: number): void;
  /** Requests of `op` still to be failed. */
  pending(op: S3Op): number;
  /** Forget every planned failure: S3 is healthy again. */
  heal(): void;
  /** Resolves once `count` requests of `op` have been answered with an injected error (counted from the start). */
  injectedReached(op: S3Op, count: number): Promise<void>;
  close(): Promise<void>;
}

export async function startHttpFaultProxy(opts: { target: string; port?: number }): Promise<HttpFaultProxy> {
  const target = new URL(opts.target);
  const upstreamAgent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const stats: HttpFaultStats = { seen: {}, injected: {}, forwarded: 0 };
  const plans = new Map<S3Op, { left: number; reply: S3ErrorReply }[]>();
  const early = new Map<S3Op, { left: number; reply: S3ErrorReply }[]>();
  const flips = new Map<S3Op, number>();
  const waiters: { op: S3Op; count: number; resolve: () => void }[] = [];
  let requestSeq = 0;

  const bump = (m: Partial<Record<S3Op, number>>, op: S3Op): void => {
    m[op] = (m[op] ?? 0) + 1;
  };
  const wake = (): void => {
    for (const w of [...waiters]) {
      if ((stats.injected[w.op] ?? 0) >= w.count) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  const take = (op: S3Op, from = plans): S3ErrorReply | undefined => {
    const queue = from.get(op);
    const plan = queue?.[0];
    if (!plan) return undefined;
    if (--plan.left <= 0) queue.shift();
    return plan.reply;
  };

  const errorBody = (reply: S3ErrorReply, id: string): string =>
    `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${reply.code}</Code><Message>${reply.message}</Message><RequestId>${id}</RequestId><HostId>http-fault-proxy</HostId></Error>`;

  const server = http.createServer({ keepAlive: true }, (req, res) => {
    const op = s3Op(req.method ?? 'GET', req.url ?? '/');
    bump(stats.seen, op);
    const rejectNow = take(op, early);
    if (rejectNow) {
      bump(stats.injected, op);
      const id = `fault-${++requestSeq}`;
      const body = errorBody(rejectNow, id);
      // answer before the body is read, then drop the connection: the client is still writing
      res.writeHead(rejectNow.status, {
        'Content-Type': 'application/xml',
        'Content-Length': Buffer.byteLength(body),
        Connection: 'close',
        'x-amz-request-id': id,
      });
      res.end(body, () => req.socket.destroy());
      wake();
      return;
    }
    const flip = (flips.get(op) ?? 0) > 0;
    if (flip) flips.set(op, flips.get(op)! - 1);
    const reply = take(op);
    if (reply) {
      // read the whole body first, as a server does before it answers a signed upload
      req.resume();
      req.on('end', () => {
        bump(stats.injected, op);
        const id = `fault-${++requestSeq}`;
        const body = req.method === 'HEAD' ? '' : errorBody(reply, id);
        res.writeHead(reply.status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body), 'x-amz-request-id': id });
        res.end(body);
        wake();
      });
      return;
    }
    const headers = { ...req.headers };
    delete headers.expect;
    const up = http.request({ host: target.hostname, port: Number(target.port), method: req.method, path: req.url, headers, agent: upstreamAgent }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
    });
    stats.forwarded++;
    up.on('error', () => res.destroy());
    req.on('error', () => up.destroy());
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    if (!flip) {
      req.pipe(up);
      return;
    }
    // the whole body, one byte in the middle changed, same length: what a bad NIC or proxy does
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (body.length) body[body.length >> 1]! ^= 0x01;
      bump(stats.injected, op);
      up.end(body);
      wake();
    });
  });
  server.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stats,
    failNext(op, count, reply = SLOW_DOWN) {
      if (count <= 0) return;
      const queue = plans.get(op) ?? [];
      queue.push({ left: count, reply });
      plans.set(op, queue);
    },
    rejectEarlyNext(op, count, reply) {
      if (count <= 0) return;
      const queue = early.get(op) ?? [];
      queue.push({ left: count, reply });
      early.set(op, queue);
    },
    flipNext(op, count) {
      flips.set(op, (flips.get(op) ?? 0) + count);
    },
    pending(op) {
      return (plans.get(op) ?? []).reduce((n, p) => n + p.left, 0);
    },
    heal() {
      plans.clear();
      early.clear();
      flips.clear();
    },
    injectedReached(op, count) {
      return new Promise((resolve) => {
        waiters.push({ op, count, resolve });
        wake();
      });
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      upstreamAgent.destroy();
    },
  };
}
