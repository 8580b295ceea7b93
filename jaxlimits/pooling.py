r"""Pooling over prompts: the one definition of each pooled quantity (MATH.md §6).

A prompt set's estimate is the mean over its ``P`` prompts of the per-prompt estimates; the
prompts are independent, so its standard error, conditional on the prompt set, is

.. math::

   \mathrm{se} = \frac{1}{P} \sqrt{\sum_x \mathrm{se}_x^2}.

A **saturated share** is always a share of *prompts* (never of KL): the fraction of the prompts
whose own estimate is flagged (:func:`saturated_share`). ``ProxyGap.saturated_share`` is that
share for the per-prompt trust rule; ``Frontier.saturated_share`` is the larger of the two
shares the pooled trust rule judges (prompts flagged ``NO_TILT``, prompts flagged ``CEILING``).

Every function takes NumPy (host, float64 kept) or JAX arrays and returns the same kind.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _xp(*xs):
    return jnp if any(isinstance(x, jax.Array | jax.core.Tracer) for x in xs) else np


def safe_sqrt(x):
    """``sqrt(max(x, 0))`` with NaN kept (an unresolved variance) and a zero gradient at 0 (the double where)."""
    xp = _xp(x)
    pos = x > 0
    return xp.where(pos, xp.sqrt(xp.where(pos, x, 1)), xp.where(xp.isnan(x), xp.nan, 0))


def pooled_mean(x, axis: int = 0):
    """The prompt set's estimate: the mean over prompts (``axis``)."""
    return _xp(x).mean(x, axis=axis)


def se_of_variance_sum(var_sum, count):
    """``sqrt(var_sum) / count``: the SE of a mean of ``count`` independent estimates of variance sum ``var_sum``."""
    return safe_sqrt(var_sum) / count


def pooled_se_of_variances(var, axis: int = 0):
    """``sqrt(sum_x var_x) / P``, the SE of the mean over prompts (``axis``) from per-prompt variances."""
    xp = _xp(var)
    return se_of_variance_sum(xp.sum(var, axis=axis), xp.shape(var)[axis])


def pooled_se(se, axis: int = 0):
    """``sqrt(sum_x se_x^2) / P``, the SE of the mean over prompts (``axis``) from per-prompt SEs."""
    return pooled_se_of_variances(se * se, axis=axis)


def saturated_share(flags, axis: int = 0, dtype=None):
    """The share of prompts (``axis``) whose own estimate is flagged: the mean of the booleans ``flags``.

    ``dtype``: of the share (default: NumPy's float64, or JAX's default float).
    """
    xp = _xp(flags)
    return xp.mean(xp.asarray(flags).astype(float if dtype is None else dtype), axis=axis)


def kl_ceiling(log_mass, log_top_mass):
    """``[P]`` the largest KL the samples can show, ``-log u(argmax r) = log W - log(top mass)``, at least 0.

    ``log_mass``: log of the total base mass ``W`` (0 for normalised weights); ``log_top_mass``:
    log of the base mass tied at the maximal reward (``log(N/m)`` for ``m`` of ``N`` plain draws).
    The pooled ceiling is its :func:`pooled_mean`.
    """
    return _xp(log_mass, log_top_mass).maximum(log_mass - log_top_mass, 0)
