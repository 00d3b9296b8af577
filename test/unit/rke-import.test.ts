import { mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../agent/config/load.js';
import { parseConfig } from '../../agent/config/parse.js';
import { parseCredentialsIni } from '../../agent/store/credentials.js';
import { EXIT } from '../../agent/base/exit.js';
import { importRke } from '../../agent/cli/import-rke.js';
import { planRkeImport, RkeImportError } from '../../agent/config/rke-import.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/rke');
const OUT = '/etc/etcd-backup-agent';

function plan(text: string, bucket?: string) {
  return planRkeImport(text, 'rancher-cluster.yml', { outputDir: OUT, bucket });
}

function failure(text: string, bucket?: string): RkeImportError {
  try {
    plan(text, bucket);
  } catch (e) {
    if (e instanceof RkeImportError) return e;
    throw e;
  }
  throw new Error('expected the import to fail');
}

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
}

const v02 = (backup: string, extra = ''): string => `${extra}services:\n  etcd:\n    backup_config:\n${backup.replace(/^/gm, '      ')}\n`;

describe('import-rke mapping (planRkeImport)', () => {
  it('the seed v0.2 snippet: count retention becomes interval × retention, folder the prefix, keys a separate INI', async () => {
    // the config names the credentials file, and parsing checks it is readable: give it one
    const dir = await mkdtemp(path.join(tmpdir(), 'rke-plan-'));
    const p = planRkeImport(await readFile(path.join(FIXTURES, 'rancher-cluster-v0.2.yml'), 'utf8'), 'rancher-cluster.yml', { outputDir: dir });
    expect(p.form).toBe('v0.2+');
    await writeFile(path.join(dir, 'credentials'), p.credentialsText!.reveal());
    const cfg = parseConfig(p.configText, 'imported', {});
    expect(cfg.s3.bucket).toBe('my-backup-bucket');
    expect(cfg.s3.prefix).toBe('folder-name');
    // AWS's own endpoint is left to the SDK: region set, no endpoint, virtual-hosted style
    expect(cfg.s3.endpoint).toBeUndefined();
    expect(cfg.s3.region).toBe('eu-west-1');
    expect(cfg.s3.forcePathStyle).toBe(false);
    expect(cfg.s3.ca).toContain('-----BEGIN CERTIFICATE-----');
    expect(cfg.s3.credentialsFile).toBe(path.join(dir, 'credentials'));
    expect(cfg.retention.maxAgeMs).toBe(60 * 6 * 3_600_000);
    expect(p.configText).not.toContain('myaccesssecret');
    expect(p.configText).not.toContain('myaccesskey');
    const ini = parseCredentialsIni(p.credentialsText!.reveal()).get('default');
    expect(ini).toEqual({ aws_access_key_id: 'myaccesskey', aws_secret_access_key: 'myaccesssecret' });
    // the docs' "$CERTIFICATE" placeholder is not a certificate: said, not silently accepted
    expect(p.warnings.join('\n')).toMatch(/custom_ca does not parse/);
    expect(p.rkeChanges.join('\n')).toMatch(/remove backup_config\.s3backupconfig/);
  });

  it('the seed v0.1 snippet: retention is an age; there is no S3, so --bucket is required', async () => {
    const text = await readFile(path.join(FIXTURES, 'rancher-cluster-v0.1.yml'), 'utf8');
    const e = failure(text);
    expect(e.exitCode).toBe(EXIT.CONFIG);
    expect(e.message).toMatch(/no bucket .*--bucket NAME/);
    const p = plan(text, 'etcd-backups');
    expect(p.form).toBe('v0.1');
    const cfg = parseConfig(p.configText, 'imported', {});
    expect(cfg.s3.bucket).toBe('etcd-backups');
    expect(cfg.retention.maxAgeMs).toBe(24 * 3_600_000);
    expect(p.credentialsText).toBeUndefined();
    expect(cfg.s3.credentialsFile).toBeUndefined();
  });

  it.each([
    ['scheme-less host:port means HTTPS, as in RKE; path style', 'endpoint: minio.example:9000\nregion: ""', 'https://minio.example:9000', 'us-east-1', true],
    ['an explicit http:// endpoint is kept', 'endpoint: http://10.0.0.5:7480', 'http://10.0.0.5:7480', 'us-east-1', true],
    ['s3.amazonaws.com with a region: AWS, that region', 'endpoint: s3.amazonaws.com\nregion: ap-south-1', undefined, 'ap-south-1', false],
    ['the legacy s3-<region> host name gives the region', 'endpoint: s3-us-west-2.amazonaws.com', undefined, 'us-west-2', false],
    ['no endpoint: AWS in the given region', 'region: eu-central-1', undefined, 'eu-central-1', false],
  ])('%s', (_name, s3lines, endpoint, region, pathStyle) => {
    const p = plan(v02(`s3backupconfig:\n  bucket_name: b1\n${s3lines.replace(/^/gm, '  ')}`));
    const cfg = parseConfig(p.configText, 'imported', {});
    expect(cfg.s3.endpoint).toBe(endpoint);
    expect(cfg.s3.region).toBe(region);
    expect(cfg.s3.forcePathStyle).toBe(pathStyle);
  });

  it('RKE defaults fill what backup_config leaves out (12 h, keep 6), as RKE does', () => {
    const cfg = parseConfig(plan(v02('enabled: true\ns3backupconfig:\n  bucket_name: b1')).configText, 'x', {});
    expect(cfg.retention.maxAgeMs).toBe(12 * 6 * 3_600_000);
    const none = plan('nodes: []\nservices:\n  etcd: {}\n', 'b1');
    expect(parseConfig(none.configText, 'x', {}).retention.maxAgeMs).toBe(72 * 3_600_000);
    expect(none.notes.join('\n')).toMatch(/RKE's defaults apply/);
  });

  it('cluster_name becomes the cluster; --bucket overrides bucket_name and says so', () => {
    const p = plan(v02('s3backupconfig:\n  bucket_name: from-file', 'cluster_name: prod-eu\n'), 'from-flag');
    const cfg = parseConfig(p.configText, 'x', {});
    expect(cfg.cluster).toBe('prod-eu');
    expect(cfg.s3.bucket).toBe('from-flag');
    expect(p.notes.join('\n')).toMatch(/from-flag from --bucket replaces from-file/);
  });

  it('without keys the default chain (instance role) is used and no credentials file is written', () => {
    const p = plan(v02('s3backupconfig:\n  bucket_name: b1\n  region: us-east-1'));
    expect(p.credentialsText).toBeUndefined();
    expect(p.notes.join('\n')).toMatch(/default chain/);
  });

  it.each([
    [
      'a typo in s3backupconfig',
      v02('s3backupconfig:\n  bucket_name: b\n  acess_key: k'),
      EXIT.CONFIG,
      /s3backupconfig\.acess_key: unknown key; RKE knows access_key/,
    ],
    ['a typo in backup_config', v02('intervals_hours: 6'), EXIT.CONFIG, /backup_config\.intervals_hours: unknown key/],
    ['missing bucket_name', v02('s3backupconfig:\n  endpoint: minio:9000'), EXIT.CONFIG, /bucket_name is not set\); pass --bucket NAME/],
    [
      'retention as an age in backup_config',
      v02('retention: 24h\ns3backupconfig:\n  bucket_name: b'),
      EXIT.CONFIG,
      /backup_config\.retention: "24h" is not a whole number; .*number of snapshots/,
    ],
    ['a count as v0.1 retention', 'services:\n  etcd:\n    snapshot: true\n    retention: 24\n', EXIT.CONFIG, /services\.etcd\.retention: "24" is not an age/],
    [
      'access_key without secret_key',
      v02('s3backupconfig:\n  bucket_name: b\n  access_key: AKIAEXAMPLEEXAMPLE'),
      EXIT.CONFIG,
      /secret_key: missing while its partner is set/,
    ],
    [
      'an endpoint with a foreign scheme',
      v02('s3backupconfig:\n  bucket_name: b\n  endpoint: ftp://x'),
      EXIT.CONFIG,
      /endpoint: scheme ftp: is not http or https/,
    ],
    ['a custom_ca that is no PEM at all', v02('s3backupconfig:\n  bucket_name: b\n  custom_ca: hello'), EXIT.CONFIG, /custom_ca: is not a PEM certificate/],
    ['malformed YAML', 'services:\n  etcd:\n    backup_config: [1, 2\n', EXIT.DATA, /not valid YAML at line \d+/],
    ['duplicate keys', 'services:\n  etcd: {}\nservices: {}\n', EXIT.DATA, /not valid YAML at line 3 \(DUPLICATE_KEY\)/],
    ['not an RKE file', 'apiVersion: v1\nkind: Pod\n', EXIT.DATA, /not an RKE cluster file/],
    ['a list at the top', '- a\n- b\n', EXIT.DATA, /not an RKE cluster file/],
  ])('one clear error: %s', (_name, text, code, message) => {
    const e = failure(text);
    expect(e.exitCode).toBe(code);
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain('\n');
  });

  it('errors never quote a secret, even when the YAML breaks on the line holding it', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const broken = failure(`services:\n  etcd:\n    backup_config:\n      s3backupconfig:\n        secret_key: "${secret}\n        bucket_name: b\n`);
    expect(broken.message).not.toContain(secret);
    expect(broken.message).not.toContain('wJalr');
    const wrongType = failure(v02(`s3backupconfig:\n  bucket_name: b\n  access_key: AKIAEXAMPLEEXAMPLE\n  secret_key: [${secret}]`));
    expect(wrongType.message).toMatch(/secret_key: the given value is not a string/);
    expect(wrongType.message).not.toContain(secret);
  });
});

describe('import-rke files (importRke)', () => {
  it('writes config.yaml (0640) and credentials (0600) that load, and refuses to overwrite either', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'rke-import-'));
    const out = path.join(dir, 'etc');
    const o = io();
    const code = await importRke(path.join(FIXTURES, 'rancher-cluster-v0.2.yml'), { outputDir: out }, o.io);
    expect(code, o.err.join('\n')).toBe(EXIT.OK);
    expect((await stat(path.join(out, 'credentials'))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(out, 'config.yaml'))).mode & 0o777).toBe(0o640);
    expect((await stat(out)).mode & 0o777).toBe(0o750);
    const cfg = loadConfig(path.join(out, 'config.yaml'), {});
    expect(cfg.s3.credentialsFile).toBe(path.join(out, 'credentials'));
    const printed = [...o.out, ...o.err].join('\n');
    expect(printed).not.toContain('myaccesssecret');
    expect(printed).not.toContain('myaccesskey');
    expect(printed).toMatch(/wrote .*config\.yaml/);

    const before = await readFile(path.join(out, 'config.yaml'), 'utf8');
    const again = io();
    expect(await importRke(path.join(FIXTURES, 'rancher-cluster-v0.2.yml'), { outputDir: out }, again.io)).toBe(EXIT.CANT_CREATE);
    expect(again.err).toHaveLength(1);
    expect(again.err[0]).toMatch(/exists and is never overwritten/);
    expect(await readFile(path.join(out, 'config.yaml'), 'utf8')).toBe(before);
  });

  it('an existing config.yaml alone also blocks, and no stray credentials file is left behind', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'rke-import-'));
    await writeFile(path.join(dir, 'config.yaml'), 's3:\n  bucket: mine\n');
    const o = io();
    expect(await importRke(path.join(FIXTURES, 'rancher-cluster-v0.2.yml'), { outputDir: dir }, o.io)).toBe(EXIT.CANT_CREATE);
    expect(await readdir(dir)).toEqual(['config.yaml']);
  });

  it('a missing input file is exit 66 with one line; malformed YAML 65; unmappable 78, writing nothing', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'rke-import-'));
    const o = io();
    expect(await importRke(path.join(dir, 'nope.yml'), { outputDir: dir }, o.io)).toBe(EXIT.NO_INPUT);
    await writeFile(path.join(dir, 'bad.yml'), 'services:\n  etcd:\n   backup_config: {\n');
    expect(await importRke(path.join(dir, 'bad.yml'), { outputDir: path.join(dir, 'out') }, o.io)).toBe(EXIT.DATA);
    await writeFile(path.join(dir, 'typo.yml'), v02('s3backupconfig:\n  bucketname: b'));
    expect(await importRke(path.join(dir, 'typo.yml'), { outputDir: path.join(dir, 'out') }, o.io)).toBe(EXIT.CONFIG);
    expect(o.err).toHaveLength(3);
    expect(o.out).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(['bad.yml', 'typo.yml']);
  });
});
