"""Log-binomial coefficients of whole numbers, accurate to a few ulps (best-of-n's U-statistic weights).

``log C(x, k)`` in the entropy form with Loader's ``stirlerr`` (a table below 30, Stirling's
series above), and ``exp(hi) - exp(lo)`` of two logs without cancellation. Host NumPy, float64.
"""

from __future__ import annotations

import numpy as np


def stirling_series(n):
    inv2 = 1 / (n * n)
    return (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680))) / n


def stirlerr_table(top: int = 30) -> np.ndarray:
    """``stirlerr(k)`` for ``k = 0 .. top - 1`` by the exact downward recursion
    ``stirlerr(k) = stirlerr(k+1) - 1 + (k + 1/2) log1p(1/k)`` from the series at ``top``."""
    t = np.zeros(top + 1)
    t[top] = stirling_series(float(top))
    for k in range(top - 1, 0, -1):
        t[k] = t[k + 1] - 1 + (k + 0.5) * np.log1p(1 / k)
    return t[:top]


STIRLERR = stirlerr_table()


def stirlerr(n):
    """``log n! - (n log n - n + log(2 pi n) / 2)`` for whole ``n >= 1`` (Loader's stirlerr): a table
    below 30, Stirling's series (four terms, truncation error below 1e-16) from 30 on."""
    big = n >= len(STIRLERR)
    series = stirling_series(np.where(big, n, float(len(STIRLERR))))
    return np.where(big, series, STIRLERR[np.clip(n, 0, len(STIRLERR) - 1).astype(np.int64)])


def log_binom(x, k):
    """``log C(x, k)`` for whole numbers ``x`` (any sign) and ``k >= 0``; ``-inf`` where ``x < k``.

    In the entropy form ``k log(x/k) + j log(x/j) + log(x / (2 pi k j))/2 + stirlerr terms`` with
    ``j = x - k``, each ``log(x/k)`` taken as ``-log1p(-j/x)`` when ``j < x/2``: all main terms are
    positive, so the relative error stays at a few ulps where ``lgamma(x+1) - lgamma(k+1) -
    lgamma(j+1)`` loses ``eps * x log x`` (and ``scipy``/``jax`` ``betaln`` is off by 1e-6 for
    small arguments in JAX).
    """
    x, k = np.broadcast_arrays(np.asarray(x, np.float64), np.asarray(k, np.float64))
    j = x - k
    inner = (k >= 1) & (j >= 1)
    xs, ks, js = np.where(inner, x, 3.0), np.where(inner, k, 1.0), np.where(inner, j, 2.0)

    def log_ratio(part, rest):  # log(xs / part), with rest = xs - part
        return np.where(2 * rest < xs, -np.log1p(-rest / xs), np.log(xs / part))

    val = (
        ks * log_ratio(ks, js)
        + js * log_ratio(js, ks)
        + 0.5 * np.log(xs / (2 * np.pi * ks * js))
        + stirlerr(xs) - stirlerr(ks) - stirlerr(js)
    )
    val = np.where(inner, val, 0.0)
    return np.where(j < 0, -np.inf, val)


def log_binom_at(x, k, x_max):
    """``log_binom(x, k)`` for whole ``x`` in ``[-2, x_max]``: from a table when that range is
    not much larger than ``x`` itself (row positions repeat), else directly."""
    if x_max + 3 <= x.size:
        table = log_binom(np.arange(-2.0, x_max + 1), k)
        return table[(x + 2).astype(np.int64)]
    return log_binom(x, k)


def diff_exp(lo, hi):
    """``exp(hi) - exp(lo)`` for ``lo <= hi`` (logs, ``-inf`` allowed), without cancellation."""
    finite = hi > -np.inf
    hi_s = np.where(finite, hi, 0.0)
    with np.errstate(invalid="ignore"):
        d = np.where(finite, lo - hi_s, -np.inf)
    return np.where(finite, np.exp(hi_s) * -np.expm1(d), 0.0)
