import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { asSection, configReference, exitCodeReference, replaceSection } from '../../agent/config/reference.js';
import { KEYS } from '../../agent/config/config.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README', () => {
  it('has the configuration reference generated from the key table (run scripts/update-readme.mjs)', () => {
    expect(replaceSection(readme, 'config-reference', configReference())).toBe(readme);
    for (const k of KEYS) expect(readme).toContain(`\`${k.key}\``);
  });
  it('has the exit-code table from agent/exit.ts', () => {
    expect(replaceSection(readme, 'exit-codes', exitCodeReference())).toBe(readme);
  });
  it.each(['docs/retention.md', 'docs/metrics.md', 'docs/install.md', 'docs/performance.md'])('carries %s as a section (run scripts/update-readme.mjs)', (page) => {
    const body = asSection(readFileSync(new URL(`../../${page}`, import.meta.url), 'utf8'));
    expect(replaceSection(readme, page, body)).toBe(readme);
  });
  it('names the one-line quick start and test commands that .ci/run uses', () => {
    expect(readme).toContain('npm run quickstart');
    expect(readme).toContain('npm test');
    expect(readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8')).toContain('npm test');
  });
});
