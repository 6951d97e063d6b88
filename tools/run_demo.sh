#!/usr/bin/env bash
# The README's main job: train and evaluate FIND on the embedded demo dataset (CPU, no download).
#   bash tools/run_demo.sh [--output-dir DIR] [--opts KEY VALUE ...]     (tools/run_demo.py --help)
# Builds the detectron2 side of the environment if missing (no mmcv compile: the MMDetection side
# and the tests add it), builds the demo dataset under $DETECTRON2_DATASETS (default ./datasets)
# if missing, evaluates the untrained model, trains with tools/train_net.py, evaluates every task
# and writes the results table, metrics JSON, overlays and loss plot to the output folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
t0=$SECONDS
VENV="$(bash "$ROOT/tools/setup_env.sh" --detectron2-only | tail -n 1)"
echo "[run_demo] environment: $VENV ($((SECONDS - t0)) s)"
# Nothing is downloaded: the weights come from installed packages.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export DETECTRON2_DATASETS="${DETECTRON2_DATASETS:-$ROOT/datasets}"
cd "$ROOT"
"$VENV/bin/python" tools/run_demo.py "$@"
echo "[run_demo] finished in $((SECONDS - t0)) s"
