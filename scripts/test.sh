#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs what it needs (Debian packages,
# npm dependencies), builds, runs unit then integration tests. This is `npm test`.
# Env: TEST_ARGS="..." passes extra arguments to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
# Unit tests first: a broken build or a broken pure room fails fast, before the S3 world starts.
npx vitest run --project unit ${TEST_ARGS:-}
npx vitest run --project integration ${TEST_ARGS:-}
