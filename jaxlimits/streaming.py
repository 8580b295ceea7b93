r"""Streaming statistics: ``init / update / merge / finalize``, and out-of-core sweeps over files.

Samples often arrive in pieces: files read chunk by chunk, samples generated batch by batch,
shards on different devices or hosts. The tilted statistics of MATH.md §3 are functions of a few
per-(prompt, beta) sums (:mod:`jaxlimits.moments`), so a prompt's samples can be summarised piece
by piece and the summaries combined **exactly**:

* an :class:`Accumulator` holds, per prompt, the running reference (largest reward, weighted
  mean of the rewards and scores, smallest reward, largest log-weight, total weight) and the
  :class:`~jaxlimits.moments.Sums` taken relative to it;
* :func:`update` folds a chunk of samples in; :func:`merge` combines two accumulators of disjoint
  samples of the same prompts; both first **rebase** every summary to the merged reference:

  .. math::

     \sum_i v_i e^{\lambda (r_i - m)} f_i = e^{\lambda (m_a - m)} \sum_i v_i e^{\lambda (r_i - m_a)} f_i,
     \qquad m = \max(m_a, m_b),

  (the log-sum-exp rule: the shift moves into the stored log-scale, nothing overflows), and the
  monomials ``f = x'^i y^j`` of the shifted reward ``x' = r - m`` and centred score ``y = s - s̄``
  and the small-tilt moments ``Σ v x̃^n y^j`` of ``x̃ = (r - r̄)/R`` are re-expanded by the
  binomial theorem (``x' = x'_a + (m_a - m)``: both terms are ``<= 0``, no cancellation);
* :func:`finalize` gives :class:`~jaxlimits.TiltStats` equal to :func:`jaxlimits.tilt` on all the
  samples at once, to rounding (tested: 1e-12 relative in float64 on the estimates; the standard
  errors, differences of quadratic forms, to 1e-11).

``merge`` is associative and commutative (to rounding), and the empty accumulator of :func:`init`
is its identity, so chunks, devices and hosts may be combined in any order or tree.

:func:`sweep_files` runs a frontier over long-format files (JSONL, CSV, Parquet, NPZ, or a
directory of them) read ``chunk_rows`` rows at a time; with rows grouped by prompt (the usual
layout) only the prompts of the current chunk are held, so peak memory is bounded by the chunk
size, not by the data size.

Examples:
  >>> import numpy as np, jaxlimits as jl
  >>> from jaxlimits import streaming
  >>> r = np.random.default_rng(0).standard_normal((3, 40))
  >>> acc = streaming.init(3, [2.0, 1.0])
  >>> for part in np.split(r, 4, axis=1):          # 4 chunks of 10 samples per prompt
  ...     acc = streaming.update(acc, jl.Samples(part))
  >>> st = streaming.finalize(acc)
  >>> bool(np.allclose(st.kl, jl.tilt(jl.Samples(r), [2.0, 1.0]).kl, rtol=1e-5))
  True
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, moments
from .frontier import Frontier, default_betas, from_pool, pool_of
from .io import DataError, Table, expand_paths, iter_chunks  # noqa: F401  (the chunk readers live in io)
from .samples import Samples, check_magnitudes, check_samples

Array = jax.Array

# ----------------------------------------------------------------------------------------------
# The accumulator


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["lam", "ref", "r_min", "mass", "sums"],
    meta_fields=["has_scores", "weighted", "betas"],
)
@dataclasses.dataclass(frozen=True)
class Accumulator:
    """Mergeable summary of the samples of ``P`` prompts seen so far, at ``B`` betas (a pytree).

    Attributes:
      lam: ``[P, B]`` inverse temperatures ``1 / beta``.
      ref: :class:`~jaxlimits.moments.Reference` ``[P]``: the running largest reward ``r_max``,
        weighted means ``r_bar``, ``s_bar``, scale ``R = max |r - r_bar|`` and largest
        log-weight ``log_w_ref``; ``sums`` are relative to it.
      r_min: ``[P]`` smallest reward seen (``+inf`` before any sample).
      mass: ``[P]`` total base weight ``sum v`` relative to ``exp(log_w_ref)`` (0 before any sample).
      sums: :class:`~jaxlimits.moments.Sums` of the samples seen.
      has_scores: static: the samples carry scores distinct from the rewards.
      weighted: static: the samples carry importance log-weights.
      betas: static: the shared grid of betas as a tuple (None for per-prompt betas); it lets the
        kernel share exponentials between ``lam`` and ``2 lam``.
    """

    lam: Array
    ref: moments.Reference
    r_min: Array
    mass: Array
    sums: moments.Sums
    has_scores: bool = False
    weighted: bool = False
    betas: tuple | None = None

    @property
    def num_prompts(self) -> int:
        return int(self.lam.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.lam.shape[1])


def init(num_prompts: int, betas, *, dtype=None, has_scores: bool = False, weighted: bool = False) -> Accumulator:
    """The empty accumulator of ``num_prompts`` prompts (the identity of :func:`merge`).

    Args:
      num_prompts: ``P``.
      betas: ``[B]`` shared or ``[P, B]`` per-prompt positive KL penalties.
      dtype: float dtype of the sums (default: float64 under ``jax_enable_x64``, else float32).
      has_scores: the chunks will carry scores (``Samples.scores``) distinct from the rewards.
      weighted: the chunks will carry importance log-weights (``Samples.log_weights``).

    Returns:
      An :class:`Accumulator` with no samples.

    Raises:
      ValueError: for a beta that is not positive and finite, or a bad ``num_prompts``.
    """
    num_prompts = _sweep.positive_int(num_prompts, "num_prompts")
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    _sweep.check_betas(betas, num_prompts, dtype)
    lam = _sweep.as_lambda(betas, num_prompts, dtype)
    shared = None
    if not isinstance(betas, jax.core.Tracer) and np.ndim(betas) <= 1:
        shared = tuple(float(b) for b in np.atleast_1d(np.asarray(betas, dtype=np.float64)))
    return _empty(lam, has_scores, weighted, shared)


def _empty(lam, has_scores, weighted, betas) -> Accumulator:
    p, b = lam.shape
    dtype = lam.dtype
    zero = jnp.zeros((p,), dtype)
    ref = moments.Reference(
        r_bar=zero, s_bar=zero, r_max=jnp.full((p,), -jnp.inf, dtype), r_scale=jnp.ones((p,), dtype),
        log_w_ref=jnp.full((p,), -jnp.inf, dtype) if weighted else zero,
    )
    sums = moments.empty_sums(p, b, dtype, has_scores=has_scores, weighted=weighted)
    return Accumulator(lam, ref, jnp.full((p,), jnp.inf, dtype), zero, sums, has_scores, weighted, betas)


class _Ref(NamedTuple):
    """The mergeable reference of a set of samples (per prompt, ``[P]``)."""

    log_w_ref: Array
    mass: Array
    r_bar: Array
    s_bar: Array
    r_max: Array
    r_min: Array


def _chunk_ref(arrays, weighted: bool, has_scores: bool) -> _Ref:
    """The reference quantities of a chunk alone (prompts without a valid sample: mass 0)."""
    rewards, scores, log_weights, counts, mask = arrays
    valid, m, log_w = moments.valid_parts(rewards, scores, log_weights, counts, mask)
    if weighted:
        ref_w = jnp.max(jnp.where(valid, log_w, -jnp.inf), axis=1)
        safe = jnp.where(jnp.isfinite(ref_w), ref_w, 0)
        v = m * jnp.where(valid, jnp.exp(log_w - safe[:, None]), 0)
    else:
        ref_w = jnp.zeros(rewards.shape[:1], rewards.dtype)
        v = m
    mass = v.sum(axis=1)
    some = mass > 0
    den = jnp.where(some, mass, 1)
    r_bar = jnp.where(some, (v * jnp.where(valid, rewards, 0)).sum(axis=1) / den, 0)
    if has_scores:
        s_bar = jnp.where(some, (v * jnp.where(valid, scores, 0)).sum(axis=1) / den, 0)
    else:
        s_bar = r_bar
    r_max = jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=1)
    r_min = jnp.min(jnp.where(valid, rewards, jnp.inf), axis=1)
    return _Ref(ref_w, mass, r_bar, s_bar, r_max, r_min)


def _merge_ref(a: _Ref, b: _Ref) -> _Ref:
    """Combines the references of disjoint sample sets (exact where one side is empty)."""
    lw = jnp.maximum(a.log_w_ref, b.log_w_ref)
    fin = jnp.isfinite(lw)
    scale = lambda x: jnp.where(fin & jnp.isfinite(x), jnp.exp(x - jnp.where(fin, lw, 0)), 0)  # noqa: E731
    wa = jnp.where(a.mass > 0, a.mass * scale(a.log_w_ref), 0)
    wb = jnp.where(b.mass > 0, b.mass * scale(b.log_w_ref), 0)
    mass = wa + wb
    den = jnp.where(mass > 0, mass, 1)

    def mean(xa, xb):
        mixed = (wa * xa + wb * xb) / den
        return jnp.where(wa == 0, xb, jnp.where(wb == 0, xa, mixed))

    return _Ref(lw, mass, mean(a.r_bar, b.r_bar), mean(a.s_bar, b.s_bar),
                jnp.maximum(a.r_max, b.r_max), jnp.minimum(a.r_min, b.r_min))


def _to_reference(q: _Ref) -> moments.Reference:
    """The kernel's :class:`~jaxlimits.moments.Reference` (``R`` as in :func:`moments.reference`)."""
    some = q.mass > 0
    r_scale = jnp.maximum(jnp.abs(q.r_max - q.r_bar), jnp.abs(q.r_bar - q.r_min))
    r_scale = jnp.where(some & (r_scale > 0), r_scale, 1)
    return moments.Reference(q.r_bar, q.s_bar, q.r_max, r_scale, q.log_w_ref)


def _state_ref(acc: Accumulator) -> _Ref:
    return _Ref(acc.ref.log_w_ref, acc.mass, acc.ref.r_bar, acc.ref.s_bar, acc.ref.r_max, acc.r_min)


def _binomial(n: int) -> np.ndarray:
    return np.array([[math.comb(i, k) for k in range(n)] for i in range(n)], dtype=np.float64)


def _shift_matrix(monos, d, e, has_scores: bool):
    """``[P, k, k]``: the monomials ``x^i y^j`` of ``(x + d, y + e)`` in terms of those of ``(x, y)``."""
    k = len(monos)
    rows = []
    for i, j in monos:
        row = [jnp.zeros_like(d)] * k
        for a in range(i + 1):
            for b in range(j + 1):
                if (a, b) not in monos:
                    raise AssertionError("monomial sets must be closed downwards")
                coef = math.comb(i, a) * math.comb(j, b) * d ** (i - a) * e ** (j - b)
                q = monos.index((a, b))
                row[q] = row[q] + coef
        rows.append(jnp.stack(row, axis=-1))
    return jnp.stack(rows, axis=-2)


def _rebase(acc: Accumulator, new: moments.Reference) -> moments.Sums:
    """The sums of ``acc`` re-expressed relative to the reference ``new`` (exact up to rounding).

    With ``d = r_max - r_max'`` (``<= 0``), ``e`` the shift of the score centre, ``dw`` the shift of
    the log-weight reference, ``alpha = R / R'`` and ``delta = (r_bar - r_bar') / R'``:
    tilted log-scales move by ``lam d + dw`` (``2 lam d + 2 dw`` for the second order), the
    monomials of ``(x', y)`` by the binomial theorem, and the moments of ``x~`` by
    ``x~' = alpha x~ + delta``.
    """
    old, s, lam = acc.ref, acc.sums, acc.lam
    some = acc.mass > 0
    z = lambda x: jnp.where(some, x, 0)  # noqa: E731  (empty states keep zeros, no inf * 0)
    d = z(old.r_max - new.r_max)
    dw = z(old.log_w_ref - new.log_w_ref)
    if acc.has_scores:
        e = z(old.s_bar - new.s_bar)
    else:
        e = z(old.r_bar - new.r_bar)
    # R = 1 is only a stand-in where the rewards so far tie (every x~ is then 0): its ratio to a
    # small new R would be raised to the 24th power below (inf, then inf * 0 = NaN). alpha = 0
    # is exact there; otherwise the new set holds the old one, so R' >= R / 2 and alpha <= 2.
    tied = acc.r_min >= old.r_max
    alpha = jnp.where(some & ~tied, old.r_scale / new.r_scale, jnp.where(some, 0, 1))
    delta = z((old.r_bar - new.r_bar) / new.r_scale)
    first, second = moments.monomials(acc.has_scores)
    t1 = _shift_matrix(first, d, e, acc.has_scores)
    t2 = _shift_matrix(second, d, e, acc.has_scores)
    prec = jax.lax.Precision.HIGHEST
    mono = lambda t, x: jnp.einsum("pij,pbj->pbi", t, x, precision=prec)  # noqa: E731
    shift = lambda c, k_lam, k_w: c + k_lam * lam * d[:, None] + k_w * dw[:, None]  # noqa: E731
    c1 = shift(s.log_scale, 1, 1)
    c2 = shift(s.log_scale2, 2, 2)
    tilted1 = mono(t1, s.tilted1)
    tilted2 = mono(t2, s.tilted2)
    cw = tw = None
    if s.tilted_w is not None:
        cw = shift(s.log_scale_w, 1, 2)
        tw = mono(t2, s.tilted_w)
    ew, ew2 = jnp.exp(dw), jnp.exp(2 * dw)
    base1 = jnp.einsum("pij,pj->pi", t1, s.base1, precision=prec) * ew[:, None]
    base2 = jnp.einsum("pij,pj->pi", t2, s.base2, precision=prec) * ew2[:, None]
    # moments: x~' = alpha x~ + delta (binomial in n), y' = y + e (binomial in j, scores only)
    n = s.moments1.shape[1]
    binom = jnp.asarray(_binomial(n), lam.dtype)
    apow = moments.powers_of(alpha, n)  # [P, n]
    dpow = moments.powers_of(delta, n)
    idx = np.arange(n)
    lower = idx[:, None] >= idx[None, :]
    dgap = jnp.where(lower, dpow[:, np.clip(idx[:, None] - idx[None, :], 0, n - 1)], 0)  # [P, n, k]
    a_mat = binom * apow[:, None, :] * dgap
    if acc.has_scores:
        one, zero = jnp.ones_like(e), jnp.zeros_like(e)
        y_mat = jnp.stack([
            jnp.stack([one, zero, zero], -1),
            jnp.stack([e, one, zero], -1),
            jnp.stack([e * e, 2 * e, one], -1),
        ], -2)  # [P, j', j]
    else:
        y_mat = jnp.ones(e.shape + (1, 1), lam.dtype)

    def mom(m, w):
        if m is None:
            return None
        return jnp.einsum("pnk,pkj,plj->pnl", a_mat, m, y_mat, precision=prec) * w[:, None, None]

    top = jnp.where(new.r_max > old.r_max, -jnp.inf, s.log_top_mass + dw)
    return moments.Sums(c1, tilted1, c2, tilted2, cw, tw, base1, base2,
                        mom(s.moments1, ew), mom(s.moments2, ew2), s.draws, top)


def _chunk_arrays(chunk: Samples, acc: Accumulator):
    return (chunk.rewards.astype(acc.lam.dtype),
            None if chunk.scores is None else chunk.scores.astype(acc.lam.dtype),
            None if chunk.log_weights is None else chunk.log_weights.astype(acc.lam.dtype),
            None if chunk.counts is None else chunk.counts.astype(acc.lam.dtype),
            chunk.mask)


def _update_impl(acc: Accumulator, arrays) -> Accumulator:
    q = _merge_ref(_state_ref(acc), _chunk_ref(arrays, acc.weighted, acc.has_scores))
    new = _to_reference(q)
    old_sums = _rebase(acc, new)
    # prompts still without a sample have infinite references: any finite one serves their rows
    finite = lambda x: jnp.where(jnp.isfinite(x), x, 0)  # noqa: E731
    rw = moments.rows(new._replace(r_max=finite(new.r_max), log_w_ref=finite(new.log_w_ref)), *arrays)
    chunk_sums = moments.block_sums(rw, acc.lam, has_scores=acc.has_scores)
    sums = moments.merge(old_sums, chunk_sums)
    return dataclasses.replace(acc, ref=new, r_min=q.r_min, mass=q.mass, sums=sums)


def _tiles_of(num_prompts: int, num_samples: int, num_evals: int, itemsize: int) -> int:
    """Prompts per tile: the one planner's (:func:`jaxlimits._sweep.plan`, default budget; a chunk's
    samples stay in one block, its memory bounded by the chunk itself)."""
    return _sweep.plan(num_prompts, num_samples, num_evals, itemsize, None, fused=True).tile_prompts


def _map_prompts(fn, tree, num_prompts: int, tile: int):
    """``fn`` over tiles of ``tile`` prompts of every ``[P, ...]`` leaf (``lax.map``; P padded)."""
    if tile >= num_prompts:
        return fn(tree)
    padded = -(-num_prompts // tile) * tile
    nt = padded // tile
    tiles = jax.tree.map(lambda a: _sweep.pad_prompts(a, padded).reshape((nt, tile) + a.shape[1:]), tree)
    out = jax.lax.map(fn, tiles)
    return jax.tree.map(lambda a: a.reshape((padded,) + a.shape[2:])[:num_prompts], out)


@jax.jit
def _update(acc: Accumulator, arrays) -> Accumulator:
    n_eval = acc.num_betas  # exp(lam x') slab (its square is among _sweep.COPIES)
    tile = _tiles_of(acc.num_prompts, arrays[0].shape[1], n_eval, acc.lam.dtype.itemsize)
    return _map_prompts(lambda t: _update_impl(t[0], t[1]), (acc, arrays), acc.num_prompts, tile)


def _check_chunk(acc: Accumulator, chunk: Samples) -> None:
    check_samples(chunk, "update", "chunk")
    if chunk.num_prompts != acc.num_prompts:
        raise ValueError(
            f"the chunk has {chunk.num_prompts} prompts but the accumulator has {acc.num_prompts}; a chunk "
            "holds some samples of every prompt (mask out prompts without samples in it)"
        )
    if chunk.has_scores != acc.has_scores:
        want = "with" if acc.has_scores else "without"
        raise ValueError(f"the accumulator was made {want} scores (init(..., has_scores={acc.has_scores}))"
                         f" but the chunk {'has' if chunk.has_scores else 'has no'} scores")
    if (chunk.log_weights is not None) != acc.weighted:
        raise ValueError(f"the accumulator was made with weighted={acc.weighted} but the chunk "
                         f"{'has' if chunk.log_weights is not None else 'has no'} log_weights")


def update(acc: Accumulator, chunk: Samples) -> Accumulator:
    """Folds a chunk of samples of the same ``P`` prompts into the accumulator.

    A chunk is a :class:`~jaxlimits.Samples` ``[P, n]`` holding any number of further samples of
    each prompt (mask out what a prompt lacks; a prompt may have none in a chunk). Jit-compiled
    (one compilation per chunk shape); the ``[P, n, B]`` cube is processed in prompt tiles.

    Args:
      acc: the :class:`Accumulator`.
      chunk: the new samples.

    Returns:
      The accumulator of the samples seen so far and the chunk.

    Raises:
      ValueError: a chunk of the wrong number of prompts, or with scores or log-weights where the
        accumulator has none (or the reverse).
    """
    _check_chunk(acc, chunk)
    return _update(acc, _chunk_arrays(chunk, acc))


def _merge_impl(a: Accumulator, b: Accumulator) -> Accumulator:
    q = _merge_ref(_state_ref(a), _state_ref(b))
    new = _to_reference(q)
    sums = moments.merge(_rebase(a, new), _rebase(b, new))
    return dataclasses.replace(a, ref=new, r_min=q.r_min, mass=q.mass, sums=sums)


@jax.jit
def _merge(a: Accumulator, b: Accumulator) -> Accumulator:
    return _merge_impl(a, b)


def merge(a: Accumulator, b: Accumulator) -> Accumulator:
    r"""Combines the accumulators of two disjoint sets of samples of the same prompts (exact).

    Both are rebased to the merged reference (MATH.md §3: the log-sum-exp rule
    :math:`S = e^{c_a - c} S_a + e^{c_b - c} S_b`, :math:`c = \max(c_a, c_b)`) and added.
    Associative and commutative up to rounding; :func:`init`'s empty accumulator is the identity.

    Raises:
      ValueError: when the two were made for different prompts, betas, scores or weights.
    """
    if (a.lam.shape, a.has_scores, a.weighted, a.betas) != (b.lam.shape, b.has_scores, b.weighted, b.betas):
        raise ValueError(
            "cannot merge accumulators made differently: "
            f"shapes {a.lam.shape} vs {b.lam.shape}, has_scores {a.has_scores} vs {b.has_scores}, "
            f"weighted {a.weighted} vs {b.weighted}, betas {a.betas} vs {b.betas}"
        )
    return _merge(a, b)


@functools.partial(jax.jit, static_argnames=("exact", "bias_correction"))
def _finalize(acc: Accumulator, exact: bool, bias_correction: bool = True) -> estimators.TiltStats:
    def fn(t):
        ref, sums, lam = t
        return estimators.stats_of_tile(ref, sums, lam, has_scores=acc.has_scores, exact=exact,
                                        bias_correction=bias_correction)

    tile = max(1, min(acc.num_prompts, 2**20 // max(1, acc.num_betas * 64)))
    return _map_prompts(fn, (acc.ref, acc.sums, acc.lam), acc.num_prompts, tile)


def finalize(acc: Accumulator, *, exact: bool = False, bias_correction: bool = True) -> estimators.TiltStats:
    """The tilted statistics of every prompt at every beta, as :func:`jaxlimits.tilt` gives them.

    The bias terms are sums like the others and merge exactly; PSIS k-hat needs a prompt's largest
    weights, which the accumulator does not keep: ``khat`` is NaN and the reasons lack ``tail``
    and ``no-tilt``.

    Args:
      acc: an :class:`Accumulator` in which every prompt has at least one sample.
      exact: the samples are a finite law's whole support (standard errors zero; see ``Samples``).
      bias_correction: bias-corrected estimates (default) or the plug-in ones (``jaxlimits.tilt``).

    Returns:
      :class:`~jaxlimits.TiltStats` with ``[P, B]`` fields.

    Raises:
      ValueError: naming a prompt that has no valid sample yet (checked unless traced).
    """
    if not isinstance(acc.mass, jax.core.Tracer):
        empty = np.flatnonzero(~(np.asarray(acc.mass) > 0))
        if empty.size:
            more = f" ({empty.size - 1} more such prompts)" if empty.size > 1 else ""
            raise ValueError(f"prompt {int(empty[0])} has no valid sample in the accumulator{more}")
        # chunks are checked one by one; their totals are checked here
        check_magnitudes(acc.sums.draws, acc.ref.r_max, acc.r_min, acc.lam.dtype)
    return _finalize(acc, bool(exact), bool(bias_correction))


# ----------------------------------------------------------------------------------------------
# Sub-sets of prompts: used by the file sweeps (chunks of long tables hold a few prompts each)


def take(acc: Accumulator, index) -> Accumulator:
    """The accumulator of the prompts ``index`` (``[p]`` integers), as a new ``[p]`` accumulator."""
    idx = jnp.asarray(index)
    return jax.tree.map(lambda a: a[idx], acc)


def concatenate(accs: Sequence[Accumulator]) -> Accumulator:
    """Stacks accumulators of different prompts along the prompt axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *accs)


# ----------------------------------------------------------------------------------------------
# Out-of-core sweeps


class FileSweep(NamedTuple):
    """The result of :func:`sweep_files`.

    Attributes:
      frontier: the pooled :class:`~jaxlimits.Frontier` (``prompts`` holds the per-prompt
        :class:`~jaxlimits.TiltStats` when ``per_prompt=True``, else None).
      prompt_ids: the prompt identifiers, in order of completion (the rows of ``prompts``).
      rows: number of rows read.
      files: the files read, in order.
    """

    frontier: Frontier
    prompt_ids: list
    rows: int
    files: list


def _bucket(n: int, low: int) -> int:
    """The smallest ``low * 4^k >= n`` (few distinct shapes: few compilations)."""
    b = low
    while b < n:
        b *= 4
    return b


class _HostTable:
    """Accumulator rows of open prompts, on the host, in slots (grown by doubling)."""

    def __init__(self, template: Accumulator):
        leaves, self.treedef = jax.tree.flatten(template)
        self.template = [np.asarray(a) for a in leaves]  # one empty row each: [1, ...]
        self.data = [np.repeat(a, 8, axis=0) for a in self.template]
        self.free = list(range(8))[::-1]

    def alloc(self) -> int:
        if not self.free:
            n = self.data[0].shape[0]
            self.data = [np.concatenate([a, np.repeat(t, n, axis=0)]) for a, t in zip(self.data, self.template)]
            self.free = list(range(2 * n - 1, n - 1, -1))
        slot = self.free.pop()
        for a, t in zip(self.data, self.template):
            a[slot] = t[0]
        return slot

    def release(self, slots) -> None:
        self.free.extend(int(s) for s in slots)

    def get(self, slots) -> Accumulator:
        return jax.tree.unflatten(self.treedef, [a[slots] for a in self.data])

    def put(self, slots, acc: Accumulator, count: int) -> None:
        for a, leaf in zip(self.data, jax.tree.leaves(acc)):
            a[slots] = np.asarray(leaf)[:count]


@functools.partial(jax.jit, static_argnames=("exact",))
def _finalize_pool(acc: Accumulator, weight: Array, exact: bool):
    st = _finalize(acc, exact)
    return pool_of(st, weight), st


def sweep_files(
    paths,
    betas=None,
    *,
    prompt: str = "prompt_id",
    reward: str = "reward",
    score: str | None = None,
    log_weight: str | None = None,
    count: str | None = None,
    chunk_rows: int = 100_000,
    grouped: bool = True,
    per_prompt: bool = False,
    num_betas: int = 64,
    dtype=None,
    max_width: int = 4096,
) -> FileSweep:
    """The frontier of long-format files too large for memory, read ``chunk_rows`` rows at a time.

    Every chunk's rows are grouped by prompt and folded into the prompts' :class:`Accumulator`
    rows (:func:`update`); a prompt is finalised once all its rows have been read. The result
    equals :func:`jaxlimits.frontier` on the whole table (to rounding).

    Memory: with ``grouped=True`` (each prompt's rows are contiguous across the files, the
    layout samplers write) only the prompts of the current chunk are held, so peak memory is
    bounded by ``chunk_rows`` (plus ``[prompts, betas]`` results when ``per_prompt``).
    With ``grouped=False`` (e.g. one file per sampling batch, every prompt in every file) every
    prompt's accumulator is held until the end: about ``(k + 4) B + 100`` numbers per prompt
    (``k`` = 6, or 11 with scores; ``B`` betas).

    Args:
      paths: a file, a directory of files, or a list of them (``.jsonl``, ``.csv``, ``.parquet``,
        ``.npz``); read in order as one table.
      betas: ``[B]`` KL penalties; by default :func:`jaxlimits.default_betas` of the prompts of
        the first chunk (``num_betas`` points).
      prompt, reward, score, log_weight, count: column names (as in :func:`jaxlimits.io.load`).
      chunk_rows: rows read at a time.
      grouped: the rows of each prompt are contiguous (checked: a prompt that reappears after
        another one raises :class:`~jaxlimits.io.DataError`).
      per_prompt: keep the per-prompt :class:`~jaxlimits.TiltStats` (memory grows with prompts).
      num_betas: points of the default grid.
      dtype: float dtype (default: float64 under ``jax_enable_x64``, else float32).
      max_width: at most this many samples of a prompt per kernel call (longer prompts are
        folded in several calls).

    Returns:
      A :class:`FileSweep`.

    Raises:
      DataError: a missing column, a bad value (naming file, line and column), a prompt without a
        sample with a positive count, or a prompt that reappears with ``grouped=True``.

    Examples:
      >>> import json, tempfile, pathlib, numpy as np
      >>> from jaxlimits import streaming
      >>> d = pathlib.Path(tempfile.mkdtemp())
      >>> r = np.random.default_rng(0).standard_normal((4, 50))
      >>> _ = (d / "s.jsonl").write_text("".join(
      ...     json.dumps({"prompt_id": p, "reward": float(x)}) + "\\n" for p in range(4) for x in r[p]))
      >>> out = streaming.sweep_files(d / "s.jsonl", [2.0, 1.0], chunk_rows=64)
      >>> out.rows, len(out.prompt_ids), bool(out.frontier.kl[0] < out.frontier.kl[1])
      (200, 4, True)
    """
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    names = [c for c in (prompt, reward, score, log_weight, count) if c is not None]
    weighted, has_scores = log_weight is not None, score is not None
    files = [str(p) for p in expand_paths(paths)]
    chunks = iter_chunks(paths, names, chunk_rows)
    first = next(chunks, None)
    if first is None:
        raise DataError(f"{files[0]}: no rows")
    if betas is None:
        from .io import samples_from_table

        loaded = samples_from_table(first, prompt=prompt, reward=reward, score=score, log_weight=log_weight,
                                    count=count)
        betas = default_betas(loaded.samples, num=num_betas)
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1:
        raise ValueError("sweep_files needs one grid of betas shared by all prompts (shape [betas])")
    template = init(1, betas, dtype=dtype, has_scores=has_scores, weighted=weighted)
    table = _HostTable(template)
    slot_of: dict[Any, int] = {}  # open prompts
    closed: set = set()
    done_ids: list = []
    stats: list = []
    pool = None
    rows = 0

    def close(keys) -> None:
        nonlocal pool
        if not keys:
            return
        slots = np.asarray([slot_of[k] for k in keys])
        for lo in range(0, len(keys), 4096):
            part = slots[lo:lo + 4096]
            got = table.get(part)
            bad = np.flatnonzero(~(np.asarray(got.mass) > 0))
            if bad.size:
                raise DataError(f"prompt {keys[lo + int(bad[0])]!r} has no sample with a positive count")
            try:
                check_magnitudes(got.sums.draws, got.ref.r_max, got.r_min, dtype, reward, keys[lo:lo + len(part)])
            except ValueError as e:
                raise DataError(str(e)) from None
            k = _bucket(len(part), 8)
            idx = np.concatenate([part, np.full(k - len(part), part[0])])
            weight = jnp.asarray(np.arange(k) < len(part), dtype)
            p, st = _finalize_pool(table.get(idx), weight, False)
            pool = p if pool is None else jax.tree.map(jnp.add, pool, p)
            if per_prompt:
                n_part = len(part)
                stats.append(jax.tree.map(lambda a, n=n_part: np.asarray(a)[:n], st))
        for k in keys:
            del slot_of[k]
            if grouped:
                closed.add(k)
        table.release(slots)
        done_ids.extend(keys)

    def fold(tab: Table) -> None:
        nonlocal rows
        pids = tab.keys(prompt, option="prompt=")
        values = {"reward": tab.column(reward, option="reward=")}
        if score is not None:
            values["score"] = tab.column(score, option="score=")
        if log_weight is not None:
            values["log_weight"] = tab.column(log_weight, option="log_weight=")
        if count is not None:
            c = tab.column(count, option="count=")
            bad = (c < 0) | (c != np.round(c))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{tab.where(i)}: column {count!r} is {c[i]!r}, not a whole number >= 0")
            values["count"] = c
        local: dict[Any, int] = {}
        loc = np.empty(len(pids), np.int64)
        for i, key in enumerate(pids):
            j = local.get(key)
            if j is None:
                j = local[key] = len(local)
                if key in closed or (grouped and j > 0 and key in slot_of):
                    raise DataError(
                        f"{tab.where(i)}: prompt {key!r} appears again after other prompts; with grouped=True "
                        "the rows of each prompt must be contiguous (pass grouped=False to hold every "
                        "prompt until the end)"
                    )
            loc[i] = j
        keys = list(local)
        if grouped:
            back = np.flatnonzero(np.diff(loc) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise DataError(
                    f"{tab.where(i)}: prompt {keys[loc[i]]!r} appears again after other prompts; with "
                    "grouped=True the rows of each prompt must be contiguous (pass grouped=False)"
                )
            # the prompt carried over from the previous chunk is complete unless this chunk goes on with it
            close([k for k in list(slot_of) if k != keys[0]])
        for k in keys:
            if k not in slot_of:
                slot_of[k] = table.alloc()
        slots = np.asarray([slot_of[k] for k in keys])
        order = np.argsort(loc, kind="stable")
        sizes = np.bincount(loc, minlength=len(keys))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pos = np.arange(len(loc)) - np.repeat(starts, sizes)  # position of each sorted row in its prompt
        sorted_loc = loc[order]
        cols = {name: v[order] for name, v in values.items()}
        # pieces of at most max_width rows; one kernel call per (piece round, width bucket)
        piece = pos // max_width
        piece_size = np.minimum(sizes[:, None] - np.arange(int(piece.max()) + 1)[None, :] * max_width, max_width)
        for rnd in range(int(piece.max()) + 1):
            in_rnd = piece == rnd
            sz = piece_size[:, rnd]
            width = np.array([_bucket(s, 16) if s > 0 else 0 for s in sz])
            for w in np.unique(width[width > 0]):
                who = np.flatnonzero(width == w)  # local prompts in this call
                k = _bucket(len(who), 8)
                row_of = np.full(len(keys), -1)
                row_of[who] = np.arange(len(who))
                sel = in_rnd & (row_of[sorted_loc] >= 0)
                r_i, c_i = row_of[sorted_loc[sel]], (pos[sel] - rnd * max_width)
                block = {}
                for name, v in cols.items():
                    a = np.zeros((k, w), np.float64)
                    a[r_i, c_i] = v[sel]
                    block[name] = a
                mask = np.zeros((k, w), bool)
                mask[r_i, c_i] = True
                chunk = Samples.tree_unflatten((False,), (
                    jnp.asarray(block["reward"], dtype),
                    jnp.asarray(block["score"], dtype) if has_scores else None,
                    jnp.asarray(block["log_weight"], dtype) if weighted else None,
                    jnp.asarray(block["count"], dtype) if count is not None else None,
                    jnp.asarray(mask),
                ))
                idx = np.concatenate([slots[who], np.full(k - len(who), slots[who[0]])])
                acc = _update(table.get(idx), _chunk_arrays(chunk, template))
                table.put(slots[who], acc, len(who))
        rows += len(tab)
        if grouped:  # all but the chunk's last prompt are complete
            close(keys[:-1])

    fold(first)
    for tab in chunks:
        fold(tab)
    close(list(slot_of))
    prompts = None
    if per_prompt:
        prompts = jax.tree.map(lambda *a: jnp.asarray(np.concatenate(a, axis=0)), *stats)
    front = from_pool(pool, jnp.asarray(betas, dtype), prompts)
    return FileSweep(front, done_ids, rows, files)


# ----------------------------------------------------------------------------------------------
# Out-of-core summaries (``jaxlimits info --stream``)


class PromptSummary(NamedTuple):
    """Per-prompt figures of a long table, each ``[prompts]`` float64 (in order of first appearance).

    Attributes:
      prompt_ids: the prompt identifiers.
      rows: rows that count (positive count; an importance log-weight is always finite).
      draws: draws, the sum of the counts over those rows.
      r_min, r_max: smallest and largest reward.
      sum_r: ``sum count * r``, the draws' reward total.
      draws_at_max: draws whose reward is the prompt's largest.
      base_mass_at_max: ``u(max r)``, the base law's mass at the largest reward (``draws_at_max /
        draws`` without importance weights).
      base_mean: ``sum u r``, the mean reward under the base law (importance-weighted; NaN
        without weights).
      weighted: whether importance log-weights were given.
      rows_read: rows read in all.
      files: the files read.
    """

    prompt_ids: list
    rows: np.ndarray
    draws: np.ndarray
    r_min: np.ndarray
    r_max: np.ndarray
    sum_r: np.ndarray
    draws_at_max: np.ndarray
    base_mass_at_max: np.ndarray
    base_mean: np.ndarray
    weighted: bool
    rows_read: int
    files: list


#: The running per-prompt sums of :func:`summarize_files` (log-weight sums relative to ``ref``).
_SUM_FIELDS = ("rows", "draws", "r_min", "r_max", "sum_r", "draws_at_max", "ref", "w", "wr", "w_at_max")
_SUM_EMPTY = {"rows": 0.0, "draws": 0.0, "r_min": np.inf, "r_max": -np.inf, "sum_r": 0.0, "draws_at_max": 0.0,
              "ref": -np.inf, "w": 0.0, "wr": 0.0, "w_at_max": 0.0}


def _chunk_sums(code: np.ndarray, k: int, r: np.ndarray, c: np.ndarray, lw: np.ndarray | None) -> dict:
    """Per-prompt sums of one chunk's valid rows (``code`` in ``0..k-1``): NumPy scatter operations."""
    out = {"rows": np.bincount(code, minlength=k).astype(np.float64),
           "draws": np.bincount(code, weights=c, minlength=k),
           "r_min": np.full(k, np.inf), "r_max": np.full(k, -np.inf),
           "sum_r": np.bincount(code, weights=c * r, minlength=k)}
    np.minimum.at(out["r_min"], code, r)
    np.maximum.at(out["r_max"], code, r)
    top = r == out["r_max"][code]
    out["draws_at_max"] = np.bincount(code, weights=np.where(top, c, 0.0), minlength=k)
    if lw is not None:  # w = count * exp(log-weight), relative to the chunk's largest log w
        logw = lw + np.log(c)
        out["ref"] = np.full(k, -np.inf)
        np.maximum.at(out["ref"], code, logw)
        w = np.exp(logw - out["ref"][code])
        out["w"] = np.bincount(code, weights=w, minlength=k)
        out["wr"] = np.bincount(code, weights=w * r, minlength=k)
        out["w_at_max"] = np.bincount(code, weights=np.where(top, w, 0.0), minlength=k)
    return out


def _merge_sums(a: dict, b: dict) -> dict:
    """Per-prompt sums of disjoint rows combined (maxima, and log-weight sums rebased to the larger reference)."""
    out = {k: a[k] + b[k] for k in ("rows", "draws", "sum_r")}
    out["r_min"] = np.minimum(a["r_min"], b["r_min"])
    out["r_max"] = top = np.maximum(a["r_max"], b["r_max"])
    out["draws_at_max"] = np.where(a["r_max"] == top, a["draws_at_max"], 0.0) + np.where(
        b["r_max"] == top, b["draws_at_max"], 0.0)
    out["ref"] = ref = np.maximum(a["ref"], b["ref"])
    with np.errstate(invalid="ignore"):  # -inf - -inf: a side with no weight yet
        sa = np.where(np.isfinite(a["ref"]), np.exp(a["ref"] - ref), 0.0)
        sb = np.where(np.isfinite(b["ref"]), np.exp(b["ref"] - ref), 0.0)
    out["w"] = a["w"] * sa + b["w"] * sb
    out["wr"] = a["wr"] * sa + b["wr"] * sb
    out["w_at_max"] = np.where(a["r_max"] == top, a["w_at_max"] * sa, 0.0) + np.where(
        b["r_max"] == top, b["w_at_max"] * sb, 0.0)
    return out


def summarize_files(
    paths,
    *,
    prompt: str = "prompt_id",
    reward: str = "reward",
    score: str | None = None,
    log_weight: str | None = None,
    count: str | None = None,
    base_logprob: str | None = None,
    sampler_logprob: str | None = None,
    chunk_rows: int = 100_000,
    dtype=None,
) -> PromptSummary:
    """Per-prompt summary figures of long-format files read ``chunk_rows`` rows at a time.

    Memory: the chunk, and per prompt its id and ten numbers (a prompt's rows need not be
    contiguous; the medians need every prompt's figures).
    The figures are those ``jaxlimits info`` reports from :class:`~jaxlimits.Samples` (the values
    are first rounded to ``dtype``, as :class:`~jaxlimits.Samples` stores them), summed in another
    order: equal to rounding.

    Args:
      paths: a file, a directory of files, or a list of them (as :func:`sweep_files`).
      prompt, reward, score, log_weight, count, base_logprob, sampler_logprob: column names (as in
        :func:`jaxlimits.io.load`; the two log-probabilities give the log-weight; the score
        column is only checked: every cell a finite number).
      chunk_rows: rows read at a time.
      dtype: float dtype the values are rounded to (default: float64 under ``jax_enable_x64``,
        else float32).

    Returns:
      A :class:`PromptSummary`.

    Raises:
      DataError: a missing column, a bad value (naming file, line and column), or a prompt
        without a sample with a positive count (naming its first line).
    """
    if (base_logprob is None) != (sampler_logprob is None):
        raise DataError("the log-probability correction needs both --base-logprob-col and --sampler-logprob-col")
    if base_logprob is not None and log_weight is not None:
        raise DataError("give either a log-weight column or the two log-probability columns, not both")
    dtype = np.dtype(jnp.result_type(float) if dtype is None else dtype)
    names = [c for c in (prompt, reward, score, log_weight, count, base_logprob, sampler_logprob) if c is not None]
    weighted = log_weight is not None or base_logprob is not None
    files = [str(p) for p in expand_paths(paths)]
    slot: dict[Any, int] = {}
    total = {k: np.zeros(0) for k in _SUM_FIELDS}
    where: list[str] = []  # the first line of each prompt, for the error naming it
    rows_read = 0

    def rounded(x):
        return x.astype(dtype).astype(np.float64)

    for tab in iter_chunks(paths, names, chunk_rows):
        codes, ids = tab.codes(prompt, option="--prompt-col")
        r = rounded(tab.column(reward, option="--reward-col"))
        if score is not None:
            tab.column(score, option="--score-col")
        c = np.ones(len(tab)) if count is None else rounded(tab.column(count, option="--count-col"))
        if count is not None:
            bad = (c < 0) | (c != np.round(c))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{tab.where(i)}: column {count!r} is {float(c[i])}, not a whole number >= 0")
        lw = None
        if log_weight is not None:
            lw = rounded(tab.column(log_weight, option="--log-weight-col"))
        elif base_logprob is not None:
            lw = rounded(tab.column(base_logprob, option="--base-logprob-col")
                         - tab.column(sampler_logprob, option="--sampler-logprob-col"))
        new = [j for j, k in enumerate(ids) if k not in slot]
        if new:  # room for the new prompts, and where each first appears
            first = np.unique(codes, return_index=True)[1]  # codes are 0..k-1 in order of first appearance
            for j in new:
                slot[ids[j]] = len(slot)
                where.append(tab.where(int(first[j])))
            total = {f: np.concatenate([v, np.full(len(new), _SUM_EMPTY[f])]) for f, v in total.items()}
        keep = c > 0
        part = _chunk_sums(codes[keep], len(ids), r[keep], c[keep], None if lw is None else lw[keep])
        for f in _SUM_FIELDS:
            part.setdefault(f, np.full(len(ids), _SUM_EMPTY[f]))
        at = np.fromiter((slot[k] for k in ids), np.int64, len(ids))
        merged = _merge_sums({f: v[at] for f, v in total.items()}, part)
        for f in _SUM_FIELDS:
            total[f][at] = merged[f]
        rows_read += len(tab)
    bad = np.flatnonzero(~(total["draws"] > 0))
    if bad.size:
        p = int(bad[0])
        raise DataError(f"{where[p]}: prompt {list(slot)[p]!r} has no sample with a positive count")
    with np.errstate(divide="ignore", invalid="ignore"):
        mass = total["w_at_max"] / total["w"] if weighted else total["draws_at_max"] / total["draws"]
        mean = total["wr"] / total["w"] if weighted else np.full(len(slot), np.nan)
    return PromptSummary(list(slot), total["rows"], total["draws"], total["r_min"], total["r_max"], total["sum_r"],
                         total["draws_at_max"], mass, mean, weighted, rows_read, files)
