// The commands that restore a snapshot from where this agent put it, for the producer that made it (flags as
// `rke etcd snapshot-restore` and `rke2/k3s server` define them):
//  - RKE finds an S3 snapshot by listing `<folder>/<name>` and matching each key without its extension, so
//    its `--folder` is the object's prefix and `--name` the snapshot's name without `.zip`.
//  - RKE2 and k3s download `<etcd-s3-folder>/<cluster-reset-restore-path>` and unzip a `.zip`, so the
//    restore path is the object's own name.
// Both address the object by name: an object stored beside a conflicting one (`<name>.<sha256 prefix>`) or
// encrypted is fetched and restored from the file instead.
import type { Config } from '../config/keys.js';
import type { CatalogEntry } from '../store/catalog.js';
import { q } from './output.js';

/**
 * `rke etcd snapshot-restore` for snapshot `name` (its key without `.zip`) under `folder`: RKE's
 * --s3-endpoint is a host (its default is s3.amazonaws.com), --s3-endpoint-ca a PEM file; keys are
 * placeholders. One builder, so `list` and `import-rke` print the same command.
 */
export function rkeRestoreCommand(cfg: Config, o: { clusterFile: string; name: string; folder: string }): string {
  const host = cfg.s3.endpoint ? new URL(cfg.s3.endpoint).host : undefined;
  const ca = cfg.s3.caFile ?? (cfg.s3.ca ? '/path/to/ca.pem' : undefined);
  const flags = [
    `--name ${o.name}`,
    '--s3',
    `--bucket-name ${cfg.s3.bucket}`,
    ...(o.folder ? [`--folder ${o.folder}`] : []),
    ...(host ? [`--s3-endpoint ${host}`] : []),
    ...(ca ? [`--s3-endpoint-ca ${q(ca)}`] : []),
    ...(cfg.s3.region ? [`--region ${cfg.s3.region}`] : []),
    '--access-key ACCESS_KEY --secret-key SECRET_KEY',
  ];
  return `rke etcd snapshot-restore --config ${o.clusterFile} ${flags.join(' ')}`;
}

/** Lines an operator can paste (secrets shown as placeholders). */
export function restoreHints(cfg: Config, e: CatalogEntry): string[] {
  const slash = e.object.key.lastIndexOf('/');
  const folder = e.object.key.slice(0, Math.max(0, slash));
  const objectName = e.object.key.slice(slash + 1);
  const bare = e.name.replace(/\.zip$/i, '');
  const endpoint = cfg.s3.endpoint ? new URL(cfg.s3.endpoint) : undefined;
  const host = endpoint?.host;
  const http = endpoint?.protocol === 'http:';
  const ca = cfg.s3.caFile ?? (cfg.s3.ca ? '/path/to/ca.pem' : undefined);
  const lines = [
    `newest snapshot${e.node ? ` of node ${q(e.node)}` : ''}: ${q(e.object.key)} (taken ${e.time.toISOString()})`,
    `check it first (streamed back and checked page by page, nothing written): etcd-backup-agent verify ${q(e.object.key)}${e.encrypted ? ' --identity /path/to/age-identity.txt' : ''}`,
  ];
  const fetched = e.name.toLowerCase().endsWith('.zip') ? `/tmp/${q(bare)}` : `/tmp/${q(e.name)}`;
  const fromFile = [
    `  etcd-backup-agent fetch ${q(e.object.key)}${e.encrypted ? ' --identity /path/to/age-identity.txt' : ''} --output /tmp/${q(e.name)}`,
    ...(e.name.toLowerCase().endsWith('.zip') ? [`  unzip -j -o /tmp/${q(e.name)} -x '*.rkestate' -d /tmp/`] : []),
    `  etcdutl snapshot restore ${fetched} --data-dir /var/lib/etcd-restored   # etcd 3.4: etcdctl snapshot restore`,
  ];
  if (e.encrypted) {
    lines.push("it is encrypted: the producers' own restore cannot read it. Fetch and decrypt it (sha256 checked), then restore from the file:", ...fromFile);
    return lines;
  }
  if (objectName !== e.name) {
    lines.push(
      `it is stored as ${q(objectName)}, beside another object named ${q(e.name)}: the producers' restore would find that one. Fetch it, then restore from the file:`,
      ...fromFile,
    );
    return lines;
  }
  const producer = e.producer ?? '';
  if (producer.startsWith('rke1') || producer === 'rancher') {
    lines.push(
      "restore with RKE (from the machine that holds cluster.yml and cluster.rkestate; --folder is this object's prefix):",
      `  ${rkeRestoreCommand(cfg, { clusterFile: 'cluster.yml', name: q(bare), folder: folder ? q(folder) : '' })}`,
    );
    if (http) lines.push('  (RKE talks HTTPS to --s3-endpoint; an http:// endpoint needs a TLS front, or restore from the fetched file below)');
  } else if (producer === 'rke2') {
    const flags = [
      '--cluster-reset',
      `--cluster-reset-restore-path=${q(objectName)}`,
      '--etcd-s3',
      `--etcd-s3-bucket=${cfg.s3.bucket}`,
      ...(folder ? [`--etcd-s3-folder=${q(folder)}`] : []),
      ...(host ? [`--etcd-s3-endpoint=${host}`] : []),
      ...(ca ? [`--etcd-s3-endpoint-ca=${q(ca)}`] : []),
      ...(http ? ['--etcd-s3-insecure'] : []),
      `--etcd-s3-region=${cfg.s3.region}`,
      '--etcd-s3-access-key=ACCESS_KEY --etcd-s3-secret-key=SECRET_KEY',
    ];
    lines.push(
      'restore with RKE2 (stop rke2-server on every server node first; on a rebuilt node add --token=<the cluster token>):',
      `  rke2 server ${flags.join(' ')}`,
      '  (k3s: the same flags on `k3s server`)',
    );
  }
  lines.push('or fetch it (sha256 and format checked) and restore the file:', ...fromFile);
  return lines;
}
