#!/usr/bin/env bash
# Device tests in one command (see device_tests/run.py for the steps and their time budget):
#   device_tests/run.sh [--dry-run] [--sdist llama_cpp_python-X.tar.gz] [--model FILE.gguf] [--report FILE]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
exec "$PY" "$ROOT/device_tests/run.py" "$@"
