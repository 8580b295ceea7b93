"""``jaxlimits info FILE``: what a file of scored samples holds, before any sweep."""

from __future__ import annotations

import numpy as np

from . import _common as c

EXAMPLES = ("jaxlimits info samples.jsonl --dedupe response_sha1",
            "jaxlimits info samples.jsonl.gz --out summary.json",
            "jaxlimits info samples.jsonl --stream")


def register(sub):
    p = c.subparser(sub, "info", "describe a file of scored samples (prompts, samples, ties, ceilings)", EXAMPLES)
    c.add_data_options(p)
    p.add_argument("--x64", action="store_true", help="read in float64")
    p.add_argument("--out", default=None, help="write the summary to this .csv or .json file")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--stream", action="store_true",
                   help="read the file in chunks of --chunk-rows rows (jaxlimits.streaming.summarize_files): memory "
                        "bounded by the chunk and a few numbers per prompt, for files larger than memory; a prompt's "
                        "rows need not be contiguous; not with --dedupe")
    p.add_argument("--chunk-rows", type=int, default=100_000, metavar="ROWS",
                   help="rows read at a time with --stream (default 100000)")
    return p


def describe(samples) -> dict:
    """Summary figures of :class:`jaxlimits.Samples` (no sweep), every one over draws.

    A row with count ``m`` stands for ``m`` draws; importance log-weights reweight the draws to
    the base law ``pi0`` (the means under ``pi0`` and the KL ceiling use them; the draws' own mean
    is the sampler's). The KL ceiling is ``-log u(max r)``, the base mass at a prompt's largest
    reward (``log(N/m)`` for plain draws).
    """
    return figures(per_prompt(samples), scores=samples.scores is not None, dtype=str(samples.dtype))


def per_prompt(samples):
    """The per-prompt figures :func:`figures` summarises, from :class:`jaxlimits.Samples` (a
    :class:`jaxlimits.streaming.PromptSummary`; ``--stream`` gets the same from the file chunk by chunk)."""
    from ..streaming import PromptSummary

    valid = np.asarray(samples.valid())
    r = np.asarray(samples.rewards, dtype=np.float64)
    rv = np.where(valid, r, np.nan)
    top = np.nanmax(rv, axis=1)
    counts = np.where(valid, 1.0 if samples.counts is None else np.asarray(samples.counts, dtype=np.float64), 0.0)
    at_top = valid & (r == top[:, None])
    w = counts
    if samples.log_weights is not None:
        lw = np.where(valid, np.asarray(samples.log_weights, np.float64), -np.inf)
        w = counts * np.exp(lw - lw.max(axis=1, keepdims=True))
    u = w / w.sum(axis=1, keepdims=True)  # the base law's weight of each row, per prompt
    r0 = np.where(valid, r, 0.0)
    weighted = samples.log_weights is not None
    return PromptSummary(
        prompt_ids=list(range(samples.num_prompts)), rows=valid.sum(1).astype(np.float64),
        draws=np.asarray(samples.draws(), dtype=np.float64), r_min=np.nanmin(rv, axis=1), r_max=top,
        sum_r=np.sum(counts * r0, axis=1), draws_at_max=np.where(at_top, counts, 0).sum(1),
        base_mass_at_max=np.where(at_top, u, 0).sum(1),
        base_mean=np.sum(u * r0, 1) if weighted else np.full(samples.num_prompts, np.nan),
        weighted=weighted, rows_read=int(valid.sum()), files=[])


def figures(pp, *, scores: bool, dtype: str) -> dict:
    """The summary of per-prompt figures (a :class:`jaxlimits.streaming.PromptSummary`): what ``info`` prints."""
    draws, rows = pp.draws, pp.rows
    ceiling = -np.log(pp.base_mass_at_max)
    out = {
        "prompts": len(pp.prompt_ids),
        "draws per prompt (min/median/max)": (int(draws.min()), float(np.median(draws)), int(draws.max())),
        "distinct rows per prompt (min/median/max)": (int(rows.min()), float(np.median(rows)), int(rows.max())),
        "reward min/mean/max (mean over all draws)": (
            float(np.min(pp.r_min)), float(np.sum(pp.sum_r) / np.sum(draws)), float(np.max(pp.r_max))),
    }
    if pp.weighted:
        out["reward mean under pi0 (importance-weighted; mean over prompts)"] = float(np.mean(pp.base_mean))
    out.update({
        "share of draws tied at a prompt's max (median)": float(np.median(pp.draws_at_max / draws)),
        "KL ceiling -log pi0(max r) (min/median/max)": tuple(float(f(np.maximum(ceiling, 0.0)))
                                                             for f in (np.min, np.median, np.max)),
        "scores": scores,
        "importance weights": pp.weighted,
        "dtype": dtype,
    })
    return out


def summarize_stream(args):
    """``--stream``: the figures from the file read ``--chunk-rows`` rows at a time, and its source."""
    from .. import streaming

    if args.dedupe is not None:
        raise c.UsageError("--dedupe is not available with --stream (it needs all of a prompt's rows at once)")
    if args.chunk_rows < 1:
        raise c.UsageError(f"--chunk-rows {args.chunk_rows}: give a number of rows >= 1")
    pp = streaming.summarize_files(args.file, prompt=args.prompt_col, reward=args.reward_col, score=args.score_col,
                                   log_weight=args.log_weight_col, count=args.count_col,
                                   base_logprob=args.base_logprob_col, sampler_logprob=args.sampler_logprob_col,
                                   chunk_rows=args.chunk_rows, dtype="float64" if args.x64 else None)
    columns = dict(prompt=args.prompt_col, reward=args.reward_col, score=args.score_col,
                   log_weight=args.log_weight_col, count=args.count_col, base_logprob=args.base_logprob_col,
                   sampler_logprob=args.sampler_logprob_col)
    source = {"file": ", ".join(pp.files), "rows": pp.rows_read, "prompts": len(pp.prompt_ids),
              "columns": {k: v for k, v in columns.items() if v is not None}, "stream": True}
    import jax.numpy as jnp

    dtype = "float64" if args.x64 else str(jnp.dtype(jnp.result_type(float)))
    return figures(pp, scores=args.score_col is not None, dtype=dtype), source


def run(args) -> int:
    out = c.check_new_file(args.out, args.force, (".csv", ".json"), "--out")
    if args.stream:
        summary, source = summarize_stream(args)
        notes = []
    else:
        loaded = c.load_samples(args)
        source, notes = loaded.source, loaded.notes
        summary = describe(loaded.samples)
    for note in notes:
        c.say(f"note: {note}")
    c.say(f"file: {source['file']} ({source['rows']} rows; columns {source['columns']})")
    for k, v in summary.items():
        if isinstance(v, tuple):
            v = " / ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        c.say(f"{k}: {v}")
    if out is not None:  # one row per figure: what it is, and its value(s)
        rows = [{"figure": k, "value": " / ".join(map(str, v)) if isinstance(v, tuple) else v}
                for k, v in summary.items()]
        if out.suffix.lower() == ".json":
            rows = [{"figure": k, "value": list(v) if isinstance(v, tuple) else v} for k, v in summary.items()]
        c.write_rows(out, rows, c.meta(args, source, notes))
        c.say(f"wrote {out}")
    return 0
