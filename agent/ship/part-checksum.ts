// The checksum of one part that the server verifies before it stores the part (chosen by the store probe).
import { createHash, webcrypto } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { PartChecksum, PartIntegrity } from '../store/store.js';

export async function partChecksum(body: Buffer, kind: PartIntegrity): Promise<PartChecksum> {
  switch (kind) {
    case 'sha256':
      // on the thread pool, while this thread reads and verifies the next part
      return { kind, value: Buffer.from(await webcrypto.subtle.digest('SHA-256', body)).toString('hex') };
    case 'crc32': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(crc32(body) >>> 0);
      return { kind, value: b.toString('base64') };
    }
    case 'md5':
      return { kind, value: createHash('md5').update(body).digest('base64') };
  }
}
