#!/usr/bin/env bash
# The GPU checks of espnet3, in under 8 minutes on one GPU; writes OUT/summary.md (and the raw files).
#
#   benchmarks/gpu_check.sh [OUT]        # OUT defaults to exp/gpu_check; PYTHON picks the interpreter
#
# 1. the default job (configs/digits_asr.yaml) on 1 GPU, with nvidia-smi sampling utilisation;
# 2. the NaN guard on CUDA, fp32 and bf16-mixed (skips, optimizer state, the limit);
# 3. espnet3 on Ray (1 GPU) vs plain Lightning (1 GPU), and espnet3's step vs the model-only step,
#    same batches (python -m benchmarks.run --size gpu --only gpu_throughput gpu_step);
# 4. the model-only step at 16, 64 and 256 utterances, foreach and fused Adam.
# Every step has a timeout and its own Ray temp dir; a failing step is recorded, the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-exp/gpu_check}")
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"
export RAY_TMPDIR=/tmp/e3gpu OMP_NUM_THREADS=1
step() {  # step NAME SECONDS CMD...: run with a timeout, keep its output and exit code
  local name=$1 limit=$2; shift 2
  echo "[gpu_check] $name ..." >&2
  local start=$(date +%s)
  timeout --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "{\"exit_code\": $?, \"seconds\": $(( $(date +%s) - start ))}" > "$OUT/$name.status.json"
}

nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
  > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
step default_job 240 "$PY" -m espnet3.launch --config configs/digits_asr.yaml --num-gpus 1 \
  "exp_dir=$OUT/default_job" "data.train=$OUT/data/train" "data.valid=$OUT/data/valid" "data.test.test=$OUT/data/test"
kill $SMI 2>/dev/null
step nan_fp32 60 "$PY" -m benchmarks.gpu_nan_check --precision 32-true
step nan_bf16 60 "$PY" -m benchmarks.gpu_nan_check --precision bf16-mixed
step ratios 240 "$PY" -m benchmarks.run --size gpu --only gpu_throughput gpu_step \
  --work-dir "$OUT/bench" --data-dir "$OUT/data_bench" --results-dir "$OUT/bench_results"
step model_step 90 "$PY" -m benchmarks.model_step --sizes 16 64 256 --steps 20 --warmup 10
"$PY" -m benchmarks.gpu_summary "$OUT" | tee "$OUT/summary.md"
