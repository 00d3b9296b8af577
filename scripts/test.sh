#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs what it needs (Debian packages,
# npm dependencies), builds, runs unit, integration, then the reliability tests (their short CI pass;
# the long one is `npm run test:reliability:long`). This is `npm test`.
# Env: TEST_ARGS="..." passes extra arguments to vitest (e.g. a file filter).
#      RELIABILITY_MODE=ci|long, RELIABILITY_SEED=N: see docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
# Unit tests first: a broken build or a broken pure room fails fast, before the S3 world starts.
npx vitest run --project unit ${TEST_ARGS:-}
npx vitest run --project tooling ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
npx vitest run --project integration ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
# Faults against the built agent, RGW and etcd (docs/RELIABILITY.md); a file filter for the other
# projects may match none of these files, which is not a failure here.
RELIABILITY_MODE=${RELIABILITY_MODE:-ci} npx vitest run --project reliability ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
