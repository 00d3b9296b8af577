// The vocabulary every config stage reports in: a problem names its key and the fix, and all of a file's
// problems are thrown together so the operator fixes them in one go.

/** One problem with one key: what is wrong and how to fix it. */
export interface ConfigIssue {
  key: string;
  problem: string;
  fix: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ConfigIssue[],
  ) {
    super(issues.map((i) => `${file}: ${i.key}: ${i.problem}; ${i.fix}`).join('\n'));
    this.name = 'ConfigError';
  }
}
