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
