#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs what it needs (Debian packages,
# npm dependencies), builds, lints, runs unit, integration, then the reliability tests (their short CI pass;
# the long one is `npm run test:reliability:long`), then the systemd test. This is `npm test`.
#
# The unit tests run on this machine's node. Everything that starts the agent as a process
# (integration, reliability, system) runs the release executable, with the Node runtime it embeds:
# scripts/package.sh builds it first, or reuses release/ when no input changed.
#
# Env: TEST_ARGS="..." passes extra arguments to vitest (e.g. a file filter).
#      RELIABILITY_MODE=ci|long, RELIABILITY_SEED=N: see docs/RELIABILITY.md.
#      AGENT_RUNTIME=source: run those suites on dist/ with this machine's node instead.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
# Types of tests and scripts, lint rules, formatting: seconds, and before anything starts a server.
npm run lint
# Unit tests first: a broken build or a broken pure room fails fast, before the S3 world starts.
npx vitest run --project unit ${TEST_ARGS:-}
npx vitest run --project tooling ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}

export AGENT_RUNTIME="${AGENT_RUNTIME:-release}"
if [ "$AGENT_RUNTIME" = release ]; then bash scripts/package.sh --if-stale; fi
# A file filter for one project may match none of another's files, which is not a failure here.
npx vitest run --project integration ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
# Faults against the agent, RGW and etcd (docs/RELIABILITY.md).
RELIABILITY_MODE=${RELIABILITY_MODE:-ci} npx vitest run --project reliability ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
# The unit under a real systemd (a Debian root booted with systemd-nspawn; skipped, with the reason,
# where that cannot boot). It always installs the release tarball; its world needs no Swift.
WORLD_SWIFT=0 npx vitest run --project system ${TEST_ARGS:+--passWithNoTests} ${TEST_ARGS:-}
