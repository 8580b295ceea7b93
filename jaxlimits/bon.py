r"""Best-of-n held against the frontier (MATH.md §8).

Best-of-n (BoN) draws ``n`` responses from the base model and keeps the one with the highest
reward ``r``. From ``N >= n`` i.i.d. base samples of a prompt:

* **Expected score** by the unbiased U-statistic over all ``n``-subsets: sort by ``r``
  ascending, then

  .. math::

     \widehat{E}[s(\mathrm{BoN}_n)] = \sum_{i=n}^{N} \frac{\binom{i-1}{n-1}}{\binom{N}{n}}\, s_{(i)},

  with ``s`` averaged within each tie group of ``r`` (exact for uniform tie-breaking). A tie
  group (or a row of count ``m``) covering draws ``a+1 .. b`` in the sorted order gets the
  weight ``(C(b, n) - C(a, n)) / C(N, n)`` (hockey-stick identity), computed in log space with
  ``betaln``. Its standard error is the jackknife (the leave-one-out statistics of a
  U-statistic follow from prefix and suffix sums, exactly, in ``O(N)`` per prompt).
* **KL** three ways: the analytic ``log n - (n-1)/n`` (continuous rewards; an upper bound with
  ties), the exact discrete formula on the (empirical or exact) law with distinct levels
  ``v_1 < .. < v_J``, masses ``q_j`` and CDF ``F_j``,

  .. math::

     \mathrm{KL}(\pi_n \| \pi_0) = \sum_j (F_j^n - F_{j-1}^n) \log\frac{F_j^n - F_{j-1}^n}{q_j},

  and Beirami et al.'s estimator from the base-model probability ``eps`` of the selected
  response (:func:`beirami_kl`), averaged over BoN draws (the same U-statistic weights).
* **Win rate** against a base draw (ties count one half), the unbiased U-statistic of degree
  ``n + 1``; the **win-rate frontier** is the ordinary frontier with the reward replaced by its
  within-prompt mid-rank quantile ``Q(r) = F(r-) + P(r)/2``.
* **Efficiency**: ``gain_BoN / gain*(K_n)`` with ``gain*`` the frontier (``jaxlimits.max_gain_at_kl``).

Soft best-of-n (:func:`soft_best_of_n`) picks among the ``n`` draws with probability
``softmax(r / lam)``; its expected score is estimated by resampling subsets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, pooling, tables
from .samples import PromptError, Samples
from .status import MESSAGES, Status

Array = jax.Array

#: How the KL of each prompt's BoN policy is chosen for the frontier comparison (``kl``).
KL_METHODS = ("auto", "analytic", "exact", "beirami")


# ----------------------------------------------------------------------------------------------
# Closed forms.


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


def _beirami(xp, lp, n):
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


_beirami_jit = jax.jit(functools.partial(_beirami, jnp))


# ----------------------------------------------------------------------------------------------
# The statistics of best-of-n from samples. They are sorts, prefix sums and log-binomials over
# whole numbers: computed on the host in float64 with NumPy (milliseconds, exact to ~1e-14, and no
# compilation: as a jitted XLA program the ~100 small kernels took 20 s to compile per shape on CPU).


class _Sorted(NamedTuple):
    """Per prompt, rows sorted by reward (invalid rows last), with their tie groups; ``[P, N]`` float64."""

    y: np.ndarray  # [P, N, V] values averaged by the U-statistic: centred scores, centred rewards
    m: np.ndarray  # draws of the row (counts; 0 where invalid)
    q: np.ndarray  # base mass of the row (normalised)
    lp: np.ndarray | None  # log-probabilities of the rows (Beirami), or None
    start: np.ndarray  # index of the first row of the row's tie group
    end: np.ndarray  # index of the last row of the row's tie group
    a: np.ndarray  # draws strictly below the group
    b: np.ndarray  # draws through the end of the group
    group_y: np.ndarray  # [P, N, V] sum over the group of m * y
    group_q: np.ndarray  # base mass of the group
    log_f_hi: np.ndarray  # log F at the top of the group
    log_ratio: np.ndarray  # log(F_lo / F_hi) of the group (-inf for the lowest group)
    mid: np.ndarray  # mid-rank quantile F_lo + Q/2 of the row's reward
    order: np.ndarray  # the sort order (int)
    big_n: np.ndarray  # [P] total draws
    tied: np.ndarray  # [P] some rewards tie (a group of two or more draws)


def _excl_cumsum(x):
    c = np.cumsum(x, axis=1)
    return np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)


def _rev_excl_cumsum(x):
    c = np.flip(np.cumsum(np.flip(x, 1), axis=1), 1)
    return np.concatenate([c[:, 1:], np.zeros_like(c[:, :1])], axis=1)


def _take(x, idx):
    return np.take_along_axis(x, idx if x.ndim == idx.ndim else idx[..., None], axis=1)


def _group_sum(x, starts):
    """Sum of ``x`` ([P, N] or [P, N, V]) over each row's group (contiguous runs), back on the rows."""
    p, n = starts.shape
    flat = x.reshape((p * n,) + x.shape[2:])
    first = np.flatnonzero(starts.reshape(-1))
    sums = np.add.reduceat(flat, first, axis=0)
    lengths = np.diff(np.append(first, p * n))
    return np.repeat(sums, lengths, axis=0).reshape(x.shape)


def _host(x, dtype=np.float64):
    return None if x is None else np.asarray(x, dtype=dtype)


def _prepare(samples: Samples, log_probs) -> _Sorted:
    r = _host(samples.rewards)
    s = r if samples.scores is None else _host(samples.scores)
    valid = np.asarray(samples.valid())
    m = np.where(valid, 1.0 if samples.counts is None else _host(samples.counts), 0.0)
    order = np.argsort(np.where(valid, r, np.inf), axis=1, kind="stable")
    r, s, m, valid = (np.take_along_axis(x, order, axis=1) for x in (r, s, m, valid))
    if samples.log_weights is not None:
        lw = np.take_along_axis(_host(samples.log_weights), order, axis=1)
        with np.errstate(divide="ignore"):
            lw = np.where(valid, lw + np.log(np.where(valid, m, 1.0)), -np.inf)
        lw = lw - lw.max(axis=1, keepdims=True)
        q = np.where(valid, np.exp(lw), 0.0)
        q = q / q.sum(axis=1, keepdims=True)
    else:
        q = m / m.sum(axis=1, keepdims=True)
    lp = None if log_probs is None else np.take_along_axis(_host(log_probs), order, axis=1)

    p, n = r.shape
    idx = np.broadcast_to(np.arange(n), (p, n))
    same = np.zeros((p, n), bool)
    same[:, 1:] = (r[:, 1:] == r[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    starts = ~same
    ends = np.ones((p, n), bool)
    ends[:, :-1] = starts[:, 1:]
    start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n - 1), 1), axis=1), 1)

    cm = np.cumsum(m, axis=1)
    a = np.take_along_axis(cm - m, start, axis=1)
    b = np.take_along_axis(cm, end, axis=1)
    big_n = cm[:, -1]

    # Centred values: the U-statistic is shift-equivariant (its weights sum to 1).
    wt = q if (samples.exact or samples.log_weights is not None) else m / big_n[:, None]
    y = np.stack([s - np.sum(wt * s, axis=1, keepdims=True), r - np.sum(wt * r, axis=1, keepdims=True)], axis=-1)
    y = np.where(valid[..., None], y, 0.0)
    group_y = _group_sum(m[..., None] * y, starts)

    group_q = _group_sum(q, starts)
    f_lo = np.take_along_axis(_excl_cumsum(q), start, axis=1)
    f_hi_left = np.take_along_axis(np.cumsum(q, axis=1), end, axis=1)
    s_hi = np.take_along_axis(_rev_excl_cumsum(q), end, axis=1)  # mass above the group, summed from the top
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f_hi = np.where(f_hi_left < 0.5, np.log(f_hi_left), np.log1p(-s_hi))
        ratio = np.clip(group_q / np.exp(log_f_hi), 0.0, 1.0)
        log_ratio = np.where(f_lo > 0, np.log1p(-ratio), -np.inf)
    mid = f_lo + group_q / 2
    tied = np.any(valid & (b - a >= 2), axis=1)
    return _Sorted(y, m, q, lp, start, end, a, b, group_y, group_q, log_f_hi, log_ratio, mid, order, big_n, tied)


def _stirling_series(n):
    inv2 = 1 / (n * n)
    return (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680))) / n


def _stirlerr_table(top: int = 30) -> np.ndarray:
    """``stirlerr(k)`` for ``k = 0 .. top - 1`` by the exact downward recursion
    ``stirlerr(k) = stirlerr(k+1) - 1 + (k + 1/2) log1p(1/k)`` from the series at ``top``."""
    t = np.zeros(top + 1)
    t[top] = _stirling_series(float(top))
    for k in range(top - 1, 0, -1):
        t[k] = t[k + 1] - 1 + (k + 0.5) * np.log1p(1 / k)
    return t[:top]


_STIRLERR = _stirlerr_table()


def _stirlerr(n):
    """``log n! - (n log n - n + log(2 pi n) / 2)`` for whole ``n >= 1`` (Loader's stirlerr): a table
    below 30, Stirling's series (four terms, truncation error below 1e-16) from 30 on."""
    big = n >= len(_STIRLERR)
    series = _stirling_series(np.where(big, n, float(len(_STIRLERR))))
    return np.where(big, series, _STIRLERR[np.clip(n, 0, len(_STIRLERR) - 1).astype(np.int64)])


def _log_binom(x, k):
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
        + _stirlerr(xs) - _stirlerr(ks) - _stirlerr(js)
    )
    val = np.where(inner, val, 0.0)
    return np.where(j < 0, -np.inf, val)


def _log_binom_at(x, k, x_max):
    """``_log_binom(x, k)`` for whole ``x`` in ``[-2, x_max]``: from a table when that range is
    not much larger than ``x`` itself (row positions repeat), else directly."""
    if x_max + 3 <= x.size:
        table = _log_binom(np.arange(-2.0, x_max + 1), k)
        return table[(x + 2).astype(np.int64)]
    return _log_binom(x, k)


def _diff(lo, hi):
    """``exp(hi) - exp(lo)`` for ``lo <= hi`` (logs, ``-inf`` allowed), without cancellation."""
    finite = hi > -np.inf
    hi_s = np.where(finite, hi, 0.0)
    with np.errstate(invalid="ignore"):
        d = np.where(finite, lo - hi_s, -np.inf)
    return np.where(finite, np.exp(hi_s) * -np.expm1(d), 0.0)


def _loo_variance(stat_minus, m, big_n):
    """Jackknife variance ``(N-1)/N sum_i (T_-i - mean T_-)^2`` over draws (rows weighted by counts)."""
    mean = np.sum(m * stat_minus, axis=1) / big_n
    dev = np.where(m > 0, stat_minus - mean[:, None], 0.0)
    return (big_n - 1) / big_n * np.sum(m * dev**2, axis=1)


def _per_n(st: _Sorted, n: int, *, exact: bool) -> dict:
    """Per-prompt statistics of BoN_n: a dict of ``[P]`` (or ``[P, V]``) float64 arrays."""
    big_n = st.big_n[:, None]
    m, a, b = st.m, st.a, st.b
    size = b - a
    out = {}

    # The exact law of BoN on the (empirical or exact) law: mass F_hi^n - F_lo^n on each level.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_d = n * st.log_f_hi + np.log(-np.expm1(n * st.log_ratio))
        pos = (st.group_q > 0) & (st.q > 0) & (log_d > -np.inf)
        rho = np.where(pos, np.exp(log_d) * st.q / np.where(pos, st.group_q, 1.0), 0.0)
        out["kl_exact"] = np.sum(np.where(pos, rho * (log_d - np.log(np.where(pos, st.group_q, 1.0))), 0.0), axis=1)

    if exact:
        w = rho
        out["u"] = np.einsum("pn,pnv->pv", w, st.y)
        out["u_se"] = np.zeros_like(out["u"])
        out["win"] = np.sum(w * st.mid, axis=1)
        out["win_se"] = np.zeros_like(out["win"])
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            la, lb, la1, lb1, lb2 = _log_binom_at(np.stack([a, b, a - 1, b - 1, b - 2]), n, st.big_n.max())
            log_cn, log_c1 = _log_binom(np.stack([big_n, big_n - 1]), n)
            log_cw, log_cw1 = _log_binom(np.stack([big_n, big_n - 1]), n + 1)

            # U-statistic weights: the group covering draws a+1..b gets (C(b,n) - C(a,n)) / C(N,n).
            frac = np.where(m > 0, m / np.where(size > 0, size, 1.0), 0.0)
            w = _diff(la - log_cn, lb - log_cn) * frac
            w = w / np.sum(w, axis=1, keepdims=True)  # sums to 1 exactly in exact arithmetic
            mean_y = np.einsum("pn,pnv->pv", m, st.y) / big_n
            out["u"] = np.einsum("pn,pnv->pv", w, st.y) - mean_y

            # Jackknife: removing one draw of the group (a, b] leaves groups below at (a, b), groups
            # above at (a-1, b-1) and the own group at (a, b-1) without that draw's value; the
            # normaliser becomes C(N-1, n).
            below = (_diff(la - log_c1, lb - log_c1) * frac)[..., None] * st.y
            above = (_diff(la1 - log_c1, lb1 - log_c1) * frac)[..., None] * st.y
            own_w = _diff(la - log_c1, lb1 - log_c1)[..., None]
            others = np.where((size > 1)[..., None], (st.group_y - st.y) / np.maximum(size - 1, 1)[..., None], 0.0)
            u_minus = _take(_excl_cumsum(below), st.start) + own_w * others + _take(_rev_excl_cumsum(above), st.end)
            total = np.einsum("pn,pnv->pv", m, st.y)[:, None, :]
            g_minus = u_minus - (total - st.y) / (big_n - 1)[..., None]
            var = np.stack([_loo_variance(g_minus[..., v], m, st.big_n) for v in range(g_minus.shape[-1])], -1)
            out["u_se"] = np.where((st.big_n >= n + 1)[:, None], np.sqrt(np.maximum(var, 0.0)), np.nan)

            # Win rate against a base draw: the U-statistic of degree n + 1 (ties count one half).
            # By Vandermonde, a group of M draws above a others holds the maximum of an (n+1)-subset
            # with t of its draws in C(M, t) C(a, n+1-t) ways; the base draw is one of those t with
            # probability t/(n+1) and then ties (t >= 2) or loses (t = 1):
            # win = 1 - sum_groups M (C(b-1, n) + C(a, n)) / 2 / C(N, n+1) / (n+1).
            v = np.sum(m * 0.5 * (np.exp(lb1 - log_cw) + np.exp(la - log_cw)), axis=1)
            out["win"] = np.where(st.big_n >= n + 1, 1 - v / (n + 1), np.nan)
            e_lb1, e_lb2, e_la, e_la1 = (np.exp(x - log_cw1) for x in (lb1, lb2, la, la1))
            below_w = m * 0.5 * (e_lb1 + e_la)
            above_w = m * 0.5 * (e_lb2 + e_la1)
            own = 0.5 * (size - 1) * (e_lb2 + e_la)
            v_minus = _take(_excl_cumsum(below_w), st.start) + own + _take(_rev_excl_cumsum(above_w), st.end)
            win_var = _loo_variance(1 - v_minus / (n + 1), m, st.big_n)
            out["win_se"] = np.where(st.big_n >= n + 2, np.sqrt(np.maximum(win_var, 0.0)), np.nan)
    if st.lp is not None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            bei = _beirami(np, np.where(m > 0, st.lp, -1.0), float(n))
        out["kl_beirami"] = np.sum(np.where(m > 0, w * bei, 0.0), axis=1)
    else:
        out["kl_beirami"] = np.full(st.big_n.shape, np.nan)
    out["kl_analytic"] = np.full(st.big_n.shape, math.log(n) - (n - 1) / n)
    return out


def _core(samples: Samples, ns: np.ndarray, log_probs):
    st = _prepare(samples, log_probs)
    outs = [_per_n(st, int(n), exact=samples.exact) for n in ns]
    res = {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}  # [P, K, ...]
    # n = 1 is the base model itself: no gain, no KL, a win rate of 1/2 (exactly, not up to rounding).
    one = np.asarray(ns) == 1
    for k in ("u", "kl_exact", "kl_beirami"):
        res[k][:, one] = np.where(np.isnan(res[k][:, one]), np.nan, 0.0)
    res["win"][:, one] = 0.5
    return res, st


# ----------------------------------------------------------------------------------------------
# Results.


class BestOfNPrompts(NamedTuple):
    """Per-prompt best-of-n statistics, each ``[prompts, len(ns)]`` (``draws``: ``[prompts]``).

    Attributes:
      gain, gain_se: expected score gain of BoN (U-statistic) and its jackknife SE.
      reward_gain, reward_gain_se: the same measured with the rewards (equal to ``gain`` without scores).
      kl: the KL used for the frontier comparison (see ``BestOfN.kl_method``).
      kl_exact, kl_beirami: the exact discrete KL and Beirami's estimate (NaN without log-probs).
      win_rate, win_rate_se: probability that BoN beats a base draw (ties count 1/2).
      frontier_gain: the prompt's frontier gain at ``kl`` (NaN where it is not computed).
      efficiency: ``reward_gain / frontier_gain``.
      draws: ``[prompts]`` number of draws ``N``.
      tied: ``[prompts]`` some rewards of the prompt tie.
    """

    gain: Array
    gain_se: Array
    reward_gain: Array
    reward_gain_se: Array
    kl: Array
    kl_exact: Array
    kl_beirami: Array
    win_rate: Array
    win_rate_se: Array
    frontier_gain: Array
    efficiency: Array
    draws: Array
    tied: Array

    def _columns(self):
        return tables.columns(self, shape_of="gain", index=("prompt", "n_index"))

    def _summary(self):
        return tables.summary(self, shape_of="gain", headline=[
            f"gain {tables.span(self.gain)}", f"KL {tables.span(self.kl)}", f"draws {tables.span(self.draws)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "n", "gain", "gain_se", "reward_gain", "reward_gain_se", "kl", "kl_analytic", "kl_exact",
        "kl_beirami", "frontier_gain", "frontier_gain_se", "frontier_beta", "frontier_status",
        "saturated", "frontier_reasons", "efficiency", "win_rate", "win_rate_se", "win_rate_frontier", "prompts",
    ],
    meta_fields=["kl_method", "notices"],
)
@dataclasses.dataclass(frozen=True)
class BestOfN:
    """Best-of-n against the frontier; fields ``[len(ns)]``, pooled over prompts (means).

    Attributes:
      n: the numbers of draws.
      gain, gain_se: expected gain of BoN measured with the scores (U-statistic; SE by the
        jackknife, pooled as ``sqrt(sum se_x^2) / P``; NaN where some prompt has ``N = n``).
      reward_gain, reward_gain_se: the same measured with the rewards ``r`` (what the frontier is
        of; equal to ``gain`` without separate scores).
      kl: the KL of BoN used against the frontier, the mean over prompts of the per-prompt choice
        described by ``kl_method``.
      kl_analytic: ``log n - (n-1)/n``.
      kl_exact: exact discrete KL on each prompt's (empirical or exact) law, mean over prompts.
      kl_beirami: Beirami's estimator averaged over BoN draws, mean over prompts (NaN without
        log-probabilities; see ``notices``).
      frontier_gain, frontier_gain_se, frontier_beta: the pooled frontier at ``kl``
        (``jaxlimits.max_gain_at_kl``); NaN where the KL is at or beyond what the samples show.
      frontier_status: ``jaxlimits.status.Status`` codes of that solve
        (``NOT_COMPUTED`` with ``frontier=False``).
      saturated: the frontier value at ``kl`` cannot be trusted (or was not computed).
      frontier_reasons: the pooled trust rule's reasons at ``kl`` (``int32`` bitmask,
        ``jaxlimits.estimators.reason_names`` spells it; 0 where trusted or not computed).
      efficiency: ``reward_gain / frontier_gain`` (MATH.md §8).
      win_rate, win_rate_se: probability that BoN beats a base draw, ties one half (BoNBoN;
        ``n/(n+1)`` for continuous rewards); NaN where some prompt has ``N < n + 1``.
      win_rate_frontier: the best win rate at ``kl``: 1/2 plus the frontier gain of the
        mid-rank quantiles ``Q(r)``.
      prompts: :class:`BestOfNPrompts`, ``[prompts, len(ns)]``.
      kl_method: how ``kl`` was chosen.
      notices: what the numbers assume or could not compute, for people.
    """

    n: Array
    gain: Array
    gain_se: Array
    reward_gain: Array
    reward_gain_se: Array
    kl: Array
    kl_analytic: Array
    kl_exact: Array
    kl_beirami: Array
    frontier_gain: Array
    frontier_gain_se: Array
    frontier_beta: Array
    frontier_status: Array
    saturated: Array
    frontier_reasons: Array
    efficiency: Array
    win_rate: Array
    win_rate_se: Array
    win_rate_frontier: Array
    prompts: BestOfNPrompts
    kl_method: str
    notices: tuple[str, ...]

    def _columns(self):
        return tables.columns(self, shape_of="n", exclude=("notices",))

    def _summary(self):
        return tables.summary(self, shape_of="n", headline=[
            f"n {tables.span(self.n)}", f"KL {tables.span(self.kl)} ({self.kl_method})",
            f"reward gain {tables.span(self.reward_gain)}", f"efficiency {tables.span(self.efficiency)}",
            f"{int(np.sum(np.asarray(self.saturated)))} of {np.size(self.saturated)} frontier values flagged",
            f"{len(self.notices)} notices" if self.notices else ""])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


# ----------------------------------------------------------------------------------------------
# Validation.


def _check_ns(ns, samples: Samples) -> np.ndarray:
    arr = np.asarray(ns)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ns must be a non-empty list of numbers of draws, got shape {arr.shape}")
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"ns must be whole numbers, got {ns!r}")
    bad = ~np.isfinite(arr.astype(float)) | (arr < 1) | (arr != np.round(arr))
    if bad.any():
        raise ValueError(f"ns[{int(np.flatnonzero(bad)[0])}] = {arr[bad][0]!r}: n must be a whole number >= 1")
    if not samples.exact:
        draws = np.asarray(samples.draws())
        worst = int(np.argmin(draws))
        if arr.max() > draws[worst]:
            raise PromptError(
                f"n = {int(arr.max())} exceeds the {int(draws[worst])} draws of {PromptError.PLACE}: best-of-n "
                f"from samples needs n <= N on every prompt", worst
            )
    return arr.astype(np.int64)


def _check_iid(samples: Samples, what: str) -> None:
    if samples.exact or samples.log_weights is None:
        return
    lw = np.asarray(samples.log_weights)
    valid = np.asarray(samples.valid())
    spread = np.where(valid, lw, -np.inf).max(axis=1) - np.where(valid, lw, np.inf).min(axis=1)
    if np.any(spread > 0):
        p = int(np.flatnonzero(spread > 0)[0])
        raise PromptError(
            f"{what} needs i.i.d. unweighted base samples (counts are fine), but {PromptError.PLACE} carries "
            f"importance log-weights that differ: a best-of-n draw from the sampler q is not one from pi0. "
            f"Resample to pi0 first, or give the law exactly (Samples.from_law)", p
        )


def _check_log_probs(log_probs, samples: Samples):
    if log_probs is None:
        return None
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim == 1 and samples.num_prompts == 1:
        lp = lp[None]
    if lp.shape != tuple(samples.rewards.shape):
        raise ValueError(f"log_probs has shape {lp.shape} but the samples have shape {tuple(samples.rewards.shape)}")
    valid = np.asarray(samples.valid())
    bad = valid & ~(np.isfinite(lp) | (lp == -np.inf))
    bad |= valid & (lp > 0)
    if bad.any():
        p, i = (int(x) for x in np.argwhere(bad)[0])
        raise PromptError(
            f"log_probs[{p}, {i}] = {float(lp[p, i])!r} is not a log-probability (must be <= 0 and not NaN): "
            f"{PromptError.PLACE}, sample {i}", p, i
        )
    return np.where(valid, lp, -1.0)


# ----------------------------------------------------------------------------------------------
# Public API.


#: Frontier solves get their targets padded to a multiple of this (then a power of two), so
#: calls with a few more or fewer targets share one compilation of the solver.
TARGET_BUCKET = 8


def _solve_bucketed(fn, samples: Samples, targets, **kwargs):
    """``fn(samples, targets, pooled=True, throw=False, **kwargs)`` on targets padded with zeros to
    a bucket size, sliced back: one compiled solver serves every number of targets in the bucket."""
    t = np.asarray(targets, np.float64).reshape(-1)
    size = max(TARGET_BUCKET, 1 << int(np.ceil(np.log2(max(len(t), 1)))))
    padded = np.zeros(size)
    padded[: len(t)] = t
    sol = fn(samples, jnp.asarray(padded, samples.dtype), pooled=True, throw=False, **kwargs)
    return jax.tree.map(lambda x: x[: len(t)] if np.ndim(x) else x, sol)


def quantile_samples(samples: Samples) -> Samples:
    r"""The samples with rewards (and scores) replaced by their within-prompt mid-rank quantile.

    ``Q(r) = F(r-) + P(r)/2`` under each prompt's base law (counts and log-weights respected), so
    the frontier of the result is the win-rate frontier minus 1/2 (MATH.md §8): win rate is
    linear in the policy, ``P(Y > Y_0) + P(Y = Y_0)/2 = E_pi[Q(r)]``.

    Examples:
      >>> import jaxlimits as jl
      >>> from jaxlimits import bon
      >>> bon.quantile_samples(jl.Samples([[3.0, 1.0, 2.0, 2.0]])).rewards.tolist()
      [[0.875, 0.125, 0.5, 0.5]]
    """
    st = _prepare(samples.neutralised().replace(scores=None), None)
    q = np.zeros_like(st.mid)
    np.put_along_axis(q, st.order, st.mid, axis=1)
    q = np.where(np.asarray(samples.valid()), q, 0.0)
    return Samples.tree_unflatten(
        (samples.exact,), (jnp.asarray(q, samples.dtype), None, samples.log_weights, samples.counts, samples.mask))


def best_of_n(
    samples: Samples,
    ns: Sequence[int] | Array,
    *,
    log_probs=None,
    kl_method: str = "auto",
    frontier: bool = True,
    per_prompt_frontier: bool = False,
    memory_budget: int | None = None,
) -> BestOfN:
    r"""Best-of-n from base-model samples, held against the frontier (MATH.md §8).

    .. math::

       \widehat{E}[s(\mathrm{BoN}_n)] = \sum_{i=n}^{N} \frac{\binom{i-1}{n-1}}{\binom{N}{n}} s_{(i)},
       \qquad \mathrm{efficiency} = \frac{\mathrm{gain}_{BoN}(n)}{\mathrm{gain}^*(K_n)}.

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]`` of i.i.d. base draws (counts allowed; an
        exact law, ``Samples.from_law``, gives exact answers). Importance-weighted samples are
        refused: a best-of-n draw needs draws from ``pi0`` itself.
      ns: numbers of draws, each ``1 <= n <= N`` (for samples).
      log_probs: optional ``[P, N]`` base-model log-probabilities of the samples (sequence
        log-probabilities under ``pi0``), for Beirami's KL estimator.
      kl_method: the KL of BoN used against the frontier. ``"auto"``: per prompt, the exact
        discrete formula where rewards tie (or for an exact law: the analytic formula is only an
        upper bound there), the analytic ``log n - (n-1)/n`` where all draws are distinct
        (continuous rewards; the exact formula on N samples saturates at ``log N``).
        ``"analytic"``, ``"exact"`` or ``"beirami"`` (needs ``log_probs``) force one.
      frontier: compute the frontier gain at ``kl``, the efficiency and the win-rate frontier
        (needs ``jaxlimits.max_gain_at_kl``); False skips it (those fields are NaN).
      per_prompt_frontier: also each prompt's own frontier at its own KL
        (``prompts.frontier_gain``, ``prompts.efficiency``).
      memory_budget: bytes of working memory for the frontier solves.

    Returns:
      A :class:`BestOfN` with ``[len(ns)]`` fields (pooled: means over prompts) and per-prompt
      values in ``prompts``.

    Raises:
      ValueError: an ``n`` above some prompt's number of draws, importance-weighted samples,
        log-probabilities that are not ``<= 0``, or an unknown ``kl_method``.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> r = np.random.default_rng(0).uniform(size=(50, 400))
      >>> res = jl.best_of_n(jl.Samples(r), [1, 2, 4], frontier=False)
      >>> [round(float(g) + 0.5, 1) for g in res.gain]  # E[max of n U(0,1)] = n/(n+1)
      [0.5, 0.7, 0.8]
    """
    if not isinstance(samples, Samples):
        raise TypeError(f"best_of_n: samples must be a jaxlimits.Samples, got {type(samples).__name__}")
    if kl_method not in KL_METHODS:
        raise ValueError(f"kl_method must be one of {', '.join(KL_METHODS)}; got {kl_method!r}")
    samples = samples.neutralised()  # NaN under a mask must not reach the sums
    _check_iid(samples, "best_of_n")
    ns_arr = _check_ns(ns, samples)
    lp = _check_log_probs(log_probs, samples)
    if kl_method == "beirami" and lp is None:
        raise ValueError("kl_method='beirami' needs log_probs: the base-model log-probability of every sample")
    notices: list[str] = []
    res, st = _core(samples, ns_arr, lp)
    tied, draws = st.tied, st.big_n
    p, k = samples.num_prompts, len(ns_arr)
    if lp is None:
        notices.append(
            "kl_beirami: not computed (NaN): Beirami's estimator needs the base-model log-probability of each "
            "sample (log_probs)"
        )

    kl_exact, kl_analytic = res["kl_exact"], res["kl_analytic"]
    if kl_method == "auto":
        use_exact = tied | samples.exact
        kl = np.where(use_exact[:, None], kl_exact, kl_analytic)
        if samples.exact:
            notices.append("kl: the exact discrete formula on the exact law")
        else:
            n_exact = int(np.sum(use_exact))
            notices.append(
                f"kl: the exact discrete formula on the {n_exact} of {p} prompts whose rewards tie (log n - (n-1)/n "
                f"is only an upper bound there), log n - (n-1)/n on the {p - n_exact} whose draws are all distinct"
            )
    elif kl_method == "analytic":
        kl = kl_analytic
        if np.any(tied) or samples.exact:
            notices.append("kl: log n - (n-1)/n although rewards tie (it is only an upper bound there)")
    elif kl_method == "exact":
        kl = kl_exact
        if not samples.exact:
            notices.append("kl: the exact discrete formula on the empirical law (it saturates at log N as n nears N)")
    else:
        kl = res["kl_beirami"]
        notices.append("kl: Beirami et al.'s estimator, averaged over best-of-n draws")

    gain, reward_gain = res["u"][..., 0], res["u"][..., 1]
    gain_se, reward_gain_se = res["u_se"][..., 0], res["u_se"][..., 1]
    if not samples.exact and np.any(ns_arr[None, :] >= draws[:, None]):
        notices.append("gain_se: NaN where n equals a prompt's number of draws (a single subset: no jackknife)")
    if not samples.exact and np.any(ns_arr[None, :] + 1 > draws[:, None]):
        notices.append("win_rate: NaN where a prompt has fewer than n + 1 draws (the unbiased estimate needs them)")
    if samples.has_scores:
        notices.append("gain is measured with the scores; efficiency uses reward_gain (the frontier is of the rewards)")

    dt = samples.dtype
    as_dt = lambda x: jnp.asarray(x, dt)  # noqa: E731
    kl = np.maximum(kl, 0.0)  # rounding can leave -1e-17 at n = 1
    kl_pool = kl.mean(axis=0)
    nan = np.full((k,), np.nan)
    frontier_gain, frontier_se, frontier_beta, win_front = nan, nan, nan, nan
    status = np.full((k,), int(Status.NOT_COMPUTED), np.int32)
    saturated = np.ones((k,), bool)
    reasons = np.zeros((k,), np.int32)
    pp_front = np.full(kl.shape, np.nan)
    if frontier:
        from . import inversion

        sol = _solve_bucketed(inversion.max_gain_at_kl, samples, kl_pool, memory_budget=memory_budget)
        frontier_gain, frontier_se, frontier_beta = (
            np.asarray(x, np.float64) for x in (sol.gain, sol.gain_se, sol.beta))
        status = np.asarray(sol.status, np.int32)
        saturated = np.asarray(sol.saturated) | (status != Status.OK)
        reasons = np.where(status == Status.OK, np.asarray(sol.reasons), 0).astype(np.int32)
        wsol = _solve_bucketed(inversion.max_gain_at_kl, quantile_samples(samples), kl_pool,
                               memory_budget=memory_budget)
        win_front = 0.5 + np.asarray(wsol.gain, np.float64)
        for code in sorted(set(status.tolist()) - {int(Status.OK)}):
            which = [int(n) for n, c in zip(ns_arr, status) if c == code]
            notices.append(f"frontier at n = {which}: {MESSAGES[code]}")
        shaky = np.asarray(sol.saturated) & (status == Status.OK)
        if np.any(shaky):
            from .estimators import reason_names

            why = ", ".join(f"{int(n)}: {reason_names(int(r)) or 'few'}" for n, r in zip(ns_arr[shaky], reasons[shaky]))
            notices.append(f"frontier at n = {[int(n) for n in ns_arr[shaky]]}: flagged by the trust rule ({why})")
        if per_prompt_frontier:
            pp_front = np.asarray(_per_prompt_frontier(samples, as_dt(kl), memory_budget), np.float64)
    elif per_prompt_frontier:
        raise ValueError("per_prompt_frontier needs frontier=True")

    with np.errstate(divide="ignore", invalid="ignore"):  # undefined at n = 1 (zero KL, zero gain)
        pp_eff = np.where((kl > 0) & (pp_front > 0), reward_gain / pp_front, np.nan)
        efficiency = np.where((kl_pool > 0) & (frontier_gain > 0), reward_gain.mean(axis=0) / frontier_gain, np.nan)
    if np.any(efficiency > 1):
        notices.append(
            f"efficiency > 1 at n = {[int(n) for n in ns_arr[efficiency > 1]]}: no policy beats the frontier in "
            f"population, so the frontier estimate is low there (ratio estimators are biased low with few "
            f"effective samples; best-of-n's U-statistic is unbiased): more samples per prompt are needed"
        )
    prompts = BestOfNPrompts(
        gain=as_dt(gain), gain_se=as_dt(gain_se), reward_gain=as_dt(reward_gain), reward_gain_se=as_dt(reward_gain_se),
        kl=as_dt(kl), kl_exact=as_dt(kl_exact), kl_beirami=as_dt(res["kl_beirami"]), win_rate=as_dt(res["win"]),
        win_rate_se=as_dt(res["win_se"]), frontier_gain=as_dt(pp_front), efficiency=as_dt(pp_eff),
        draws=as_dt(draws), tied=jnp.asarray(tied),
    )
    return BestOfN(
        n=jnp.asarray(ns_arr),
        gain=as_dt(gain.mean(axis=0)),
        gain_se=as_dt(pooling.pooled_se(gain_se)),
        reward_gain=as_dt(reward_gain.mean(axis=0)),
        reward_gain_se=as_dt(pooling.pooled_se(reward_gain_se)),
        kl=as_dt(kl_pool),
        kl_analytic=as_dt(kl_analytic[0]),
        kl_exact=as_dt(kl_exact.mean(axis=0)),
        kl_beirami=as_dt(res["kl_beirami"].mean(axis=0)),
        frontier_gain=as_dt(frontier_gain),
        frontier_gain_se=as_dt(frontier_se),
        frontier_beta=as_dt(frontier_beta),
        frontier_status=jnp.asarray(status),
        saturated=jnp.asarray(saturated),
        frontier_reasons=jnp.asarray(reasons),
        efficiency=as_dt(efficiency),
        win_rate=as_dt(res["win"].mean(axis=0)),
        win_rate_se=as_dt(pooling.pooled_se(res["win_se"])),
        win_rate_frontier=as_dt(win_front),
        prompts=prompts,
        kl_method=kl_method,
        notices=tuple(notices),
    )


def _per_prompt_frontier(samples: Samples, kl: Array, memory_budget) -> Array:
    """Each prompt's frontier gain at its own KL budgets ``kl`` ``[P, K]`` (NaN where unsolved)."""
    from . import inversion

    rows = jax.tree.map(lambda x: x[:, None, :], samples)

    def one(sub, budgets):
        return inversion.max_gain_at_kl(sub, budgets, pooled=True, throw=False, memory_budget=memory_budget).gain

    return jax.vmap(one)(rows, kl)


# ----------------------------------------------------------------------------------------------
# Soft best-of-n.


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
    if not isinstance(samples, Samples):
        raise TypeError(f"soft_best_of_n: samples must be a jaxlimits.Samples, got {type(samples).__name__}")
    samples = samples.neutralised()
    _check_iid(samples, "soft_best_of_n")
    ns_arr = _check_ns(ns, samples)
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
