// The S3 client: credentials, TLS trust, timeouts, sockets. One per process.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { Config } from '../config/keys.js';
import { defaultCredentials, fileCredentials } from './credentials.js';

export function s3Client(cfg: Config): S3Client {
  const s3 = cfg.s3;
  const extraCa: string[] = [];
  if (s3.caFile) extraCa.push(readFileSync(s3.caFile, 'utf8'));
  if (s3.ca) extraCa.push(s3.ca);
  const agentOpts = { keepAlive: true, maxSockets: Math.max(8, s3.queueSize * cfg.upload.concurrency + 4) };
  return new S3Client({
    region: s3.region,
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
    forcePathStyle: s3.forcePathStyle,
    credentials: s3.credentialsFile ? fileCredentials(s3.credentialsFile, s3.profile) : defaultCredentials(s3.profile),
    // The agent sets each part's checksum itself (store.ts: PartChecksum). The SDK's own CRC default sends
    // streamed bodies aws-chunked, which Ceph RGW 16 answers with 411 and Swift with 501.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: cfg.upload.attempts,
    requestHandler: new NodeHttpHandler({
      connectionTimeout: s3.connectTimeoutMs,
      requestTimeout: s3.requestTimeoutMs,
      // Without this smithy only prints a warning when requestTimeout passes, and a stalled
      // connection (packets dropped, nothing refused) hangs the upload until upload.timeout.
      throwOnRequestTimeout: true,
      httpAgent: new HttpAgent(agentOpts),
      // A custom CA extends the public roots instead of replacing them.
      httpsAgent: new HttpsAgent({ ...agentOpts, ...(extraCa.length ? { ca: [...rootCertificates, ...extraCa] } : {}) }),
    }),
  });
}
