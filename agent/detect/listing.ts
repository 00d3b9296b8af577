// chokidar, with a narrower directory read. On every change in the watched directory chokidar lists it again
// and lstat()s every entry before its `ignored` test sees one, so a directory holding 80,000 unrelated files
// costs 80,000 lstat() calls a second while they churn, and the native memory those calls leave fragmented
// stays with the process. This watcher gives chokidar a listing that drops the names the agent never wants
// events for before their lstat. It overrides chokidar's `_readdirp` (declared in its typings); the package
// is pinned to the exact version this was written against, and a test fails if chokidar stops calling it.
import { lstat } from 'node:fs/promises';
import { listNames } from '../base/files.js';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FSWatcher, type ChokidarOptions } from 'chokidar';

type Listing = ReturnType<FSWatcher['_readdirp']>;

export class NarrowWatcher extends FSWatcher {
  /** entries lstat'ed by directory reads, for tests */
  statted = 0;

  constructor(
    opts: ChokidarOptions,
    /** names (not paths) never worth an event */
    private readonly skip: (name: string) => boolean,
  ) {
    super(opts);
  }

  override _readdirp(root: string): Listing {
    if (this.closed) return undefined;
    const stream = Readable.from(this.entries(root)) as unknown as NonNullable<Listing>;
    // chokidar destroys the listings still running when it is closed
    this._streams.add(stream);
    stream.once('close', () => this._streams.delete(stream));
    return stream;
  }

  /** One level, as chokidar asks for here (depth 0): each kept entry with its lstat, in the shape chokidar reads. */
  private async *entries(root: string): AsyncGenerator<{ path: string; fullPath: string; basename: string; stats: import('node:fs').Stats }> {
    for (const name of await listNames(root)) {
      if (this.skip(name)) continue;
      const fullPath = join(root, name);
      let stats;
      try {
        stats = await lstat(fullPath);
      } catch {
        continue; // gone since the listing: the next read notices
      }
      this.statted++;
      yield { path: name, fullPath, basename: name, stats };
    }
  }
}
