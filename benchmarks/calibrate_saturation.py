"""Calibrates the rule behind ``TiltStats.saturated`` by simulation (MATH.md §3).

For reward laws with closed-form tilts (normal, exponential, uniform, Bernoulli) and sample
sizes N from 32 to 4096, many replicates of N samples are drawn; at each beta every replicate's
estimate is checked against the truth: is it inside its +-1.96 SE interval? Coverage and bias are
then tabulated against the diagnostics the rule may use (ESS, ESS/N, KL / KL ceiling), and the
most permissive rule of the form

    saturated = (ess < ess_min) | (ess < ess_fraction * N) | (kl > kl_fraction * kl_ceiling)

is evaluated: per law, the coverage of the unflagged intervals, the share of estimates kept, and
the worst cell (N, beta). Run:  python benchmarks/calibrate_saturation.py [--reps 1000] [--search]
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)


import jaxlimits as jl  # noqa: E402
from jaxlimits import estimators  # noqa: E402


def truth(law: str, betas: np.ndarray):
    """Exact (gain, KL) of the tilted law at each beta (MATH.md §10)."""
    lam = 1 / betas
    if law == "normal":
        return lam, lam**2 / 2
    if law == "exponential":  # beta > 1
        return 1 / (betas - 1), 1 / (betas - 1) + np.log1p(-lam)
    if law == "uniform":
        mean = 1 / (-np.expm1(-lam)) - 1 / lam
        log_z = np.log(np.expm1(lam) / lam)
        return mean - 0.5, lam * mean - log_z
    if law.startswith("bernoulli"):
        p = float(law.split("_")[1])
        q = p * np.exp(lam) / (1 - p + p * np.exp(lam))
        return q - p, q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    raise ValueError(law)


def draw(law: str, rng, shape):
    if law == "normal":
        return rng.standard_normal(shape)
    if law == "exponential":
        return rng.exponential(size=shape)
    if law == "uniform":
        return rng.uniform(size=shape)
    p = float(law.split("_")[1])
    return (rng.uniform(size=shape) < p).astype(float)


LAWS = {
    "normal": np.geomspace(0.25, 8, 16),
    "exponential": np.geomspace(1.1, 16, 14),
    "uniform": np.geomspace(0.03, 2, 14),
    "bernoulli_0.3": np.geomspace(0.1, 4, 12),
    "bernoulli_0.05": np.geomspace(0.1, 4, 12),
}
SIZES = (32, 128, 256, 512, 1024, 2048)


def simulate(reps: int, seed: int = 0):
    """Per replicate and cell: diagnostics and whether the intervals cover the truth."""
    rng = np.random.default_rng(seed)
    records = []
    for law, betas in LAWS.items():
        g_true, k_true = truth(law, betas)
        for n in SIZES:
            r = draw(law, rng, (reps, n))
            st = jl.tilt(jl.Samples(r), betas)
            gain, kl = np.asarray(st.gain), np.asarray(st.kl)
            gse, kse = np.asarray(st.gain_se), np.asarray(st.kl_se)
            records.append(
                dict(
                    law=law, n=n, betas=betas,
                    ess=np.asarray(st.ess), ceiling=np.asarray(st.kl_ceiling)[:, None] + 0 * kl,
                    kl=kl, gain_err=(gain - g_true) / g_true, kl_err=(kl - k_true) / k_true,
                    cover_gain=np.abs(gain - g_true) <= 1.96 * gse,
                    cover_kl=np.abs(kl - k_true) <= 1.96 * kse,
                )
            )
    return records


def flags(rec, ess_min, ess_fraction, kl_fraction):
    return (rec["ess"] < ess_min) | (rec["ess"] < ess_fraction * rec["n"]) | (rec["kl"] > kl_fraction * rec["ceiling"])


def evaluate(records, rule, min_unflagged=200):
    """Per law: pooled coverage of unflagged estimates (gain, KL), share kept, worst cell."""
    out = {}
    for law in LAWS:
        cov_g, cov_k, kept, total, worst = [], [], 0, 0, (1.0, None)
        for rec in (r for r in records if r["law"] == law):
            ok = ~flags(rec, *rule)
            kept += ok.sum()
            total += ok.size
            cov_g.append(rec["cover_gain"][ok])
            cov_k.append(rec["cover_kl"][ok])
            for b in range(ok.shape[1]):
                col = ok[:, b]
                if col.sum() >= min_unflagged:
                    c = min(rec["cover_gain"][col, b].mean(), rec["cover_kl"][col, b].mean())
                    if c < worst[0]:
                        worst = (c, f"N={rec['n']} beta={rec['betas'][b]:.2f}")
        g, k = np.concatenate(cov_g), np.concatenate(cov_k)
        out[law] = (g.mean() if g.size else np.nan, k.mean() if k.size else np.nan, kept / total, worst)
    return out


def table(records, law_filter):
    """Coverage and median relative error binned by ESS/N and by ESS."""
    recs = [r for r in records if law_filter(r["law"])]
    cat = lambda key: np.concatenate([np.broadcast_to(r[key], r["ess"].shape).ravel() for r in recs])  # noqa: E731
    ess, n, cg, ck, bg, bk = cat("ess"), cat("n"), cat("cover_gain"), cat("cover_kl"), cat("gain_err"), cat("kl_err")
    frac = ess / n
    head = f"{'':>13} {'count':>8} {'cover gain':>10} {'cover KL':>9} {'bias gain':>10} {'bias KL':>9}"
    print("by ESS/N (all sizes)\n" + head)
    edges = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (frac >= lo) & (frac < hi)
        if sel.sum() >= 100:
            print(f"ESS/N {lo:.1f}-{hi:.1f} {sel.sum():8d} {cg[sel].mean():10.3f} {ck[sel].mean():9.3f}"
                  f" {np.median(bg[sel]):10.3f} {np.median(bk[sel]):9.3f}")
    print("by ESS (ESS/N >= 0.6)\n" + head)
    for lo, hi in zip([0, 25, 50, 100, 200, 400, 1000], [25, 50, 100, 200, 400, 1000, np.inf]):
        sel = (ess >= lo) & (ess < hi) & (frac >= 0.6)
        if sel.sum() >= 100:
            print(f"ESS {lo:>4.0f}-{hi:<6.0f} {sel.sum():8d} {cg[sel].mean():10.3f} {ck[sel].mean():9.3f}"
                  f" {np.median(bg[sel]):10.3f} {np.median(bk[sel]):9.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--search", action="store_true", help="also search a grid of rules")
    args = ap.parse_args()
    t0 = time.perf_counter()
    records = simulate(args.reps)
    print(f"simulated {sum(r['ess'].size for r in records):,} estimates in {time.perf_counter() - t0:.1f} s")
    for name, filt in [("light-tailed laws (normal, uniform, Bernoulli)", lambda law: law != "exponential"),
                       ("exponential (heavy-tailed weights)", lambda law: law == "exponential")]:
        print(f"\n== {name}")
        table(records, filt)
    rules = [("current", (estimators.ESS_MIN, estimators.ESS_FRACTION_MIN, estimators.KL_CEILING_FRACTION))]
    if args.search:
        for rule in itertools.product([0, 50, 100, 200, 400], [0, 0.3, 0.5, 0.6, 0.7, 0.85], [0.5, 1.0]):
            rules.append(("", rule))
    print("\nrule (ess_min, ess_fraction, kl_fraction): per law, unflagged coverage gain / KL, share kept, worst cell")
    for name, rule in rules:
        print(f"{name:8s} {rule}")
        for law, (g, k, kept, worst) in evaluate(records, rule).items():
            print(f"    {law:15s} {g:.3f} / {k:.3f}  kept {kept:5.1%}  worst {worst[0]:.3f} at {worst[1]}")


if __name__ == "__main__":
    main()
