"""``jaxlimits demo``: the frontier of the built-in dataset (works offline on a fresh machine)."""

from __future__ import annotations

from . import _common as c
from . import frontier

EXAMPLES = ("jaxlimits demo", "jaxlimits demo --out demo_frontier.json --plot demo_frontier.png")


def register(sub):
    p = c.subparser(sub, "demo", "the frontier table and figure of the built-in dataset (200 prompts x 512 samples)",
                    EXAMPLES)
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
    default_plot = None
    if args.plot is None and _has_matplotlib():  # the figure goes to a fresh folder: never overwrites
        import tempfile
        from pathlib import Path

        default_plot = str(Path(tempfile.mkdtemp(prefix="jaxlimits-demo-")) / "frontier.png")
    no_plot = "no figure: matplotlib is not installed (pip install 'jaxlimits[plot]')"
    notes = [] if args.plot or default_plot else [no_plot]
    return frontier.report(samples, args, source, notes, default_plot=default_plot)


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None
