#!/usr/bin/env bash
# benchmarks/bench_pack.py under JAX on a GPU host that has JAX + CUDA but no TensorFlow and
# no package index (the project's H200 host). Keras 3 and its two missing needs travel as
# wheels in ./.whl (ignored by git), fetched beforehand on a machine with pip:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# Usage (from anywhere):  bash benchmarks/gpu_pack.sh [OUT_DIR]      (default benchmarks/out/gpu_pack)
# Everything it prints goes to OUT_DIR too. The benchmark stops starting new pack sizes after
# BENCH_BUDGET seconds (default 300) and is killed at BENCH_TIMEOUT (default 500): well inside 10 min.
# Data: FACEHPO_BENCH_CROPS (a crop file) if it exists, else synthetic crops of the same size
# (1,600 train / 400 val).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-benchmarks/out/gpu_pack}"
SITE="${FACEHPO_SITE:-/tmp/facehpo-site}"
mkdir -p "$OUT_DIR"
ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: see the header of $0" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax
{ nvidia-smi || true; python3 -c "import jax, keras; print('jax', jax.__version__, 'keras', keras.__version__, jax.devices())"; } \
    > "$OUT_DIR/environment.txt" 2>&1
data=(--synthetic 1600)
[ -f "${FACEHPO_BENCH_CROPS:-/nonexistent}" ] && data=()
timeout "${BENCH_TIMEOUT:-500}" python3 benchmarks/bench_pack.py "${data[@]}" --epochs 1 \
    --budget-seconds "${BENCH_BUDGET:-300}" --report-budget ${BENCH_ARGS:-} 2>&1 | tee "$OUT_DIR/bench_pack.txt"
