// The world's second S3 server: OpenStack Swift 2.30 (Debian 12) through its s3api middleware,
// driven with @aws-sdk/client-s3 and lib-storage as the agent drives S3.
//
// What Swift's S3 API does that the agent must care about (each checked by one test below):
//  - a wrong x-amz-checksum-crc32 is accepted (200): not checked, not stored, not echoed. Only
//    Content-MD5 and the signed payload SHA-256 are checked, so a CRC32 proves nothing here;
//  - a wrong Content-MD5 is refused: 400 BadDigest;
//  - a signed x-amz-content-sha256 that does not match the body is refused: 400 BadDigest (with
//    a message that speaks of Content-MD5);
//  - UploadPart answers ETag = MD5 of the part; CompleteMultipartUpload answers the AWS ETag,
//    MD5 of the concatenated binary part MD5s + "-N" (RGW 16 answers an empty one);
//  - max_upload_part_num is 1000 by default (AWS: 10,000): a higher part number gets 400
//    InvalidArgument before any body byte is sent (the SDK asks with Expect: 100-continue);
//    non-last parts under 5 MiB make CompleteMultipartUpload fail with EntityTooSmall;
//  - SSE: aws:kms → 501 NotImplemented; AES256 accepted, stored encrypted, never echoed back;
//  - a streamed PutObject with the SDK's default checksums (WHEN_SUPPORTED) is sent aws-chunked
//    and refused with 501 NotImplemented; WHEN_REQUIRED sends it plain and it works;
//  - DeleteObjects without Content-MD5 → 400 InvalidRequest (the SDK sends only a CRC32).
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  createSwiftBucket,
  emptyAndDeleteSwiftBucket,
  readWorldEnv,
  requireSwift,
  startSwift,
  swiftClient,
  type ExtraSwift,
  type SwiftServer,
  type World,
} from '../support/world.js';

const MiB = 1024 * 1024;
const md5 = (b: Uint8Array | string): Buffer => createHash('md5').update(b).digest();
const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');
/** the S3 error a promise rejected with: name (= S3 code), HTTP status, message */
async function s3Error(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: err.name, status: err.$metadata?.httpStatusCode, message: err.message };
  }
  throw new Error('expected the request to be refused, it succeeded');
}

/** Records the headers of the last request as sent (after signing), names in lower case. */
function spyHeaders(client: S3Client): () => Record<string, string> {
  let last: Record<string, string> = {};
  client.middlewareStack.add(
    (next) => async (args) => {
      const headers = (args.request as { headers: Record<string, string> }).headers;
      last = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
      return next(args);
    },
    { step: 'finalizeRequest', priority: 'low', name: 'headerSpy' },
  );
  return () => last;
}

let world: World;
let swift: SwiftServer;
let s3: S3Client;
const bucket = `swift-${Date.now().toString(36)}`;

beforeAll(async () => {
  world = await readWorldEnv(inject('worldDir'));
  swift = requireSwift(world);
  s3 = swiftClient(swift);
  await createSwiftBucket(swift, bucket);
});

afterAll(async () => {
  if (swift) await emptyAndDeleteSwiftBucket(swift, bucket);
  s3?.destroy();
});

describe('Swift s3api smoke', () => {
  const big = randomBytes(11 * MiB); // 3 parts of at most 5 MiB

  it('PutObject with user metadata; HeadObject returns it, ETag = MD5', async () => {
    const body = Buffer.from('hello swift\n');
    await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'dir/small.txt', Body: body, ContentType: 'text/plain', Metadata: { color: 'blue', sha256: sha256(body) } }),
    );
    const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'dir/small.txt' }));
    expect(h.Metadata).toEqual({ color: 'blue', sha256: sha256(body) });
    expect(h.ContentType).toBe('text/plain');
    expect(h.ContentLength).toBe(body.length);
    expect(h.ETag).toBe(`"${md5(body).toString('hex')}"`);
  });

  it('lib-storage multipart upload: ETag "-3", metadata kept, byte for byte', async () => {
    await new Upload({
      client: s3,
      params: { Bucket: bucket, Key: 'big.bin', Body: big, Metadata: { kind: 'multipart' } },
      partSize: 5 * MiB,
      queueSize: 2,
    }).done();
    const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'big.bin' }));
    expect(h.ETag).toMatch(/^"[0-9a-f]{32}-3"$/);
    expect(h.ContentLength).toBe(big.length);
    expect(h.Metadata).toEqual({ kind: 'multipart' });
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'big.bin' }));
    expect(sha256(await got.Body!.transformToByteArray())).toBe(sha256(big));
  });

  it('ListObjectsV2, plain and with a delimiter', async () => {
    const all = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect(all.KeyCount).toBe(2);
    expect(all.Contents?.map((o) => o.Key)).toEqual(['big.bin', 'dir/small.txt']);
    const top = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Delimiter: '/' }));
    expect(top.Contents?.map((o) => o.Key)).toEqual(['big.bin']);
    expect(top.CommonPrefixes?.map((p) => p.Prefix)).toEqual(['dir/']);
  });

  it('ranged GetObject across a part boundary', async () => {
    const from = 5 * MiB - 10;
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'big.bin', Range: `bytes=${from}-${from + 19}` }));
    expect(r.ContentRange).toBe(`bytes ${from}-${from + 19}/${big.length}`);
    expect(Buffer.from(await r.Body!.transformToByteArray())).toEqual(big.subarray(from, from + 20));
  });

  it('DeleteObject; HeadObject then 404', async () => {
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'dir/small.txt' }));
    expect(await s3Error(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'dir/small.txt' })))).toMatchObject({
      name: 'NotFound',
      status: 404,
    });
  });

  it('an open upload is listed, and gone after AbortMultipartUpload', async () => {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'planted' }));
    await s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'planted', UploadId, PartNumber: 1, Body: Buffer.alloc(1024, 1) }));
    const listed = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect(listed.Uploads?.map((u) => [u.Key, u.UploadId])).toEqual([['planted', UploadId]]);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'planted', UploadId }));
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
  });

  it(`a part number over the limit is refused before any body byte is sent`, async () => {
    const client = swiftClient(swift, { maxAttempts: 1 });
    const sent = spyHeaders(client);
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'limit' }));
    try {
      const total = 64 * MiB;
      let read = 0;
      const chunk = Buffer.alloc(64 * 1024, 7);
      const body = new Readable({
        read() {
          read += chunk.length;
          this.push(read > total ? null : chunk);
        },
      });
      const err = await s3Error(
        client.send(new UploadPartCommand({ Bucket: bucket, Key: 'limit', UploadId, PartNumber: swift.maxParts + 1, Body: body, ContentLength: total })),
      );
      expect(err).toEqual({
        name: 'InvalidArgument',
        status: 400,
        message: `Part number must be an integer between 1 and ${swift.maxParts}, inclusive`,
      });
      expect(sent().expect).toBe('100-continue'); // the SDK waited for "100 Continue", which never came
      expect(read).toBe(0);
      // the limit itself is a valid part number
      const ok = await client.send(new UploadPartCommand({ Bucket: bucket, Key: 'limit', UploadId, PartNumber: swift.maxParts, Body: 'x' }));
      expect(ok.ETag).toBe(`"${md5('x').toString('hex')}"`);
    } finally {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'limit', UploadId }));
      client.destroy();
    }
  });
});

describe('Swift s3api behaviours the agent must care about', () => {
  const part = randomBytes(1024);
  let uploadId: string;
  beforeAll(async () => {
    uploadId = (await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'behaviours' }))).UploadId!;
  });
  afterAll(async () => {
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'behaviours', UploadId: uploadId }));
  });

  it('a wrong x-amz-checksum-crc32 is accepted, and the checksum not echoed', async () => {
    const client = swiftClient(swift, { maxAttempts: 1 });
    const sent = spyHeaders(client);
    try {
      const r = await client.send(
        new UploadPartCommand({ Bucket: bucket, Key: 'behaviours', UploadId: uploadId, PartNumber: 1, Body: part, ChecksumCRC32: 'AAAAAA==' }),
      );
      expect(sent()['x-amz-checksum-crc32']).toBe('AAAAAA=='); // really sent, and wrong: CRC32 0 is not this part's
      expect(r.ETag).toBe(`"${md5(part).toString('hex')}"`);
      expect(r.ChecksumCRC32).toBeUndefined();
    } finally {
      client.destroy();
    }
  });

  it('a wrong Content-MD5 is refused with BadDigest; the right one is accepted', async () => {
    const send = (contentMd5: string): Promise<unknown> =>
      s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'behaviours', UploadId: uploadId, PartNumber: 2, Body: part, ContentMD5: contentMd5 }));
    expect(await s3Error(send(md5('not the body').toString('base64')))).toMatchObject({ name: 'BadDigest', status: 400 });
    await send(md5(part).toString('base64'));
  });

  it('a signed x-amz-content-sha256 that does not match the body is refused with BadDigest', async () => {
    const liar = swiftClient(swift, { maxAttempts: 1 });
    // set before signing, so the wrong hash is part of a valid signature
    liar.middlewareStack.add(
      (next) => async (args) => {
        (args.request as { headers: Record<string, string> }).headers['x-amz-content-sha256'] = sha256('not the body');
        return next(args);
      },
      { step: 'build', name: 'wrongPayloadHash' },
    );
    const sent = spyHeaders(liar);
    try {
      const err = await s3Error(liar.send(new UploadPartCommand({ Bucket: bucket, Key: 'behaviours', UploadId: uploadId, PartNumber: 3, Body: part })));
      expect(sent().authorization).toMatch(/SignedHeaders=[^,]*x-amz-content-sha256/);
      expect(err).toMatchObject({ name: 'BadDigest', status: 400 });
    } finally {
      liar.destroy();
    }
  });

  it('part ETag = MD5 of the part; CompleteMultipartUpload ETag = MD5 of the part MD5s + "-N"', async () => {
    const parts = [randomBytes(5 * MiB), randomBytes(1000)];
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'etag' }));
    const etags: string[] = [];
    for (const [i, body] of parts.entries()) {
      const r = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'etag', UploadId, PartNumber: i + 1, Body: body }));
      expect(r.ETag).toBe(`"${md5(body).toString('hex')}"`);
      etags.push(r.ETag!);
    }
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: 'etag',
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    const want = `"${md5(Buffer.concat(parts.map((p) => md5(p)))).toString('hex')}-2"`;
    expect(done.ETag).toBe(want);
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'etag' }))).ETag).toBe(want);
  });

  it('a non-last part under 5 MiB makes CompleteMultipartUpload fail with EntityTooSmall', async () => {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'small-parts' }));
    try {
      const bodies = [randomBytes(5 * MiB - 1), randomBytes(10)];
      const etags: string[] = [];
      for (const [i, Body] of bodies.entries())
        etags.push((await s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'small-parts', UploadId, PartNumber: i + 1, Body }))).ETag!);
      const complete = s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: 'small-parts',
          UploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      );
      expect(await s3Error(complete)).toMatchObject({ name: 'EntityTooSmall', status: 400 });
    } finally {
      await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'small-parts', UploadId }));
    }
  });

  it('SSE aws:kms is refused with 501 NotImplemented', async () => {
    const put = s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'kms', Body: 'x', ServerSideEncryption: 'aws:kms' }));
    expect(await s3Error(put)).toMatchObject({ name: 'NotImplemented', status: 501 });
  });

  it('SSE AES256 is accepted and the object stored encrypted, but never echoed', async () => {
    const marker = `plaintext-marker-${randomBytes(8).toString('hex')}`;
    const r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'aes', Body: marker, ServerSideEncryption: 'AES256' }));
    expect(r.ServerSideEncryption).toBeUndefined();
    const h = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'aes' }));
    expect(h.ServerSideEncryption).toBeUndefined();
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'aes' }));
    expect(await got.Body!.transformToString()).toBe(marker);
    // the object server's files (DIR/swift/node/d1/objects/…/*.data) never hold the plaintext
    const files = (await readdir(path.join(world.dir, 'swift/node'), { recursive: true })).filter((f) => f.endsWith('.data'));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) expect((await readFile(path.join(world.dir, 'swift/node', f))).includes(marker)).toBe(false);
  });

  it('a streamed PutObject with the SDK default checksums is refused (501 aws-chunked); WHEN_REQUIRED works', async () => {
    const body = (): Readable => Readable.from([Buffer.from('abc'), Buffer.from('def')]);
    const defaults = swiftClient(swift, { requestChecksumCalculation: 'WHEN_SUPPORTED', responseChecksumValidation: 'WHEN_SUPPORTED', maxAttempts: 1 });
    try {
      const err = await s3Error(defaults.send(new PutObjectCommand({ Bucket: bucket, Key: 'stream', Body: body(), ContentLength: 6 })));
      expect(err).toMatchObject({ name: 'NotImplemented', status: 501 });
      expect(err.message).toMatch(/aws-chunked/);
    } finally {
      defaults.destroy();
    }
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'stream', Body: body(), ContentLength: 6 }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'stream' }));
    expect(await got.Body!.transformToString()).toBe('abcdef');
  });

  it('DeleteObjects needs Content-MD5: refused without it, works with the helper middleware', async () => {
    for (const Key of ['del/a', 'del/b']) await s3.send(new PutObjectCommand({ Bucket: bucket, Key, Body: Key }));
    const plain = new S3Client({
      endpoint: swift.endpoint,
      region: swift.region,
      credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
      forcePathStyle: true,
      maxAttempts: 1,
    });
    const del = { Bucket: bucket, Delete: { Objects: [{ Key: 'del/a' }, { Key: 'del/b' }] } };
    try {
      expect(await s3Error(plain.send(new DeleteObjectsCommand(del)))).toMatchObject({
        name: 'InvalidRequest',
        status: 400,
        message: 'Missing required header for this request: Content-MD5',
      });
    } finally {
      plain.destroy();
    }
    const r = await s3.send(new DeleteObjectsCommand(del));
    expect(r.Deleted?.map((d) => d.Key).sort()).toEqual(['del/a', 'del/b']);
    expect((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'del/' }))).KeyCount).toBe(0);
  });
});

describe('a Swift of its own with max_upload_part_num = 3 (startSwift)', () => {
  let dir: string;
  let small: ExtraSwift | undefined;
  let client: S3Client;
  const b = 'limit3';

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'swift-limit-'));
    small = await startSwift(dir, { maxParts: 3 });
    client = swiftClient(small, { maxAttempts: 1 });
    await createSwiftBucket(small, b);
  });

  afterAll(async () => {
    client?.destroy();
    await small?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('reports its limit and is a separate server', () => {
    expect(small!.maxParts).toBe(3);
    expect(small!.endpoint).not.toBe(swift.endpoint);
  });

  it('3 parts of 5 MiB upload; a 4th part makes lib-storage fail with InvalidArgument and abort', async () => {
    const three = randomBytes(10 * MiB + 1024);
    await new Upload({ client, params: { Bucket: b, Key: 'three', Body: three }, partSize: 5 * MiB, queueSize: 1 }).done();
    expect((await client.send(new HeadObjectCommand({ Bucket: b, Key: 'three' }))).ETag).toMatch(/-3"$/);

    const four = randomBytes(15 * MiB + 1024);
    const err = await s3Error(new Upload({ client, params: { Bucket: b, Key: 'four', Body: four }, partSize: 5 * MiB, queueSize: 1 }).done());
    expect(err).toMatchObject({ name: 'InvalidArgument', status: 400, message: 'Part number must be an integer between 1 and 3, inclusive' });
    // leavePartsOnError is false by default: lib-storage aborted the upload
    expect((await client.send(new ListMultipartUploadsCommand({ Bucket: b }))).Uploads ?? []).toEqual([]);
    expect(await s3Error(client.send(new HeadObjectCommand({ Bucket: b, Key: 'four' })))).toMatchObject({ status: 404 });
  });
});
