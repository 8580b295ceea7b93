r"""Exact quantities on an enumerated law: the tilted policy, the true frontier, best-of-n.

Every function here takes the base model as ``[S]`` log-probabilities of the whole support and the
rewards (and optionally scores) as ``[S]`` tables, so it applies to any finite law, not only to
the toy LM of :mod:`jaxlimits.testbed.model`. Nothing is estimated: every expectation is a sum
over the support, in log-sum-exp form.

* The tilted policy ``pi_beta = pi0 exp(r/beta)/Z`` and its point ``(KL, gain)`` (MATH.md §2):
  the true frontier, :func:`exact_frontier`.
* The exact law of best-of-n (MATH.md §8): with distinct reward levels ``v_1 < .. < v_J``, base
  masses ``q_j`` and CDF ``F_j``, BoN puts mass ``F_j^n - F_{j-1}^n`` on level ``j``, shared within
  the level in proportion to ``pi0`` (uniform tie-breaking); :func:`bon_log_probs`.
* The exact ``(KL, gain)`` of any policy given as a law over the support, :func:`policy_point`,
  and its efficiency against the frontier (MATH.md §9), :func:`efficiency`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import samples as _samples
from ..status import Status

Array = jax.Array


class ExactPoint(NamedTuple):
    """A policy's exact place in the KL-gain plane (fields broadcast over leading axes).

    Attributes:
      kl: ``KL(pi || pi0)``, nats.
      gain: ``E_pi[s] - E_pi0[s]``.
      reverse_kl: ``KL(pi0 || pi)`` (``inf`` where ``pi`` misses part of ``pi0``'s support).
    """

    kl: Array
    gain: Array
    reverse_kl: Array


class ExactFrontier(NamedTuple):
    """The true frontier at each beta (fields ``[betas]``).

    Attributes:
      betas: the KL penalties.
      kl: ``KL(pi_beta || pi0)``. gain: ``E_beta[s] - E_0[s]``. reverse_kl: ``KL(pi0 || pi_beta)``.
      log_z: ``log E_0[exp(r/beta)]``.
    """

    betas: Array
    kl: Array
    gain: Array
    reverse_kl: Array
    log_z: Array


def xlogy_diff(log_p: Array, log_q: Array) -> Array:
    """``p (log p - log q)`` with ``0`` where ``p = 0`` (double where: NaN-free gradients)."""
    zero = log_p == -jnp.inf
    safe_p = jnp.where(zero, 0.0, log_p)
    safe_q = jnp.where(zero, 0.0, log_q)
    return jnp.where(zero, 0.0, jnp.exp(safe_p) * (safe_p - safe_q))


@jax.jit
def policy_point(log_probs: Array, base_log_probs: Array, scores: Array) -> ExactPoint:
    r"""Exact ``(KL, gain, reverse KL)`` of a policy given as a law over the support.

    .. math::

       KL = \sum_y \pi(y) \log\frac{\pi(y)}{\pi_0(y)}, \qquad
       \mathrm{gain} = \sum_y (\pi(y) - \pi_0(y))\, s(y).

    Args:
      log_probs: ``[..., S]`` log-probabilities of the policy (normalised).
      base_log_probs: ``[S]`` log-probabilities of the base model.
      scores: ``[S]`` what the gain is measured with.

    Returns:
      :class:`ExactPoint` with fields of shape ``[...]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> lp0 = jnp.log(jnp.array([0.5, 0.5]))
      >>> pt = policy_point(jnp.log(jnp.array([0.25, 0.75])), lp0, jnp.array([0.0, 1.0]))
      >>> round(float(pt.gain), 6), round(float(pt.kl), 6)
      (0.25, 0.130812)
    """
    kl = jnp.sum(xlogy_diff(log_probs, base_log_probs), axis=-1)
    rkl = jnp.sum(xlogy_diff(jnp.broadcast_to(base_log_probs, log_probs.shape), log_probs), axis=-1)
    gain = jnp.sum((jnp.exp(log_probs) - jnp.exp(base_log_probs)) * scores, axis=-1)
    return ExactPoint(kl, gain, rkl)


@jax.jit
def tilted_log_probs(base_log_probs: Array, rewards: Array, betas) -> Array:
    r"""The tilted policy ``log pi_beta = log_softmax(log pi0 + r/beta)`` (MATH.md §2).

    Args:
      base_log_probs: ``[S]``. rewards: ``[S]``.
      betas: a scalar or ``[B]`` KL penalties.

    Returns:
      ``[S]`` or ``[B, S]`` log-probabilities.
    """
    betas = jnp.asarray(betas, base_log_probs.dtype)
    return jax.nn.log_softmax(base_log_probs + rewards / betas[..., None], axis=-1)


@jax.jit
def exact_frontier(base_log_probs: Array, rewards: Array, betas, scores: Array | None = None) -> ExactFrontier:
    r"""The true frontier by enumeration: the tilted policy's point at each beta (MATH.md §2, §5).

    .. math::

       \log Z = \log \sum_y \pi_0(y) e^{r(y)/\beta}, \qquad
       KL = E_\beta[r]/\beta - \log Z, \qquad \mathrm{gain} = E_\beta[s] - E_0[s].

    Args:
      base_log_probs: ``[S]``. rewards: ``[S]``. betas: ``[B]``.
      scores: ``[S]`` (default: the rewards).

    Returns:
      :class:`ExactFrontier`, fields ``[B]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> lp0 = jnp.log(jnp.array([0.5, 0.5]))
      >>> f = exact_frontier(lp0, jnp.array([0.0, 1.0]), jnp.array([1.0]))
      >>> round(float(f.gain[0]), 6)  # e/(1+e) - 1/2
      0.231059
    """
    betas = jnp.atleast_1d(jnp.asarray(betas, base_log_probs.dtype))
    scores = rewards if scores is None else scores
    log_p = tilted_log_probs(base_log_probs, rewards, betas)
    pt = policy_point(log_p, base_log_probs, scores)
    log_z = jax.nn.logsumexp(base_log_probs + rewards / betas[:, None], axis=-1)
    return ExactFrontier(betas, pt.kl, pt.gain, pt.reverse_kl, log_z)


@jax.jit
def bon_log_probs(base_log_probs: Array, rewards: Array, n) -> Array:
    r"""The exact law of best-of-n over the support (MATH.md §8).

    With distinct reward levels ``v_1 < .. < v_J``, base masses ``q_j`` and CDF ``F_j``, the
    maximum of ``n`` draws lands on level ``j`` with probability ``F_j^n - F_{j-1}^n``; ties are
    broken uniformly, so within a level the mass is shared in proportion to ``pi0``:

    .. math::

       \pi_n(y) = \pi_0(y)\, \frac{F_{j(y)}^n - F_{j(y)-1}^n}{q_{j(y)}}.

    Computed in log space, ``log(F_j^n - F_{j-1}^n) = n log F_j + log(-expm1(n (log F_{j-1} -
    log F_j)))``, with ``log F_j = log1p(-(1 - F_j))`` from the upper tail near 1. Levels are exact
    float equality of the rewards (round the rewards first to merge near-ties).

    Args:
      base_log_probs: ``[S]``. rewards: ``[S]``.
      n: the number of draws (``>= 1``; may be a traced scalar).

    Returns:
      ``[S]`` log-probabilities of best-of-n.

    Examples:
      >>> import jax.numpy as jnp
      >>> lp = bon_log_probs(jnp.log(jnp.full(3, 1 / 3)), jnp.array([0.0, 1.0, 2.0]), 2)
      >>> [round(float(x), 6) for x in jnp.exp(lp)]  # 1/9, 3/9, 5/9
      [0.111111, 0.333333, 0.555556]
    """
    dtype = base_log_probs.dtype
    n = jnp.asarray(n, dtype)
    s = rewards.shape[0]
    order = jnp.argsort(rewards)
    r = rewards[order]
    lp = base_log_probs[order]
    new = jnp.concatenate([jnp.ones((1,), bool), r[1:] != r[:-1]])
    level = jnp.cumsum(new) - 1  # [S] level of each sorted entry, 0..J-1
    # log q_j (levels beyond J are empty: -inf).
    log_q = jax.ops.segment_max(lp, level, num_segments=s)
    log_q = jnp.where(jnp.isfinite(log_q), log_q, -jnp.inf)
    shift = jnp.where(jnp.isfinite(log_q), log_q, 0.0)
    q_scaled = jax.ops.segment_sum(jnp.exp(lp - shift[level]), level, num_segments=s)
    log_q = jnp.where(jnp.isfinite(log_q), shift + jnp.log(jnp.where(q_scaled > 0, q_scaled, 1.0)), -jnp.inf)
    q = jnp.exp(log_q)
    below = jnp.cumsum(q)  # F_j
    above = jnp.cumsum(q[::-1])[::-1] - q  # 1 - F_j, summed from the top
    log_f = jnp.where(below < 0.5, jnp.log(jnp.where(below > 0, below, 1.0)), jnp.log1p(-above))
    log_f = jnp.where(below > 0, log_f, -jnp.inf)
    log_f_prev = jnp.concatenate([jnp.full((1,), -jnp.inf, dtype), log_f[:-1]])
    # log(F_j^n - F_{j-1}^n); F_{j-1} = 0 gives expm1(-inf) = -1.
    d = jnp.where(jnp.isfinite(log_f), n * (log_f_prev - log_f), -jnp.inf)
    log_mass = n * log_f + jnp.log(-jnp.expm1(d))
    log_mass = jnp.where(jnp.isfinite(log_q), log_mass, -jnp.inf)
    out_sorted = lp + log_mass[level] - log_q[level]
    out_sorted = jnp.where(lp == -jnp.inf, -jnp.inf, out_sorted)
    return jnp.zeros_like(base_log_probs).at[order].set(out_sorted)


@jax.jit
def bon_point(base_log_probs: Array, rewards: Array, n, scores: Array | None = None) -> ExactPoint:
    r"""Exact ``(KL, gain)`` of best-of-n (MATH.md §8).

    .. math:: KL = \sum_j m_j \log(m_j / q_j), \qquad m_j = F_j^n - F_{j-1}^n.

    ``n`` may be ``[K]`` (vmapped): the fields are then ``[K]``.

    Examples:
      >>> import jax.numpy as jnp
      >>> lp0 = jnp.log(jnp.full(10, 0.1))
      >>> pt = bon_point(lp0, jnp.arange(10.0), jnp.array([2, 16, 256]))
      >>> [round(float(k), 5) for k in pt.kl]  # MATH.md §8 worked values
      [0.18932, 1.73306, 2.30259]
    """
    scores = rewards if scores is None else scores
    n = jnp.asarray(n)
    one = lambda k: policy_point(bon_log_probs(base_log_probs, rewards, k), base_log_probs, scores)  # noqa: E731
    return jax.vmap(one)(n) if n.ndim else one(n)


def as_law(base_log_probs, rewards, scores=None) -> _samples.Samples:
    """The enumerated law as exact :class:`jaxlimits.Samples` (one prompt, the whole support).

    ``jaxlimits.tilt`` on it is the exact frontier (standard errors 0).
    """
    lp = np.asarray(base_log_probs)[None, :]
    r = np.asarray(rewards)[None, :]
    s = None if scores is None else np.asarray(scores)[None, :]
    return _samples.Samples.from_law(r, log_probs=lp, scores=s)


class Efficiency(NamedTuple):
    """A policy's exact point held against the exact frontier (MATH.md §9); fields broadcast.

    Attributes:
      kl, gain: the policy's exact point.
      frontier_gain: ``gain*(kl)``, the most gain any policy reaches within the same KL.
      frontier_kl: ``KL*(gain)``, the least KL any policy needs for the same gain.
      reward_efficiency: ``gain / gain*(kl)``.
      kl_efficiency: ``KL*(gain) / kl``.
      left_on_table: ``gain*(kl) - gain``.
    """

    kl: Array
    gain: Array
    frontier_gain: Array
    frontier_kl: Array
    reward_efficiency: Array
    kl_efficiency: Array
    left_on_table: Array


def efficiency(base_log_probs, scores, kl, gain) -> Efficiency:
    r"""Exact points held against the exact frontier of ``scores`` (MATH.md §9).

    .. math::

       \text{reward efficiency} = \frac{G}{\mathrm{gain}^*(KL)}, \qquad
       \text{KL efficiency} = \frac{KL^*(G)}{KL},

    with ``gain*`` and ``KL*`` from :func:`jaxlimits.max_gain_at_kl` and
    :func:`jaxlimits.min_kl_for_gain` on the exact law (``jaxlimits.Samples.from_law``: no
    estimation error). The frontier is the one of the **scores** the gain is measured with: the
    most score any policy gets within the KL, whatever reward it was trained on. A KL at or beyond
    ``K_max = -log pi0(argmax s)`` leaves the constraint slack: ``gain* = max s - E_0[s]``.
    A policy with ``gain <= 0`` has ``KL* = 0``; ``KL = 0`` gives NaN efficiencies.

    Args:
      base_log_probs: ``[S]`` base log-probabilities. scores: ``[S]``.
      kl, gain: exact points (any shape, broadcast together).

    Returns:
      :class:`Efficiency`, fields of the broadcast shape.

    Example (not a doctest: the two solvers take tens of seconds to compile; the same check runs
    in ``tests/test_testbed.py``): a point on the frontier has both efficiencies 1,
    ``efficiency(lp0, s, f.kl, f.gain)`` with ``f = exact_frontier(lp0, s, betas)``.
    """
    from .. import inversion  # the library's solvers (imported late: they import the whole core)

    kl, gain = jnp.broadcast_arrays(jnp.asarray(kl), jnp.asarray(gain))
    law = as_law(base_log_probs, scores)
    g_sol = inversion.max_gain_at_kl(law, jnp.maximum(kl, 0.0), throw=False)
    slack = g_sol.status == Status.KL_AT_OR_ABOVE_CEILING
    frontier_gain = jnp.where(slack, g_sol.gain_max, g_sol.gain)
    k_sol = inversion.min_kl_for_gain(law, jnp.maximum(gain, 0.0), throw=False)
    frontier_kl = jnp.where(gain <= 0, 0.0, k_sol.kl)
    reward_eff = jnp.where(kl > 0, gain / jnp.where(kl > 0, frontier_gain, 1.0), jnp.nan)
    kl_eff = jnp.where(kl > 0, frontier_kl / jnp.where(kl > 0, kl, 1.0), jnp.nan)
    return Efficiency(kl, gain, frontier_gain, frontier_kl, reward_eff, kl_eff, frontier_gain - gain)


@functools.partial(jax.jit, static_argnames=("num", "replicates"))
def _draw(key, base_log_probs, num: int, replicates: int):
    p = jnp.exp(base_log_probs - jax.nn.logsumexp(base_log_probs))
    cdf = jnp.cumsum(p)
    u = jax.random.uniform(key, (replicates, num), base_log_probs.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), base_log_probs.shape[0] - 1)


def draw_samples(key: Array, base_log_probs, rewards, num: int, *, scores=None, replicates: int = 1):
    """``num`` i.i.d. base draws, ``replicates`` times, as :class:`jaxlimits.Samples` ``[replicates, num]``.

    Each replicate is one "prompt" of the result, so ``jaxlimits.tilt`` estimates every replicate
    in one call (inverse-CDF sampling of the enumerated law).

    Args:
      key: a ``jax.random`` key.
      base_log_probs: ``[S]``. rewards: ``[S]``. scores: optional ``[S]``.
      num: draws per replicate. replicates: independent replicates.

    Returns:
      ``(samples, index)``: the :class:`jaxlimits.Samples` and the ``[replicates, num]`` indices of
      the drawn sequences.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> s, idx = draw_samples(jax.random.PRNGKey(0), jnp.log(jnp.array([0.5, 0.5])),
      ...                       jnp.array([0.0, 1.0]), 8, replicates=3)
      >>> s.num_prompts, s.num_samples
      (3, 8)
    """
    if int(num) < 1 or int(replicates) < 1:
        raise ValueError(f"num and replicates must be positive, got num={num}, replicates={replicates}")
    idx = _draw(key, jnp.asarray(base_log_probs), int(num), int(replicates))
    r = jnp.asarray(rewards)[idx]
    s = None if scores is None else jnp.asarray(scores)[idx]
    return _samples.Samples(r, scores=s), idx
