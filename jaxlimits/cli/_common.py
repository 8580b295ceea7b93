"""Options and output shared by every command (the same names everywhere)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def subparser(sub, name: str, help: str, examples) -> argparse.ArgumentParser:
    """A subcommand parser whose ``--help`` ends with runnable examples."""
    return sub.add_parser(
        name, help=help, description=help,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="long-format table: one row per sample (.jsonl, .csv, .parquet, .npz)")
    p.add_argument("--prompt-col", default="prompt_id", help="column of prompt ids (default: prompt_id)")
    p.add_argument("--reward-col", default="reward", help="column of the reward aligned to (default: reward)")
    p.add_argument("--score-col", default=None, help="column of the score the gain is measured with")
    p.add_argument("--log-weight-col", default=None, help="column of importance log-weights log pi0 - log q")
    p.add_argument("--count-col", default=None, help="column of multiplicities")
    p.add_argument("--dedupe", default=None, metavar="COL", help="merge identical responses (same COL) into counts")
    p.add_argument("--base-logprob-col", default=None, metavar="COL",
                   help="sequence log-probability under the base model (with --sampler-logprob-col: log-weights)")
    p.add_argument("--sampler-logprob-col", default=None, metavar="COL",
                   help="sequence log-probability under the sampler that drew it (temperature, top-p)")


def add_common(p: argparse.ArgumentParser, *, plot: bool = False) -> None:
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MIB",
                   help="working memory of a sweep, in MiB (default 256)")
    p.add_argument("--out", default=None, help="write the results to this .csv or .json file")
    if plot:
        p.add_argument("--plot", default=None, metavar="PNG", help="draw the figure to this file (.png, .pdf, .svg)")
        p.add_argument("--xmax", default=None, type=_xmax, metavar="KL",
                       help="right end of the figure's KL axis: nats, or 'full' for the samples' whole KL range "
                            "(default: the runs' and best-of-n points' range when there are any, else 'full')")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


def _xmax(text: str):
    if text == "full":
        return text
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of nats nor 'full'") from None
    if not (np.isfinite(x) and x > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of nats, or 'full'")
    return x


def add_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--betas", type=float, nargs="+", default=None, help="KL penalties (default: a data-driven grid)")
    p.add_argument("--num-betas", type=int, default=32,
                   help="points of the default grid (default 32; the library's jaxlimits.frontier defaults to 64 "
                        "points and keeps per-prompt statistics, the CLI pools)")


def check_new_file(path, force: bool, suffixes, option: str) -> Path | None:
    """An output path that may be written: right suffix, folder exists, no overwrite without --force."""
    if path is None:
        return None
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{option} {out}: is a directory; give a file name ending in {' or '.join(suffixes)}")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {out}: use a file name ending in {' or '.join(suffixes)}")
    if out.exists() and not out.is_file():
        raise UsageError(f"{option} {out}: exists and is not a regular file")
    if out.exists() and not force:
        raise UsageError(f"{option} {out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise UsageError(f"{option} {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{option} {out}: not writable")
    return out


def add_tail(p: argparse.ArgumentParser, what: str) -> None:
    """``--tail gpd`` (``what``: what the model does in this command) and ``--tail-replicates``."""
    p.add_argument("--tail", choices=("gpd",), default=None, help=what)
    p.add_argument("--tail-replicates", type=int, default=200, metavar="B",
                   help="bootstrap replicates of the tail model per threshold (default 200)")


def tail_options(args) -> dict:
    """The library's ``tail=`` keywords from ``--tail``/``--tail-replicates`` (none without ``--tail``).

    Raises:
      UsageError: fewer than 2 replicates.
    """
    if getattr(args, "tail", None) is None:
        return {}
    if args.tail_replicates < 2:
        raise UsageError(f"--tail-replicates {args.tail_replicates}: give at least 2 replicates")
    return dict(tail=args.tail, tail_replicates=args.tail_replicates)


def measured(values, reasons: str, why_none: str) -> str:
    """The ``measured (flag)`` cell beside a tail model's value (``invert``, ``compare``, ``frontier`` with
    ``--tail``): what the samples alone say there, the value(s) (``/``-separated) with the trust rule's
    reasons in parentheses (none where it is trusted), or ``-`` and why the samples give no value."""
    if any(v is None or not np.isfinite(v) for v in values):
        return f"- ({why_none})"
    return " / ".join(f"{v:.4g}" for v in values) + (f" ({reasons})" if reasons else "")


def interval(x, lo, hi, *, digits: int = 3, point: bool = True) -> str:
    """A tail model's value with its interval in brackets, ``x [lo, hi]`` (``x`` to 4 significant digits,
    the limits to ``digits``); an empty limit (None) is ``-`` below and open (``inf``) above. ``point=False``:
    the interval alone (a point the table should not lead with, e.g. one carried by a few prompts)."""
    def num(v, digits):
        return "-" if v is None or np.isnan(v) else "inf" if np.isposinf(v) else f"{v:.{digits}g}"

    head = f"{num(x, 4)} " if point else ""
    return f"{head}[{num(lo, digits)}, {'inf' if hi is None else num(hi, digits)}]"


def memory_budget(args) -> int | None:
    return None if args.memory_budget is None else int(args.memory_budget * 2**20)


def load_samples(args):
    """Samples from the data options (a :class:`jaxlimits.io.Loaded`)."""
    from .. import io

    loaded = io.load(args.file, prompt=args.prompt_col, reward=args.reward_col, score=args.score_col,
                     log_weight=args.log_weight_col, count=args.count_col, dedupe=args.dedupe,
                     base_logprob=getattr(args, "base_logprob_col", None),
                     sampler_logprob=getattr(args, "sampler_logprob_col", None))
    if getattr(args, "x64", False):
        import jax

        loaded.samples = jax.tree.map(lambda a: a.astype("float64") if a.dtype.kind == "f" else a, loaded.samples)
    args._loaded = loaded  # errors about one prompt name its id and line (jaxlimits.cli.main)
    return loaded


def write_rows(out: Path, rows: list[dict], meta: dict, option: str = "--out") -> None:
    """Rows as CSV, or as strict JSON with the run's description (inputs, version, settings).

    A value that is not known (NaN, None) is ``null`` in JSON and an empty cell in CSV; the row's
    ``status`` and ``reason`` (or ``note``) say why. An infinite one (an open upper limit) is the
    string ``"inf"`` (``"-inf"``) in both, which pandas and ``float()`` read as infinity.
    """
    try:
        if out.suffix.lower() == ".json":
            text = json.dumps(plain({"meta": meta, "rows": rows}), indent=2, allow_nan=False)
            out.write_text(text + "\n")
            return
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows([{k: "" if v is None else v for k, v in plain(r).items()} for r in rows])
    except OSError as e:
        raise UsageError(f"{option} {out}: cannot write ({e.strerror or e})") from None


def plain(x):
    """JSON-ready Python values: NaN -> None, +-inf -> "inf"/"-inf", NumPy scalars and arrays -> Python."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        return x if np.isfinite(x) else None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if x is None or isinstance(x, (bool, int, str)):
        return x
    return str(x)


def meta(args, source: dict, notes: list[str]) -> dict:
    from .. import __version__

    settings = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("file",)}
    return {"command": args.command, "version": __version__, "source": source, "notes": notes, "settings": settings}


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
