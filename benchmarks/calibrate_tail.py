"""Calibrates the tail model's extrapolation (``jl.tail_curve``) against the truth, cell by cell.

Simulation: for each reward law with a known tilt (exponential, uniform, Beta(2, 5), normal,
Gumbel; Student-t(3), whose tilt does not exist) and N in {64, 256, 1024}, ``--prompts``
independent prompts of N draws are fitted in blocks of ``--pool`` prompts (one ``tail_curve``
call per block). The betas are where the true KL is ``0.5, 1, 1.5, 2`` times ``log N``: from the
edge of the empirical trust region (``KL_CEILING_FRACTION = 0.5`` of the ceiling) to far past
what N samples can show. Per cell (law, N, KL target) it reports, for the per-prompt points and
for the pooled points (one per block):

* ``unflagged``: the share of points with no reason (``no-tilt``, ``few``);
* ``cover_gain``, ``cover_kl``: the share of unflagged intervals that hold the true gain / KL;
* ``open``: the share of unflagged intervals with an infinite upper limit (the data cannot bound
  the tail); ``width``: the median ``(hi - lo) / truth`` of the bounded ones.

Student-t(3): the share of points flagged ``no-tilt`` instead.

Hold-out on real data (``--data``, the AlpacaFarm file: 20 prompts x 512 samples of a bf16 reward):
the full 512-sample pooled frontier (``jl.frontier``, bias-corrected, its trust rule) is the
reference; ``--subsamples`` times, 32 or 64 of each prompt's samples are drawn without
replacement, the subsample's own empirical frontier and the tail model are computed at the same
betas, and where the subsample's empirical point is flagged but the full one is trusted (every
flagged point, though ``frontier(tail="gpd")`` now extrapolates only those flagged ``ceiling``) the
tail interval is checked against the full
estimate: coverage, and the relative error of the tail model's point and of the subsample's own
empirical estimate.

Inversions (``--inversions``): ``max_gain_at_kl(..., tail="gpd")`` at the KL budgets ``m log N`` and
``min_kl_for_gain(..., tail="gpd")`` at the true gains there, per prompt and pooled: the share of
extrapolated answers whose interval holds the truth, how many are open above, how many get no answer.

Run:  python benchmarks/calibrate_tail.py                       (default budget, a few minutes on 2 CPU cores)
      python benchmarks/calibrate_tail.py --inversions --laws uniform normal --sizes 256 --prompts 100
      python benchmarks/calibrate_tail.py --prompts 1000 --out tail.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import time
from pathlib import Path

import jax
import numpy as np
from scipy import optimize

import jaxlimits as jl
from jaxlimits import estimators, tail
from jaxlimits.status import Status

_spec = importlib.util.spec_from_file_location("calibrate_trust", Path(__file__).with_name("calibrate_trust.py"))
_trust = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_trust)
truth, draw = _trust.truth, _trust.draw

LAWS = ("exponential", "uniform", "beta_2_5", "normal", "gumbel", "student_t3")
SIZES = (64, 256, 1024)
KL_MULTIPLES = (0.5, 1.0, 1.5, 2.0)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacafarm_qwen3_4b_sft_20x512.jsonl"


def betas_at(law: str, n: int) -> np.ndarray:
    """Betas where the true KL is ``KL_MULTIPLES`` times ``log n`` (decreasing)."""
    if law == "student_t3":
        return np.array([4.0, 2.0, 1.0, 0.5])
    lo = {"gumbel": 1.0 + 1e-12, "exponential": 1.0 + 1e-12, "uniform": 1e-14, "beta_2_5": 1 / 700}.get(law, 1e-7)

    def solve(k):
        f = lambda lb: float(truth(law, math.exp(lb))[1]) - k  # noqa: E731
        return math.exp(optimize.brentq(f, math.log(lo), math.log(1e6), xtol=1e-13))

    return np.array([solve(m * math.log(n)) for m in KL_MULTIPLES])


def _cell_stats(lo, hi, reasons, true, no_tilt_law: bool) -> dict:
    """Coverage counts of ``[points]`` intervals (flattened) against ``true``."""
    lo, hi, reasons = (np.asarray(a, float).ravel() for a in (lo, hi, reasons))
    ok = reasons == 0
    out = {"points": int(ok.size), "unflagged": int(ok.sum())}
    if no_tilt_law:
        out["no_tilt"] = int(((reasons.astype(int) & estimators.NO_TILT) != 0).sum())
        return out
    inside = (lo <= true) & (true <= hi)
    bounded = np.isfinite(hi)
    out["covered"] = int((inside & ok).sum())
    out["open"] = int((~bounded & ok).sum())
    w = (hi - lo)[ok & bounded] / abs(true)
    out["width"] = float(np.median(w)) if w.size else float("nan")
    return out


def run_law(law, n, prompts, pool, replicates, key, dtype, thresholds=tail.THRESHOLDS):
    betas = betas_at(law, n)
    g_true, k_true = truth(law, betas) if law != "student_t3" else (np.full(4, np.nan), np.full(4, np.nan))
    blocks = prompts // pool
    per = {"gain": [], "kl": []}
    pooled = {"gain": [], "kl": []}
    for _ in range(blocks):
        key, k_draw, k_fit = jax.random.split(key, 3)
        r = np.asarray(draw(law, k_draw, (pool, n), dtype))
        c = jl.tail_curve(jl.Samples(r), betas.astype(dtype), replicates=replicates, key=k_fit, thresholds=thresholds)
        for name in ("gain", "kl"):
            per[name].append((np.asarray(getattr(c, f"prompt_{name}_lo")), np.asarray(getattr(c, f"prompt_{name}_hi")),
                              np.asarray(c.prompt_reasons)))
            pooled[name].append((np.asarray(getattr(c, f"{name}_lo")), np.asarray(getattr(c, f"{name}_hi")),
                                 np.asarray(c.reasons)))
    rows = []
    for j, m in enumerate(KL_MULTIPLES):
        row = {"law": law, "n": n, "kl_multiple": m, "beta": float(betas[j]), "true_gain": float(g_true[j]),
               "true_kl": float(k_true[j])}
        for scope, src in (("prompt", per), ("pooled", pooled)):
            for name, true in (("gain", g_true[j]), ("kl", k_true[j])):
                lo, hi, rs = (np.concatenate([np.ravel(x[i][..., j]) for x in src[name]]) for i in range(3))
                row[f"{scope}_{name}"] = _cell_stats(lo, hi, rs, true, law == "student_t3")
        rows.append(row)
    return rows


def run_inversions(law, n, prompts, pool, replicates, key, dtype):
    """``tail="gpd"`` inversions against the truth: per KL budget ``m log n`` (and per true gain there), the
    share of extrapolated answers whose interval holds the true gain (KL); per prompt and pooled."""
    betas = betas_at(law, n)
    g_true, k_true = truth(law, betas)
    budgets, gains = (np.asarray(v, dtype) for v in (np.array(KL_MULTIPLES) * math.log(n), g_true))
    cells = {(scope, q): {"lanes": 0, "extrapolated": 0, "covered": 0, "open": 0, "no_answer": 0, "band_reaches": 0,
                          "lo_ratio": [], "hi_ratio": []} for scope in ("prompt", "pooled") for q in ("gain", "kl")}
    for _ in range(prompts // pool):
        key, k_draw = jax.random.split(key)
        s = jl.Samples(np.asarray(draw(law, k_draw, (pool, n), dtype)))
        for scope in ("prompt", "pooled"):
            for q, fn, y, true in (("gain", jl.max_gain_at_kl, budgets, g_true), ("kl", jl.min_kl_for_gain, gains,
                                                                                    k_true)):
                sol = fn(s, y, pooled=scope == "pooled", tail="gpd", tail_replicates=replicates, throw=False)
                ext = np.asarray(sol.extrapolated)
                ok = ext & (np.asarray(sol.status) == int(Status.EXTRAPOLATED))  # the model's answers
                lo, hi = (np.asarray(getattr(sol.tail, f"{q}_{e}"), float) for e in ("lo", "hi"))
                c = cells[(scope, q)]
                c["lanes"] += int(ext.size)
                c["extrapolated"] += int(ext.sum())
                c["no_answer"] += int((ext & ~ok).sum())
                c["covered"] += int((ok & (lo <= true) & (true <= hi)).sum())
                c["open"] += int((ok & ~np.isfinite(hi)).sum())
                # no answer from the point, but the band's interval holds the truth (the fitted end is uncertain)
                c["band_reaches"] += int((ext & ~ok & (lo <= true) & (true <= hi)).sum())
                c["lo_ratio"] += list(np.broadcast_to(lo / true, ok.shape)[ok])
                c["hi_ratio"] += list(np.broadcast_to(hi / true, ok.shape)[ok])
    for v in cells.values():
        for end in ("lo", "hi"):
            ratios = v.pop(f"{end}_ratio")
            v[f"median_{end}_over_truth"] = float(np.median(ratios)) if ratios else float("nan")
    return [{"law": law, "n": n, "scope": sc, "answer": q, **v} for (sc, q), v in cells.items()]


def holdout(path, sizes, subsamples, replicates, seed, dtype):
    """Fit on a subsample of each prompt, compare past its trust region with the full estimate."""
    recs = [json.loads(line) for line in open(path)]
    num_p = 1 + max(x["prompt_id"] for x in recs)
    num_n = 1 + max(x["sample_id"] for x in recs)
    r = np.zeros((num_p, num_n), dtype)
    for x in recs:
        r[x["prompt_id"], x["sample_id"]] = x["reward"]
    full = jl.Samples(r)
    betas = jl.default_betas(full, num=32)
    ref = jl.frontier(full, betas, per_prompt=False)
    ref_ok = np.asarray(ref.reasons) == 0
    rng = np.random.default_rng(seed)
    out = []
    for n_sub in sizes:
        cov, err_tail, err_emp, cells, flagged, opened = 0, [], [], 0, 0, 0
        for s in range(subsamples):
            idx = np.stack([rng.choice(num_n, n_sub, replace=False) for _ in range(num_p)])
            sub = jl.Samples(np.take_along_axis(r, idx, axis=1))
            emp = jl.frontier(sub, betas, per_prompt=False)
            c = jl.tail_curve(sub, betas, replicates=replicates, key=jax.random.PRNGKey(seed + s))
            use = ref_ok & (np.asarray(emp.reasons) != 0)
            ok = use & (np.asarray(c.reasons) == 0)
            cells += int(use.sum())
            flagged += int((use & ~ok).sum())
            g_ref = np.asarray(ref.gain)
            lo, hi = np.asarray(c.gain_lo), np.asarray(c.gain_hi)
            cov += int((ok & (lo <= g_ref) & (g_ref <= hi)).sum())
            opened += int((ok & ~np.isfinite(hi)).sum())
            err_tail += list(((np.asarray(c.gain) - g_ref) / g_ref)[ok])
            err_emp += list(((np.asarray(emp.gain) - g_ref) / g_ref)[ok])
        unflagged = cells - flagged
        out.append({
            "n_sub": n_sub, "subsamples": subsamples, "cells": cells, "tail_flagged": flagged,
            "covered": cov, "coverage": cov / unflagged if unflagged else float("nan"), "open": opened,
            "median_abs_rel_error_tail": float(np.median(np.abs(err_tail))) if err_tail else float("nan"),
            "median_rel_error_tail": float(np.median(err_tail)) if err_tail else float("nan"),
            "median_abs_rel_error_empirical": float(np.median(np.abs(err_emp))) if err_emp else float("nan"),
            "median_rel_error_empirical": float(np.median(err_emp)) if err_emp else float("nan"),
            "ref_trusted_kl_max": float(np.max(np.asarray(ref.kl)[ref_ok])) if ref_ok.any() else float("nan"),
        })
    return out


def _fmt_cell(c: dict) -> str:
    if "covered" not in c:
        return f"{c['no_tilt']}/{c['points']} no-tilt"
    u = c["unflagged"]
    if not u:
        return f"0/{c['points']} unflagged"
    return (f"{c['covered'] / u:.2f} of {u}/{c['points']} (open {c['open'] / u:.0%}, width "
            f"{c['width']:.2g})")


def format_tables(rows, held) -> str:
    lines = ["| law | N | KL / log N | beta | per-prompt gain | per-prompt KL | pooled gain | pooled KL |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['law']} | {r['n']} | {r['kl_multiple']:g} | {r['beta']:.4g} | "
                     f"{_fmt_cell(r['prompt_gain'])} | {_fmt_cell(r['prompt_kl'])} | {_fmt_cell(r['pooled_gain'])} | "
                     f"{_fmt_cell(r['pooled_kl'])} |")
    cells = [(r, s, k) for r in rows if r["law"] != "student_t3" for s in ("prompt", "pooled") for k in ("gain", "kl")
             if r[f"{s}_{k}"]["unflagged"] >= 20]
    if cells:
        worst = min(cells, key=lambda t: t[0][f"{t[1]}_{t[2]}"]["covered"] / t[0][f"{t[1]}_{t[2]}"]["unflagged"])
        r, s, k = worst
        c = r[f"{s}_{k}"]
        lines.append("")
        lines.append(f"worst cell (>= 20 unflagged): {r['law']}, N = {r['n']}, KL = {r['kl_multiple']:g} log N, "
                     f"{s} {k}: coverage {c['covered'] / c['unflagged']:.3f} of {c['unflagged']}")
    if held:
        lines += ["", "| subsample | cells | tail flagged | coverage of the 512-sample estimate | open | "
                  "median rel. error, tail (abs) | median rel. error, subsample's empirical (abs) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for h in held:
            lines.append(f"| {h['n_sub']} x {h['subsamples']} | {h['cells']} | {h['tail_flagged']} | "
                         f"{h['coverage']:.2f} ({h['covered']}) | {h['open']} | {h['median_rel_error_tail']:+.3f} "
                         f"({h['median_abs_rel_error_tail']:.3f}) | {h['median_rel_error_empirical']:+.3f} "
                         f"({h['median_abs_rel_error_empirical']:.3f}) |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=200, help="prompts per cell (default 200)")
    ap.add_argument("--pool", type=int, default=20, help="prompts per tail_curve call (a pooled point; default 20)")
    ap.add_argument("--replicates", type=int, default=100, help="bootstrap replicates per threshold (default 100)")
    ap.add_argument("--laws", nargs="*", default=list(LAWS))
    ap.add_argument("--sizes", nargs="*", type=int, default=list(SIZES))
    ap.add_argument("--data", default=str(DATA), help="AlpacaFarm file for the hold-out ('' to skip)")
    ap.add_argument("--subsamples", type=int, default=6, help="hold-out subsample draws (default 6)")
    ap.add_argument("--x64", action="store_true", help="float64 (default float32)")
    ap.add_argument("--thresholds", nargs="*", type=float, default=list(tail.THRESHOLDS),
                    help="multipliers of the tail size refitted (default: jaxlimits.tail.THRESHOLDS)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inversions", action="store_true",
                    help="calibrate tail='gpd' inversions instead (max_gain_at_kl at KL m log N, min_kl_for_gain at "
                         "the true gains; all budgets of a block in one call)")
    ap.add_argument("--out", help="write the cells as JSON")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = np.float64 if args.x64 else np.float32
    t0 = time.time()
    key = jax.random.PRNGKey(args.seed)
    if args.inversions:
        out = []
        for law in [v for v in args.laws if v != "student_t3"]:
            for n in args.sizes:
                key, k = jax.random.split(key)
                out += run_inversions(law, n, args.prompts, args.pool, args.replicates, k, dtype)
                print(f"{law} N={n} done ({time.time() - t0:.0f} s)", flush=True)
        print("| law | N | scope | answer | extrapolated of lanes | no answer (band holds the truth) | coverage of "
              "answered | open | median lower limit / truth | median upper limit / truth |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in out:
            a = r["extrapolated"] - r["no_answer"]
            cov = f"{r['covered'] / a:.2f} of {a}" if a else "-"
            print(f"| {r['law']} | {r['n']} | {r['scope']} | {r['answer']} | {r['extrapolated']}/{r['lanes']} | "
                  f"{r['no_answer']} ({r['band_reaches']}) | {cov} | {r['open']} | {r['median_lo_over_truth']:.2f} | "
                  f"{r['median_hi_over_truth']:.2f} |")
        print(f"\n{args.prompts} prompts per cell in blocks of {args.pool}, {args.replicates} replicates, "
              f"{np.dtype(dtype).name}, {time.time() - t0:.0f} s")
        if args.out:
            with open(args.out, "x") as f:
                json.dump({"inversions": out, "args": vars(args)}, f, indent=1)
        return
    rows = []
    for law in args.laws:
        for n in args.sizes:
            key, k = jax.random.split(key)
            rows += run_law(law, n, args.prompts, args.pool, args.replicates, k, dtype, tuple(args.thresholds))
            print(f"{law} N={n} done ({time.time() - t0:.0f} s)", flush=True)
    held = []
    if args.data and os.path.exists(args.data):
        held = holdout(args.data, (32, 64), args.subsamples, args.replicates, args.seed, dtype)
    text = format_tables(rows, held)
    print(text)
    print(f"\n{args.prompts} prompts per cell in blocks of {args.pool}, {args.replicates} replicates, "
          f"{np.dtype(dtype).name}, {time.time() - t0:.0f} s on {os.cpu_count()} CPUs ({jax.devices()[0].platform})")
    if args.out:
        with open(args.out, "x") as f:
            json.dump({"cells": rows, "holdout": held, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
