r"""Inverting the frontier: the KL budget a target gain needs, the gain a KL budget allows.

Both questions are convex one-dimensional problems on the frontier of the reward aligned to
(MATH.md §5; the gain is measured with the rewards ``r``, scores are not used):

.. math::

   \mathrm{KL}^*(G) = \sup_{\lambda \ge 0}\; \lambda (E_0[r] + G) - \log E_0[e^{\lambda r}]
   \quad(\text{the Cram\'er rate function}), \qquad
   \mathrm{gain}^*(K) = \min_{\beta > 0}\; \beta (\log Z(\beta) + K) - E_0[r].

At the optimum ``gain(beta*) = G`` (resp. ``KL(beta*) = K``), so each is a root in ``beta`` of a
monotone curve of the tilted statistics (``jaxlimits.tilt``): both ``gain`` and ``KL`` decrease
as ``beta`` grows, with the exact derivatives of MATH.md §4,

.. math::

   \frac{d\,\mathrm{gain}}{d \log\beta} = -\frac{\mathrm{Var}_\beta(r)}{\beta}, \qquad
   \frac{d\,\mathrm{KL}}{d \log\beta} = -\frac{\mathrm{Var}_\beta(r)}{\beta^2}.

The root is found by safeguarded Newton (a bracket that every evaluation shrinks, bisection when
a step leaves it, a fixed cap of iterations; tolerances tied to the dtype), all under one ``jit``.
One kernel pass over a grid of ``GRID_POINTS`` betas per curve brackets every target and starts
it from an inverse Hermite interpolant, so most targets converge in 2-3 Newton passes (first-order
sums only). Then the one kernel of ``jaxlimits.tilt`` / ``jaxlimits.frontier`` at the solution
gives the estimates, their standard errors, the bias and the trust rule. Per prompt, each tile of
prompts runs its own Newton loop while its samples are in cache.
Far from saturation the residual is ``log curve - log target`` in ``log beta`` (exactly linear for
Gaussian rewards: one step); close to the supremum ``S`` of the curve it is
``log(S - curve) - log(S - target)`` in ``1/beta`` (exactly linear once the top reward dominates).
The solution is differentiable by the implicit function theorem (``jax.lax.custom_root``), never by
unrolling: ``d KL*/dG = 1/beta*``, ``d gain*/dK = beta*``, and derivatives with respect to the
rewards and the targets.

By default the curve solved is the **bias-corrected** frontier that ``jaxlimits.frontier`` reports
(the plug-in minus its second-order bias, ``jaxlimits.tilt``): the fast Newton runs on the plug-in
curve, then the target is shifted by the bias at the solution (one kernel pass with the
second-order sums) and solved again, ``plug-in(beta) = y + c`` with ``c = bias(beta(y + c))`` found
by secant steps (``CORRECTION_PASSES``; a lane whose corrected curve misses its target by more than
``correction_rtol`` gets status ``NOT_CONVERGED``). Derivatives flow through every
pass (so they are those of the computed solution); the identities ``d KL*/dG = 1/beta*`` and
``d gain*/dK = beta*`` hold exactly for the plug-in curve (``bias_correction=False``) and up to the
bias's slope for the corrected one.

``pooled=True`` inverts the prompt set's frontier, one beta shared by all prompts (MATH.md §6):
``gain(beta) = mean_x gain_x(beta)``, ``KL(beta) = mean_x KL_x(beta)``. ``pooled=False`` inverts
each prompt's frontier.

Feasible targets (MATH.md §5): gains ``0 <= G < max r - E_0[r]``; KL budgets
``0 <= K < K_max = -log u(argmax r)`` (``log(N/m)`` for ``m`` plain samples tied at the maximum).
A budget at or above ``K_max`` is *saturated*: the samples cannot show it, and the capped gain
``max r - E_0[r]`` is an artefact of N, so no answer is given (status
``KL_AT_OR_ABOVE_CEILING``). For the pooled frontier both limits are the means over prompts.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, moments, native, pooling, solver, tables
from .frontier import from_pool, pool_sweep
from .samples import PromptError, Samples, check_samples
from .status import MESSAGES as MESSAGES
from .status import NAMES as STATUS
from .status import Status as Status
from .status import solved

Array = jax.Array

__all__ = [
    "STATUS",
    "MESSAGES",
    "Solution",
    "Status",
    "max_gain_at_kl",
    "min_kl_for_gain",
]


#: Default cap on Newton iterations (each one kernel pass; typical solves take 3-8).
MAX_ITER = 40


class Solution(NamedTuple):
    """The solution of an inversion; every field has the same shape.

    The shape is the targets' shape (pooled) or ``[prompts, *targets.shape]`` (per prompt).

    Attributes:
      beta: the KL penalty of the optimal policy (``inf`` for a zero target).
      kl: ``KL(pi_beta || pi0)`` at ``beta`` (the least KL for a target gain; the budget itself
        for a KL budget, up to the tolerance).
      gain: ``E_beta[r] - E_0[r]`` at ``beta`` (the target gain, up to the tolerance; the most
        gain for a KL budget).
      kl_se, gain_se: delta-method standard errors of the *inverted* quantity, zero for the
        given target. Since ``KL - gain/beta = -reverse KL`` holds on samples (MATH.md §2-3),
        ``se(KL*(G)) = se(reverse KL)`` and ``se(gain*(K)) = beta se(reverse KL)`` at ``beta*``
        (0 for an exact law).
      converged: the tolerance was met (True for a zero target).
      iterations: Newton iterations used (each one kernel pass; after one grid pass), summed over
        the bias correction's re-solves (``max_iter`` caps each solve).
      status: :class:`jaxlimits.status.Status` codes (``STATUS``/``MESSAGES``, here and in
        :mod:`jaxlimits.status` as ``NAMES``/``MESSAGES``, map them to names and sentences).
      saturated: the estimate at ``beta`` cannot be trusted: ``reasons != 0`` (and True where no
        estimate was made).
      reasons: the trust rule at ``beta`` (``jaxlimits.estimators``: the per-prompt rule, or the
        pooled rule of ``jaxlimits.frontier`` for pooled solutions), from the one kernel.
      gain_bias, kl_bias: the estimated bias of the plug-in gain and KL at ``beta`` (see
        :func:`jaxlimits.tilt`; 0 where not computed). With ``bias_correction=True`` (default)
        the solved curve is the bias-corrected one, ``kl`` and ``gain`` are the plug-in minus
        these, and ``beta`` is where that curve meets the target (a fixed point: the plug-in curve
        solved for the target plus the bias at the solution: see ``CORRECTION_PASSES``); with
        False, ``kl`` and ``gain`` are the plug-in curve's.
      kl_ceiling: ``K_max``, the largest KL the samples can show (pooled: the mean over prompts).
      gain_max: ``max r - E_0[r]``, the supremum of the gain (pooled: the mean over prompts).
      extrapolated: with ``tail="gpd"``, True where the answer comes from the tail model (the
        target is past what the samples show or flagged ``ceiling`` there; answers flagged for other
        reasons keep the measurement: ``jaxlimits.tail.extend_solution``);
        None without a tail model.
      tail: with ``tail="gpd"``, the :class:`jaxlimits.tail.TailSolution` (the model's answer and
        its interval); None without.

    Fields other than ``status``, ``converged``, ``iterations``, ``kl_ceiling`` and ``gain_max``
    are NaN exactly where the status is an infeasible target.
    """

    beta: Array
    kl: Array
    gain: Array
    kl_se: Array
    gain_se: Array
    converged: Array
    iterations: Array
    status: Array
    saturated: Array
    kl_ceiling: Array
    gain_max: Array
    reasons: Array
    gain_bias: Array
    kl_bias: Array
    extrapolated: Array | None = None
    tail: object = None

    def status_names(self):
        """:data:`STATUS` names of ``status``, a NumPy array of strings of its shape."""
        return tables.columns(self, shape_of="status")["status_name"].reshape(np.shape(self.status))

    def messages(self):
        """:data:`MESSAGES` sentences of ``status``, a NumPy array of strings of its shape."""
        codes = np.asarray(self.status)
        return np.array([MESSAGES[int(c)] for c in codes.ravel()], dtype=object).reshape(codes.shape)

    def _columns(self):
        return tables.columns(self, shape_of="status", index=("prompt", "target") if np.ndim(self.status) > 1 else ())

    def _summary(self):
        names, counts = np.unique(self.status_names(), return_counts=True)
        # an extrapolated lane counts as extrapolated, not as saturated (its samples' point is flagged)
        ext = False if self.extrapolated is None else np.asarray(self.extrapolated)
        return tables.summary(self, shape_of="status", headline=[
            "status " + ", ".join(f"{int(n)} {s}" for s, n in zip(names, counts)), f"beta {tables.span(self.beta)}",
            f"KL {tables.span(self.kl)}", f"gain {tables.span(self.gain)}", tables.flagged(self.reasons),
            f"{int(np.sum(np.asarray(self.saturated) & ~ext))} saturated or not estimated"]
            + ([] if self.extrapolated is None else [
                f"{int(np.sum(np.asarray(self.extrapolated)))} extrapolated (the tail model's, not measured)"]))

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


# ----------------------------------------------------------------------------------------------
# The curves: per-prompt statistics prepared once, evaluated at many betas.


class _Prep(NamedTuple):
    """Beta-independent parts of the kernel for tiles of prompts (leading axes ``[tiles, t]``)."""

    ref: moments.Reference
    rows: moments.Rows
    base: moments.Sums
    kl_max: Array  # K_max per prompt
    gain_max: Array  # max r - E_0 r per prompt
    var0: Array  # Var_0(r) per prompt
    real: Array  # False for padding prompts


class _Roots(NamedTuple):
    """The solve's outcome per lane (``[T]`` pooled, ``[P, T]`` per prompt)."""

    t: Array  # log beta of the root (a finite placeholder on inactive lanes)
    iterations: Array
    converged: Array
    status: Array
    active: Array  # solved by Newton: a feasible positive target
    kl_max: Array  # K_max (pooled: the mean over prompts)
    gain_max: Array  # max r - E_0[r] (pooled: the mean over prompts)


def _rewards_only(samples: Samples) -> Samples:
    """The samples without scores: the inverted frontier is that of the rewards."""
    return Samples.tree_unflatten(
        (samples.exact,), (samples.rewards, None, samples.log_weights, samples.counts, samples.mask)
    )


def _pad_and_tile(samples: Samples, plan: _sweep.Plan):
    """Arrays of the samples padded to the plan and shaped ``[tiles, t, N]``."""
    num_p, num_n = samples.rewards.shape
    arrays = [samples.rewards, samples.scores, samples.log_weights, samples.counts, samples.mask]
    if plan.padded_samples != num_n:
        arrays[4] = samples.mask if samples.mask is not None else jnp.ones((num_p, num_n), bool)
        fills = [0, 0, 0, 1, False]
        arrays = [_sweep.pad_samples(a, plan.padded_samples, f) for a, f in zip(arrays, fills)]
    arrays = [_sweep.pad_prompts(a, plan.padded_prompts) for a in arrays]
    nt = plan.padded_prompts // plan.tile_prompts
    return [None if a is None else a.reshape((nt, plan.tile_prompts) + a.shape[1:]) for a in arrays]


def _prepare(samples: Samples, plan: _sweep.Plan) -> _Prep:
    """References, rows and beta-independent sums of every tile (one pass over the data)."""
    tiles = _pad_and_tile(samples, plan)
    num_p = samples.num_prompts

    def one(tile_arrays):
        ref = moments.reference(*tile_arrays)
        rw = moments.rows(ref, *tile_arrays)
        zero = jnp.zeros((rw.x_top.shape[0], 1), rw.x_top.dtype)
        base = moments.block_sums(rw, zero, has_scores=False)
        big_w = base.base1[:, 0]
        kl_max = moments.kl_ceiling(base)
        gain_max = ref.r_max - ref.r_bar
        m1 = base.moments1[:, :3, 0] / big_w[:, None]
        var0 = (m1[:, 2] - m1[:, 1] ** 2) * ref.r_scale**2
        return ref, rw, base, kl_max, gain_max, jnp.maximum(var0, 0)

    ref, rw, base, kl_max, gain_max, var0 = jax.vmap(one)(tiles)
    # the per-beta sums of the base pass are not needed: drop them (they would be carried along)
    base = base._replace(log_scale=None, tilted1=None, log_scale2=None, tilted2=None, log_scale_w=None,
                         tilted_w=None)
    real = (jnp.arange(plan.padded_prompts) < num_p).reshape(kl_max.shape)
    return _Prep(ref, rw, base, kl_max, gain_max, var0, real)


def _chunks(x, nc):
    """``[t, N]`` -> ``[nc, t, N / nc]``."""
    return jnp.moveaxis(x.reshape(x.shape[0], nc, -1), 1, 0)


def _eval_tile(ref, rw, base, lam, *, nc: int):
    """Tilted KL, gain and ``Var_beta(r)`` of a tile's prompts at ``lam`` ``[t, B]`` (no SEs).

    The kernel's first-order sums only (one exponential per sample and beta): the tilted sums
    of ``1, x', x'^2`` (``x' = r - max r``) and, where ``lambda R <= 1``, the beta-independent
    moments, finalised by ``moments.finalize_first_order`` (the subset of ``moments.finalize`` a
    Newton step needs).
    """
    weighted = rw.log_v2 is not None

    def sums_of(x_top, log_v):
        # the kernel's first-order sums of 1, x', x'^2 with E = v e^{lam x' - c} (one exponential per
        # element); without importance weights x' <= 0 and log v = log m: no overflow with c = 0
        s, _, c = native.tilted_sums(x_top, lam, log_w=log_v, second=False, shift=weighted)
        return c, s

    if nc == 1:
        c, s = sums_of(rw.x_top, rw.log_v)
    else:
        xs, ls = _chunks(rw.x_top, nc), _chunks(rw.log_v, nc)

        def body(carry, chunk):
            c0, s0 = carry
            c1, s1 = sums_of(*chunk)
            c = jnp.maximum(c0, c1)
            a0 = jnp.exp(jnp.where(jnp.isfinite(c0), c0 - c, -jnp.inf))
            a1 = jnp.exp(jnp.where(jnp.isfinite(c1), c1 - c, -jnp.inf))
            return (c, s0 * a0[..., None] + s1 * a1[..., None]), None

        init = sums_of(xs[0], ls[0])
        (c, s), _ = jax.lax.scan(body, init, (xs[1:], ls[1:]))
    return moments.finalize_first_order(ref, base, c, s, lam)


def _curve(is_kl, kl, gain, var, lam):
    """The curve's value and its derivative with respect to ``log beta`` (MATH.md §4)."""
    return jnp.where(is_kl, kl, gain), -var * lam * jnp.where(is_kl, lam, 1)


# ----------------------------------------------------------------------------------------------
# Safeguarded Newton on a monotone decreasing curve phi(t), t = log beta.


class _Box(NamedTuple):
    """Per-lane constants of a solve."""

    y: Array  # target (a feasible stand-in where inactive)
    sup: Array  # sup of the curve (t -> -inf)
    lo0: Array  # initial bracket in t
    hi0: Array
    active: Array  # lanes to solve


def _newton(evaluate, box: _Box, t0, max_iter: int, dtype):
    """Safeguarded Newton (:func:`jaxlimits.solver.safeguarded_newton`) on the curve, lane-wise.

    Far from the top the residual is ``log phi - log y`` in ``t``; near the top ``S`` (targets
    above ``S / 2``) it is ``log(S - phi) - log(S - y)`` in ``lambda = 1/beta``.

    Args:
      evaluate: ``t -> (phi, dphi/dt)`` on the lanes' shape.
      box: targets, suprema and brackets.
      t0: initial ``log beta``.

    Returns:
      ``(t, iterations, converged)``.
    """
    ftol = solver.tolerances(dtype)[0]
    y, sup = box.y, box.sup
    near_top = y > 0.5 * sup  # residual log(S - phi) in lambda, else log(phi) in t
    log_y = jnp.log(y)
    log_gap_y = jnp.log(jnp.where(near_top, sup - y, 1))

    def step(t):
        phi, dphi = evaluate(t)
        beta = jnp.exp(t)
        # far from the top: Newton on log(phi) - log(y) in t
        t_far = t - (jnp.log(phi) - log_y) * phi / dphi
        # near the top: Newton on log(S - phi) - log(S - y) in lambda = 1/beta
        gap = sup - phi
        lam = 1 / beta
        lam_new = lam - (jnp.log(gap) - log_gap_y) * gap / (beta * dphi)
        t_near = -jnp.log(lam_new)
        return y - phi, jnp.where(near_top, t_near, t_far)  # phi decreases in t: y - phi increases

    return solver.safeguarded_newton(step, t0, box.lo0, box.hi0, max_iter=max_iter, ftol=ftol * y,
                                     active=box.active)


def _t_bounds(scale, dtype):
    """A bracket of ``log beta`` wide enough for any representable target, per curve."""
    half_range = 0.5 * float(-np.log(jnp.finfo(dtype).tiny))
    log_s = jnp.log(scale)
    return log_s - half_range, log_s + half_range


def _initial_t(is_kl, y, var0, lo, hi):
    """Small-tilt guess: ``KL ~ Var/(2 beta^2)``, ``gain ~ Var/beta`` (exact for Gaussian rewards)."""
    t = jnp.where(is_kl, 0.5 * (jnp.log(var0) - jnp.log(2 * y)), jnp.log(var0) - jnp.log(y))
    t = jnp.where(jnp.isfinite(t), t, 0.5 * (lo + hi))
    return jnp.clip(t, lo, hi)


#: Points of the grid that brackets every target before Newton (one cheap kernel pass).
GRID_POINTS = 24
#: The same for the pooled curve (whose range spans every prompt's scale): one block of the CPU
#: kernel's betas (32 in float32, two of 16 in float64). 40 points (two blocks, 24 lanes idle) took
#: as many Newton passes (at most 2 on the benchmark's 100 targets) and 4% longer in all.
POOLED_GRID_POINTS = 32


def _grid_t(log_r_lo, log_r_hi, num_samples: int, num: int):
    """``[..., num]`` ascending ``log beta`` from ``lambda R = 4 N`` (near saturation) to ``1/32``."""
    lo = log_r_lo - float(np.log(4.0 * num_samples))
    hi = log_r_hi + float(5 * np.log(2.0))
    u = jnp.linspace(0.0, 1.0, num, dtype=log_r_lo.dtype)
    return lo[..., None] + (hi - lo)[..., None] * u


def _grid_start(tg, phi, dphi, y, sup, lo_b, hi_b):
    """Initial ``log beta`` and bracket of each target from the curve on a grid.

    The grid (``tg`` ``[..., G]`` ascending, the curve ``phi`` decreasing, ``dphi = d phi/dt``)
    brackets each target ``y`` ``[..., T]``; inside, the inverse cubic Hermite interpolant of the
    residual the Newton step uses (``log phi`` against ``t``, or ``log(S - phi)`` against
    ``1/beta`` near the top ``S``) gives the start; outside, the tangent at the end.

    Returns:
      ``(t0, lo, hi)``, each ``[..., T]``.
    """
    num = tg.shape[-1]
    j = jnp.sum(phi[..., None, :] >= y[..., :, None], axis=-1)  # root in (tg[j-1], tg[j])
    ja, jb = jnp.clip(j - 1, 0, num - 1), jnp.clip(j, 0, num - 1)
    take = lambda a, i: jnp.take_along_axis(a, i, axis=-1)  # noqa: E731
    lo = jnp.where(j > 0, take(tg, ja), lo_b)
    hi = jnp.where(j < num, take(tg, jb), hi_b)
    sup_l = sup[..., None]
    near_top = y > 0.5 * sup_l

    def point(i):
        t, f, d = take(tg, i), take(phi, i), take(dphi, i)
        gap = sup_l - f
        beta = jnp.exp(t)
        # (abscissa, residual, d abscissa / d residual) in the residual's own variables
        far = (t, jnp.log(f), f / d)
        near = (1 / beta, jnp.log(gap), gap / (beta * d))
        return tuple(jnp.where(near_top, b, a) for a, b in zip(far, near))

    (xa, ra, sa), (xb, rb, sb) = point(ja), point(jb)
    target = jnp.where(near_top, jnp.log(jnp.where(near_top, sup_l - y, 1)), jnp.log(y))
    h = rb - ra
    u = (target - ra) / h
    u2, u3 = u * u, u * u * u
    x_in = (2 * u3 - 3 * u2 + 1) * xa + (u3 - 2 * u2 + u) * h * sa + (3 * u2 - 2 * u3) * xb + (u3 - u2) * h * sb
    x_lin = xa + u * (xb - xa)
    x_in = jnp.where((x_in - xa) * (x_in - xb) < 0, x_in, x_lin)  # stay between the points
    x_out = jnp.where(j > 0, xa + (target - ra) * sa, xb + (target - rb) * sb)
    x = jnp.where((j > 0) & (j < num), x_in, x_out)
    t0 = jnp.where(near_top, -jnp.log(x), x)
    ok = (t0 > lo) & (t0 < hi)  # False for NaN
    fallback = jnp.where(j == 0, hi - 1, jnp.where(j == num, lo + 1, 0.5 * (lo + hi)))
    return jnp.where(ok, t0, fallback), lo, hi


# ----------------------------------------------------------------------------------------------
# The solve, per prompt and pooled, under one jit.


def _statuses(is_kl, y, sup):
    infeasible = jnp.where(is_kl, int(Status.KL_AT_OR_ABOVE_CEILING), int(Status.GAIN_AT_OR_ABOVE_MAX))
    status = jnp.full(jnp.broadcast_shapes(y.shape, sup.shape), Status.OK, jnp.int32)
    status = jnp.where((y >= sup) & (y > 0), infeasible, status)  # G = 0 is the base policy: always OK
    status = jnp.where(y < 0, int(Status.NEGATIVE_TARGET), status)
    return jnp.where(jnp.isnan(y), int(Status.NAN_TARGET), status)


def _per_prompt(samples, y, is_kl, t_warm=None, *, plan, max_iter, nc):
    """``[P, T]`` solutions of each prompt's curve; ``y`` ``[P, T]`` (each prompt its own targets).

    ``t_warm`` ``[P, T]``: ``log beta`` of a nearby solution; Newton starts there without the grid
    pass (finite lanes).
    """
    dtype = samples.dtype
    prep = _prepare(samples, plan)
    num_p, num_n = samples.num_prompts, samples.num_samples
    nt, t_p = prep.real.shape
    num_t = y.shape[-1]
    sup_tiles = jnp.where(is_kl, prep.kl_max, prep.gain_max)  # [nt, t]
    y_b = _sweep.pad_prompts(jnp.broadcast_to(y, (num_p, num_t)), nt * t_p).reshape(nt, t_p, num_t)
    status = _statuses(is_kl, y_b, sup_tiles[..., None])
    active = (status == Status.OK) & (y_b > 0) & prep.real[..., None]
    y_safe = jnp.where(active, y_b, 0.5 * sup_tiles[..., None])
    scale = jnp.sqrt(jnp.where(prep.var0 > 0, prep.var0, 1))[..., None]
    lo0, hi0 = (jnp.broadcast_to(b, y_b.shape) for b in _t_bounds(scale, dtype))
    t0 = _initial_t(is_kl, y_safe, prep.var0[..., None], lo0, hi0)
    t0 = jnp.where(active, t0, 0.5 * (lo0 + hi0))
    warm = None
    if t_warm is not None:
        t_warm = _sweep.pad_prompts(jnp.broadcast_to(t_warm, (num_p, num_t)), nt * t_p).reshape(nt, t_p, num_t)
        warm = jnp.isfinite(t_warm) & (t_warm > lo0) & (t_warm < hi0)
        t0 = jnp.where(active & warm, t_warm, t0)
    tiles = (prep.ref, prep.rows, prep.base)

    def evaluate_tile(tile, t):
        ref, rw, base = tile
        lam = jnp.exp(-t)
        kl, gain, var = _eval_tile(ref, rw, base, lam, nc=nc)
        return _curve(is_kl, kl, gain, var, lam)

    def residual(t):
        phi = jax.lax.map(lambda a: evaluate_tile(a[0], a[1])[0], (tiles, t))
        return phi - y_safe

    def solve(_, t_init):
        def one(args):
            tile, box, t_start = args
            evaluate = functools.partial(evaluate_tile, tile)
            if warm is not None:  # started next to the root: Newton alone
                return _newton(evaluate, box, t_start, max_iter, dtype)
            log_r = jnp.log(tile[0].r_scale)
            tg = _grid_t(log_r, log_r, num_n, GRID_POINTS)
            t_g, lo, hi = _grid_start(tg, *evaluate(tg), box.y, box.sup[:, 0], box.lo0, box.hi0)
            box = box._replace(lo0=jnp.where(box.active, lo, box.lo0), hi0=jnp.where(box.active, hi, box.hi0))
            return _newton(evaluate, box, jnp.where(box.active, t_g, t_start), max_iter, dtype)

        box = _Box(y_safe, jnp.broadcast_to(sup_tiles[..., None], y_b.shape), lo0, hi0, active)
        return jax.lax.map(one, (tiles, box, t_init))

    t_star, iters, conv = solver.implicit_root(residual, t0, solve)
    flat = lambda a: a.reshape((nt * t_p,) + a.shape[2:])[:num_p]  # noqa: E731
    t_star, iters, conv, status, active = map(flat, (jnp.where(active, t_star, t0), iters, conv, status, active))
    shape = t_star.shape
    return _Roots(t_star, iters, conv, status, active, jnp.broadcast_to(flat(prep.kl_max)[:, None], shape),
                  jnp.broadcast_to(flat(prep.gain_max)[:, None], shape))


def _pooled(samples, y, is_kl, t_warm=None, *, plan, max_iter, nc):
    """``[T]`` solutions of the pooled curve (one beta shared by all prompts); ``y`` ``[T]``.

    ``t_warm`` ``[T]``: as in :func:`_per_prompt`.
    """
    dtype = samples.dtype
    prep = _prepare(samples, plan)
    num_p, num_n = samples.num_prompts, samples.num_samples
    real = prep.real.astype(dtype)
    kl_max = jnp.sum(prep.kl_max * real) / num_p
    gain_max = jnp.sum(prep.gain_max * real) / num_p
    var0 = jnp.sum(prep.var0 * real) / num_p
    sup = jnp.where(is_kl, kl_max, gain_max)
    status = _statuses(is_kl, y, sup)
    active = (status == Status.OK) & (y > 0)
    y_safe = jnp.where(active, y, 0.5 * sup)
    scale = jnp.sqrt(jnp.where(var0 > 0, var0, 1))
    lo0, hi0 = (jnp.broadcast_to(b, y.shape) for b in _t_bounds(scale, dtype))
    t0 = _initial_t(is_kl, y_safe, var0, lo0, hi0)
    t0 = jnp.where(active, t0, 0.5 * (lo0 + hi0))
    if t_warm is not None:
        t0 = jnp.where(active & jnp.isfinite(t_warm) & (t_warm > lo0) & (t_warm < hi0), t_warm, t0)
    tiles = (prep.ref, prep.rows, prep.base, real)

    def pooled_sum(fn, lam):
        """Sums over real prompts of ``fn(ref, rows, base, lam [t, B])`` (a tuple of ``[t, B]``)."""

        def body(carry, tile):
            ref, rw, base, w = tile
            out = fn(ref, rw, base, jnp.broadcast_to(lam, (w.shape[0],) + lam.shape))
            # a select, not a * w: XLA:CPU turned multiply-and-reduce into a dot whose transposed
            # operand layout aborts its dot emitter when the pooled solve is differentiated (jvp)
            return jax.tree.map(lambda c, a: c + jnp.sum(jnp.where(w[:, None] > 0, a, 0), axis=0), carry, out), None

        init = jax.eval_shape(lambda: fn(*jax.tree.map(lambda a: a[0], tiles[:3]),
                                         jnp.broadcast_to(lam, (real.shape[1],) + lam.shape)))
        init = jax.tree.map(lambda a: jnp.zeros(a.shape[1:], a.dtype), init)
        return jax.lax.scan(body, init, tiles)[0]

    def evaluate(t):
        lam = jnp.exp(-t)
        kl, gain, var = pooled_sum(functools.partial(_eval_tile, nc=nc), lam)
        return _curve(is_kl, kl / num_p, gain / num_p, var / num_p, lam)

    def residual(t):
        return evaluate(t)[0] - y_safe

    log_r = jnp.log(prep.ref.r_scale)
    log_r_lo = jnp.min(jnp.where(prep.real, log_r, jnp.inf))
    log_r_hi = jnp.max(jnp.where(prep.real, log_r, -jnp.inf))

    def solve(_, t_init):
        if t_warm is not None:  # started next to the root: Newton alone
            box = _Box(y_safe, jnp.broadcast_to(sup, y.shape), lo0, hi0, active)
            return _newton(evaluate, box, t_init, max_iter, dtype)
        tg = _grid_t(log_r_lo, log_r_hi, num_n, POOLED_GRID_POINTS)
        t_g, lo, hi = _grid_start(tg, *evaluate(tg), y_safe, sup, lo0, hi0)
        box = _Box(y_safe, jnp.broadcast_to(sup, y.shape), jnp.where(active, lo, lo0), jnp.where(active, hi, hi0),
                   active)
        return _newton(evaluate, box, jnp.where(active, t_g, t_init), max_iter, dtype)

    t_star, iters, conv = solver.implicit_root(residual, t0, solve)
    shape = t_star.shape
    return _Roots(jnp.where(active, t_star, t0), iters, conv, status, active, jnp.broadcast_to(kl_max, shape),
                  jnp.broadcast_to(gain_max, shape))


@functools.partial(jax.jit, static_argnames=("pooled", "plan", "max_iter", "nc"))
def _solve(samples, y, is_kl, t_warm=None, *, pooled, plan, max_iter, nc):
    """Both questions share one compiled solver (``is_kl`` is traced: it only selects the curve)."""
    fn = _pooled if pooled else _per_prompt
    return fn(samples, y, is_kl, t_warm, plan=plan, max_iter=max_iter, nc=nc)


# ----------------------------------------------------------------------------------------------
# Public API.


#: Passes of the bias correction, each the bias at the current solution (one kernel pass) and a
#: re-solve of the plug-in curve for the target shifted by it, warm-started by Newton alone (no
#: grid pass). The first shift is the bias, then secant steps on the shift. Measured on 64 normal
#: draws at lambda R = 18 (tests/test_inversion.py's prompts): a relative residual of 2e-4 after
#: 3 passes, 2e-6 after 4, 2e-9 after 5; a lane left above ``correction_rtol`` is NOT_CONVERGED.
CORRECTION_PASSES = 5


def correction_rtol(dtype) -> float:
    """Relative residual at which the bias-corrected curve counts as solved: ``max(1e-6, 64 eps)``."""
    return max(1e-6, 64 * float(jnp.finfo(dtype).eps))


def _run(samples: Samples, targets, *, kind: str, pooled: bool, throw: bool, max_iter, memory_budget,
         bias_correction: bool = True):
    name = "min_kl_for_gain" if kind == "gain" else "max_gain_at_kl"
    check_samples(samples, name)
    max_iter = MAX_ITER if max_iter is None else _sweep.positive_int(max_iter, f"{name}: max_iter")
    s = _rewards_only(samples)
    dtype = s.dtype
    if isinstance(targets, jax.core.Tracer):
        y = targets.astype(dtype)
    else:
        arr = np.asarray(targets)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{name}: targets must be numbers, got an array of dtype {arr.dtype}")
        if arr.size == 0:
            raise ValueError(f"{name}: no targets given (an empty array)")
        y = jnp.asarray(arr, dtype=dtype)
    shape = y.shape
    flat_y = y.reshape(-1)
    if not pooled:
        flat_y = jnp.broadcast_to(flat_y, (s.num_prompts, flat_y.shape[0]))
    # tiles sized for the statistics at the solution (per target one exponential and its square;
    # sizing for one array per target measured no faster)
    num_t = flat_y.shape[-1]
    # every pass evaluates at least min(num_t, grid points) betas: with 16 or more the CPU kernel
    # computes them and holds no slab (larger tiles); with fewer, the slab plan
    p = _sweep.plan(s.num_prompts, s.num_samples, 2 * num_t, dtype.itemsize, memory_budget,
                    fused=native.runs_for(num_t))
    nc = p.padded_samples // p.chunk_samples
    is_kl = jnp.asarray(kind == "kl")
    solve = functools.partial(_solve, s, is_kl=is_kl, pooled=pooled, plan=p, max_iter=max_iter, nc=nc)
    roots = solve(flat_y)
    correct = bool(bias_correction) and not s.exact
    iterations = roots.iterations
    applied = jnp.zeros_like(flat_y)  # the shift of the target last solved
    prev = None
    for _ in range(CORRECTION_PASSES if correct else 0):
        bias = _at_solution(s, roots.t, roots.active, plan=p, pooled=pooled, khat=False,
                            bias_correction=True).bias(is_kl)
        if _settled(bias, applied, flat_y, roots.t, roots.active):
            break  # eagerly, once every lane is solved to rounding: what is left would change nothing
        shift, prev = _next_shift(bias, applied, prev)
        # a shift that would make a positive target non-positive is dropped (the bias vanishes at KL 0)
        target = jnp.where(flat_y + shift > 0, flat_y + shift, flat_y)
        applied = target - flat_y
        roots = solve(target, t_warm=jnp.where(roots.active, roots.t, jnp.nan))
        iterations = iterations + roots.iterations
    # the one kernel at the solution: the estimates, their SEs, the bias and the trust rule
    stats = _at_solution(s, roots.t, roots.active, plan=p, pooled=pooled, khat=True,
                         bias_correction=bool(bias_correction))
    sol = _assemble(is_kl, flat_y, roots._replace(iterations=iterations), stats)
    if correct:
        # the corrected curve at the solution minus the target: plug-in(beta) - bias - y
        residual = applied - stats.bias(is_kl)
        ok = (sol.status == Status.OK) & jnp.isfinite(sol.beta)
        off = ok & ~(jnp.abs(residual) <= correction_rtol(dtype) * jnp.abs(flat_y))
        sol = sol._replace(status=jnp.where(off, int(Status.NOT_CONVERGED), sol.status),
                           converged=sol.converged & ~off)
    out_shape = shape if pooled else (s.num_prompts,) + shape
    sol = jax.tree.map(lambda a: a.reshape(out_shape), sol)
    if throw:
        checked = (y, sol.status, sol.kl_ceiling, sol.gain_max, sol.iterations)
        if any(isinstance(a, jax.core.Tracer) for a in checked):
            # under a transformation (jit, vmap, grad): the same check when the program runs, as a host
            # callback (optimistix's ``error_if`` is the model); JAX raises it as a runtime error carrying
            # this message. Not exportable (``jax.export``): pass ``throw=False`` there.
            jax.debug.callback(functools.partial(_raise_for_status, name, kind, pooled), *checked)
        else:
            _raise_for_status(name, kind, pooled, *checked)
    return sol


#: The correction stops early (eagerly; under a transformation every pass runs) once the target's
#: shift agrees with the bias at the solution to this many eps of the target in every lane.
SETTLED_EPS = 4


def _settled(bias, applied, y, t, active) -> bool:
    """Whether every solved lane's shift equals the bias at its solution to ``SETTLED_EPS`` eps of
    its target (False for traced values: the passes then all run, as compiled)."""
    vals = [_concrete(a) for a in (bias, applied, y, t, active)]
    if any(v is None for v in vals):
        return False
    bias, applied, y, t, active = (np.asarray(v) for v in vals)
    eps = np.finfo(y.dtype).eps
    solved = active & np.isfinite(t)
    return bool(np.all(~solved | (np.abs(bias - applied) <= SETTLED_EPS * eps * np.abs(y))))


def _next_shift(bias, applied, prev):
    """The next target shift ``c`` of the correction, a root of ``h(c) = bias(beta(y + c)) - c``.

    ``bias`` is the bias at the solution of the target shifted by ``applied``; ``prev`` the
    previous ``(c, h(c))`` (None on the first pass: then ``c = bias``). Secant steps, the fixed
    point ``c = bias`` where the secant is undefined. Returns ``(c, (applied, h(applied)))``.
    """
    h = bias - applied
    if prev is None:
        return bias, (applied, h)
    c0, h0 = prev
    den = h - h0
    ok = (den != 0) & jnp.isfinite(den)
    secant = applied - h * (applied - c0) / jnp.where(ok, den, 1)
    return jnp.where(ok & jnp.isfinite(secant), secant, bias), (applied, h)


class _Stats(NamedTuple):
    """The one kernel's statistics at the solutions (lane-wise; :func:`_at_solution`)."""

    kl: Array
    gain: Array
    reverse_kl_se: Array
    gain_bias: Array
    kl_bias: Array
    reasons: Array

    def bias(self, is_kl):
        """The bias of the solved curve: ``kl_bias`` for KL budgets, else ``gain_bias``."""
        return jnp.where(is_kl, self.kl_bias, self.gain_bias)


@functools.partial(jax.jit, static_argnames=("plan", "pooled", "khat", "bias_correction"))
def _at_solution(s: Samples, t, active, *, plan, pooled: bool, khat: bool, bias_correction: bool) -> _Stats:
    """The one kernel at the solutions ``beta = e^t``: :class:`_Stats` of ``t``'s shape.

    Per prompt, each prompt at its own betas (:func:`jaxlimits.tilt`'s statistics); pooled, the
    pooled frontier's at the shared betas (:func:`jaxlimits.frontier`; the reverse KL's SE pooled
    like the others). ``khat=False`` skips the k-hat (the reasons then lack the tail clauses: used
    for the bias alone). Inactive lanes (zero or infeasible targets) are evaluated at beta = 1, their
    bias and reasons set to 0 (no shift of their targets).
    """
    lam = jnp.where(active, jnp.exp(-t), 1)
    lam = jnp.broadcast_to(lam, (s.num_prompts, lam.shape[-1]))
    pool, st = pool_sweep(s, lam, plan, not pooled, bias_correction=bias_correction, khat=khat)
    if pooled:
        f = from_pool(pool, 1 / lam[0])
        rkl_se = pooling.se_of_variance_sum(pool.reverse_kl_var, pool.count)
        out = (f.kl, f.gain, rkl_se, f.gain_bias, f.kl_bias, f.reasons)
    else:
        out = (st.kl, st.gain, st.reverse_kl_se, st.gain_bias, st.kl_bias, st.reasons)
    kl, gain, rkl_se, gain_bias, kl_bias, reasons = out
    zero = jnp.zeros_like(kl)
    gain_bias, kl_bias = jnp.where(active, gain_bias, zero), jnp.where(active, kl_bias, zero)
    return _Stats(kl, gain, rkl_se, gain_bias, kl_bias, jnp.where(active, reasons, jnp.int32(0)))


@jax.jit  # one program, not ~30 eager steps
def _assemble(is_kl, y, roots: _Roots, stats: _Stats) -> Solution:
    """The :class:`Solution` from the roots and the statistics at them (lane-wise)."""
    dtype = stats.kl.dtype
    shape = roots.t.shape
    y = jnp.broadcast_to(y, shape)
    active = roots.active
    ok = roots.status == Status.OK
    zero_target = ok & (y == 0)
    beta = jnp.exp(roots.t)
    nan = jnp.full(shape, jnp.nan, dtype)
    zero = jnp.zeros(shape, dtype)

    def pick(solved, at_zero):
        return jnp.where(active, solved, jnp.where(zero_target, at_zero, nan))

    rkl_se = stats.reverse_kl_se
    return Solution(
        beta=pick(beta, jnp.full(shape, jnp.inf, dtype)),
        kl=pick(stats.kl, zero),
        gain=pick(stats.gain, zero),
        kl_se=pick(jnp.where(is_kl, zero, rkl_se), zero),
        gain_se=pick(jnp.where(is_kl, beta * rkl_se, zero), zero),
        converged=(active & roots.converged) | zero_target,
        iterations=jnp.where(active, roots.iterations, 0),
        status=jnp.where(active & ~roots.converged, int(Status.NOT_CONVERGED), roots.status),
        saturated=jnp.where(active, stats.reasons != 0, ~ok),
        kl_ceiling=roots.kl_max.astype(dtype),
        gain_max=roots.gain_max.astype(dtype),
        reasons=stats.reasons,
        gain_bias=stats.gain_bias,
        kl_bias=stats.kl_bias,
    )


def _concrete(x):
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _raise_for_status(name, kind, pooled, y, status, kl_ceiling, gain_max, iterations) -> None:
    """The check of ``throw=True`` (the solution's fields, concrete): a ValueError naming the target,
    the prompt and the limit."""
    status, targets = np.asarray(status), np.asarray(y)
    if np.all(solved(status)):
        return
    bad = np.argwhere(~solved(status))
    first = tuple(int(i) for i in bad[0])
    code = int(status[first])
    tidx = first if pooled else first[1:]
    target = float(targets[tidx]) if targets.ndim else float(targets)
    where = "" if not tidx else f" (targets{list(tidx)})"
    what = "target gain" if kind == "gain" else "KL budget"
    who = "the pooled frontier" if pooled else PromptError.PLACE
    ceiling = float(np.asarray(kl_ceiling)[first])
    gmax = float(np.asarray(gain_max)[first])
    more = f" ({len(bad) - 1} more unsolved targets)" if len(bad) > 1 else ""
    # below the limit but infeasible: the bias-corrected curve ends below it (the bias-shifted target is not)
    shifted = " (the bias-corrected curve cannot reach it: pass bias_correction=False for the plug-in curve)"
    if code == Status.GAIN_AT_OR_ABOVE_MAX:
        msg = (f"{what} {target:.6g}{where} is at or above the largest gain of {who}, "
               f"max r - E_0[r] = {gmax:.6g}: feasible gains are 0 <= G < {gmax:.6g}"
               + (shifted if target < gmax else ""))
    elif code == Status.KL_AT_OR_ABOVE_CEILING:
        msg = (f"{what} {target:.6g}{where} is at or above the KL ceiling of {who}, K_max = {ceiling:.6g} nats "
               f"(-log of the base mass tied at the maximal reward): the samples cannot show it (saturated); "
               f"feasible budgets are 0 <= K < {ceiling:.6g}" + (shifted if target < ceiling else ""))
    elif code == Status.NEGATIVE_TARGET:
        msg = f"{what} {target:.6g}{where} is negative ({who})"
    elif code == Status.NAN_TARGET:
        msg = f"{what}{where} is NaN ({who})"
    elif code in (Status.NO_TILT, Status.BEYOND_UPPER_END):
        msg = f"{what} {target:.6g}{where}: {MESSAGES[code]} ({who})"
    else:
        msg = (f"{what} {target:.6g}{where}: the solver did not converge for {who} within "
               f"{int(np.asarray(iterations)[first])} iterations; raise max_iter, or pass throw=False")
    if pooled:
        raise ValueError(f"{name}: {msg}{more}")
    raise PromptError(f"{name}: {msg}{more}", first[0])


def _run_tail(samples: Samples, targets, *, kind: str, pooled: bool, throw: bool, tail, tail_level,
              tail_replicates, **kw) -> Solution:
    """``_run``, then with ``tail="gpd"`` the targets past what the samples show solved on the tail model."""
    name = "min_kl_for_gain" if kind == "gain" else "max_gain_at_kl"
    if tail not in (None, "gpd"):
        raise ValueError(f"{name}: tail must be None (only what the samples show) or 'gpd' (a generalised Pareto "
                         f"model of the upper reward tail), got {tail!r}")
    if tail is None:
        return _run(samples, targets, kind=kind, pooled=pooled, throw=throw, **kw)
    from . import tail as tail_model

    if isinstance(targets, jax.core.Tracer):
        raise ValueError(f"{name}: tail='gpd' needs concrete targets (it is not traceable: no jit/vmap/grad)")
    if isinstance(samples, Samples):  # (anything else: _run's TypeError)
        tail_model.check_tail_samples(_rewards_only(samples), f"{name}(tail='gpd')")
    sol = _run(samples, targets, kind=kind, pooled=pooled, throw=False, **kw)
    sol = tail_model.extend_solution(sol, _rewards_only(samples), targets, kind=kind, pooled=pooled,
                                     level=tail_level, replicates=tail_replicates, where=f"{name}(tail='gpd')",
                                     memory_budget=kw.get("memory_budget"))
    if throw:
        try:
            _raise_for_status(name, kind, pooled, targets, sol.status, sol.kl_ceiling, sol.gain_max, sol.iterations)
        except ValueError as e:  # say why the model did not answer where it was asked to
            skipped = np.asarray(sol.tail.not_applied)
            if not skipped.any():
                raise
            why = ("their prompts' top rewards tie" if not pooled else f"more than {estimators.SHARE_MAX:.0%} of "
                   "the prompts' top rewards tie (e.g. rewards rounded to bfloat16)")
            more = (f"; tail='gpd' did not apply to {int(skipped.sum())} target(s) past what the samples show (or "
                    f"flagged 'ceiling' there): {why}, "
                    "so no tail can be fitted (Solution.tail.not_applied; throw=False returns the samples' answers)")
            if isinstance(e, PromptError):
                raise PromptError(e.template + more, e.prompt, e.sample) from None
            raise ValueError(f"{e}{more}") from None
    return sol


def min_kl_for_gain(
    samples: Samples,
    target_gain,
    *,
    pooled: bool = True,
    bias_correction: bool = True,
    throw: bool = True,
    max_iter: int | None = None,
    memory_budget: int | None = None,
    tail: str | None = None,
    tail_level: float = 0.95,
    tail_replicates: int = 200,
) -> Solution:
    r"""The least KL that reaches a target gain: the Cramér rate function (MATH.md §5).

    .. math::

       \mathrm{KL}^*(G) = \min\{\mathrm{KL}(\pi\|\pi_0) : E_\pi[r] \ge E_0[r] + G\}
       = \sup_{\lambda \ge 0} \lambda (E_0[r] + G) - \log E_0[e^{\lambda r}],
       \qquad \beta^* = 1/\lambda^*,

    solved as ``gain(beta*) = G`` on the frontier of the rewards (scores are not used). Feasible
    for ``0 <= G < max r - E_0[r]``. Differentiable (implicit function theorem):
    ``d KL*/dG = 1/beta*``.

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]``.
      target_gain: target gains, a scalar or an array of any shape (shared by all prompts).
      pooled: invert the prompt set's frontier, one beta for all prompts (MATH.md §6);
        False inverts each prompt's frontier.
      bias_correction: solve the bias-corrected frontier (default; the curve ``jaxlimits.frontier``
        reports), or the plug-in one (False). See :class:`Solution`.
      throw: raise a ``ValueError`` for a target that is infeasible or not solved (eagerly; under
        ``jit``/``vmap``/``grad`` when the program runs, as a JAX runtime error with the same
        message; ``Solution.status`` says it too). With False nothing is raised (needed for
        ``jax.export``: the check is a host callback).
      max_iter: cap on Newton iterations (default ``MAX_ITER``).
      memory_budget: bytes of working memory per kernel pass (default 256 MiB).
      tail: None (default: only what the samples show) or ``"gpd"``: targets past what the
        samples show (``KL_AT_OR_ABOVE_CEILING``, ``GAIN_AT_OR_ABOVE_MAX``, or flagged ``ceiling``)
        are solved on a model of each prompt's upper reward tail (``jaxlimits.tail.extend_solution``),
        marked ``extrapolated``, with the model's interval in ``Solution.tail``; ``NO_TILT`` /
        ``BEYOND_UPPER_END`` where the model gives no answer. Plain samples, concrete targets.
      tail_level, tail_replicates: the tail model's interval level and bootstrap replicates.

    Returns:
      A :class:`Solution` of the targets' shape (pooled) or ``[P, *shape]`` (per prompt).

    Raises:
      ValueError: with ``throw=True``, naming the target, the prompt (per prompt) and the limit.

    Examples:
      >>> import jaxlimits as jl
      >>> law = jl.Samples.from_law([[0.0, 1.0]], [[0.7, 0.3]])  # Bernoulli(0.3)
      >>> sol = jl.min_kl_for_gain(law, 0.2)
      >>> round(float(sol.kl), 6)  # kl(0.5 || 0.3)
      0.087177
    """
    return _run_tail(samples, target_gain, kind="gain", pooled=pooled, throw=throw, tail=tail, tail_level=tail_level,
                     tail_replicates=tail_replicates, max_iter=max_iter, memory_budget=memory_budget,
                     bias_correction=bias_correction)


def max_gain_at_kl(
    samples: Samples,
    kl_budget,
    *,
    pooled: bool = True,
    bias_correction: bool = True,
    throw: bool = True,
    max_iter: int | None = None,
    memory_budget: int | None = None,
    tail: str | None = None,
    tail_level: float = 0.95,
    tail_replicates: int = 200,
) -> Solution:
    r"""The most gain reachable within a KL budget: the convex dual (MATH.md §5).

    .. math::

       \mathrm{gain}^*(K) = \max\{E_\pi[r] - E_0[r] : \mathrm{KL}(\pi\|\pi_0) \le K\}
       = \min_{\beta > 0} \beta(\log Z(\beta) + K) - E_0[r],

    solved as ``KL(beta*) = K`` on the frontier of the rewards (scores are not used). Feasible
    for ``0 <= K < K_max``; a budget at or above ``K_max`` is saturated (the samples cannot show
    it) and is reported with status ``KL_AT_OR_ABOVE_CEILING``, never extrapolated.
    Differentiable: ``d gain*/dK = beta*``.

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]``.
      kl_budget: KL budgets in nats, a scalar or an array of any shape (shared by all prompts).
      pooled: invert the prompt set's frontier, one beta for all prompts (MATH.md §6);
        False inverts each prompt's frontier.
      bias_correction: solve the bias-corrected frontier (default) or the plug-in one (False).
      throw: raise a ``ValueError`` for a budget that is infeasible or not solved (eagerly; under
        transformations when the program runs, as a JAX runtime error with the same message;
        False for ``jax.export``).
      max_iter: cap on Newton iterations (default ``MAX_ITER``).
      memory_budget: bytes of working memory per kernel pass (default 256 MiB).
      tail: None (default: only what the samples show) or ``"gpd"``: targets past what the
        samples show (``KL_AT_OR_ABOVE_CEILING``, ``GAIN_AT_OR_ABOVE_MAX``, or flagged ``ceiling``)
        are solved on a model of each prompt's upper reward tail (``jaxlimits.tail.extend_solution``),
        marked ``extrapolated``, with the model's interval in ``Solution.tail``; ``NO_TILT`` /
        ``BEYOND_UPPER_END`` where the model gives no answer. Plain samples, concrete targets.
      tail_level, tail_replicates: the tail model's interval level and bootstrap replicates.

    Returns:
      A :class:`Solution` of the budgets' shape (pooled) or ``[P, *shape]`` (per prompt).

    Raises:
      ValueError: with ``throw=True``, naming the budget, the prompt (per prompt) and the ceiling.

    Examples:
      >>> import jaxlimits as jl
      >>> law = jl.Samples.from_law([[0.0, 1.0]], [[0.7, 0.3]])
      >>> sol = jl.max_gain_at_kl(law, 0.087177, throw=False)
      >>> round(float(sol.gain), 4)
      0.2
    """
    return _run_tail(samples, kl_budget, kind="kl", pooled=pooled, throw=throw, tail=tail, tail_level=tail_level,
                     tail_replicates=tail_replicates, max_iter=max_iter, memory_budget=memory_budget,
                     bias_correction=bias_correction)
