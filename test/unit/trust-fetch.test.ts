// Issue 10, item 7, the races a CLI test cannot aim: the local side of `fetch` changing while it downloads.
// The snapshot is shipped into the in-memory store by the real Uploader; the store's body stream lets the
// test act between two chunks. Before: a local failure at the end (EISDIR when --output became a directory)
// was reported as an S3 error (69) and could leave the `.part` file behind.
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRegular, fingerprint } from '../../agent/base/files.js';
import { fetchCommand, type FetchOptions } from '../../agent/cli/fetch.js';
import type { Out } from '../../agent/cli/output.js';
import type { Config } from '../../agent/config/keys.js';
import { parseConfig } from '../../agent/config/parse.js';
import { shipOptions } from '../../agent/ship/options.js';
import { Uploader } from '../../agent/ship/upload.js';
import { objectKey } from '../../agent/store/layout.js';
import type { GetOptions } from '../../agent/store/store.js';
import { MemoryStore } from '../support/memory-store.js';
import { fixturePath } from '../support/snapshots.js';

/** A memory store whose snapshot bodies (not manifests) call `between()` after their first chunk. */
class SteppedStore extends MemoryStore {
  between: (() => Promise<void>) | undefined;
  override async get(key: string, opts: GetOptions = {}) {
    const got = await super.get(key, opts);
    if (!got || !this.between || key.endsWith('.manifest.json')) return got;
    const hook = this.between;
    const inner = got.body;
    async function* body(): AsyncIterable<Uint8Array> {
      let n = 0;
      for await (const c of inner) {
        yield c;
        if (n++ === 0) await hook();
      }
    }
    return { body: body(), size: got.size };
  }
}

let dir: string;
let cfg: Config;
let store: SteppedStore;
const lines: { out: string[]; err: string[] } = { out: [], err: [] };
const io: Out = { out: (l) => lines.out.push(l), err: (l) => lines.err.push(l) };
const opts = (output: string, extra: Partial<FetchOptions> = {}): FetchOptions => ({
  latest: true,
  output,
  force: false,
  allowUnverified: false,
  encrypted: false,
  quiet: true,
  ...extra,
});

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'trust-fetch-unit-'));
  cfg = parseConfig(`cluster: c1\nnode: db\nsnapshotDir: ${dir}\nstateDir: ${dir}/state\ns3:\n  bucket: backups\n`, 'test', {});
  // a large part size: the memory store needs no 5 MiB parts, and one part is enough here
  store = new SteppedStore();
  const file = fixturePath('etcd-medium.db');
  const { fh, st } = await openRegular(file);
  try {
    const out = await new Uploader(store).ship(
      {
        fh,
        fp: fingerprint(st),
        name: 'snap.db',
        producer: 'etcdctl',
        snapshotTime: new Date(st.mtimeMs),
        key: objectKey(cfg, 'snap.db'),
        node: 'db',
        cluster: 'c1',
        agent: 'test',
        format: 'raw',
      },
      shipOptions(cfg, { integrity: 'sha256' }),
    );
    expect(out.kind).toBe('shipped');
  } finally {
    await fh.close();
  }
  lines.out.length = 0;
  lines.err.length = 0;
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const parts = async (d: string): Promise<string[]> => (await readdir(d)).filter((n) => n.includes('.part'));

describe('fetch: the local side changes while it downloads', () => {
  it('--output becomes a directory mid-download (checked again before it is put there): exit 73 naming it, the directory untouched, no .part left', async () => {
    const out = path.join(dir, 'out', 'snap.db');
    store.between = () => mkdir(out).then(() => undefined);
    const code = await fetchCommand(cfg, store, opts(out), io);
    expect(lines.err.join('\n')).toMatch(new RegExp(`--output ${out} is a directory, not a regular file`));
    expect(code).toBe(73);
    expect((await stat(out)).isDirectory()).toBe(true);
    expect(await readdir(out)).toEqual([]);
    expect(await parts(path.dirname(out))).toEqual([]);
  });

  it('--output appears as a file mid-download without --force: not overwritten behind the check (73), no .part left', async () => {
    const out = path.join(dir, 'raced.db');
    store.between = () => writeFile(out, 'someone else wrote this\n');
    const code = await fetchCommand(cfg, store, opts(out), io);
    expect(code).toBe(73);
    expect(lines.err.join('\n')).toMatch(new RegExp(`--output ${out} exists; pass --force`));
    expect((await stat(out)).size).toBe('someone else wrote this\n'.length);
    expect(await parts(dir)).toEqual([]);
  });

  it('the output directory is removed mid-download: exit 74 or 73 naming the path, never 65 or 69', async () => {
    const sub = path.join(dir, 'gone');
    const out = path.join(sub, 'snap.db');
    store.between = () => rm(sub, { recursive: true, force: true });
    const code = await fetchCommand(cfg, store, opts(out), io);
    expect([73, 74], lines.err.join('\n')).toContain(code);
    expect(lines.err.join('\n')).toContain(out);
  });

  it('control: with nothing in the way, the snapshot lands at --output, mode 0600', async () => {
    const out = path.join(dir, 'fine', 'snap.db');
    expect(await fetchCommand(cfg, store, opts(out), io)).toBe(0);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect((await stat(path.dirname(out))).mode & 0o777).toBe(0o700);
  });
});
