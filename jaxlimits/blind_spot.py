"""The Bradley-Terry blind spot (App. C of the paper; MATH.md §7): a shift the BT likelihood cannot see."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, tables
from .gap import base_weights, check_grid, proxy_gap_core, require_gold
from .samples import Samples

Array = jax.Array


class BlindSpot(NamedTuple):
    """The proxy shifted by ``c`` on one cluster of responses (App. C).

    Fields of shape ``[shifts]``:
      shifts: the shifts ``c``.
      bt_within: expected Bradley-Terry log-likelihood of a within-cluster comparison (a pair of
        distinct draws of one prompt in the same cluster, labelled by the gold BT model
        ``P(i > j) = sigmoid(s_i - s_j)``); unchanged by ``c``.
      bt_across: the same for comparisons across the two clusters (these alone see ``c``).
      residual_norm: ``||s - r_c||_{L2(pi0)}`` pooled, a convex quadratic in ``c``.
      centred_residual_norm: the same with each prompt's mean residual removed.
    Fields of shape ``[shifts, betas]``: gap, gap_se, gold_gain_proxy_aligned, kl_proxy_aligned.
    Scalars: ``residual_min_shift``, the ``c`` minimising ``residual_norm`` (the residual shrinks
    for ``c`` between 0 and twice this, and grows without bound outside); ``cluster_mass``, the
    mean base mass of the shifted cluster.
    betas: ``[betas]``.
    """

    shifts: Array
    betas: Array
    bt_within: Array
    bt_across: Array
    residual_norm: Array
    centred_residual_norm: Array
    gap: Array
    gap_se: Array
    gold_gain_proxy_aligned: Array
    kl_proxy_aligned: Array
    residual_min_shift: Array
    cluster_mass: Array

    def _columns(self):
        return tables.columns(self, shape_of="shifts", exclude=("betas",))

    def _summary(self):
        return tables.summary(self, shape_of="shifts", headline=[
            f"shift {tables.span(self.shifts)}", f"residual norm {tables.span(self.residual_norm)}",
            f"residual least at shift {tables.span(self.residual_min_shift)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def _bt_loglik(r, s, log_u, valid, cluster):
    """Pooled expected BT log-likelihood of within- and across-cluster pairs of distinct rows."""

    def one(args):
        r_p, s_p, lu_p, v_p, c_p = args
        u = jnp.exp(lu_p)
        w = u[:, None] * u[None, :] * (1 - jnp.eye(u.shape[0], dtype=u.dtype))
        w = jnp.where(v_p[:, None] & v_p[None, :], w, 0)
        label = jax.nn.sigmoid(s_p[:, None] - s_p[None, :])
        ll = -label * jax.nn.softplus(-(r_p[:, None] - r_p[None, :]))
        same = c_p[:, None] == c_p[None, :]
        ww, wa = jnp.where(same, w, 0), jnp.where(same, 0, w)
        return jnp.sum(ww * ll), jnp.sum(ww), jnp.sum(wa * ll), jnp.sum(wa)

    lw, ww, la, wa = jax.lax.map(one, (r, s, log_u, valid, cluster))
    # pairs i != j counted both ways: ll(i, j) + ll(j, i) is the log-likelihood of one labelled pair
    within = 2 * jnp.sum(lw) / jnp.maximum(jnp.sum(ww), jnp.finfo(r.dtype).tiny)
    across = jnp.where(jnp.sum(wa) > 0, 2 * jnp.sum(la) / jnp.where(jnp.sum(wa) > 0, jnp.sum(wa), 1), jnp.nan)
    return within, across


@functools.partial(jax.jit, static_argnames=("memory_budget",))
def _blind_spot(samples, cluster, shifts, betas, memory_budget):
    valid, log_u, _ = base_weights(samples)
    ind = (cluster & valid).astype(samples.dtype)
    r = jnp.where(valid, samples.rewards, 0)
    s = jnp.where(valid, samples.scores, 0)

    def one(c):
        sh = Samples.tree_unflatten(
            (samples.exact,), (r + c * ind, s, samples.log_weights, samples.counts, samples.mask)
        )
        g = proxy_gap_core(sh, betas, memory_budget)
        within, across = _bt_loglik(sh.rewards, s, log_u, valid, cluster)
        return (within, across, g.residual_norm, g.centred_residual_norm, g.gap, g.gap_se,
                g.gold_gain_proxy_aligned, g.kl_proxy_aligned)

    out = jax.lax.map(one, shifts)
    u = jnp.exp(log_u)
    d = jnp.where(valid, s - r, 0)
    mass = jnp.mean(jnp.sum(u * ind, axis=1))
    c_star = jnp.mean(jnp.sum(u * d * ind, axis=1)) / jnp.where(mass > 0, mass, 1)
    return out, c_star, mass


def bt_blind_spot(
    samples: Samples,
    shifts=None,
    betas=None,
    *,
    cluster=None,
    memory_budget: int | None = None,
) -> BlindSpot:
    r"""The Bradley-Terry blind spot (App. C): a shift the BT likelihood cannot see, and what it costs.

    A reward model trained with Bradley-Terry on comparisons that never pair a response of one
    cluster with one of the other is identified only up to a constant per cluster: adding ``c``
    to the proxy on cluster ``A`` leaves the likelihood of every within-cluster comparison
    unchanged, while the residual

    .. math::

       \|\delta_c\|^2 = \|\delta\|^2 - 2c\,\langle \delta, 1_A\rangle + c^2\, \pi_0(A)

    is a convex quadratic in ``c``: it shrinks only while ``c`` cancels an existing offset
    (between 0 and ``2 c*``, ``c* = <delta, 1_A> / pi0(A)``) and grows without bound beyond,
    and the gap moves with it (MATH.md §7). This function reports both sides.

    Args:
      samples: :class:`jaxlimits.Samples` with the proxy as ``rewards`` and gold as ``scores``.
      shifts: ``[C]`` shifts ``c`` (default: 13 points from ``-3`` to ``3`` standard deviations of
        the proxy).
      betas: ``[B]`` KL penalties for the gap (default ``[1.0]`` times that standard deviation).
      cluster: ``[P, N]`` booleans, True on the shifted cluster ``A`` (default: each prompt's
        draws whose proxy is above the prompt's base mean).
      memory_budget: bytes of working memory for each sweep.

    Returns:
      :class:`BlindSpot`. The pairwise likelihoods cost ``O(N^2)`` per prompt.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> rng = np.random.default_rng(0)
      >>> gold = rng.standard_normal((3, 30)); proxy = gold + 0.3 * rng.standard_normal((3, 30))
      >>> shifts = [-4.0, -1.0, 0.0, 0.5, 2.0, 6.0]
      >>> bs = jl.bt_blind_spot(jl.Samples(proxy, scores=gold), shifts, [3.0, 1.0, 0.3])
      >>> bool(np.ptp(np.asarray(bs.bt_within)) < 1e-9), bool(bs.residual_norm[5] > bs.residual_norm[2])
      (True, True)
    """
    require_gold(samples, "bt_blind_spot")
    valid = np.asarray(samples.valid())
    r = np.asarray(samples.rewards, dtype=np.float64)
    sd = float(np.std(r[valid])) or 1.0
    if shifts is None:
        shifts = np.linspace(-3, 3, 13) * sd
    if betas is None:
        betas = np.asarray([sd])
    shifts = np.asarray(shifts, dtype=np.float64).reshape(-1)
    if shifts.size == 0 or not np.all(np.isfinite(shifts)):
        raise ValueError(f"shifts must be a non-empty array of finite numbers, got {shifts}")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    check_grid(betas)
    if cluster is None:
        lu = np.asarray(base_weights(samples)[1])
        u = np.exp(lu)
        mean = np.sum(np.where(valid, u * r, 0), axis=1, keepdims=True)
        cluster = valid & (r > mean)
    cluster = np.asarray(cluster)
    if cluster.shape != valid.shape:
        raise ValueError(f"cluster has shape {cluster.shape} but the samples have shape {valid.shape}")
    cluster = cluster.astype(bool)
    out, c_star, mass = _blind_spot(
        samples, jnp.asarray(cluster), jnp.asarray(shifts, samples.dtype), jnp.asarray(betas, samples.dtype),
        memory_budget,
    )
    within, across, res, cres, gap, gap_se, gold, kl = out
    return BlindSpot(jnp.asarray(shifts, samples.dtype), jnp.asarray(betas, samples.dtype), within, across, res,
                     cres, gap, gap_se, gold, kl, c_star, mass)
