// Writes systemd/config.example.yaml from the KEYS table in agent/config.ts, so the example lists
// every key with its real default and cannot drift from the code.
//
//   npm run gen:config-example            (builds first, then writes the file)
//   node scripts/gen-config-example.mjs --check   exit 1 if the committed file is stale
//
// Every key is commented out except s3.bucket, which is left empty: an installed but unedited
// config then stops the agent with "s3.bucket: missing" (exit 78) instead of uploading somewhere.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stringify } from 'yaml';

const WIDTH = 100;
const LIVE = 's3.bucket';

function wrap(text, prefix) {
  const lines = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && prefix.length + line.length + 1 + word.length > WIDTH) {
      lines.push(prefix + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(prefix + line);
  return lines;
}

function scalar(value) {
  if (value === undefined) return '';
  return ` ${stringify(value, { lineWidth: 0 }).trimEnd()}`;
}

/** @param {readonly {key: string, doc: string, default?: unknown, values?: readonly string[]}[]} keys */
export function renderConfigExample(keys) {
  const out = [
    '# etcd-backup-agent configuration: /etc/etcd-backup-agent/config.yaml',
    '# Generated from the KEYS table in agent/config.ts by scripts/gen-config-example.mjs; do not edit.',
    '#',
    '# Every key is shown with its default, commented out: uncomment a line to change it. Only',
    '# s3.bucket has no default. Durations: 30s, 5m, 2h, 3d. Sizes: 16MiB, 64MB.',
    '# Secrets never go here: S3 keys come from /etc/etcd-backup-agent/credentials (loaded by the unit),',
    '# the environment, an instance role, or the file named by s3.credentialsFile.',
    '# Check it with: etcd-backup-agent --config /etc/etcd-backup-agent/config.yaml check-config',
  ];
  // table order; a section header is commented out unless the live key is inside it
  let openPath = [];
  for (const spec of keys) {
    const parts = spec.key.split('.');
    const name = parts.pop();
    const live = spec.key === LIVE;
    let common = 0;
    while (common < parts.length && common < openPath.length && parts[common] === openPath[common]) common++;
    for (let d = common; d < parts.length; d++) {
      const sectionLive = LIVE.startsWith(`${parts.slice(0, d + 1).join('.')}.`);
      out.push('');
      out.push(`${'  '.repeat(d)}${sectionLive ? '' : '#'}${parts[d]}:`);
    }
    openPath = parts;
    const indent = '  '.repeat(parts.length);
    if (common === parts.length) out.push('');
    const doc = spec.values ? `${spec.doc} One of: ${spec.values.join(', ')}.` : spec.doc;
    out.push(...wrap(doc, `${indent}# `));
    out.push(`${indent}${live ? '' : '#'}${name}:${live ? '' : scalar(spec.default)}`);
  }
  return `${out.join('\n')}\n`;
}

async function main() {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const target = path.join(root, 'systemd/config.example.yaml');
  const { KEYS } = await import(pathToFileURL(path.join(root, 'dist/agent/config/config.js')).href);
  const text = renderConfigExample(KEYS);
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(target, 'utf8');
    } catch {
      /* missing counts as stale */
    }
    if (current !== text) {
      console.error(`${path.relative(process.cwd(), target)} is stale: run npm run gen:config-example`);
      process.exit(1);
    }
    console.log(`${path.relative(process.cwd(), target)} is up to date`);
    return;
  }
  writeFileSync(target, text);
  console.log(`wrote ${path.relative(process.cwd(), target)} (${KEYS.length} keys)`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
