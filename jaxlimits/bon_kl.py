r"""The KL of best-of-n in closed form: analytic (continuous rewards) and Beirami et al.'s estimator (MATH.md §8).

The exact discrete KL on a sampled or exact law is a U-statistic of the samples
(:mod:`jaxlimits.ustatistics`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def analytic_kl(n) -> Array:
    r"""KL of best-of-n for continuous rewards, ``log n - (n-1)/n`` (MATH.md §8).

    An upper bound when rewards tie. ``n`` may be an array.

    Examples:
      >>> from jaxlimits import bon
      >>> round(float(bon.analytic_kl(16)), 6)
      1.835089
    """
    n = jnp.asarray(n, dtype=jnp.result_type(float))
    return jnp.log(n) - (n - 1) / n


def beirami(xp, lp, n):
    """Beirami's estimator for array module ``xp`` (``numpy`` or ``jax.numpy``); see :func:`beirami_kl`."""
    one = lp >= 0
    lp_safe = xp.where(one, -1.0, lp)  # the eps = 1 lane is replaced below (double where)
    eps = xp.exp(lp_safe)
    # log(1 - eps), accurate at both ends (eps -> 1 rounds to 1 for lp > -1e-16; Maechler's log1mexp)
    x = xp.where(lp_safe > -math.log(2), xp.log(-xp.expm1(lp_safe)), xp.log1p(-eps))
    nx = n * x
    a = xp.exp(nx)  # (1 - eps)^n
    b = -xp.expm1(nx)  # 1 - (1 - eps)^n
    # log(b / eps): the series log n + log1p(-(n-1) eps / 2) has relative error ~ (n eps)^2 / 24.
    small = n * eps <= np.sqrt(xp.finfo(lp.dtype).eps)
    b_safe = xp.where(small, 1.0, b)
    log_ratio = xp.where(small, xp.log(n) + xp.log1p(-(n - 1) * eps / 2), xp.log(b_safe) - lp_safe)
    val = a * (xp.log(n) + (n - 1) * x - (n - 1) / n) + b * log_ratio
    return xp.where(one, 0.0 * val, val)


def beirami_kl(log_eps, n) -> Array:
    r"""Beirami et al.'s KL estimator of best-of-n (arXiv 2401.01879; MATH.md §8).

    .. math::

       \widehat{KL}(\epsilon) = (1-\epsilon)^n \Big[\log n + (n-1)\log(1-\epsilon) - \tfrac{n-1}{n}\Big]
       + \big(1-(1-\epsilon)^n\big) \log\frac{1-(1-\epsilon)^n}{\epsilon},

    where ``eps`` is the base-model probability of the response best-of-n selected. It is the
    exact KL for a base law of one top outcome of mass ``eps`` above a continuous remainder, lies
    in ``[0, log n - (n-1)/n]``, tends to ``log n - (n-1)/n`` as ``eps -> 0`` and to 0 as
    ``eps -> 1``. Computed in log space from ``log eps`` (a sequence log-probability): for small
    ``eps`` the ratio ``(1 - (1-eps)^n) / eps`` is taken from its series, so the result stays
    finite even where ``eps`` underflows. Jittable, elementwise.

    Args:
      log_eps: ``log eps <= 0`` (any shape; broadcast against ``n``).
      n: the number of draws (>= 1).

    Returns:
      The estimate, of the broadcast shape.

    Examples:
      >>> import math
      >>> from jaxlimits import bon
      >>> round(float(bon.beirami_kl(math.log(0.05), 16)), 7)
      1.8215173
    """
    lp = jnp.asarray(log_eps)
    if not jnp.issubdtype(lp.dtype, jnp.floating):
        lp = lp.astype(jnp.result_type(float))
    return _beirami_jit(lp, jnp.asarray(n, dtype=lp.dtype))


_beirami_jit = jax.jit(functools.partial(beirami, jnp))
