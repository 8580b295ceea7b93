r"""Over-optimisation (Gao et al.; MATH.md §7): the gold gain against the proxy-aligned policy's KL, and its peak.

The peak is where ``d gain / d beta = -Cov_beta(s, r) / beta^2`` (MATH.md §4) vanishes, found by
the bracketed safeguarded Newton of :mod:`jaxlimits.solver` in ``log beta`` on a one-beta softmax
of the draws, and differentiable by the implicit function theorem (:func:`overoptimization_peak`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, pooling, solver, tables
from .frontier import SATURATED_SHARE_MAX, default_betas, resample
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
    valid, log_u, m = base_weights(samples)
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
    return Peak(beta, at["kl"], at["gain"], at["gain_se"], at["proxy_gain"], status, found & (done | (f_mid == 0)),
                jnp.where(found, iters, 0), at["saturated_share"] > SATURATED_SHARE_MAX, nan, nan, jnp.zeros((), dt))


def _overoptimization_core(samples: Samples, betas: Array, max_iter: int, memory_budget: int | None):
    # the plug-in curve, like the peak's own search (a bias-corrected peak search is not built yet)
    tilts = both_tilts(samples, betas, memory_budget, bias_correction=False)
    curve = proxy_gap_core(samples, betas, memory_budget, tilts=tilts)
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
    require_gold(samples, "overoptimization_peak")
    max_iter = _sweep.positive_int(max_iter, "max_iter")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    check_grid(betas)
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
