// Lint: typescript-eslint's type-aware recommended rules over the agent, the tests and the scripts (their
// types come from tsconfig.lint.json, which `npm run lint` also type-checks).
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'release/', 'node_modules/', 'coverage/', '.quickstart/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { project: './tsconfig.lint.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // TypeScript checks names itself, with the types ESLint's rule does not know
      'no-undef': 'off',
      // an async method that implements a Promise-returning interface needs no await; a forgotten await is
      // caught by no-floating-promises and no-misused-promises
      '@typescript-eslint/require-await': 'off',
      // control characters in a pattern are how this code finds them in names, logs and terminal output
      'no-control-regex': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    // Tests and scripts read JSON, logs and child-process output whose shape the assertions check:
    // typing every parsed document would add noise, not safety.
    files: ['test/**', 'scripts/**'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/restrict-template-expressions': 'off',
    },
  },
  { files: ['**/*.{js,mjs,cjs}'], ...tseslint.configs.disableTypeChecked },
);
