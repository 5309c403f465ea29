#!/usr/bin/env bash
# GPU path check, prepared for the first GPU machine (issue 16 §3). Runs from the repository root
# (with or without Ray installed) in under 8 minutes:
#   1. the training worker's steps under plain torch.distributed (nccl on a GPU, gloo otherwise),
#      world size 1, 2 epochs on a real dataset, checkpoint from the GPU rank read back;
#   2. the CUDA tests (skipped, and so reported, where torch sees no GPU).
# Env: PYTHON (default python), REC_DATA_ROOT (default ../shared/datasets), DATASET (scientific).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DATA=${REC_DATA_ROOT:-../shared/datasets}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
echo "== 1/2 worker under torch.distributed"
timeout 300 "$PY" bench/gpu_check.py --dataset "${DATASET:-scientific}" --epochs 2 --data-dir "$DATA" "$@"
echo "== 2/2 CUDA tests"
# -rs lists the skips: on a CPU-only machine they say "torch sees no GPU here".
timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/rec/training/test_device.py tests/rec/text/test_encoder.py -k "cuda or device"
