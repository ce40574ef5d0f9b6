#!/usr/bin/env bash
# The GPU check: capture and SAE encoding on a GPT-2-small-shaped and a 2B-shaped random model, as ratios against
# the bare forward pass and a hand-written matmul, on one CUDA device, in under 5 minutes. Runs unchanged on any
# machine with a CUDA torch; prints the device first. Usage: bash benchmarks/gpu_check.sh [extra bench_gpu args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
timeout 280 "$PYTHON" benchmarks/bench_gpu.py --device cuda --sizes gpt2-small,2b --rows 512 --batch-size 32 "$@"
# The README recipes' dry runs (names resolved from the sae-lens registry and the models' configs, no weights) and
# the offline default's dry run at bfloat16 on this device.
timeout 120 "$PYTHON" -m pytest -q tests/test_local_hub.py -k recipe -p no:cacheprovider
timeout 120 "$PYTHON" -m personas.cli.main rank data/demo_responses.jsonl --dry-run --device cuda --dtype bfloat16
