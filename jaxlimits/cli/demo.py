"""``jaxlimits demo``: the frontier of the built-in dataset (works offline on a fresh machine)."""

from __future__ import annotations

from . import _common as c
from . import frontier

EXAMPLES = ("jaxlimits demo", "jaxlimits demo --out demo_frontier.json")


def register(sub):
    p = c.subparser(sub, "demo", "the frontier of the built-in dataset (200 prompts x 512 samples)", EXAMPLES)
    c.add_common(p)
    c.add_grid(p)
    return p


def run(args) -> int:
    from .. import datasets

    samples = datasets.demo()
    if args.x64:
        import jax

        samples = jax.tree.map(lambda a: a.astype("float64"), samples)
    source = {"dataset": "jaxlimits.datasets.demo()", "prompts": samples.num_prompts, "samples": samples.num_samples}
    return frontier.report(samples, args, source, [])
