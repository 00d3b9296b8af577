// The house rules that keep agent/ easy to change, checked on every run: imports point one way (verbs and the
// daemon on top, the stages in the middle, formats, store, config and ops at the bottom), the stages do not
// import each other, only the store imports the AWS SDK and only detect imports chokidar.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const AGENT = path.resolve(import.meta.dirname, '../../agent');

/** Lower numbers are lower layers; a file may import its own room or rooms in lower layers. */
const LAYER: Record<string, number> = {
  base: 0,
  config: 1,
  snapshot: 2,
  crypto: 2,
  store: 3,
  ops: 4,
  detect: 5,
  ship: 5,
  retention: 5,
  drill: 5,
  daemon: 6,
  cli: 7,
};

function files(): { room: string; file: string; text: string }[] {
  return readdirSync(AGENT).flatMap((room) =>
    readdirSync(path.join(AGENT, room))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => ({ room, file: `${room}/${f}`, text: readFileSync(path.join(AGENT, room, f), 'utf8') })),
  );
}

const importsOf = (text: string): string[] => [...text.matchAll(/^(?:import|export)[^'"]*from\s+'([^']+)'/gm)].map((m) => m[1]!);

describe('architecture', () => {
  const all = files();

  it('every file lives in a known room', () => {
    expect(all.length).toBeGreaterThan(40);
    for (const f of all) expect(LAYER, f.file).toHaveProperty(f.room);
  });

  it('imports point one way: down, or within the room; the stages never import each other', () => {
    const wrong: string[] = [];
    const edges = new Map<string, number>();
    for (const f of all) {
      for (const spec of importsOf(f.text)) {
        if (!spec.startsWith('.')) continue;
        const target = path.relative(AGENT, path.resolve(AGENT, f.room, spec)).split(path.sep)[0]!;
        if (target === f.room) continue;
        const edge = `${f.room} → ${target}`;
        edges.set(edge, (edges.get(edge) ?? 0) + 1);
        if (!(target in LAYER)) wrong.push(`${f.file} imports ${spec}: outside agent/`);
        else if (LAYER[target]! >= LAYER[f.room]!) wrong.push(`${f.file} imports ${spec}: ${edge} does not point down`);
      }
    }
    expect(wrong).toEqual([]);
    // printed for the record (the closing note lists them)
    console.log([...edges.keys()].sort((a, b) => LAYER[b.split(' ')[0]!]! - LAYER[a.split(' ')[0]!]! || a.localeCompare(b)).join('\n'));
  });

  it('only the store talks to the AWS SDK, only detect to chokidar, only cli draws progress', () => {
    const users = (pkg: RegExp): string[] => all.filter((f) => importsOf(f.text).some((s) => pkg.test(s))).map((f) => f.room);
    expect(new Set(users(/^@aws-sdk\/|^@smithy\//))).toEqual(new Set(['store']));
    expect(new Set(users(/^chokidar$/))).toEqual(new Set(['detect']));
    expect(new Set(users(/^cli-progress$/))).toEqual(new Set(['cli']));
  });

  it('no code at import time except in the entry point: module scope holds declarations only', () => {
    const offenders: string[] = [];
    for (const f of all) {
      if (f.file === 'cli/main.ts') continue;
      // a statement at the start of a line that calls something: the shape of an import-time side effect
      for (const line of f.text.split('\n'))
        if (/^(?!export |import |const |let |function |async function |class |interface |type |\/\/|\/\*| \*|\}|\)|\]|$)[A-Za-z_$][\w$.]*\(/.test(line))
          offenders.push(`${f.file}: ${line.trim()}`);
    }
    expect(offenders).toEqual([]);
  });
});
