// What the upload pass needs from the crypto room: an age encryptor per object, sized up front and
// encrypting part by part, and an SSHSIG signer. Built once from the config; a bad key is a config error
// naming its key.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/keys.js';
import { ConfigError, type ConfigIssue } from '../config/parse.js';
import { ageEncryptor, parseRecipient, parseRecipientsFile, type AgeRecipient } from './age.js';
import { chunkCount } from './age-stream.js';
import { KeyError } from './errors.js';
import { parseOpenSshPrivateKey, sshsigSign, SNAPSHOT_NAMESPACE, type SshEd25519PrivateKey } from './sshsig.js';

/** age encryption of one snapshot, part by part. */
export interface PartEncryptor {
  /** everything before the first chunk (header, MAC, payload nonce); sent at the start of part 1 */
  readonly header: Buffer;
  readonly ciphertextSize: number;
  /** ciphertext bytes of a part holding `plainLen` plaintext bytes (without the header) */
  cipherLength(plainLen: number): number;
  /** Encrypts whole 64 KiB chunks (the last part may end short) into `out`; returns the bytes written. */
  encryptInto(out: Buffer, plain: Buffer, firstChunk: number, isLast: boolean): number;
}

export interface Sealing {
  encrypt?: { recipients: string[]; open(plainSize: number): PartEncryptor };
  sign?: {
    publicKey: string;
    namespace: string;
    /** armored SSHSIG over a message whose SHA-256 is `digest` (`ssh-keygen -Y verify` checks it) */
    signDigest(digest: Buffer): string;
    signData(data: Buffer): string;
  };
}

const TAG = 16;

function encryption(recipients: AgeRecipient[], texts: string[]): NonNullable<Sealing['encrypt']> {
  return {
    recipients: texts,
    open(plainSize: number): PartEncryptor {
      const enc = ageEncryptor(recipients, plainSize);
      return {
        header: enc.header,
        ciphertextSize: enc.ciphertextSize,
        cipherLength: (plainLen) => plainLen + chunkCount(plainLen) * TAG,
        encryptInto: (out, plain, firstChunk, isLast) => enc.encryptInto(out, plain, firstChunk, isLast),
      };
    },
  };
}

function signing(key: SshEd25519PrivateKey): NonNullable<Sealing['sign']> {
  return {
    publicKey: key.publicLine,
    namespace: SNAPSHOT_NAMESPACE,
    // SSHSIG allows SHA-256 as the message hash: the snapshot's own SHA-256, already computed in the read pass
    signDigest: (digest) => sshsigSign({ privateKey: key, namespace: SNAPSHOT_NAMESPACE, digest, hashAlg: 'sha256' }),
    signData: (data) => sshsigSign({ privateKey: key, namespace: SNAPSHOT_NAMESPACE, digest: createSha512(data), hashAlg: 'sha512' }),
  };
}

const createSha512 = (data: Buffer): Buffer => createHash('sha512').update(data).digest();

/** The sealing a config asks for, or undefined (plain objects, no signature). Throws ConfigError. */
export function sealingFrom(cfg: Pick<Config, 'encryption' | 'signing'>, file = 'config'): Sealing | undefined {
  const issues: ConfigIssue[] = [];
  const recipients: AgeRecipient[] = [];
  const texts: string[] = [];
  cfg.encryption.recipients.forEach((r, i) => {
    const key = `encryption.recipients[${i}]`;
    try {
      recipients.push(parseRecipient(r, key));
      texts.push(recipients[recipients.length - 1]!.text);
    } catch (e) {
      // the issue is printed after its key already
      const problem = e instanceof KeyError ? e.message.replace(`${key}: `, '') : 'is not an age recipient';
      issues.push({ key, problem, fix: 'use an age1… recipient (age-keygen -y KEYFILE) or an ssh-ed25519 public key line' });
    }
  });
  const rf = cfg.encryption.recipientsFile;
  if (rf) {
    try {
      const list = parseRecipientsFile(readFileSync(rf, 'utf8'), rf);
      if (list.length === 0)
        issues.push({ key: 'encryption.recipientsFile', problem: `${rf} holds no recipient`, fix: 'put one age1… or ssh-ed25519 key per line' });
      for (const r of list) {
        recipients.push(r);
        texts.push(r.text);
      }
    } catch (e) {
      issues.push({
        key: 'encryption.recipientsFile',
        problem: e instanceof KeyError ? e.message : `${rf} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
        fix: 'one age1… or ssh-ed25519 recipient per line, # for comments',
      });
    }
  }
  let key: SshEd25519PrivateKey | undefined;
  const kf = cfg.signing.keyFile;
  if (kf) {
    try {
      key = parseOpenSshPrivateKey(readFileSync(kf, 'utf8'), kf);
    } catch (e) {
      issues.push({
        key: 'signing.keyFile',
        problem: e instanceof KeyError ? e.message : `${kf} cannot be read (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
        fix: 'make one with ssh-keygen -t ed25519 -N "" -f FILE (no passphrase: the agent signs unattended)',
      });
    }
  }
  if (issues.length) throw new ConfigError(file, issues);
  if (!recipients.length && !key) return undefined;
  return { ...(recipients.length ? { encrypt: encryption(recipients, texts) } : {}), ...(key ? { sign: signing(key) } : {}) };
}
