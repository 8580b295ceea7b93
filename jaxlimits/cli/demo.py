"""``jaxlimits demo``: the frontier of the built-in dataset (works offline on a fresh machine)."""

from __future__ import annotations

from . import _common as c
from . import frontier

EXAMPLES = ("jaxlimits demo", "jaxlimits demo --out demo_frontier.json --plot demo_frontier.png")


def register(sub):
    p = c.subparser(sub, "demo", "the frontier table and figure of the built-in dataset (200 prompts x 512 samples); "
                    "without --plot the figure is ~/.cache/jaxlimits/demo_frontier.png, replaced each run", EXAMPLES)
    c.add_common(p, plot=True)
    c.add_grid(p)
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap replicates for percentile bands")
    return p


def run(args) -> int:
    from .. import datasets

    samples = datasets.demo()
    if args.x64:
        import jax

        samples = jax.tree.map(lambda a: a.astype("float64"), samples)
    source = {"dataset": "jaxlimits.datasets.demo()", "prompts": samples.num_prompts, "samples": samples.num_samples,
              "title": "jaxlimits demo: 200 prompts x 512 samples"}
    default_plot, notes = None, []
    if args.plot is None and _has_matplotlib():
        default_plot = demo_figure_path()
        if default_plot is None:
            notes.append("no figure: the cache folder cannot be written (pass --plot FILE)")
    elif args.plot is None:
        notes.append("no figure: matplotlib is not installed (pip install 'jaxlimits[plot]')")
    return frontier.report(samples, args, source, notes, default_plot=default_plot)


def demo_figure_path() -> str | None:
    """Where ``jaxlimits demo`` draws without ``--plot``: one file, replaced by each run (the demo's
    figure is the same every run), in ``$XDG_CACHE_HOME/jaxlimits`` (``~/.cache/jaxlimits``); None
    when that folder cannot be made."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxlimits"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder / "demo_frontier.png")


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None
