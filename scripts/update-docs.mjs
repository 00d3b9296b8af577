#!/usr/bin/env node
// Regenerates the tables the docs carry from the code (npm run build first): the configuration reference in
// docs/configuration.md from the key table, the exit codes in docs/cli.md from the exit-code table.
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference, exitCodeReference, replaceSection } from '../dist/agent/config/reference.js';

export const GENERATED = [
  ['docs/configuration.md', 'config-reference', configReference],
  ['docs/cli.md', 'exit-codes', exitCodeReference],
];

for (const [page, section, make] of GENERATED) {
  const url = new URL(`../${page}`, import.meta.url);
  writeFileSync(url, replaceSection(readFileSync(url, 'utf8'), section, make()));
}
console.log(`updated ${GENERATED.map(([p, s]) => `${p} (${s})`).join(', ')}`);
