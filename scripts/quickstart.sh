#!/usr/bin/env bash
# Install, then run the main job on the embedded default: synthetic tenants -> Ray Train
# pretraining (2 DDP workers on a local Ray) -> full-ranking evaluation -> checkpoint path.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/rec pretrain --config configs/quickstart.yaml "$@"
