#!/usr/bin/env bash
# Sets up this machine (Debian packages, the virtualenv, a running dockerd) and runs
# `knit dev`: its own nats-server, the server, one local agent, SQLite under ./.knit,
# with an example deployment submitted once the API answers. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/knit dev --example "$@"
