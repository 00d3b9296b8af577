import { inspect } from 'node:util';

const REDACTED = '**redacted**';

/** A value that must never reach a log, an error or stdout: every way of printing it prints `**redacted**`. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
    registerSecret(value);
  }
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [inspect.custom](): string {
    return REDACTED;
  }
}

// Every secret the process has seen, so the log format can scrub them from text it did not build
// itself (SDK error messages, stack traces).
const known = new Set<string>();

export function registerSecret(value: string | undefined): void {
  // Very short values would redact ordinary words; real keys are far longer.
  if (value && value.length >= 8) known.add(value);
}

export function redactText(text: string): string {
  let out = text;
  for (const s of known) if (out.includes(s)) out = out.split(s).join(REDACTED);
  return out;
}

export function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (value instanceof Secret) return REDACTED;
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    return redactText(`${value.name}: ${value.message}`);
  }
  if (Array.isArray(value)) return value.map((v) => redactDeep(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactDeep(v, depth + 1);
  return out;
}

/** Secrets that arrive through the environment (AWS default chain). */
export function registerEnvSecrets(env: NodeJS.ProcessEnv = process.env): void {
  for (const name of ['AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_ACCESS_KEY_ID']) registerSecret(env[name]);
}
