"""The frontier sweep against what users would otherwise write, in one run, on the same data.

For each size ``prompts x samples x betas`` and dtype, every implementation computes the tilted
gain and KL of every (prompt, beta) from the same standard-normal rewards and the same beta
grid: ``--grid octave`` (the default) is octave-aligned, 8 points per octave (the grid
``jaxlimits.default_betas`` makes); ``--grid geomspace`` is a user's own ``np.geomspace(10, 0.01, B)``,
on which ``2 / beta`` is (almost) never a grid point:

* ``loop``: NumPy/SciPy loop over beta, ``scipy.special.logsumexp`` + ``softmax`` (what most
  researchers write; two exponentials per element);
* ``numpy``: hand-tuned vectorised NumPy: tiles of 16 prompts, one exponential per element, the
  sums by ``matmul``, two Python threads (OpenBLAS limited to one thread each);
* ``torch``: PyTorch on the CPU, ``torch.logsumexp`` + ``torch.softmax`` per beta (skipped when
  torch is not installed);
* ``jaxlimits``: ``jaxlimits.tilt`` (13 statistics per (prompt, beta): log Z, gain, KL, reverse
  KL, Jeffreys, means, variance, covariance, ESS and three standard errors);
* ``jaxlimits-pooled``: ``jaxlimits.frontier(per_prompt=False)`` (pooled over prompts tile by tile:
  memory independent of the number of prompts);
* ``jaxlimits-sweep``: the pooled frontier without the PSIS k-hat of the trust rule (the
  internal ``jaxlimits.frontier.pool_sweep(..., khat=False)``): the sums and their finalisation alone,
  the part that the exp roofline bounds (k-hat fits a Pareto tail with ~40 x 100 logarithms per
  (prompt, beta));
* ``roofline``: a jitted ``sum(exp(x))`` over the same number of exponentials, measured in the same
  run (XLA spreads a large flat reduction over all cores).

Each measurement runs in a fresh process (peak memory is that process's peak RSS minus its RSS
once the data exist, measured after the warm-up call so compilation is left out): median wall
time over ``--repeats`` runs after a warm-up, compile time (first call minus the median),
throughput in exponentials per second (``P * N * B / time``), the ratio to the roofline and
to jaxlimits, and the largest relative deviation of gain and KL from a float64 NumPy reference
on the first 64 prompts (for ``jaxlimits``, of its plug-in estimates ``gain + gain_bias``,
``kl + kl_bias``: ``tilt`` reports bias-corrected ones, which differ from the plug-in by design).
Run::

    python benchmarks/bench_frontier.py                          # the default sizes, both dtypes
    python benchmarks/bench_frontier.py --sizes 10000x1024x64 --dtypes float32 --repeats 5
    python benchmarks/bench_frontier.py --json results.json      # also write the raw figures
    python benchmarks/bench_frontier.py --sizes 10000x1024x64 --grid geomspace   # an arbitrary grid

On a GPU machine the same script runs unchanged (JAX picks the accelerator; the NumPy and
PyTorch baselines stay on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

IMPLS = ("loop", "numpy", "torch", "jaxlimits", "jaxlimits-pooled", "jaxlimits-sweep")
DEFAULT_SIZES = ("1000x256x64", "10000x1024x64", "30000x1024x128", "100000x1024x128")
GRIDS = ("octave", "geomspace")


def betas_for(num: int, grid: str = "octave") -> np.ndarray:
    """``num`` betas: ``octave``: 8 per octave, decreasing from 8 (the shape of ``jaxlimits.default_betas``);
    ``geomspace``: ``np.geomspace(10, 0.01, num)``, a grid without octave structure."""
    if grid == "geomspace":
        return np.geomspace(10.0, 0.01, num)
    return 8.0 * 2.0 ** (-np.arange(num) / 8)


def rewards_for(p: int, n: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.empty((p, n), dtype)
    for lo in range(0, p, 4096):
        out[lo:lo + 4096] = rng.standard_normal((min(4096, p - lo), n), dtype=np.float64).astype(dtype)
    return out


# -- the implementations: each returns (gain, kl) [P, B]


def run_loop(r, betas):
    from scipy.special import logsumexp, softmax

    n = r.shape[1]
    mean = r.mean(axis=1)
    gain = np.empty((r.shape[0], len(betas)), r.dtype)
    kl = np.empty_like(gain)
    for j, b in enumerate(betas):
        z = r / r.dtype.type(b)
        lse = logsumexp(z, axis=1)
        p = softmax(z, axis=1)
        mp = (p * r).sum(axis=1)
        gain[:, j] = mp - mean
        kl[:, j] = mp / b - (lse - np.log(n))
    return gain, kl


def run_numpy(r, betas, threads: int = 2, tile: int = 16):
    from concurrent.futures import ThreadPoolExecutor

    p, n = r.shape
    lam = (1 / betas).astype(r.dtype)
    r_max = r.max(axis=1)
    x = r - r_max[:, None]
    mean = r.mean(axis=1)
    feats = np.stack([np.ones_like(x), x], axis=-1)  # [P, N, 2]
    gain = np.empty((p, len(betas)), r.dtype)
    kl = np.empty_like(gain)

    def work(lo, hi):
        for a in range(lo, hi, tile):
            b = min(a + tile, hi)
            e = np.exp(lam[None, :, None] * x[a:b, None, :])  # [t, B, N], one exponential each
            s = e @ feats[a:b]  # [t, B, 2]
            mx = s[..., 1] / s[..., 0]
            gain[a:b] = r_max[a:b, None] + mx - mean[a:b, None]
            kl[a:b] = lam * mx - np.log(s[..., 0] / n)

    bounds = np.linspace(0, p, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: work(bounds[i], bounds[i + 1]), range(threads)))
    return gain, kl


def run_torch(r, betas):
    import torch

    torch.set_num_threads(2)
    t = torch.from_numpy(r)
    mean = t.mean(dim=1)
    gains, kls = [], []
    with torch.no_grad():
        for b in betas:
            z = t / float(b)
            lse = torch.logsumexp(z, dim=1)
            p = torch.softmax(z, dim=1)
            mp = (p * t).sum(dim=1)
            gains.append(mp - mean)
            kls.append(mp / float(b) - (lse - np.log(r.shape[1])))
    return torch.stack(gains, 1).numpy(), torch.stack(kls, 1).numpy()


def _jax_runner(name, r, betas):
    import jax

    import jaxlimits as jl

    samples = jl.Samples(r)
    budget = int(os.environ.get("BENCH_MEMORY_BUDGET", "0")) or None  # --memory-budget
    if name == "jaxlimits":

        def go():
            st = jl.tilt(samples, betas, memory_budget=budget)
            jax.block_until_ready(st)
            # the plug-in estimates, as the others compute (tilt reports the bias-corrected ones)
            return st.gain + st.gain_bias, st.kl + st.kl_bias
    elif name == "jaxlimits-pooled":

        def go():
            f = jl.frontier(samples, betas, per_prompt=False, memory_budget=budget)
            jax.block_until_ready(f)
            return f.gain, f.kl
    else:
        import importlib

        fr = importlib.import_module("jaxlimits.frontier")
        plan = fr._plan_for(samples, betas, budget, khat_in_tiles=False)  # (lam, plan): pooled, no k-hat in the tiles
        args = (samples, plan[0], plan[-1], False) + tuple(plan[1:-1])

        def go():
            pool, _ = fr.pool_sweep(*args, khat=False)  # pooled sums (finalised by the caller: microseconds)
            return jax.block_until_ready(pool), None

    return go


def roofline(count: int, dtype) -> dict:
    """Exponentials per second of a jitted ``sum(exp(x c_k))`` over about ``count`` elements."""
    import jax
    import jax.numpy as jnp

    total = max(count, 2**28)  # large enough that XLA spreads the reduction over every core
    m = int(min(total, 2**24))
    k = max(1, int(round(total / m)))
    x = jnp.asarray(np.random.default_rng(1).standard_normal(m), dtype)
    cs = jnp.asarray(np.linspace(-1.0, -0.01, k), dtype)
    f = jax.jit(lambda x, cs: jnp.sum(jnp.exp(x[None, :] * cs[:, None])))
    f(x, cs).block_until_ready()
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        f(x, cs).block_until_ready()
        ts.append(time.perf_counter() - t0)
    rate = k * m / float(np.median(ts))
    return {"rate": rate, "time": count / rate}


# -- one measurement in this (fresh) process


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak() -> int:
    """Peak RSS since the last :func:`_reset_peak` (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def child(impl: str, size: str, dtype_name: str, repeats: int, max_seconds: float, grid: str = "octave") -> dict:
    p, n, b = (int(v) for v in size.split("x"))
    dtype = np.dtype(dtype_name)
    if impl.startswith("jax") or impl == "roofline":
        import jax

        jax.config.update("jax_enable_x64", dtype == np.float64)
    if impl == "roofline":
        return roofline(p * n * b, dtype)
    r = rewards_for(p, n, dtype)
    betas = betas_for(b, grid)
    import scipy.special  # noqa: F401  (imports before the memory baseline)

    if impl == "torch":
        import torch  # noqa: F401
    if impl.startswith("jax"):
        import jaxlimits  # noqa: F401
    base = _rss()
    _reset_peak()
    if impl == "loop":
        go = lambda: run_loop(r, betas)  # noqa: E731
    elif impl == "numpy":
        go = lambda: run_numpy(r, betas)  # noqa: E731
    elif impl == "torch":
        go = lambda: run_torch(r, betas)  # noqa: E731
    else:
        go = _jax_runner(impl, r, betas)
    t0 = time.perf_counter()
    out = go()
    first = time.perf_counter() - t0
    if impl.startswith("jax") and first >= max_seconds:  # the first call compiled: time one more
        base = _rss()
        _reset_peak()
        t0 = time.perf_counter()
        out = go()
        times = [time.perf_counter() - t0]
    elif first < max_seconds:
        base = _rss()  # steady state: compilation's memory (and caches) are not the sweep's
        _reset_peak()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = go()
            times.append(time.perf_counter() - t0)
    else:
        times = [first]
    med = float(np.median(times))
    dev = None
    if impl not in ("jaxlimits-pooled", "jaxlimits-sweep"):  # per-prompt results: the first 64 prompts against float64
        gain, kl = (np.asarray(a)[:64].astype(np.float64) for a in out)
        ref_gain, ref_kl = run_loop(r[:64].astype(np.float64), betas)
        dev = max(float(np.max(np.abs(gain - ref_gain) / np.abs(ref_gain))),
                  float(np.max(np.abs(kl - ref_kl) / np.abs(ref_kl))))
    return {"time": med, "runs": len(times), "compile": max(0.0, first - med) if impl.startswith("jax") else None,
            "peak_mb": (_peak() - base) / 2**20, "data_mb": r.nbytes / 2**20, "deviation": dev}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2)}  # other work on the machine skews every figure
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
        flags = open("/proc/cpuinfo").read()
        info["simd"] = "avx512f" if "avx512f" in flags else ("avx2" if "avx2" in flags else "sse")
        with open("/proc/meminfo") as f:
            info["ram_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    import jax

    info["jax"] = jax.__version__
    info["jax_backend"] = jax.default_backend()
    info["jax_device"] = jax.devices()[0].device_kind
    info["numpy"] = np.__version__
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="PxNxB sizes")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--grid", default="octave", choices=GRIDS,
                    help="beta grid: octave-aligned (default_betas' shape) or np.geomspace(10, 0.01, B)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="a first run longer than this is the only run (slow baselines at large sizes)")
    ap.add_argument("--skip-loop-above", type=float, default=1e9,
                    help="skip the loop and torch baselines above this many exponentials")
    ap.add_argument("--memory-budget", type=int, default=0,
                    help="jaxlimits' memory_budget in bytes (default: the library's, 256 MiB)")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    ap.add_argument("--child", nargs=6, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        impl, size, dt, reps, maxs, grid = args.child
        print(json.dumps(child(impl, size, dt, int(reps), float(maxs), grid)))
        return 0

    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    info = machine()
    info["grid"] = args.grid
    info["memory_budget"] = args.memory_budget or None
    print("machine:", json.dumps(info))
    results = []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="2", MKL_NUM_THREADS="1",
               BENCH_MEMORY_BUDGET=str(args.memory_budget))
    for size in args.sizes:
        p, n, b = (int(v) for v in size.split("x"))
        count = p * n * b
        for dt in args.dtypes:
            row = {"size": size, "dtype": dt, "exps": count}
            for impl in ("roofline",) + tuple(args.impls):
                if impl == "torch" and not have_torch:
                    continue
                if impl in ("loop", "torch") and count > args.skip_loop_above:
                    continue
                cmd = [sys.executable, __file__, "--child", impl, size, dt, str(args.repeats), str(args.max_seconds),
                       args.grid]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    row[impl] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
                else:
                    row[impl] = json.loads(res.stdout.strip().splitlines()[-1])
                print(f"  {size} {dt} {impl}: {row[impl]}", flush=True)
            results.append(row)
    print()
    print(report(results, info))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "results": results}, f, indent=1)
    return 0


def report(results, info) -> str:
    """A markdown table: time, throughput, ratios, compile time, memory, deviation."""
    lines = [f"Machine: {info.get('cpu')} ({info.get('cpus')} cores, {info.get('simd')}, {info.get('ram_gb')} GB), "
             f"JAX {info.get('jax')} on {info.get('jax_backend')} ({info.get('jax_device')}), "
             f"NumPy {info.get('numpy')}, "
             f"PyTorch {info.get('torch')}; load average {info.get('load_average')} at the start; "
             f"{info.get('grid', 'octave')} beta grid; memory_budget {info.get('memory_budget') or 'default'}", "",
             "| size P x N x B | dtype | implementation | median time (s) | exp/s | x roofline | "
             "time / jaxlimits | compile (s) | peak memory (MB) | max rel. deviation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results:
        roof = row.get("roofline", {})
        ref = row.get("jaxlimits", {})
        rt = roof.get("time")
        lines.append(f"| {row['size']} | {row['dtype']} | roofline `sum(exp)` | {rt:.3f} | {roof.get('rate', 0):.2e} "
                     "| 1.00 | | | | |" if rt else f"| {row['size']} | {row['dtype']} | roofline | failed |")
        for impl in IMPLS:
            r = row.get(impl)
            if not r:
                continue
            if "error" in r:
                lines.append(f"| {row['size']} | {row['dtype']} | {impl} | error: {r['error'][:60]} | | | | | | |")
                continue
            t = r["time"]
            speed = f"{t / ref['time']:.1f}x" if ref.get("time") and impl != "jaxlimits" else ""
            comp = f"{r['compile']:.2f}" if r.get("compile") is not None else ""
            runs = "" if r["runs"] > 1 else " (1 run)"
            dev = "" if r.get("deviation") is None else f"{r['deviation']:.1e}"
            lines.append(
                f"| {row['size']} | {row['dtype']} | {impl} | {t:.3f}{runs} | {row['exps'] / t:.2e} | "
                f"{t / rt:.2f} | {speed} | {comp} | {r['peak_mb']:.0f} | {dev} |" if rt else "")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
