r"""Over-optimisation (Gao et al.; MATH.md §7): the gold gain against the proxy-aligned policy's KL, and its peak.

The peak is where ``d gain / d beta = -Cov_beta(s, r) / beta^2`` (MATH.md §4) vanishes, found by
the bracketed safeguarded Newton of :mod:`jaxlimits.solver` in ``log beta`` on a one-beta softmax
of the draws, and differentiable by the implicit function theorem (:func:`overoptimization_peak`).
By default the curve and the peak are the bias-corrected ones (MATH.md §3b): the search runs on
the corrected gain's slope, in closed form from the same weights (:func:`_direct_tilt`).

Why Newton on the corrected slope rather than the inversions' way (solve the plug-in, then shift
the target by the bias at the solution): a peak has no target to shift. Its equation is
``d(gain - bias)/d lambda = 0``; the bias's derivative is needed either way, and once it is at
hand the corrected slope is one more reduction over the same softmax, so the one bracketed solve
(and its ``custom_root``) runs on it directly, with no correction passes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, moments, pooling, solver, tables
from .frontier import default_betas, from_pool, pool_sweep, resample
from .gap import (
    ProxyGap,
    base_weights,
    both_tilts,
    check_grid,
    gold_aligned,
    proxy_gap_core,
    require_gold,
    residual_norms,
)
from .samples import Samples
from .status import MESSAGES, Status

Array = jax.Array


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
      saturated: ``reasons != 0``: the estimate at the peak cannot be trusted.
      beta_se, kl_se: bootstrap standard errors over replicates that found a peak (NaN without a
        bootstrap); found_share: the share of replicates that found one.
      reasons: why, the pooled trust rule of the proxy-aligned estimate at ``beta`` (an ``int32``
        bitmask like :attr:`jaxlimits.Frontier.reasons`; ``jaxlimits.estimators.reason_names``
        spells it; 0: trusted). A peak found among flagged points of the curve carries their reasons.

    With ``bias_correction=True`` (the default of :func:`overoptimization` and
    :func:`overoptimization_peak`) ``kl``, ``gold_gain`` and ``proxy_gain`` are the bias-corrected
    estimates (:func:`jaxlimits.tilt`) and ``beta`` is the maximum of the corrected gold-gain curve.
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
    reasons: Array

    def _columns(self):
        return tables.columns(self, shape_of="beta", status=PEAK_NAMES)

    def _summary(self):
        from .estimators import reason_names

        codes = np.ravel(np.asarray(self.status))
        names = sorted({PEAK_NAMES.get(int(c), str(int(c))) for c in codes})
        # without a peak the values are the grid end that bounds it, not a peak's
        end = "grid end " if not (codes == int(PEAK_FOUND)).any() else ""
        why = reason_names(np.bitwise_or.reduce(np.ravel(np.asarray(self.reasons)).astype(np.int64), initial=0))
        return tables.summary(self, shape_of="beta", headline=[
            "/".join(names), f"{end}beta {tables.span(self.beta)}", f"KL {tables.span(self.kl)}",
            f"gold gain {tables.span(self.gold_gain)}", f"flagged ({why.replace('+', ', ')})" if why else ""])

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


def _direct_tilt(samples: Samples, bias_correction: bool = True):
    r"""``beta -> dict`` of pooled statistics of the proxy-aligned policy, by one softmax over ``[P, N]``.

    The quantities of :func:`jaxlimits.tilt` (MATH.md §3) at a single beta, written directly: a
    small program for the peak search, its final evaluation and its bootstrap (the tiled kernel
    is built for many betas at once and is expensive to compile and differentiate). The
    covariance is centred (two passes), so its sign near the root is not lost to cancellation.
    Keys, pooled over prompts: ``gain`` (gold), ``gain_se``, ``slope`` (``d gain / d lambda``,
    ``lambda = 1/beta``), ``kl`` and ``proxy_gain``.

    With ``bias_correction`` (and samples that are not an exact law) the gains and the KL are
    :func:`jaxlimits.tilt`'s bias-corrected ones (MATH.md §3b, :func:`jaxlimits.moments.bias_terms`),
    from the same weights (no other exponential): with ``q_i = p_i^2 / m_i``, ``Q = sum q = 1/ESS``,

    .. math::

       b_\Delta = -\textstyle\sum q (s - \mu_s) + \sum (u^2/m)(s - \mu_u), \qquad
       b_{KL} = -\lambda \textstyle\sum q (r - \nu) + (Q - \sum u^2/m) / 2,

    and the slope is that of the corrected gain, by ``d q_i / d lambda = 2 q_i (r_i - nu)`` and
    ``d mu_s / d lambda = Cov(s, r)``:

    .. math::

       \frac{d(\Delta - b_\Delta)}{d\lambda} = (1 - Q)\,\mathrm{Cov}(s, r)
         + 2 \textstyle\sum q (r - \nu)(s - \mu_s)

    (the plug-in's is ``Cov(s, r)``; tests check it against ``jax.grad`` of the corrected gain).
    As in :func:`jaxlimits.tilt`, where a corrected value is not finite the plug-in one stays.
    """
    valid, log_u, m = base_weights(samples)
    r = jnp.where(valid, samples.rewards, 0)
    s = jnp.where(valid, samples.scores, 0)
    x = jnp.where(valid, r - jnp.max(jnp.where(valid, r, -jnp.inf), axis=1, keepdims=True), 0)
    u = jnp.exp(log_u)
    inv_m = jnp.where(valid, 1 / m, 0)
    s_base = jnp.sum(u * s, axis=1)
    x_base = jnp.sum(u * x, axis=1)
    correct = bool(bias_correction) and not samples.exact
    if correct:  # the base weights' part of the biases does not depend on beta
        uu = inv_m * u * u
        u2, u2_s, u2_x = jnp.sum(uu, axis=1), jnp.sum(uu * (s - s_base[:, None]), axis=1), \
            jnp.sum(uu * (x - x_base[:, None]), axis=1)

    def fix(value, bias):
        return jnp.where(jnp.isfinite(value - bias), value - bias, value)

    def at(beta):
        logits = log_u + x / beta
        lse = jax.nn.logsumexp(logits, axis=1, keepdims=True)
        p = jnp.exp(logits - lse)
        mu_s = jnp.sum(p * s, axis=1)
        mu_x = jnp.sum(p * x, axis=1)
        ds, dx = s - mu_s[:, None], x - mu_x[:, None]
        cov = jnp.sum(p * dx * ds, axis=1)
        kl = mu_x / beta - lse[:, 0]
        gain, proxy_gain, slope = mu_s - s_base, mu_x - x_base, cov
        # influence of the gain, times u (MATH.md §3): p (s - mu_p) - u (s - s_base)
        a = p * ds - u * (s - s_base[:, None])
        q = inv_m * p * p
        var = jnp.sum(inv_m * a * a, axis=1)
        if samples.exact:
            var = jnp.zeros_like(var)
        if correct:  # the kernel's bias formulas (moments.bias_terms), for the gold and the proxy gain
            big_q = jnp.sum(q, axis=1)
            q_x = jnp.sum(q * dx, axis=1)
            _, gain_bias, kl_bias, _ = moments.bias_terms(big_q, jnp.sum(q * ds, axis=1), q_x / beta, u2, u2_s, 0)
            proxy_bias = moments.bias_terms(big_q, q_x, 0, u2, u2_x, 0)[1]
            gain, proxy_gain, kl = fix(gain, gain_bias), fix(proxy_gain, proxy_bias), fix(kl, kl_bias)
            slope = fix(slope, cov * big_q - 2 * jnp.sum(q * dx * ds, axis=1))
        return {
            "gain": jnp.mean(gain), "gain_se": pooling.pooled_se_of_variances(var), "slope": jnp.mean(slope),
            "kl": jnp.mean(kl), "proxy_gain": jnp.mean(proxy_gain),
        }

    return at


def _reasons_at(samples: Samples, beta, memory_budget: int | None):
    """The pooled trust rule's reasons (``int32``) of the proxy-aligned estimate at the scalar ``beta``.

    The one kernel (:func:`jaxlimits.tilt`, every prompt's k-hat, pooled like
    :attr:`ProxyGap.reasons <jaxlimits.proxy.ProxyGap>`) at that beta; not differentiated.
    """
    lam = jnp.broadcast_to(1 / jax.lax.stop_gradient(beta), (samples.num_prompts, 1)).astype(samples.dtype)
    plan = _sweep.plan(samples.num_prompts, samples.num_samples, 1, lam.dtype.itemsize, memory_budget)
    pool, _ = pool_sweep(jax.lax.stop_gradient(samples), lam, plan, True)
    return from_pool(pool, lam[0]).reasons[0]


def _peak_core(samples: Samples, betas: Array, max_iter: int, grid_gain=None, bias_correction: bool = True,
               reasons: bool = True, memory_budget: int | None = None) -> Peak:
    """Traceable body of :func:`overoptimization_peak` (betas ``[B]`` decreasing, KL increasing).

    ``grid_gain``: optional ``([B] pooled gold gain, [B] its slope d gain / d lambda)`` on
    ``betas`` (already computed by the curve), else computed here. ``reasons``: the trust rule at
    the peak (one more kernel sweep; the bootstrap's replicates skip it, their ``reasons`` are 0).
    """
    dt = samples.dtype
    betas = jnp.asarray(betas, dt)
    nb = betas.shape[0]
    direct = _direct_tilt(samples, bias_correction)
    if grid_gain is None:
        grid = jax.lax.map(direct, betas)
        gain, slope = grid["gain"], grid["slope"]
    else:
        gain, slope = grid_gain
    # ascending log beta (KL descending): reverse the decreasing grid
    t_grid = jnp.log(betas)[::-1]
    gain, slope = gain[::-1], slope[::-1]

    def f(t):
        """Pooled d gold_gain / d lambda at beta = e^t (the plug-in's: Cov_beta(s, r)); d G / d log beta = -f / beta."""
        return direct(jnp.exp(t))["slope"]

    k = jnp.argmax(gain)
    kc = jnp.clip(k, 1, nb - 2)
    lo, mid, hi = t_grid[kc - 1], t_grid[kc], t_grid[kc + 1]
    f_lo, f_mid, f_hi = slope[kc - 1], slope[kc], slope[kc + 1]
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
    scale = jnp.mean(residual_norms(samples)[2])  # the gold range: gains are bounded by it
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
    # an exact law has nothing to distrust (zero SE and bias: jaxlimits.frontier.from_pool)
    why = _reasons_at(samples, beta, memory_budget) if reasons and not samples.exact else jnp.int32(0)
    return Peak(beta, at["kl"], at["gain"], at["gain_se"], at["proxy_gain"], status, found & (done | (f_mid == 0)),
                jnp.where(found, iters, 0), why != 0, nan, nan, jnp.zeros((), dt), why)


def _overoptimization_core(samples: Samples, betas: Array, max_iter: int, memory_budget: int | None,
                           bias_correction: bool = True):
    tilts = both_tilts(samples, betas, memory_budget, bias_correction=bias_correction)
    curve = proxy_gap_core(samples, betas, memory_budget, tilts=tilts)
    # the plug-in slope is the kernel's Cov(s, r); the corrected one needs sums the kernel does not keep
    grid = None if bias_correction else (jnp.mean(tilts[0].gain, axis=0), jnp.mean(tilts[0].cov_sr, axis=0))
    peak = _peak_core(samples, betas, max_iter, grid_gain=grid, bias_correction=bias_correction,
                      memory_budget=memory_budget)
    return Overoptimization(curve, peak)


_overoptimization_jit = jax.jit(_overoptimization_core,
                               static_argnames=("max_iter", "memory_budget", "bias_correction"))
_peak_jit = jax.jit(_peak_core, static_argnames=("max_iter", "bias_correction", "reasons", "memory_budget"))


def overoptimization_peak(samples: Samples, betas, *, max_iter: int = 64, bias_correction: bool = True,
                          memory_budget: int | None = None) -> Peak:
    r"""Where aligning harder to the proxy starts to lower the gold reward (jit-able, differentiable).

    The pooled gold gain ``G(beta) = mean_x Delta_s(beta, r)`` has
    ``dG/dlambda = mean_x Cov_{pi^r_beta}(s, r)`` (``lambda = 1/beta``, MATH.md §4). The grid
    maximum of ``G`` is bracketed by neighbouring grid points where that slope changes sign, and
    the root is refined by safeguarded Newton in ``log beta`` (derivative by ``jax.jvp`` of the
    slope, bisection when a step leaves the bracket; at most ``max_iter`` steps). The returned
    ``beta`` is differentiable with respect to the rewards and scores by the implicit function
    theorem (``jax.lax.custom_root``): ``d beta*/d theta = -beta* (df/dtheta) / (df/dt)``.

    By default (``bias_correction=True``) ``G`` is the **bias-corrected** gold gain of
    :func:`jaxlimits.tilt` (the plug-in minus its estimated second-order bias, MATH.md §3b) and
    the search runs on it directly: the same bracket and Newton, on the corrected curve's slope
    in closed form, ``(1 - Q) Cov(s, r) + 2 sum_i q_i (r_i - nu)(s_i - mu_s)`` with
    ``q_i = p_i^2/m_i`` and ``Q = sum q = 1/ESS`` (the derivative of the bias term; no other
    exponential). The plug-in's peak is biased like its curve (order ``1/ESS`` per prompt, which
    pooling does not average out); ``bias_correction=False`` gives it. An exact law has no bias:
    both are the same there.

    The grid decides *which* local maximum is refined (the highest on the grid), so make it dense
    enough to resolve the curve (``default_betas`` gives several points per octave).

    Each evaluation is one softmax over the ``[prompts, samples]`` draws at one beta (the formulas
    of :func:`jaxlimits.tilt`, MATH.md §3 and §3b, written directly: a small program that compiles
    and differentiates quickly; in float64 they agree with ``tilt`` to ~1e-15). The statistics at
    the peak (gold gain and its delta-method SE, KL, proxy gain) are differentiable, and by the
    envelope theorem ``d gold_gain*/d theta`` is the partial derivative at fixed ``beta*``. The
    trust rule at the peak (``reasons``) is the one kernel's (:func:`jaxlimits.tilt`, pooled) at
    ``beta*``.

    Args:
      samples: :class:`jaxlimits.Samples` with the proxy as ``rewards`` and gold as ``scores``.
      betas: ``[B]`` grid (``B >= 3``, any order) on which the curve is located.
      max_iter: cap on the Newton/bisection iterations.
      bias_correction: locate the peak of the bias-corrected curve and report corrected
        estimates (default), or the plug-in's (False).
      memory_budget: bytes of working memory for the kernel sweep of the trust rule at the peak.

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
    require_gold(samples, "overoptimization_peak")
    max_iter = _sweep.positive_int(max_iter, "max_iter")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    check_grid(betas)
    if np.shape(betas)[0] < 3:
        raise ValueError(f"overoptimization_peak needs a grid of at least 3 betas, got {np.shape(betas)[0]}")
    grid = jnp.asarray(np.sort(np.asarray(betas, dtype=np.float64))[::-1].copy(), samples.dtype)
    return _peak_jit(samples, grid, max_iter, bias_correction=bool(bias_correction), memory_budget=memory_budget)


@functools.partial(jax.jit, static_argnames=("max_iter", "bias_correction"))
def _bootstrap_peaks(samples, betas, keys, max_iter, bias_correction):
    def one(key):
        pk = _peak_core(resample(samples, key), betas, max_iter, bias_correction=bias_correction, reasons=False)
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
    bias_correction: bool = True,
) -> Overoptimization:
    r"""The over-optimisation curve of Gao et al. from base samples, and its peak (MATH.md §7).

    The curve is the gold gain of the proxy-aligned policy, ``Delta_s(beta, r)``, against its KL,
    ``KL(pi^r_beta || pi0)``, beside the gain the proxy promises and the gold-aligned frontier
    (all in ``curve``, a :class:`ProxyGap` on a decreasing beta grid, so KL increases along it).
    The peak is :func:`overoptimization_peak`. Both are bias-corrected by default, like every
    estimate of :func:`jaxlimits.tilt`; each point of the curve carries the pooled trust rule's
    ``reasons`` (``curve.reasons``) and so does the peak (``peak.reasons``).

    Args:
      samples: :class:`jaxlimits.Samples` with the proxy as ``rewards`` and gold as ``scores``.
      betas: ``[B]`` grid; by default :func:`jaxlimits.default_betas` of the proxy (``num_betas``
        points from KL near 0 to near what the samples can show).
      bootstrap: replicates (each prompt's draws resampled) for the peak's ``beta_se`` and
        ``kl_se``; each replicate runs the whole jit-compiled peak search (``lax.map``).
      key: ``jax.random`` key of the bootstrap (default ``PRNGKey(0)``).
      same_kl: also compare at equal KL: the gold frontier at the proxy-aligned KL and the
        shortfall (one more jit-compiled solve, :func:`jaxlimits.max_gain_at_kl`, on the same
        footing as the curve: corrected or plug-in). The corrected frontier is reported as at
        least the corrected proxy-aligned gold gain (:func:`frontier_at_least`), so the shortfall
        stays ``>= 0``; on the plug-in that holds exactly without it.
      max_iter: see :func:`overoptimization_peak`.
      memory_budget: bytes of working memory for each sweep of the curve.
      bias_correction: the curve (gold gain, KL, proxy gain: :func:`jaxlimits.proxy_gap`), its
        peak (:func:`overoptimization_peak`) and the gold frontier from the bias-corrected
        estimates of :func:`jaxlimits.tilt` (default), or the plug-in ones (False).

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
    require_gold(samples, "overoptimization")
    max_iter = _sweep.positive_int(max_iter, "max_iter")
    if betas is None:
        num_betas = _sweep.positive_int(num_betas, "num_betas", 2)
        betas = default_betas(samples, num=num_betas, memory_budget=memory_budget)
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    check_grid(betas)
    b = np.sort(np.asarray(betas, dtype=np.float64))[::-1].copy()
    if b.shape[0] < 3:
        raise ValueError(f"overoptimization needs a grid of at least 3 betas, got {b.shape[0]}")
    grid = jnp.asarray(b, samples.dtype)
    correct = bool(bias_correction)
    out = _overoptimization_jit(samples, grid, max_iter, memory_budget, correct)
    curve, peak = out.curve, out.peak
    if bootstrap:
        if samples.exact:
            raise ValueError("an exact law has no sampling error to bootstrap")
        bootstrap = _sweep.positive_int(bootstrap, "bootstrap (replicates)", 2)
        key = jax.random.PRNGKey(0) if key is None else key
        bb, kk, ss = _bootstrap_peaks(samples, grid, jax.random.split(key, bootstrap), max_iter, correct)
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

    # the gold frontier on the same footing as the curve it is held against (plug-in or corrected)
    sol = max_gain_at_kl(gold_aligned(samples), curve.kl_proxy_aligned, pooled=True, throw=False,
                         memory_budget=memory_budget, bias_correction=correct)
    beyond = sol.status == int(Status.KL_AT_OR_ABOVE_CEILING)
    frontier = jnp.where(beyond, sol.gain_max, sol.gain)
    if correct:
        frontier = frontier_at_least(frontier, curve.gold_gain_proxy_aligned)
    return Overoptimization(curve, peak, frontier, frontier - curve.gold_gain_proxy_aligned, sol.status)


def frontier_at_least(frontier: Array, gold_gain: Array) -> Array:
    """``max(frontier, gold_gain)`` (NaN stays NaN): the gold frontier is at least the proxy-aligned gold gain.

    The proxy-aligned policy is a policy within its own KL, so the true frontier at that KL is at
    least its gold gain. On plug-in estimates that holds exactly on the samples (each tilt of the
    empirical law is optimal among its reweightings); the bias-corrected estimates shift each curve
    by its own estimated bias, and where the two are within that of each other they can cross.
    Projecting the frontier estimate onto the constraint the truth obeys never moves it further
    from the truth, and keeps ``shortfall = frontier - gold_gain >= 0`` an identity.
    """
    return jnp.where(jnp.isnan(frontier) | jnp.isnan(gold_gain), jnp.nan, jnp.maximum(frontier, gold_gain))
