#!/usr/bin/env node
// Regenerates the README's configuration and exit-code tables from the built agent (npm run build first).
import { readFileSync, writeFileSync } from 'node:fs';
import { asSection, configReference, exitCodeReference, replaceSection } from '../dist/agent/config/reference.js';

export const DOC_PAGES = ['docs/retention.md', 'docs/metrics.md', 'docs/install.md', 'docs/performance.md'];
const path = new URL('../README.md', import.meta.url);
let doc = readFileSync(path, 'utf8');
doc = replaceSection(doc, 'config-reference', configReference());
doc = replaceSection(doc, 'exit-codes', exitCodeReference());
// docs/ pages are the source; the README carries them so that one file tells an operator everything
for (const page of DOC_PAGES) doc = replaceSection(doc, page, asSection(readFileSync(new URL(`../${page}`, import.meta.url), 'utf8')));
writeFileSync(path, doc);
console.log('README.md tables and sections updated');
