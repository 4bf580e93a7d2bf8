#!/usr/bin/env bash
# The GPU checks of espnet3, in under 8 minutes on one GPU (plus a first offline install); writes
# OUT/summary.md (and the raw files).
#
#   benchmarks/gpu_check.sh [OUT]        # OUT defaults to exp/gpu_check
#   benchmarks/gpu_check.sh --install    # only the offline install below
#   benchmarks/gpu_check.sh --prepare [IMAGE_PACKAGES]   # on a networked machine: fill .whl/
#                                        # (PYTHON: its interpreter, default python3.12)
#
# The interpreter: $PYTHON if set, used as it is; else .venv/bin/python if it passes
# espnet3/utils/check_install.py; else .venv is made first from the wheels in .whl/ (--install,
# under a timeout, logged to OUT/install.log; a failed install stops the script).
#
# Offline install, for a GPU machine without network whose image has Python 3.12 with torch
# 2.11.0+cu130, torchaudio, lightning, numpy, ... but not ray or espnet:
#
# 1. On a networked Linux x86_64 machine with python3.12, in this checkout:
#      benchmarks/gpu_check.sh --prepare [image.txt]
#    image.txt (optional) is `python3 -m pip list --format=freeze` from the GPU machine: what it
#    lists at the pinned version is not fetched. For each pin of requirements/constraints.txt except
#    the image's torch stack (torch, torchaudio, triton, nvidia-*, cuda-*), that runs
#      python3.12 -m pip download -d .whl --no-deps --only-binary=:all: --python-version 3.12 \
#          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#          --platform manylinux2014_x86_64 PIN
#    (pip does not widen manylinux_2_28 to older tags by itself, and ray's wheel is manylinux2014),
#    builds the pins that have no such wheel (sdists: Distance, antlr4-python3-runtime, pyworld, ...)
#      python3.12 -m pip wheel --no-deps -w .whl PIN ...
#    and fetches espnet 202611 and the rest of requirements/espnet.txt (some are sdists, too):
#      python3.12 -m pip wheel --no-deps -w .whl -r requirements/espnet.txt
#    setuptools stays in .whl/ even when the image has it: it builds the editable install offline.
# 2. Copy .whl/ into the checkout on the GPU machine. The wheels are compressed already (ray's
#    alone is 79 MB), so a size-limited copy will not take them.
# 3. On the GPU machine (this script does it when .venv is missing or broken):
#      python3 -m venv --system-site-packages .venv         # the image's torch stays the one used
#      .venv/bin/python -m pip install --no-index --find-links .whl -e .
#      .venv/bin/python -m pip install --no-index --find-links .whl --no-deps -r requirements/espnet.txt
#      .venv/bin/python espnet3/utils/check_install.py --replace-bundled
#    pip keeps each image package that meets pyproject.toml's range and installs the pinned wheel
#    otherwise (e.g. numpy<2.4). The project itself is installed editable, as `make install` does,
#    not as a wheel: check_install.py requires `import espnet3` to be this checkout, and espnet's
#    wheel puts its own espnet3 package into the same site-packages folder that a non-editable
#    espnet3 wheel would use; --replace-bundled removes espnet's copy.
#
# The checks:
# 1. the default job (configs/digits_asr.yaml) on 1 GPU, with nvidia-smi sampling utilisation;
# 2. the NaN guard on CUDA, fp32 and bf16-mixed (skips, optimizer state, the limit);
# 3. espnet3 on Ray (1 GPU) vs plain Lightning (1 GPU), and espnet3's step vs the model-only step,
#    same batches (python -m benchmarks.run --size gpu --only gpu_throughput gpu_step);
# 4. the model-only step at 16, 64 and 256 utterances, foreach and fused Adam.
# Every step has a timeout and its own Ray temp dir; a failing step is recorded, the others still run.
set -uo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."
WHEELS=.whl
VENV=.venv
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

prepare() {  # prepare [IMAGE_PACKAGES]: fill $WHEELS on a networked machine
  local py=${PYTHON:-python3.12} image=${1:+$(cd "$CALLER_DIR" && realpath -m "$1")} req
  mkdir -p "$WHEELS" || return 1
  "$py" - "$image" > "$WHEELS/need.txt" <<'EOF' || return 1
import re
import sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

have = set()
if sys.argv[1]:
    for line in open(sys.argv[1]):
        if "==" in line:
            name, version = line.strip().split("==", 1)
            have.add((norm(name), version.split("+")[0]))
torch_stack = re.compile(r"(torch|torchaudio|triton|nvidia-.*|cuda-.*)")
for line in open("requirements/constraints.txt"):
    pin = line.split("#")[0].strip()
    if "==" not in pin:
        continue
    name, version = (part.strip() for part in pin.split("==", 1))
    if torch_stack.fullmatch(norm(name)) or (norm(name) != "setuptools" and (norm(name), version) in have):
        continue
    print(pin)
EOF
  : > "$WHEELS/build.txt"
  while read -r req; do
    echo "[gpu_check] fetching $req" >&2
    "$py" -m pip download -q --disable-pip-version-check -d "$WHEELS" --no-deps --only-binary=:all: \
      --python-version 3.12 "${PLATFORMS[@]}" "$req" 2>/dev/null || echo "$req" >> "$WHEELS/build.txt"
  done < "$WHEELS/need.txt"
  if [ -s "$WHEELS/build.txt" ]; then
    echo "[gpu_check] building wheels for: $(tr '\n' ' ' < "$WHEELS/build.txt")" >&2
    "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" -r "$WHEELS/build.txt" || return 1
  fi
  "$py" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" -r requirements/espnet.txt || return 1
  echo "[gpu_check] $(ls "$WHEELS"/*.whl | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1) in $WHEELS/" >&2
}

install() {  # make $VENV from $WHEELS, offline, on top of the image's packages
  [ -d "$WHEELS" ] || { echo "no $WHEELS/ here: make it with --prepare on a networked machine (see the header)" >&2; return 2; }
  python3 -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 12), (3, 13)) else "espnet3 needs Python 3.12 or 3.13, python3 is " + sys.version.split()[0])' || return 2
  # --without-pip when the image lacks ensurepip: the image's own pip then runs in the venv
  python3 -m venv --system-site-packages "$VENV" || python3 -m venv --without-pip --system-site-packages "$VENV" || return 1
  local pip=("$VENV/bin/python" -m pip --disable-pip-version-check install --no-index --find-links "$WHEELS")
  "${pip[@]}" -e . || return 1
  "${pip[@]}" --no-deps -r requirements/espnet.txt || return 1
  "$VENV/bin/python" espnet3/utils/check_install.py --replace-bundled
}

case "${1:-}" in
  --prepare) shift; prepare "$@"; exit ;;
  --install) install; exit ;;
esac

OUT=$(realpath -m "${1:-exp/gpu_check}")
mkdir -p "$OUT"
export RAY_TMPDIR=/tmp/e3gpu OMP_NUM_THREADS=1
step() {  # step NAME SECONDS CMD...: run with a timeout, keep its output and exit code
  local name=$1 limit=$2; shift 2
  echo "[gpu_check] $name ..." >&2
  local start=$(date +%s)
  timeout --kill-after=20 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"exit_code\": $rc, \"seconds\": $(( $(date +%s) - start ))}" > "$OUT/$name.status.json"
  return $rc
}

PY=${PYTHON:-$VENV/bin/python}
if [ -z "${PYTHON:-}" ] && ! { [ -x "$PY" ] && "$PY" espnet3/utils/check_install.py >/dev/null 2>&1; }; then
  if ! step install 420 bash benchmarks/gpu_check.sh --install; then
    tail -n 30 "$OUT/install.log" >&2
    python3 -m benchmarks.gpu_summary "$OUT" > "$OUT/summary.md" 2>/dev/null
    echo "[gpu_check] install failed: $OUT/install.log" >&2
    exit 1
  fi
fi

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
