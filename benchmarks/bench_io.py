"""Loading a 1,000,000-row file: the vectorised readers (pyarrow) against the line-by-line ones.

Writes 1M rows (2,000 prompts x 500 samples: ``prompt_id``, ``reward``, ``gold``) as JSON Lines,
CSV and Parquet into a temporary folder, then runs each cell in a fresh process:
``jaxlimits.io.load`` alone; the whole ``jaxlimits frontier FILE`` command without a compilation
cache (compile time included) and with a warm one (the console script's, filled by a first run);
``frontier --stream`` and ``info --stream`` (chunks of 100,000 rows); and ``info``. "vectorised"
is the readers in use, "off" the line-by-line readers (``io.ARROW_MIN_BYTES = inf``). Reports
wall time and the process's peak memory above what it held after importing jaxlimits
(``ru_maxrss``), beside the file's size; ``load`` is also measured above a process that had
imported pyarrow and started JAX's CPU backend (fixed costs, not the data's: "data part").

    python benchmarks/bench_io.py [--rows 1000000] [--only csv] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import jaxlimits
from jaxlimits import cli, io
path, what, readers, pre = sys.argv[1:5]
if readers == "off":
    io.ARROW_MIN_BYTES = float("inf")
if pre == "pre":  # fixed costs paid before the baseline: pyarrow's import, JAX's CPU backend
    import pyarrow, pyarrow.csv, pyarrow.json, pyarrow.compute, pyarrow.parquet
    import jax.numpy as jnp
    jnp.zeros(1).block_until_ready()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if what == "load":
    io.load(path, score="gold")
else:
    import contextlib, os
    command = {"frontier": ["frontier"], "warm": ["frontier"], "stream": ["frontier", "--stream"],
               "info": ["info"], "info-stream": ["info", "--stream"]}[what]
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        assert cli.main([command[0], path, "--score-col", "gold", *command[1:]], cache=what == "warm") == 0
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mb": peak / 1024, "above_import_mb": (peak - base) / 1024}))
"""


def write(folder: Path, rows: int, only: str | None = None) -> dict:
    rng = np.random.default_rng(0)
    per = 500
    pid = np.repeat(np.arange(rows // per), per)
    r = np.round(rng.standard_normal(rows), 6)
    g = np.round(r + rng.standard_normal(rows) * 0.5, 6)
    paths = {"jsonl": folder / "s.jsonl", "csv": folder / "s.csv", "parquet": folder / "s.parquet"}
    if only:  # the one format measured
        paths = {only: paths[only]}
    if "jsonl" in paths:
        with open(paths["jsonl"], "w") as f:
            for a, b, c in zip(pid.tolist(), r.tolist(), g.tolist()):
                f.write(f'{{"prompt_id": {a}, "reward": {b}, "gold": {c}}}\n')
    if "csv" in paths:
        with open(paths["csv"], "w") as f:
            f.write("prompt_id,reward,gold\n")
            for a, b, c in zip(pid.tolist(), r.tolist(), g.tolist()):
                f.write(f"{a},{b},{c}\n")
    if "parquet" not in paths:
        return paths
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"prompt_id": pid, "reward": r, "gold": g}), paths["parquet"])
    except ImportError:
        del paths["parquet"]
    return paths


def write_apart(folder: Path, rows: int, only: str | None = None) -> dict:
    """:func:`write` in its own process: Linux keeps a process's peak RSS (``ru_maxrss``) across
    ``fork`` and ``exec``, so the cells' processes would start from this one's peak (1.4 GB while
    writing 10M rows) and measure nothing."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import bench_io; "
            "print(json.dumps({k: str(v) for k, v in bench_io.write(Path(sys.argv[2]), int(sys.argv[3]), "
            "sys.argv[4] or None).items()}))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(folder), str(rows), only or ""],
                         capture_output=True, text=True, check=True)
    return {k: Path(v) for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def child(path: Path, what: str, readers: str, pre: str = "-", cache: str = "") -> dict:
    env = {**os.environ, "JAXLIMITS_CACHE_DIR": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), what, readers, pre], capture_output=True,
                         text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--only", default=None, help="one format: jsonl, csv or parquet")
    ap.add_argument("--what", nargs="+", default=["load", "frontier", "warm", "stream", "info", "info-stream"],
                    help="cells: load frontier warm stream info info-stream")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each cell (fresh processes)")
    ap.add_argument("--readers", nargs="+", default=["vectorised", "off"], help="vectorised, off (line by line)")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}; {args.rows:,} rows")
    with tempfile.TemporaryDirectory() as d:
        paths = write_apart(Path(d), args.rows, args.only)
        cache = str(Path(d) / "xla")
        print(f"{'file':8} {'MB':>6} {'what':11} {'readers':11} {'time s':>7} {'peak MB':>8} {'above import':>13} "
              f"{'x file':>7}  load avg")
        for kind, path in paths.items():
            if args.only and kind != args.only:
                continue
            size = path.stat().st_size / 2**20
            for what in args.what:
                for readers in args.readers:
                    if (kind == "parquet" or what not in ("load", "frontier")) and readers == "off":
                        continue  # Parquet is read by pyarrow either way; --stream reads chunk by chunk
                    if what == "warm":
                        child(path, what, readers, cache=cache)  # fills the cache
                    for pre in ("-", "pre") if what == "load" and readers == "vectorised" else ("-",):
                        for _ in range(args.repeat):
                            r = child(path, what, readers, pre, cache=cache if what == "warm" else "")
                            label = what + (" (data)" if pre == "pre" else "")
                            print(f"{kind:8} {size:6.1f} {label:11} {readers:11} {r['wall_s']:7.2f} "
                                  f"{r['peak_mb']:8.0f} {r['above_import_mb']:13.0f} "
                                  f"{r['above_import_mb'] / size:7.1f}  {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
