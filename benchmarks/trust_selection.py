"""Why a flag cannot repair an interval: coverage with and without the trust rule, and under stricter tail clauses.

For one reward law and sample size N, simulates ``prompts`` prompts (``jl.tilt``, float32, the betas
of ``calibrate_trust.py``) and prints per beta, for single prompts (``--pool 1``) or pooled blocks of
``--pool`` prompts (pooled as ``jl.frontier`` pools them):

* ``all``: the coverage of the 95% interval over *every* data set (no flag applied);
* ``rule``: the coverage over the data sets the trust rule leaves unflagged, with their share;
* stricter clauses, the rule's others unchanged: per prompt a k-hat threshold below ``KHAT_MAX``
  and a bias threshold below ``BIAS_SE_RATIO`` (``|bias| / se``, the larger of gain and KL); pooled,
  the mean k-hat's upper confidence limit ``mean + z sd / sqrt(n)`` (``n`` the prompts whose k-hat
  was fitted) against the rule's threshold;
* the distribution of the gain's z-score ``(estimate - truth) / se``: mean, sd, skewness and the
  share missed below and above.

A coverage is printed where at least 200 data sets are unflagged (``-`` otherwise), the share of
data sets unflagged in brackets. Findings of 2026-11-30 in ``benchmarks/README.md`` ("Selection").

Run:  python benchmarks/trust_selection.py --law exponential --n 1024 --pool 1 --prompts 200000
      python benchmarks/trust_selection.py --law normal --n 64 --pool 100 --prompts 1000000
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import calibrate_trust as ct  # noqa: E402

import jaxlimits as jl  # noqa: E402
from jaxlimits import estimators, psis  # noqa: E402

frontier_mod = importlib.import_module("jaxlimits.frontier")


def simulate(law: str, n: int, pool: int, prompts: int, chunk: int, seed: int):
    """``(betas, kl_true, arrays)``: per data set and beta the gain and KL z-scores, the reasons and
    the k-hat statistics the tail clauses read (``[reps, B]`` each)."""
    betas = ct.beta_grid(law, n, 12)
    g_true, k_true = ct.truth(law, betas)
    idx = frontier_mod.khat_subset(pool)

    @jax.jit
    def pooled(st):
        blocks = jax.tree.map(lambda a: a.reshape((-1, pool) + a.shape[1:]), st)

        def one(b):
            p = frontier_mod.pool_of(b, jnp.ones(b.draws.shape, b.gain.dtype))
            khat, count, no_tilt = frontier_mod.subset_khat_sums(b.khat[idx], pool)
            f = frontier_mod.from_pool(p._replace(khat=khat, khat_count=count, no_tilt=no_tilt), b.betas[0])
            k = b.khat[idx]
            return (f.gain, f.kl, f.gain_se, f.kl_se, f.reasons, f.khat, jnp.nanstd(k, axis=0),
                    jnp.sum(jnp.isfinite(k), axis=0))

        return jax.lax.map(one, blocks)

    key = jax.random.PRNGKey(seed)
    chunk = max(pool, chunk // pool * pool)
    parts = []
    for _ in range(max(1, prompts // chunk)):
        key, sub = jax.random.split(key)
        st = jl.tilt(jl.Samples(ct.draw(law, sub, (chunk, n), jnp.float32), validate=False),
                     betas.astype(np.float32))
        if pool == 1:  # (the last slot: the larger of |bias| / se for gain and KL, for the bias clause below)
            ratio = jnp.maximum(jnp.abs(st.gain_bias) / st.gain_se, jnp.abs(st.kl_bias) / st.kl_se)
            out = (st.gain, st.kl, st.gain_se, st.kl_se, st.reasons, st.khat, ratio, jnp.ones_like(st.khat))
        else:
            out = pooled(st)
        g, k, gse, kse, reasons, khat, ksd, nk = (np.asarray(a, np.float64) for a in out)
        # one prompt: the 7th slot is |bias| / se; pooled: the k-hats' spread over the prompts fitted
        spread = {"bias_ratio": ksd} if pool == 1 else {"ksd": ksd}
        parts.append(dict(zg=(g - g_true) / gse, zk=(k - k_true) / kse, reasons=reasons.astype(np.int64),
                          khat=khat, nk=nk, **spread))
    return betas, k_true, {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def coverage_row(d, ok, min_unflagged=200):
    cover_g, cover_k = np.abs(d["zg"]) <= ct.Z95, np.abs(d["zk"]) <= ct.Z95
    cells = []
    for b in range(ok.shape[1]):
        count = int(ok[:, b].sum())
        share = count / ok.shape[0]
        sel = ok[:, b]  # the worse of the two intervals, as calibrate_trust.py reports a cell
        cov = min(np.mean(cover_g[sel, b]), np.mean(cover_k[sel, b])) if count >= min_unflagged else None
        cells.append(f"{'  -  ' if cov is None else f'{cov:.3f}'}({share:.2f})")
    return " ".join(cells)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--law", default="exponential", choices=[x for x in ct.LAWS if x != "student_t3"])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--pool", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    betas, k_true, d = simulate(args.law, args.n, args.pool, args.prompts, args.chunk, args.seed)
    reps = d["zg"].shape[0]
    print(f"{args.law}, N = {args.n}, {'one prompt' if args.pool == 1 else f'pooled over {args.pool} prompts'}, "
          f"{reps} data sets; coverage, the worse of gain and KL (share unflagged)")
    print(f"{'KL':<14}" + " ".join(f"{k:<11.3g}" for k in k_true))
    everything = np.ones_like(d["reasons"], bool)
    print(f"{'all':<14}" + coverage_row(d, everything))
    print(f"{'rule':<14}" + coverage_row(d, d["reasons"] == 0))
    others = (d["reasons"] & ~estimators.TAIL) == 0
    if args.pool == 1:
        for t in (0.4, 0.3, 0.2):
            print(f"{f'k-hat <= {t}':<14}" + coverage_row(d, (d["reasons"] == 0) & ~(d["khat"] > t)))
        for t in (0.15, 0.1):  # a stricter per-prompt bias clause (the rule's is 4.5)
            print(f"{f'|b|/se<={t}':<14}" + coverage_row(d, (d["reasons"] == 0) & ~(d["bias_ratio"] > t)))
    else:
        limit = estimators.KHAT_POOLED_FRACTION * float(psis.khat_threshold(args.n))
        for z in (1.0, 1.64, 2.0):
            upper = d["khat"] + z * d["ksd"] / np.sqrt(np.maximum(d["nk"], 1))
            print(f"{f'ucl z={z}':<14}" + coverage_row(d, others & ~(upper > limit)))
    zg = d["zg"]
    print(f"{'mean k-hat':<14}" + " ".join(f"{x:<11.3f}" for x in np.nanmean(d["khat"], 0)))
    print(f"{'z mean':<14}" + " ".join(f"{x:<+11.2f}" for x in np.nanmean(zg, 0)))
    print(f"{'z sd':<14}" + " ".join(f"{x:<11.2f}" for x in np.nanstd(zg, 0)))
    print(f"{'z skewness':<14}" + " ".join(f"{x:<+11.2f}" for x in stats.skew(zg, axis=0, nan_policy="omit")))
    print(f"{'miss below':<14}" + " ".join(f"{x:<11.3f}" for x in np.mean(zg < -ct.Z95, 0)))
    print(f"{'miss above':<14}" + " ".join(f"{x:<11.3f}" for x in np.mean(zg > ct.Z95, 0)))


if __name__ == "__main__":
    main()
