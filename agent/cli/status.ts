// `status [--json]`: what the agent on this node is doing, in one screen. From the running daemon's /status
// endpoint (same address, TLS and basic auth as /metrics) when it answers; else computed here from the
// snapshot directory, the ledger and S3, and said so.
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { describeError } from '../base/errors.js';
import { EXIT, type ExitCode } from '../base/exit.js';
import { formatBytes, formatDuration } from '../base/units.js';
import type { Config } from '../config/keys.js';
import { scanDirectory } from '../detect/scan.js';
import { statusState, type StatusDoc } from '../ops/status.js';
import { parseListen } from '../ops/server.js';
import { planPrune } from '../retention/local.js';
import { readCatalog } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import { Ledger, ledgerLocation } from '../store/ledger.js';
import type { Store } from '../store/store.js';
import { VERSION } from '../base/version.js';
import { jsonLine, q, type Out } from './output.js';

/** Asks the daemon on this host: its status, or why it gave none (nothing listening, refused, …). */
async function fromDaemon(cfg: Config): Promise<{ doc: StatusDoc } | { why: string }> {
  if (!cfg.metrics.enabled) return { why: 'metrics.enabled is false, so the daemon serves no /status' };
  const { host, port } = parseListen(cfg.metrics.listen);
  const headers: Record<string, string> = {};
  if (cfg.metrics.basicAuthUser && cfg.metrics.basicAuthPasswordFile) {
    const pw = (await readFile(cfg.metrics.basicAuthPasswordFile, 'utf8').catch(() => '')).replace(/\r?\n$/, '');
    headers.authorization = `Basic ${Buffer.from(`${cfg.metrics.basicAuthUser}:${pw}`).toString('base64')}`;
  }
  const tls = Boolean(cfg.metrics.tlsCertFile);
  const target = !host || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  const where = `${tls ? 'https' : 'http'}://${target.includes(':') ? `[${target}]` : target}:${port}/status`;
  return new Promise((resolve) => {
    // the daemon's own certificate, whatever name it carries: this is the daemon on this host
    const req = (tls ? httpsRequest : httpRequest)(
      { host: target, port, path: '/status', headers, timeout: 3000, ...(tls ? { rejectUnauthorized: false } : {}) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          if (res.statusCode === 401)
            return resolve({ why: `the daemon at ${where} refused the credentials (401); check metrics.basicAuthUser and metrics.basicAuthPasswordFile` });
          if (res.statusCode === 404) return resolve({ why: `${where} has no status (404): an older agent, or another program on that port` });
          if (res.statusCode !== 200) return resolve({ why: `${where} answered ${res.statusCode}` });
          try {
            resolve({ doc: JSON.parse(body) as StatusDoc });
          } catch {
            resolve({ why: `${where} answered something other than a status` });
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer within 3 s')));
    req.on('error', (e: NodeJS.ErrnoException) =>
      resolve({ why: e.code === 'ECONNREFUSED' ? `no daemon listens on ${where}` : `${where}: ${e.code ?? e.message}` }),
    );
    req.end();
  });
}

async function offline(cfg: Config, store: Store): Promise<StatusDoc> {
  let ledger: Ledger;
  try {
    ledger = (await Ledger.open(cfg.stateDir, ledgerLocation(cfg))).ledger;
  } catch {
    ledger = Ledger.inMemory(cfg.stateDir, ledgerLocation(cfg));
  }
  const files = await scanDirectory(cfg, ledger).catch(() => []);
  const now = Date.now();
  const plan = planPrune({
    files,
    ledger: ledger.entries(),
    heads: new Map(),
    policy: { keep: cfg.retention.keep, maxAgeMs: cfg.retention.maxAgeMs, confirmRemote: false },
    now,
  });
  let s3: { up: boolean; detail: string };
  let newest: StatusDoc['newestInS3'];
  try {
    const entries = (await readCatalog(store, nodePrefix(cfg))).entries.filter((e) => e.complete);
    s3 = { up: true, detail: `${entries.length} confirmed snapshot(s) under ${store.location}/${nodePrefix(cfg)}` };
    const n = entries[0];
    if (n) newest = { key: n.object.key, time: n.time.toISOString(), ...(n.manifest?.snapshot.db ? { revision: n.manifest.snapshot.db.revision } : {}) };
  } catch (err) {
    s3 = { up: false, detail: describeError(err, { location: store.location }) };
  }
  const last = ledger.entries().reduce((a, e) => (e.confirmedAt > a ? e.confirmedAt : a), '');
  return {
    source: 'offline',
    version: VERSION,
    node: cfg.node,
    cluster: cfg.cluster,
    snapshotDir: cfg.snapshotDir,
    destination: `${store.location}/${nodePrefix(cfg)}`,
    s3,
    pending: files.filter((f) => f.state === 'queued').length,
    ...(last ? { lastUpload: last } : {}),
    snapshots: files
      .filter((f) => f.state !== 'unrecognised')
      .map((f) => {
        const shipped = f.state === 'confirmed' ? ledger.findUnchanged(f.name, f.size, f.mtimeMs) : undefined;
        return {
          name: f.name,
          state: statusState(f.state),
          why: f.detail ?? f.state,
          size: f.size,
          time: new Date(f.timeMs ?? f.mtimeMs).toISOString(),
          ...(shipped ? { key: shipped.storedKey ?? shipped.key } : {}),
        };
      }),
    nextPrune: plan.delete.map((d) => ({ name: d.name, reason: d.reason })),
    ...(newest ? { newestInS3: newest } : {}),
  };
}

/** Where a file went (shipped: its key; uploading: to which key, how far) or why it is where it is. */
function rowDetail(s: StatusDoc['snapshots'][number]): string {
  if (s.state === 'shipped' && s.key) return `in S3 as ${s.key}`;
  if (s.state === 'uploading')
    return `to ${s.key ?? 'S3'}${s.progress ? `, ${formatBytes(s.progress.done)} of ${formatBytes(s.progress.total)} sent` : ', starting'}`;
  return s.why;
}

const ago = (iso: string | undefined): string => (iso ? `${iso} (${formatDuration(Math.max(0, Date.now() - Date.parse(iso)))} ago)` : 'never');

export async function statusCommand(cfg: Config, store: Store, opts: { json: boolean }, io: Out): Promise<ExitCode> {
  const asked = await fromDaemon(cfg);
  const doc = 'doc' in asked ? asked.doc : { ...(await offline(cfg, store)), offlineBecause: asked.why };
  if (opts.json) {
    io.out(jsonLine(doc));
    return EXIT.OK;
  }
  io.out(
    doc.source === 'daemon'
      ? `etcd-backup-agent ${doc.version} on node ${doc.node} (cluster ${doc.cluster}), from the running daemon`
      : `computed offline from ${q(cfg.snapshotDir)}, the ledger and S3, for node ${doc.node} (cluster ${doc.cluster}): ${q(doc.offlineBecause ?? 'no daemon answered')}`,
  );
  io.out(`S3: ${doc.s3.up ? 'reachable' : 'NOT reachable'}: ${q(doc.s3.detail)}${doc.integrity ? `; parts proven by ${doc.integrity}` : ''}`);
  const daemonOnly = doc.source === 'daemon' ? ago : (): string => 'unknown offline (the daemon keeps it)';
  io.out(
    `last upload: ${ago(doc.lastUpload)}; last prune: ${daemonOnly(doc.lastPrune)}; last drill: ${daemonOnly(doc.lastVerifyRun)}${doc.source === 'daemon' ? ` (newest verified: ${doc.lastVerified ?? 'none'})` : ''}`,
  );
  if (doc.newestInS3)
    io.out(
      `newest in S3: ${q(doc.newestInS3.key)} taken ${doc.newestInS3.time}${doc.newestInS3.revision !== undefined ? `, revision ${doc.newestInS3.revision}` : ''}`,
    );
  io.out(`pending uploads: ${doc.pending}`);
  io.out('');
  io.out(`${'STATE'.padEnd(14)} ${'SIZE'.padStart(10)}  ${'SNAPSHOT TIME'.padEnd(20)}  FILE: WHERE OR WHY`);
  for (const s of [...doc.snapshots].sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0))) {
    const pct = s.progress ? ` ${Math.floor((s.progress.done / Math.max(1, s.progress.total)) * 100)}%` : '';
    io.out(`${(s.state + pct).padEnd(14)} ${formatBytes(s.size).padStart(10)}  ${s.time.slice(0, 19).padEnd(20)}  ${q(s.name)}: ${q(rowDetail(s))}`);
  }
  io.out('');
  io.out(
    doc.nextPrune.length
      ? 'the next retention pass would delete locally (once S3 confirms each copy):'
      : 'the next retention pass would delete nothing locally',
  );
  for (const d of doc.nextPrune) io.out(`  ${q(d.name)}: ${q(d.reason)}`);
  if (cfg.retention.remote.enabled)
    io.out('remote retention: decided at each pass from every object in S3 and its Object Lock; `prune --dry-run` shows what it would delete');
  return EXIT.OK;
}
