// `node make-snapshot.js FILE BYTES`: a snapshot-shaped file (bbolt meta pages, random pages, the SHA-256
// trailer) for the benchmarks.
import { writeSyntheticSnapshot } from '../../test/support/snapshots.js';

const [file, bytes] = process.argv.slice(2);
if (!file || !bytes) throw new Error('usage: make-snapshot FILE BYTES');
await writeSyntheticSnapshot(file, { bytes: Number(bytes), fill: 'random' });
