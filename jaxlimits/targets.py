"""Frontier solves on bucketed targets: one compiled solver for every number of targets in a bucket."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .samples import Samples

#: Frontier solves get their targets padded to a multiple of this (then a power of two), so
#: calls with a few more or fewer targets share one compilation of the solver.
TARGET_BUCKET = 8


def solve_bucketed(fn, samples: Samples, targets, **kwargs):
    """``fn(samples, targets, pooled=True, throw=False, **kwargs)`` on targets padded with zeros to
    a bucket size, sliced back: one compiled solver serves every number of targets in the bucket."""
    t = np.asarray(targets, np.float64).reshape(-1)
    size = max(TARGET_BUCKET, 1 << int(np.ceil(np.log2(max(len(t), 1)))))
    padded = np.zeros(size)
    padded[: len(t)] = t
    sol = fn(samples, jnp.asarray(padded, samples.dtype), pooled=True, throw=False, **kwargs)
    return jax.tree.map(lambda x: x[: len(t)] if np.ndim(x) else x, sol)
