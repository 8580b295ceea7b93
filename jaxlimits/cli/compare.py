"""``jaxlimits compare FILE --runs RUNS``: alignment runs held against the frontier of base samples."""

from __future__ import annotations

import numpy as np

from ..trainer_logs import FORMATS, SCHEMAS, UnknownTrainerError
from . import _common as c

#: Per-run notes printed to the terminal (all go to --out).
MAX_NOTES = 5
#: Betas of the --plot figure's frontier with --tail (the tail model evaluated at the same betas).
FIGURE_BETAS = 32

EXAMPLES = (
    "jaxlimits compare samples.jsonl --runs runs.csv --run-kl-col kl --run-gain-col gain --plot fig1.png",
    "jaxlimits compare base.jsonl --reward-col rm_logit --runs train_log.jsonl --run-reward-col reward_mean "
    "--run-name-col step --kl-unit token --length-col mean_completion_len --bon 1 2 4 --plot fig1.png",
    "jaxlimits compare base.jsonl --reward-col rm_logit --runs trainer_state.json --run-where step=20,40",
    "jaxlimits compare base.jsonl --reward-col rm_logit --runs verl_metrics.jsonl --policy-samples policy.jsonl "
    "--policy-reward-col rm_logit",
)


def register(sub):
    p = c.subparser(sub, "compare", "alignment runs (KL, gain) against the frontier: reward left on the table, "
                    "reward and KL efficiency, above-frontier flags; --plot draws the paper's Figure 1", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--runs", nargs="+", default=None, metavar="RUNS",
                   help="a training log (TRL trainer_state.json, verl file-logger JSONL, OpenRLHF/W&B history, W&B "
                        "chart CSVs: detected, nothing to name) or a table of runs with --run-kl-col and "
                        "--run-gain-col/--run-reward-col")
    p.add_argument("--runs-format", default="auto", choices=FORMATS,
                   help="force how --runs is read (default: detected from the file)")
    p.add_argument("--trainer", default="auto", choices=("auto",) + tuple(SCHEMAS),
                   help="the trainer that wrote the log, where its keys are ambiguous (TRL GRPO and RLOO log the "
                        "same keys; default: detected, GRPO for those)")
    p.add_argument("--negative-kl-tolerance", type=float, default=None, metavar="NATS",
                   help="a logged KL this far below 0 (nats per sequence) is noise, set to 0 (default: 10%% of "
                        "the log's largest KL)")
    p.add_argument("--run-kl-col", default=None, help="table of runs: column of the measured KL (default: kl)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--run-gain-col", default=None, help="table of runs: column of the measured gain E_pi[r] - E_0[r]")
    g.add_argument("--run-reward-col", default=None,
                   help="table of runs: column of the measured mean reward; gain = reward - baseline (--run-baseline)")
    p.add_argument("--run-baseline", type=float, default=None,
                   help="base mean reward subtracted from a logged reward (default: the base samples' mean reward)")
    p.add_argument("--run-name-col", default=None, help="column naming each run (e.g. step)")
    p.add_argument("--run-kl-se-col", default=None, help="column of the KL's standard error")
    p.add_argument("--run-gain-se-col", default=None, help="column of the gain's standard error")
    p.add_argument("--run-where", nargs="+", default=None, metavar="COL=V1,V2",
                   help="keep only rows with these values (e.g. step=200,500; run=NAME in a W&B export), before "
                        "anything is converted")
    p.add_argument("--kl-unit", default=None, choices=("sequence", "token"),
                   help="table of runs: what the KL column is, per sequence (default) or per token (then give the "
                        "mean completion length); nothing is converted unless you say so")
    p.add_argument("--length-col", default=None, help="column of the mean completion length, for --kl-unit token")
    p.add_argument("--completion-length", type=float, default=None,
                   help="one mean completion length (tokens) for all runs, for --kl-unit token")
    p.add_argument("--policy-samples", default=None, metavar="FILE",
                   help="a policy's own samples (one row a sample: prompt, reward, the policy's and the reference's "
                        "sequence log-probabilities): its KL and gain measured with SEs, held against the frontier")
    p.add_argument("--policy-reward-col", default=None,
                   help="reward column of --policy-samples (default: --reward-col)")
    p.add_argument("--policy-logprob-col", default="logprob",
                   help="--policy-samples: sequence log-probability under the policy (default: logprob)")
    p.add_argument("--ref-logprob-col", default="ref_logprob",
                   help="--policy-samples: sequence log-probability under the reference, the base model "
                        "(default: ref_logprob)")
    p.add_argument("--policy-name", default=None, help="label of the --policy-samples run (default: its file name)")
    p.add_argument("--bon", type=int, nargs="+", default=None, metavar="N",
                   help="also draw best-of-n points for these n on the --plot")
    p.add_argument("--level", type=float, default=0.95, help="two-sided level of the above-frontier flag")
    c.add_tail(p, "runs past what the samples show held against a generalised Pareto model of each prompt's "
                  "upper reward tail, marked 'extrapolated' with the model's interval (README 'Beyond log N'; "
                  "off by default). Plain base samples only: not with --dedupe, log-weight, count or score columns")
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


def _measured(r: dict) -> str:
    """Beside an extrapolated row: what the samples alone say there (the frontier's gain, and KL*(gain) where
    that is the model's), with why it is flagged (``tail+ess``) or why there is no value."""
    parts = []
    for value, solve, what, show in (("frontier_gain", "frontier", "", r.get("extrapolated")),
                                     ("min_kl", "min_kl", "KL* ", r.get("min_kl_status") == "extrapolated")):
        if not show:
            continue
        v, st, why = (r[f"measured_{k}"] for k in (value, f"{solve}_status", f"{solve}_reasons"))
        parts.append(what + c.measured([v], why or st, st))
    return "; ".join(parts)


def _reasons(r: dict) -> str:
    """The reasons after a row's status: the frontier's (the trust rule's, or the tail model's where extrapolated)
    and the tail model's for KL*(gain) where that is the model's, e.g. `` (few; KL* no-tilt)``."""
    parts = [r.get("frontier_reasons") or ""]
    if r.get("min_kl_status") == "extrapolated" and r.get("min_kl_reasons"):
        parts.append(f"KL* {r['min_kl_reasons']}")
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""


def print_table(rows: list[dict], unit: str = "reward units") -> None:
    """The rows as a table; where the frontier is unknown its bounds are printed as bounds (>=, <=); with a tail
    model, extrapolated rows also show the measured (flagged) values beside the model's."""
    from ..status import legend

    width = max(12, *(len(r["name"]) for r in rows))
    ext = [_measured(r) for r in rows]
    m_width = max((len(m) for m in ext), default=0)
    m_head = f" {'measured (flag)':>{max(m_width, 15)}}" if m_width else ""
    c.say(f"{'run':<{width}} {'KL (nats)':>16} {'gain':>16} {'frontier':>16}{m_head} {'left':>10} {'eff.':>7} "
          f"{'KL*(gain)':>9} {'KL eff.':>7}  status")
    for r, m in zip(rows, ext):
        if r["lower_bound"]:
            front = _num(r["frontier_gain_lower_bound"], bound="≥ ")
            left = _num(r["left_on_table_lower_bound"], bound="≥ ")
            eff = _num(r["reward_efficiency_upper_bound"], bound="≤ ")
        elif r.get("extrapolated"):  # the tail model's frontier: with its interval; no plain left/eff. from it
            carried = "few" in (r.get("frontier_reasons") or "").split("+")  # a few prompts': the interval only
            front = c.interval(r["frontier_gain"], r["frontier_gain_lo"], r["frontier_gain_hi"], digits=4,
                               point=not carried)
            left, eff = "-", "-"
        else:
            front = _num(r["frontier_gain"], r["frontier_gain_se"])
            left, eff = _num(r["left_on_table"]), _num(r["reward_efficiency"])
        model_kl = r.get("min_kl_status") == "extrapolated"  # in the note, with its interval
        min_kl, kl_eff = ("-", "-") if model_kl else (_num(r["min_kl"]), _num(r["kl_efficiency"]))
        m_col = f" {m:>{max(m_width, 15)}}" if m_width else ""
        c.say(f"{r['name']:<{width}} {_num(r['kl'], r['kl_se']):>16} {_num(r['gain'], r['gain_se']):>16} "
              f"{front:>16}{m_col} {left:>10} {eff:>7} {min_kl:>9} {kl_eff:>7}  {r['status']}{_reasons(r)}")
    c.say(f"gain, frontier and left in {unit}; eff. = gain / frontier at the run's KL; KL eff. = KL*(gain) / KL; "
          "≥ and ≤ mark bounds where the frontier is unknown")
    shares = [r[k] for r in rows for k, why in (("frontier_carried_share", "frontier_reasons"),
                                                ("min_kl_carried_share", "min_kl_reasons"))
              if "few" in (r.get(why) or "").split("+") and r.get(k) is not None]
    if shares:
        from ..estimators import SHARE_MAX

        c.say(f"(few on an extrapolated row: the largest {SHARE_MAX:.0%} of the prompts hold up to {max(shares):.0%} "
              "of the model's pooled KL there, near their fitted critical beta, the model's least certain part: the "
              "table prints its interval only; its point, and the left on the table and efficiencies derived from "
              "it, are not to be read (the note and --out give them, with frontier_carried_share, "
              "min_kl_carried_share))")
    if any(r.get("extrapolated") or r.get("min_kl_status") == "extrapolated" for r in rows):
        c.say("extrapolated: a tail model's frontier is printed with its interval in brackets; left, eff. (and "
              "KL*(gain), KL eff. where that is the model's) are not printed for it: the note gives the model's "
              "values with their interval, --out writes them with status extrapolated; 'measured (flag)' is what "
              "the samples alone say there and why it is flagged, or why they say nothing (--out: measured_*)")
    for line in legend(r["status"] for r in rows):
        c.say(line)


def _table_mode(args) -> bool:
    return any(v is not None for v in (args.run_kl_col, args.run_gain_col, args.run_reward_col, args.kl_unit,
                                       args.length_col, args.completion_length, args.run_name_col,
                                       args.run_kl_se_col, args.run_gain_se_col))


def _check_options(args) -> None:
    if args.runs is None and args.policy_samples is None:
        raise c.UsageError("give --runs (a training log or a table of runs) and/or --policy-samples")
    if args.runs is None or not _table_mode(args):
        return
    if args.run_gain_col is None and args.run_reward_col is None:
        raise c.UsageError("a table of runs needs --run-gain-col or --run-reward-col (a training log needs neither)")
    if len(args.runs) > 1:
        raise c.UsageError("--runs: one table of runs at a time (several files only for W&B chart exports)")
    if args.runs_format not in ("auto", "table") or args.trainer != "auto":
        raise c.UsageError("--runs-format/--trainer read a training log; the --run-*-col options read a table of runs")
    unit = args.kl_unit or "sequence"
    if unit == "token" and (args.length_col is None) == (args.completion_length is None):
        raise c.UsageError("--kl-unit token needs the mean completion length: --length-col COL or "
                           "--completion-length L (one of them)")
    if unit == "sequence" and (args.length_col or args.completion_length is not None):
        raise c.UsageError("--length-col/--completion-length only apply to --kl-unit token")


def _plain_runs_table(args, error: ValueError):
    """A log that matches no trainer but is a table with columns ``kl`` and ``gain`` (as ``jaxlimits demo
    --write-data`` writes): read as a table of runs, said in a note; else the trainer error stands.

    Whether it is such a table is decided by its columns alone: once it is, that table's own errors (a
    negative KL, a NaN gain, a non-numeric cell, naming file, line and column) are the ones raised."""
    from ..compare import load_runs
    from ..io import read_table

    if len(args.runs) != 1 or args.runs_format not in ("auto", "table") or args.trainer != "auto":
        raise error
    try:
        columns = read_table(args.runs[0]).columns
    except (ValueError, LookupError):
        raise error from None
    if "kl" not in columns or "gain" not in columns:
        raise error
    try:
        found, notes = load_runs(args.runs[0], kl="kl", gain="gain", where=_where(args.run_where))
    except ValueError as e:  # said with how the file was read (a DataError names its file, line and column)
        raise type(e)(f"{e} (read as a table of runs: no trainer's keys, but columns 'kl' and 'gain')") from None
    return found, [f"{args.runs[0]}: no trainer's keys, but columns 'kl' and 'gain': read as a table of runs "
                   "(--run-kl-col/--run-gain-col name other columns)"] + notes


def _shared_parts(notes: list[str]) -> list[str]:
    """The parts (``; ``-separated) that every run's note has when there are several runs (e.g. "KL
    taken as sequence-level, as given"): said once, not once per run."""
    parts = [n.split("; ") for n in notes]
    return [p for p in parts[0] if all(p in q for q in parts[1:])] if len(parts) > 1 else []


def _base_mean(samples) -> float:
    base_r = np.asarray(samples.rewards, np.float64)
    valid = np.asarray(samples.valid())
    w = np.where(valid, 1.0 if samples.counts is None else np.asarray(samples.counts, np.float64), 0.0)
    return float(np.mean(np.sum(w * base_r, axis=1) / np.sum(w, axis=1)))


def run(args) -> int:
    from pathlib import Path

    import jaxlimits as jl

    from .. import plot as jplot
    from ..bon import best_of_n
    from ..compare import compare, load_policy_samples, load_runs, measure_run
    from ..trainer_logs import runs_from_log

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    png = c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    _check_options(args)
    loaded = c.load_samples(args)
    samples = loaded.samples
    notes = list(loaded.notes)
    if args.score_col not in (None, args.reward_col):
        notes.append(f"--score-col {args.score_col!r} is not used here: runs are held against the frontier of "
                     f"{args.reward_col!r}, their gains must be in {args.reward_col!r}")
    runs = []
    if args.runs is not None:
        baseline = args.run_baseline
        if baseline is None and args.run_gain_col is None:
            baseline = _base_mean(samples)
            notes.append(f"--run-baseline not given: using the base samples' mean reward {baseline:.6g}")
        if _table_mode(args):
            found, run_notes = load_runs(
                args.runs[0], kl=args.run_kl_col or "kl", gain=args.run_gain_col, reward=args.run_reward_col,
                baseline=baseline, name=args.run_name_col, kl_se=args.run_kl_se_col, gain_se=args.run_gain_se_col,
                unit=args.kl_unit or "sequence", length=args.length_col, completion_length=args.completion_length,
                where=_where(args.run_where))
        else:
            try:
                found, run_notes = runs_from_log(
                    args.runs, baseline=baseline, fmt=args.runs_format, trainer=args.trainer,
                    where=_where(args.run_where), negative_tolerance=args.negative_kl_tolerance)
            except UnknownTrainerError as e:
                found, run_notes = _plain_runs_table(args, e)
                notes = [n for n in notes if not n.startswith("--run-baseline not given")]
        runs += found
        notes += run_notes
    if args.policy_samples is not None:
        pol, ratio = load_policy_samples(
            args.policy_samples, prompt=args.prompt_col, reward=args.policy_reward_col or args.reward_col,
            logprob=args.policy_logprob_col, ref_logprob=args.ref_logprob_col, prompt_ids=loaded.prompt_ids)
        m = measure_run(args.policy_name or Path(args.policy_samples).stem, pol, ratio, samples)
        runs.append(m.run)
        notes += list(m.notes)
    res = compare(samples, runs, level=args.level, memory_budget=c.memory_budget(args), **c.tail_options(args))
    notes += list(res.notices)
    for note in notes:
        c.say(f"note: {note}")
    rows = res.rows()
    print_table(rows, unit=f"{args.reward_col!r} units")
    shared = _shared_parts([r["note"] for r in rows])
    # once, unless a note above already says it (the runs' loader says how it took the KL)
    once = [p for p in shared if not any(n.startswith(p.split(" (")[0]) for n in notes)]
    if once:
        c.say(f"every run: {'; '.join(once)}")
    own = ["; ".join(p for p in r["note"].split("; ") if p not in shared) for r in rows]  # the rest, per run
    flagged = [(r, o) for r, o in zip(rows, own) if o and (r["status"] != "ok" or r["note"].startswith("KL given"))]
    for r, o in flagged[:MAX_NOTES]:
        c.say(f"{r['name']}: {o}")
    if len(flagged) > MAX_NOTES:
        c.say(f"... and {len(flagged) - MAX_NOTES} more runs with notes (all of them in --out)")
    if out is not None:
        source = {"samples": loaded.source, "runs": [str(r) for r in args.runs or []],
                  "policy_samples": args.policy_samples}
        c.write_rows(out, rows, c.meta(args, source, notes))
        c.say(f"wrote {out}")
    if png is not None:
        b = None
        if args.bon:
            b = best_of_n(samples, args.bon, memory_budget=c.memory_budget(args))
        drawn, model = samples, None
        if args.tail:  # the runs past the ceiling against the tail model's band (the model of the table)
            drawn = jl.frontier(samples, num_betas=FIGURE_BETAS, per_prompt=False, memory_budget=c.memory_budget(args))
            # the figure uses the model only below the trusted frontier's smallest beta (plot.tail_band, the model's
            # point curve): the curve there alone (pointwise in beta: the same values, in about half the time)
            betas = np.asarray(drawn.betas)
            past = betas < betas[~np.asarray(drawn.saturated)].min(initial=np.inf)
            if past.any():
                model = jl.tail_curve(samples, betas[past], replicates=args.tail_replicates,
                                      memory_budget=c.memory_budget(args))
        jplot.frontier_figure(drawn, bon=b, runs=res, tail=model, path=png, title=args.title, xscale=args.xscale,
                              reward_label=args.reward_col, xmax=args.xmax)
        c.say(f"wrote {png}")
    return 0
