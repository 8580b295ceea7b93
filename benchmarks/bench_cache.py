"""The persistent compilation cache for library users: a fresh Python process, cold cache vs warm.

Runs the same script in new processes: ``jaxlimits.enable_compilation_cache(folder)``, then
``jl.frontier`` twice on 64 prompts x 256 draws. The first call pays compilation (or, with a warm
cache, loading the compiled program); the second is the in-process steady state. Rows: no cache,
cold cache (first process, writing it), warm cache (next process, reading it).

    python benchmarks/bench_cache.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile

SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import jaxlimits as jl
if sys.argv[1]:
    jl.enable_compilation_cache(sys.argv[1])
s = jl.Samples(np.random.default_rng(0).standard_normal((64, 256)).astype("float32"))
t1 = time.perf_counter()
jl.frontier(s).kl.block_until_ready()
t2 = time.perf_counter()
jl.frontier(s).kl.block_until_ready()
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "second_s": t3 - t2}))
"""


def run(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXLIMITS_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, cache], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as folder:
        rows = [("no cache", run("")), ("cold cache", run(folder)), ("warm cache", run(folder))]
    print(f"{'':12} {'import+data s':>14} {'1st frontier s':>15} {'2nd frontier s':>15}")
    for name, r in rows:
        print(f"{name:12} {r['import_s']:14.2f} {r['first_s']:15.2f} {r['second_s']:15.3f}")
    print(f"first call, warm vs cold cache: {rows[1][1]['first_s'] / rows[2][1]['first_s']:.1f}x faster")


if __name__ == "__main__":
    main()
