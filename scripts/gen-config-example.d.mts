// Types for scripts/gen-config-example.mjs, so TypeScript tests can import it.
export function renderConfigExample(keys: readonly { key: string; doc: string; default?: unknown; values?: readonly string[] }[]): string;
