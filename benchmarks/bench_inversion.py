"""Benchmark: frontier inversion (``min_kl_for_gain``, ``max_gain_at_kl``) against a SciPy brentq loop.

Times the jitted solvers after compilation (compile time reported separately) on
``prompts x samples`` Gaussian rewards with ``targets`` targets, pooled (one beta for all
prompts) and per prompt, and the loop a researcher would write in the same run: ``brentq`` in
``log beta`` on NumPy log-sum-exp estimates of the same curves (float64), one target (and, per
prompt, one prompt) at a time. The SciPy loop runs on a subset (``--scipy-targets`` pooled,
``--scipy-prompts`` per prompt) and is extrapolated linearly (every solve costs the same), and
its answers are compared with the JAX ones on that subset.

Run:  python benchmarks/bench_inversion.py [--prompts 10000 --samples 256 --targets 100]
      [--dtype float32|float64] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f} at start"


# -- the SciPy reference: what most researchers write -------------------------------------------


def np_curves(r: np.ndarray, beta: float):
    """Per-prompt gain and KL of the tilt at ``beta`` (rows of ``r``), log-sum-exp in NumPy."""
    x = r / beta
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - m)
    z = e.sum(axis=-1, keepdims=True)
    p = e / z
    log_z = (m + np.log(z))[..., 0] - np.log(r.shape[-1])
    gain = (p * r).sum(axis=-1) - r.mean(axis=-1)
    kl = (p * x).sum(axis=-1) - log_z
    return gain, kl


def scipy_solve(r: np.ndarray, target: float, kind: str) -> float:
    """beta with (mean over rows of) gain or KL equal to the target: brentq in log beta."""
    from scipy.optimize import brentq

    k = 0 if kind == "gain" else 1
    scale = float(r.std())
    f = lambda t: float(np.mean(np_curves(r, np.exp(t))[k])) - target  # noqa: E731
    return float(np.exp(brentq(f, np.log(scale) - 12, np.log(scale) + 12)))


# -- the benchmark ------------------------------------------------------------------------------


def timed(fn, repeats: int):
    """(first call incl. compilation, median of the steady calls) in seconds."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times)), out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scipy-prompts", type=int, default=50, help="prompts of the per-prompt SciPy loop")
    ap.add_argument("--scipy-targets", type=int, default=10, help="targets of the pooled SciPy loop")
    ap.add_argument("--quick", action="store_true", help="a small run (1000 x 128 x 20) to check the script")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.samples, args.targets, args.scipy_prompts, args.scipy_targets = 1000, 128, 20, 20, 5

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jaxlimits as jl

    print(f"machine: {machine()}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; jaxlimits {jl.__version__}")
    P, N, T = args.prompts, args.samples, args.targets
    rng = np.random.default_rng(0)
    r64 = rng.standard_normal((P, N))
    samples = jl.Samples(r64.astype(args.dtype))
    print(f"data: {P} prompts x {N} samples of N(0, 1) rewards, {T} targets; JAX in {args.dtype}, SciPy in float64")
    # targets spread over the feasible range of every prompt
    gain_max = float(np.min(r64.max(axis=1) - r64.mean(axis=1)))
    kl_max = float(np.log(N))
    questions = {
        "gain": (jl.min_kl_for_gain, np.linspace(0.02, 0.8 * gain_max, T)),
        "kl": (jl.max_gain_at_kl, np.linspace(0.005, 0.8 * kl_max, T)),
    }
    print()
    head = (f"{'question':<16} {'mode':<10} {'compile s':>9} {'run s':>8} {'queries/s':>10} {'max it':>6} "
            f"{'scipy s':>9} {'scipy q/s':>10} {'speed-up':>9} {'max rel diff':>12} {'corrected s':>11} "
            f"{'x plug-in':>9}")
    print(head)
    print("-" * len(head))
    for kind, (fn, targets) in questions.items():
        name = fn.__name__
        for pooled in (True, False):
            # the plug-in curve: the curve the SciPy loop solves
            first, run, sol = timed(lambda fn=fn, t=targets, p=pooled: fn(samples, t, pooled=p, throw=False,
                                                                            bias_correction=False), args.repeats)
            # the default, bias-corrected curve (secant passes on the plug-in solver)
            _, run_c, sol_c = timed(lambda fn=fn, t=targets, p=pooled: fn(samples, t, pooled=p, throw=False),
                                    args.repeats)
            assert np.all(np.asarray(sol_c.status) == 0), f"{name}: corrected: {np.unique(np.asarray(sol_c.status))}"
            status = np.asarray(sol.status)
            assert np.all(status == 0), f"{name}: unsolved targets {np.unique(status)}"
            queries = T if pooled else P * T
            beta = np.asarray(sol.beta, dtype=np.float64)
            # SciPy loop on a subset, extrapolated
            if pooled:
                idx = np.linspace(0, T - 1, min(args.scipy_targets, T)).round().astype(int)
                t0 = time.perf_counter()
                ref = np.array([scipy_solve(r64, targets[j], kind) for j in idx])
                scipy = (time.perf_counter() - t0) * T / len(idx)
                diff = np.max(np.abs(ref / beta[idx] - 1))
            else:
                rows = np.linspace(0, P - 1, min(args.scipy_prompts, P)).round().astype(int)
                t0 = time.perf_counter()
                ref = np.array([[scipy_solve(r64[i : i + 1], y, kind) for y in targets] for i in rows])
                scipy = (time.perf_counter() - t0) * P / len(rows)
                diff = np.max(np.abs(ref / beta[rows] - 1))
            print(f"{name:<16} {'pooled' if pooled else 'per prompt':<10} {first - run:9.2f} {run:8.3f} "
                  f"{queries / run:10.3g} {int(np.max(np.asarray(sol.iterations))):6d} {scipy:9.1f} "
                  f"{queries / scipy:10.3g} {scipy / run:8.0f}x {diff:12.1e} {run_c:11.3f} {run_c / run:8.1f}x",
                  flush=True)
    print()
    print("run s: median of the jitted call after compilation (one call solves every target; per prompt, every "
          "prompt too); scipy s: brentq (xtol 2e-12) in log beta, one solve per target (and prompt), timed on a "
          "subset and extrapolated; max rel diff: of beta, JAX against SciPy, on that subset (float32 "
          "differences reflect float32 curves). 'max it': Newton iterations of the slowest target, after one "
          "grid pass; each iteration is one kernel pass over all prompts and targets (first-order sums), "
          "then one pass of the one kernel (jaxlimits.tilt's statistics: estimates, SEs, bias, k-hat, trust rule) "
          "at the solution. Those columns solve the plug-in curve "
          "(bias_correction=False), the curve SciPy solves; 'corrected s' is the default, bias-corrected solve "
          "(the plug-in solve, then secant passes: each the bias at the solution and a warm-started re-solve).")


if __name__ == "__main__":
    main()
