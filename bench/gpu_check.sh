#!/usr/bin/env bash
# The GPU check: every actor class's device path on one GPU, in one process, under 10 minutes.
#   bench/gpu_check.sh [--assets .assets/tiny] [--dtype bfloat16]
# Needs torch, transformers, peft, safetensors and DeepSpeed (Ray and vLLM are not used). On a machine
# without a GPU it prints "no GPU: skipped" and exits 0. Output goes into bench/README.md, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "no GPU: skipped"
    exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m bench.gpu_check --device cuda "$@"
