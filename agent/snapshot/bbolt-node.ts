// One bbolt node (a branch or leaf page run, or the inline page of a small bucket), parsed from its bytes as
// they stream past, in any number of pieces, with memory bounded by its element table and two keys.
//
// The parser is built in layers, one class each, so the hot loops stay on one object: the element table
// (bbolt-node-table.ts), the cursor that hands on whole keys and values (bbolt-node-cursor.ts), and here what
// each key and value means: key order and the prefixes and hashes kept for the tree walk, etcd revision
// keys, nested buckets (inline ones parsed on the spot) and the fact candidates.
import { crc32c } from './crc32c.js';
import {
  BUCKET_HEADER,
  F_PLAIN,
  F_REV_KEYS,
  FLAG_LEAF,
  PAGE_HEADER,
  PREFIX,
  compareBytes,
  copyPrefix,
  fmtPgid,
  keyHash,
  type BucketRef,
  type Cand,
  type InlineSummary,
  type NodeEnv,
} from './bbolt-format.js';
import { NodeCursor } from './bbolt-node-cursor.js';

const CAND_VALUE_MAX = 64;
const META_LENGTHS = new Set([4, 14, 16, 18, 19]);
const META_KEYS = new Set(['term', 'consistent_index', 'finishedCompactRev', 'scheduledCompactRev', 'clusterVersion', 'storageVersion']);

function isHexId(b: Buffer, s: number, e: number): boolean {
  if (e - s > 16) return false;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  return true;
}

/** Parses one node; see NodeCursor for how it is fed. The fields are its results once feed is done. */
export class NodeParser extends NodeCursor {
  flags = F_REV_KEYS;
  firstHash = 0;
  firstLen = 0;
  lastLen = 0;
  buckets: BucketRef[] | undefined;
  cands: Cand[] | undefined;
  /** Where the first and last keys' prefixes go: the page table's arrays at preOff, or the parser's own. */
  firstPre: Uint8Array;
  lastPre: Uint8Array;
  preOff = 0;

  private capName = '';
  private capNameCrc = 0;

  constructor(env: NodeEnv) {
    super(env);
    this.firstPre = new Uint8Array(PREFIX);
    this.lastPre = new Uint8Array(PREFIX);
  }

  override reset(branch: boolean, count: number, runLen: number, inline: boolean): this {
    super.reset(branch, count, runLen, inline);
    this.flags = F_REV_KEYS;
    this.firstHash = 0;
    this.firstLen = 0;
    this.lastLen = 0;
    this.buckets = undefined;
    this.cands = undefined;
    return this;
  }

  /** Prefixes go to first[off, off+16) and last[off, off+16). */
  target(first: Uint8Array, last: Uint8Array, off: number): this {
    this.firstPre = first;
    this.lastPre = last;
    this.preOff = off;
    return this;
  }

  protected override key(kb: Buffer, ks: number, ke: number, elemCrc: boolean): void {
    const i = this.i;
    const len = ke - ks;
    if (i === 0) {
      this.firstHash = keyHash(kb, ks, ke);
      this.firstLen = len;
      copyPrefix(kb, ks, len, this.firstPre, this.preOff);
    } else if (compareBytes(this.prev, this.prevS, this.prevE, kb, ks, ke) >= 0) {
      this.error = `key of element ${i} is not greater than the key before it`;
      return;
    }
    if (i === this.count - 1) {
      this.lastLen = len;
      copyPrefix(kb, ks, len, this.lastPre, this.preOff);
    }
    this.prev = kb;
    this.prevS = ks;
    this.prevE = ke;
    if (this.branch) {
      this.env.elements.keyHash[this.elemBase + i] = i === 0 ? this.firstHash : keyHash(kb, ks, ke);
      return;
    }
    if (!((len === 17 || (len === 18 && kb[ks + 17] === 0x74)) && kb[ks + 8] === 0x5f)) this.flags &= ~F_REV_KEYS;
    if (elemCrc) {
      this.crc = crc32c(this.crc, kb, ks, ke);
      this.crcLen += len;
    }
    this.capture = 0;
    if (this.bucketEl) {
      if (this.vs < BUCKET_HEADER || this.vs > BUCKET_HEADER + this.env.pageSize / 4) {
        this.error = `bucket ${quote(kb, ks, ke)} has a ${this.vs}-byte value; bbolt writes 16 bytes, or at most ${BUCKET_HEADER + this.env.pageSize / 4} for an inline bucket`;
        return;
      }
      this.capture = 1;
      this.capName = kb.toString('utf8', ks, Math.min(ke, ks + 256));
      this.capNameCrc = this.env.hashing ? crc32c(0, kb, ks, ke) : 0;
      return;
    }
    this.flags |= F_PLAIN;
    // fact candidates start with a lowercase letter or a digit; etcd revision keys with 0x00
    if (len <= 19 && kb[ks]! >= 0x30) {
      const f = kb[ks]!;
      const maybeMeta = META_LENGTHS.has(len) && (f === 0x63 || f === 0x66 || f === 0x73 || f === 0x74); // c f s t
      const named = isHexId(kb, ks, ke) ? false : maybeMeta && META_KEYS.has(kb.toString('latin1', ks, ke)) ? true : undefined;
      if (named !== undefined && this.env.take('cand')) {
        this.capName = kb.toString('latin1', ks, ke);
        if (named && this.vs <= CAND_VALUE_MAX) this.capture = 2;
        else (this.cands ??= []).push({ key: this.capName, value: undefined });
      }
    }
  }

  protected override value(vb: Buffer, vs: number, ve: number): void {
    const cap = this.capture;
    this.capture = 0;
    if (cap === 2) {
      (this.cands ??= []).push({ key: this.capName, value: Buffer.from(vb.subarray(vs, ve)) });
      return;
    }
    const name = this.capName;
    const len = ve - vs;
    const lo = vb.readUInt32LE(vs);
    const hi = vb.readUInt32LE(vs + 4);
    let ref: BucketRef;
    if (lo !== 0 || hi !== 0) {
      if (len !== BUCKET_HEADER) return void (this.error = `bucket "${name}" has root page ${fmtPgid(lo, hi)} and a ${len}-byte value; bbolt writes 16`);
      if (hi !== 0 || lo >= this.env.pages)
        return void (this.error = `bucket "${name}" has root page ${fmtPgid(lo, hi)}, past the end (${this.env.pages} pages)`);
      if (lo < 2) return void (this.error = `bucket "${name}" has meta page ${lo} as its root`);
      ref = { name, nameCrc: this.capNameCrc, nameLen: this.ks, root: lo, inline: undefined };
    } else {
      if (len < BUCKET_HEADER + PAGE_HEADER) return void (this.error = `inline bucket "${name}" has a ${len}-byte value, too short for its page`);
      const p = vs + BUCKET_HEADER;
      const flags = vb.readUInt16LE(p + 8);
      if (flags !== FLAG_LEAF) return void (this.error = `inline bucket "${name}" has page flags 0x${flags.toString(16)}, bbolt writes a leaf (0x02)`);
      const sub = new NodeParser(this.env).reset(false, vb.readUInt16LE(p + 10), ve - p, true);
      sub.feed(vb, p, ve);
      if (sub.error !== undefined) return void (this.error = `inline bucket "${name}": ${sub.error}`);
      const inline: InlineSummary = {
        count: sub.count,
        crc: sub.crc,
        crcLen: sub.crcLen,
        flags: sub.flags,
        lastLen: sub.lastLen,
        lastPrefix: sub.lastPre,
        cands: sub.cands,
      };
      ref = { name, nameCrc: this.capNameCrc, nameLen: this.ks, root: 0, inline };
    }
    if (!this.env.take('bucket')) return void (this.error = 'more bucket references than the memory bound allows');
    (this.buckets ??= []).push(ref);
  }
}

function quote(b: Buffer, s: number, e: number): string {
  return JSON.stringify(b.toString('utf8', s, Math.min(e, s + 64)));
}
