// An S3 endpoint that discards bodies: enough of the API for the agent, awscli, rclone, s3cmd and curl
// to complete uploads, so a benchmark measures the clients, not the server. Loopback only, no auth.
// With `crc32` it checks a part's x-amz-checksum-crc32 and refuses a wrong one, as AWS S3 does (Ceph RGW
// 16 and Swift ignore it); with `tls` it serves HTTPS.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { crc32 } from 'node:zlib';
import type { AddressInfo } from 'node:net';

interface Obj {
  size: number;
  meta: Record<string, string>;
  modified: Date;
}

interface Mpu {
  key: string;
  meta: Record<string, string>;
  parts: Map<number, number>;
}

const xml = (res: ServerResponse, status: number, body: string): void => {
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) }).end(body);
};

function metaOf(req: IncomingMessage): Record<string, string> {
  const m: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) if (k.startsWith('x-amz-meta-') && typeof v === 'string') m[k.slice(11)] = v;
  return m;
}

/**
 * Counts the body's bytes without keeping them. With `md5`, also returns their MD5 as the ETag: s3cmd
 * compares each part's ETag with its own MD5 (costing the sink, not the client, CPU).
 */
function drain(req: IncomingMessage, withMd5: boolean, withCrc: boolean): Promise<{ n: number; md5?: string; crc?: string }> {
  const md5 = withMd5 ? createHash('md5') : undefined;
  return new Promise((resolve, reject) => {
    let n = 0;
    let crc = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      md5?.update(c);
      if (withCrc) crc = crc32(c, crc);
    });
    req.on('end', () => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(crc >>> 0);
      resolve({ n, md5: md5?.digest('hex'), ...(withCrc ? { crc: b.toString('base64') } : {}) });
    });
    req.on('error', reject);
  });
}

export async function startSink(
  port = 0,
  opts: { md5?: boolean; crc32?: boolean; tls?: { cert: string; key: string } } = {},
): Promise<{ server: Server; url: string; bytes: () => number; close: () => Promise<void> }> {
  const objects = new Map<string, Obj>();
  const uploads = new Map<string, Mpu>();
  let total = 0;

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://sink');
      const [, bucket = '', ...rest] = url.pathname.split('/');
      const key = decodeURIComponent(rest.join('/'));
      const q = url.searchParams;
      const sent = req.headers['x-amz-checksum-crc32'];
      const got = await drain(req, opts.md5 ?? false, Boolean(opts.crc32 && sent));
      if (got.crc !== undefined && got.crc !== sent)
        return xml(res, 400, '<Error><Code>BadDigest</Code><Message>The CRC32 you specified did not match the calculated checksum.</Message></Error>');
      // aws-chunked bodies carry framing; the decoded length is the object's
      const size = Number(req.headers['x-amz-decoded-content-length'] ?? got.n);
      const etag = (): string => `"${got.md5 ?? randomBytes(16).toString('hex')}"`;
      total += size;
      const m = req.method;
      if (!key) {
        if (m === 'HEAD' || m === 'PUT') return res.writeHead(200).end();
        if (q.has('uploads'))
          return xml(res, 200, `<ListMultipartUploadsResult><Bucket>${bucket}</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>`);
        if (q.has('location')) return xml(res, 200, '<LocationConstraint/>');
        const prefix = q.get('prefix') ?? '';
        const items = [...objects.entries()].filter(([k]) => k.startsWith(`${bucket}/${prefix}`));
        return xml(
          res,
          200,
          `<ListBucketResult><Name>${bucket}</Name><Prefix>${prefix}</Prefix><KeyCount>${items.length}</KeyCount><IsTruncated>false</IsTruncated>${items.map(([k, o]) => `<Contents><Key>${k.slice(bucket.length + 1)}</Key><Size>${o.size}</Size><LastModified>${o.modified.toISOString()}</LastModified><ETag>"0"</ETag></Contents>`).join('')}</ListBucketResult>`,
        );
      }
      const id = `${bucket}/${key}`;
      if (m === 'POST' && q.has('uploads')) {
        const uploadId = randomBytes(8).toString('hex');
        uploads.set(uploadId, { key: id, meta: metaOf(req), parts: new Map() });
        return xml(
          res,
          200,
          `<InitiateMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${key}</Key><UploadId>${uploadId}</UploadId></InitiateMultipartUploadResult>`,
        );
      }
      const uploadId = q.get('uploadId');
      if (uploadId) {
        const u = uploads.get(uploadId);
        if (!u) return xml(res, 404, '<Error><Code>NoSuchUpload</Code></Error>');
        if (m === 'PUT') {
          u.parts.set(Number(q.get('partNumber')), size);
          return res.writeHead(200, { ETag: etag() }).end();
        }
        if (m === 'POST') {
          uploads.delete(uploadId);
          objects.set(id, { size: [...u.parts.values()].reduce((a, b) => a + b, 0), meta: u.meta, modified: new Date() });
          return xml(
            res,
            200,
            `<CompleteMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${key}</Key><ETag>${etag()}</ETag></CompleteMultipartUploadResult>`,
          );
        }
        if (m === 'DELETE') {
          uploads.delete(uploadId);
          return res.writeHead(204).end();
        }
      }
      if (m === 'PUT') {
        objects.set(id, { size, meta: metaOf(req), modified: new Date() });
        return res.writeHead(200, { ETag: etag() }).end();
      }
      const o = objects.get(id);
      if (m === 'HEAD' || m === 'GET') {
        if (!o) return m === 'HEAD' ? res.writeHead(404).end() : xml(res, 404, '<Error><Code>NoSuchKey</Code></Error>');
        const headers: Record<string, string | number> = {
          'Content-Length': m === 'HEAD' ? o.size : 0,
          ETag: '"0"',
          'Last-Modified': o.modified.toUTCString(),
        };
        for (const [k, v] of Object.entries(o.meta)) headers[`x-amz-meta-${k}`] = v;
        return res.writeHead(200, headers).end();
      }
      if (m === 'DELETE') {
        objects.delete(id);
        return res.writeHead(204).end();
      }
      xml(res, 400, '<Error><Code>NotImplemented</Code></Error>');
    })().catch(() => res.writeHead(500).end());
  };
  const server = opts.tls ? createHttpsServer({ cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key) }, handler) : createServer(handler);
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  const addr = server.address() as AddressInfo;
  return {
    server,
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${addr.port}`,
    bytes: () => total,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// `node sink.js [PORT] [--md5] [--crc32] [--tls CERT KEY]`: run on its own (a separate process, so it does
// not share a core with the client).
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const a = process.argv;
  const t = a.indexOf('--tls');
  const s = await startSink(Number(a[2] ?? 0), {
    md5: a.includes('--md5'),
    crc32: a.includes('--crc32'),
    ...(t > 0 ? { tls: { cert: a[t + 1]!, key: a[t + 2]! } } : {}),
  });
  process.stdout.write(`${s.url}\n`);
}
