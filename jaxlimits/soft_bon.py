r"""Soft best-of-n (Verdun et al.; MATH.md §8): pick among ``n`` draws with probability ``softmax(r / lam)``.

Its expected score is estimated by resampling subsets of each prompt's draws (host NumPy, float64).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, pooling, tables
from .samples import Samples, check_samples
from .ustatistics import check_iid, check_ns

Array = jax.Array


class SoftBestOfN(NamedTuple):
    """Soft best-of-n by resampling; fields ``[len(ns)]`` (pooled) unless noted.

    Attributes:
      n: numbers of draws. lam: the temperature.
      gain: expected score gain of soft BoN, mean over prompts.
      gain_se: its Monte Carlo standard error (resampling only; the sampling error of the base
        draws is not included).
      prompt_gain, prompt_se: ``[prompts, len(ns)]``.
    """

    n: Array
    lam: Array
    gain: Array
    gain_se: Array
    prompt_gain: Array
    prompt_se: Array

    def _columns(self):
        return tables.columns(self, shape_of="n")

    def _summary(self):
        return tables.summary(self, shape_of="n", headline=[
            f"n {tables.span(self.n)}", f"lam {tables.span(self.lam)}", f"gain {tables.span(self.gain)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def _expand(samples: Samples):
    """Draws as rows: counts expanded (``[P, N_draws]`` with a mask), on the host."""
    r = np.asarray(samples.rewards)
    s = r if samples.scores is None else np.asarray(samples.scores)
    valid = np.asarray(samples.valid())
    if samples.counts is None:
        return r, s, valid
    c = np.where(valid, np.asarray(samples.counts), 0).astype(np.int64)
    width = int(c.sum(axis=1).max())
    rr, ss, vv = np.zeros((r.shape[0], width), r.dtype), np.zeros((r.shape[0], width), r.dtype), np.zeros(
        (r.shape[0], width), bool)
    for p in range(r.shape[0]):
        k = int(c[p].sum())
        rr[p, :k] = np.repeat(r[p], c[p])
        ss[p, :k] = np.repeat(s[p], c[p])
        vv[p, :k] = True
    return rr, ss, vv


def _soft_values(r, s, valid, log_q, lam, ns, num_subsets, rng, chunk_elems=1 << 22):
    """``[num_subsets, P, len(ns)]`` values of the n-draw self-normalised estimator (host, float64)."""
    p, width = r.shape
    z = r / lam
    chunk = max(1, min(num_subsets, chunk_elems // max(p * width, 1)))
    out = np.empty((num_subsets, p, len(ns)))
    rows = np.arange(p)[None, :, None]
    for lo in range(0, num_subsets, chunk):
        k = min(chunk, num_subsets - lo)
        if log_q is None:  # without replacement: the first n of a random permutation of the draws
            u = np.where(valid, rng.random((k, p, width)), 2.0)
            idx = np.argsort(u, axis=2)[:, :, : max(ns)]
        else:  # an exact law: n i.i.d. draws from it
            cdf = np.cumsum(np.exp(log_q), axis=1)
            cdf /= cdf[:, -1:]
            idx = np.stack([np.searchsorted(cdf[j], rng.random((k, max(ns))), side="right") for j in range(p)], 1)
            idx = np.minimum(idx, width - 1)
        zi, si = z[rows, idx], s[rows, idx]
        for j, n in enumerate(ns):
            zz = zi[:, :, :n]
            w = np.exp(zz - zz.max(axis=2, keepdims=True))
            out[lo: lo + k, :, j] = np.sum(w * si[:, :, :n], axis=2) / np.sum(w, axis=2)
    return out


def soft_best_of_n(
    samples: Samples,
    ns: Sequence[int],
    lam: float,
    *,
    seed: int = 0,
    num_subsets: int = 256,
) -> SoftBestOfN:
    r"""Soft best-of-n (Verdun et al., arXiv 2505.03156; MATH.md §8), estimated by resampling.

    Draw ``n`` responses, pick index ``i`` with probability ``softmax(r / lam)_i``. Its expected
    score is the expectation of the ``n``-sample self-normalised estimator,

    .. math::

       E[s(\mathrm{soft}_n)] = E_{S,\,|S| = n}\Big[\sum_{i \in S} \mathrm{softmax}(r_S/\lambda)_i\, s_i\Big],

    estimated from ``num_subsets`` random ``n``-subsets of each prompt's draws (without
    replacement; counts are expanded; for an exact law, ``n`` i.i.d. draws from it). ``lam -> 0``
    is best-of-n (tied maxima share equally), ``lam -> inf`` the base model; as ``n`` grows it
    tends to the tilted policy at ``beta = lam`` (``jaxlimits.tilt``). For ``n = N`` there is one
    subset and the result is the tilted gain of the samples at ``beta = lam``. Computed on the host
    (NumPy, float64; the subsets of all ``n`` are nested prefixes of one random permutation).

    Args:
      samples: i.i.d. base samples (no importance weights), ``[P, N]``.
      ns: numbers of draws, ``1 <= n <= N``.
      lam: the temperature, ``> 0``.
      seed: seed of the random subsets.
      num_subsets: random subsets per prompt.

    Returns:
      :class:`SoftBestOfN`.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> r = np.random.default_rng(0).standard_normal((20, 64))
      >>> res = jl.soft_best_of_n(jl.Samples(r), [1, 64], lam=1.0, num_subsets=32)
      >>> round(float(res.gain[0]), 1)  # one draw: no gain
      0.0
    """
    check_samples(samples, "soft_best_of_n")
    samples = samples.neutralised()
    check_iid(samples, "soft_best_of_n")
    ns_arr = check_ns(ns, samples)
    lam_arr = _sweep.numbers(lam, "lam")
    if lam_arr.ndim or not np.isfinite(lam_arr) or lam_arr <= 0:
        raise ValueError(f"lam must be positive and finite, got {lam!r}")
    lam_f = float(lam_arr)
    num_subsets = _sweep.positive_int(num_subsets, "num_subsets", 2)
    rng = np.random.default_rng(seed)
    if samples.exact:
        r = np.asarray(samples.rewards, np.float64)
        s = r if samples.scores is None else np.asarray(samples.scores, np.float64)
        valid = np.asarray(samples.valid())
        lw = np.zeros_like(r) if samples.log_weights is None else np.asarray(samples.log_weights, np.float64)
        lw = np.where(valid, lw, -np.inf)
        log_q = lw - lw.max(axis=1, keepdims=True)
        q = np.exp(log_q)
        base = np.sum(np.where(valid, q * s, 0.0), axis=1) / q.sum(axis=1)
    else:
        r, s, valid = _expand(samples)
        r, s = r.astype(np.float64), s.astype(np.float64)
        log_q = None
        base = np.sum(np.where(valid, s, 0.0), axis=1) / np.sum(valid, axis=1)
    vals = _soft_values(r, s, valid, log_q, lam_f, [int(n) for n in ns_arr], int(num_subsets), rng)
    mean = vals.mean(axis=0)
    se = vals.std(axis=0, ddof=1) / math.sqrt(num_subsets)
    prompt_gain = mean - base[:, None]
    dt = samples.dtype
    return SoftBestOfN(
        n=jnp.asarray(ns_arr), lam=jnp.asarray(lam_f, dt), gain=jnp.asarray(prompt_gain.mean(axis=0), dt),
        gain_se=jnp.asarray(pooling.pooled_se(se), dt), prompt_gain=jnp.asarray(prompt_gain, dt),
        prompt_se=jnp.asarray(se, dt),
    )
