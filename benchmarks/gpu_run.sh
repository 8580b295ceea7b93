#!/usr/bin/env bash
# One prepared run on an accelerator machine (the device tool): the trust calibration at full size
# and the frontier and inversion benchmarks, from the source tree, results under $OUT.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import jax; print(jax.__version__, jax.devices())"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
timeout ${CAL_SECONDS:-330} python3 benchmarks/calibrate_trust.py --prompts ${CAL_PROMPTS:-400000} --chunk 50000 \
  --tile-bytes 268435456 --out "$OUT/calibration.json" > "$OUT/calibration.txt" 2>&1
echo "calibration exit $?"; tail -n 70 "$OUT/calibration.txt"
timeout ${BENCH_SECONDS:-150} bash -c "python3 benchmarks/bench_frontier.py --sizes 10000x1024x64 --dtypes float32 float64 \
  --impls numpy jaxlimits jaxlimits-pooled --repeats 3 --json $OUT/bench_frontier.json && \
  python3 benchmarks/bench_frontier.py --sizes 100000x1024x128 --dtypes float32 float64 --impls jaxlimits jaxlimits-pooled \
  --repeats 3 --json $OUT/bench_frontier_large.json" > "$OUT/bench_frontier.txt" 2>&1
echo "bench_frontier exit $?"; tail -n 30 "$OUT/bench_frontier.txt"
timeout ${INV_SECONDS:-90} python3 benchmarks/bench_inversion.py --prompts 10000 --samples 256 --targets 100 \
  > "$OUT/bench_inversion.txt" 2>&1
echo "bench_inversion exit $?"; tail -n 30 "$OUT/bench_inversion.txt"
