#!/usr/bin/env bash
# Install, then run the test suite (CPU only; reads ../shared/datasets when present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest tests "$@"
