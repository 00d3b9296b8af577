// The restore commands `list` prints: the flags the producers' own tools take (`rke etcd snapshot-restore`,
// `rke2/k3s server --cluster-reset`) and the folder and name by which those tools find the object.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { restoreHints } from '../../agent/cli/restore-hints.js';
import { parseConfig } from '../../agent/config/parse.js';
import type { CatalogEntry } from '../../agent/store/catalog.js';

const cfg = (s3: Record<string, unknown> = {}) =>
  parseConfig(stringify({ cluster: 'prod', node: 'node-a', snapshotDir: '/snap', stateDir: '/state', s3: { bucket: 'backups', ...s3 } }), 'test', {});

function entry(key: string, o: Partial<CatalogEntry> = {}): CatalogEntry {
  const name = key.slice(key.lastIndexOf('/') + 1);
  return {
    key,
    object: { key, size: 10 },
    encrypted: false,
    hasSignature: false,
    name,
    size: 10,
    time: new Date('2024-05-01T12:00:00Z'),
    node: 'node-a',
    cluster: 'prod',
    complete: true,
    ...o,
  };
}

describe('restoreHints', () => {
  it('RKE: --folder is the object prefix, --name the snapshot without .zip, the endpoint host and CA file as RKE takes them', () => {
    const lines = restoreHints(
      cfg({ endpoint: 'minio.example:9000', caFile: '/etc/ca.pem', region: 'eu-1' }),
      entry('etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip', { producer: 'rke1' }),
    );
    expect(lines).toEqual([
      'newest snapshot of node node-a: etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip (taken 2024-05-01T12:00:00.000Z)',
      'check it first (streamed back and checked page by page, nothing written): etcd-backup-agent verify etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip',
      "restore with RKE (from the machine that holds cluster.yml and cluster.rkestate; --folder is this object's prefix):",
      '  rke etcd snapshot-restore --config cluster.yml --name 2024-05-01T12:00:00Z_etcd --s3 --bucket-name backups --folder etcd-backup/prod/node-a --s3-endpoint minio.example:9000 --s3-endpoint-ca /etc/ca.pem --region eu-1 --access-key ACCESS_KEY --secret-key SECRET_KEY',
      'or fetch it (sha256 and format checked) and restore the file:',
      '  etcd-backup-agent fetch etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip --output /tmp/2024-05-01T12:00:00Z_etcd.zip',
      "  unzip -j -o /tmp/2024-05-01T12:00:00Z_etcd.zip -x '*.rkestate' -d /tmp/",
      '  etcdutl snapshot restore /tmp/2024-05-01T12:00:00Z_etcd --data-dir /var/lib/etcd-restored   # etcd 3.4: etcdctl snapshot restore',
    ]);
  });

  it('RKE over plain HTTP: says RKE cannot, and still gives the file route', () => {
    const lines = restoreHints(
      cfg({ endpoint: 'http://10.0.0.5:7480' }),
      entry('etcd-backup/prod/node-a/rke_etcd_snapshot_2024-05-01T12:00:00Z.zip', { producer: 'rke1-oneshot' }),
    );
    expect(lines.find((l) => l.includes('rke etcd snapshot-restore'))).toContain('--s3-endpoint 10.0.0.5:7480 ');
    expect(lines).toContain('  (RKE talks HTTPS to --s3-endpoint; an http:// endpoint needs a TLS front, or restore from the fetched file below)');
  });

  it('RKE2/k3s: --cluster-reset-restore-path is the object name, --etcd-s3-folder its prefix, --etcd-s3-insecure for http', () => {
    const lines = restoreHints(
      cfg({ endpoint: 'http://10.0.0.5:7480', ca: '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----' }),
      entry('etcd-backup/prod/node-a/etcd-snapshot-node-a-1714564800.zip', { producer: 'rke2' }),
    );
    expect(lines.slice(2, 5)).toEqual([
      'restore with RKE2 (stop rke2-server on every server node first; on a rebuilt node add --token=<the cluster token>):',
      '  rke2 server --cluster-reset --cluster-reset-restore-path=etcd-snapshot-node-a-1714564800.zip --etcd-s3 --etcd-s3-bucket=backups --etcd-s3-folder=etcd-backup/prod/node-a --etcd-s3-endpoint=10.0.0.5:7480 --etcd-s3-endpoint-ca=/path/to/ca.pem --etcd-s3-insecure --etcd-s3-region=us-east-1 --etcd-s3-access-key=ACCESS_KEY --etcd-s3-secret-key=SECRET_KEY',
      '  (k3s: the same flags on `k3s server`)',
    ]);
  });

  it("AWS (no endpoint): no endpoint flag; an object of another node (list --cluster) gets that node's prefix", () => {
    const lines = restoreHints(cfg(), entry('etcd-backup/prod/node-b/etcd-snapshot-node-b-1714564800', { producer: 'rke2', node: 'node-b' }));
    expect(lines[0]).toMatch(/^newest snapshot of node node-b: /);
    const cmd = lines.find((l) => l.startsWith('  rke2 server'))!;
    expect(cmd).toContain('--etcd-s3-folder=etcd-backup/prod/node-b ');
    expect(cmd).not.toContain('--etcd-s3-endpoint');
    expect(cmd).not.toContain('--etcd-s3-insecure');
    // a raw object: restored as it is, nothing to unzip
    expect(lines.some((l) => l.includes('unzip'))).toBe(false);
    expect(lines.at(-1)).toBe(
      '  etcdutl snapshot restore /tmp/etcd-snapshot-node-b-1714564800 --data-dir /var/lib/etcd-restored   # etcd 3.4: etcdctl snapshot restore',
    );
  });

  it('another key template: the folder follows the object', () => {
    const lines = restoreHints(cfg({ keyTemplate: '{node}/{name}' }), entry('node-a/2024-05-01T12:00:00Z_etcd.zip', { producer: 'rke1' }));
    expect(lines.find((l) => l.includes('rke etcd'))).toContain(' --folder node-a ');
  });

  it('encrypted: only the file route, with the identity', () => {
    const lines = restoreHints(
      cfg(),
      entry('etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip', {
        producer: 'rke1',
        encrypted: true,
        object: { key: 'etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip.age', size: 10 },
      }),
    );
    expect(lines.some((l) => l.includes('rke etcd'))).toBe(false);
    expect(lines).toContain(
      '  etcd-backup-agent fetch etcd-backup/prod/node-a/2024-05-01T12:00:00Z_etcd.zip.age --identity /path/to/age-identity.txt --output /tmp/2024-05-01T12:00:00Z_etcd.zip',
    );
    expect(lines[1]).toMatch(/verify etcd-backup\/prod\/node-a\/2024-05-01T12:00:00Z_etcd\.zip\.age --identity /);
  });

  it('stored beside a conflicting object: the producers would restore the other one, so only the file route', () => {
    const key = 'etcd-backup/prod/node-a/etcd-snapshot-node-a-1714564800.0123456789ab';
    const lines = restoreHints(cfg(), entry(key, { producer: 'rke2', name: 'etcd-snapshot-node-a-1714564800' }));
    expect(lines.some((l) => l.includes('rke2 server'))).toBe(false);
    expect(lines[2]).toContain('beside another object named etcd-snapshot-node-a-1714564800');
    expect(lines).toContain(`  etcd-backup-agent fetch ${key} --output /tmp/etcd-snapshot-node-a-1714564800`);
  });

  it('etcdctl snapshots: the file route only', () => {
    const lines = restoreHints(cfg(), entry('etcd-backup/prod/node-a/manual.db', { producer: 'etcdctl' }));
    expect(lines.slice(2)).toEqual([
      'or fetch it (sha256 and format checked) and restore the file:',
      '  etcd-backup-agent fetch etcd-backup/prod/node-a/manual.db --output /tmp/manual.db',
      '  etcdutl snapshot restore /tmp/manual.db --data-dir /var/lib/etcd-restored   # etcd 3.4: etcdctl snapshot restore',
    ]);
  });

  it('docs/restore.md shows exactly what list prints for its example', () => {
    const doc = readFileSync(new URL('../../docs/restore.md', import.meta.url), 'utf8');
    const m = /<!-- restore-hints example: cluster (\S+), node (\S+), bucket (\S+), endpoint (\S+), caFile (\S+) -->\n```text\n([\s\S]*?)\n```/.exec(doc);
    expect(m, 'the example block in docs/restore.md').not.toBeNull();
    const [, cluster, node, bucket, endpoint, caFile, block] = m!;
    const c = parseConfig(stringify({ cluster, node, snapshotDir: '/snap', stateDir: '/state', s3: { bucket, endpoint, caFile } }), 'test', {});
    const key = `etcd-backup/${cluster}/${node}/2024-05-01T12:00:00Z_etcd.zip`;
    expect(restoreHints(c, entry(key, { producer: 'rke1', node })).join('\n')).toBe(block);
  });
});
