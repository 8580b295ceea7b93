r"""PSIS k-hat: how heavy the tail of the tilted weights is, per (prompt, beta).

The tilted estimators of :mod:`jaxlimits.estimators` are self-normalised importance sampling with
weights ``exp(r / beta)`` (times the base weights). Pareto-smoothed importance sampling (Vehtari,
Simpson, Gelman, Yao, Gabry, "Pareto smoothed importance sampling", JMLR 25(72), 2024) fits a
generalised Pareto law to the ``M`` largest weights; its shape ``k`` says how many moments the
weights have: the variance is infinite for ``k >= 1/2`` and the mean for ``k >= 1`` (there the
tilt itself may not exist: ``E exp(r/beta) = infinity``). The paper's reliability threshold is
``k < min(1 - 1/log10(N), 0.7)`` (:func:`khat_threshold`).

The fit is the profile (empirical Bayes) estimator of Zhang & Stephens (Technometrics 51(3),
2009) with the weakly informative prior of Vehtari et al. (``k`` pulled towards 0.5 with the
weight of 10 observations), as ``arviz_stats``' ``psislw`` computes it; ``M = 3 sqrt(N)`` for
``N > 225`` draws and ``N / 5`` below (fewer than 5 tail draws: no fit, NaN).

For plain samples and counts the ``M`` largest weights are the weights of the ``M`` largest
rewards at every beta, so the rewards are sorted once per prompt; with importance weights the
order changes with beta and the top ``M`` are taken per (prompt, beta). Exact value for tests:
rewards with an exponential upper tail of rate ``a`` give Pareto weights with ``k = 1/(a beta)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .moments import valid_parts

Array = jax.Array

#: The prior of Vehtari et al. (2024): ``k`` shrunk to ``PRIOR_K_MEAN`` with ``PRIOR_K_WEIGHT`` draws.
PRIOR_K_WEIGHT = 10.0
PRIOR_K_MEAN = 0.5
#: Zhang & Stephens' prior scale for the profile grid.
_PRIOR_BS = 3.0
#: Fewer tail draws than this: no fit (NaN), as in ``arviz_stats``.
MIN_TAIL = 5


def tail_size(n):
    """Number ``M`` of largest weights in the fit for ``n`` draws (arrays or ints)."""
    n = np.asarray(n) if not isinstance(n, jax.Array) else n
    xp = jnp if isinstance(n, jax.Array) else np
    return xp.where(n > 225, xp.floor(3 * xp.sqrt(n)), xp.floor(n / 5))


def tail_slots(num_samples: int, counts: bool) -> int:
    """Static width of :func:`tilted_khat`'s tail arrays for ``num_samples`` rows (``counts``:
    rows carry multiplicities, room for the tail of up to 4x as many draws as rows)."""
    m = int(min(num_samples, tail_size(num_samples))) if not counts else int(max(2 * tail_size(num_samples), 5))
    return max(m + 1, MIN_TAIL + 1)


def fit_bytes(num_samples: int, num_betas: int, counts: bool, itemsize: int) -> int:
    """Working memory of :func:`tilted_khat` per prompt: its profile grid ``[betas, 30 + sqrt K, K]``."""
    k = tail_slots(num_samples, counts)
    return num_betas * (30 + math.isqrt(k)) * k * itemsize


def khat_threshold(n):
    """The reliability threshold ``min(1 - 1/log10(n), 0.7)`` of Vehtari et al. (2024) for ``n`` draws."""
    n = jnp.maximum(jnp.asarray(n), 10.0001)
    return jnp.minimum(1 - 1 / jnp.log10(n), 0.7)


def gpd_shape(exceed: Array, n: Array) -> Array:
    """Zhang-Stephens shape estimate (with the PSIS prior) from exceedances over a threshold.

    Args:
      exceed: ``[..., K]`` non-negative exceedances ``w_(j) - w_(M+1)`` of the largest weights,
        **descending** (``exceed[..., 0]`` the largest); only the first ``n`` are used.
      n: ``[...]`` number of exceedances in the tail (``<= K``; below :data:`MIN_TAIL`: NaN).

    Returns:
      ``[...]`` the shape ``k``; NaN where there are too few draws or the tail is flat (ties).
    """
    return gpd_fit(exceed, n)[0]


def gpd_fit(exceed: Array, n: Array, prior_weight: float = PRIOR_K_WEIGHT) -> tuple[Array, Array]:
    """Zhang-Stephens fit of a generalised Pareto law ``GPD(k, sigma)`` to exceedances.

    The profile (empirical Bayes) estimator of Zhang & Stephens (2009): ``theta = -k / sigma``
    averaged over a grid weighted by its profile likelihood, then ``k = mean log1p(-theta x)``
    and ``sigma = -k / theta`` (before the prior; ``arviz_stats``' ``gpdfit``). ``theta < 1/max x``
    on the whole grid, so a fitted finite upper end ``sigma / |k|`` (``k < 0``) lies above the
    largest exceedance.

    Args:
      exceed: ``[..., K]`` non-negative exceedances, **descending**; only the first ``n`` are used.
      n: ``[...]`` number of exceedances (below :data:`MIN_TAIL`: NaN).
      prior_weight: ``k`` is shrunk to :data:`PRIOR_K_MEAN` with the weight of this many
        observations (PSIS's prior, the default); 0 gives the plain Zhang-Stephens estimate.

    Returns:
      ``(k, sigma)``, each ``[...]``, in the units of ``exceed``; NaN where there are too few
      draws or the tail is flat (ties).
    """
    dtype = exceed.dtype
    k_slots = exceed.shape[-1]
    n = jnp.asarray(n, dtype)
    slot = jnp.arange(k_slots)
    valid = slot < n[..., None]
    x_max = exceed[..., 0]
    # arviz: ary[int(n/4 + 0.5) - 1] of the ascending tail = descending index n - int(n/4 + 0.5)
    q_idx = (n - jnp.floor(n / 4 + 0.5)).astype(jnp.int32)
    x_q = jnp.take_along_axis(exceed, jnp.clip(q_idx, 0, k_slots - 1)[..., None], axis=-1)[..., 0]
    ok = (n >= MIN_TAIL) & (x_max > 0) & (x_q > 0)
    x_max = jnp.where(ok, x_max, 1)
    x_q = jnp.where(ok, x_q, 1)
    m_est = 30 + jnp.floor(jnp.sqrt(n))
    j_slots = 30 + int(math.isqrt(k_slots))
    j = jnp.arange(1, j_slots + 1, dtype=dtype)
    j_valid = j <= m_est[..., None]
    b = 1 - jnp.sqrt(m_est[..., None] / jnp.where(j_valid, j - 0.5, 1))
    b = b / (_PRIOR_BS * x_q[..., None]) + 1 / x_max[..., None]
    x = jnp.where(valid, exceed, 0)

    def mean_log1p(bb):  # [..., J] -> mean over the tail of log1p(-b x)
        terms = jnp.log1p(-bb[..., :, None] * x[..., None, :])
        return jnp.sum(jnp.where(valid[..., None, :], terms, 0), axis=-1) / n[..., None]

    k_grid = mean_log1p(b)
    profile = n[..., None] * (jnp.log(-b / k_grid) - k_grid - 1)
    profile = jnp.where(j_valid, profile, -jnp.inf)
    weights = jax.nn.softmax(profile, axis=-1)
    b_post = jnp.sum(jnp.where(j_valid, weights * b, 0), axis=-1)
    k = mean_log1p(b_post[..., None])[..., 0]
    sigma = -k / b_post
    k = (n * k + prior_weight * PRIOR_K_MEAN) / (n + prior_weight)
    return jnp.where(ok, k, jnp.nan), jnp.where(ok, sigma, jnp.nan)


def _expand_counts(values: Array, counts: Array, k_slots: int):
    """The first ``k_slots`` draws of rows sorted descending, each row repeated ``count`` times."""
    cum = jnp.cumsum(counts, axis=-1)
    pos = jnp.arange(k_slots, dtype=counts.dtype)
    idx = jax.vmap(lambda c: jnp.searchsorted(c, pos, side="right"))(cum.reshape(-1, cum.shape[-1]))
    idx = jnp.minimum(idx.reshape(cum.shape[:-1] + (k_slots,)), values.shape[-1] - 1)
    return jnp.take_along_axis(values, idx, axis=-1)


def _relative_exceedances(a: Array) -> Array:
    """``expm1(a_j) / expm1(a_0)`` for log-ratios ``a [..., K]`` over the threshold (no overflow)."""
    a = jax.lax.stop_gradient(jnp.maximum(a, 0))
    big = a > 1
    log_em1 = jnp.where(big, a + jnp.log1p(-jnp.exp(-jnp.where(big, a, 1))), jnp.log(jnp.expm1(jnp.where(big, 1, a))))
    return jnp.exp(log_em1 - log_em1[..., :1])


def top_draws(rewards: Array, *, counts: Array | None = None, mask: Array | None = None) -> tuple[Array, Array]:
    """The largest draws of each prompt, sorted once: ``(top [P, K] descending, M [P])``.

    ``K = tail_slots(N, counts)`` slots (``-inf`` beyond the draws), each row repeated ``count``
    times; ``M = tail_size(draws)`` (at most ``K - 1``), so ``top[:, :M]`` is the tail of the fit
    and ``top[:, M]`` its threshold. With counts the draws outnumber the rows: room for the tail
    of up to 4x as many draws as rows, a shorter tail beyond.
    """
    num_n = rewards.shape[-1]
    valid, m, _ = valid_parts(rewards, None, None, counts, mask)
    k_slots = tail_slots(num_n, counts is not None)
    tail = jnp.minimum(tail_size(jnp.sum(m, axis=-1)), k_slots - 1)  # [P]
    k_top = min(k_slots, num_n)
    top_r, top_i = jax.lax.top_k(jnp.where(valid, rewards, -jnp.inf), k_top)  # [P, K] descending
    if counts is not None:
        top_r = _expand_counts(top_r, jnp.take_along_axis(m, top_i, axis=-1), k_slots)
    elif k_top < k_slots:
        top_r = jnp.pad(top_r, [(0, 0), (0, k_slots - k_top)], constant_values=-jnp.inf)
    return top_r, tail


def tilted_khat(rewards: Array, lam: Array, *, log_weights: Array | None = None, counts: Array | None = None,
                mask: Array | None = None, top: tuple[Array, Array] | None = None) -> Array:
    r"""PSIS ``k``-hat of the tilted weights ``w_i exp(lam r_i)`` of every (prompt, lambda).

    Args:
      rewards: ``[P, N]`` rewards.
      lam: ``[P, B]`` inverse temperatures ``1 / beta``.
      log_weights: optional ``[P, N]`` importance log-weights (``-inf`` drops an entry).
      counts: optional ``[P, N]`` multiplicities (a row is that many draws).
      mask: optional ``[P, N]`` booleans, False for padding.
      top: :func:`top_draws` of these samples, if already computed (plain samples and counts).

    Returns:
      ``[P, B]`` the shape ``k``: NaN with fewer than 25 draws (a tail of fewer than 5) or a
      flat tail (the largest weights tie, e.g. binary rewards). With counts the tail is at most
      ``2 M(rows)`` draws: exact up to 4 times as many draws as rows, a shorter tail beyond.
    """
    num_n = rewards.shape[-1]
    valid, m, _ = valid_parts(rewards, None, log_weights, counts, mask)
    k_slots = tail_slots(num_n, counts is not None)
    if log_weights is None:
        top_r, tail = top_draws(rewards, counts=counts, mask=mask) if top is None else top
        thresh = jnp.take_along_axis(top_r, tail.astype(jnp.int32)[:, None], axis=-1)  # [P, 1]
        gap = jnp.where(jnp.isfinite(top_r), top_r - thresh, 0)  # [P, K]
        # w_j - w_thr is proportional to expm1(lam (r_j - r_thr)): the fit is scale-free.
        exceed = _relative_exceedances(lam[:, :, None] * gap[:, None, :])
    else:
        tail = jnp.minimum(tail_size(jnp.sum(m, axis=-1)), k_slots - 1)
        lw = jnp.where(valid, log_weights, -jnp.inf)
        logits = lw[:, None, :] + lam[:, :, None] * jnp.where(valid, rewards, 0)[:, None, :]
        logits = jnp.where(valid[:, None, :], logits, -jnp.inf)
        k_top = min(k_slots, num_n)
        top, top_i = jax.lax.top_k(logits, k_top)  # [P, B, K]
        if counts is not None:
            top_m = jnp.take_along_axis(jnp.broadcast_to(m[:, None, :], logits.shape), top_i, axis=-1)
            top = _expand_counts(top, top_m, k_slots)
        elif k_top < k_slots:
            top = jnp.pad(top, [(0, 0), (0, 0), (0, k_slots - k_top)], constant_values=-jnp.inf)
        thresh = jnp.take_along_axis(top, jnp.broadcast_to(tail.astype(jnp.int32)[:, None, None],
                                                           top.shape[:2] + (1,)), axis=-1)
        exceed = _relative_exceedances(jnp.where(jnp.isfinite(top), top - thresh, 0))
    n_tail = jnp.broadcast_to(tail[:, None], lam.shape)
    return gpd_shape(exceed, n_tail)
