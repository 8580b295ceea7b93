"""The command line: a thin layer over the library (``jaxlimits --help``).

Each command lives in its own module exposing ``register(subparsers)`` and ``run(args) -> int``;
bad input raises :class:`~jaxlimits.cli._common.UsageError` (or ``ValueError``) and exits with
code 2 and a one-line message, never a traceback; an error about one prompt
(:class:`jaxlimits.PromptError`) names the prompt's id and its line in the file. ``invert`` also
exits 2 when some targets are not solved (after printing and writing all of them).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..samples import PromptError
from ._common import UsageError

#: Command modules, in the order ``--help`` lists them.
COMMANDS = ("demo", "info", "frontier", "invert", "bon", "compare", "proxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxlimits",
        description="The KL-reward frontier of alignment, estimated from base-model samples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    examples = []
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        p = module.register(sub)
        p.set_defaults(_run=module.run)
        examples.extend(getattr(module, "EXAMPLES", ()))
    parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return parser


def persistent_compilation_cache() -> str | None:
    """Keeps compiled XLA programs between runs (a command's cold start is mostly compilation).

    :func:`jaxlimits.enable_compilation_cache` with its default folder (``$JAXLIMITS_CACHE_DIR``,
    ``""`` turns it off). Returns the folder in use.
    """
    from ..cache import enable_compilation_cache

    return enable_compilation_cache()


def main(argv=None, *, cache: bool = False) -> int:
    """Runs one command; ``cache`` keeps compiled programs on disk (the installed ``jaxlimits``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if cache:
        persistent_compilation_cache()
    try:
        if getattr(args, "x64", False):
            import jax

            jax.config.update("jax_enable_x64", True)
        return int(args._run(args) or 0)
    except PromptError as e:
        if os.environ.get("JAXLIMITS_DEBUG"):
            raise
        loaded = getattr(args, "_loaded", None)
        if hasattr(loaded, "label"):
            msg = e.naming(loaded.label(e.prompt, e.sample))
        elif loaded is not None:  # ids without lines (e.g. an ensemble's table)
            msg = e.naming(f"prompt {loaded.prompt_ids[e.prompt]!r} (in {loaded.source.get('file', 'the file')})")
        else:
            msg = str(e)
        sys.stderr.write(f"jaxlimits {args.command}: error: {msg}\n")
        return 2
    except (UsageError, ValueError) as e:
        if os.environ.get("JAXLIMITS_DEBUG"):
            raise
        sys.stderr.write(f"jaxlimits {args.command}: error: {e}\n")
        return 2


def entry() -> int:
    """The ``jaxlimits`` console script: :func:`main` with the persistent compilation cache."""
    return main(cache=True)


if __name__ == "__main__":
    sys.exit(entry())
