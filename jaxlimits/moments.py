r"""The one kernel everything stands on: mergeable sums of the tilted weights.

For a prompt with base weights ``v_i = m_i w_i`` (counts times importance weights, 0 where
masked) every estimator of MATH.md §3 is a function of a few weighted sums. Two representations
serve the whole range of ``lambda = 1/beta`` exactly and without overflow:

* **Tilted sums** (used where ``lambda R > 1``): with ``x'_i = r_i - max r`` and a per-(prompt,
  beta) shift ``c``, ``E_i = exp(log v_i + lambda x'_i - c)``. The sums ``sum E f`` over a few
  monomials ``f`` of ``x'`` and the scores, and the second-order sums behind standard errors and
  the ESS, ``sum E^2 f / m``, are the same sums at ``2 lambda`` with weights ``v^2 / m``: since
  ``exp(2 lambda x') = exp(lambda x')^2`` both come from one exponential per (prompt, sample,
  beta), on any grid (importance weights add one for the cross sums, see :func:`block_sums`).
  :func:`jaxlimits.native.tilted_sums` evaluates them, on a CPU in one fused C++ pass.
* **Moments** (used where ``lambda R <= 1``, small tilt): with ``x~ = (r - rbar) / R`` and
  ``R = max |r - rbar|``, the beta-independent moments ``sum v x~^n y^j`` turn every sum into a
  polynomial in ``a = lambda R``. No exponential, and no cancellation: at large beta the KL is
  ``O(lambda^2)`` and the textbook formula ``sum p r / beta - log Z`` loses it in float32
  (MATH.md §3, "Float32 at large beta").

Both are additive over samples given the per-prompt :class:`Reference`, and merge exactly
(:func:`merge`: tilted sums with different shifts are rescaled by ``exp(c_a - c)``; moments add).
That is what sample chunking, streaming and sharding rest on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import native, pooling
from .pooling import safe_sqrt

#: Every contraction in full precision: on GPUs the default float32 matmul may round its inputs to
#: TF32 (10-bit mantissa), far above the estimates' own rounding.
HIGHEST = jax.lax.Precision.HIGHEST

Array = jax.Array

#: Orders of the small-tilt series for means (truncation below 1e-19 at ``lambda R = 1``).
K_MEAN = 20
#: Orders of each factor in the series of the standard errors (truncation below 1e-6 relative).
K_SE = 10
#: The series is used where ``lambda * R <= RHO_SERIES``.
RHO_SERIES = 1.0
#: Number of moment orders kept, ``0 .. N_MOMENTS - 1``.
N_MOMENTS = max(K_MEAN + 3, 2 * K_SE + 1)


def monomials(has_scores: bool):
    """Monomials ``(i, j)`` = ``x^i y^j`` of the first- and second-order tilted sums.

    First order: tilted means of ``x, x^2, y, x y`` (and ``y^2``, needed by the cross sums).
    Second order (standard errors, ESS): ``{1, f, f^2}`` for ``f`` in ``x, y``.
    Without scores ``y`` is ``x`` and the columns collapse to ``1, x, x^2``.
    """
    if not has_scores:
        return ((0, 0), (1, 0), (2, 0)), ((0, 0), (1, 0), (2, 0))
    return ((0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)), ((0, 0), (1, 0), (2, 0), (0, 1), (0, 2))


def col(monos, i: int, j: int, has_scores: bool) -> int:
    """Index of the monomial ``x^i y^j`` among ``monos``."""
    if not has_scores:
        i, j = i + j, 0
    return monos.index((i, j))


class Reference(NamedTuple):
    """Per-prompt constants fixed before the sweep, each ``[P]``.

    Attributes:
      r_bar: base-weighted mean of the rewards (the centre of the moments).
      s_bar: base-weighted mean of the scores (``r_bar`` if there are none).
      r_max: the largest valid reward (the shift of the tilted sums).
      r_scale: ``R = max |r - r_bar|`` over valid samples (1 where all rewards tie).
      log_w_ref: the largest valid log-weight (0 without weights), so every ``w <= 1``.
    """

    r_bar: Array
    s_bar: Array
    r_max: Array
    r_scale: Array
    log_w_ref: Array


class Rows(NamedTuple):
    """Per-sample quantities of a block, ``[P, N]``; zero (``-inf`` for logs) where invalid."""

    x_top: Array  # r - r_max (<= 0)
    x_unit: Array  # (r - r_bar) / R, in [-1, 1]
    y: Array  # s - s_bar (the centred reward if there are no scores)
    log_v: Array  # log m + log w
    log_v2: Array | None  # log m + 2 log w = log(v^2 / m) (importance weights only)
    m: Array  # multiplicity (0 where invalid)


class Sums(NamedTuple):
    """Mergeable sufficient statistics of a block of samples.

    Attributes:
      log_scale, tilted1: ``[P, B]``, ``[P, B, k1]``: ``sum v e^{lam x'} f = e^c * tilted1``.
      log_scale2, tilted2: ``[P, B]``, ``[P, B, k2]``: ``sum (v^2/m) e^{2 lam x'} f``, likewise.
      log_scale_w, tilted_w: ``sum (v^2/m) e^{lam x'} f`` (importance weights only, else None).
      base1: ``[P, k1]`` ``sum v f``; base2: ``[P, k2]`` ``sum (v^2/m) f``.
      moments1: ``[P, n, J]`` ``sum v x~^n y^j`` (``J = 3``; 1 without scores, where y = x).
      moments2: the same with ``v^2 / m`` (importance weights only; else equal to moments1).
      draws: ``[P]`` number of draws ``sum m``; log_top_mass: ``[P]`` ``log sum v`` over the maximal
        rewards (a log: with log-weights spread over 100 nats the mass itself underflows float32).
    """

    log_scale: Array
    tilted1: Array
    log_scale2: Array
    tilted2: Array
    log_scale_w: Array | None
    tilted_w: Array | None
    base1: Array
    base2: Array
    moments1: Array
    moments2: Array | None
    draws: Array
    log_top_mass: Array


def valid_parts(rewards, scores, log_weights, counts, mask):
    """Validity and multiplicity of each entry, and its log-weight (0 where invalid)."""
    valid = jnp.ones(rewards.shape, bool) if mask is None else mask
    if counts is not None:
        valid = valid & (counts > 0)
    if log_weights is not None:
        valid = valid & (log_weights > -jnp.inf)
    m = valid.astype(rewards.dtype) if counts is None else jnp.where(valid, counts, 0).astype(rewards.dtype)
    log_w = None if log_weights is None else jnp.where(valid, log_weights, 0)
    return valid, m, log_w


def reference(rewards, scores=None, log_weights=None, counts=None, mask=None, *, reduce_sum=None,
              reduce_max=None) -> Reference:
    """Per-prompt centres and scales of complete prompts (``[P, N]`` inputs).

    ``reduce_sum``, ``reduce_max``: applied to the per-prompt sums and maxima over this block's
    samples when a prompt's samples are split over devices (``jaxlimits.sharding`` passes
    ``jax.lax.psum`` / ``pmax`` over the samples' mesh axis); default: the block is the whole prompt.
    """
    add = (lambda x: x) if reduce_sum is None else reduce_sum  # noqa: E731
    top = (lambda x: x) if reduce_max is None else reduce_max  # noqa: E731
    valid, m, log_w = valid_parts(rewards, scores, log_weights, counts, mask)
    if log_w is None:
        log_w_ref = jnp.zeros(rewards.shape[:1], rewards.dtype)
        v = m
    else:
        log_w_ref = top(jnp.max(jnp.where(valid, log_w, -jnp.inf), axis=1))
        v = m * jnp.where(valid, jnp.exp(log_w - log_w_ref[:, None]), 0)
    big_w = add(v.sum(axis=1))
    r_bar = add((v * jnp.where(valid, rewards, 0)).sum(axis=1)) / big_w
    s_bar = r_bar if scores is None else add((v * jnp.where(valid, scores, 0)).sum(axis=1)) / big_w
    r_max = top(jnp.max(jnp.where(valid, rewards, -jnp.inf), axis=1))
    r_scale = top(jnp.max(jnp.where(valid, jnp.abs(rewards - r_bar[:, None]), 0), axis=1))
    r_scale = jnp.where(r_scale > 0, r_scale, 1)
    return jax.tree.map(jax.lax.stop_gradient, Reference(r_bar, s_bar, r_max, r_scale, log_w_ref))


def rows(ref: Reference, rewards, scores=None, log_weights=None, counts=None, mask=None) -> Rows:
    """Prepares a block of samples (any subset of each prompt's samples) for :func:`block_sums`."""
    valid, m, log_w = valid_parts(rewards, scores, log_weights, counts, mask)
    r = jnp.where(valid, rewards, ref.r_max[:, None])
    x_top = r - ref.r_max[:, None]
    x_unit = jnp.where(valid, (r - ref.r_bar[:, None]) / ref.r_scale[:, None], 0)
    if scores is None:
        y = jnp.where(valid, r - ref.r_bar[:, None], 0)
    else:
        y = jnp.where(valid, scores - ref.s_bar[:, None], 0)
    log_m = jnp.where(valid, jnp.log(jnp.where(valid, m, 1)), -jnp.inf)
    if log_w is None:
        return Rows(x_top, x_unit, y, log_m, None, m)
    log_w_rel = log_w - ref.log_w_ref[:, None]
    return Rows(x_top, x_unit, y, log_m + log_w_rel, log_m + 2 * log_w_rel, m)


def monomial_columns(x, y, monos, has_scores):
    """The columns ``x^i y^j`` of ``monos`` (``y = x`` without scores), each shaped like ``x``."""
    out = []
    for i, j in monos:
        c = None
        for factor in [x] * i + [y if has_scores else x] * j:
            c = factor if c is None else c * factor
        out.append(jnp.ones_like(x) if c is None else c)
    return out


def _power_sums(x_unit, weight, ycols, n):
    """``[P, n, J]`` moments ``sum_i weight_i x~_i^k y_i^j`` by repeated products."""
    out = []
    pw = weight
    for _ in range(n):
        out.append(jnp.stack([jnp.sum(pw * yc, axis=-1) for yc in ycols], axis=-1))
        pw = pw * x_unit
    return jnp.stack(out, axis=1)


def _log_sum(log_x):
    """``log sum exp(log_x)`` over the last axis; ``-inf`` (with zero gradients) where all are ``-inf``."""
    top = jax.lax.stop_gradient(jnp.max(log_x, axis=-1))
    top = jnp.where(jnp.isfinite(top), top, 0)
    total = jnp.sum(jnp.exp(log_x - top[..., None]), axis=-1)
    some = total > 0
    return jnp.where(some, jnp.log(jnp.where(some, total, 1)) + top, -jnp.inf)


def block_sums(rw: Rows, lam: Array, *, has_scores: bool) -> Sums:
    """Sufficient statistics of a block of samples at ``lam = 1/beta``: one exponential per (prompt, sample, beta).

    The second-order sums are those at ``2 lam`` with weights ``v^2 / m``, and
    ``exp(2 lam x') = exp(lam x')^2``: they are products of the same exponential. Without
    importance weights (``v = m``) ``E = exp(lam x')`` and the sums are ``sum E (m f)`` and
    ``sum E^2 (m f)``. With them ``E = exp(log v + lam x' - c)`` (``c`` the largest exponent),
    ``(v^2/m) e^{2 lam x'} = E^2 e^{2c} / m``, so the second-order sums take the shift ``2c``
    (their largest term is at least ``1/m`` of the sample with ``E = 1``: no underflow); the cross
    sums ``sum (v^2/m) e^{lam x'} f = sum E w f e^c`` keep a second exponential with their own
    shift, since ``E w`` underflows float32 where the log-weights spread over ~100 nats.

    Args:
      rw: prepared rows ``[P, N]``.
      lam: ``[P, B]`` inverse temperatures.
      has_scores: scores differ from rewards (more columns).

    Returns:
      :class:`Sums` of the block; blocks of the same prompts combine with :func:`merge`.
    """
    first, second = monomials(has_scores)
    f1 = monomial_columns(rw.x_top, rw.y, first, has_scores)
    second_idx = [first.index(mono) for mono in second]
    y = rw.y if has_scores else None
    weighted = rw.log_v2 is not None
    if not weighted:  # v = m: the multiplicities weight both families
        tilted1, tilted2, c1 = native.tilted_sums(rw.x_top, lam, y=y, w1=rw.m, w2=rw.m)
        c2 = c1
        cw = tw = None
    else:
        inv_m = jnp.where(rw.m > 0, 1 / jnp.where(rw.m > 0, rw.m, 1), 0)
        tilted1, tilted2, c1 = native.tilted_sums(rw.x_top, lam, y=y, log_w=rw.log_v, w2=inv_m, shift=True)
        c2 = 2 * c1
        tw, _, cw = native.tilted_sums(rw.x_top, lam, y=y, log_w=rw.log_v2, first_is_second=True, second=False,
                                       shift=True)
    v = jnp.exp(rw.log_v)
    base1 = jnp.stack([jnp.sum(v * f, axis=-1) for f in f1], axis=-1)
    v2 = v if not weighted else jnp.exp(rw.log_v2)
    base2 = jnp.stack([jnp.sum(v2 * f1[k], axis=-1) for k in second_idx], axis=-1)
    ycols = [jnp.ones_like(rw.y), rw.y, rw.y * rw.y] if has_scores else [jnp.ones_like(rw.y)]
    moments1 = _power_sums(rw.x_unit, v, ycols, N_MOMENTS + (0 if has_scores else 2))
    moments2 = _power_sums(rw.x_unit, v2, ycols, N_MOMENTS + (0 if has_scores else 2)) if weighted else None
    top = _log_sum(jnp.where(rw.x_top == 0, rw.log_v, -jnp.inf))
    return Sums(c1, tilted1, c2, tilted2, cw, tw, base1, base2, moments1, moments2, rw.m.sum(-1), top)


def merge(a: Sums, b: Sums) -> Sums:
    """Combines the sums of two disjoint blocks of the same prompts (exact; associative, commutative).

    Each family of tilted sums is rescaled to the larger shift ``c = max(c_a, c_b)`` by
    ``exp(c_a - c)``; everything else adds.
    """

    def rescale(ca, xa, cb, xb):
        if xa is None:
            return None, None
        c = jnp.maximum(ca, cb)
        sa = jnp.exp(jnp.where(jnp.isfinite(ca), ca - c, -jnp.inf))
        sb = jnp.exp(jnp.where(jnp.isfinite(cb), cb - c, -jnp.inf))
        return c, xa * sa[..., None] + xb * sb[..., None]

    c1, t1 = rescale(a.log_scale, a.tilted1, b.log_scale, b.tilted1)
    c2, t2 = rescale(a.log_scale2, a.tilted2, b.log_scale2, b.tilted2)
    cw, tw = rescale(a.log_scale_w, a.tilted_w, b.log_scale_w, b.tilted_w)
    add = lambda x, y: None if x is None else x + y  # noqa: E731
    return Sums(
        c1, t1, c2, t2, cw, tw,
        a.base1 + b.base1, a.base2 + b.base2,
        a.moments1 + b.moments1, add(a.moments2, b.moments2),
        a.draws + b.draws, _log_sum(jnp.stack([a.log_top_mass, b.log_top_mass], axis=-1)),
    )


def empty_sums(num_prompts: int, num_betas: int, dtype, *, has_scores: bool, weighted: bool) -> Sums:
    """The identity of :func:`merge` (no samples yet)."""
    k1, k2 = (len(m) for m in monomials(has_scores))
    j = 3 if has_scores else 1
    n = N_MOMENTS + (0 if has_scores else 2)
    z = lambda *s: jnp.zeros(s, dtype)  # noqa: E731
    ninf = jnp.full((num_prompts, num_betas), -jnp.inf, dtype)
    return Sums(
        ninf, z(num_prompts, num_betas, k1), ninf, z(num_prompts, num_betas, k2),
        ninf if weighted else None, z(num_prompts, num_betas, k2) if weighted else None,
        z(num_prompts, k1), z(num_prompts, k2), z(num_prompts, n, j),
        z(num_prompts, n, j) if weighted else None, z(num_prompts), jnp.full((num_prompts,), -jnp.inf, dtype),
    )


def kl_ceiling(s: Sums) -> Array:
    """``[P]`` the largest KL the samples can show (:func:`jaxlimits.pooling.kl_ceiling` of the sums)."""
    return pooling.kl_ceiling(jnp.log(s.base1[:, 0]), s.log_top_mass)


class Tilted(NamedTuple):
    """Tilted statistics of each (prompt, beta), each ``[P, B]`` (MATH.md §2-4).

    ``log_z`` is ``log E_pi0[exp(r/beta)]``; ``mean_r``, ``mean_s`` the tilted means;
    ``var_r = Var_beta(r)`` and ``cov_sr = Cov_beta(s, r)`` give the beta-derivatives of
    MATH.md §4; ``ess`` is Kish's effective sample size of the tilted weights (in draws);
    ``*_se`` are delta-method standard errors (zero for an exact law); ``*_bias`` are the
    second-order delta-method estimates of the plug-in estimators' bias (``E[est] - truth``,
    order ``1/ESS``; zero for an exact law), from the same second-order sums as the standard
    errors (see :func:`bias_terms`). ``log_z`` and the point estimates are the plug-in ones.
    """

    log_z: Array
    gain: Array
    kl: Array
    reverse_kl: Array
    jeffreys: Array
    mean_r: Array
    mean_s: Array
    var_r: Array
    cov_sr: Array
    ess: Array
    gain_se: Array
    kl_se: Array
    reverse_kl_se: Array
    log_z_bias: Array
    gain_bias: Array
    kl_bias: Array
    reverse_kl_bias: Array


def bias_terms(p2, p2_s, p2_lr, u2, u2_s, u2_lr):
    r"""Second-order (delta-method) bias of the plug-in estimators of MATH.md §3.

    Each estimator is a smooth function of sample means; ``E g(abar) = g(mu) + tr(H Sigma)/(2N)``.
    For the tilted mean ``sum_i p_i s_i`` (a ratio of means) this gives ``-sum p_i^2 (s_i - mu_p)``,
    for ``log Zhat = log mean(w e) - log mean(w)`` it gives ``-(sum p^2 - sum u^2) / 2`` (the
    second term is the base normaliser, a ratio too under importance weights). With counts
    every square is over draws: ``sum p_i^2 / m_i`` (the expanded sample's formulas). So,
    with ``P2 = sum p^2/m``, ``U2 = sum u^2/m``::

        bias(log Z)   = -(P2 - U2) / 2
        bias(gain)    = -sum (p^2/m) (s - mu_p) + sum (u^2/m) (s - mu_u)
        bias(KL)      = -lam sum (p^2/m) (r - nu_p) - bias(log Z)
        bias(rev. KL) =  bias(log Z) + lam sum (u^2/m) (r - r_bar)

    and ``bias(gain, s = r) = beta (bias(KL) + bias(rev. KL))``: Theorem 1 holds between the
    corrected estimates too. Plain samples have ``U2 = 1/N`` and ``sum u^2 (s - mu_u) = 0``,
    the formulas of MATH.md §3b.

    Args (each ``[P, B]``):
      p2, u2: ``P2`` and ``U2`` (or ``P2 - U2`` and 0, where the difference is formed exactly).
      p2_s, u2_s: ``sum (p^2/m)(s - mu_p)`` and ``sum (u^2/m)(s - mu_u)``.
      p2_lr, u2_lr: ``lam sum (p^2/m)(r - nu_p)`` and ``lam sum (u^2/m)(r - r_bar)``.

    Returns:
      ``(log_z_bias, gain_bias, kl_bias, reverse_kl_bias)``.
    """
    log_z_bias = -(p2 - u2) / 2
    gain_bias = -p2_s + u2_s
    kl_bias = -p2_lr - log_z_bias
    reverse_kl_bias = log_z_bias + u2_lr
    return log_z_bias, gain_bias, kl_bias, reverse_kl_bias


#: A variance is trusted only above this many units of rounding of the terms it is computed from.
SE_RESOLUTION = 16.0


def resolved(var, bound):
    r"""``var``, or NaN where the dtype cannot resolve it from terms of size ``bound``.

    The variances are quadratic forms of mergeable sums, ``c^T G c``; where the per-sample
    influence nearly cancels (e.g. base weights concentrated on one sample, float32) the result is
    a small difference of terms up to :math:`(\sum_k |c_k| \sqrt{G_{kk}})^2` (Cauchy-Schwarz), and
    its rounding error is a few ``eps`` of that: an SE of exactly 0 (or a large one) would be
    noise. NaN says "not resolvable in this dtype" (use float64); an SE is never read as
    certainty. A true zero (all terms zero, e.g. tied rewards) stays zero.
    """
    eps = jnp.finfo(var.dtype).eps
    return jnp.where((bound > 0) & (var <= SE_RESOLUTION * eps * bound), jnp.nan, var)


def finalize(ref: Reference, s: Sums, lam: Array, *, has_scores: bool, exact: bool) -> Tilted:
    """The tilted statistics at ``lam`` (``[P, B]``) from the sums of complete prompts."""
    series = finalize_series(ref, s, lam, has_scores=has_scores, exact=exact)
    tilted = finalize_tilted(ref, s, lam, has_scores=has_scores, exact=exact)
    use_series = lam * ref.r_scale[:, None] <= RHO_SERIES
    return jax.tree.map(lambda a, b: jnp.where(use_series, a, b), series, tilted)


def _assemble(log_z, gain, kl, rkl, jd, mean_r, mean_s, var_r, cov, ess, var_g, var_k, var_rk, biases, exact):
    if exact:
        zero = jnp.zeros_like(gain)
        ses = (zero, zero, zero)
        biases = (zero, zero, zero, zero)
    else:
        ses = (safe_sqrt(var_g), safe_sqrt(var_k), safe_sqrt(var_rk))
    return Tilted(log_z, gain, kl, rkl, jd, mean_r, mean_s, var_r, cov, ess, *ses, *biases)


def _quad(sums, monos, has_scores, a, g, f):
    """``sum (a0 + a1 f)(g0 + g1 f) * weight`` from the sums of ``{1, f, f^2}``."""
    i1, i2 = ((1, 0), (2, 0)) if f == "x" else ((0, 1), (0, 2))
    s0, s1, s2 = (sums[..., col(monos, i, j, has_scores)] for i, j in ((0, 0), i1, i2))
    (a0, a1), (g0, g1) = a, g
    return a0 * g0 * s0 + (a0 * g1 + a1 * g0) * s1 + a1 * g1 * s2


def _quad_size(sums, monos, has_scores, a, f):
    """``|a0| sqrt(sum w) + |a1| sqrt(sum w f^2)``: bounds ``sqrt(sum w (a0 + a1 f)^2)`` termwise."""
    i2 = (2, 0) if f == "x" else (0, 2)
    s0, s2 = (jnp.maximum(sums[..., col(monos, i, j, has_scores)], 0) for i, j in ((0, 0), i2))
    return jnp.abs(a[0]) * jnp.sqrt(s0) + jnp.abs(a[1]) * jnp.sqrt(s2)


def finalize_tilted(ref, s: Sums, lam, *, has_scores, exact) -> Tilted:
    """Statistics from the tilted sums (used where ``lambda R > 1``; basis ``x' = r - max r``)."""
    first, second = monomials(has_scores)
    t1 = lambda i, j: s.tilted1[..., col(first, i, j, has_scores)]  # noqa: E731
    big_w = s.base1[:, None, 0]
    base = lambda i, j: s.base1[:, None, col(first, i, j, has_scores)] / big_w  # noqa: E731
    sig = t1(0, 0)
    mx, mxx, my, mxy = t1(1, 0) / sig, t1(2, 0) / sig, t1(0, 1) / sig, t1(1, 1) / sig
    bx, by = base(1, 0), base(0, 1)
    log_mean_e = s.log_scale + jnp.log(sig / big_w)  # log E_u[exp(lam x')]
    kl = lam * mx - log_mean_e
    rkl = log_mean_e - lam * bx
    # Standard errors (per draw: psi = (rho - 1) A + B, Var = sum (u^2/m) psi^2):
    # Var = [S2(A^2) + 2 k Sw(A G) + k^2 B2(G^2)] / k^2, k = sig / W, G = B - A.
    kappa = sig / big_w
    w2 = (big_w * big_w)[..., None]
    t2 = s.tilted2 * jnp.exp(s.log_scale2 - 2 * s.log_scale)[..., None] / w2
    if s.tilted_w is None:  # w = 1: the cross sums are first-order sums
        tw = s.tilted1[..., jnp.asarray([first.index(mono) for mono in second])] / w2
    else:
        tw = s.tilted_w * jnp.exp(s.log_scale_w - s.log_scale)[..., None] / w2
    b2 = s.base2[:, None, :] / w2

    def var(a, b, f):
        g = (b[0] - a[0], b[1] - a[1])
        quad = lambda sums, u, v: _quad(sums, second, has_scores, u, v, f)  # noqa: E731
        value = (quad(t2, a, a) + 2 * kappa * quad(tw, a, g) + kappa**2 * quad(b2, g, g)) / kappa**2
        size = lambda sums, u: _quad_size(sums, second, has_scores, u, f)  # noqa: E731
        return resolved(value, ((size(t2, a) + kappa * size(b2, g)) / kappa) ** 2)

    one, zero = jnp.ones_like(lam), jnp.zeros_like(lam)
    var_gain = var((-my, one), (by - my, zero), "y")
    var_kl = var((-lam * mx - 1, lam), (-lam * mx, lam), "x")
    var_rkl = var((one, zero), (lam * bx, -lam), "x")
    ess = 1 / t2[..., 0] * kappa**2
    # Bias (bias_terms): sum (p^2/m) f = t2[f] / kappa^2, sum (u^2/m) f = b2[f].
    t2c = lambda i, j: t2[..., col(second, i, j, has_scores)] / kappa**2  # noqa: E731
    b2c = lambda i, j: b2[..., col(second, i, j, has_scores)]  # noqa: E731
    p2, u2 = t2c(0, 0), b2c(0, 0)
    p2_lr, u2_lr = lam * (t2c(1, 0) - mx * p2), lam * (b2c(1, 0) - bx * u2)
    if has_scores:
        p2_s, u2_s = t2c(0, 1) - my * p2, b2c(0, 1) - by * u2
    else:  # s = r: the same sums, so that Theorem 1 holds to rounding between the corrected estimates
        p2_s, u2_s = p2_lr / lam, u2_lr / lam
    biases = bias_terms(p2, p2_s, p2_lr, u2, u2_s, u2_lr)
    mean_s0 = (ref.s_bar if has_scores else ref.r_max)[:, None]
    return _assemble(
        log_mean_e + lam * ref.r_max[:, None], my - by, kl, rkl, lam * (mx - bx),
        ref.r_max[:, None] + mx, mean_s0 + my, mxx - mx * mx, mxy - mx * my, ess,
        var_gain, var_kl, var_rkl, biases, exact,
    )


# -- The small-tilt series. Every per-sample function is a power series in a*x~ (a = lam R);
# its coefficients with a^p factored out are fixed numbers (gamma below). A sum of a product of
# two such functions is then a polynomial in a whose coefficients are per-prompt moments.
def inv_fact(n):
    return np.array([1 / math.factorial(p) for p in range(n)])


def _basis():
    """Series of the functions in the influence of gain, KL and reverse KL: name -> (gamma, j)."""
    n = K_SE + 1
    p = np.arange(n)
    f = inv_fact(n)
    e = f.copy()  # e^{lam x}
    t = np.where(p >= 1, f, 0)  # e^{lam x} - 1
    phi = np.where(p >= 2, (p - 1) * f, 0)  # lam x e^{lam x} - (e^{lam x} - 1)
    chi = np.where(p >= 2, f, 0)  # e^{lam x} - 1 - lam x
    lx = (p == 1).astype(float)  # lam x
    one = (p == 0).astype(float)
    return {
        "e": (e, 0), "phi": (phi, 0), "chi": (chi, 0), "lx": (lx, 0), "one": (one, 0),
        "t": (t, 0), "ty": (t, 1), "y": (one, 1),
    }


_BASIS = _basis()
_NAMES = tuple(_BASIS)
PAIRS = tuple((a, b) for i, a in enumerate(_NAMES) for b in _NAMES[i:])


def _pair_table():
    """``[2 K_SE + 1, pairs]`` convolutions of the gammas, and the y-power of each pair."""
    conv = np.stack([np.convolve(_BASIS[a][0], _BASIS[b][0]) for a, b in PAIRS], axis=-1)
    ypow = np.array([_BASIS[a][1] + _BASIS[b][1] for a, b in PAIRS])
    return conv, ypow


CONV, _YPOW = _pair_table()


def powers_of(a, n: int):
    """``[..., n]`` powers ``a^0 .. a^(n-1)`` by products (``a ** k`` would cost a log and an exp)."""
    out = [jnp.ones_like(a)]
    for _ in range(n - 1):
        out.append(out[-1] * a)
    return jnp.stack(out, axis=-1)


def polyval(coefs, a):
    """``sum_k coefs[:, k] a^k`` by Horner's rule: ``coefs [P, n, ...]``, ``a [P, B]`` -> ``[P, B, ...]``.

    One fused elementwise loop (a batched product ``[B, n] x [n, ...]`` per prompt costs XLA's CPU
    backend a call per prompt: the series took a third of a pooled sweep that way).
    """
    extra = coefs.ndim - 2
    x = a.reshape(a.shape + (1,) * extra)
    out = jnp.broadcast_to(coefs[:, None, -1], a.shape + coefs.shape[2:])
    for k in range(coefs.shape[1] - 2, -1, -1):
        out = out * x + coefs[:, None, k]
    return out


def _ymoment(m, n: int, j: int, big_r, has_scores):
    """``[P, n]`` normalised moments ``sum u x~^k y^j`` for ``k < n`` (``y = R x~`` without scores)."""
    if has_scores:
        return m[:, :n, j]
    return m[:, j : j + n, 0] * big_r[:, None] ** j


def finalize_series(ref, s: Sums, lam, *, has_scores, exact) -> Tilted:
    """Statistics from the beta-independent moments (used where ``lambda R <= 1``)."""
    dtype = lam.dtype
    big_r = ref.r_scale
    a = lam * big_r[:, None]
    # clamped so that the unused branch stays finite; `where`, not `minimum`: at a = RHO_SERIES the
    # series is the branch in use and its derivative must be whole (minimum's is 1/2 at a tie)
    a = jnp.where(a <= RHO_SERIES, a, RHO_SERIES)
    lam_c = a / big_r[:, None]
    big_w = s.moments1[:, 0, 0]
    m1 = s.moments1 / big_w[:, None, None]
    m2 = (s.moments1 if s.moments2 is None else s.moments2) / (big_w * big_w)[:, None, None]
    n_mean = K_MEAN + 1
    fact = jnp.asarray(inv_fact(n_mean), dtype)
    t_coef = fact.at[0].set(0)  # e^{lam x} - 1 in powers of a x~

    def tsum(i, j):
        """sum u (e^{lam x} - 1) x^i y^j as a polynomial in a."""
        mom = _ymoment(m1, i + n_mean, j, big_r, has_scores)[:, i:] * big_r[:, None] ** i
        return polyval(mom * t_coef, a)

    base = lambda i, j: (_ymoment(m1, i + 1, j, big_r, has_scores)[:, i] * big_r**i)[:, None]  # noqa: E731
    bx, by = base(1, 0), base(0, 1)
    t_one, t_x, t_xx, t_y, t_xy = tsum(0, 0), tsum(1, 0), tsum(2, 0), tsum(0, 1), tsum(1, 1)
    den = 1 + t_one
    mx = (bx + t_x) / den
    mxx = (base(2, 0) + t_xx) / den
    my = (by + t_y) / den
    mxy = (base(1, 1) + t_xy) / den
    log_mean_e = jnp.log1p(t_one)

    # Sums of products of basis functions: G[pair] = sum (u^2/m) f_a f_b, polynomials in a.
    n_se = 2 * K_SE + 1
    mom2 = jnp.stack([_ymoment(m2, n_se, int(j), big_r, has_scores) for j in _YPOW], axis=-1)
    coef2 = mom2 * jnp.asarray(CONV, dtype)  # [P, n, pairs]
    pair_index = {pair: q for q, pair in enumerate(PAIRS)}
    grams = {}

    def g(na, nb):
        """``sum (u^2/m) f_a f_b``, evaluated for the pairs in use only (about 2/3 of them)."""
        q = pair_index[(na, nb) if (na, nb) in pair_index else (nb, na)]
        if q not in grams:
            grams[q] = polyval(coef2[..., q], a)
        return grams[q]

    def quad(coefs):
        """sum (u^2/m) (sum_k g_k f_k)^2 for {name: g}."""
        names = list(coefs)
        total, size = 0, 0
        for i, na in enumerate(names):
            size = size + jnp.abs(coefs[na]) * safe_sqrt(g(na, na))
            for nb in names[i:]:
                term = coefs[na] * coefs[nb] * g(na, nb)
                total = total + (term if na == nb else 2 * term)
        return resolved(total / den**2, (size / den) ** 2)

    # psi (1 + T), per draw, for each estimator (derivations in MATH.md §3 and the tests):
    var_kl = quad({"phi": 1.0, "e": -lam_c * mx, "one": t_one})
    var_rkl = quad({"chi": 1.0, "lx": -t_one, "one": -t_one + den * lam_c * bx})
    var_gain = quad({"ty": 1.0, "t": -my, "y": -t_one, "one": t_one * my + den * (by - my)})
    # ESS: (1 + T)^2 / sum (u^2/m) e^{2 lam x}, the exact series in 2a (not the K_SE one)
    e2_coef = jnp.asarray(inv_fact(N_MOMENTS) * 2.0 ** np.arange(N_MOMENTS), dtype)
    ess = den * den / polyval(_ymoment(m2, N_MOMENTS, 0, big_r, has_scores) * e2_coef, a)

    # Bias (bias_terms) from the same Gram sums, e = 1 + t, e lam x = phi + t, e y = ty + y;
    # P2 - U2 is expanded so that its leading terms cancel exactly (1/N - 1/N for plain samples).
    den2 = den * den
    u2 = g("one", "one")
    p2_ee = g("e", "e")
    p2_minus_u2 = (2 * (g("one", "t") - t_one * u2) + g("t", "t") - t_one * t_one * u2) / den2
    p2_lr = (g("e", "phi") + g("e", "t") - lam_c * mx * p2_ee) / den2
    u2_lr = g("one", "lx") - lam_c * bx * u2
    if has_scores:
        p2_s, u2_s = (g("e", "ty") + g("e", "y") - my * p2_ee) / den2, g("one", "y") - by * u2
    else:  # s = r (see finalize_tilted)
        p2_s, u2_s = p2_lr / lam_c, u2_lr / lam_c
    biases = bias_terms(p2_minus_u2, p2_s, p2_lr, jnp.zeros_like(u2), u2_s, u2_lr)
    return _assemble(
        lam_c * ref.r_bar[:, None] + log_mean_e, (t_y - t_one * by) / den,
        lam_c * mx - log_mean_e, log_mean_e - lam_c * bx, lam_c * (t_x - t_one * bx) / den,
        ref.r_bar[:, None] + mx, ref.s_bar[:, None] + my, mxx - mx * mx, mxy - mx * my, ess,
        var_gain, var_kl, var_rkl, biases, exact,
    )


def _series_sum(m1, a, big_r, i):
    """``sum u (e^{lam (r - r_bar)} - 1) (r - r_bar)^i = R^i sum_{k>=1} a^k/k! m_{k+i}`` (:func:`polyval`).

    ``m1`` ``[t, n_moments]`` the normalised moments ``sum u x~^k``, ``a = lambda R`` ``[t, B]``; the
    rewards-only case of :func:`finalize_series`'s ``tsum``.
    """
    n = K_MEAN + 1
    t_coef = jnp.asarray(inv_fact(n), a.dtype).at[0].set(0)  # e^{lam x} - 1 in powers of a x~
    return polyval(m1[:, i : i + n] * t_coef, a) * big_r**i


def finalize_first_order(ref: Reference, base: Sums, c, s, lam):
    """KL, gain and ``Var_beta(r)`` from first-order sums only: the part of :func:`finalize` that
    the inversions' Newton steps need (no SEs, bias or ESS; rewards only).

    ``s`` ``[t, B, 3]``: the kernel's tilted sums ``sum v e^{lam x' - c} (1, x', x'^2)``
    (``x' = r - max r``; ``native.tilted_sums(..., second=False)``), ``c`` ``[t, B]`` their shift;
    ``base``: the beta-independent sums (``base1`` and ``moments1``) of the same prompts. With
    ``s`` ``[t, B, 2]`` (no sums of ``x'^2``) only KL and gain.

    ``lambda R > 1``: from the tilted sums. ``lambda R <= 1``: the small-tilt series in
    ``a = lambda R`` over the centred moments, as in :func:`finalize_series` (no exponential and
    no cancellation: float32 at large beta). Returns ``(kl, gain[, var])``, each ``[t, B]``.
    """
    big_w = base.base1[:, 0][:, None]
    # tilted sums (basis x' = r - max r)
    mx = s[..., 1] / s[..., 0]
    kl_t = lam * mx - (c + jnp.log(s[..., 0] / big_w))
    gain_t = mx - base.base1[:, 1][:, None] / big_w
    # series (basis x~ = (r - r_bar) / R); a clamped as in finalize_series
    big_r = ref.r_scale[:, None]
    a = lam * big_r
    a = jnp.where(a <= RHO_SERIES, a, RHO_SERIES)
    lam_c = a / big_r
    m1 = base.moments1[:, :, 0] / big_w
    t0, t1 = _series_sum(m1, a, big_r, 0), _series_sum(m1, a, big_r, 1)
    bx = m1[:, 1:2] * big_r
    den = 1 + t0
    ms = (bx + t1) / den
    kl_s = lam_c * ms - jnp.log1p(t0)
    gain_s = (t1 - t0 * bx) / den
    series = lam * big_r <= RHO_SERIES
    pick = lambda u, v: jnp.where(series, u, v)  # noqa: E731
    if s.shape[-1] < 3:  # no sums of x'^2: no variance
        return pick(kl_s, kl_t), pick(gain_s, gain_t)
    var_s = (m1[:, 2:3] * big_r**2 + _series_sum(m1, a, big_r, 2)) / den - ms * ms
    var_t = s[..., 2] / s[..., 0] - mx * mx
    return pick(kl_s, kl_t), pick(gain_s, gain_t), jnp.maximum(pick(var_s, var_t), 0)


def sums_from_samples(samples, lam: Array, ref: Reference | None = None) -> tuple[Reference, Sums]:
    """Reference and sums of in-memory samples as one block (no tiling: see ``jaxlimits.tilt``)."""
    args = (samples.rewards, samples.scores, samples.log_weights, samples.counts, samples.mask)
    if ref is None:
        ref = reference(*args)
    return ref, block_sums(rows(ref, *args), lam, has_scores=samples.has_scores)
