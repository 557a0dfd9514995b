#!/usr/bin/env bash
# The main job on the embedded default, from a fresh clone:
#   set-up → tiny model + synthetic assessor logs → SFT (recipes/tiny-cpu.yaml) → merge → vLLM servers →
#   python -m eval.compare (fine-tuned judge vs prompted base model; GPT-5.1 / Qwen-3-30B when configured:
#   OPENAI_API_KEY, QWEN3_BASE_URL) → reports/main/report.md → servers stopped.
# It is `dvc repro` (dvc.yaml): a second run redoes only what changed. A failure names its stage.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "[main-job] 1/2 set-up (.venv)"
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
echo "[main-job] 2/2 dvc repro: prepare → photos → train → merge → evaluate"
if ! dvc repro; then
  echo "[main-job] FAILED: see the stage named above ('failed to reproduce ...'); fix it and rerun: done stages are kept" >&2
  exit 1
fi
dvc metrics show
echo "[main-job] done in $(( $(date +%s) - start )) s"
echo "[main-job] report:        reports/main/report.md (+ metrics.json, predictions.csv, *.png); real photographs: reports/main/photos/report.md"
echo "[main-job] merged judge:  models/judge-tiny (serve: python -m vlm_judge.serve --model models/judge-tiny)"
echo "[main-job] training runs: runs/tiny-cpu, MLflow: mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db"
