"""``jaxlimits info FILE``: what a file of scored samples holds, before any sweep."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = ("jaxlimits info samples.jsonl --dedupe response_sha1",)


def register(sub):
    p = c.subparser(sub, "info", "describe a file of scored samples (prompts, samples, ties, ceilings)", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--x64", action="store_true", help="read in float64")
    return p


def describe(samples) -> dict:
    """Summary figures of :class:`jaxlimits.Samples` (no sweep)."""
    valid = np.asarray(samples.valid())
    r = np.asarray(samples.rewards, dtype=np.float64)
    draws = np.asarray(samples.draws())
    rows = valid.sum(1)
    rv = np.where(valid, r, np.nan)
    top = np.nanmax(rv, axis=1)
    counts = np.ones_like(r) if samples.counts is None else np.asarray(samples.counts, dtype=np.float64)
    at_top = np.where(valid & (r == top[:, None]), counts, 0).sum(1)
    out = {
        "prompts": samples.num_prompts,
        "draws per prompt (min/median/max)": (int(draws.min()), float(np.median(draws)), int(draws.max())),
        "distinct rows per prompt (min/median/max)": (int(rows.min()), float(np.median(rows)), int(rows.max())),
        "reward min/mean/max": (float(np.nanmin(rv)), float(np.nanmean(rv)), float(np.nanmax(rv))),
        "share of draws tied at a prompt's max (median)": float(np.median(at_top / draws)),
        "KL ceiling log(N/m) (min/median/max)": tuple(
            float(f(np.log(draws / at_top))) for f in (np.min, np.median, np.max)
        ),
        "scores": samples.scores is not None,
        "importance weights": samples.log_weights is not None,
        "dtype": str(samples.dtype),
    }
    return out


def run(args) -> int:
    loaded = c.load_samples(args)
    for note in loaded.notes:
        c.say(f"note: {note}")
    c.say(f"file: {loaded.source['file']} ({loaded.source['rows']} rows; columns {loaded.source['columns']})")
    for k, v in describe(loaded.samples).items():
        if isinstance(v, tuple):
            v = " / ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        c.say(f"{k}: {v}")
    return 0
