import { readFileSync, statSync } from 'node:fs';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { CredentialsError } from '../base/errors.js';
import { registerSecret, Secret } from '../base/secret.js';

/** Parses an AWS shared-credentials (INI) file into profiles. Values are never put into errors. */
export function parseCredentialsIni(text: string): Map<string, Record<string, string>> {
  const profiles = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[\s*(?:profile\s+)?([^\]]+?)\s*\]$/.exec(line);
    if (section) {
      current = {};
      profiles.set(section[1]!, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (eq > 0 && current) current[line.slice(0, eq).trim().toLowerCase()] = line.slice(eq + 1).trim();
  }
  return profiles;
}

/**
 * Credentials from a file named in the config. The file is re-read when it changes (config management
 * rotating keys must not need a restart), so the identity carries a short expiration.
 */
export function fileCredentials(path: string, profile = 'default'): AwsCredentialIdentityProvider {
  // the keys stay Secrets (printing the cache prints **redacted**) until the SDK asks for them
  let cached: { mtimeMs: number; size: number; accessKeyId: string; secret: Secret; token?: Secret } | undefined;
  return async () => {
    let st;
    try {
      st = statSync(path);
    } catch (e) {
      throw new CredentialsError(
        `credentials file ${path} cannot be read (${(e as NodeJS.ErrnoException).code}); check s3.credentialsFile and its permissions`,
      );
    }
    if (!cached || cached.mtimeMs !== st.mtimeMs || cached.size !== st.size) {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (e) {
        throw new CredentialsError(
          `credentials file ${path} cannot be read (${(e as NodeJS.ErrnoException).code}); check s3.credentialsFile and its permissions`,
        );
      }
      const p = parseCredentialsIni(text).get(profile);
      if (!p) throw new CredentialsError(`credentials file ${path} has no [${profile}] section; add one or set s3.profile`);
      const accessKeyId = p.aws_access_key_id;
      const secretAccessKey = p.aws_secret_access_key;
      if (!accessKeyId || !secretAccessKey) {
        throw new CredentialsError(`credentials file ${path}, profile [${profile}], lacks aws_access_key_id or aws_secret_access_key; add both`);
      }
      registerSecret(accessKeyId);
      cached = {
        mtimeMs: st.mtimeMs,
        size: st.size,
        accessKeyId,
        secret: new Secret(secretAccessKey),
        ...(p.aws_session_token ? { token: new Secret(p.aws_session_token) } : {}),
      };
    }
    const creds: AwsCredentialIdentity = {
      accessKeyId: cached.accessKeyId,
      secretAccessKey: cached.secret.reveal(),
      ...(cached.token ? { sessionToken: cached.token.reveal() } : {}),
    };
    return { ...creds, expiration: new Date(Date.now() + 60_000) };
  };
}

/** The AWS default chain (env, shared files, web identity, ECS/EC2 metadata with IMDSv2), its secrets registered for redaction. */
export function defaultCredentials(profile?: string): AwsCredentialIdentityProvider {
  const chain = fromNodeProviderChain(profile ? { profile } : {});
  return async () => {
    const c = await chain();
    registerSecret(c.accessKeyId);
    registerSecret(c.secretAccessKey);
    registerSecret(c.sessionToken);
    return c;
  };
}
