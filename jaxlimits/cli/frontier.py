"""``jaxlimits frontier FILE``: the KL-reward frontier of a file of scored samples."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = (
    "jaxlimits frontier samples.jsonl --reward-col reward --dedupe response_sha1 --out frontier.csv",
    "jaxlimits frontier samples.jsonl --bootstrap 200 --plot frontier.png",
)


def register(sub):
    p = c.subparser(sub, "frontier", "the KL-reward frontier of a file of scored samples", EXAMPLES)
    c.add_data_options(p)
    c.add_common(p, plot=True)
    c.add_grid(p)
    p.add_argument("--bootstrap", type=int, default=0, metavar="B",
                   help="bootstrap replicates for percentile bands (default: delta-method SEs only)")
    p.add_argument("--stream", action="store_true",
                   help="read the file in chunks of --chunk-rows rows (jaxlimits.streaming.sweep_files): memory "
                        "bounded by the chunk, not the file, for files larger than memory. Each prompt's rows must "
                        "be contiguous; not with --dedupe, --base-logprob-col/--sampler-logprob-col or --bootstrap; "
                        "the default grid is taken from the first chunk's prompts; PSIS k-hat is not computed, so "
                        "no point is flagged 'tail' or 'no-tilt'")
    c.add_tail(p, "past what the samples show: points flagged 'ceiling' from a generalised Pareto model of each "
                  "prompt's upper reward tail, marked 'extrapolated' (other flagged points keep the measurement; "
                  "README 'Beyond log N'; off by default). Plain "
                  "samples only: not with --dedupe, log-weight, count or score columns, or --stream")
    p.add_argument("--chunk-rows", type=int, default=100_000, metavar="ROWS",
                   help="rows read at a time with --stream (default 100000)")
    return p


def rows_of(f, measured=None) -> list[dict]:
    """The pooled frontier as table rows (one per beta), each with its ``status`` (``jaxlimits.status``).

    With a tail model (``f.extrapolated``) and the ``measured`` frontier it extends (the same betas,
    without the model), extrapolated rows also hold what the samples alone measured there:
    ``measured_kl``, ``measured_gain`` (None where not finite) and ``measured_reasons`` (the trust
    rule's; None on the other rows).
    """
    from ..estimators import reason_names
    from ..status import of_point

    table = f.to_dict()  # the shared table form (jaxlimits.tables)
    keys = ("betas", "kl", "kl_se", "kl_lo", "kl_hi", "gain", "gain_se", "gain_lo", "gain_hi", "reverse_kl",
            "ess_fraction", "saturated_share", "saturated")
    cols = {k: table[k] for k in keys}
    if f.bands is not None:
        bands = f.bands.to_dict()
        for k in ("gain_lo", "gain_hi", "kl_lo", "kl_hi"):
            cols[f"bootstrap_{k}"] = bands[k]
    rows = [
        {("beta" if k == "betas" else k): (bool(v[i]) if k == "saturated" else float(v[i])) for k, v in cols.items()}
        for i in range(len(cols["betas"]))
    ]
    ext = table.get("extrapolated")
    if f.tail is not None:
        tail = f.tail.to_dict()
        for k in ("gain_lo", "gain_hi", "kl_lo", "kl_hi"):
            for r, v, e in zip(rows, tail[k], ext):
                r[f"tail_{k}"] = float(v) if e else None
    for i, (r, names) in enumerate(zip(rows, table["reason_names"])):
        r["status"] = of_point(r["saturated"])
        r["reasons"] = names
        if ext is not None:
            r["extrapolated"] = bool(ext[i])
            if r["extrapolated"]:
                r["status"] = "extrapolated"
            if measured is not None:  # what the samples alone say there (flagged 'ceiling', or no value)
                for k in ("kl", "gain"):
                    v = float(np.asarray(getattr(measured, k))[i])
                    r[f"measured_{k}"] = v if r["extrapolated"] and np.isfinite(v) else None
                r["measured_reasons"] = (reason_names(int(np.asarray(measured.reasons)[i])) if r["extrapolated"]
                                         else None)
    return rows


def _point(x) -> str:
    """A point value; ``-`` where it is not known (NaN or None: e.g. no tilt), never the word nan."""
    return "-" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _measured(r: dict) -> str:
    """Beside an extrapolated row: the measured KL / gain with why it is flagged, or why there is none."""
    return c.measured([r["measured_kl"], r["measured_gain"]], r["measured_reasons"],
                      r["measured_reasons"] or "not computed")


def print_table(rows, gain_label: str = "gain") -> None:
    from ..status import legend

    ms = [_measured(r) if r.get("extrapolated") and "measured_reasons" in r else "" for r in rows]
    m_width = max((len(m) for m in ms), default=0)
    m_width = max(m_width, 25) if m_width else 0
    m_head = f"  {'measured KL / gain (flag)':>{m_width}}" if m_width else ""
    c.say(f"{'beta':>10} {'KL (nats) [95% interval]':>28} {gain_label + ' [95% interval]':>28} {'ESS/N':>6}{m_head}"
          "  status")
    for r, m in zip(rows, ms):
        # the reported interval: its upper limit allows for an unseen tail (jaxlimits.tail_bound), so it is
        # often asymmetric, and open (inf) where that tail's tilt may not exist
        kl = f"{_point(r['kl'])} [{r['kl_lo']:.3g}, {r['kl_hi']:.3g}]"
        gain = f"{_point(r['gain'])} [{r['gain_lo']:.3g}, {r['gain_hi']:.3g}]"
        if r.get("extrapolated"):  # the model's interval, often asymmetric or open
            kl = f"{_point(r['kl'])} [{r['tail_kl_lo']:.3g}, {r['tail_kl_hi']:.3g}]"
            gain = f"{_point(r['gain'])} [{r['tail_gain_lo']:.3g}, {r['tail_gain_hi']:.3g}]"
        why = f" ({r['reasons']})" if r.get("reasons") else ""
        ess = "-" if r.get("extrapolated") else f"{r['ess_fraction']:.2f}"  # the samples' ESS says nothing of a model
        m_col = f"  {m:>{m_width}}" if m_width else ""
        c.say(f"{r['beta']:10.4g} {kl:>28} {gain:>28} {ess:>6}{m_col}  {r['status']}{why}")
    for line in legend(r["status"] for r in rows):
        c.say(line)
    if any(r.get(k) == float("inf") for r in rows for k in ("kl_hi", "gain_hi")):
        c.say("inf: no upper limit (also on ok points; \"inf\" in --out files): the samples cannot exclude an "
              "exponential tail beyond their largest rewards under which that tilt does not exist (README 'Can I "
              "trust the number?'); the lower limit holds")


def what_the_curve_is(reward: str, score: str | None) -> str:
    """One sentence saying what the gain column is (the frontier, or a score of the reward-tilted policies)."""
    if score is None or score == reward:
        return (f"the frontier: the most {reward!r} gain any policy reaches at each KL (the tilted policies "
                f"pi0 exp(r/beta)/Z); gain in {reward!r} units, KL in nats per sequence")
    return (f"not a frontier: the {score!r} gain of the policies tilted toward {reward!r} (optimal for "
            f"{reward!r}, not for {score!r}); gain in {score!r} units, KL in nats per sequence. Other policies "
            f"may reach more {score!r} gain at the same KL (jaxlimits proxy --same-kl gives the {score!r} frontier)")


def report(samples, args, source: dict, notes: list[str], default_plot=None, reward: str = "reward",
           score: str | None = None, f=None) -> int:
    """Prints (and writes, draws) the frontier of ``samples``, or ``f`` when it is given (``--stream``)."""
    import jaxlimits as jl

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    # the demo's own default figure is replaced each run (it is the same figure); a --plot file needs --force
    png = c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot") if args.plot else (
        c.check_new_file(default_plot, True, (".png",), "the demo figure") if default_plot else None)
    if args.bootstrap < 0:
        raise c.UsageError(f"--bootstrap {args.bootstrap}: give a number of replicates >= 0")
    tail = c.tail_options(args)  # checked before the sweep
    measured, model = f, None  # model: the tail curve the figure draws (where the model applies)
    if f is None:
        # what jl.frontier(..., tail="gpd") does, in two steps: the figure draws the measured flagged points too
        measured = jl.frontier(samples, args.betas, num_betas=args.num_betas, per_prompt=False,
                               bootstrap=args.bootstrap, memory_budget=c.memory_budget(args))
        f = measured
        if tail:
            from ..tail import applies, extrapolate

            f = extrapolate(measured, samples, replicates=tail["tail_replicates"], memory_budget=c.memory_budget(args))
            model = f.tail if applies(f.tail.fitted) else None
            if model is None:
                from ..estimators import SHARE_MAX

                tied = int(np.sum(~np.asarray(f.tail.fitted, bool)))
                notes.append(f"--tail gpd did not apply: {tied} of {samples.num_prompts} prompts' top rewards tie "
                             f"(more than {SHARE_MAX:.0%}; e.g. rewards rounded to bfloat16), so no tail can be "
                             "fitted to them and the pooled model would rest on their empirical laws; the points "
                             "stay the samples' (flagged or unknown), as in `jaxlimits invert --tail gpd`")
    rows = rows_of(f, measured if tail else None)
    curve = "frontier" if score in (None, reward) else f"{score} gain of the policy tilted toward {reward}"
    for r in rows:
        r["curve"] = curve
    for note in notes:
        c.say(f"note: {note}")
    shape = (f"{samples.num_prompts} prompts, up to {samples.num_samples} samples each" if samples is not None else
             f"{source['prompts']} prompts, {source['rows']} rows read in chunks of {args.chunk_rows}")
    c.say(f"{shape}; KL ceiling (mean over prompts) {float(f.kl_ceiling):.3f} nats")
    c.say(f"gain: {what_the_curve_is(reward, score)}")
    print_table(rows, gain_label="gain" if score in (None, reward) else f"{score} gain")
    if bool(np.any(np.asarray(f.saturated))):
        c.say("(estimates are bias-corrected; a flagged point's reasons are in parentheses: README 'Can I trust the "
              "number?')")
    if f.extrapolated is not None and bool(np.any(np.asarray(f.extrapolated))):
        c.say(f"(the model's {f.tail.level:.0%} interval in brackets, inf where the data cannot bound it; '-': no "
              "number (no tilt there) or, for ESS/N, nothing the samples measure; 'measured KL / gain (flag)' is "
              "what the samples alone say there and why it is flagged (--out: measured_*); points flagged for "
              "other reasons than 'ceiling' keep the measurement: README 'Beyond log N')")
    if out is not None:
        meta = c.meta(args, source, notes)
        meta["gain"] = what_the_curve_is(reward, score)
        c.write_rows(out, rows, meta)
        c.say(f"wrote {out}")
    if png is not None:
        from .. import plot

        plot.frontier_figure(measured, tail=model, path=png, title=source.get("title"), reward_label=reward,
                             score_label=None if score in (None, reward) else score, xmax=getattr(args, "xmax", None))
        c.say(f"drew {png}")
    return 0


def run(args) -> int:
    if args.stream:
        return run_stream(args)
    loaded = c.load_samples(args)
    return report(loaded.samples, args, loaded.source, loaded.notes, reward=args.reward_col, score=args.score_col)


def run_stream(args) -> int:
    """``--stream``: the pooled frontier by :func:`jaxlimits.streaming.sweep_files`, chunk by chunk."""
    from .. import streaming

    for option, value in (("--dedupe", args.dedupe), ("--base-logprob-col", args.base_logprob_col),
                          ("--sampler-logprob-col", args.sampler_logprob_col)):
        if value is not None:
            raise c.UsageError(f"{option} is not available with --stream (it needs all of a prompt's rows at once)")
    if args.bootstrap:
        raise c.UsageError("--bootstrap is not available with --stream (it resamples all of a prompt's rows)")
    if getattr(args, "tail", None):
        raise c.UsageError("--tail is not available with --stream (it fits all of a prompt's rows at once)")
    if args.chunk_rows < 1:
        raise c.UsageError(f"--chunk-rows {args.chunk_rows}: give a number of rows >= 1")
    c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")  # before the sweep, not after it
    if args.plot:
        c.check_new_file(args.plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    sweep = streaming.sweep_files(args.file, args.betas, prompt=args.prompt_col, reward=args.reward_col,
                                  score=args.score_col, log_weight=args.log_weight_col, count=args.count_col,
                                  chunk_rows=args.chunk_rows, num_betas=args.num_betas,
                                  dtype="float64" if args.x64 else None)
    columns = dict(prompt=args.prompt_col, reward=args.reward_col, score=args.score_col,
                   log_weight=args.log_weight_col, count=args.count_col)
    source = {"file": ", ".join(map(str, sweep.files)), "rows": sweep.rows, "prompts": len(sweep.prompt_ids),
              "columns": {k: v for k, v in columns.items() if v is not None}, "stream": True}
    notes = ["--stream keeps only mergeable sums: no PSIS k-hat, so the reasons 'tail' and 'no-tilt' are never "
             "raised here, and no model of the unseen tail, so the upper limits are estimate + z SE and the rule "
             "is the stricter one for unmodelled tails (read without --stream for both)"]
    return report(None, args, source, notes, reward=args.reward_col, score=args.score_col, f=sweep.frontier)
