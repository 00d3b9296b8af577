// The configuration reference and exit-code table as Markdown, from the same tables the code uses,
// so the README (and `etcd-backup-agent help config`) cannot drift from the behaviour.
import { KEYS } from './keys.js';
import { EXIT_TABLE } from '../base/exit.js';

const cell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function configReference(): string {
  const rows = KEYS.map((k) => {
    const def =
      k.default === undefined
        ? ''
        : Array.isArray(k.default)
          ? k.default.length
            ? JSON.stringify(k.default)
            : '`[]`'
          : `\`${typeof k.default === 'string' ? k.default : JSON.stringify(k.default)}\``;
    const values = k.values ? ` One of: ${k.values.map((v) => `\`${v}\``).join(', ')}.` : '';
    return `| \`${k.key}\` | ${k.kind} | ${def} | ${cell(k.doc + values)} |`;
  });
  return ['| key | type | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

export function exitCodeReference(): string {
  return ['| code | meaning |', '| --- | --- |', ...EXIT_TABLE.map(([c, d]) => `| ${c} | ${cell(d)} |`)].join('\n');
}

/** Replaces the text between `<!-- BEGIN name -->` and `<!-- END name -->`. */
export function replaceSection(doc: string, name: string, body: string): string {
  const begin = `<!-- BEGIN ${name} -->`;
  const end = `<!-- END ${name} -->`;
  const i = doc.indexOf(begin);
  const j = doc.indexOf(end);
  if (i < 0 || j < i) throw new Error(`section ${name} not found`);
  return `${doc.slice(0, i + begin.length)}\n${body}\n${doc.slice(j)}`;
}

/** A docs/ page as a README section: every heading one level deeper. */
export function asSection(markdown: string): string {
  let fenced = false;
  return markdown
    .trimEnd()
    .split('\n')
    .map((line) => {
      if (line.startsWith('```')) fenced = !fenced;
      return !fenced && /^#{1,5} /.test(line) ? `#${line}` : line;
    })
    .join('\n');
}
