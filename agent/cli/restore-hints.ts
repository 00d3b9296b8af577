// The commands that restore a snapshot from where this agent put it, for the producer that made it: RKE
// finds an S3 snapshot by listing `<folder>/<name>` and matching the key without its extension, so its
// `--folder` is this node's prefix; RKE2 and k3s take the same prefix as `--etcd-s3-folder`.
import type { Config } from '../config/keys.js';
import type { CatalogEntry } from '../store/catalog.js';
import { nodePrefix } from '../store/layout.js';
import { q } from './output.js';

function endpointHost(cfg: Config): string | undefined {
  if (!cfg.s3.endpoint) return undefined;
  const u = new URL(cfg.s3.endpoint);
  return u.host;
}

/**
 * RKE's own restore command for snapshot `name` (its key without `.zip`) under `folder`, with the flags of
 * `rke etcd snapshot-restore` (rancher/rke cmd/etcd.go): --s3-endpoint is a host (RKE's default is
 * s3.amazonaws.com), --s3-endpoint-ca a PEM file, keys as placeholders.
 */
export function rkeRestoreCommand(cfg: Config, o: { clusterFile: string; name: string; folder: string }): string {
  const host = endpointHost(cfg);
  const ca = cfg.s3.caFile ?? (cfg.s3.ca ? 'CA_FILE' : undefined);
  return [
    `rke etcd snapshot-restore --config ${o.clusterFile} --name ${o.name} --s3 --bucket-name ${cfg.s3.bucket} --folder ${o.folder}`,
    host ? ` --s3-endpoint ${host}` : '',
    cfg.s3.region ? ` --region ${cfg.s3.region}` : '',
    ca ? ` --s3-endpoint-ca ${ca}` : '',
    ' --access-key ACCESS_KEY --secret-key SECRET_KEY',
  ].join('');
}

/** Lines an operator can paste (secrets shown as placeholders). */
export function restoreHints(cfg: Config, e: CatalogEntry): string[] {
  const folder = nodePrefix(cfg).replace(/\/$/, '');
  const bare = e.name.replace(/\.zip$/, '');
  const host = endpointHost(cfg);
  const http = cfg.s3.endpoint?.startsWith('http:') ?? false;
  const lines = [`newest snapshot of this node: ${q(e.object.key)} (taken ${e.time.toISOString()})`];
  if (e.encrypted) {
    lines.push(
      'it is encrypted: the producers\' own restore cannot read it. Fetch and decrypt it, then restore from the file:',
      `  etcd-backup-agent fetch ${q(e.object.key)} --identity /path/to/age-identity.txt --output /tmp/${q(bare)}.db`,
      `  etcdutl snapshot restore /tmp/${q(bare)}.db --data-dir /var/lib/etcd-restored   # or: rke2/k3s server --cluster-reset --cluster-reset-restore-path=/tmp/${q(bare)}.db`,
    );
    return lines;
  }
  const producer = e.producer ?? '';
  if (producer.startsWith('rke1') || producer === 'rancher') {
    lines.push(
      'restore with RKE (its --folder is this node\'s prefix):',
      `  ${rkeRestoreCommand(cfg, { clusterFile: 'cluster.yml', name: q(bare), folder: q(folder) })}`,
    );
    if (http) lines.push('  (RKE talks HTTPS to --s3-endpoint; an http:// endpoint needs a TLS front or `etcd-backup-agent fetch` instead)');
  } else if (producer === 'rke2') {
    lines.push(
      'restore with RKE2 (or k3s: the same flags on `k3s server`):',
      `  rke2 server --cluster-reset --cluster-reset-restore-path=${q(e.name)} --etcd-s3 --etcd-s3-bucket=${cfg.s3.bucket} --etcd-s3-folder=${q(folder)}${host ? ` --etcd-s3-endpoint=${host}` : ''}${http ? ' --etcd-s3-insecure' : ''} --etcd-s3-region=${cfg.s3.region} --etcd-s3-access-key=ACCESS_KEY --etcd-s3-secret-key=SECRET_KEY`,
    );
  }
  const db = e.name.endsWith('.zip') ? `/tmp/${q(bare)}` : `/tmp/${q(e.name)}`;
  lines.push(
    'or fetch it (sha256 and format checked) and restore the file:',
    `  etcd-backup-agent fetch ${q(e.object.key)} --output /tmp/${q(e.name)}`,
    ...(e.name.endsWith('.zip') ? [`  unzip -j -o /tmp/${q(e.name)} -x '*.rkestate' -d /tmp/`] : []),
    `  etcdutl snapshot restore ${db} --data-dir /var/lib/etcd-restored`,
  );
  return lines;
}
