// age (age-encryption.org/v1) for snapshots: recipients and identities, a part-aligned encryptor for
// multipart uploads, a streaming decryptor, and a structure check that needs no key.
//
// Uploading: one AgeEncryptor per object (its file key and nonce are drawn once), ContentLength =
// `ciphertextSize`. Parts either follow the plaintext (`encryptPartInto`, part 1 carries the header) or
// cut the ciphertext at a fixed size (`plaintextFor` + `encryptRange`). Both are deterministic, so a
// retried part is byte-identical; a restarted upload (new UploadId, new process) needs a new encryptor.
export { AgeError, KeyError, type AgeFailure } from './errors.js';
export { generateAgeIdentity, parseIdentities, parseRecipient, parseRecipientsFile, type AgeIdentity, type AgeRecipient, type Stanza } from './age-keys.js';
export { AgeEncryptor, ageEncryptor, CHUNK_SIZE, ENC_CHUNK_SIZE, payloadSize, plaintextSizeOf, type CipherRange } from './age-stream.js';
export { AgeDecryption, ageDecryptor, AgeStructureCheck, checkAgeStructure, type AgeStructure } from './age-decrypt.js';
