// Security checks. Runs last in the suite (vitest.config.ts orders it), because its first check greps
// everything every other file captured: the secret key must appear in no log, error, /metrics body or
// crash output. Also: the metrics endpoint with TLS and basic auth refuses what it should; the files and
// directories the agent creates are private whatever the umask; no high or critical vulnerability in the
// production dependencies.
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { agentCommand, agentEnv } from '../support/agent.js';
import { CAPTURED_DIR, capture, freshSnapshot, nodePrefix, Recorder, setupEnv, testDirs, type Env } from './harness.js';
import { checkInvariants, MSG } from './invariants.js';
import { PROJECT_ROOT } from '../support/world.js';

const exec = promisify(execFile);
const rec = new Recorder('security');
let env: Env;
const PASSWORD = 'metrics-password-Zq8vR2kP9xL4';
const WRONG_SECRET = 'wrongsecretkey-3f9a1c7e5b2d8f6a0c4e';

beforeAll(async () => {
  env = await setupEnv('security');
});

afterAll(async () => {
  await env?.close();
  await rec.write();
});

interface Reply {
  status: number;
  body: string;
  error?: string;
}

/** GET over HTTPS trusting `ca`, with optional basic auth; or plain HTTP to the same port. */
function get(url: string, opts: { ca?: Buffer; auth?: string; plain?: boolean }): Promise<Reply> {
  return new Promise((resolve) => {
    const u = new URL(url);
    const headers: Record<string, string> = opts.auth ? { Authorization: `Basic ${Buffer.from(opts.auth).toString('base64')}` } : {};
    const req = (opts.plain ? httpRequest : httpsRequest)(
      { host: u.hostname, port: u.port, path: u.pathname, headers, ...(opts.plain ? {} : { ca: opts.ca }), timeout: 10_000 },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, body: '', error: e.code ?? e.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

describe('security', () => {
  it('leak-prone paths: crash, wrong credentials, secrets in the config, debug logging', async () => {
    const fault = rec.fault({
      id: 'secret-provocations',
      category: 'security',
      fault: 'situations that tend to print credentials',
      how: 'the agent crashing (uncaught exception and unhandled rejection whose message holds the secret key), S3 refusing a wrong secret key, the secret key written into the config file and into the endpoint URL, a credentials file, debug logging; all output kept for the grep below',
    });
    const world = env.world;
    const dirs = await testDirs();
    // a crash whose message carries the secret (as an SDK error echoing a request could). Preloaded
    // with --require: the release executable (a single-executable application) ignores --import.
    const preload = path.join(dirs.root, 'crash.cjs');
    await writeFile(preload, `setTimeout(() => { throw new Error('boom with ' + process.env.AWS_SECRET_ACCESS_KEY); }, 4000);\n`);
    const rejectPreload = path.join(dirs.root, 'reject.cjs');
    await writeFile(rejectPreload, `setTimeout(() => { Promise.reject(new Error('rejected with ' + process.env.AWS_SECRET_ACCESS_KEY)); }, 4000);\n`);
    for (const [label, file] of [
      ['uncaught exception', preload],
      ['unhandled rejection', rejectPreload],
    ] as const) {
      await fault.run(`crash: ${label}`, async () => {
        const { agent } = await env.start(dirs, { node: 'crash', log: { level: 'debug' } }, { env: agentEnv(world, { NODE_OPTIONS: `--require=${file}` }) });
        const exit = await agent.exited;
        const violations: string[] = [];
        if (exit.code !== 70) violations.push(`exit ${exit.code ?? exit.signal} after a crash, expected 70`);
        if (!/fatal: /.test(agent.stderr)) violations.push('no "fatal:" line on stderr');
        if (!agent.stderr.includes('**redacted**')) violations.push('the crash output does not show the redaction');
        if ((agent.stdout + agent.stderr).includes(world.s3.secretAccessKey)) violations.push('the secret key is in the crash output');
        return { outcome: 'exit 70, crash printed with the secret redacted', violations };
      });
    }
    await fault.run('wrong secret key', async () => {
      const d = await testDirs();
      const { agent } = await env.start(
        d,
        { node: 'wrong-secret', log: { level: 'debug' } },
        { env: agentEnv(world, { AWS_SECRET_ACCESS_KEY: WRONG_SECRET }) },
      );
      await freshSnapshot(world, path.join(d.snapshots, 'a.db'));
      const failed = await agent.waitMsg(MSG.failed, 'a.db');
      const violations: string[] = [];
      if (failed.reason !== 'auth') violations.push(`a refused signature counted as ${failed.reason}, not auth`);
      if ((await agent.metric('etcdbackup_upload_failures_total{reason="auth"}')) === 0)
        violations.push('etcdbackup_upload_failures_total{reason="auth"} stayed 0');
      const scraped = await agent.metrics();
      await capture(env.file, 'metrics (wrong secret)', scraped);
      await agent.stop();
      for (const s of [WRONG_SECRET, world.s3.secretAccessKey])
        if ((agent.stdout + agent.stderr + scraped).includes(s)) violations.push('a secret key is in the output');
      return { outcome: 'refused as auth, retried, no key printed', violations };
    });
    await fault.run('secret key in the config file', async () => {
      const d = await testDirs();
      const violations: string[] = [];
      for (const bad of [
        { s3: { secretAccessKey: world.s3.secretAccessKey } },
        { s3: { endpoint: `http://${world.s3.accessKeyId}:${world.s3.secretAccessKey}@127.0.0.1:1` } },
      ]) {
        await writeFile(
          d.config,
          JSON.stringify({ snapshotDir: d.snapshots, stateDir: d.state, s3: { bucket: env.bucket, endpoint: world.s3.endpoint, ...bad.s3 } }),
        );
        for (const verb of [['check-config'], ['run']]) {
          const r = await env.cli(['--config', d.config, ...verb], { timeoutMs: 30_000 });
          if (r.code !== 78) violations.push(`${verb[0]} with ${Object.keys(bad.s3)[0]} holding the secret exited ${r.code}, expected 78`);
          if ((r.stdout + r.stderr).includes(world.s3.secretAccessKey))
            violations.push(`${verb[0]} echoed the secret key from the config (${Object.keys(bad.s3)[0]})`);
        }
      }
      return { outcome: 'refused with exit 78, value never echoed', violations };
    });
    await fault.run('credentials file', async () => {
      const d = await testDirs();
      const creds = path.join(d.root, 'credentials');
      await writeFile(creds, `[default]\naws_access_key_id = ${world.s3.accessKeyId}\naws_secret_access_key = ${world.s3.secretAccessKey}\n`, { mode: 0o600 });
      const env0 = agentEnv(world);
      delete env0.AWS_ACCESS_KEY_ID;
      delete env0.AWS_SECRET_ACCESS_KEY;
      const { agent } = await env.start(d, { node: 'credfile', s3: { credentialsFile: creds }, log: { level: 'debug' } }, { env: env0 });
      const s = await freshSnapshot(world, path.join(d.snapshots, 'a.db'));
      await agent.waitMsg(MSG.shipped, 'a.db');
      const violations = await checkInvariants({
        world,
        bucket: env.bucket,
        prefix: nodePrefix('credfile'),
        expected: [{ name: 'a.db', sha256: s.sha256, size: s.size }],
        agent,
        metrics: { uploadsSuccess: 1 },
      });
      await capture(env.file, 'metrics (credentials file)', await agent.metrics());
      await agent.stop();
      return { outcome: 'shipped with keys from s3.credentialsFile', violations };
    });
  });

  it('the metrics endpoint with TLS and basic auth refuses unauthenticated scrapes', async () => {
    const fault = rec.fault({
      id: 'metrics-auth',
      category: 'security',
      fault: 'unauthenticated or wrongly authenticated scrapes of /metrics, /healthz, /readyz',
      how: 'agent serving HTTPS (self-signed certificate made with openssl) with basic auth; requests without credentials, with a wrong password, a wrong user, over plain HTTP; then the right ones',
    });
    await fault.run('TLS + basic auth', async () => {
      const dirs = await testDirs();
      const cert = path.join(dirs.root, 'metrics.crt');
      const key = path.join(dirs.root, 'metrics.key');
      await exec('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        key,
        '-out',
        cert,
      ]);
      const pwFile = path.join(dirs.root, 'password');
      await writeFile(pwFile, `${PASSWORD}\n`, { mode: 0o600 });
      const { agent } = await env.start(dirs, {
        node: 'tls',
        metrics: { tlsCertFile: cert, tlsKeyFile: key, basicAuthUser: 'prometheus', basicAuthPasswordFile: pwFile },
        log: { level: 'debug' },
      });
      const ca = await readFile(cert);
      const base = agent.metricsUrl.replace('/metrics', '');
      const httpsBase = base.replace('http://', 'https://');
      const violations: string[] = [];
      for (const p of ['/metrics', '/healthz', '/readyz']) {
        for (const [label, auth] of [
          ['no credentials', undefined],
          ['wrong password', 'prometheus:nope'],
          ['wrong user', `admin:${PASSWORD}`],
          ['empty password', 'prometheus:'],
        ] as const) {
          const r = await get(httpsBase + p, { ca, auth });
          if (r.status !== 401) violations.push(`${p} with ${label} answered ${r.status || r.error}, expected 401`);
          if (r.body.includes('etcdbackup_')) violations.push(`${p} with ${label} leaked metrics`);
        }
        const plain = await get(base + p, { plain: true, auth: `prometheus:${PASSWORD}` });
        if (plain.status === 200) violations.push(`${p} answered 200 over plain HTTP`);
      }
      const ok = await get(`${httpsBase}/metrics`, { ca, auth: `prometheus:${PASSWORD}` });
      if (ok.status !== 200 || !ok.body.includes('etcdbackup_build_info')) violations.push(`the right credentials got ${ok.status || ok.error}`);
      await capture(env.file, 'metrics over TLS', ok.body);
      await agent.waitMsg('metrics request refused: missing or wrong basic-auth credentials');
      await agent.stop();
      if ((agent.stdout + agent.stderr).includes(PASSWORD)) violations.push('the basic-auth password is in the log');
      return { outcome: '401 without or with wrong credentials on every path, no answer over plain HTTP, 200 with the right ones', violations };
    });
  });

  it('files and directories the agent creates are private whatever the umask', async () => {
    const fault = rec.fault({
      id: 'file-modes',
      category: 'security',
      fault: 'files the agent writes readable by other users',
      how: 'agent run under umask 000: the state directory it creates, the ledger (written as a temp file, then renamed); `fetch --output` (temp file, then renamed) and `import-rke` (credentials) under umask 000',
    });
    await fault.run('umask 000', async () => {
      const dirs = await testDirs();
      const stateDir = path.join(dirs.root, 'var', 'lib', 'agent-state');
      const { agent } = await env.start(dirs, { node: 'modes', stateDir }, { umask: '000' });
      await freshSnapshot(env.world, path.join(dirs.snapshots, 'a.db'));
      await agent.waitMsg(MSG.shipped, 'a.db');
      await agent.stop();
      const violations: string[] = [];
      const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777;
      const expectMode = async (p: string, want: number, what: string): Promise<void> => {
        const m = await mode(p).catch(() => -1);
        if (m !== want)
          violations.push(`${what} ${p} has mode ${m < 0 ? 'missing' : m.toString(8).padStart(4, '0')}, expected ${want.toString(8).padStart(4, '0')}`);
      };
      await expectMode(stateDir, 0o700, 'state directory');
      await expectMode(path.join(dirs.root, 'var'), 0o700, 'state directory parent it created');
      await expectMode(path.join(stateDir, 'ledger.json'), 0o600, 'ledger (the renamed temp file)');
      const leftovers = (await readdir(stateDir)).filter((n) => n !== 'ledger.json');
      if (leftovers.length) violations.push(`files left in the state directory: ${leftovers.join(', ')}`);

      const out = path.join(dirs.root, 'fetched', 'a.db');
      const cfgArgs = ['--config', dirs.config];
      const sh = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> =>
        new Promise((resolve) =>
          execFile('sh', ['-c', 'umask 000 && exec "$@"', 'sh', ...agentCommand(args)], { env: agentEnv(env.world) }, (err, stdout, stderr) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
          ),
        );
      const f = await sh([...cfgArgs, 'fetch', '--latest', '--output', out]);
      await capture(env.file, 'fetch', f.stdout + f.stderr);
      if (f.code !== 0) violations.push(`fetch exited ${f.code}: ${f.stderr.slice(0, 200)}`);
      else {
        await expectMode(out, 0o600, 'fetched snapshot');
        await expectMode(path.dirname(out), 0o700, 'directory fetch created for its output');
      }
      const imported = path.join(dirs.root, 'imported');
      const r = await sh(['import-rke', path.join(PROJECT_ROOT, 'test/fixtures/rke/rancher-cluster-v0.2.yml'), '--output-dir', imported]);
      await capture(env.file, 'import-rke', r.stdout + r.stderr);
      if (r.code !== 0) violations.push(`import-rke exited ${r.code}: ${r.stderr.slice(0, 200)}`);
      else {
        await expectMode(path.join(imported, 'credentials'), 0o600, 'imported credentials');
        for (const n of await readdir(imported))
          if ((await mode(path.join(imported, n))) & 0o007) violations.push(`import-rke wrote ${n} readable or writable by other users`);
        if ((await mode(imported)) & 0o007) violations.push('import-rke created its directory open to other users');
        if ((r.stdout + r.stderr).includes('myaccesssecret')) violations.push('import-rke printed the secret key');
      }
      return { outcome: 'state dir 0700, ledger 0600, fetched file 0600, imported credentials 0600, nothing open to others', violations };
    });
  });

  it('npm audit --omit=dev: no high or critical vulnerability', async (ctx) => {
    const fault = rec.fault({
      id: 'npm-audit',
      category: 'security',
      fault: 'a known high or critical vulnerability in a production dependency',
      how: '`npm audit --omit=dev --json` against the npm registry',
    });
    // Where the registry refuses audits (a mirror, or a network that lets only GET through) there is nothing
    // to check against: reported as not run, never as passed.
    const cannot = (why: string): void => {
      if (process.env.RELIABILITY_REQUIRE_AUDIT === '1') throw new Error(`npm audit could not audit the production dependencies: ${why}`);
      fault.notRun(why);
      ctx.skip(`npm audit: ${why}`);
    };
    let out: string;
    try {
      out = (await exec('npm', ['audit', '--omit=dev', '--json'], { cwd: PROJECT_ROOT, timeout: 180_000, maxBuffer: 64 * 1024 * 1024 })).stdout;
    } catch (e) {
      // npm audit exits 1 when it finds anything; the JSON is still on stdout
      out = (e as { stdout?: string }).stdout ?? '';
      if (!out.trim().startsWith('{'))
        return cannot(
          `npm audit did not run: ${String((e as { stderr?: string }).stderr ?? e)
            .trim()
            .split('\n')[0]!
            .slice(0, 300)}`,
        );
    }
    const report = JSON.parse(out) as {
      message?: string;
      statusCode?: number;
      error?: { code?: string; summary?: string };
      metadata?: { vulnerabilities?: Record<string, number>; dependencies?: { prod?: number } };
    };
    if (report.error || !report.metadata) {
      const registry = (await exec('npm', ['config', 'get', 'registry'], { cwd: PROJECT_ROOT })).stdout.trim();
      const why = report.message || report.error?.summary || report.error?.code || 'no report';
      return cannot(`the registry did not answer the audit: ${why}${report.statusCode ? ` (HTTP ${report.statusCode} from ${registry})` : ''}`);
    }
    await fault.run('npm audit', async () => {
      const v = report.metadata?.vulnerabilities ?? {};
      const violations: string[] = [];
      if ((v.high ?? 0) > 0 || (v.critical ?? 0) > 0) violations.push(`npm audit: ${v.high ?? 0} high, ${v.critical ?? 0} critical in production dependencies`);
      return {
        outcome: `${v.critical ?? 0} critical, ${v.high ?? 0} high, ${v.moderate ?? 0} moderate, ${v.low ?? 0} low (${report.metadata?.dependencies?.prod ?? '?'} production dependencies)`,
        violations,
      };
    });
  });

  // last: everything above and every other file of the suite has been captured by now
  it('the secret key never appears in anything the suite captured', async () => {
    const fault = rec.fault({
      id: 'secret-grep',
      category: 'security',
      fault: 'the S3 secret key (or the metrics password) printed anywhere',
      how: 'every line every agent process and CLI run printed in the whole reliability suite (stdout, stderr, crash output), every /metrics body scraped, grepped for the secret key, the wrong secret key used above and the metrics password',
    });
    await fault.run('whole suite', async () => {
      await mkdir(CAPTURED_DIR, { recursive: true });
      const files = (await readdir(CAPTURED_DIR)).filter((f) => f.endsWith('.log'));
      const secrets = { 'S3 secret key': env.world.s3.secretAccessKey, 'wrong secret key': WRONG_SECRET, 'metrics password': PASSWORD };
      const violations: string[] = [];
      let bytes = 0;
      let sections = 0;
      for (const f of files) {
        const text = await readFile(path.join(CAPTURED_DIR, f), 'utf8');
        bytes += text.length;
        sections += text.split('\n===== ').length - 1;
        for (const [what, s] of Object.entries(secrets)) {
          const at = text.indexOf(s);
          if (at >= 0) violations.push(`the ${what} appears in ${f}: …${text.slice(Math.max(0, at - 120), at).replace(/\n/g, ' ')}[SECRET]…`);
        }
      }
      // the grep must have seen this file's own provocations at least
      if (!files.includes('security.log') || sections === 0) violations.push('nothing was captured: the grep would pass vacuously');
      return {
        outcome: `${files.length} files, ${sections} captured outputs, ${(bytes / 2 ** 20).toFixed(1)} MiB: no secret`,
        violations,
        detail: `scanned ${files.length} test files' output`,
      };
    });
  });
});
