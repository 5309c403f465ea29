#!/usr/bin/env bash
# Create .venv and install fewshot-rec with its dev extra. Idempotent.
# torch==2.13.0 goes first: it is the CPU build on this machine kind's disk; letting another
# package pull torch first downloads a multi-GB CUDA build (see ../shared/FIELD-NOTES.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fewshot-rec-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
