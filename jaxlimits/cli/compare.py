"""``jaxlimits compare FILE --runs RUNS``: alignment runs held against the frontier of base samples."""

from __future__ import annotations

import numpy as np

from . import _common as c

#: Per-run notes printed to the terminal (all go to --out).
MAX_NOTES = 5

EXAMPLES = (
    "jaxlimits compare samples.jsonl --runs runs.csv --run-kl-col kl --run-gain-col gain --plot fig1.png",
    "jaxlimits compare base.jsonl --reward-col rm_logit --runs train_log.jsonl --run-reward-col reward_mean "
    "--run-name-col step --kl-unit token --length-col mean_completion_len --bon 1 2 4 --plot fig1.png",
)


def register(sub):
    p = c.subparser(sub, "compare", "alignment runs (KL, gain) against the frontier: reward left on the table, "
                    "reward and KL efficiency, above-frontier flags; --plot draws the paper's Figure 1", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--runs", required=True, metavar="RUNS", help="table of runs, one a row (.csv, .jsonl, .parquet)")
    p.add_argument("--run-kl-col", default="kl", help="column of the measured KL (default: kl)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run-gain-col", default=None, help="column of the measured gain E_pi[r] - E_0[r]")
    g.add_argument("--run-reward-col", default=None,
                   help="column of the measured mean reward; gain = reward - baseline (--run-baseline)")
    p.add_argument("--run-baseline", type=float, default=None,
                   help="base mean reward subtracted from --run-reward-col (default: the base samples' mean reward)")
    p.add_argument("--run-name-col", default=None, help="column naming each run (e.g. step)")
    p.add_argument("--run-kl-se-col", default=None, help="column of the KL's standard error")
    p.add_argument("--run-gain-se-col", default=None, help="column of the gain's standard error")
    p.add_argument("--run-where", nargs="+", default=None, metavar="COL=V1,V2",
                   help="keep only rows with these values (e.g. step=200,500)")
    p.add_argument("--kl-unit", default="sequence", choices=("sequence", "token"),
                   help="what the KL column is: per sequence (default) or per token (then give the mean "
                        "completion length); nothing is converted unless you say so")
    p.add_argument("--length-col", default=None, help="column of the mean completion length, for --kl-unit token")
    p.add_argument("--completion-length", type=float, default=None,
                   help="one mean completion length (tokens) for all runs, for --kl-unit token")
    p.add_argument("--bon", type=int, nargs="+", default=None, metavar="N",
                   help="also draw best-of-n points for these n on the --plot")
    p.add_argument("--level", type=float, default=0.95, help="two-sided level of the above-frontier flag")
    p.add_argument("--title", default=None, help="title of the --plot figure")
    p.add_argument("--xscale", default="auto", choices=("auto", "linear", "symlog"), help="KL axis of the --plot")
    c.add_common(p, plot=True)
    return p


def _where(items) -> dict | None:
    if not items:
        return None
    out = {}
    for item in items:
        if "=" not in item:
            raise c.UsageError(f"--run-where {item!r}: write COL=V1,V2")
        col, values = item.split("=", 1)
        out[col] = [v for v in values.split(",") if v]
    return out


def _num(x, se=None, bound: str = "") -> str:
    """A value with its SE; ``-`` when unknown (None or NaN); ``bound`` (``>=``, ``<=``) marks a bound."""
    if x is None or not np.isfinite(x):
        return "-" if x is None or np.isnan(x) else "inf" if x > 0 else "-inf"
    if se is None or not np.isfinite(se) or se == 0:
        return f"{bound}{x:.4g}"
    return f"{bound}{x:.4g} ± {se:.2g}"


def print_table(rows: list[dict], unit: str = "reward units") -> None:
    """The rows as a table; where the frontier is unknown its bounds are printed as bounds (>=, <=)."""
    from ..status import legend

    width = max(12, *(len(r["name"]) for r in rows))
    c.say(f"{'run':<{width}} {'KL (nats)':>16} {'gain':>16} {'frontier':>16} {'left':>10} {'eff.':>7} "
          f"{'KL*(gain)':>9} {'KL eff.':>7}  status")
    for r in rows:
        if r["lower_bound"]:
            front = _num(r["frontier_gain_lower_bound"], bound="≥ ")
            left = _num(r["left_on_table_lower_bound"], bound="≥ ")
            eff = _num(r["reward_efficiency_upper_bound"], bound="≤ ")
        else:
            front = _num(r["frontier_gain"], r["frontier_gain_se"])
            left, eff = _num(r["left_on_table"]), _num(r["reward_efficiency"])
        c.say(f"{r['name']:<{width}} {_num(r['kl'], r['kl_se']):>16} {_num(r['gain'], r['gain_se']):>16} "
              f"{front:>16} {left:>10} {eff:>7} {_num(r['min_kl']):>9} {_num(r['kl_efficiency']):>7}  {r['status']}")
    c.say(f"gain, frontier and left in {unit}; eff. = gain / frontier at the run's KL; KL eff. = KL*(gain) / KL; "
          "≥ and ≤ mark bounds where the frontier is unknown")
    for line in legend(r["status"] for r in rows):
        c.say(line)


def run(args) -> int:
    from .. import plot as jplot
    from ..bon import best_of_n
    from ..compare import compare, load_runs

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    png = c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    if args.kl_unit == "token" and (args.length_col is None) == (args.completion_length is None):
        raise c.UsageError("--kl-unit token needs the mean completion length: --length-col COL or "
                           "--completion-length L (one of them)")
    if args.kl_unit == "sequence" and (args.length_col or args.completion_length is not None):
        raise c.UsageError("--length-col/--completion-length only apply to --kl-unit token")
    loaded = c.load_samples(args)
    samples = loaded.samples
    notes = list(loaded.notes)
    if args.score_col not in (None, args.reward_col):
        notes.append(f"--score-col {args.score_col!r} is not used here: runs are held against the frontier of "
                     f"{args.reward_col!r}, their gains must be in {args.reward_col!r}")
    baseline = args.run_baseline
    if args.run_reward_col is not None and baseline is None:
        base_r = np.asarray(samples.rewards, np.float64)
        valid = np.asarray(samples.valid())
        w = np.where(valid, 1.0 if samples.counts is None else np.asarray(samples.counts, np.float64), 0.0)
        baseline = float(np.mean(np.sum(w * base_r, axis=1) / np.sum(w, axis=1)))
        notes.append(f"--run-baseline not given: using the base samples' mean reward {baseline:.6g}")
    runs, run_notes = load_runs(
        args.runs, kl=args.run_kl_col, gain=args.run_gain_col, reward=args.run_reward_col, baseline=baseline,
        name=args.run_name_col, kl_se=args.run_kl_se_col, gain_se=args.run_gain_se_col, unit=args.kl_unit,
        length=args.length_col, completion_length=args.completion_length, where=_where(args.run_where))
    res = compare(samples, runs, level=args.level, memory_budget=c.memory_budget(args))
    notes += run_notes + list(res.notices)
    for note in notes:
        c.say(f"note: {note}")
    rows = res.rows()
    print_table(rows, unit=f"{args.reward_col!r} units")
    flagged = [r for r in rows if r["status"] != "ok" or r["note"].startswith("KL given")]
    for r in flagged[:MAX_NOTES]:
        c.say(f"{r['name']}: {r['note']}")
    if len(flagged) > MAX_NOTES:
        c.say(f"... and {len(flagged) - MAX_NOTES} more runs with notes (all of them in --out)")
    if out is not None:
        c.write_rows(out, rows, c.meta(args, {"samples": loaded.source, "runs": str(args.runs)}, notes))
        c.say(f"wrote {out}")
    if png is not None:
        b = None
        if args.bon:
            b = best_of_n(samples, args.bon, memory_budget=c.memory_budget(args))
        jplot.frontier_figure(samples, bon=b, runs=res, path=png, title=args.title, xscale=args.xscale,
                              reward_label=args.reward_col, xmax=args.xmax)
        c.say(f"wrote {png}")
    return 0
