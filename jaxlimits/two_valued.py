r"""Intervals for two-valued rewards (pass/fail, verifiable rewards): the pass rate's binomial interval
mapped through the tilt.

A prompt whose draws take two values ``a < b`` has the law ``a + (b - a) Bernoulli(p)``, seen in
full by its ``N`` draws except for ``p``. Its tilt is again two-valued, with
``q = sigmoid(logit p + lam (b - a))`` at ``b``, so

.. math::

   \mathrm{gain}(p) = (b - a)(q - p), \qquad
   \mathrm{KL}(p) = q \log\frac qp + (1 - q)\log\frac{1 - q}{1 - p}.

The delta method's interval fails here where the SE vanishes (``d gain/dp = 0`` at the gain's
maximum over ``p``, and likewise for the KL): one prompt of Bernoulli(0.3) rewards, N = 1,024,
covered 0.91 at KL 0.09 and 0.78 at KL 0.17. Instead, the 95% interval is the image of the
continuity-corrected Wilson score interval of ``p`` (Newcombe, *Statistics in Medicine* 17, 1998,
method 4; Brown, Cai and DasGupta, *Statistical Science* 16(2), 2001) under ``gain(p)`` and
``KL(p)``: their minimum and maximum over a grid of ``p`` in it. It covers whenever that interval
covers ``p``, for both at once.

Detection needs no extra pass: the draws are two-valued exactly when their variance equals that of
the two-point law with their mean and their share at the maximum, ``p (1 - p) (b - a)^2`` (any
spread below the maximum adds ``(1 - p) s^2``); equal to ``TWO_VALUED_RTOL`` relative, so a
float32 sum of 0/1 rewards passes. Plain samples and counts only (not importance weights), and for
the gain only where the scores are the rewards; at least ``jaxlimits.estimators.DRAWS_MIN`` draws
(with 4 the interval covered 0.929). Since the draws show the whole law, the trust rule's
``ceiling`` clause does not apply to such a prompt (it selected, near half of ``log(1/p)``, the data
sets whose ``p`` was off by two SEs).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import tail_bound

Array = jax.Array

#: Points of the grid over the pass rate's interval (its ends included).
GRID = 65


class TwoValued(NamedTuple):
    """Per prompt ``[P]``: whether the draws are two-valued, the lower value ``a``, the share ``p`` at ``b``."""

    two_valued: Array
    low: Array
    share: Array


def detect(draws: Array, top_mass: Array, r_bar: Array, r_max: Array, var_r: Array) -> TwoValued:
    """Which prompts' draws take exactly two values (``draws``, the mass at the maximum ``top_mass``,
    the base mean ``r_bar``, the maximum ``r_max`` and the base variance ``var_r``, each ``[P]``)."""
    dtype = r_bar.dtype
    p = top_mass / draws
    inner = (p > 0) & (p < 1)
    low = (r_bar - p * r_max) / jnp.where(inner, 1 - p, 1)
    var_two = p * (1 - p) * (r_max - low) ** 2
    rtol = 1000 * jnp.finfo(dtype).eps
    ok = inner & (r_max > low) & (jnp.abs(var_r - var_two) <= rtol * var_two)
    return TwoValued(ok, low, p)


def _curve(p, lam, width):
    """``(gain, KL)`` of the two-point law with share ``p`` at the top, tilted by ``lam``; any shapes."""
    logit = jnp.log(p) - jnp.log1p(-p)
    q = jax.nn.sigmoid(logit + lam * width)
    kl = jax.scipy.special.xlogy(q, q / p) + jax.scipy.special.xlogy(1 - q, (1 - q) / (1 - p))
    return width * (q - p), kl


def limits(tv: TwoValued, draws: Array, r_max: Array, lam: Array):
    """``(gain_lo, gain_hi, kl_lo, kl_hi)`` ``[P, B]``: the image of the Wilson interval of the share
    at the top under the tilt at ``lam`` ``[P, B]`` (NaN for prompts that are not two-valued)."""
    z = tail_bound.Z
    dtype = lam.dtype
    n = draws
    p = jnp.where(tv.two_valued, tv.share, 0.5)
    # Wilson's score interval with continuity correction (Newcombe 1998, method 4): the plain one dips
    # to 0.93-0.94 at some (n, p) (0.940 measured at Bernoulli(0.3), N = 1,024)
    z2, np_ = z * z, 2 * n * p
    lo = (np_ + z2 - 1 - z * jnp.sqrt(jnp.maximum(z2 - 2 - 1 / n + 4 * p * (n * (1 - p) + 1), 0))) / (2 * (n + z2))
    hi = (np_ + z2 + 1 + z * jnp.sqrt(jnp.maximum(z2 + 2 - 1 / n + 4 * p * (n * (1 - p) - 1), 0))) / (2 * (n + z2))
    lo = jnp.clip(lo, jnp.finfo(dtype).tiny, 1)
    hi = jnp.clip(hi, lo, 1 - jnp.finfo(dtype).epsneg)
    u = jnp.linspace(0.0, 1.0, GRID, dtype=dtype)
    grid = lo[:, None, None] + (hi - lo)[:, None, None] * u  # [P, 1, G]
    width = jnp.where(tv.two_valued, r_max - tv.low, 1)[:, None, None]
    gain, kl = _curve(grid, lam[:, :, None], width)
    nan = jnp.asarray(jnp.nan, dtype)
    ok = tv.two_valued[:, None]
    return tuple(jnp.where(ok, x, nan) for x in (gain.min(-1), gain.max(-1), kl.min(-1), kl.max(-1)))
