"""Test configuration: float64 available for the exactness tests (float32 tests set their dtype).

Speed: most of the suite's time is XLA compiling programs, not running them. Compilation is made
cheaper (quicker code generation, below), and compiled programs are kept on disk for the whole run
(JAX's persistent compilation cache, every program however quick to compile) in one folder shared
by the xdist workers and by every subprocess the tests start (CLI runs, notebook kernels, sharding
scripts inherit ``JAX_COMPILATION_CACHE_DIR``). A program compiled again, after the per-module
release below, in the other worker or in a subprocess, is read back instead of compiled. The folder
is ``.pytest_cache/d/jax-compilation-cache``, so later runs start warm (``pytest --cache-clear``
empties it; a fresh clone, as in CI, starts cold); with ``-p no:cacheprovider`` it is a temporary
folder removed at the end; a ``JAX_COMPILATION_CACHE_DIR`` set by the user is used as it is. Entries
are keyed by the program, the JAX/XLA versions and flags, so a stale one is never read.
"""

import os
import shutil
import tempfile
from pathlib import Path

# Before JAX starts its backend (and inherited by every subprocess): XLA:CPU's quicker code
# generation, LLVM's machine-code optimisation off and the elemental emitters instead of the newer
# fusion emitters. XLA's own program passes (fusion, simplification) still run in full and nothing
# turns on fast math; compilation takes about a third of the CPU time (tests/test_estimators.py:
# 131 s -> 42 s of CPU), and the tests' programs are small. Results may differ in the
# last bits (another instruction selection), far inside every tolerance. Setting either flag in
# XLA_FLAGS yourself (e.g. XLA_FLAGS=--xla_backend_optimization_level=2
# --xla_cpu_use_fusion_emitters=true) runs the suite with XLA's default code generation.
_FAST_CODEGEN = ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false")
if not any(flag.split("=")[0] in os.environ.get("XLA_FLAGS", "") for flag in _FAST_CODEGEN):
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *_FAST_CODEGEN]).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

#: The shared real-data folder, beside the repository (never copied into it).
DATA = Path(os.environ.get("JAXLIMITS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def data_file(name: str) -> Path:
    """Path to a shared data file; skips the test when it is absent."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


# Every compiled XLA:CPU executable holds about three memory mappings, and the jit caches keep
# them all alive: a whole run compiles enough of them to reach Linux's limit of 65530 mappings per
# process (vm.max_map_count), where the next compilation dies with a segmentation fault. The
# caches are therefore released after every test module, and after any test that leaves more
# than MAX_MAPPINGS mappings behind.
MAX_MAPPINGS = 20_000


def _mappings() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux: no such limit to guard
        return 0


def pytest_configure(config):
    """One persistent compilation cache for the run (see the module docstring)."""
    # JAX writes entries in place: a read that meets one half-written by the other worker warns and
    # compiles instead (warnings are errors here, so the cache's own fallback is let through).
    for what in ("reading", "writing"):
        config.addinivalue_line("filterwarnings", f"ignore:Error {what} persistent compilation cache entry:UserWarning")
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if path is None:  # chosen here, in the controlling process; xdist workers inherit the variables
        cache = getattr(config, "cache", None)
        if cache is not None:
            path = str(cache.mkdir("jax-compilation-cache"))
        else:
            path = tempfile.mkdtemp(prefix="jaxlimits-test-xla-")
            config.add_cleanup(lambda: shutil.rmtree(path, ignore_errors=True))
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1)))


@pytest.fixture(autouse=True, scope="session")
def _cli_cache_in_a_temporary_folder(tmp_path_factory):
    """The console script's own cache setting (``JAXLIMITS_CACHE_DIR``) points to a temporary folder, not
    ~/.cache (the console script uses the run's ``JAX_COMPILATION_CACHE_DIR`` while it is set)."""
    os.environ.setdefault("JAXLIMITS_CACHE_DIR", str(tmp_path_factory.mktemp("xla-cache")))
    yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_code_per_module():
    yield
    jax.clear_caches()


@pytest.fixture(autouse=True)
def _bound_compiled_code():
    yield
    if _mappings() > MAX_MAPPINGS:
        jax.clear_caches()
