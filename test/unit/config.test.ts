import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../agent/config/parse.js';
import { completeConfig, loadConfig } from '../../agent/config/load.js';
import { clusterPrefix, nodePrefix, objectKey } from '../../agent/store/layout.js';

function issuesOf(text: string): { key: string; problem: string; fix: string }[] {
  try {
    parseConfig(text, 'test.yaml', {});
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  return [];
}

describe('config', () => {
  it('a minimal file is a bucket plus an endpoint, everything else defaults', () => {
    const c = parseConfig('s3:\n  bucket: backups\n  endpoint: http://127.0.0.1:7480\n', 'x', {});
    expect(c.s3.bucket).toBe('backups');
    expect(c.s3.endpoint).toBe('http://127.0.0.1:7480');
    expect(c.s3.forcePathStyle).toBe(true);
    expect(c.s3.checksum).toBe('auto');
    expect(c.s3.partSize).toBe(8 * 1024 * 1024);
    expect(c.snapshotDir).toBe('/opt/rke/etcd-snapshots');
    expect(c.stateDir).toBe('/var/lib/etcd-backup-agent');
    expect(c.shutdownTimeoutMs).toBe(60_000);
    expect(c.retention.keep).toBeUndefined();
    expect(c.retention.maxAgeMs).toBeUndefined();
    expect(c.metrics.listen).toBe(':9479');
    expect(c.node.length).toBeGreaterThan(0);
  });

  it('a region alone works for AWS (virtual-hosted style)', () => {
    const c = parseConfig('s3:\n  bucket: backups\n  region: eu-west-1\n', 'x', {});
    expect(c.s3.endpoint).toBeUndefined();
    expect(c.s3.forcePathStyle).toBe(false);
    expect(c.s3.region).toBe('eu-west-1');
  });

  it("RKE's scheme-less endpoint means HTTPS", () => {
    expect(parseConfig('s3: {bucket: bkt, endpoint: "s3.eu-west-1.amazonaws.com"}', 'x', {}).s3.endpoint).toBe('https://s3.eu-west-1.amazonaws.com');
  });

  it('keys follow the template with cluster and node, so nodes never collide', () => {
    const c = parseConfig('cluster: prod\nnode: etcd-1\ns3: {bucket: bkt, prefix: /backups/}\n', 'x', {});
    expect(objectKey(c, '2024-05-01T12:00:00Z_etcd.zip')).toBe('backups/prod/etcd-1/2024-05-01T12:00:00Z_etcd.zip');
    expect(nodePrefix(c)).toBe('backups/prod/etcd-1/');
    expect(clusterPrefix(c)).toBe('backups/prod/');
    const d = parseConfig('cluster: prod\nnode: etcd-2\ns3: {bucket: bkt, keyTemplate: "{cluster}/{node}/{name}"}\n', 'x', {});
    expect(objectKey(d, 'a.db')).toBe('prod/etcd-2/a.db');
  });

  it.each([
    ['s3: {endpoint: "http://x"}', 's3.bucket', 'missing'],
    ['s3: {bucket: bkt, endpoint: "ftp://x"}', 's3.endpoint', 'not a URL'],
    ['s3: {bucket: bkt, endpont: "http://x"}', 's3.endpont', 'unknown key'],
    ['s3: {bucket: bkt}\nsnapshotDir: relative/dir', 'snapshotDir', 'not an absolute path'],
    ['s3: {bucket: bkt, partSize: 1MiB}', 's3.partSize', 'below the minimum'],
    ['s3: {bucket: bkt, partSize: lots}', 's3.partSize', 'is not a size'],
    ['s3: {bucket: bkt, queueSize: -1}', 's3.queueSize', 'below the minimum'],
    ['s3: {bucket: bkt, checksum: crc32}', 's3.checksum', 'not allowed'],
    ['s3: {bucket: bkt, sse: none, kmsKeyId: k}', 's3.kmsKeyId', 'not aws:kms'],
    ['s3: {bucket: bkt, keyTemplate: "{prefix}/{name}"}', 's3.keyTemplate', 'overwrite'],
    ['s3: {bucket: bkt, keyTemplate: "{prefix}/{node}/{name}/x"}', 's3.keyTemplate', 'does not end with {name}'],
    ['s3: {bucket: bkt}\nretention: {schedule: "every hour"}', 'retention.schedule', 'not a cron expression'],
    ['s3: {bucket: bkt}\nretention: {maxAge: soon}', 'retention.maxAge', 'is not a duration'],
    ['s3: {bucket: bkt}\nretention: {remote: {enabled: true}}', 'retention.remote', 'without a policy'],
    ['s3: {bucket: bkt}\nretention: {rke: {retention: 6}}', 'retention.rke.retention', 'intervalHours is not set'],
    ['s3: {bucket: bkt}\nlog: {level: loud}', 'log.level', 'not allowed'],
    ['s3: {bucket: bkt}\nmetrics: {listen: "nine"}', 'metrics.listen', 'is not [host]:port'],
    ['s3: {bucket: bkt}\nnode: "a/b"', 'node', 'cannot be part of an object key'],
    ['s3: {bucket: bkt}\nupload: {retryInitial: 1m, retryMax: 1s}', 'upload.retryMax', 'shorter'],
    ['s3: {bucket: bkt}\ndetect: {settleTimeout: 3y}', 'detect.settleTimeout', 'is not a duration'],
    ['s3: {bucket: bkt, objectLock: {mode: GOVERNANCE}}', 's3.objectLock.retainFor', 'missing'],
    ['s3: {bucket: bkt, proxy: "ftp://user:hunter2@proxy"}', 's3.proxy', 'not a proxy URL'],
    ['s3: {bucket: bkt, maxParts: 0}', 's3.maxParts', 'below the minimum'],
    ['s3: {bucket: bkt}\nverify: {schedule: "daily"}', 'verify.schedule', 'not a cron expression'],
    ['- just\n- a list', '(file)', 'not a mapping'],
    ['s3: {bucket: bkt\n', '(file)', 'not valid YAML'],
  ])('%s → %s: %s', (text, key, problem) => {
    const issues = issuesOf(text);
    const hit = issues.find((i) => i.key === key);
    expect(hit, JSON.stringify(issues)).toBeDefined();
    expect(hit!.problem).toContain(problem);
    expect(hit!.fix.length).toBeGreaterThan(5);
  });

  it('files a config names are probed after parsing (parsing itself opens nothing)', () => {
    const cfg = parseConfig('s3: {bucket: bkt, caFile: /nonexistent/ca.pem}\nsigning: {keyFile: /nonexistent/key}', 'x', {});
    expect(cfg.s3.caFile).toBe('/nonexistent/ca.pem');
    const err = (() => {
      try {
        completeConfig(cfg, 'x');
      } catch (e) {
        return e as ConfigError;
      }
    })()!;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.issues.map((i) => [i.key, i.problem])).toEqual([
      ['s3.caFile', '/nonexistent/ca.pem does not exist'],
      ['signing.keyFile', '/nonexistent/key does not exist'],
    ]);
  });

  it('an unparsable endpoint or proxy is never echoed with its credentials', () => {
    const issues = issuesOf('s3: {bucket: bkt, endpoint: "http://admin:hunter2@host:port:x", proxy: "ftp://u:hunter3@p"}');
    expect(JSON.stringify(issues)).not.toMatch(/hunter[23]/);
    expect(issues.map((i) => i.key).sort()).toEqual(['s3.endpoint', 's3.proxy']);
  });

  it('every problem is reported at once, each naming its key', () => {
    const issues = issuesOf('s3: {partSize: 1, checksum: x}\nlog: {level: y}\n');
    expect(issues.map((i) => i.key).sort()).toEqual(['log.level', 's3.bucket', 's3.checksum', 's3.partSize']);
  });

  it('a secret in the config is refused without echoing it', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const err = (() => {
      try {
        parseConfig(`s3:\n  bucket: bkt\n  secretAccessKey: ${secret}\n  access_key: AKIAEXAMPLE123\n`, 'x', {});
      } catch (e) {
        return e as ConfigError;
      }
    })()!;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.issues.map((i) => i.key)).toEqual(['s3.secretAccessKey', 's3.access_key']);
    expect(err.message).not.toContain(secret);
    expect(err.message).not.toContain('AKIAEXAMPLE123');
    expect(err.message).toContain('s3.credentialsFile');
  });

  it('hostile values are shown bounded and printable', () => {
    const issues = issuesOf(`s3: {bucket: bkt, region: "${'\\u001b[31m'.repeat(50)}"}`);
    const hit = issues.find((i) => i.key === 's3.region')!;
    expect(hit.problem.length).toBeLessThan(120);
    expect(hit.problem).not.toMatch(/\x1b/);
  });

  it("RKE's retention maps to an age: interval_hours × retention, or v0.1's age", () => {
    expect(parseConfig('s3: {bucket: bkt}\nretention: {rke: {intervalHours: 12, retention: 6}}', 'x', {}).retention.maxAgeMs).toBe(72 * 3600_000);
    expect(parseConfig('s3: {bucket: bkt}\nretention: {rke: {retention: 24h}}', 'x', {}).retention.maxAgeMs).toBe(24 * 3600_000);
  });

  it('loadConfig names the file and how to fix a missing one', () => {
    try {
      loadConfig('/nonexistent/config.yaml');
      expect.unreachable();
    } catch (e) {
      expect((e as ConfigError).issues[0]).toMatchObject({ key: '(file)', problem: 'does not exist' });
      expect((e as Error).message).toContain('--config');
    }
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'c.yaml'), 's3:\n  bucket: bkt\n  region: us-east-1\n');
    expect(loadConfig(join(dir, 'c.yaml')).s3.bucket).toBe('bkt');
  });
});
