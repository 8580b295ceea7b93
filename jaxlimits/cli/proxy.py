"""``jaxlimits proxy FILE --proxy COL [COL ...] --gold COL``: reward hacking and ensembles, before training."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = (
    "jaxlimits proxy gsm8k.jsonl --proxy rm_logit --gold correct --plot overopt.png",
    "jaxlimits proxy alpaca.jsonl --proxy rm mrm rm_center --gold gold --calibrate moments --out proxy.json",
)


def register(sub):
    p = c.subparser(sub, "proxy", "gold gain after aligning to a proxy, the over-optimisation peak, ensembles",
                    EXAMPLES)
    p.add_argument("file", help="long-format table: one row per sample (.jsonl, .csv, .parquet, .npz)")
    p.add_argument("--proxy", nargs="+", required=True, metavar="COL",
                   help="column(s) of the proxy reward(s) aligned to; several make an ensemble")
    p.add_argument("--gold", required=True, metavar="COL", help="column of the gold reward the result is judged by")
    p.add_argument("--prompt-col", default="prompt_id", help="column of prompt ids (default: prompt_id)")
    p.add_argument("--log-weight-col", default=None, help="column of importance log-weights log pi0 - log q")
    p.add_argument("--count-col", default=None, help="column of multiplicities")
    p.add_argument("--dedupe", default=None, metavar="COL", help="merge identical responses (same COL) into counts")
    p.add_argument("--aggregate", default="mean", choices=("mean", "median", "min", "mean_minus_std"),
                   help="how several proxies are combined into the one aligned to (default: mean)")
    p.add_argument("--lam", type=float, default=1.0, help="weight of the std in mean_minus_std (default 1)")
    p.add_argument("--calibrate", default="none", choices=("none", "moments", "ols"),
                   help="map each proxy affinely onto the gold scale first: match gold's mean and std "
                        "(moments) or least squares on gold (ols); default none")
    p.add_argument("--subsets", type=int, default=32, help="most member subsets averaged per ensemble size K")
    p.add_argument("--bootstrap", type=int, default=0,
                   help="bootstrap replicates for the peak's standard error (default 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstraps and random subsets")
    p.add_argument("--compare", default="kl", choices=("kl", "beta", "both"),
                   help="what the proxy-aligned policy's gold gain is held against: the gold frontier at the "
                        "same KL (kl, the default: the most gold gain any policy reaches within that KL, and "
                        "the proxy's shortfall), the gold-aligned policy at the same beta (beta: Prop. 3's gap, "
                        "which depends on the proxy's scale), or both. CSV/JSON hold the gap always")
    p.add_argument("--same-kl", action="store_true", help="the default (--compare kl); kept for old scripts")
    c.add_common(p, plot=True)
    c.add_grid(p)
    return p


def _f(x) -> float:
    return float(np.asarray(x))


def curve_rows(curve, res=None) -> list[dict]:
    """The over-optimisation curve as table rows (one per beta, KL increasing), each with its ``status``."""
    from ..estimators import reason_names
    from ..status import Status, of_point

    beyond = int(Status.KL_AT_OR_ABOVE_CEILING)
    keys = ("betas", "kl_proxy_aligned", "kl_proxy_aligned_se", "proxy_gain", "gold_gain_proxy_aligned",
            "gold_gain_proxy_aligned_se", "kl_gold_aligned", "gold_gain_gold_aligned", "gold_gain_gold_aligned_se",
            "gap", "gap_se", "ratio", "saturated_share", "saturated")
    cols = {k: np.asarray(getattr(curve, k)) for k in keys}
    why = reason_names(np.asarray(curve.reasons))
    rows = []
    for i in range(len(cols["betas"])):
        row = {}
        for k, v in cols.items():
            name = "beta" if k == "betas" else k
            row[name] = bool(v[i]) if k == "saturated" else float(v[i])
        row["reasons"] = why[i]  # 'tail+few' ('' where trusted)
        if res is not None and res.gold_frontier is not None:
            row["gold_frontier"] = float(np.asarray(res.gold_frontier)[i])
            row["shortfall"] = float(np.asarray(res.shortfall)[i])
            # beyond what the samples show of gold, the frontier is unknown: its cap is a lower bound
            row["gold_frontier_is_lower_bound"] = bool(int(np.asarray(res.frontier_status)[i]) == beyond)
        row["status"] = of_point(row["saturated"])
        rows.append(row)
    return rows


def _print_curve(rows, compare: str = "kl", gold: str = "gold", proxy: str = "proxy") -> None:
    from ..status import legend

    same_kl = compare in ("kl", "both") and "gold_frontier" in rows[0]
    same_beta = compare in ("beta", "both")
    head = f"{'beta':>9} {'KL':>9} {'proxy gain':>10} {'gold gain (proxy-aligned)':>25}"
    if same_kl:
        head += f" {'gold frontier (same KL)':>23} {'shortfall':>9}"
    if same_beta:
        head += f" {'gold gain (gold-aligned)':>24} {'gap (same beta)':>19} {'|gap|/|d|':>9}"
    c.say(head + "  status")
    for r in rows:
        g = f"{r['gold_gain_proxy_aligned']:.4g} ± {r['gold_gain_proxy_aligned_se']:.2g}"
        line = f"{r['beta']:9.4g} {r['kl_proxy_aligned']:9.4g} {r['proxy_gain']:10.4g} {g:>25}"
        if same_kl:
            bound = "≥ " if r["gold_frontier_is_lower_bound"] else ""
            line += f" {bound + format(r['gold_frontier'], '.4g'):>23} {bound + format(r['shortfall'], '.4g'):>9}"
        if same_beta:
            gg = f"{r['gold_gain_gold_aligned']:.4g} ± {r['gold_gain_gold_aligned_se']:.2g}"
            gap = f"{r['gap']:.4g} ± {r['gap_se']:.2g}"
            line += f" {gg:>24} {gap:>19} {r['ratio']:9.3g}"
        c.say(f"{line}  {r['status']}" + (f" ({r['reasons']})" if r.get("reasons") else ""))
    c.say(f"KL in nats per sequence (of the policy aligned to the proxy); proxy gain in {proxy} units, gold gains "
          f"in {gold} units")
    if same_kl:
        c.say("gold frontier (same KL): the most gold gain any policy reaches within the proxy-aligned policy's KL; "
              "shortfall = gold frontier - gold gain (proxy-aligned), >= 0; ≥ marks a lower bound: at that KL the "
              "samples cannot show the gold frontier (KL at or beyond their gold ceiling), only its cap")
    if same_beta:
        c.say("gap (same beta): gold gain aligned to gold minus aligned to the proxy at the same beta (Prop. 3; it "
              "depends on the proxy's scale: compare at the same KL with --compare kl)")
    for line in legend(r["status"] for r in rows):
        c.say(line)


def peak_dict(peak) -> dict:
    """The peak as plain values: ``status`` by name (``jaxlimits.proxy.PEAK_NAMES``), ``reasons`` by name.

    Without a peak (any status but ``PEAK_FOUND``) there is no peak's beta, KL, gain or trust rule:
    those are None (``null`` in JSON), and ``grid_end`` holds the grid end that bounds it (beta,
    kl, gold_gain, and its trust rule's saturated and reasons).
    """
    from ..estimators import reason_names
    from ..proxy import PEAK_FOUND, PEAK_MESSAGES, PEAK_NAMES

    code = int(np.asarray(peak.status))
    found = code == int(PEAK_FOUND)
    values = {k: _f(getattr(peak, k)) for k in ("beta", "kl", "gold_gain", "gold_gain_se", "proxy_gain",
                                                  "beta_se", "kl_se")}
    out = {k: v if found else None for k, v in values.items()}
    trust = {"saturated": bool(np.asarray(peak.saturated)), "reasons": reason_names(int(np.asarray(peak.reasons)))}
    out.update(found_share=_f(peak.found_share), status=PEAK_NAMES[code], message=PEAK_MESSAGES[code],
               converged=bool(np.asarray(peak.converged)), iterations=int(np.asarray(peak.iterations)))
    out.update(trust if found else dict.fromkeys(trust))
    if not found:
        out["grid_end"] = {**{k: values[k] for k in ("beta", "kl", "gold_gain")}, **trust}
    return out


def _print_peak(pk: dict, bootstrap: int) -> None:
    if pk["status"] != "PEAK_FOUND":  # no peak: the message says why
        end = pk["grid_end"]
        c.say(f"over-optimisation: {pk['message']} (grid end: beta {end['beta']:.4g}, KL {end['kl']:.4g}, "
              f"gold gain {end['gold_gain']:.4g})")
        return
    se = ""
    if bootstrap and np.isfinite(pk["kl_se"]):
        se = (f" (bootstrap: KL ± {pk['kl_se']:.2g}, beta ± {pk['beta_se']:.2g}; "
              f"{100 * pk['found_share']:.0f}% of replicates found a peak)")
    c.say(f"over-optimisation peak: beta {pk['beta']:.4g}, KL {pk['kl']:.4g} nats, gold gain "
          f"{pk['gold_gain']:.4g} ± {pk['gold_gain_se']:.2g}, proxy gain {pk['proxy_gain']:.4g}{se}")
    if pk["saturated"]:
        c.say(f"  (saturated ({pk['reasons']}): the trust rule flags the estimate at the peak; the location is not "
              "reliable: README 'Can I trust the number?')")


def _members(ens, beta_ref, args, budget) -> dict:
    """Per-member and per-aggregation gaps at ``beta_ref``, and the scaling with K."""
    import jaxlimits as jl

    from ..estimators import reason_names
    from ..status import of_point

    gaps = jl.ensemble_gaps(ens, [beta_ref], lam=args.lam, memory_budget=budget)
    c.say(f"\nmembers and aggregations at beta {beta_ref:.4g}:")
    c.say(f"{'':>22} {'||gold - proxy||':>16} {'KL':>9} {'gold gain':>18} {'gap':>18}  status")
    members = {}
    for name, g in gaps.items():
        row = {"residual_norm": _f(g.residual_norm), "kl": _f(g.kl_proxy_aligned[0]),
               "gold_gain": _f(g.gold_gain_proxy_aligned[0]), "gold_gain_se": _f(g.gold_gain_proxy_aligned_se[0]),
               "gap": _f(g.gap[0]), "gap_se": _f(g.gap_se[0]), "reasons": reason_names(int(g.reasons[0]))}
        row["status"] = of_point(bool(row["reasons"]))
        members[name] = row
        why = f" ({row['reasons']})" if row["reasons"] else ""
        c.say(f"{name:>22} {row['residual_norm']:16.4g} {row['kl']:9.4g} "
              f"{row['gold_gain']:10.4g} ± {row['gold_gain_se']:<5.2g} {row['gap']:10.4g} ± {row['gap_se']:<5.2g}"
              f"  {row['status']}{why}")
    sc = jl.ensemble_scaling(ens, [beta_ref], subsets=args.subsets, bootstrap=200, seed=args.seed,
                             memory_budget=budget)
    c.say(f"\nensemble mean of K members (averaged over subsets; ± bootstrap over prompts) at beta {beta_ref:.4g}:")
    c.say(f"{'K':>3} {'subsets':>7} {'||mean_K - gold||':>22} {'mean |gap|':>22} {'gap':>10}")
    scaling = {"K": [], "residual_norm": [], "residual_norm_se": [], "gap_abs": [], "gap_abs_se": [], "gap": []}
    for k in range(ens.num_members):
        res = f"{_f(sc.residual_norm[k]):.4g} ± {_f(sc.residual_norm_se[k]):.2g}"
        ga = f"{_f(sc.gap_abs[k, 0]):.4g} ± {_f(sc.gap_abs_se[k, 0]):.2g}"
        c.say(f"{k + 1:3d} {int(sc.subsets[k]):7d} {res:>22} {ga:>22} {_f(sc.gap[k, 0]):10.4g}")
        for key, val in (("K", k + 1), ("residual_norm", _f(sc.residual_norm[k])),
                         ("residual_norm_se", _f(sc.residual_norm_se[k])), ("gap_abs", _f(sc.gap_abs[k, 0])),
                         ("gap_abs_se", _f(sc.gap_abs_se[k, 0])), ("gap", _f(sc.gap[k, 0]))):
            scaling[key].append(val)
    rates = {"residual_rate": _f(sc.residual_rate), "residual_rate_se": _f(sc.residual_rate_se),
             "gap_rate": _f(sc.gap_rate[0]), "gap_rate_se": _f(sc.gap_rate_se[0]),
             "bias_sq": _f(sc.bias_sq), "noise_var": _f(sc.noise_var)}
    c.say(f"fitted rates against K: ||mean_K - gold|| ~ K^({rates['residual_rate']:.3f} ± "
          f"{rates['residual_rate_se']:.2g}), mean |gap| ~ K^({rates['gap_rate']:.3f} ± {rates['gap_rate_se']:.2g}) "
          "(Thm. 3: -1/2 for unbiased members, an upper bound for the gap)")
    c.say(f"Thm. 3 decomposition: ||bias||^2 = {rates['bias_sq']:.4g}, member variance = {rates['noise_var']:.4g} "
          "(E||mean_K - gold||^2 = bias^2 + variance / K)")
    return {"beta": beta_ref, "members": members, "scaling": scaling, "rates": rates}


def run(args) -> int:
    import jaxlimits as jl

    from .. import ensembles, proxy

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    plot = c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    if args.subsets < 1:
        raise c.UsageError(f"--subsets must be at least 1, got {args.subsets}")
    if args.bootstrap < 0 or args.bootstrap == 1:
        raise c.UsageError(f"--bootstrap must be 0 or at least 2, got {args.bootstrap}")
    budget = c.memory_budget(args)
    loaded = ensembles.load_ensemble(args.file, args.proxy, args.gold, prompt=args.prompt_col,
                                     log_weight=args.log_weight_col, count=args.count_col, dedupe=args.dedupe)
    args._loaded = loaded  # errors about one prompt name its id
    ens = loaded.ensemble.calibrated(args.calibrate)
    m = ens.num_members
    samples = ens.aggregate(args.aggregate, lam=args.lam) if m > 1 else ens.member(0)
    what = f"the {args.aggregate} of {m} proxies" if m > 1 else f"proxy {args.proxy[0]!r}"
    import jax

    res = jl.overoptimization(samples, args.betas, num_betas=args.num_betas, bootstrap=args.bootstrap,
                              key=jax.random.PRNGKey(args.seed), same_kl=args.compare in ("kl", "both"),
                              memory_budget=budget)
    for note in loaded.notes:
        c.say(f"note: {note}")
    if args.calibrate != "none":
        c.say(f"note: proxies calibrated to the gold scale ({args.calibrate})")
    curve = res.curve
    c.say(f"{samples.num_prompts} prompts, up to {samples.num_samples} samples each; aligned to {what}, "
          f"judged by {args.gold!r}")
    c.say(f"||gold - proxy||_L2(pi0) = {_f(curve.residual_norm):.4g} "
          f"(centred per prompt: {_f(curve.centred_residual_norm):.4g})")
    rows = curve_rows(curve, res)
    _print_curve(rows, args.compare, gold=repr(args.gold), proxy=what)
    if any(r["saturated"] for r in rows):
        c.say("(a point is saturated when either policy's pooled estimate fails the trust rule: README 'Can I trust "
              "the number?')")
    pk = peak_dict(res.peak)
    _print_peak(pk, args.bootstrap)
    extra = {"peak": pk}
    if m > 1:
        beta_ref = pk["beta"] if pk["status"] == "PEAK_FOUND" else float(np.median(np.asarray(curve.betas)))
        extra["ensemble"] = _members(ens, beta_ref, args, budget)
    if out is not None:
        meta = c.meta(args, loaded.source, loaded.notes)
        meta.update(extra)
        c.write_rows(out, rows, meta)
        c.say(f"wrote {out}")
    if plot is not None:
        from pathlib import Path

        proxy.overoptimization_figure(res, plot, title=f"{Path(args.file).name}\naligned to {what}",
                                      gold_label=args.gold, proxy_label=args.proxy[0] if m == 1 else args.aggregate)
        c.say(f"wrote {plot}")
    return 0
