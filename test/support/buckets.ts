// A fresh bucket on one of the world's two S3 servers, with what a test needs to point the agent and its own
// client at it; `remove` empties and deletes it.
import type { S3Client } from '@aws-sdk/client-s3';
import { agentEnv } from './agent.js';
import { createBucket, createSwiftBucket, emptyAndDeleteBucket, emptyAndDeleteSwiftBucket, requireSwift, s3Client, swiftClient, type World } from './world.js';

export type ServerName = 'rgw' | 'swift';

export interface TestBucket {
  bucket: string;
  endpoint: string;
  region: string;
  keyId: string;
  secret: string;
  /** the agent's environment: the world's, with this server's keys */
  env: NodeJS.ProcessEnv;
  client: S3Client;
  remove: () => Promise<void>;
}

export async function bucketOn(world: World, which: ServerName, tag: string): Promise<TestBucket> {
  const bucket = `t-${tag}-${which[0]}${(Date.now() % 1e8).toString(36)}`;
  if (which === 'swift') {
    const s = requireSwift(world);
    await createSwiftBucket(s, bucket);
    return {
      bucket,
      endpoint: s.endpoint,
      region: s.region,
      keyId: s.accessKeyId,
      secret: s.secretAccessKey,
      env: agentEnv(world, { AWS_ACCESS_KEY_ID: s.accessKeyId, AWS_SECRET_ACCESS_KEY: s.secretAccessKey, AWS_REGION: s.region }),
      client: swiftClient(s),
      remove: () => emptyAndDeleteSwiftBucket(s, bucket),
    };
  }
  await createBucket(world, bucket);
  return {
    bucket,
    endpoint: world.s3.endpoint,
    region: world.s3.region,
    keyId: world.s3.accessKeyId,
    secret: world.s3.secretAccessKey,
    env: agentEnv(world),
    client: s3Client(world),
    remove: () => emptyAndDeleteBucket(world, bucket),
  };
}
