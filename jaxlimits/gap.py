r"""The proxy gap (Prop. 3; MATH.md §7): the gold reward lost by aligning to a proxy instead of gold.

:func:`proxy_gap` and its results; the pieces the over-optimisation peak, the Bradley-Terry blind
spot and the ensembles build on (the base weights, the residual norms, both tilts in one sweep).
The concept, the identities and the bounds are in :mod:`jaxlimits.proxy`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, pooling, tables
from .frontier import from_pool, pool_of
from .samples import Samples, check_samples

Array = jax.Array

#: Temporaries per element of the per-sample pass behind the gap's standard error (a safe estimate).
_SE_COPIES = 10


class PromptGaps(NamedTuple):
    """Per-prompt values of :class:`ProxyGap`.

    Fields of shape ``[prompts, betas]``: ``gold_gain_gold_aligned``, ``gold_gain_proxy_aligned``
    and their ``*_se``; ``proxy_gain`` (``E_{pi^r}[r] - E_{pi0}[r]``); ``gap``, ``gap_se``;
    ``kl_proxy_aligned``, ``kl_gold_aligned``; ``saturated`` (either estimate cannot be trusted,
    see :data:`jaxlimits.estimators.ESS_MIN`).

    Fields of shape ``[prompts]``: ``residual_norm`` ``||s - r||_{L2(pi0)}``;
    ``centred_residual_norm``, the same after removing the prompt's mean residual (a constant
    added to a prompt's proxy changes the first, never the gap); ``gold_range`` ``max s - min s``,
    a bound on ``|gap|``.
    """

    gold_gain_gold_aligned: Array
    gold_gain_gold_aligned_se: Array
    gold_gain_proxy_aligned: Array
    gold_gain_proxy_aligned_se: Array
    proxy_gain: Array
    gap: Array
    gap_se: Array
    kl_proxy_aligned: Array
    kl_gold_aligned: Array
    saturated: Array
    residual_norm: Array
    centred_residual_norm: Array
    gold_range: Array

    def _columns(self):
        return tables.columns(self, shape_of="gap", index=("prompt", "beta_index"))

    def _summary(self):
        return tables.summary(self, shape_of="gap", headline=[
            f"gap {tables.span(self.gap)}", f"residual norm {tables.span(self.residual_norm)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


class ProxyGap(NamedTuple):
    """The proxy gap pooled over prompts (one shared beta, MATH.md §6).

    Fields of shape ``[betas]`` (means over prompts; standard errors conditional on the prompt
    set, ``se = sqrt(sum_x se_x^2) / P``):
      betas: the KL penalties, as given.
      gold_gain_gold_aligned, gold_gain_gold_aligned_se: ``Delta_s(beta, s)``.
      gold_gain_proxy_aligned, gold_gain_proxy_aligned_se: ``Delta_s(beta, r)``.
      proxy_gain: the gain the proxy promises, ``Delta_r(beta, r)``.
      gap, gap_se: their difference (Prop. 3); the standard error accounts for both terms being
        estimated from the same samples (joint influence function, see :func:`proxy_gap`).
      kl_proxy_aligned, kl_proxy_aligned_se: ``KL(pi^r || pi0)``.
      kl_gold_aligned: ``KL(pi^s || pi0)``.
      ratio: the observed ``|gap| / ||delta||_{L2(pi0)}`` (Prop. 4 bounds it by ``C(beta)``).
      saturated_share: share of prompts whose own estimate at that beta cannot be trusted.
      saturated: the pooled trust rule (:attr:`jaxlimits.Frontier.reasons`) flags the pooled
        estimate of either alignment (proxy or gold).
      reasons: its reasons, those of either alignment (``int32`` bitmask;
        ``jaxlimits.estimators.reason_names`` spells it).

    Scalars (they do not depend on beta):
      residual_norm: ``sqrt(mean_x ||s - r||^2_{L2(pi0|x)})``.
      centred_residual_norm: the same with each prompt's mean residual removed.

    prompts: the per-prompt :class:`PromptGaps`.
    """

    betas: Array
    gold_gain_gold_aligned: Array
    gold_gain_gold_aligned_se: Array
    gold_gain_proxy_aligned: Array
    gold_gain_proxy_aligned_se: Array
    proxy_gain: Array
    gap: Array
    gap_se: Array
    kl_proxy_aligned: Array
    kl_proxy_aligned_se: Array
    kl_gold_aligned: Array
    ratio: Array
    saturated_share: Array
    saturated: Array
    residual_norm: Array
    centred_residual_norm: Array
    prompts: PromptGaps
    reasons: Array

    def _columns(self):
        return tables.columns(self, shape_of="betas")

    def _summary(self):
        return tables.summary(self, shape_of="betas", headline=[
            f"beta {tables.span(self.betas)}", f"gap {tables.span(self.gap)}",
            f"KL {tables.span(self.kl_proxy_aligned)}", f"residual norm {tables.span(self.residual_norm)}",
            f"{int(np.sum(np.asarray(self.saturated)))} of {np.size(self.saturated)} flagged"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def require_gold(samples: Samples, what: str) -> None:
    check_samples(samples, what)
    if samples.scores is None:
        raise ValueError(
            f"{what} needs the gold reward as the samples' scores and the proxy as their rewards: "
            "Samples(rewards=proxy, scores=gold)"
        )


def gold_aligned(samples: Samples) -> Samples:
    """The same samples with the gold reward (``scores``) as the reward aligned to."""
    return Samples.tree_unflatten(
        (samples.exact,), (samples.scores, None, samples.log_weights, samples.counts, samples.mask)
    )


def base_weights(samples: Samples):
    """``(valid, log u, m)``: validity, normalised log base weights and multiplicities, ``[P, N]``."""
    valid = samples.valid()
    dtype = samples.dtype
    if samples.counts is None and samples.log_weights is None and samples.mask is None:
        # plain draws: u = 1/N (written out, so XLA does not constant-fold a reduction of [P, N])
        n = samples.num_samples
        return valid, jnp.full(valid.shape, -np.log(n), dtype), jnp.ones(valid.shape, dtype)
    m = jnp.ones(valid.shape, dtype) if samples.counts is None else jnp.where(valid, samples.counts, 1)
    log_v = jnp.log(m)
    if samples.log_weights is not None:
        log_v = log_v + jnp.where(valid, samples.log_weights, 0)
    log_v = jnp.where(valid, log_v, -jnp.inf)
    log_u = log_v - jax.nn.logsumexp(log_v, axis=1, keepdims=True)
    return valid, log_u, m


def residual_norms(samples: Samples):
    """``[P]`` plain and centred ``||s - r||_{L2(pi0)}``, and the gold range ``max s - min s``."""
    valid, log_u, _ = base_weights(samples)
    u = jnp.exp(log_u)
    d = jnp.where(valid, samples.scores - samples.rewards, 0)
    sq = jnp.sum(u * d * d, axis=1)
    mean = jnp.sum(u * d, axis=1)
    centred = jnp.maximum(jnp.sum(u * (d - mean[:, None]) ** 2, axis=1), 0)
    s_hi = jnp.max(jnp.where(valid, samples.scores, -jnp.inf), axis=1)
    s_lo = jnp.min(jnp.where(valid, samples.scores, jnp.inf), axis=1)
    return pooling.safe_sqrt(sq), pooling.safe_sqrt(centred), s_hi - s_lo


def _se_plan(num_prompts: int, num_samples: int, num_betas: int, itemsize: int, budget: int | None):
    """(prompts per batch, betas per batch) of the per-sample pass, within the memory budget."""
    budget = _sweep.DEFAULT_MEMORY_BUDGET if budget is None else int(budget)
    elems = max(1, budget // (itemsize * _SE_COPIES))
    per_beta = max(1, min(num_betas, elems // max(num_samples, 1)))
    tile = max(1, min(num_prompts, elems // (num_samples * per_beta))) if per_beta == num_betas else 1
    return tile, per_beta


def _gap_variance(samples: Samples, lam: Array, plan: tuple[int, int]) -> Array:
    r"""``[P, B]`` delta-method variance of the gap, from its joint influence function.

    Per draw ``i``, with ``p^s``, ``p^r`` the gold- and proxy-tilted weights and ``u`` the base
    weights, the influences of the two gains are ``(p^s_i/u_i)(s_i - mu^s) - (s_i - mu_u)`` and
    ``(p^r_i/u_i)(s_i - mu^r) - (s_i - mu_u)`` (MATH.md §3); they are computed on the same draws,
    so the gap's influence is their difference, in which the base term cancels:
    ``psi_i = [p^s_i (s_i - mu^s) - p^r_i (s_i - mu^r)] / u_i``, and
    ``Var = sum_i (u_i^2 / m_i) psi_i^2 = sum_i a_i^2 / m_i`` with ``a_i = u_i psi_i``
    (counts ``m``; ``m = 1`` for plain or importance-weighted draws). ``sum_i a_i = 0``.
    """
    valid, log_u, m = base_weights(samples)
    r = jnp.where(valid, samples.rewards, 0)
    s = jnp.where(valid, samples.scores, 0)
    r = r - jnp.max(jnp.where(valid, r, -jnp.inf), axis=1, keepdims=True)
    s_top = s - jnp.max(jnp.where(valid, s, -jnp.inf), axis=1, keepdims=True)
    inv_m = jnp.where(valid, 1 / m, 0)
    tile, per_beta = plan

    def one_prompt(args):
        r_p, s_p, st_p, lu_p, im_p, lam_p = args

        def softmax(logits):  # one exponential per element (the shift is the max: no overflow)
            e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits)))
            return e / jnp.sum(e)

        def one_beta(lam_b):
            pr = softmax(lu_p + lam_b * r_p)
            ps = softmax(lu_p + lam_b * st_p)
            mu_r = jnp.sum(pr * s_p)
            mu_s = jnp.sum(ps * s_p)
            a = ps * (s_p - mu_s) - pr * (s_p - mu_r)
            return jnp.sum(im_p * a * a)

        return jax.lax.map(one_beta, lam_p, batch_size=per_beta)

    return jax.lax.map(one_prompt, (r, s, s_top, log_u, inv_m, lam), batch_size=tile)


def both_tilts(samples: Samples, betas: Array, memory_budget: int | None, bias_correction: bool = True):
    """``(st_r, st_s)``: :func:`jaxlimits.tilt` aligned to the proxy and to gold, gain measured with gold.

    One sweep over the prompts stacked twice (``[proxy; gold]`` as rewards, gold as scores): one
    compiled kernel instead of two, the same work.
    """
    num_p = samples.num_prompts
    two = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)  # noqa: E731
    stacked = Samples.tree_unflatten(
        (samples.exact,),
        (jnp.concatenate([samples.rewards, samples.scores], axis=0), two(samples.scores), two(samples.log_weights),
         two(samples.counts), two(samples.mask)),
    )
    st = estimators.tilt(stacked, betas, memory_budget=memory_budget, bias_correction=bias_correction)
    return jax.tree.map(lambda a: a[:num_p], st), jax.tree.map(lambda a: a[num_p:], st)


def proxy_gap_core(samples: Samples, betas: Array, memory_budget: int | None, tilts=None,
                    bias_correction: bool = True) -> ProxyGap:
    """Traceable body of :func:`proxy_gap` (betas ``[B]``)."""
    st_r, st_s = both_tilts(samples, betas, memory_budget, bias_correction) if tilts is None else tilts
    b = jnp.asarray(betas, samples.dtype)
    gap = st_s.gain - st_r.gain
    if samples.exact:
        gap_se = jnp.zeros_like(gap)
    else:
        lam = _sweep.as_lambda(b, samples.num_prompts, samples.dtype)
        plan = _se_plan(samples.num_prompts, samples.num_samples, b.shape[0], lam.dtype.itemsize, memory_budget)
        gap_se = pooling.safe_sqrt(_gap_variance(samples, lam, plan))
    res, cres, rng = residual_norms(samples)
    sat = st_r.saturated | st_s.saturated
    prompts = PromptGaps(
        st_s.gain, st_s.gain_se, st_r.gain, st_r.gain_se, b[None, :] * st_r.jeffreys, gap, gap_se,
        st_r.kl, st_s.kl, sat, res, cres, rng,
    )
    pooled_gap = pooling.pooled_mean(gap)
    res_pooled = pooling.safe_sqrt(jnp.mean(res * res))
    # pooled points are judged by the pooled trust rule (jaxlimits.frontier), for either alignment
    ones = jnp.ones((samples.num_prompts,), samples.dtype)
    pooled_reasons = from_pool(pool_of(st_r, ones), b).reasons | from_pool(pool_of(st_s, ones), b).reasons
    pooled_flag = pooled_reasons != 0
    share = pooling.saturated_share(sat, dtype=samples.dtype)
    ratio = jnp.where(res_pooled > 0, jnp.abs(pooled_gap) / jnp.where(res_pooled > 0, res_pooled, 1), 0)
    return ProxyGap(
        b,
        pooling.pooled_mean(st_s.gain), pooling.pooled_se(st_s.gain_se),
        pooling.pooled_mean(st_r.gain), pooling.pooled_se(st_r.gain_se),
        pooling.pooled_mean(prompts.proxy_gain),
        pooled_gap, pooling.pooled_se(gap_se),
        pooling.pooled_mean(st_r.kl), pooling.pooled_se(st_r.kl_se),
        pooling.pooled_mean(st_s.kl),
        ratio, share, pooled_flag,
        res_pooled, pooling.safe_sqrt(jnp.mean(cres * cres)),
        prompts,
        pooled_reasons,
    )


proxy_gap_jit = jax.jit(proxy_gap_core, static_argnames=("memory_budget", "bias_correction"))


def check_grid(betas, what: str = "betas"):
    if isinstance(betas, jax.core.Tracer):
        return
    b = np.asarray(betas, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"{what} must be one grid shared by all prompts, shape [betas]; got shape {b.shape}")


def proxy_gap(samples: Samples, betas, *, memory_budget: int | None = None, bias_correction: bool = True) -> ProxyGap:
    r"""The gold reward lost by aligning to a proxy instead of gold (Prop. 3; MATH.md §7).

    .. math::

       \mathrm{gap}(\beta) = \Delta_s(\beta, s) - \Delta_s(\beta, r)
         = -\frac{\mathrm{Cov}_{\pi^s}(s, e^{-\delta/\beta})}{E_{\pi^s}[e^{-\delta/\beta}]},
       \qquad \delta = s - r.

    Both gains are :func:`jaxlimits.tilt` of the same draws (``Samples(rewards=r, scores=s)`` and
    ``Samples(rewards=s)``), so they are correlated. The standard error of the gap is the delta
    method on their *joint* influence function: per draw,
    ``psi_i = (p^s_i/u_i)(s_i - mu^s) - (p^r_i/u_i)(s_i - mu^r)`` (the base-mean terms of the two
    influences cancel), ``Var = sum_i (u_i^2/m_i) psi_i^2`` (MATH.md §3 with counts ``m``). It
    is zero for an exact law, and zero when the proxy equals gold up to a per-prompt constant.
    Like every delta-method SE it runs low when the tilt is sharp (small ESS, see ``saturated``).

    The gap is not always positive nor monotone in beta; it satisfies
    ``beta (KL_s - KL_r) <= gap <= beta (KL_s - KL_r) + E_{pi^s}[delta] - E_{pi^r}[delta]`` and
    ``|gap| <= max s - min s`` (``prompts.gold_range``).

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]`` with the proxy as ``rewards`` and the gold
        reward as ``scores``.
      betas: ``[B]`` positive KL penalties shared by all prompts.
      memory_budget: bytes of working memory for each sweep (default 256 MiB).
      bias_correction: the bias-corrected gains and KLs of :func:`jaxlimits.tilt` (default) or the
        plug-in ones (for which the gap identity below holds exactly on samples).

    Returns:
      :class:`ProxyGap`: ``[B]`` fields pooled over prompts and the per-prompt
      :class:`PromptGaps`.

    Raises:
      ValueError: samples without gold scores, or betas that are not a positive grid.

    Examples:
      >>> import jaxlimits as jl
      >>> law = jl.Samples.from_law([[0.0, 1.0, 2.0]], [[0.5, 0.3, 0.2]], scores=[[0.0, 1.0, -1.0]])
      >>> g = jl.proxy_gap(law, [1.0])
      >>> round(float(g.gap[0]), 6), float(g.gap_se[0])
      (0.771221, 0.0)
    """
    require_gold(samples, "proxy_gap")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    check_grid(betas)
    return proxy_gap_jit(samples, jnp.asarray(betas, samples.dtype), memory_budget, None, bool(bias_correction))
