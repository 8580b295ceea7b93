"""``jaxlimits frontier FILE``: the KL-reward frontier of a file of scored samples."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = ("jaxlimits frontier samples.jsonl --reward-col reward --dedupe response_sha1 --out frontier.csv",)


def register(sub):
    p = c.subparser(sub, "frontier", "the KL-reward frontier of a file of scored samples", EXAMPLES)
    c.add_data_options(p)
    c.add_common(p)
    c.add_grid(p)
    return p


def rows_of(f) -> list[dict]:
    """The pooled frontier as table rows (one per beta)."""
    keys = ("betas", "kl", "kl_se", "gain", "gain_se", "reverse_kl", "ess_fraction", "saturated_share", "saturated")
    cols = {k: np.asarray(getattr(f, k)) for k in keys}
    return [
        {("beta" if k == "betas" else k): (bool(v[i]) if k == "saturated" else float(v[i])) for k, v in cols.items()}
        for i in range(len(cols["betas"]))
    ]


def print_table(rows) -> None:
    c.say(f"{'beta':>10} {'KL (nats)':>20} {'gain':>20} {'ESS/N':>6}  trust")
    for r in rows:
        kl = f"{r['kl']:.4g} ± {r['kl_se']:.2g}"
        gain = f"{r['gain']:.4g} ± {r['gain_se']:.2g}"
        c.say(f"{r['beta']:10.4g} {kl:>20} {gain:>20} {r['ess_fraction']:6.2f}  {'saturated' if r['saturated'] else 'ok'}")


def report(samples, args, source: dict, notes: list[str]) -> int:
    import jaxlimits as jl

    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    f = jl.frontier(samples, args.betas, num_betas=args.num_betas, per_prompt=False, memory_budget=c.memory_budget(args))
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
    return 0


def run(args) -> int:
    loaded = c.load_samples(args)
    return report(loaded.samples, args, loaded.source, loaded.notes)
