#!/usr/bin/env bash
# npm run bench [-- --quick | --daemon-only]: installs the peers (awscli, rclone, s3cmd, GNU time), builds, runs the
# benchmark. Not part of npm test: it takes ~20 minutes and its numbers are for reading, not asserting.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA_PKGS="awscli rclone s3cmd time" bash scripts/install-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
npx tsc -p tsconfig.bench.json
# the agent is measured as it ships: the release executable (AGENT_RUNTIME=source: dist/ on this node)
[ "${AGENT_RUNTIME:-release}" = source ] || bash scripts/package.sh --if-stale
exec node dist/bench/scripts/bench/main.js "$@"
