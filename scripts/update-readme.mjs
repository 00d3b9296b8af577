#!/usr/bin/env node
// Regenerates the README's configuration and exit-code tables from the built agent (npm run build first).
import { readFileSync, writeFileSync } from 'node:fs';
import { configReference, exitCodeReference, replaceSection } from '../dist/agent/reference.js';

const path = new URL('../README.md', import.meta.url);
let doc = readFileSync(path, 'utf8');
doc = replaceSection(doc, 'config-reference', configReference());
doc = replaceSection(doc, 'exit-codes', exitCodeReference());
writeFileSync(path, doc);
console.log('README.md tables updated');
