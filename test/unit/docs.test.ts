// The README is the front door and the manual lives in docs/ once: generated tables are current, every link
// resolves, and the README stays short.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configReference, exitCodeReference, replaceSection } from '../../agent/config/reference.js';
import { KEYS } from '../../agent/config/keys.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const read = (p: string): string => readFileSync(path.join(ROOT, p), 'utf8');

describe('docs', () => {
  it('docs/configuration.md has the key table generated from the code (run npm run build && node scripts/update-docs.mjs)', () => {
    const page = read('docs/configuration.md');
    expect(replaceSection(page, 'config-reference', configReference())).toBe(page);
    for (const k of KEYS) expect(page).toContain(`\`${k.key}\``);
  });

  it('docs/cli.md has the exit-code table from agent/base/exit.ts', () => {
    const page = read('docs/cli.md');
    expect(replaceSection(page, 'exit-codes', exitCodeReference())).toBe(page);
  });

  it('the README is a front door: at most 20 KB, the two set-up commands near the top, .ci/run calls the test one', () => {
    const readme = read('README.md');
    expect(Buffer.byteLength(readme)).toBeLessThanOrEqual(20 * 1024);
    expect(readme.indexOf('npm run quickstart')).toBeLessThan(2500);
    expect(readme.indexOf('npm test')).toBeLessThan(4000);
    expect(read('.ci/run')).toContain('npm test');
  });

  it('every relative link in the README, CONTRIBUTING.md and docs/ resolves', () => {
    const pages = [
      'README.md',
      'CONTRIBUTING.md',
      ...readdirSync(path.join(ROOT, 'docs'))
        .filter((f) => f.endsWith('.md'))
        .map((f) => `docs/${f}`),
    ];
    const broken: string[] = [];
    for (const p of pages) {
      for (const m of read(p).matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        if (!existsSync(path.resolve(ROOT, path.dirname(p), target))) broken.push(`${p} → ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('nothing in the product points outside the repository', () => {
    const offenders: string[] = [];
    const walk = (d: string): void => {
      for (const e of readdirSync(path.join(ROOT, d), { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) {
          if (!['node_modules', '.results', 'fixtures'].includes(e.name)) walk(p);
        } else if (/\.(ts|mjs|sh|md|yml|yaml|service)$/.test(e.name) && /FACTS(\.md)? ?§|\.\.\/shared\//.test(read(p))) offenders.push(p);
      }
    };
    for (const d of ['agent', 'docs', 'scripts', 'systemd', 'monitoring', 'test', '.ci']) walk(d);
    for (const f of ['README.md', 'CONTRIBUTING.md']) if (/FACTS(\.md)? ?§|\.\.\/shared\//.test(read(f))) offenders.push(f);
    expect(offenders).toEqual([]);
  });
});
