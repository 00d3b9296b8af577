// Parsing and validating a config document: pure (no file is opened here; load.ts probes the files a valid
// config names). The stages: read the document (document.ts), check the rules (rules.ts), fill in and derive
// (build.ts). Every problem names its key and the fix, all at once.
import { buildConfig } from './build.js';
import { readDocument } from './document.js';
import { ConfigError, type ConfigIssue } from './issues.js';
import type { Config } from './keys.js';
import { checkRules } from './rules.js';

// parseConfig's error type and the drill's default schedule stay importable from the config's front door
export { ConfigError, issueLines, type ConfigIssue } from './issues.js';
export { spreadSchedule } from './build.js';

/** Parses and validates a config document. Throws ConfigError listing every problem at once. */
export function parseConfig(text: string, file = 'config', env: NodeJS.ProcessEnv = process.env): Config {
  const issues: ConfigIssue[] = [];
  const given = readDocument(text, file, issues);
  const settled = checkRules(given, issues);
  if (issues.length) throw new ConfigError(file, issues);
  return buildConfig(given, settled, env);
}
