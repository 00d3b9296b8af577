// The S3 client: credentials, TLS trust, timeouts, sockets, and the proxy they go through. One per process.
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import { S3Client, type ServiceInputTypes, type ServiceOutputTypes } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { DeserializeHandler, DeserializeHandlerArguments } from '@smithy/types';
import type { Config } from '../config/keys.js';
import { defaultCredentials, fileCredentials } from './credentials.js';
import { proxyAgents, proxyOwnAnswer } from './proxy.js';
import { chooseProxy, type ProxyDecision } from './proxy-env.js';

/** The endpoint the client talks to; AWS's regional one when none is configured. */
export function endpointUrl(cfg: Config): URL {
  return new URL(cfg.s3.endpoint ?? `https://s3.${cfg.s3.region}.amazonaws.com`);
}

/** Whether S3 requests go through a proxy, and which (as `check-config` and the start log say it). */
export function proxyDecision(cfg: Config, env: NodeJS.ProcessEnv = process.env): ProxyDecision {
  return chooseProxy(endpointUrl(cfg), cfg.s3.proxy, env);
}

export function s3Client(cfg: Config, env: NodeJS.ProcessEnv = process.env): S3Client {
  const s3 = cfg.s3;
  const extraCa: string[] = [];
  if (s3.caFile) extraCa.push(readFileSync(s3.caFile, 'utf8'));
  if (s3.ca) extraCa.push(s3.ca);
  // A custom CA extends the public roots instead of replacing them.
  const ca = extraCa.length ? [...rootCertificates, ...extraCa] : undefined;
  const agentOpts = { keepAlive: true, maxSockets: Math.max(8, s3.queueSize * cfg.upload.concurrency + 4) };
  const decision = proxyDecision(cfg, env);
  const proxied = 'proxy' in decision ? proxyAgents(decision.proxy, { ...agentOpts, ...(ca ? { ca } : {}), connectTimeoutMs: s3.connectTimeoutMs }) : undefined;
  const client = new S3Client({
    region: s3.region,
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
    forcePathStyle: s3.forcePathStyle,
    credentials: s3.credentialsFile ? fileCredentials(s3.credentialsFile, s3.profile) : defaultCredentials(s3.profile),
    // The agent sets each part's checksum itself (store.ts: PartChecksum). The SDK's own CRC default sends
    // streamed bodies aws-chunked, which Ceph RGW 16 answers with 411 and Swift with 501.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: cfg.upload.attempts,
    // Through http-proxy-agent (http endpoints), a request that carries `Expect: 100-continue` (the SDK sets
    // it on bodies of 2 MiB and more) reaches the server damaged: RGW refused every 5 MiB part through
    // tinyproxy with XAmzContentSHA256Mismatch. Without the header the same parts arrive intact.
    ...(proxied && endpointUrl(cfg).protocol === 'http:' ? { expectContinueHeader: false } : {}),
    requestHandler: new NodeHttpHandler({
      // through a proxy the agent's own deadline (TCP + CONNECT, naming the proxy) goes first; this one is
      // the backstop
      connectionTimeout: proxied ? s3.connectTimeoutMs + 1000 : s3.connectTimeoutMs,
      requestTimeout: s3.requestTimeoutMs,
      // Without this smithy only prints a warning when requestTimeout passes, and a stalled
      // connection (packets dropped, nothing refused) hangs the upload until upload.timeout.
      throwOnRequestTimeout: true,
      httpAgent: proxied?.httpAgent ?? new HttpAgent(agentOpts),
      httpsAgent: proxied?.httpsAgent ?? new HttpsAgent({ ...agentOpts, ...(ca ? { ca } : {}) }),
    }),
  });
  if (proxied) {
    // next to the transport, before the SDK parses: an error page from the proxy is not an S3 error
    client.middlewareStack.add(
      (next: DeserializeHandler<ServiceInputTypes, ServiceOutputTypes>) => async (args: DeserializeHandlerArguments<ServiceInputTypes>) => {
        const out = await next(args);
        const res = out.response as { statusCode?: number; reason?: string; headers?: Record<string, string>; body?: { destroy?: () => void } };
        const own = res?.statusCode ? proxyOwnAnswer({ statusCode: res.statusCode, reason: res.reason, headers: res.headers ?? {} }, proxied.shown) : undefined;
        if (own) {
          res.body?.destroy?.();
          throw own;
        }
        return out;
      },
      { step: 'deserialize', priority: 'low', name: 'etcdBackupProxyAnswer' },
    );
  }
  return client;
}
