// The shipped unit and example files: systemd accepts the unit, its hardening scores ≤ 2.0, its paths
// and timeouts agree with the config defaults, and the example config shows the real defaults.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../agent/config/parse.js';
import { DEFAULT_CONFIG_PATH, KEYS } from '../../agent/config/keys.js';
import { parseDuration } from '../../agent/base/units.js';
import { renderConfigExample } from '../../scripts/gen-config-example.mjs';

const exec = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const UNIT = path.join(ROOT, 'systemd/etcd-backup-agent.service');
const EXAMPLE = path.join(ROOT, 'systemd/config.example.yaml');
const MAX_EXPOSURE = 2.0;

/** Every Key=value of the [Service] (or given) section, in order. */
function directives(unit: string, section = 'Service'): [string, string][] {
  const out: [string, string][] = [];
  let current = '';
  for (const raw of unit.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) current = s[1]!;
    else if (current === section) {
      const i = line.indexOf('=');
      out.push([line.slice(0, i), line.slice(i + 1)]);
    }
  }
  return out;
}
const one = (d: [string, string][], key: string): string | undefined => d.filter(([k]) => k === key).at(-1)?.[1];
const defaultOf = (key: string): unknown => KEYS.find((k) => k.key === key)!.default;

/** systemd-analyze checks that ExecStart's binary exists: a copy points it at a real executable. */
async function verifiableCopy(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'unit-'));
  const text = (await readFile(UNIT, 'utf8')).replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`);
  const copy = path.join(dir, 'etcd-backup-agent.service');
  await writeFile(copy, text);
  return copy;
}

describe('systemd unit', () => {
  it('systemd-analyze verify accepts it without a single warning', async () => {
    const { stdout, stderr } = await exec('systemd-analyze', ['verify', await verifiableCopy()]);
    // verify exits 0 on unknown keys and bad values; they only show up as output
    expect(`${stdout}${stderr}`.trim()).toBe('');
  });

  it(`systemd-analyze security --offline=true scores at most ${MAX_EXPOSURE}`, async () => {
    const { stdout } = await exec('systemd-analyze', ['security', '--offline=true', '--no-pager', await verifiableCopy()]);
    const m = /Overall exposure level for etcd-backup-agent\.service: (\d+\.\d+)/.exec(stdout);
    expect(m, stdout.slice(-500)).not.toBeNull();
    const score = Number(m![1]);
    expect(score).toBeLessThanOrEqual(MAX_EXPOSURE);
    // the comment at the top quotes the figure; keep it honest
    expect(await readFile(UNIT, 'utf8')).toContain(`Scores ${score.toFixed(1)} with`);
  });

  it('a weakened copy scores worse, so the check above can fail', async () => {
    const copy = await verifiableCopy();
    const weak = (await readFile(copy, 'utf8')).replace(
      /^(ProtectSystem|ProtectHome|SystemCallFilter|CapabilityBoundingSet|PrivateDevices|ProtectKernel\w+|RestrictNamespaces)=.*$/gm,
      '',
    );
    await writeFile(copy, weak);
    const { stdout } = await exec('systemd-analyze', ['security', '--offline=true', '--no-pager', copy]);
    expect(Number(/Overall exposure level for \S+: (\d+\.\d+)/.exec(stdout)![1])).toBeGreaterThan(MAX_EXPOSURE);
  });

  it('agrees with the agent: drain time, config path, snapshot and state directories, credentials', async () => {
    const unit = await readFile(UNIT, 'utf8');
    const d = directives(unit);
    expect(one(d, 'Type')).toBe('exec');
    expect(one(d, 'ExecStart')).toBe(`/usr/local/bin/etcd-backup-agent --config ${DEFAULT_CONFIG_PATH} run`);
    // systemd must not SIGKILL an upload that is still within the agent's own shutdown timeout
    const drainMs = parseDuration(defaultOf('shutdownTimeout'))!;
    expect(parseDuration(one(d, 'TimeoutStopSec'))!).toBeGreaterThanOrEqual(drainMs + 15_000);
    expect(one(d, 'KillSignal')).toBe('SIGTERM');
    expect(one(d, 'Restart')).toBe('on-failure');
    expect(one(d, 'RestartPreventExitStatus')?.split(' ')).toEqual(expect.arrayContaining(['64', '78']));
    expect(one(d, 'ReadWritePaths')).toBe(`-${String(defaultOf('snapshotDir'))}`);
    // the directory ReadWritePaths= names exists before the sandbox is built (a late one would stay read-only)
    expect(one(d, 'ExecStartPre')).toBe(`+/bin/mkdir -p -m 0700 ${String(defaultOf('snapshotDir'))}`);
    // clean stops clear the start counter, so that only crash loops reach StartLimitBurst
    expect(one(d, 'ExecStopPost')).toBe(`-+/bin/sh -c 'if [ "$$SERVICE_RESULT" = success ]; then exec /bin/systemctl reset-failed %n; fi'`);
    expect(`/var/lib/${one(d, 'StateDirectory')}`).toBe(defaultOf('stateDir'));
    expect(one(d, 'LoadCredential')).toBe(`s3:${path.dirname(DEFAULT_CONFIG_PATH)}/credentials`);
    expect(one(d, 'Environment')).toBe('AWS_SHARED_CREDENTIALS_FILE=%d/s3');
    expect(one(d, 'EnvironmentFile')).toBe(`-${path.dirname(DEFAULT_CONFIG_PATH)}/env`);
    expect(one(d, 'User')).toBe('etcd-backup');
    // V8 needs writable+executable memory: this setting crashes Node
    expect(one(d, 'MemoryDenyWriteExecute')).toBeUndefined();
    expect(one(d, 'ProtectSystem')).toBe('strict');
    expect(Number(one(d, 'Nice'))).toBeGreaterThan(0);
    const unitSection = directives(unit, 'Unit');
    expect(Number(one(unitSection, 'StartLimitBurst'))).toBeGreaterThan(1);
    // restarts spaced out: a crash loop must not hit the start limit within seconds
    expect(parseDuration(one(d, 'RestartSec'))! * Number(one(unitSection, 'StartLimitBurst'))).toBeGreaterThanOrEqual(60_000);
  });
});

describe('systemd/config.example.yaml', () => {
  it('is what scripts/gen-config-example.mjs makes from KEYS (run npm run gen:config-example)', async () => {
    expect(await readFile(EXAMPLE, 'utf8')).toBe(renderConfigExample(KEYS));
  });

  it('as shipped, the only thing left to set is s3.bucket: the agent refuses to start until then', async () => {
    try {
      parseConfig(await readFile(EXAMPLE, 'utf8'), 'config.example.yaml', {});
      expect.unreachable('an unedited example must not be a working config');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      expect((e as ConfigError).issues.map((i) => `${i.key}: ${i.problem}`)).toEqual(['s3.bucket: missing']);
    }
  });

  it('with every line uncommented and a bucket, it parses to exactly the defaults', async () => {
    const example = await readFile(EXAMPLE, 'utf8');
    const keyLine = /^(\s*)#(?! |$)/gm;
    expect(example.match(keyLine)?.length).toBeGreaterThan(KEYS.length - 1);
    const everything = example.replace(keyLine, '$1').replace(/^ {2}bucket:$/m, '  bucket: etcd-backups');
    const full = parseConfig(everything, 'uncommented', {});
    const minimal = parseConfig('s3:\n  bucket: etcd-backups\n', 'minimal', {});
    expect(full).toEqual(minimal);
  });
});
