"""``jaxlimits info FILE``: what a file of scored samples holds, before any sweep."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = ("jaxlimits info samples.jsonl --dedupe response_sha1",
            "jaxlimits info samples.jsonl.gz --out summary.json")


def register(sub):
    p = c.subparser(sub, "info", "describe a file of scored samples (prompts, samples, ties, ceilings)", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--x64", action="store_true", help="read in float64")
    p.add_argument("--out", default=None, help="write the summary to this .csv or .json file")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    return p


def describe(samples) -> dict:
    """Summary figures of :class:`jaxlimits.Samples` (no sweep), every one over draws.

    A row with count ``m`` stands for ``m`` draws; importance log-weights reweight the draws to
    the base law ``pi0`` (the means under ``pi0`` and the KL ceiling use them; the draws' own mean
    is the sampler's). The KL ceiling is ``-log u(max r)``, the base mass at a prompt's largest
    reward (``log(N/m)`` for plain draws).
    """
    valid = np.asarray(samples.valid())
    r = np.asarray(samples.rewards, dtype=np.float64)
    draws = np.asarray(samples.draws())
    rows = valid.sum(1)
    rv = np.where(valid, r, np.nan)
    top = np.nanmax(rv, axis=1)
    counts = np.where(valid, 1.0 if samples.counts is None else np.asarray(samples.counts, dtype=np.float64), 0.0)
    at_top = np.where(valid & (r == top[:, None]), counts, 0).sum(1)
    w = counts
    if samples.log_weights is not None:
        lw = np.where(valid, np.asarray(samples.log_weights, np.float64), -np.inf)
        w = counts * np.exp(lw - lw.max(axis=1, keepdims=True))
    u = w / w.sum(axis=1, keepdims=True)  # the base law's weight of each row, per prompt
    ceiling = -np.log(np.where(valid & (r == top[:, None]), u, 0).sum(1))
    r0 = np.where(valid, r, 0.0)
    out = {
        "prompts": samples.num_prompts,
        "draws per prompt (min/median/max)": (int(draws.min()), float(np.median(draws)), int(draws.max())),
        "distinct rows per prompt (min/median/max)": (int(rows.min()), float(np.median(rows)), int(rows.max())),
        "reward min/mean/max (mean over all draws)": (
            float(np.nanmin(rv)), float(np.sum(counts * r0) / np.sum(counts)), float(np.nanmax(rv))),
    }
    if samples.log_weights is not None:
        out["reward mean under pi0 (importance-weighted; mean over prompts)"] = float(np.mean(np.sum(u * r0, 1)))
    out.update({
        "share of draws tied at a prompt's max (median)": float(np.median(at_top / draws)),
        "KL ceiling -log pi0(max r) (min/median/max)": tuple(float(f(np.maximum(ceiling, 0.0)))
                                                             for f in (np.min, np.median, np.max)),
        "scores": samples.scores is not None,
        "importance weights": samples.log_weights is not None,
        "dtype": str(samples.dtype),
    })
    return out


def run(args) -> int:
    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    loaded = c.load_samples(args)
    for note in loaded.notes:
        c.say(f"note: {note}")
    c.say(f"file: {loaded.source['file']} ({loaded.source['rows']} rows; columns {loaded.source['columns']})")
    summary = describe(loaded.samples)
    for k, v in summary.items():
        if isinstance(v, tuple):
            v = " / ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        c.say(f"{k}: {v}")
    if out is not None:  # one row per figure: what it is, and its value(s)
        rows = [{"figure": k, "value": " / ".join(map(str, v)) if isinstance(v, tuple) else v}
                for k, v in summary.items()]
        if out.suffix.lower() == ".json":
            rows = [{"figure": k, "value": list(v) if isinstance(v, tuple) else v} for k, v in summary.items()]
        c.write_rows(out, rows, c.meta(args, loaded.source, loaded.notes))
        c.say(f"wrote {out}")
    return 0
