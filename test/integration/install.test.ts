// scripts/install.sh from the release tarball, as config management runs it: twice in a row (the
// second run changes nothing), as an ordinary user into a --destdir, and as root on a "host" that is a
// private mount namespace (its own copy of /etc, an empty /usr/local and /var/lib), so that creating the
// etcd-backup user and installing into /etc touch nothing outside the test. The Ansible example runs
// there too.
import { chmod, chown, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeTemps, runProgram, TARBALL, tempDir, unpackRelease, VERSION } from '../support/release.js';
import { PROJECT_ROOT } from '../support/world.js';

let pkg: string;

beforeAll(async () => {
  pkg = await unpackRelease();
});

afterAll(removeTemps);

const CHANGE = /^(created|installed|updated|fixed|reloaded) /m;

/** "STATUS PATH (DETAIL)" lines of install.sh, keyed by path or item. */
function statuses(stdout: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const r = /^(\w+)\s+(.+?)(?: \((.*)\))?$/.exec(line);
    if (r && !['next:', 'install.sh:'].includes(r[1]!)) m.set(r[2]!, `${r[1]}${r[3] ? ` ${r[3]}` : ''}`);
  }
  return m;
}

describe('install.sh as an ordinary user into --destdir (no user created, no owners changed)', () => {
  it('installs, then a second run reports no changes', async () => {
    const dir = await tempDir('install-user-');
    await chmod(dir, 0o755);
    const dest = path.join(dir, 'root');
    await mkdir(dest);
    await chown(dest, 65534, 65534);
    const run = () =>
      runProgram('/usr/bin/setpriv', [
        '--reuid=nobody',
        '--regid=nogroup',
        '--clear-groups',
        path.join(pkg, 'install.sh'),
        '--destdir',
        dest,
        '--prefix',
        '/opt/eba',
      ]);
    const first = await run();
    expect(first.code, first.stderr).toBe(0);
    const s = statuses(first.stdout);
    expect(s.get('user etcd-backup')).toMatch(/^skipped not root/);
    expect(s.get(`${dest}/opt/eba/bin/etcd-backup-agent`)).toBe(`installed version ${VERSION}`);
    expect(s.get(`${dest}/etc/etcd-backup-agent/`)).toBe('created nobody:nogroup 0750');
    expect(s.get(`${dest}/etc/etcd-backup-agent/credentials`)).toBe('installed nobody:nogroup 0600');
    expect(first.stdout).toMatch(/^install\.sh: 6 changes$/m);
    // --prefix moves the binary, and the unit follows it
    const unit = await readFile(`${dest}/etc/systemd/system/etcd-backup-agent.service`, 'utf8');
    expect(unit).toMatch(/^ExecStart=\/opt\/eba\/bin\/etcd-backup-agent --config \/etc\/etcd-backup-agent\/config\.yaml run$/m);

    const second = await run();
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).not.toMatch(CHANGE);
    expect(second.stdout.trim().split('\n').at(-1)).toBe('install.sh: no changes');
  });
});

describe('install.sh as root on a host (a private mount namespace)', () => {
  it('creates the user, sets owners and modes as documented, changes nothing the second time, repairs drift, keeps the config; the Ansible example converges', async () => {
    const sandbox = await tempDir('install-root-');
    const etc = path.join(sandbox, 'etc');
    for (const d of ['etc', 'local', 'varlib', 'out']) await mkdir(path.join(sandbox, d), { recursive: true });
    const copied = await runProgram('cp', ['-a', '/etc/.', `${etc}/`]);
    expect(copied.code, copied.stderr).toBe(0);
    const out = path.join(sandbox, 'out');
    const script = `
      set -eu
      mount --bind "$SANDBOX/etc" /etc
      mount --bind "$SANDBOX/local" /usr/local
      mount --bind "$SANDBOX/varlib" /var/lib
      cd "$PKG"
      ./install.sh >"$OUT/run1" 2>&1
      ./install.sh >"$OUT/run2" 2>&1
      getent passwd etcd-backup >"$OUT/passwd"
      stat -c '%n %U:%G %a' /etc/etcd-backup-agent /etc/etcd-backup-agent/config.yaml /etc/etcd-backup-agent/credentials \\
        /var/lib/etcd-backup-agent /usr/local/bin/etcd-backup-agent /etc/systemd/system/etcd-backup-agent.service >"$OUT/stat"
      systemd-analyze verify /etc/systemd/system/etcd-backup-agent.service >"$OUT/verify" 2>&1 || echo "exit $?" >>"$OUT/verify"
      # drift: a loosened directory, an edited config, a damaged binary
      chmod 0755 /etc/etcd-backup-agent
      echo '# edited by the operator' >>/etc/etcd-backup-agent/config.yaml
      printf 'x' >>/usr/local/bin/etcd-backup-agent
      ./install.sh >"$OUT/run3" 2>&1
      ./install.sh >"$OUT/run4" 2>&1
      tail -n 1 /etc/etcd-backup-agent/config.yaml >"$OUT/config-tail"
      for i in 1 2; do
        ansible-playbook -i localhost, -c local "$PLAYBOOK" -e ansible_become=false -e agent_hosts=localhost \\
          -e agent_tarball="$TARBALL" -e agent_manage_service=false \\
          -e agent_s3_bucket=etcd-backups -e agent_s3_access_key=AKIAEXAMPLE -e agent_s3_secret_key=secret-example-key \\
          >"$OUT/ansible$i" 2>&1
      done
      cp /etc/etcd-backup-agent/config.yaml "$OUT/ansible-config"
      stat -c '%U:%G %a' /etc/etcd-backup-agent/credentials >"$OUT/ansible-credentials"
    `;
    const r = await runProgram('/usr/bin/unshare', ['--mount', '--propagation', 'private', 'bash', '-c', script], {
      env: {
        ...process.env,
        SANDBOX: sandbox,
        PKG: pkg,
        OUT: out,
        TARBALL,
        PLAYBOOK: path.join(PROJECT_ROOT, 'scripts/ansible/playbook.yml'),
        ANSIBLE_NOCOLOR: '1',
      },
      timeoutMs: 240_000,
    });
    const read = (f: string) => readFile(path.join(out, f), 'utf8').catch(() => '(missing)');
    expect(r.code, `${r.stderr}\nrun1:\n${await read('run1')}\nansible1:\n${await read('ansible1')}`).toBe(0);

    const run1 = await read('run1');
    const s1 = statuses(run1);
    expect(s1.get('group etcd-backup')).toBe('created system group');
    expect(s1.get('user etcd-backup')).toMatch(/^created system user, no login/);
    expect(run1).toMatch(/^install\.sh: 8 changes$/m);
    expect(await read('passwd')).toMatch(/^etcd-backup:x:\d+:\d+:etcd-backup-agent:\/var\/lib\/etcd-backup-agent:\/usr\/sbin\/nologin$/m);
    expect((await read('stat')).trim().split('\n')).toEqual([
      '/etc/etcd-backup-agent root:etcd-backup 750',
      '/etc/etcd-backup-agent/config.yaml root:etcd-backup 640',
      '/etc/etcd-backup-agent/credentials root:root 600',
      '/var/lib/etcd-backup-agent etcd-backup:etcd-backup 700',
      '/usr/local/bin/etcd-backup-agent root:root 755',
      '/etc/systemd/system/etcd-backup-agent.service root:root 644',
    ]);
    // the unit as installed, where its ExecStart binary really exists
    expect((await read('verify')).trim()).toBe('');

    const run2 = await read('run2');
    expect(run2).not.toMatch(CHANGE);
    expect(run2.trim().split('\n').at(-1)).toBe('install.sh: no changes');

    const s3 = statuses(await read('run3'));
    expect(s3.get('/etc/etcd-backup-agent/')).toBe('fixed mode 0750');
    expect(s3.get('/usr/local/bin/etcd-backup-agent')).toBe(`updated version ${VERSION}`);
    expect(s3.get('/etc/etcd-backup-agent/config.yaml')).toBe('kept exists; never overwritten');
    expect(await read('config-tail')).toBe('# edited by the operator\n');
    expect((await read('run4')).trim().split('\n').at(-1)).toBe('install.sh: no changes');

    // Ansible: the first run changes things, the second converges with nothing to do
    const a1 = await read('ansible1');
    const a2 = await read('ansible2');
    expect(a1).toMatch(/localhost\s+: ok=\d+\s+changed=[1-9]/);
    expect(a2, a2).toMatch(/localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0/);
    expect(a1 + a2).not.toContain('secret-example-key');
    expect(parse(await read('ansible-config'))).toMatchObject({ s3: { bucket: 'etcd-backups' } });
    expect((await read('ansible-credentials')).trim()).toBe('root:root 600');
  });
});

describe('scripts/ansible/playbook.yml', () => {
  it('passes ansible-playbook --syntax-check', async () => {
    const r = await runProgram('ansible-playbook', ['--syntax-check', path.join(PROJECT_ROOT, 'scripts/ansible/playbook.yml')], {
      env: { ...process.env, ANSIBLE_NOCOLOR: '1' },
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('playbook: ');
  });
});
