"""The command line: a thin layer over the library (``jaxlimits --help``).

Each command lives in its own module exposing ``register(subparsers)`` and ``run(args) -> int``;
bad input raises :class:`~jaxlimits.cli._common.UsageError` (or ``ValueError``) and exits with
code 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "x64", False):
            import jax

            jax.config.update("jax_enable_x64", True)
        return int(args._run(args) or 0)
    except (UsageError, ValueError) as e:
        if os.environ.get("JAXLIMITS_DEBUG"):
            raise
        sys.stderr.write(f"jaxlimits {args.command}: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
