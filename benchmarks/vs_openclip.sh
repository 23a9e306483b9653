#!/usr/bin/env bash
# Interleaved train-step throughput, vlalign against OpenCLIP on the same architectures
# (tiny@128, tiny@256, small@128), each REPEATS times, alternating frameworks. JSON lines go to
# $OUT (default benchmarks/results/vs_openclip.jsonl). Needs the OpenCLIP venv described in
# ../shared/bench/openclip/README.md at $OC_VENV.
#   OC_VENV=$HOME/.venvs/openclip REPEATS=1 STEPS=10 bash benchmarks/vs_openclip.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OC_DIR="${OC_DIR:-$ROOT/../shared/bench/openclip}"
OC_VENV="${OC_VENV:?set OC_VENV to the OpenCLIP venv}"
OUT="${OUT:-$ROOT/benchmarks/results/vs_openclip.jsonl}"
REPEATS="${REPEATS:-1}"
STEPS="${STEPS:-10}"
PY="${PY:-python}"
mkdir -p "$(dirname "$OUT")"
for rep in $(seq 1 "$REPEATS"); do
  for cfg in "tiny 128" "tiny 256" "small 128"; do
    set -- $cfg
    echo "# rep $rep $1@$2 openclip $(date -u +%T)" >&2
    (cd "$OC_DIR" && "$OC_VENV/bin/python" bench_openclip.py --model_variant "$1" --batch "$2" \
       --steps "$STEPS" 2>/dev/null | tail -n 1) | tee -a "$OUT"
    echo "# rep $rep $1@$2 vlalign $(date -u +%T)" >&2
    "$PY" "$ROOT/benchmarks/train_step.py" --variant "$1" --batch "$2" --steps "$STEPS" \
       2>/dev/null | tail -n 1 | tee -a "$OUT"
  done
done
