"""Loading a 1,000,000-row file: the line-by-line readers against the vectorised ones (pyarrow).

Writes 1M rows (2,000 prompts x 500 samples: ``prompt_id``, ``reward``, ``gold``) as JSON Lines,
CSV and Parquet into a temporary folder, then in a fresh process per cell: ``jaxlimits.io.load``
alone, and the whole ``jaxlimits frontier FILE`` command, each with the vectorised readers and
with them turned off (``io.ARROW_MIN_BYTES = inf``), and ``jaxlimits frontier FILE --stream``
(chunks of 100,000 rows). Reports wall time and the process's peak
memory above what it held after importing jaxlimits (``ru_maxrss``), beside the file's size.

    python benchmarks/bench_io.py [--rows 1000000]
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
if sys.argv[3] == "off":
    io.ARROW_MIN_BYTES = float("inf")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if sys.argv[2] == "load":
    io.load(sys.argv[1], score="gold")
elif sys.argv[2] == "stream":
    import contextlib, os
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        assert cli.main(["frontier", sys.argv[1], "--score-col", "gold", "--stream"]) == 0
else:
    import contextlib, os
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        assert cli.main(["frontier", sys.argv[1], "--score-col", "gold"]) == 0
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mb": peak / 1024, "above_import_mb": (peak - base) / 1024}))
"""


def write(folder: Path, rows: int) -> dict:
    rng = np.random.default_rng(0)
    per = 500
    pid = np.repeat(np.arange(rows // per), per)
    r = np.round(rng.standard_normal(rows), 6)
    g = np.round(r + rng.standard_normal(rows) * 0.5, 6)
    paths = {"jsonl": folder / "s.jsonl", "csv": folder / "s.csv", "parquet": folder / "s.parquet"}
    with open(paths["jsonl"], "w") as f:
        for a, b, c in zip(pid.tolist(), r.tolist(), g.tolist()):
            f.write(f'{{"prompt_id": {a}, "reward": {b}, "gold": {c}}}\n')
    with open(paths["csv"], "w") as f:
        f.write("prompt_id,reward,gold\n")
        for a, b, c in zip(pid.tolist(), r.tolist(), g.tolist()):
            f.write(f"{a},{b},{c}\n")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"prompt_id": pid, "reward": r, "gold": g}), paths["parquet"])
    except ImportError:
        del paths["parquet"]
    return paths


def child(path: Path, what: str, readers: str) -> dict:
    env = {**os.environ, "JAXLIMITS_CACHE_DIR": ""}
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), what, readers], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--only", default=None, help="one format: jsonl, csv or parquet")
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}, "
          f"python {platform.python_version()}; {args.rows:,} rows")
    with tempfile.TemporaryDirectory() as d:
        paths = write(Path(d), args.rows)
        print(f"{'file':8} {'MB':>6} {'what':9} {'readers':11} {'time s':>7} {'peak MB':>8} {'above import':>13} "
              f"{'x file':>7}")
        for kind, path in paths.items():
            if args.only and kind != args.only:
                continue
            size = path.stat().st_size / 2**20
            for what in ("load", "frontier", "stream"):
                for readers in ("vectorised", "off"):
                    if (kind == "parquet" or what == "stream") and readers == "off":
                        continue  # Parquet is read by pyarrow either way; --stream reads chunk by chunk
                    r = child(path, what, readers)
                    print(f"{kind:8} {size:6.1f} {what:9} {readers:11} {r['wall_s']:7.2f} {r['peak_mb']:8.0f} "
                          f"{r['above_import_mb']:13.0f} {r['above_import_mb'] / size:7.1f}", flush=True)


if __name__ == "__main__":
    main()
