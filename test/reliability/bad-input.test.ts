// Fault 6: bad input. Every config key with a wrong type, empty, huge or hostile value (fuzzed) must
// give exit 78 or a valid config, never a crash, a hang or escape sequences on the terminal; and a
// snapshot directory full of garbage, links, FIFOs, devices and empty files named like snapshots must
// be rejected without blocking the agent, and no link may lead it into uploading another file.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, inject, it } from 'vitest';
import { ConfigError, parseConfig } from '../../agent/config/parse.js';
import { KEYS } from '../../agent/config/keys.js';
import { freshSnapshot, nodePrefix, pick, Recorder, rng, setupEnv, testDirs, type Env, type RealSnapshot } from './harness.js';
import { checkInvariants, MSG } from './invariants.js';

const exec = promisify(execFile);
const rec = new Recorder('bad-input');
let env: Env;
let scratch: string;
let fifoPath: string;

beforeAll(async () => {
  env = await setupEnv('bad-input');
  scratch = (await testDirs('fuzz-')).root;
  fifoPath = path.join(scratch, 'a-fifo');
  await exec('mkfifo', [fifoPath]);
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

// ───────────────────────────── config values ─────────────────────────────

const MIB = 'A'.repeat(1024 * 1024);
const ESC = '\x1b';

/** Hostile values, by class; `special` ones name devices and FIFOs that a careless reader blocks or drowns on. */
function hostileValues(): Record<string, unknown[]> {
  return {
    'wrong type': [42, -1, 1.5, true, ['a', 'b'], { nested: 'map' }, [{ a: 1 }], Infinity, -0],
    empty: ['', [], {}, ' ', '\n'],
    huge: [MIB, 'B'.repeat(64 * 1024), Array.from({ length: 10_000 }, (_, i) => `x${i}`)],
    'control characters': ['a\x00b', 'bell\x07', 'tab\there', 'cr\rlf\n', 'del\x7f', '\x1b'],
    'ANSI escapes': [`${ESC}[31mred${ESC}[0m`, `${ESC}]0;pwned${String.fromCharCode(7)}`, `${ESC}[2J${ESC}[H`, `/tmp/${ESC}[1;31mevil`],
    'log injection': ['ok\nconfig error: everything is fine', 'x\r\n{"level":"info","msg":"fake"}', '\u202egnp.exe', '\ufeffbom'],
    'path traversal': ['../../../../etc/passwd', '/../../etc/shadow', '/tmp/../../root/.ssh/id_rsa', '..', '/', '//', '{name}/../..'],
    special: ['/dev/zero', '/dev/urandom', '/dev/stdin', '/proc/self/mem', '/proc/kcore', 'FIFO'],
  };
}

/** The config document for one key set to one value (dotted keys nest), on a valid base. */
function configWith(key: string, value: unknown, dir: string): string {
  const base: Record<string, any> = {
    s3: { bucket: 'fuzz-bucket', endpoint: 'http://127.0.0.1:1' },
    snapshotDir: path.join(dir, 'snapshots'),
    stateDir: path.join(dir, 'state'),
    node: 'fuzz',
    metrics: { listen: '127.0.0.1:0' },
  };
  const parts = key.split('.');
  let at = base;
  for (const p of parts.slice(0, -1)) at = at[p] && typeof at[p] === 'object' ? at[p] : (at[p] = {});
  at[parts.at(-1)!] = value === 'FIFO' ? fifoPath : value;
  return stringify(base, { lineWidth: 0 });
}

// YAML-level hostility: alias bombs (billion laughs), deep nesting, tags, merge keys, duplicate keys
const YAML_DOCS: Record<string, string> = {
  'alias bomb': [
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ...'bcdefghi'.split('').map((c, i) => `${c}: &${c} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(',')}]`),
    's3: {bucket: x, endpoint: "http://127.0.0.1:1"}',
  ].join('\n'),
  'alias bomb in a value':
    'x: &x [1,1,1,1,1,1,1,1,1,1]\ny: &y [*x,*x,*x,*x,*x,*x,*x,*x,*x,*x]\nz: &z [*y,*y,*y,*y,*y,*y,*y,*y,*y,*y]\ns3: {bucket: *z, endpoint: "http://127.0.0.1:1"}',
  'self-referencing alias': 's3: &s {bucket: x, endpoint: "http://127.0.0.1:1", loop: *s}',
  'deep nesting': `a: ${'['.repeat(5000)}${']'.repeat(5000)}\ns3: {bucket: x}`,
  'merge keys': 'base: &b {bucket: x, endpoint: "http://127.0.0.1:1"}\ns3:\n  <<: *b\n  partSize: 5MiB',
  'unknown tags': 's3: !!js/function "function(){}"\ncluster: !evil x',
  'binary tag': 's3: {bucket: !!binary "AAAA", endpoint: "http://127.0.0.1:1"}',
  'duplicate keys': 's3: {bucket: a, bucket: b, endpoint: "http://127.0.0.1:1"}',
  'not a mapping': '- just\n- a\n- list',
  'a bare scalar': '42',
  'NUL bytes': 's3:\n  bucket: "a\\0b"\n  endpoint: "http://127.0.0.1:1"\x00\x00',
  'invalid UTF-8': Buffer.from([0x73, 0x33, 0x3a, 0x20, 0xff, 0xfe, 0x0a]).toString('latin1'),
  'escape sequences in key names': `"\\e[31mevil\\e]0;title\\a": 1\ns3: {bucket: x, endpoint: "http://127.0.0.1:1", "bu\\rcket": y}`,
  'a 2 MiB file': `s3: {bucket: x, endpoint: "http://127.0.0.1:1"}\n# ${'#'.repeat(2 * 1024 * 1024)}`,
};

/** What the CLI printed must be safe to show on a terminal and bounded; a crash prints a stack trace. */
function outputProblems(label: string, r: { code: number | null; stdout: string; stderr: string }, timedOut: boolean): string[] {
  const out: string[] = [];
  if (timedOut) out.push(`${label}: check-config hung (killed after 20 s)`);
  else if (r.code !== 0 && r.code !== 78) out.push(`${label}: exit ${r.code}, expected 78 (or 0 for a valid config); stderr: ${r.stderr.slice(0, 200)}`);
  const all = r.stdout + r.stderr;
  if (/^fatal:|^\s+at .+:\d+:\d+\)?$/m.test(all)) out.push(`${label}: crash output: ${all.slice(0, 300)}`);

  const ctl = /[\x00-\x08\x0b-\x1f\x7f\u202e]/.exec(all);
  if (ctl)
    out.push(
      `${label}: the output carries a raw control character (U+${ctl[0].charCodeAt(0).toString(16).padStart(4, '0')}) into the operator's terminal: ${JSON.stringify(all.slice(Math.max(0, ctl.index - 60), ctl.index + 20))}`,
    );
  if (all.length > 64 * 1024) out.push(`${label}: ${all.length} bytes of output for one bad value`);
  return out;
}

/** A string of an accepted config that would carry a control or bidi character to a terminal (PEM may have lines). */
function printedControls(value: unknown, at = ''): string | undefined {
  if (typeof value === 'string') {
    const re = at === 's3.ca' ? /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e]/ : /[\x00-\x1f\x7f\u202a-\u202e]/;
    return re.test(value) ? `${at} holds ${JSON.stringify(value).slice(0, 60)}` : undefined;
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const found = printedControls(v, at ? `${at}.${k}` : k);
      if (found) return found;
    }
  }
  return undefined;
}

async function checkConfigCli(file: string, text: string | Buffer): Promise<{ code: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  await writeFile(file, text);
  const t0 = Date.now();
  const r = await env.cli(['--config', file, 'check-config', '--offline'], { timeoutMs: 20_000 });
  return { ...r, timedOut: r.code === null && Date.now() - t0 >= 19_000 };
}

async function inBatches<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

describe('fault 6: bad input', () => {
  it('every config key with wrong, empty, huge and hostile values: exit 78 or a valid config, never a crash (CLI)', async () => {
    const classes = hostileValues();
    const r = rng('config-cli');
    const fault = rec.fault({
      id: 'config-hostile-values',
      category: '6',
      fault: 'config keys with wrong types, empty, huge (1 MiB) or hostile values; hostile YAML',
      how: `every key of the KEYS table (${KEYS.length}) given values of each class (${Object.keys(classes).join(', ')}), ${pick('one random class and value per key', 'three random values of every class per key')}; plus ${Object.keys(YAML_DOCS).length} hostile YAML documents (alias bombs, deep nesting, tags, NUL bytes, invalid UTF-8, 2 MiB); each run through \`etcd-backup-agent check-config --offline\` as a process`,
    });
    const cases: { label: string; text: string }[] = [];
    // CI: one class per key (random, every class still covered across the keys); long: every class, 3 values each
    const classNames = Object.keys(classes);
    const assigned = new Map(KEYS.map((k, i) => [k.key, classNames[(i + r.int(0, classNames.length - 1)) % classNames.length]!]));
    const pickedClass = (key: string): string => assigned.get(key)!;
    for (const spec of KEYS) {
      for (const [cls, values] of Object.entries(classes)) {
        const chosen = pick(cls === pickedClass(spec.key) ? [r.pick(values)] : [], r.sample(values, 3));
        for (const v of chosen) cases.push({ label: `${spec.key} = ${cls} ${JSON.stringify(v)?.slice(0, 40)}`, text: configWith(spec.key, v, scratch) });
      }
    }
    for (const [label, text] of Object.entries(YAML_DOCS)) cases.push({ label: `YAML: ${label}`, text });
    const dir = path.join(scratch, 'cli');
    await mkdir(dir, { recursive: true });
    const t0 = performance.now();
    const outcome = (code: number | null): string =>
      code === 78 ? 'exit 78: refused, every problem named' : code === 0 ? 'exit 0: a valid config' : `exit ${code}`;
    // --config itself pointing at something that is not a file
    for (const special of ['/dev/zero', '/dev/urandom', fifoPath, scratch]) {
      const t1 = Date.now();
      const res = await env.cli(['--config', special, 'check-config', '--offline'], { timeoutMs: 20_000 });
      fault.record(
        `--config ${special}`,
        { outcome: outcome(res.code), violations: outputProblems(`--config ${special}`, res, res.code === null && Date.now() - t1 >= 19_000) },
        1,
        { quiet: true },
      );
    }
    let n = 0;
    await inBatches(cases, pick(2, 3), async (c) => {
      const res = await checkConfigCli(path.join(dir, `case-${++n}.yaml`), c.text);
      fault.record(c.label, { outcome: outcome(res.code), violations: outputProblems(c.label, res, res.timedOut) }, 1, { quiet: true });
    });
    fault.took((performance.now() - t0) / 1000);
  });

  it('config values fuzzed with fast-check through the parser: ConfigError or a config, nothing else', async () => {
    const runs = pick(3000, 30_000);
    const fault = rec.fault({
      id: 'config-fuzz',
      category: '6',
      fault: 'arbitrary values for every config key (fuzzed)',
      how: `fast-check: ${runs} random (key, value) pairs — any JSON value, binary strings, numbers at the edges, hostile constants — written as YAML and given to parseConfig (the validator \`run\` uses); seed from RELIABILITY_SEED`,
    });
    const hostile = Object.entries(hostileValues()).flatMap(([cls, v]) => (cls === 'special' ? [] : v));
    const value = fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.string({ unit: 'binary', maxLength: 300 }),
      fc.string({ unit: 'grapheme-ascii', maxLength: 50 }).map((s) => `/tmp/${s}`),
      fc.oneof(
        fc.integer(),
        fc.double(),
        fc.bigInt().map(String),
        fc.constantFrom('5MiB', '0', '-1', '1e3', '10s', '0.5h', '99999999999999999999MiB', '1.5.5'),
      ),
      fc.constantFrom(...hostile),
    );
    const t0 = performance.now();
    const problems: string[] = [];
    let valid = 0;
    let invalid = 0;
    const details = fc.check(
      fc.property(fc.constantFrom(...KEYS.map((k) => k.key)), value, (key, v) => {
        const text = configWith(key, v, scratch);
        try {
          const cfg = parseConfig(text, 'fuzz.yaml', {});
          valid++;
          // a value accepted is a value printed later (check-config, logs, object keys)
          const bad = printedControls(cfg);
          if (bad) {
            problems.push(`${key} = ${JSON.stringify(v)?.slice(0, 80)} accepted, and ${bad}`);
            return false;
          }
        } catch (e) {
          if (!(e instanceof ConfigError)) {
            problems.push(`${key} = ${JSON.stringify(v)?.slice(0, 80)}: ${(e as Error)?.name}: ${(e as Error)?.message?.slice(0, 200)}`);
            return false;
          }
          invalid++;

          if (/[\x00-\x08\x0b-\x1f\x7f]/.test(e.message)) {
            problems.push(`${key}: the error message carries a raw control character: ${JSON.stringify(e.message.slice(0, 200))}`);
            return false;
          }
        }
        return true;
      }),
      { numRuns: runs, seed: inject('reliabilitySeed') | 0 },
    );
    if (details.failed)
      problems.unshift(
        `fast-check counterexample (seed ${details.seed}, path ${details.counterexamplePath}): ${JSON.stringify(details.counterexample)?.slice(0, 300)}`,
      );
    fault.took((performance.now() - t0) / 1000);
    fault.record('valid', { outcome: 'accepted as a valid config, nothing unprintable in it', violations: [] }, valid);
    fault.record('invalid', { outcome: 'refused with a ConfigError naming the key', violations: problems.slice(0, 5) }, invalid);
  });

  it('garbage, symlinks (one to a snapshot outside), FIFOs, devices and empty files named like snapshots', async () => {
    const fault = rec.fault({
      id: 'hostile-files',
      category: '6',
      fault: 'garbage, symlinks, FIFOs, device files and empty files named like snapshots',
      how: 'in the snapshot directory while the agent runs: random bytes, a half snapshot, a flipped byte, symlinks (to a real snapshot outside the directory, to one inside, dangling, a loop), FIFOs (one with an RKE zip name), character and block devices (mknod), a directory, 0-byte files under etcdctl, RKE1 and RKE2 names; then a real snapshot after them',
    });
    await fault.run('one directory of everything', async () => {
      const node = 'hostile';
      const dirs = await testDirs();
      const outside = path.join(dirs.root, 'outside');
      await mkdir(outside);
      const secret = await freshSnapshot(env.world, path.join(outside, 'not-for-this-node.db'));
      const real = await freshSnapshot(env.world, path.join(dirs.snapshots, 'real.db'));
      const bytes = await readFile(real.path);
      const d = (n: string): string => path.join(dirs.snapshots, n);
      const { agent } = await env.start(dirs, { node, detect: { settleTimeout: '2s', zipWait: '1s', rescanInterval: '1s' }, log: { level: 'debug' } });
      await writeFile(d('garbage.db'), randomBytes(100_000));
      await writeFile(d('half.db'), bytes.subarray(0, Math.floor(bytes.length / 2)));
      const flipped = Buffer.from(bytes);
      flipped[Math.floor(bytes.length / 3)]! ^= 0xff;
      await writeFile(d('flipped.db'), flipped);
      await symlink(secret.path, d('link-outside.db'));
      await symlink('real.db', d('link-inside.db'));
      await symlink(path.join(outside, 'missing.db'), d('dangling.db'));
      await symlink('loop.db', d('loop.db'));
      await symlink(secret.path, d('unknown-name-link')); // not a snapshot name: ignored, never followed
      await exec('mkfifo', [d('fifo.db'), d('2024-05-01T12:00:00Z_etcd.zip'), d('plain-fifo')]);
      await exec('mknod', [d('null.db'), 'c', '1', '3']);
      await exec('mknod', [d('zero.db'), 'c', '1', '5']);
      await exec('mknod', [d('loop0.db'), 'b', '7', '0']);
      await mkdir(d('dir.db'));
      for (const n of [
        'empty.db',
        'etcd-snapshot-node-a-1714560000',
        'etcd-snapshot-node-a-1714560001.zip',
        'rke_etcd_snapshot_2024-05-01T12:00:00Z.zip',
        'c-abc12-rl-xyz12_2024-05-01T12:00:00Z.zip',
      ])
        await writeFile(d(n), '');
      const expected = {
        format: [
          'garbage.db',
          'link-outside.db',
          'link-inside.db',
          'dangling.db',
          'loop.db',
          'fifo.db',
          '2024-05-01T12:00:00Z_etcd.zip',
          'null.db',
          'zero.db',
          'loop0.db',
          'dir.db',
        ],
        truncated: [
          'half.db',
          'empty.db',
          'etcd-snapshot-node-a-1714560000',
          'etcd-snapshot-node-a-1714560001.zip',
          'rke_etcd_snapshot_2024-05-01T12:00:00Z.zip',
          'c-abc12-rl-xyz12_2024-05-01T12:00:00Z.zip',
        ],
        corrupt: ['flipped.db'],
      };
      const total = Object.values(expected).flat().length;
      let seen = 0;
      // the rescan lists the directory itself too, a second chance to trip over the special files
      const allRejected = agent.waitFor((l) => l.msg === MSG.rejected && ++seen >= total, 60_000, `${total} rejections`);
      const mark = agent.lines.length;
      await allRejected;
      await agent.waitFor((l) => l.msg === 'directory rescanned' && agent.lines.indexOf(l) >= mark, 30_000, 'a rescan');
      // the agent is not blocked on a FIFO or a device: a new snapshot still ships
      const after = await freshSnapshot(env.world, d('after.db'));
      await agent.waitMsg(MSG.shipped, 'after.db');
      await agent.waitMsg(MSG.shipped, 'real.db');
      const violations = await checkInvariants({
        world: env.world,
        bucket: env.bucket,
        prefix: nodePrefix(node),
        expected: [real, after].map((s: RealSnapshot) => ({ name: path.basename(s.path), sha256: s.sha256, size: s.size })),
        forbidden: [{ what: 'the snapshot outside the directory (reached through a symlink)', sha256: secret.sha256 }],
        local: { dir: dirs.snapshots, files: [real, after].map((s) => ({ name: path.basename(s.path), sha256: s.sha256 })) },
        agent,
        metrics: { uploadsSuccess: 2, rejected: { format: expected.format.length, truncated: expected.truncated.length, corrupt: expected.corrupt.length } },
      });
      for (const [reason, names] of Object.entries(expected)) {
        for (const n of names) {
          const l = agent.lines.find((x) => x.msg === MSG.rejected && x.file === d(n));
          if (!l) violations.push(`${n} was never reported as rejected`);
          else if (l.reason !== reason) violations.push(`${n} rejected as ${l.reason}, expected ${reason}`);
          if (
            !(await lstat(d(n)).then(
              () => true,
              () => false,
            ))
          )
            violations.push(`${n} was deleted`);
        }
      }
      await agent.stop();
      return {
        outcome: `${total} rejected with the right reason, none shipped or deleted; real snapshots shipped; the outside snapshot never uploaded`,
        violations,
      };
    });
  });
});
