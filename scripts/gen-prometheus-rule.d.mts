// Types for scripts/gen-prometheus-rule.mjs, so TypeScript tests can import it.
export const RULES_PATH: string;
export const MANIFEST_PATH: string;
export function render(rulesText: string): string;
