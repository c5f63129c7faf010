#!/usr/bin/env bash
# README command one: set up edgert and answer a prompt with SmolLM2-135M-Instruct.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/edgert" demo "$@"
