// The deep check as the verifier's BodyCheck: every page of the bbolt tree (bbolt.ts), and the facts
// `etcdctl snapshot status` prints. In the upload's read pass it runs without etcd's status hash (about
// 0.1–0.3 CPU s/GiB); the drill and `verify` compute the hash too (about 0.7 s/GiB more).
import { BboltChecker } from './bbolt.js';
import type { BodyCheck } from './raw.js';

export type DeepCheck = (bodySize: number) => BodyCheck;

function make(hash: boolean): DeepCheck {
  return (bodySize) => {
    const c = new BboltChecker({ hash, bodySize });
    return {
      update: (buf) => c.update(buf),
      finish: () => {
        const r = c.finish();
        if (!r.ok) return { ok: false, detail: r.detail };
        const f = r.facts;
        return {
          ok: true,
          db: {
            revision: f.revision,
            keys: f.totalKeys,
            pageSize: f.pageSize,
            ...(f.hash !== undefined ? { hash: f.hash } : {}),
            ...(f.compactRevision !== undefined ? { compactRevision: f.compactRevision } : {}),
            ...(f.consistentIndex !== undefined ? { consistentIndex: f.consistentIndex } : {}),
            ...(f.term !== undefined ? { term: f.term } : {}),
          },
        };
      },
    };
  };
}

/** Before upload: the structure and facts, not the status hash. */
export const deepCheck: DeepCheck = make(false);
/** Drill and `verify`: everything `etcdctl snapshot status` reports, hash included. */
export const deepCheckWithHash: DeepCheck = make(true);
