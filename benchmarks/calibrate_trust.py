"""Calibrates the trust rule (``TiltStats.reasons``, ``Frontier.reasons``) by simulation, cell by cell.

For each reward law (truth in closed form or by a one-dimensional special function), sample size
N and KL target, ``prompts`` independent prompts of N draws are estimated with ``jl.tilt`` (the
bias-corrected default, its standard errors, PSIS k-hat and reasons). Then, per cell
(law, N, P, beta):

* P = 1: every prompt is a replicate; its own reasons decide whether it is flagged;
* P = 100 and P = 2000: consecutive blocks of P prompts are pooled exactly as ``jl.frontier``
  pools them (the library's own ``pool_of`` / ``from_pool``), and the pooled reasons decide.

Each unflagged 95% interval (+-1.96 SE) is checked against the truth. Printed and written (JSON):
per cell the replicates, the unflagged share and the coverage of gain and KL (with a binomial
standard error), the worst cell over all cells with at least ``--min-unflagged`` unflagged
replicates, and, beside it, the share the old rule (``ess < 200 or ess < 0.6 N or kl > 0.5
ceiling``) kept. Student-t(3) has no tilt (``E exp(r/beta) = infinity``): there the share of
points flagged ``no-tilt`` is reported instead of a coverage.

Run:  python benchmarks/calibrate_trust.py [--prompts 400000] [--budget 4e7] [--out calibration.json]
      python benchmarks/calibrate_trust.py --report calibration.json [more.json]   (the tables again)
      python benchmarks/calibrate_trust.py --quick          (a few cells, seconds; used by the tests)
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, special

import jaxlimits as jl
from jaxlimits import _sweep, estimators

frontier_mod = importlib.import_module("jaxlimits.frontier")

LAWS = ("normal", "uniform", "bernoulli_0.3", "bernoulli_0.05", "beta_2_5", "gumbel", "exponential", "student_t3")
SIZES = (4, 16, 64, 256, 1024, 4096)
POOLS = (1, 100, 2000)
Z95 = 1.959963984540054


def truth(law: str, beta):
    """Exact ``(gain, KL)`` of the tilted law at ``beta`` (arrays), NaN where the tilt does not exist."""
    beta = np.asarray(beta, np.float64)
    lam = 1 / beta
    with np.errstate(all="ignore"):
        if law == "normal":
            return lam, lam**2 / 2
        if law == "uniform":
            mean = 1 / (-np.expm1(-lam)) - 1 / lam
            log_z = lam + np.log(-np.expm1(-lam)) - np.log(lam)  # log((e^lam - 1) / lam), no overflow
            return mean - 0.5, lam * mean - log_z
        if law.startswith("bernoulli"):
            p = float(law.split("_")[1])
            q = 1 / (1 + (1 - p) / p * np.exp(-lam))
            return q - p, special.xlogy(q, q / p) + special.xlogy(1 - q, (1 - q) / (1 - p))
        if law == "beta_2_5":  # E exp(lam X) = 1F1(2; 7; lam); tilted mean (2/7) 1F1(3; 8; lam) / 1F1(2; 7; lam)
            z = special.hyp1f1(2, 7, lam)
            mean = 2 / 7 * special.hyp1f1(3, 8, lam) / z
            return mean - 2 / 7, lam * mean - np.log(z)
        if law == "gumbel":  # standard Gumbel: E exp(t X) = Gamma(1 - t), t < 1
            ok = lam < 1
            mean = np.where(ok, -special.digamma(1 - lam), np.nan)
            return mean - np.euler_gamma, np.where(ok, lam * mean - special.gammaln(1 - lam), np.nan)
        if law == "exponential":  # rate 1: E exp(t X) = 1 / (1 - t), t < 1
            ok = lam < 1
            return np.where(ok, lam / (1 - lam), np.nan), np.where(ok, lam / (1 - lam) + np.log1p(-lam), np.nan)
        if law == "student_t3":
            return np.full_like(beta, np.nan), np.full_like(beta, np.nan)
    raise ValueError(law)


def draw(law: str, key, shape, dtype):
    if law == "normal":
        return jax.random.normal(key, shape, dtype)
    if law == "uniform":
        return jax.random.uniform(key, shape, dtype)
    if law.startswith("bernoulli"):
        return (jax.random.uniform(key, shape) < float(law.split("_")[1])).astype(dtype)
    if law == "beta_2_5":
        return jax.random.beta(key, 2.0, 5.0, shape, dtype)
    if law == "gumbel":
        return jax.random.gumbel(key, shape, dtype)
    if law == "exponential":
        return jax.random.exponential(key, shape, dtype)
    if law == "student_t3":
        return jax.random.t(key, 3.0, shape, dtype)
    raise ValueError(law)


def beta_grid(law: str, n: int, num: int) -> np.ndarray:
    """Betas at KL from 0.001 to the sample ceiling ``log N`` (or the law's largest KL), decreasing."""
    if law == "student_t3":
        return np.geomspace(30.0, 0.3, num)
    top = math.log(n)
    if law.startswith("bernoulli"):
        top = min(top, 0.97 * math.log(1 / float(law.split("_")[1])))
    targets = np.geomspace(1e-3, top, num)
    # the smallest beta where truth() is finite (beta > 1 for exponential tails)
    lo = {"gumbel": 1.0 + 1e-9, "exponential": 1.0 + 1e-9, "beta_2_5": 1 / 600}.get(law, 1e-6)
    lo, hi = math.log(lo), math.log(1e6)

    def solve(k):
        return math.exp(optimize.brentq(lambda lb: float(truth(law, math.exp(lb))[1]) - k, lo, hi, xtol=1e-12))

    return np.array([solve(k) for k in targets])


def old_rule(st) -> np.ndarray:
    """The rule before this calibration: ``ess < 200 or ess < 0.6 N or kl > 0.5 ceiling`` (plug-in KL)."""
    kl_plug = np.asarray(st.kl) + np.asarray(st.kl_bias)
    n = np.asarray(st.draws)[:, None]
    ess, ceiling = np.asarray(st.ess), np.asarray(st.kl_ceiling)[:, None]
    return (ess < 200) | (ess < 0.6 * n) | (kl_plug > 0.5 * ceiling)


@functools.partial(jax.jit, static_argnames=("pool",))
def _pooled(st, pool: int):
    """Frontier statistics of consecutive blocks of ``pool`` prompts, as ``jl.frontier`` pools them
    (k-hat included: before 2026-11-30 this script pooled every prompt's k-hat, jl.frontier 256)."""
    blocks = jax.tree.map(lambda a: a.reshape((-1, pool) + a.shape[1:]), st)

    # k-hat as jl.frontier pools it: from at most KHAT_PROMPTS evenly spaced prompts, scaled to all
    idx = frontier_mod.khat_subset(pool)

    def one(b):
        p = frontier_mod.pool_of(b, jnp.ones(b.draws.shape, b.gain.dtype))
        khat, count, no_tilt = frontier_mod.subset_khat_sums(b.khat[idx], pool)
        p = p._replace(khat=khat, khat_count=count, no_tilt=no_tilt)  # (pool_of counted every prompt's no-tilt)
        f = frontier_mod.from_pool(p, b.betas[0])
        return (f.gain, f.kl, f.gain_se, f.kl_se, f.reasons, f.gain_bias, f.kl_bias, f.gain_lo, f.gain_hi, f.kl_lo,
                f.kl_hi)

    return jax.lax.map(one, blocks)


class Cells:
    """Accumulates counts per (pool, beta) over chunks of prompts."""

    def __init__(self, pools, num_b):
        z = lambda: {p: np.zeros(num_b) for p in pools}  # noqa: E731
        self.reps, self.unflagged, self.cov_g, self.cov_k, self.cov_g_all, self.cov_k_all = z(), z(), z(), z(), z(), z()
        self.old_unflagged, self.reason_counts = z(), {p: np.zeros((num_b, 5)) for p in pools}
        self.z_g, self.z_k, self.ratio = z(), z(), z()

    def add(self, pool, ok, cov_g, cov_k, reasons, old=None, z_g=None, z_k=None, ratio=None):
        self.z_g[pool] += np.nansum(z_g, 0)
        self.z_k[pool] += np.nansum(z_k, 0)
        self.ratio[pool] += np.nansum(ratio, 0)
        self.reps[pool] += ok.shape[0]
        self.unflagged[pool] += ok.sum(0)
        self.cov_g[pool] += (cov_g & ok).sum(0)
        self.cov_k[pool] += (cov_k & ok).sum(0)
        self.cov_g_all[pool] += cov_g.sum(0)
        self.cov_k_all[pool] += cov_k.sum(0)
        if old is not None:
            self.old_unflagged[pool] += (~old).sum(0)
        for k, bit in enumerate((estimators.BIAS, estimators.TAIL, estimators.NO_TILT, estimators.CEILING,
                                 estimators.FEW)):
            self.reason_counts[pool][:, k] += ((reasons & bit) != 0).sum(0)


def covers(truth_value, estimate, se, lo, hi, wald: bool):
    """Whether the reported interval ``[lo, hi]`` (``wald``: ``estimate +- z se``) holds the truth."""
    if wald:
        return np.abs(estimate - truth_value) <= Z95 * se
    return (lo <= truth_value) & (truth_value <= hi)


def run_cell(law, n, prompts, pools, num_b, chunk, dtype, key, memory_budget=None, wald=False):
    betas = beta_grid(law, n, num_b)
    g_true, k_true = truth(law, betas)
    cells = Cells(pools, num_b)
    chunk = max(max(pools), chunk // max(pools) * max(pools))
    done = 0
    khat_sum = np.zeros(num_b)
    while done < prompts:
        key, sub = jax.random.split(key)
        r = draw(law, sub, (chunk, n), dtype)
        st = jl.tilt(jl.Samples(r, validate=False), betas.astype(dtype), memory_budget=memory_budget)
        reasons = np.asarray(st.reasons)
        g, k = np.asarray(st.gain, np.float64), np.asarray(st.kl, np.float64)
        gse, kse = np.asarray(st.gain_se, np.float64), np.asarray(st.kl_se, np.float64)
        khat_sum += np.nansum(np.asarray(st.khat), 0)
        for pool in pools:
            if pool == 1:
                lims = [np.asarray(a, np.float64) for a in (st.gain_lo, st.gain_hi, st.kl_lo, st.kl_hi)]
                cov_g = covers(g_true, g, gse, lims[0], lims[1], wald)
                cov_k = covers(k_true, k, kse, lims[2], lims[3], wald)
                cells.add(1, reasons == 0, cov_g, cov_k, reasons, old_rule(st), (g - g_true) / gse,
                          (k - k_true) / kse, np.abs(np.asarray(st.gain_bias)) / gse)
            else:
                pg, pk, pgse, pkse, preasons, pgb, _, glo, ghi, klo, khi = (np.asarray(a, np.float64)
                                                                          for a in _pooled(st, pool))
                preasons = preasons.astype(np.int64)
                cov_g = covers(g_true, pg, pgse, glo, ghi, wald)
                cov_k = covers(k_true, pk, pkse, klo, khi, wald)
                cells.add(pool, preasons == 0, cov_g, cov_k, preasons, None, (pg - g_true) / pgse,
                          (pk - k_true) / pkse, np.abs(pgb) / pgse)
        done += chunk
    rows = []
    for pool in pools:
        for b in range(num_b):
            reps, unf = int(cells.reps[pool][b]), int(cells.unflagged[pool][b])
            rows.append(dict(
                law=law, n=n, pool=pool, beta=float(betas[b]), kl_true=float(k_true[b]), gain_true=float(g_true[b]),
                reps=reps, unflagged=unf, unflagged_share=unf / reps,
                coverage_gain=cells.cov_g[pool][b] / unf if unf else None,
                coverage_kl=cells.cov_k[pool][b] / unf if unf else None,
                coverage_gain_all=cells.cov_g_all[pool][b] / reps, coverage_kl_all=cells.cov_k_all[pool][b] / reps,
                old_unflagged_share=cells.old_unflagged[pool][b] / reps if pool == 1 else None,
                reasons={name: float(cells.reason_counts[pool][b, i] / reps)
                         for i, name in enumerate(("bias", "tail", "no-tilt", "ceiling", "few"))},
                mean_khat=float(khat_sum[b] / done),
                mean_z_gain=cells.z_g[pool][b] / reps, mean_z_kl=cells.z_k[pool][b] / reps,
                mean_bias_ratio=cells.ratio[pool][b] / reps,
            ))
    return rows


def summarise(rows, min_unflagged):
    judged = [r for r in rows if r["law"] != "student_t3" and r["unflagged"] >= min_unflagged]
    worst = min(judged, key=lambda r: min(r["coverage_gain"], r["coverage_kl"])) if judged else None
    fails = [r for r in judged if min(r["coverage_gain"], r["coverage_kl"]) < 0.93]
    # a cell fails beyond Monte Carlo noise when even its coverage + 2 binomial SEs is below 93%
    def se(r):
        c = min(r["coverage_gain"], r["coverage_kl"])
        return math.sqrt(max(c * (1 - c), 1e-12) / r["unflagged"])
    clear_fails = [r for r in fails if min(r["coverage_gain"], r["coverage_kl"]) + 2 * se(r) < 0.93]
    return dict(cells=len(rows), judged=len(judged), min_unflagged=min_unflagged, worst=worst, below_93=len(fails),
                below_93_beyond_noise=len(clear_fails), clear_fails=clear_fails)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=400_000,
                    help="prompts per (law, N): P = 2000 gets prompts/2000 replicates")
    ap.add_argument("--budget", type=float, default=None,
                    help="at most this many draws (prompts x N) per (law, N): fewer prompts for large N")
    ap.add_argument("--betas", type=int, default=12)
    ap.add_argument("--laws", nargs="*", default=list(LAWS))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--pools", nargs="*", type=int, default=list(POOLS))
    ap.add_argument("--chunk", type=int, default=20_000, help="prompts per tilt call")
    ap.add_argument("--float64", action="store_true")
    ap.add_argument("--min-unflagged", type=int, default=200)
    ap.add_argument("--wald", action="store_true",
                    help="judge the delta method's estimate +- z se instead of the reported [lo, hi]")
    ap.add_argument("--quick", action="store_true", help="a few small cells (seconds)")
    ap.add_argument("--out", default=None, help="write every cell as JSON here")
    ap.add_argument("--report", nargs="+", default=None, metavar="JSON",
                    help="only print the tables of earlier --out files (later files replace cells of earlier ones)")
    ap.add_argument("--tile-bytes", type=int, default=None,
                    help="exponential slab per tile (default: the CPU-cache size of jaxlimits._sweep; larger on GPUs)")
    args = ap.parse_args(argv)
    if args.report:
        table, summary = report(args.report, args.min_unflagged)
        print(table)
        return None, summary
    if args.quick:
        args.laws, args.sizes, args.pools, args.prompts, args.betas, args.chunk = (
            ["normal", "exponential"], [64], [1, 100], 4000, 4, 4000)
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    if args.tile_bytes:
        _sweep.TILE_BYTES = args.tile_bytes
    dtype = jnp.float64 if args.float64 else jnp.float32
    key = jax.random.PRNGKey(20261129)
    rows = []
    t0 = time.time()
    for law in args.laws:
        for n in args.sizes:
            key, sub = jax.random.split(key)
            prompts = args.prompts if args.budget is None else max(2000, min(args.prompts, int(args.budget // n)))
            prompts = prompts // max(args.pools) * max(args.pools) or prompts
            pools = [p for p in args.pools if p <= prompts]
            rows += run_cell(law, n, prompts, pools, args.betas, min(args.chunk, prompts), dtype, sub,
                             None if not args.tile_bytes else 8 * args.tile_bytes, wald=args.wald)
            print(f"# {law} N={n}: {time.time() - t0:.0f} s", flush=True)
            if args.out:  # what is done so far survives a time limit
                with open(args.out, "w") as f:
                    json.dump(dict(device=str(jax.devices()[0]), args=vars(args), partial=True, cells=rows), f)
    summary = summarise(rows, args.min_unflagged)
    print(format_table(rows, summary))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(device=str(jax.devices()[0]), args=vars(args), summary=summary, cells=rows), f)
    return rows, summary


def format_table(rows, summary) -> str:
    """Markdown: per (law, N, P) the unflagged share, the worst judged cell and, for every unflagged
    replicate of the group (cells too small to judge included), the aggregate coverage."""
    out = ["| law | N | P | replicates per cell | cells judged | unflagged share | old rule's share (P=1) "
           "| worst judged cell: coverage gain / KL (at KL) | all unflagged: coverage gain / KL (count) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = {law: i for i, law in enumerate(LAWS)}
    keys = sorted({(r["law"], r["n"], r["pool"]) for r in rows}, key=lambda k: (order.get(k[0], 99), k[1], k[2]))
    for law, n, pool in keys:
        rs = [r for r in rows if (r["law"], r["n"], r["pool"]) == (law, n, pool)]
        share = np.mean([r["unflagged_share"] for r in rs])
        old = "" if pool != 1 else f"{np.mean([r['old_unflagged_share'] for r in rs]):.2f}"
        reps = rs[0]["reps"]
        if law == "student_t3":
            notilt = np.mean([r["reasons"]["no-tilt"] for r in rs])
            out.append(f"| {law} | {n} | {pool} | {reps} | - | {share:.2f} | {old} | no truth: flagged no-tilt "
                       f"{notilt:.2f} | |")
            continue
        judged = [r for r in rs if r["unflagged"] >= summary["min_unflagged"] and r["coverage_gain"] is not None]
        if judged:
            w = min(judged, key=lambda r: min(r["coverage_gain"], r["coverage_kl"]))
            worst = f"{w['coverage_gain']:.3f} / {w['coverage_kl']:.3f} ({w['kl_true']:.3g})"
        else:
            worst = "-"
        unf = sum(r["unflagged"] for r in rs)
        if unf:
            cg = sum(r["coverage_gain"] * r["unflagged"] for r in rs if r["unflagged"]) / unf
            ck = sum(r["coverage_kl"] * r["unflagged"] for r in rs if r["unflagged"]) / unf
            agg = f"{cg:.3f} / {ck:.3f} ({unf})"
        else:
            agg = "-"
        out.append(f"| {law} | {n} | {pool} | {reps} | {len(judged)}/{len(rs)} | {share:.2f} | {old} "
                   f"| {worst} | {agg} |")
    w = summary["worst"]
    if w:
        out.append(f"\nWorst judged cell: {w['law']} N={w['n']} P={w['pool']} beta={w['beta']:.4g} "
                   f"(KL {w['kl_true']:.3g}): coverage {w['coverage_gain']:.3f} (gain) / {w['coverage_kl']:.3f} "
                   f"(KL) over {w['unflagged']} unflagged of {w['reps']}.")
    out.append(f"Cells judged (at least {summary['min_unflagged']} unflagged replicates): {summary['judged']} of "
               f"{summary['cells']}; below 93%: {summary['below_93']}; below 93% beyond Monte Carlo noise "
               f"(coverage + 2 SE < 93%): {summary['below_93_beyond_noise']}.")
    return "\n".join(out)


def report(paths, min_unflagged=200, pools=None):
    """The tables of one or more JSON outputs (later files replace earlier cells of the same law, N, P)."""
    cells = {}
    for path in paths:
        with open(path) as f:
            for r in json.load(f)["cells"]:
                cells[(r["law"], r["n"], r["pool"], round(r["beta"], 12))] = r
    rows = [r for r in cells.values() if pools is None or r["pool"] in pools]
    summary = summarise(rows, min_unflagged)
    return format_table(rows, summary), summary


if __name__ == "__main__":
    main()
