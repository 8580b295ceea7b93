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
    return p


def rows_of(f) -> list[dict]:
    """The pooled frontier as table rows (one per beta)."""
    keys = ("betas", "kl", "kl_se", "gain", "gain_se", "reverse_kl", "ess_fraction", "saturated_share", "saturated")
    cols = {k: np.asarray(getattr(f, k)) for k in keys}
    if f.bands is not None:
        for k in ("gain_lo", "gain_hi", "kl_lo", "kl_hi"):
            cols[f"bootstrap_{k}"] = np.asarray(getattr(f.bands, k))
    return [
        {("beta" if k == "betas" else k): (bool(v[i]) if k == "saturated" else float(v[i])) for k, v in cols.items()}
        for i in range(len(cols["betas"]))
    ]


def print_table(rows) -> None:
    c.say(f"{'beta':>10} {'KL (nats)':>20} {'gain':>20} {'ESS/N':>6}  trust")
    for r in rows:
        kl = f"{r['kl']:.4g} ± {r['kl_se']:.2g}"
        gain = f"{r['gain']:.4g} ± {r['gain_se']:.2g}"
        flag = "saturated" if r["saturated"] else "ok"
        c.say(f"{r['beta']:10.4g} {kl:>20} {gain:>20} {r['ess_fraction']:6.2f}  {flag}")


def report(samples, args, source: dict, notes: list[str], default_plot=None) -> int:
    import jaxlimits as jl

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    png = c.check_new_file(args.plot or default_plot, args.force, (".png", ".pdf", ".svg"), "--plot")
    if args.bootstrap < 0:
        raise c.UsageError(f"--bootstrap {args.bootstrap}: give a number of replicates >= 0")
    f = jl.frontier(samples, args.betas, num_betas=args.num_betas, per_prompt=False, bootstrap=args.bootstrap,
                    memory_budget=c.memory_budget(args))
    rows = rows_of(f)
    for note in notes:
        c.say(f"note: {note}")
    c.say(f"{samples.num_prompts} prompts, up to {samples.num_samples} samples each; "
          f"KL ceiling (mean over prompts) {float(f.kl_ceiling):.3f} nats")
    print_table(rows)
    if bool(np.any(np.asarray(f.saturated))):
        c.say("saturated: over 5% of the pooled KL comes from prompts whose estimate cannot be trusted "
              "(ESS < 200 or < 60% of N, or KL above half its ceiling)")
    if out is not None:
        c.write_rows(out, rows, c.meta(args, source, notes))
        c.say(f"wrote {out}")
    if png is not None:
        from .. import plot

        plot.frontier_figure(f, path=png, title=source.get("title"))
        c.say(f"drew {png}")
    return 0


def run(args) -> int:
    loaded = c.load_samples(args)
    return report(loaded.samples, args, loaded.source, loaded.notes)
