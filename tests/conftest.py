"""Test configuration: float64 available for the exactness tests (float32 tests set their dtype)."""

import os
from pathlib import Path

import jax
import pytest

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


@pytest.fixture(autouse=True, scope="session")
def _cli_cache_in_a_temporary_folder(tmp_path_factory):
    """The console script's compilation cache (``jaxlimits.cli``) goes to a temporary folder, not ~/.cache."""
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
