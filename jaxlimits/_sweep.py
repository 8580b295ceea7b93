"""Tiling: runs the kernel over ``[prompts, samples, betas]`` under a memory budget.

The cube is never materialised (DESIGN.md: a naive ``jit(vmap)`` builds it, 5 GB at
10,000 x 1,024 x 64). Prompts are processed in tiles with ``lax.map``; when one prompt's
``[betas, samples]`` slab does not fit, its samples are processed in chunks with ``lax.scan``
and the chunk sums merged (:func:`jaxlimits.moments.merge`). Each tile is finalised at once, so
only ``[prompts, betas]`` results (or their pooled sums) leave the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import moments, native, psis

#: Default working-memory budget of a sweep, in bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Size of the exponential slab of one tile on a CPU, which keeps it in cache (DESIGN.md
#: measurements). ``None``: that on a CPU; on an accelerator the budget alone bounds the slab (each
#: tile is one sequential step there: fewer, larger tiles). Set an int to force a size anywhere.
TILE_BYTES: int | None = None
_CPU_TILE_BYTES = 4 * 2**20
# Temporaries per element of the slab (exponent, exp, its square, products), a safe estimate.
COPIES = 6
# Where the fused CPU kernel evaluates the sums (jaxlimits.native) there is no slab: a tile holds
# copies of its prompts' samples (rows, moments) and of their betas (the finalised fields).
FUSED_SAMPLE_COPIES = 16
FUSED_BETA_COPIES = 256


class Plan(NamedTuple):
    """Static tile sizes: prompts per tile, samples per chunk, and the padded sizes."""

    tile_prompts: int
    chunk_samples: int
    padded_prompts: int
    padded_samples: int


def plan(num_prompts: int, num_samples: int, num_betas: int, itemsize: int, memory_budget: int | None,
         fused: bool = False, prompt_bytes: int = 0) -> Plan:
    """Chooses tile sizes so the slab of a tile fits the cache target and the budget.

    ``fused``: the tiles' sums come from :func:`jaxlimits.moments.block_sums`, so where the fused
    CPU kernel runs (:func:`jaxlimits.native.runs_for`) no exponential slab exists: tiles are then
    as large as the budget allows for the tile's other arrays (at most :func:`max_tile_prompts`),
    which saves the per-tile overhead (measured: 16 -> 512 prompts, 1.74x -> 1.23x the exp roofline).
    ``prompt_bytes``: more working memory per prompt of a fused tile (the k-hat fit's grid).

    Raises:
      ValueError: when even one prompt, one sample chunk of 128 and all betas exceed the budget.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else positive_int(memory_budget, "memory_budget")
    if fused and TILE_BYTES is None and native.runs_for(num_betas):
        per_beta = FUSED_BETA_COPIES * num_betas * itemsize
        row = FUSED_SAMPLE_COPIES * num_samples * itemsize + per_beta + int(prompt_bytes)
        if row <= budget:
            chunk = num_samples
            tile = max(1, min(num_prompts, budget // row, max_tile_prompts()))
        else:
            tile = 1
            room = budget - per_beta - int(prompt_bytes)
            chunk = min(num_samples, max(128, room // (FUSED_SAMPLE_COPIES * itemsize)))
            need = FUSED_SAMPLE_COPIES * chunk * itemsize + per_beta  # the sums' own (k-hat sizes tiles only)
            if need > budget:
                raise ValueError(
                    f"memory_budget={budget} bytes is too small for {num_betas} betas: one prompt with a "
                    f"chunk of {chunk} samples needs {need} bytes; raise the budget or pass fewer betas at a time"
                )
    else:
        slab = tile_bytes(budget)
        row = num_betas * num_samples * itemsize  # one prompt's slab
        if row <= slab:
            chunk = num_samples
            tile = max(1, min(num_prompts, slab // row, max_tile_prompts()))
        else:
            tile = 1
            chunk = max(128, slab // (num_betas * itemsize))
            chunk = min(chunk, num_samples)
            need = COPIES * num_betas * chunk * itemsize
            if need > budget:
                raise ValueError(
                    f"memory_budget={budget} bytes is too small for {num_betas} betas: one chunk of "
                    f"{chunk} samples needs {need} bytes; raise the budget or pass fewer betas at a time"
                )
    padded_p = -(-num_prompts // tile) * tile
    padded_n = -(-num_samples // chunk) * chunk
    return Plan(tile, chunk, padded_p, padded_n)


def kernel_plan(num_prompts: int, num_samples: int, num_betas: int, itemsize: int, memory_budget: int | None,
                *, counts: bool, khat: bool = True) -> Plan:
    """:func:`plan` of a sweep through the one kernel (:func:`jaxlimits.moments.block_sums`, fused where
    the CPU kernel runs), each tile's prompts also holding the PSIS k-hat fit's grid when ``khat``
    (:func:`jaxlimits.psis.fit_bytes`; ``counts``: the samples carry counts)."""
    prompt_bytes = psis.fit_bytes(num_samples, num_betas, counts, itemsize) if khat else 0
    return plan(num_prompts, num_samples, num_betas, itemsize, memory_budget, fused=True, prompt_bytes=prompt_bytes)


def tile_bytes(budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """The exponential slab a tile aims at: a CPU's cache, on an accelerator the budget's share."""
    if TILE_BYTES is not None:
        target = int(TILE_BYTES)
    else:
        target = _CPU_TILE_BYTES if jax.default_backend() == "cpu" else budget
    return max(1, min(target, budget // COPIES))


def max_tile_prompts() -> int:
    """Most prompts in one tile: 512 on a CPU (cache), 65,536 on an accelerator (launch overhead)."""
    return 512 if jax.default_backend() == "cpu" else 65_536


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ValueError naming ``name`` (None, NaN, text, 2.5)."""
    ok = isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = bool(np.isfinite(value)) and float(value) == int(value) and int(value) >= minimum
    if not ok:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def pad_prompts(x, target):
    """Pads the prompt axis by repeating the last prompt (finite values; results are dropped)."""
    if x is None or x.shape[0] == target:
        return x
    return jnp.pad(x, [(0, target - x.shape[0])] + [(0, 0)] * (x.ndim - 1), mode="edge")


def pad_samples(x, target, fill):
    if x is None or x.shape[1] == target:
        return x
    return jnp.pad(x, [(0, 0), (0, target - x.shape[1])], constant_values=fill)


def sweep(samples, lam, p: Plan, tile_fn: Callable, reduce: Callable | None = None, init=None,
          reference_fn: Callable | None = None, combine: Callable | None = None, with_samples: bool = False):
    """Applies ``tile_fn(ref, sums, lam_tile)`` to every tile of prompts.

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]``.
      lam: ``[P, B]`` inverse temperatures.
      p: the :class:`Plan`.
      tile_fn: maps ``(Reference, Sums, lam)`` of a tile to a pytree of ``[t, ...]`` arrays.
      reduce: optional ``(carry, out, valid) -> carry`` to fold tiles instead of stacking them
        (``valid`` is ``[t]``: False for padding prompts).
      init: the initial carry of ``reduce``.
      reference_fn: optional ``(rewards, scores, log_weights, counts, mask) -> Reference`` of a
        tile (default :func:`jaxlimits.moments.reference`; a sample-sharded sweep computes it
        across devices).
      combine: optional ``Sums -> Sums`` applied to a tile's sums before ``tile_fn`` (a
        sample-sharded sweep merges the devices' sums there).
      with_samples: also pass the tile's padded arrays ``(rewards, scores, log_weights, counts,
        mask)`` to ``tile_fn`` as a fourth argument (for statistics that are not sums, e.g. k-hat).

    Returns:
      The stacked ``[P, ...]`` outputs, or the final carry when ``reduce`` is given.
    """
    num_p, num_n = samples.rewards.shape
    arrays = [samples.rewards, samples.scores, samples.log_weights, samples.counts, samples.mask]
    if p.padded_samples != num_n:
        mask = samples.mask if samples.mask is not None else jnp.ones((num_p, num_n), bool)
        arrays[4] = mask
        fills = [0, 0, 0, 1, False]
        arrays = [pad_samples(a, p.padded_samples, f) for a, f in zip(arrays, fills)]
    arrays = [pad_prompts(a, p.padded_prompts) for a in arrays]
    lam = pad_prompts(lam, p.padded_prompts)
    t = p.tile_prompts
    nt = p.padded_prompts // t
    tiles = [None if a is None else a.reshape((nt, t) + a.shape[1:]) for a in arrays]
    lam_tiles = lam.reshape(nt, t, lam.shape[-1])
    prompt_ok = (jnp.arange(p.padded_prompts) < num_p).reshape(nt, t)
    has_scores = samples.scores is not None

    def one_tile(args):
        tile_arrays, lam_t = args
        ref = (moments.reference if reference_fn is None else reference_fn)(*tile_arrays)
        rw = moments.rows(ref, *tile_arrays)
        if p.chunk_samples == p.padded_samples:
            sums = moments.block_sums(rw, lam_t, has_scores=has_scores)
        else:
            nc = p.padded_samples // p.chunk_samples
            chunks = jax.tree.map(lambda a: jnp.moveaxis(a.reshape(t, nc, p.chunk_samples), 1, 0), rw)

            def body(carry, rw_c):
                s = moments.block_sums(rw_c, lam_t, has_scores=has_scores)
                return (s if carry is None else moments.merge(carry, s)), None

            first = jax.tree.map(lambda a: a[0], chunks)
            rest = jax.tree.map(lambda a: a[1:], chunks)
            sums, _ = jax.lax.scan(body, body(None, first)[0], rest)
        if combine is not None:
            sums = combine(sums)
        if with_samples:
            return tile_fn(ref, sums, lam_t, tile_arrays)
        return tile_fn(ref, sums, lam_t)

    if reduce is None:
        out = jax.lax.map(one_tile, (tiles, lam_tiles))
        return jax.tree.map(lambda a: a.reshape((nt * t,) + a.shape[2:])[:num_p], out)

    def fold(carry, args):
        tile_args, ok = args
        return reduce(carry, one_tile(tile_args), ok), None

    carry, _ = jax.lax.scan(fold, init, ((tiles, lam_tiles), prompt_ok))
    return carry


def as_lambda(betas, num_prompts: int, dtype) -> jax.Array:
    """``[P, B]`` inverse temperatures from betas of shape ``[B]`` or ``[P, B]``.

    Raises:
      ValueError: (eagerly) for a beta whose inverse ``dtype`` cannot hold (see :func:`check_range`).
    """
    if not isinstance(betas, jax.core.Tracer):
        check_range(betas, dtype)
    b = jnp.asarray(betas, dtype=dtype)
    if b.ndim == 0:
        b = b[None]
    if b.ndim == 1:
        b = jnp.broadcast_to(b[None, :], (num_prompts, b.shape[0]))
    return 1 / b


def numbers(value, name: str) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError naming ``name`` (strings, None, objects)."""
    if isinstance(value, jax.core.Tracer):
        return value
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {value!r}") from None
    return arr


def check_range(betas, dtype) -> None:
    """Every beta and ``lambda = 1/beta`` are normal numbers of ``dtype``, with room for ``2 lambda`` (eager).

    float32 allows ``1.2e-38 <= beta <= 8.5e37``: outside, ``beta``, ``lambda`` or the ``2 lambda``
    of the second-order sums would round to 0 or infinity and the statistics to NaN.
    """
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        return
    info = np.finfo(dt)
    b = numbers(betas, "betas")
    lo, hi = 4 / float(info.max), 1 / float(info.tiny)
    bad = np.isfinite(b) & (b > 0) & ((b < lo) | (b > hi))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if b.ndim else ()
        raise ValueError(
            f"betas{list(idx)} = {float(b[idx]):.6g} is outside what {dt.name} (the samples' dtype) can "
            f"compute with: beta and 2/beta must be normal {dt.name} numbers, {lo:.3g} <= beta <= {hi:.3g}; "
            "rescale the rewards, or use float64 (jax.config.update('jax_enable_x64', True))"
        )


def check_betas(betas, num_prompts: int, dtype=None) -> None:
    """Eager validation of a beta grid (skipped under tracing); ``dtype``: also check its range."""
    if isinstance(betas, jax.core.Tracer):
        return
    b = numbers(betas, "betas")
    if b.ndim > 2 or b.size == 0:
        raise ValueError(f"betas must be a non-empty array of shape [betas] or [prompts, betas], got shape {b.shape}")
    if b.ndim == 2 and b.shape[0] != num_prompts:
        raise ValueError(f"per-prompt betas have {b.shape[0]} rows but the samples have {num_prompts} prompts")
    bad = ~np.isfinite(b) | (b <= 0)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0]) if b.ndim else ()
        raise ValueError(f"betas{list(idx)} = {float(b[idx])} is not a positive finite number (beta > 0 is required)")
    if dtype is not None:
        check_range(b, dtype)
