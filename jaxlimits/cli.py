"""The command line: a thin layer over the library (``jaxlimits --help``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

EXAMPLES = {
    "demo": "jaxlimits demo",
    "frontier": "jaxlimits frontier samples.jsonl --reward-col reward --dedupe response_sha1 --out frontier.csv",
}


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="long-format table: one row per sample (.jsonl, .csv, .parquet, .npz)")
    p.add_argument("--prompt-col", default="prompt_id", help="column of prompt ids (default: prompt_id)")
    p.add_argument("--reward-col", default="reward", help="column of the reward aligned to (default: reward)")
    p.add_argument("--score-col", default=None, help="column of the score the gain is measured with")
    p.add_argument("--log-weight-col", default=None, help="column of importance log-weights log pi0 - log q")
    p.add_argument("--count-col", default=None, help="column of multiplicities")
    p.add_argument("--dedupe", default=None, metavar="COL", help="merge identical responses (same COL) into counts")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MB",
                   help="working memory of the sweep, in MiB (default 256)")
    p.add_argument("--out", default=None, help="write the table to this .csv or .json file")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def _add_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--betas", type=float, nargs="+", default=None, help="KL penalties (default: a data-driven grid)")
    p.add_argument("--num-betas", type=int, default=32, help="points of the default grid (default 32)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxlimits",
        description="The KL-reward frontier of alignment, estimated from base-model samples.",
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="the frontier of the built-in dataset", epilog=f"example:\n  {EXAMPLES['demo']}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p)
    _add_grid(p)
    p = sub.add_parser("frontier", help="the KL-reward frontier of a file of scored samples",
                       epilog=f"example:\n  {EXAMPLES['frontier']}", formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_options(p)
    _add_common(p)
    _add_grid(p)
    return parser


def _check_out(args) -> Path | None:
    if args.out is None:
        return None
    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--out {out}: use a .csv or .json file name")
    if out.exists() and not args.force:
        raise UsageError(f"--out {out} exists; pass --force to overwrite it")
    if not out.parent.exists():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    return out


def _budget(args):
    return None if args.memory_budget is None else int(args.memory_budget * 2**20)


def _frontier_rows(f) -> list[dict]:
    keys = ("betas", "kl", "kl_se", "gain", "gain_se", "reverse_kl", "ess_fraction", "saturated_share", "saturated")
    cols = {k: np.asarray(getattr(f, k)) for k in keys}
    rows = []
    for i in range(len(cols["betas"])):
        row = {("beta" if k == "betas" else k): (bool(v[i]) if k == "saturated" else float(v[i])) for k, v in cols.items()}
        rows.append(row)
    return rows


def _print_frontier(rows, stream) -> None:
    stream.write(f"{'beta':>10} {'KL (nats)':>18} {'gain':>18} {'ESS/N':>6}  trust\n")
    for r in rows:
        kl = f"{r['kl']:.4g} ± {r['kl_se']:.2g}"
        gain = f"{r['gain']:.4g} ± {r['gain_se']:.2g}"
        trust = "saturated" if r["saturated"] else "ok"
        stream.write(f"{r['beta']:10.4g} {kl:>18} {gain:>18} {r['ess_fraction']:6.2f}  {trust}\n")


def _write(out: Path, rows: list[dict], meta: dict) -> None:
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    else:
        import csv

        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _run_frontier(samples, args, source, notes) -> int:
    import jaxlimits as jl

    out = _check_out(args)
    f = jl.frontier(samples, args.betas, num_betas=args.num_betas, per_prompt=False, memory_budget=_budget(args))
    rows = _frontier_rows(f)
    for note in notes:
        sys.stdout.write(f"note: {note}\n")
    sys.stdout.write(
        f"{source.get('prompts', samples.num_prompts)} prompts, up to {samples.num_samples} samples each; "
        f"KL ceiling (mean over prompts) {float(f.kl_ceiling):.3f} nats\n"
    )
    _print_frontier(rows, sys.stdout)
    if bool(np.any(np.asarray(f.saturated))):
        sys.stdout.write(
            "saturated: more than 5% of the pooled KL comes from prompts whose estimate cannot be trusted "
            "(ESS < 200 or < 60% of N, or KL above half its ceiling)\n"
        )
    if out is not None:
        meta = {"command": args.command, "source": source, "notes": notes, "version": jl.__version__,
                "settings": {"x64": args.x64, "memory_budget_mib": args.memory_budget}}
        _write(out, rows, meta)
        sys.stdout.write(f"wrote {out}\n")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import jax

        if args.x64:
            jax.config.update("jax_enable_x64", True)
        from . import datasets, io

        if args.command == "demo":
            samples = datasets.demo()
            return _run_frontier(samples, args, {"dataset": "jaxlimits.datasets.demo()", "prompts": samples.num_prompts}, [])
        if args.command == "frontier":
            loaded = io.load(args.file, prompt=args.prompt_col, reward=args.reward_col, score=args.score_col,
                             log_weight=args.log_weight_col, count=args.count_col, dedupe=args.dedupe)
            samples = loaded.samples
            if args.x64:
                samples = jax.tree.map(lambda a: a.astype("float64") if a.dtype.kind == "f" else a, samples)
            return _run_frontier(samples, args, loaded.source, loaded.notes)
    except (UsageError, ValueError) as e:
        sys.stderr.write(f"jaxlimits {args.command}: error: {e}\n")
        return 2
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
