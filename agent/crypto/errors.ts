// The two kinds of failure of the crypto room. Messages name the file and line and say what is wrong,
// but never repeat the text of a key: a misplaced secret key must not reach a log through an error.

/** A recipient, identity, private key or allowed_signers entry that cannot be used. */
export class KeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyError';
  }
}

export type AgeFailure =
  /** not an age file, or its header breaks the format */
  | 'header_syntax'
  /** none of the given identities can open any recipient stanza */
  | 'no_identity'
  /** the header was changed after it was written (or the wrong file key was found) */
  | 'header_mac'
  /** the payload ends before its final chunk */
  | 'truncated'
  /** a chunk failed authentication: changed, reordered or from another file */
  | 'tampered'
  /** bytes follow the final chunk */
  | 'trailing_data'
  /** valid age, but a kind this agent does not decrypt (passphrase files) */
  | 'unsupported';

/** Ciphertext that cannot be decrypted or does not have age's structure; `reason` is for metrics. */
export class AgeError extends Error {
  constructor(
    readonly reason: AgeFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AgeError';
  }
}
