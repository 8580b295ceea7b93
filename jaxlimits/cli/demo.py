"""``jaxlimits demo``: the frontier of the built-in dataset (works offline on a fresh machine)."""

from __future__ import annotations

from . import _common as c
from . import frontier

EXAMPLES = ("jaxlimits demo", "jaxlimits demo --out demo_frontier.json --plot demo_frontier.png",
            "jaxlimits demo --write-data .")


def register(sub):
    p = c.subparser(sub, "demo", "the frontier table and figure of the built-in dataset (200 prompts x 512 samples); "
                    "without --plot the figure is ~/.cache/jaxlimits/demo_frontier.png, replaced each run", EXAMPLES)
    c.add_common(p, plot=True)
    c.add_grid(p)
    p.add_argument("--bootstrap", type=int, default=0, metavar="B", help="bootstrap replicates for percentile bands")
    p.add_argument("--write-data", default=None, metavar="FOLDER",
                   help="write the built-in dataset as the files the --help examples name (samples.jsonl, "
                        "base.jsonl, runs.csv, ...) into FOLDER, then stop; with --force, overwrite them")
    return p


def run(args) -> int:
    from .. import datasets

    if args.write_data is not None:
        return write_data(args.write_data, args.force)

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


def write_data(folder: str, force: bool) -> int:
    """``--write-data``: :func:`jaxlimits.datasets.write_examples` into ``folder``."""
    from pathlib import Path

    from .. import datasets

    if Path(folder).exists() and not Path(folder).is_dir():
        raise c.UsageError(f"--write-data {folder}: exists and is not a folder")
    try:
        paths = datasets.write_examples(folder, force=force)
    except FileExistsError as e:
        raise c.UsageError(f"--write-data: {e}".replace("force=True (--force)", "--force")) from None
    except OSError as e:
        raise c.UsageError(f"--write-data {folder}: cannot write ({e.strerror or e})") from None
    c.say(f"wrote {len(paths)} files into {folder}: " + ", ".join(p.name for p in paths))
    c.say("every example of 'jaxlimits COMMAND --help' now runs in that folder as printed")
    return 0


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
