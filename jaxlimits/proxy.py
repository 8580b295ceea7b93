r"""Proxy rewards and reward hacking: the gold reward left behind by aligning to a proxy (MATH.md §7).

A policy is aligned to a proxy ``r`` and judged by a gold reward ``s``; ``delta = s - r`` is the
preference residual. With :class:`~jaxlimits.Samples` carrying the proxy as ``rewards`` and the
gold reward as ``scores``, everything here is the core estimator (:func:`jaxlimits.tilt`) with
different rewards and scores:

* the gold gain after aligning to the proxy, ``Delta_s(beta, r) = E_{pi^r}[s] - E_{pi0}[s]``
  (``tilt`` of ``Samples(rewards=r, scores=s)``);
* the gold gain after aligning to gold, ``Delta_s(beta, s)`` (``tilt`` of ``Samples(rewards=s)``);
* their difference, the **gap** (Prop. 3 of the paper). The proxy-aligned policy is the
  gold-aligned one tilted by ``exp(-delta/beta)``, hence the exact identity

  .. math::

     \mathrm{gap}(\beta) = \Delta_s(\beta, s) - \Delta_s(\beta, r)
       = -\frac{\mathrm{Cov}_{\pi^s}(s, e^{-\delta/\beta})}{E_{\pi^s}[e^{-\delta/\beta}]}.

  It is **not** always positive nor monotone in beta. What always holds (on samples as in the
  population, because each tilt maximises its own objective) is

  .. math::

     \beta\,(KL_s - KL_r) \;\le\; \mathrm{gap} \;\le\;
       \beta\,(KL_s - KL_r) + E_{\pi^s}[\delta] - E_{\pi^r}[\delta],
     \qquad |\mathrm{gap}| \le \max s - \min s,

  with ``KL_s``, ``KL_r`` the KL divergences of the gold- and proxy-aligned policies.

The gap compares the two policies at the same beta, so it depends on the proxy's scale; at the
same KL instead, the gold frontier (:func:`jaxlimits.max_gain_at_kl` of gold) bounds the proxy's
gold gain from above, and the difference, the *shortfall*, is never negative
(:func:`overoptimization` with ``same_kl=True``).

Over-optimisation (Gao et al.) is the gold gain of the proxy-aligned policy as a function of its
KL; its peak is where ``d gain / d beta = -Cov_beta(s, r) / beta^2`` (MATH.md §4) vanishes, found
by a bracketed safeguarded Newton solve in ``log beta`` on a one-beta softmax of the draws, and
differentiable by the implicit function theorem (:func:`overoptimization_peak`). The Bradley-Terry
blind spot of App. C is :func:`bt_blind_spot`; ensembles of proxies are in
:mod:`jaxlimits.ensembles`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, pooling, solver, tables
from .frontier import SATURATED_SHARE_MAX, _from_pool, _pool_of, default_betas, resample
from .samples import Samples, check_samples
from .status import MESSAGES, Status

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


def _require_gold(samples: Samples, what: str) -> None:
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


def _base_weights(samples: Samples):
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


def _residual_norms(samples: Samples):
    """``[P]`` plain and centred ``||s - r||_{L2(pi0)}``, and the gold range ``max s - min s``."""
    valid, log_u, _ = _base_weights(samples)
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
    valid, log_u, m = _base_weights(samples)
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


def _both_tilts(samples: Samples, betas: Array, memory_budget: int | None, bias_correction: bool = True):
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


def _proxy_gap_core(samples: Samples, betas: Array, memory_budget: int | None, tilts=None,
                    bias_correction: bool = True) -> ProxyGap:
    """Traceable body of :func:`proxy_gap` (betas ``[B]``)."""
    st_r, st_s = _both_tilts(samples, betas, memory_budget, bias_correction) if tilts is None else tilts
    b = jnp.asarray(betas, samples.dtype)
    gap = st_s.gain - st_r.gain
    if samples.exact:
        gap_se = jnp.zeros_like(gap)
    else:
        lam = _sweep.as_lambda(b, samples.num_prompts, samples.dtype)
        plan = _se_plan(samples.num_prompts, samples.num_samples, b.shape[0], lam.dtype.itemsize, memory_budget)
        gap_se = pooling.safe_sqrt(_gap_variance(samples, lam, plan))
    res, cres, rng = _residual_norms(samples)
    sat = st_r.saturated | st_s.saturated
    prompts = PromptGaps(
        st_s.gain, st_s.gain_se, st_r.gain, st_r.gain_se, b[None, :] * st_r.jeffreys, gap, gap_se,
        st_r.kl, st_s.kl, sat, res, cres, rng,
    )
    pooled_gap = pooling.pooled_mean(gap)
    res_pooled = pooling.safe_sqrt(jnp.mean(res * res))
    # pooled points are judged by the pooled trust rule (jaxlimits.frontier), for either alignment
    ones = jnp.ones((samples.num_prompts,), samples.dtype)
    pooled_reasons = _from_pool(_pool_of(st_r, ones), b).reasons | _from_pool(_pool_of(st_s, ones), b).reasons
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


_proxy_gap_jit = jax.jit(_proxy_gap_core, static_argnames=("memory_budget", "bias_correction"))


def _check_grid(betas, what: str = "betas"):
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
    _require_gold(samples, "proxy_gap")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    _check_grid(betas)
    return _proxy_gap_jit(samples, jnp.asarray(betas, samples.dtype), memory_budget, None, bool(bias_correction))


# ---------------------------------------------------------------------------------------------
# Over-optimisation: the gold gain against the proxy-aligned policy's KL, and its peak.

#: The peak's codes, members of the one status type (:class:`jaxlimits.status.Status`): found is ``OK``.
PEAK_FOUND = Status.OK
#: The gold gain is still rising at the smallest beta of the grid (no over-optimisation in range).
PEAK_BEYOND_GRID = Status.PEAK_BEYOND_GRID
#: The gold gain is largest at the largest beta of the grid: it falls from the start.
PEAK_AT_START = Status.PEAK_AT_START
#: The gold gain does not change with beta (the proxy carries no information about gold).
PEAK_FLAT = Status.PEAK_FLAT
#: The grid maximum could not be bracketed by a sign change of ``Cov_beta(s, r)``.
PEAK_NOT_BRACKETED = Status.PEAK_NOT_BRACKETED
_PEAK_CODES = (PEAK_FOUND, PEAK_BEYOND_GRID, PEAK_AT_START, PEAK_FLAT, PEAK_NOT_BRACKETED)
#: Status code of :class:`Peak` -> its sentence (``jaxlimits.status.MESSAGES``; found: "peak found").
PEAK_MESSAGES = {int(c): "peak found" if c == PEAK_FOUND else MESSAGES[c] for c in _PEAK_CODES}
#: Status code of :class:`Peak` -> its name, e.g. ``PEAK_NAMES[PEAK_FLAT] == "PEAK_FLAT"``.
PEAK_NAMES = {int(c): "PEAK_FOUND" if c == PEAK_FOUND else c.name for c in _PEAK_CODES}


class Peak(NamedTuple):
    """The over-optimisation peak of the pooled gold-gain curve (scalars).

    Attributes:
      beta: the KL penalty where ``d gold_gain / d beta = 0`` (with ``status != PEAK_FOUND``: the
        grid end that bounds it).
      kl: ``KL(pi^r || pi0)`` of the proxy-aligned policy at ``beta`` (the KL budget beyond
        which aligning harder to the proxy lowers the gold reward).
      gold_gain, gold_gain_se: the largest gold gain reachable by aligning to the proxy.
      proxy_gain: the proxy's own gain at ``beta``.
      status: a :class:`jaxlimits.status.Status` code, one of ``PEAK_*`` (see :data:`PEAK_MESSAGES`).
      converged: the root solve met its tolerance (False unless ``status == PEAK_FOUND``).
      iterations: iterations of the root solve.
      saturated: the estimate at the peak cannot be trusted (share of saturated prompts above
        ``SATURATED_SHARE_MAX``).
      beta_se, kl_se: bootstrap standard errors over replicates that found a peak (NaN without a
        bootstrap); found_share: the share of replicates that found one.
    """

    beta: Array
    kl: Array
    gold_gain: Array
    gold_gain_se: Array
    proxy_gain: Array
    status: Array
    converged: Array
    iterations: Array
    saturated: Array
    beta_se: Array
    kl_se: Array
    found_share: Array

    def _columns(self):
        return tables.columns(self, shape_of="beta", status=PEAK_NAMES)

    def _summary(self):
        return tables.summary(self, shape_of="beta", headline=[
            PEAK_NAMES.get(int(self.status), str(int(self.status))), f"beta {tables.span(self.beta)}",
            f"KL {tables.span(self.kl)}", f"gold gain {tables.span(self.gold_gain)}",
            "flagged" if bool(np.any(np.asarray(self.saturated))) else ""])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


class Overoptimization(NamedTuple):
    """The over-optimisation curve (the :class:`ProxyGap` on a decreasing beta grid) and its :class:`Peak`.

    With ``same_kl=True`` (else None), fields of shape ``[betas]`` comparing at equal KL rather
    than equal beta (free of the proxy's scale):
      gold_frontier: the most gold gain any policy reaches within the proxy-aligned policy's KL,
        ``gain*_s(KL_r(beta))`` (:func:`jaxlimits.max_gain_at_kl` of the gold reward); where that
        KL is beyond what the samples can show for gold, the supremum ``max s - E_0[s]``.
      shortfall: ``gold_frontier - gold_gain_proxy_aligned >= 0``, the gold reward the proxy
        leaves on the table at that KL.
      frontier_status: the :class:`jaxlimits.status.Status` code of each inversion.
    """

    curve: ProxyGap
    peak: Peak
    gold_frontier: Array | None = None
    shortfall: Array | None = None
    frontier_status: Array | None = None

    def _columns(self):
        cols = tables.columns(self.curve, shape_of="betas")
        if self.gold_frontier is not None:
            cols.update(tables.columns(self, shape_of="gold_frontier"))
        return cols

    def _summary(self):
        return tables.summary(self.curve, shape_of="betas", headline=[
            f"peak: {self.peak!r}", f"gap {tables.span(self.curve.gap)}",
            f"shortfall {tables.span(self.shortfall)}" if self.shortfall is not None else ""]).replace(
            "ProxyGap", "Overoptimization", 1)

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def _bracketed_newton(f, lo, hi, x0, *, max_iter: int):
    r"""A root of scalar ``f`` in ``[lo, hi]`` with ``f(lo) < 0 < f(hi)``, differentiable.

    :func:`jaxlimits.solver.safeguarded_newton` with ``rtsafe`` (a Newton step, derivative by
    ``jax.jvp``, is taken when it stays inside the bracket and at least halves the previous step,
    otherwise bisection) under :func:`jaxlimits.solver.implicit_root`: ``f(x*(theta), theta) = 0``
    gives ``dx*/dtheta = -(df/dtheta) / (df/dx)`` at the root, never through the iterations.

    Returns:
      ``(x, (iterations, converged))``.
    """

    def solve(g, x_init):
        def step(x):
            fx, dfx = jax.jvp(g, (x,), (jnp.ones_like(x),))
            return fx, x - fx / dfx

        return solver.safeguarded_newton(step, x_init, lo, hi, max_iter=max_iter, rtsafe=True)

    x, iters, done = solver.implicit_root(f, x0, solve)
    return x, (iters, done)


def _direct_tilt(samples: Samples):
    """``beta -> dict`` of pooled statistics of the proxy-aligned policy, by one softmax over ``[P, N]``.

    The quantities of :func:`jaxlimits.tilt` (MATH.md §3) at a single beta, written directly: a
    small program for the peak search, its final evaluation and its bootstrap (the tiled kernel
    is built for many betas at once and is expensive to compile and differentiate). The
    covariance is centred (two passes), so its sign near the root is not lost to cancellation.
    Keys: ``gain`` (gold), ``gain_se``, ``cov`` (``Cov(s, r)``), ``kl``, ``proxy_gain`` and
    ``saturated_share``, pooled over prompts.
    """
    valid, log_u, m = _base_weights(samples)
    r = jnp.where(valid, samples.rewards, 0)
    s = jnp.where(valid, samples.scores, 0)
    x = jnp.where(valid, r - jnp.max(jnp.where(valid, r, -jnp.inf), axis=1, keepdims=True), 0)
    u = jnp.exp(log_u)
    inv_m = jnp.where(valid, 1 / m, 0)
    s_base = jnp.sum(u * s, axis=1)
    x_base = jnp.sum(u * x, axis=1)
    draws = jnp.sum(jnp.where(valid, m, 0), axis=1)
    ceiling = pooling.kl_ceiling(0, jnp.log(jnp.sum(jnp.where(valid & (x == 0), u, 0), axis=1)))
    dt = samples.dtype

    def at(beta):
        logits = log_u + x / beta
        lse = jax.nn.logsumexp(logits, axis=1, keepdims=True)
        p = jnp.exp(logits - lse)
        mu_s = jnp.sum(p * s, axis=1)
        mu_x = jnp.sum(p * x, axis=1)
        cov = jnp.sum(p * (x - mu_x[:, None]) * (s - mu_s[:, None]), axis=1)
        kl = mu_x / beta - lse[:, 0]
        # influence of the gain, times u (MATH.md §3): p (s - mu_p) - u (s - mu_u)
        a = p * (s - mu_s[:, None]) - u * (s - s_base[:, None])
        var = jnp.sum(inv_m * a * a, axis=1)
        ess = 1 / jnp.sum(inv_m * p * p, axis=1)
        if samples.exact:
            var, sat = jnp.zeros_like(var), jnp.zeros(var.shape, bool)
        else:
            sat = estimators.saturation(ess[:, None], kl[:, None], draws, ceiling)[:, 0]
        return {
            "gain": jnp.mean(mu_s - s_base), "gain_se": pooling.pooled_se_of_variances(var), "cov": jnp.mean(cov),
            "kl": jnp.mean(kl), "proxy_gain": jnp.mean(mu_x - x_base),
            "saturated_share": pooling.saturated_share(sat, dtype=dt),
        }

    return at


def _peak_core(samples: Samples, betas: Array, max_iter: int, grid_gain=None) -> Peak:
    """Traceable body of :func:`overoptimization_peak` (betas ``[B]`` decreasing, KL increasing).

    ``grid_gain``: optional ``([B] pooled gold gain, [B] pooled cov)`` on ``betas`` (already
    computed by the curve), else computed here.
    """
    dt = samples.dtype
    betas = jnp.asarray(betas, dt)
    nb = betas.shape[0]
    direct = _direct_tilt(samples)
    if grid_gain is None:
        grid = jax.lax.map(direct, betas)
        gain, cov = grid["gain"], grid["cov"]
    else:
        gain, cov = grid_gain
    # ascending log beta (KL descending): reverse the decreasing grid
    t_grid = jnp.log(betas)[::-1]
    gain, cov = gain[::-1], cov[::-1]

    def f(t):
        """Pooled Cov_beta(s, r) at beta = e^t: d gold_gain / d log beta = -f / beta."""
        return direct(jnp.exp(t))["cov"]

    k = jnp.argmax(gain)
    kc = jnp.clip(k, 1, nb - 2)
    lo, mid, hi = t_grid[kc - 1], t_grid[kc], t_grid[kc + 1]
    f_lo, f_mid, f_hi = cov[kc - 1], cov[kc], cov[kc + 1]
    # A maximum of the gold gain in log beta: f < 0 below it (smaller beta), f > 0 above.
    left = (f_lo < 0) & (f_mid > 0)
    right = (f_mid < 0) & (f_hi > 0)
    a = jnp.where(right, mid, lo)
    b = jnp.where(left, mid, hi)
    t_star, (iters, done) = _bracketed_newton(f, a, b, 0.5 * (a + b), max_iter=max_iter)
    bracketed = left | right | (f_mid == 0)
    t_star = jnp.where(f_mid == 0, mid, t_star)

    eps = jnp.finfo(dt).eps
    spread = gain.max() - gain.min()
    scale = jnp.mean(_residual_norms(samples)[2])  # the gold range: gains are bounded by it
    flat = spread <= 64 * eps * scale
    status = jnp.where(
        flat, int(PEAK_FLAT),
        jnp.where(k == 0, int(PEAK_BEYOND_GRID),
                  jnp.where(k == nb - 1, int(PEAK_AT_START), jnp.where(bracketed, int(PEAK_FOUND),
                                                                       int(PEAK_NOT_BRACKETED)))),
    ).astype(jnp.int32)
    found = status == int(PEAK_FOUND)
    t_out = jnp.where(found, t_star, t_grid[k])
    beta = jnp.exp(t_out)
    nan = jnp.full((), jnp.nan, dt)
    at = direct(beta)  # differentiable: at the peak dG*/dtheta is the partial at fixed beta* (envelope)
    return Peak(beta, at["kl"], at["gain"], at["gain_se"], at["proxy_gain"], status, found & (done | (f_mid == 0)),
                jnp.where(found, iters, 0), at["saturated_share"] > SATURATED_SHARE_MAX, nan, nan, jnp.zeros((), dt))


def _overoptimization_core(samples: Samples, betas: Array, max_iter: int, memory_budget: int | None):
    # the plug-in curve, like the peak's own search (a bias-corrected peak search is not built yet)
    tilts = _both_tilts(samples, betas, memory_budget, bias_correction=False)
    curve = _proxy_gap_core(samples, betas, memory_budget, tilts=tilts)
    grid = (jnp.mean(tilts[0].gain, axis=0), jnp.mean(tilts[0].cov_sr, axis=0))
    return Overoptimization(curve, _peak_core(samples, betas, max_iter, grid_gain=grid))


_overoptimization_jit = jax.jit(_overoptimization_core, static_argnames=("max_iter", "memory_budget"))
_peak_jit = jax.jit(_peak_core, static_argnames=("max_iter",))


def overoptimization_peak(samples: Samples, betas, *, max_iter: int = 64) -> Peak:
    r"""Where aligning harder to the proxy starts to lower the gold reward (jit-able, differentiable).

    The pooled gold gain ``G(beta) = mean_x Delta_s(beta, r)`` has
    ``dG/dbeta = -mean_x Cov_{pi^r_beta}(s, r) / beta^2`` (MATH.md §4). The grid maximum of ``G``
    is bracketed by neighbouring grid points where the pooled covariance changes sign, and the
    root is refined by safeguarded Newton in ``log beta`` (derivative by ``jax.jvp`` of the exact
    tilted covariance, bisection when a step leaves the bracket; at most ``max_iter`` steps). The
    returned ``beta`` is differentiable with respect to the rewards and scores by the implicit
    function theorem (``jax.lax.custom_root``): ``d beta*/d theta = -beta* (df/dtheta) / (df/dt)``.

    The grid decides *which* local maximum is refined (the highest on the grid), so make it dense
    enough to resolve the curve (``default_betas`` gives several points per octave).

    Each evaluation is one softmax over the ``[prompts, samples]`` draws at one beta (the formulas
    of :func:`jaxlimits.tilt`, MATH.md §3, written directly: a small program that compiles and
    differentiates quickly; in float64 they agree with ``tilt`` to ~1e-15). The statistics at the
    peak (gold gain and its delta-method SE, KL, proxy gain, saturation) are differentiable, and by
    the envelope theorem ``d gold_gain*/d theta`` is the partial derivative at fixed ``beta*``.

    Args:
      samples: :class:`jaxlimits.Samples` with the proxy as ``rewards`` and gold as ``scores``.
      betas: ``[B]`` grid (``B >= 3``, any order) on which the curve is located.
      max_iter: cap on the Newton/bisection iterations.

    Returns:
      :class:`Peak` (status as data, so it runs under ``jit`` and ``vmap``).

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> q = np.repeat(np.linspace(0, 1, 11), 2); f = np.tile([0.0, 1.0], 11)
      >>> p = np.where(f == 1, 0.03, 0.97) / 11
      >>> law = jl.Samples.from_law([q + 0.5 * f], [p], scores=[q - 2 * f])
      >>> pk = jl.overoptimization_peak(law, np.geomspace(10, 0.01, 31))
      >>> int(pk.status), round(float(pk.beta), 4)
      (0, 0.4614)
    """
    _require_gold(samples, "overoptimization_peak")
    max_iter = _sweep.positive_int(max_iter, "max_iter")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    _check_grid(betas)
    if np.shape(betas)[0] < 3:
        raise ValueError(f"overoptimization_peak needs a grid of at least 3 betas, got {np.shape(betas)[0]}")
    grid = jnp.asarray(np.sort(np.asarray(betas, dtype=np.float64))[::-1].copy(), samples.dtype)
    return _peak_jit(samples, grid, max_iter)


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _bootstrap_peaks(samples, betas, keys, max_iter):
    def one(key):
        pk = _peak_core(resample(samples, key), betas, max_iter)
        return pk.beta, pk.kl, pk.status

    return jax.lax.map(one, keys)


def overoptimization(
    samples: Samples,
    betas=None,
    *,
    num_betas: int = 64,
    bootstrap: int = 0,
    key: Array | None = None,
    same_kl: bool = False,
    max_iter: int = 64,
    memory_budget: int | None = None,
) -> Overoptimization:
    r"""The over-optimisation curve of Gao et al. from base samples, and its peak (MATH.md §7).

    The curve is the gold gain of the proxy-aligned policy, ``Delta_s(beta, r)``, against its KL,
    ``KL(pi^r_beta || pi0)``, beside the gain the proxy promises and the gold-aligned frontier
    (all in ``curve``, a :class:`ProxyGap` on a decreasing beta grid, so KL increases along it).
    The peak is :func:`overoptimization_peak`.

    Args:
      samples: :class:`jaxlimits.Samples` with the proxy as ``rewards`` and gold as ``scores``.
      betas: ``[B]`` grid; by default :func:`jaxlimits.default_betas` of the proxy (``num_betas``
        points from KL near 0 to near what the samples can show).
      bootstrap: replicates (each prompt's draws resampled) for the peak's ``beta_se`` and
        ``kl_se``; each replicate runs the whole jit-compiled peak search (``lax.map``).
      key: ``jax.random`` key of the bootstrap (default ``PRNGKey(0)``).
      same_kl: also compare at equal KL: the gold frontier at the proxy-aligned KL and the
        shortfall (one more jit-compiled solve, :func:`jaxlimits.max_gain_at_kl`).
      max_iter: see :func:`overoptimization_peak`.
      memory_budget: bytes of working memory for each sweep of the curve.

    Returns:
      :class:`Overoptimization`.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> rng = np.random.default_rng(0)
      >>> gold = rng.standard_normal((4, 256)); proxy = gold + rng.standard_normal((4, 256))
      >>> res = jl.overoptimization(jl.Samples(proxy, scores=gold), np.geomspace(8, 0.5, 9))
      >>> rising = bool(res.curve.kl_proxy_aligned[0] < res.curve.kl_proxy_aligned[-1])
      >>> rising, jl.proxy.PEAK_NAMES[int(res.peak.status)]
      (True, 'PEAK_BEYOND_GRID')
    """
    _require_gold(samples, "overoptimization")
    max_iter = _sweep.positive_int(max_iter, "max_iter")
    if betas is None:
        num_betas = _sweep.positive_int(num_betas, "num_betas", 2)
        betas = default_betas(samples, num=num_betas, memory_budget=memory_budget)
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    _check_grid(betas)
    b = np.sort(np.asarray(betas, dtype=np.float64))[::-1].copy()
    if b.shape[0] < 3:
        raise ValueError(f"overoptimization needs a grid of at least 3 betas, got {b.shape[0]}")
    grid = jnp.asarray(b, samples.dtype)
    out = _overoptimization_jit(samples, grid, max_iter, memory_budget)
    curve, peak = out.curve, out.peak
    if bootstrap:
        if samples.exact:
            raise ValueError("an exact law has no sampling error to bootstrap")
        bootstrap = _sweep.positive_int(bootstrap, "bootstrap (replicates)", 2)
        key = jax.random.PRNGKey(0) if key is None else key
        bb, kk, ss = _bootstrap_peaks(samples, grid, jax.random.split(key, bootstrap), max_iter)
        ok = ss == int(PEAK_FOUND)
        n_ok = jnp.sum(ok)

        def sd(x):
            mean = jnp.sum(jnp.where(ok, x, 0)) / jnp.maximum(n_ok, 1)
            var = jnp.sum(jnp.where(ok, (x - mean) ** 2, 0)) / jnp.maximum(n_ok - 1, 1)
            return jnp.where(n_ok >= 2, jnp.sqrt(var), jnp.nan)

        peak = peak._replace(beta_se=sd(bb), kl_se=sd(kk), found_share=n_ok / bootstrap)
    if not same_kl:
        return Overoptimization(curve, peak)
    from .inversion import max_gain_at_kl

    # the plug-in gold frontier, like the plug-in curve it is held against (shortfall >= 0 exactly)
    sol = max_gain_at_kl(gold_aligned(samples), curve.kl_proxy_aligned, pooled=True, throw=False,
                         memory_budget=memory_budget, bias_correction=False)
    beyond = sol.status == int(Status.KL_AT_OR_ABOVE_CEILING)
    frontier = jnp.where(beyond, sol.gain_max, sol.gain)
    return Overoptimization(curve, peak, frontier, frontier - curve.gold_gain_proxy_aligned, sol.status)


# ---------------------------------------------------------------------------------------------
# The Bradley-Terry blind spot (App. C of the paper).


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
    valid, log_u, _ = _base_weights(samples)
    ind = (cluster & valid).astype(samples.dtype)
    r = jnp.where(valid, samples.rewards, 0)
    s = jnp.where(valid, samples.scores, 0)

    def one(c):
        sh = Samples.tree_unflatten(
            (samples.exact,), (r + c * ind, s, samples.log_weights, samples.counts, samples.mask)
        )
        g = _proxy_gap_core(sh, betas, memory_budget)
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
    _require_gold(samples, "bt_blind_spot")
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
    _check_grid(betas)
    if cluster is None:
        lu = np.asarray(_base_weights(samples)[1])
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


# ---------------------------------------------------------------------------------------------
# Figure.


def overoptimization_figure(result: Overoptimization, path=None, *, ax=None, title: str | None = None,
                            gold_label: str = "gold", proxy_label: str = "proxy"):
    """The over-optimisation curve: gold and proxy gain against the proxy-aligned policy's KL.

    Gold gain of the proxy-aligned policy with a ±1.96 SE band, the gold-aligned frontier (dashed,
    against its own KL; dotted: its cap where the samples cannot show gold's KL, with
    ``same_kl=True``), the proxy's promised gain on a second axis, the peak marked, and saturated
    points (too few effective samples) drawn hollow. Built on matplotlib's Agg canvas (no
    ``pyplot``; the global backend is untouched), like :mod:`jaxlimits.plot`.

    Args:
      result: :class:`Overoptimization`.
      path: optional file to save the figure to (PNG, PDF, SVG).
      ax: optional matplotlib ``Axes`` to draw on.
      title: optional title.
      gold_label, proxy_label: what the gold and proxy rewards are called (axes and their units).

    Returns:
      The matplotlib ``Figure``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the test extra installs matplotlib
        raise ImportError("overoptimization_figure needs matplotlib: pip install 'jaxlimits[plot]'") from None

    c, pk = result.curve, result.peak
    kl = np.asarray(c.kl_proxy_aligned, dtype=np.float64)
    g = np.asarray(c.gold_gain_proxy_aligned, dtype=np.float64)
    se = np.asarray(c.gold_gain_proxy_aligned_se, dtype=np.float64)
    sat = np.asarray(c.saturated, dtype=bool)
    if ax is None:  # on the Agg canvas directly: no pyplot, the global backend untouched
        fig = Figure(figsize=(6.4, 4.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.fill_between(kl, g - 1.96 * se, g + 1.96 * se, color="C0", alpha=0.2, lw=0)
    ax.plot(kl, g, color="C0", label="gold gain, aligned to proxy")
    ax.plot(kl[~sat], g[~sat], "o", color="C0", ms=3)
    if sat.any():
        ax.plot(kl[sat], g[sat], "o", mfc="none", color="C0", ms=3, label="saturated (few effective samples)")
    ax.plot(np.asarray(c.kl_gold_aligned), np.asarray(c.gold_gain_gold_aligned), "--", color="C2",
            label="gold gain, aligned to gold (the gold frontier)")
    if result.gold_frontier is not None:
        beyond = np.asarray(result.frontier_status) == int(Status.KL_AT_OR_ABOVE_CEILING)
        if beyond.any():
            ax.plot(kl[beyond], np.asarray(result.gold_frontier)[beyond], ":", color="C2",
                    label="gold frontier cap (beyond what the samples show)")
    status = int(pk.status)
    if status == PEAK_FOUND:
        ax.axvline(float(pk.kl), color="C3", lw=0.8, ls=":")
        ax.plot([float(pk.kl)], [float(pk.gold_gain)], "*", color="C3", ms=12,
                label=f"peak: KL {float(pk.kl):.3g}, beta {float(pk.beta):.3g}")
    ax.set_xlabel("KL(pi || pi0) of the policy aligned to the proxy  [nats per sequence]")
    ax.set_ylabel(f"{gold_label} gain  [{gold_label} units]")
    ax2 = ax.twinx()
    ax2.plot(kl, np.asarray(c.proxy_gain), color="C1", alpha=0.8, label="proxy gain (right axis)")
    ax2.set_ylabel(f"{proxy_label} gain  [{proxy_label} units]", color="C1")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="best")
    if status != PEAK_FOUND:
        ax.set_title((title + "\n" if title else "") + PEAK_MESSAGES[status], fontsize=9)
    elif title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
