// The vocabulary every config stage reports in: a problem names its key and the fix, and all of a file's
// problems are thrown together so the operator fixes them in one go.

/** One problem with one key: what is wrong and how to fix it. */
export interface ConfigIssue {
  key: string;
  problem: string;
  fix: string;
}

/** At most this many problems are printed: a list of 10,000 bad entries must not print 10,000 lines. */
const SHOWN_ISSUES = 20;

/** One line per problem, the first SHOWN_ISSUES of them, and a last line counting the rest. */
export function issueLines(file: string, issues: readonly ConfigIssue[]): string[] {
  const lines = issues.slice(0, SHOWN_ISSUES).map((i) => `${file}: ${i.key}: ${i.problem}; ${i.fix}`);
  const more = issues.length - SHOWN_ISSUES;
  if (more > 0) lines.push(`${file}: ${more} more problem${more === 1 ? '' : 's'} not shown; fix those above and run again to see them`);
  return lines;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly issues: ConfigIssue[],
  ) {
    super(issueLines(file, issues).join('\n'));
    this.name = 'ConfigError';
  }
}
