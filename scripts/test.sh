#!/usr/bin/env bash
# The README's test command: the whole suite (slow tests included: training to a learning bar, a real vLLM
# server) on the tiny model and small generated data. Pass pytest options through, e.g. `-m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
