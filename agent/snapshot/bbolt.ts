// Deep check of an etcd snapshot body (the bbolt database before the 32-byte SHA-256 trailer), in one
// sequential pass over its bytes with bounded memory: a body whose pages are broken but whose trailer was
// recomputed passes the trailer and meta checks, and `etcdctl snapshot status` panics on it.
//
// While the pages stream past, every page is parsed on its own (its header, its elements, its keys) and a few
// compact facts are kept per run head, a kind byte per page (bbolt-page-table.ts). Only at finish() is the tree resolved from the root
// bucket the meta names: a page is judged when the tree reaches it, because free pages legitimately hold
// stale or half-overwritten copies and overflow pages hold value bytes.
//
// What a pass proves, for every page the tree uses: its header names its own position; its type is branch or
// leaf; its run lies inside the file; its element table fits and has the layout bbolt writes; keys are
// non-empty, at most 32 KiB and strictly increasing within the page; every branch key equals the first key of
// the child it points to (compared by a 32-bit hash of the whole key); the last key of each leaf is below the
// first key of the next leaf of the same bucket (compared on 16-byte prefixes and lengths: proven whenever
// the keys differ within 16 bytes or one is a prefix of the other, which covers etcd's 17/18-byte revision
// keys; longer keys that agree on 16 bytes are not ordered by this check); no page is used twice, none is
// its own ancestor, none is on the freelist; nested buckets (own pages or inline) have valid roots and pages;
// the freelist page, when there is one, lists each page at most once, all inside the file.
//
// Memory: the page table, 1 byte and 2 bits per page, 51 bytes per run head (55 with the hash; a run head is
// a branch, leaf or freelist page, its overflow pages cost nothing more) and 4 bytes per page with a bad
// header (overflow pages of value bytes, mostly); 8 bytes per branch element (about one per page in bbolt
// files; bounded at 4 per page), 3 bits per page at finish, the bucket references and fact candidates
// (bounded counts), plus at most 64 page runs being parsed at once (each: its element table, at most 1 MiB,
// and two 32 KiB key buffers). Measured on real etcd snapshots of 1.1 GiB with small and mixed values
// (270k-290k pages, most of them run heads), when every page had 52-60 bytes: the finished checker retained
// 61-75 bytes per page, 16-21 MiB. On one of 8 GiB with 1 MiB values (2.1M pages, 3.5k of them run heads) it
// retains 10.9 MiB, 5 bytes per page (121 MiB when every page had 60 bytes).
import { HEAD_MAX, pickMeta, type Meta } from './bbolt-meta.js';
import { PageRuns } from './bbolt-runs.js';
import { Corrupt, type DeepFacts } from './bbolt-tree.js';

export type { BucketFacts, DeepFacts } from './bbolt-tree.js';

export type DeepResult = { ok: true; facts: DeepFacts } | { ok: false; reason: 'corrupt'; detail: string };

export interface BboltCheckerOptions {
  /**
   * Compute etcdctl's status hash (CRC-32C of every top-level key and value). Default true. It is a fact,
   * not a check — the SHA-256 trailer already covers the bytes — and adds 0.5-0.7 CPU s/GiB (JS CRC-32C).
   */
  hash?: boolean;
  /**
   * Bytes of the body, when known (file size − 32): if the meta agrees, the page table is allocated once at
   * its final size instead of growing as pages arrive. Without it (or if they disagree) it grows by doubling.
   */
  bodySize?: number;
}

/**
 * The head of the body is gathered until the meta is chosen (bbolt-meta.ts); every byte after the two meta
 * pages goes to the page runs (bbolt-runs.ts), and finish() walks the tree they recorded (bbolt-tree.ts).
 */
export class BboltChecker {
  private failure: DeepResult | undefined;
  private readonly hashing: boolean;
  private bytes = 0;
  private head: Buffer | undefined = Buffer.allocUnsafe(HEAD_MAX);
  private headLen = 0;
  private meta: Meta | undefined;
  private runs: PageRuns | undefined;

  private readonly bodySize: number | undefined;

  constructor(opts: BboltCheckerOptions = {}) {
    this.hashing = opts.hash ?? true;
    this.bodySize = opts.bodySize;
  }

  /** The next bytes of the body, in file order. Never throws: a problem is kept for finish(). */
  update(chunk: Buffer): void {
    if (this.failure) return;
    try {
      this.bytes += chunk.length;
      let rest = chunk;
      if (!this.meta) {
        const head = this.head!;
        const n = Math.min(chunk.length, head.length - this.headLen);
        chunk.copy(head, this.headLen, 0, n);
        this.headLen += n;
        rest = chunk.subarray(n);
        if (!this.resolveHead(this.headLen === head.length)) return;
      }
      if (rest.length > 0) this.runs!.data(rest);
    } catch (err) {
      this.failure = { ok: false, reason: 'corrupt', detail: `checker failed near byte ${this.bytes}: ${(err as Error).message}` };
    }
  }

  /** The verdict, once every byte of the body was fed. */
  finish(): DeepResult {
    if (this.failure) return this.failure;
    try {
      if (!this.meta && !this.resolveHead(true)) return this.failure ?? this.corrupt('no valid meta page');
      const meta = this.meta!;
      const want = meta.pages * meta.pageSize;
      if (this.bytes !== want) {
        return this.corrupt(`body is ${this.bytes} bytes; meta page ${meta.index} says ${meta.pages} pages × ${meta.pageSize} = ${want}`);
      }
      return { ok: true, facts: this.runs!.finish() };
    } catch (err) {
      if (err instanceof Corrupt) return this.corrupt(err.message);
      return this.corrupt(`checker failed: ${(err as Error).message}`);
    }
  }

  private corrupt(detail: string): DeepResult {
    this.failure = { ok: false, reason: 'corrupt', detail };
    return this.failure;
  }

  /** Chooses the meta once enough of the head is here, then hands the bytes past the meta pages on. */
  private resolveHead(final: boolean): boolean {
    const head = this.head!.subarray(0, this.headLen);
    const meta = pickMeta(head, final);
    if (meta === undefined) return false;
    if (typeof meta === 'string') {
      this.corrupt(meta);
      return false;
    }
    const ps = meta.pageSize;
    this.meta = meta;
    this.runs = new PageRuns(meta, this.hashing, this.bodySize);
    this.head = undefined;
    if (head.length > 2 * ps) this.runs.data(head.subarray(2 * ps));
    return true;
  }
}

/** Checks a whole snapshot held in memory: the body, or the body plus its 32-byte trailer (ignored). */
export function checkBboltBuffer(buf: Buffer, opts: BboltCheckerOptions = {}): DeepResult {
  const body = buf.length % 512 === 32 ? buf.subarray(0, buf.length - 32) : buf;
  const c = new BboltChecker({ bodySize: body.length, ...opts });
  c.update(body);
  return c.finish();
}
