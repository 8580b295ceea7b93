#!/usr/bin/env bash
# One prepared run on an accelerator machine (the device tool), from the source tree, results
# under $OUT: a smoke check (fails fast), the frontier benchmark on both beta grids and both
# dtypes, the inversion benchmark, then the trust calibration at P = 2,000 with what time is left.
# SMALL=1 shrinks every stage to check the script on a CPU.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if [ "${SMALL:-0}" = 1 ]; then
  S1=1000x128x16; S2=2000x128x32; INV="--quick"; CAL="--quick"; R=1; PREC="200 512"
else
  PREC="2000 4096"; S1=10000x1024x64; S2=100000x1024x128; INV="--prompts 10000 --samples 256 --targets 100"
  CAL="--pools 2000 --prompts ${CAL_PROMPTS:-2000000} --sizes 64 256 1024 --chunk 100000 --tile-bytes 268435456"; R=3
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 --version
  python3 -c "import jax, numpy; print('jax', jax.__version__, 'numpy', numpy.__version__, jax.devices())"; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
# 1. smoke: the library imports and a frontier and an inversion run (stop here if not)
timeout 120 python3 - > "$OUT/smoke.txt" 2>&1 <<'EOF'
import time, numpy as np, jax, jaxlimits as jl
r = np.random.default_rng(0).normal(size=(200, 64)).astype(np.float32)
t = time.perf_counter(); f = jl.frontier(jl.Samples(r), per_prompt=False); jax.block_until_ready(f.gain)
print("frontier", f.gain.shape, float(f.gain[-1]), f"{time.perf_counter() - t:.1f}s")
sol = jl.min_kl_for_gain(jl.Samples(r), 0.5); print("min_kl_for_gain(0.5)", float(sol.kl), int(sol.status))
EOF
rc=$?; cat "$OUT/smoke.txt"; echo "smoke exit $rc"; [ $rc = 0 ] || exit 1
# 1b. float32 against float64 where the 2026-11-30 GPU calibration found pooled SEs at float32's rounding
#     (Bernoulli(0.3), N = 4,096, P = 2,000, KL 0.32: gain coverage 0.44 on the GPU, flagged on the CPU)
timeout 120 python3 - $PREC > "$OUT/precision.txt" 2>&1 <<'EOF2'
import sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
import jaxlimits as jl
b = np.array([0.849, 0.606, 0.406]); lam = 1 / b; q = 0.3
pt = q * np.exp(lam) / (q * np.exp(lam) + 1 - q); g_true = pt - q
for rep in range(4):
    r = (np.random.default_rng(rep).random((int(sys.argv[1]), int(sys.argv[2]))) < q).astype(np.float64)
    f64 = jl.frontier(jl.Samples(r), b, per_prompt=False)
    f32 = jl.frontier(jl.Samples(r.astype(np.float32)), b.astype(np.float32), per_prompt=False)
    se = np.asarray(f64.gain_se)
    print("z float64", np.round((np.asarray(f64.gain) - g_true) / se, 2), "z float32",
          np.round((np.asarray(f32.gain, np.float64) - g_true) / se, 2), "float32 se / float64 se",
          np.round(np.asarray(f32.gain_se, np.float64) / se, 3), "reasons32", np.asarray(f32.reasons))
EOF2
echo "precision exit $?"; cat "$OUT/precision.txt" | tail -6
# 2. frontier sweep: octave grid in float32 and float64, geomspace in float32 (default memory budget),
#    then with a 4 GiB budget (fewer, larger tiles) at 10x the prompts
timeout ${BENCH_SECONDS:-240} bash -c "
python3 benchmarks/bench_frontier.py --sizes $S1 --dtypes float32 float64 --impls numpy jaxlimits-sweep jaxlimits-pooled jaxlimits \
  --repeats $R --json $OUT/bench_frontier_octave.json
python3 benchmarks/bench_frontier.py --sizes $S1 --dtypes float32 --grid geomspace --impls numpy jaxlimits-sweep jaxlimits-pooled \
  --repeats $R --json $OUT/bench_frontier_geomspace.json
python3 benchmarks/bench_frontier.py --sizes $S1 $S2 --dtypes float32 --impls jaxlimits-sweep jaxlimits-pooled \
  --memory-budget 4294967296 --repeats $R --json $OUT/bench_frontier_large.json" > "$OUT/bench_frontier.txt" 2>&1
echo "bench_frontier exit $?"; grep "^|" "$OUT/bench_frontier.txt"; grep -i "error" "$OUT/bench_frontier.txt" | head -5
# 3. inversion
timeout ${INV_SECONDS:-100} python3 benchmarks/bench_inversion.py $INV > "$OUT/bench_inversion.txt" 2>&1
echo "bench_inversion exit $?"; tail -n 25 "$OUT/bench_inversion.txt"
# 4. calibration at P = 2,000 (partial results survive the time limit)
timeout ${CAL_SECONDS:-110} python3 benchmarks/calibrate_trust.py $CAL --out "$OUT/calibration.json" > "$OUT/calibration.txt" 2>&1
echo "calibration exit $?"; tail -n 12 "$OUT/calibration.txt"
