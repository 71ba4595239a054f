#!/bin/sh
# Rebuild streamkit/render/static/ from js/src/ with the exact versions in package-lock.json.
# Needs Node 18+ and the npm registry (only here, at build time; the bundle is committed).
set -eu
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
node build.mjs
