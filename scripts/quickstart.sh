#!/usr/bin/env bash
# Install, then run the whole story on the embedded default (rec demo, see rec/demo.py):
# synthetic tenants -> Ray Train pretraining -> Ray Tune sweep adapting 3 new tenants -> int8 ONNX
# export -> local Ray Serve -> HTTP requests for every tenant (one zero-shot) -> onboarding a
# tenant from raw CSV -> report (markdown + PNGs) in runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/rec demo --config configs/quickstart.yaml "$@"
