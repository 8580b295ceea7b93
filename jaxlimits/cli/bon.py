"""``jaxlimits bon FILE --n 1 2 4 8 ...``: best-of-n from base samples, held against the frontier."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = (
    "jaxlimits bon samples.jsonl --n 1 2 4 8 16 --out bon.csv",
    "jaxlimits bon samples.jsonl --n 2 8 32 --log-prob-col logprob --plot bon.png",
)


def register(sub):
    p = c.subparser(sub, "bon", "best-of-n from base samples: expected gain, KL (three ways), win rate, and its "
                    "efficiency against the frontier", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--n", type=int, nargs="+", required=True, metavar="N", help="numbers of draws (each <= samples)")
    p.add_argument("--log-prob-col", default=None, metavar="COL",
                   help="column of the samples' base-model log-probabilities (for Beirami's KL estimator)")
    p.add_argument("--kl-method", default="auto", choices=("auto", "analytic", "exact", "beirami"),
                   help="the KL of best-of-n held against the frontier (default auto: exact where rewards tie, "
                        "log n - (n-1)/n where they do not)")
    p.add_argument("--no-frontier", action="store_true", help="skip the frontier (efficiency, win-rate frontier)")
    p.add_argument("--title", default=None, help="title of the --plot figure")
    c.add_common(p, plot=True)
    return p


def rows_of(res) -> list[dict]:
    """The pooled best-of-n results as table rows (one per n), each with its ``status`` (``jaxlimits.status``).

    ``gain`` is measured with the scores (the rewards without them), ``reward_gain`` with the
    rewards; the frontier and the efficiency are of the rewards.
    """
    from ..estimators import reason_names
    from ..status import NAMES, of_solution

    keys = ("gain", "gain_se", "reward_gain", "reward_gain_se", "kl", "kl_analytic", "kl_exact", "kl_beirami",
            "frontier_gain", "frontier_gain_se", "efficiency", "win_rate", "win_rate_se", "win_rate_frontier")
    cols = {k: np.asarray(getattr(res, k), dtype=np.float64) for k in keys}
    status = np.asarray(res.frontier_status)
    sat = np.asarray(res.saturated)
    why = np.asarray(res.frontier_reasons)
    rows = []
    for i, n in enumerate(np.asarray(res.n)):
        row = {"n": int(n)}
        row.update({k: float(v[i]) for k, v in cols.items()})
        code = int(status[i])
        row["frontier_status"] = NAMES[code].lower()  # the solver's code, lower case
        row["saturated"] = bool(sat[i])
        row["frontier_reasons"] = reason_names(int(why[i]))  # 'tail+few' ('' where trusted or not computed)
        row["status"], row["reason"] = of_solution(code, bool(sat[i]))
        rows.append(row)
    return rows


def _num(x: float, se: float | None = None, digits: int = 4) -> str:
    if not np.isfinite(x):
        return "-"
    if se is None or not np.isfinite(se) or se == 0:
        return f"{x:.{digits}g}"
    return f"{x:.{digits}g} ± {se:.2g}"


def print_table(rows: list[dict], reward: str = "reward", score: str | None = None) -> None:
    """The rows; with a score other than the reward, its gain gets its own column beside the reward's."""
    from ..status import legend

    scored = score is not None and score != reward
    extra = f" {score + ' gain':>17}" if scored else ""
    c.say(f"{'n':>5} {reward + ' gain':>17}{extra} {'KL used':>8} {'KL anal.':>8} {'KL exact':>8} {'KL Beir.':>8} "
          f"{'frontier':>17} {'effic.':>6} {'win rate':>8} {'win front.':>10}  status")
    for r in rows:
        extra = f" {_num(r['gain'], r['gain_se']):>17}" if scored else ""
        c.say(f"{r['n']:>5} {_num(r['reward_gain'], r['reward_gain_se']):>17}{extra} {_num(r['kl']):>8} "
              f"{_num(r['kl_analytic']):>8} {_num(r['kl_exact']):>8} {_num(r['kl_beirami']):>8} "
              f"{_num(r['frontier_gain'], r['frontier_gain_se']):>17} {_num(r['efficiency'], digits=3):>6} "
              f"{_num(r['win_rate']):>8} {_num(r['win_rate_frontier']):>10}  {r['status']}"
              + (f" ({r['frontier_reasons']})" if r.get("frontier_reasons") else ""))
    units = f"{reward + ' gain'!r}, frontier: in {reward!r} units (the reward aligned to)"
    if scored:
        units += f"; {score + ' gain'!r}: best-of-n's gain in {score!r} units (best of n by {reward!r})"
    c.say(f"{units}; effic. = {reward} gain / frontier at the same KL; win rate in {reward!r}")
    for line in legend(r["status"] for r in rows):
        c.say(line)


def load_log_probs(args, loaded):
    """The log-probability column laid out like the samples (``[P, N]``), or None."""
    if args.log_prob_col is None:
        return None
    from .. import io

    if args.dedupe:
        raise c.UsageError("--log-prob-col cannot be combined with --dedupe (rows merged by --dedupe would need one "
                           "log-probability each); give plain rows or counts")
    lp = io.load(args.file, prompt=args.prompt_col, reward=args.log_prob_col, count=args.count_col)
    return np.asarray(lp.samples.rewards)


def run(args) -> int:
    from .. import bon
    from .. import plot as jplot

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    png = c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    loaded = c.load_samples(args)
    samples = loaded.samples
    log_probs = load_log_probs(args, loaded)
    res = bon.best_of_n(samples, args.n, log_probs=log_probs, kl_method=args.kl_method,
                        frontier=not args.no_frontier, memory_budget=c.memory_budget(args))
    rows = rows_of(res)
    notes = list(loaded.notes) + list(res.notices)
    for note in notes:
        c.say(f"note: {note}")
    c.say(f"{samples.num_prompts} prompts, up to {samples.num_samples} samples each; gain ± SE (jackknife), KL in "
          f"nats")
    print_table(rows, reward=args.reward_col, score=args.score_col)
    if out is not None:
        c.write_rows(out, rows, c.meta(args, loaded.source, notes))
        c.say(f"wrote {out}")
    if png is not None:
        jplot.frontier_figure(samples, bon=res, path=png, title=args.title, reward_label=args.reward_col,
                              xmax=args.xmax)
        c.say(f"wrote {png}")
    return 0
