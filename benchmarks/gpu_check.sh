#!/usr/bin/env bash
# The GPU path measured in one short run (issue #16): feature extraction (x real time), the prompt step on
# transformer_lm_big fp32 vs bf16, the LSTM-CTC step. Prints the figures; asserts nothing. About 1-2 min on a GPU.
#   benchmarks/gpu_check.sh            # on cuda
#   benchmarks/gpu_check.sh --device cpu --quick   # a smoke run of the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" - <<'PYEOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}",
      *(f"{torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())))
PYEOF
exec "$PY" benchmarks/gpu_check.py "$@"
