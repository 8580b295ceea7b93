r"""Beyond what the samples show: the tilt from a model of the reward's upper tail.

``N`` plain samples can show a KL of at most ``log N`` (MATH.md §3), and the empirical estimate is
trusted well below that. The tilt at small beta is dominated by the top of the reward law, which
extreme-value theory describes with few parameters (Pickands 1975; Coles, *An Introduction to
Statistical Modeling of Extreme Values*, 2001, ch. 4). Per prompt, the law of ``r`` is modelled as

* the empirical **body**: the ``N - M`` draws at or below the threshold ``u = r_(M+1)`` (the
  ``(M+1)``-th largest), each of mass ``1/N``;
* a generalised Pareto **tail** of mass ``M/N`` above ``u``: ``r = u + Y``,
  ``P(Y > y) = (1 + xi y / sigma)^(-1/xi)``, fitted to the ``M`` exceedances by Zhang and
  Stephens' estimator (:func:`jaxlimits.psis.gpd_fit`, **without** PSIS's prior, which pulls
  ``xi`` towards 0.5 with the weight of 10 draws: a strong bias at ``M = 12``).

The shape decides what exists. ``xi < 0``: a finite upper end ``u + sigma/|xi|``; the tilt exists
at every beta and the gain saturates at that end (not at the sample max). ``xi = 0``
(exponential-type): ``E exp(Y/beta) = 1/(1 - sigma/beta)``, so the tilt exists only for
``beta > sigma``, the *critical beta*. ``xi > 0`` (polynomial tail): no tilt at any beta.
Samples cannot tell ``xi = 0`` from a small ``xi`` of either sign; the model takes the
exponential tail (``xi = 0``, ``sigma`` the mean exceedance) unless a likelihood-ratio test
rejects it at 5% (``2 (l_gpd - l_exp) > 3.84``), so an exponential-looking tail gets a critical
beta rather than a coin-flip between "no tilt at all" and "a tilt everywhere".

With ``x = r - u`` and ``lam = 1/beta`` (``E_t`` the tilted tail mean),

.. math::

   Z_u = \frac1N \sum_{\rm body} e^{\lambda x_i} + \frac MN E[e^{\lambda Y}], \quad
   \mathrm{gain} = E_{\pi_\beta}[x] - E_{\pi_0}[x], \quad
   \mathrm{KL} = \lambda E_{\pi_\beta}[x] - \log Z_u .

``E[e^{lam Y}]`` and the tilted mean of ``Y`` come from Gauss-Legendre quadrature in
``s = log P(Y > y)`` (``y = sigma expm1(-xi s) / xi``): the log-integrand ``s + lam y(s)`` is
smooth and unimodal, its mode and the range where it is within ``QUAD_DEPTH`` nats of it are
known in closed form, so a fixed number of nodes serves every (prompt, beta) under ``jit``.

Uncertainty (:func:`tail_curve`), at each of a few thresholds (``M`` times :data:`THRESHOLDS`):

* a parametric bootstrap from the *unrestricted* fit (``M`` exceedances drawn from it and
  refitted unrestricted; the body resampled with Poisson weights, whose sampling error decides
  the base mean). A replicate whose tilt does not exist at a beta counts as ``+inf`` there for
  the upper limit, so an upper limit is infinite when more than ``(1 - level)/2`` of them lack
  it (the data cannot exclude a tail with no tilt); for the lower limit a replicate with
  ``xi > 0`` takes its exponential tail instead (a smaller value: conservative);
* the profile-likelihood confidence set of the tail (Coles 2001, §4.3.4; over ``b = -xi/sigma``,
  whose inverse is the upper end above the threshold), the extreme curves over the set widened
  by the body's bootstrap deviations: the parametric bootstrap alone, centred on a fit whose
  upper end is too low by chance, misses too often;
* the point estimates of the selected and the unrestricted fits;
* where the shape's upper limit is not below :data:`XI_PENULTIMATE` (an exponential-type tail's
  penultimate shape can look like that), the exponential tail at its scale's upper limit, for the
  upper limits only.

The interval is the envelope of all of these over the thresholds. Pooled: the bootstrap's
replicates averaged over prompts, and the mean of the prompts' profile limits (conservative).

Only plain samples (optionally ragged, ``mask``) with ``scores = rewards``: the tail is a model of
``r`` alone. A prompt whose top rewards tie (a quarter of the tail at the threshold, as with bf16
reward models) cannot be fitted: it keeps its empirical law (``TailCurve.fitted``).
"""

from __future__ import annotations

import functools
import statistics
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import estimators, psis, tables
from .samples import Samples, check_samples

Array = jax.Array

#: Multipliers of the tail size ``M = jaxlimits.psis.tail_size(N)`` refitted for threshold sensitivity.
#: Higher thresholds (fewer exceedances) only: with (0.5, 1, 2) the larger tails' sub-asymptotic bias
#: (a normal's or a Beta's top fifth is not yet generalised Pareto) made intervals cover 83-87% for
#: normal rewards at N = 256 (benchmarks/calibrate_tail.py; benchmarks/README.md).
THRESHOLDS = (0.25, 0.5, 1.0)
#: Likelihood-ratio statistic above which the exponential tail (``xi = 0``) is rejected (chi^2_1, 95%).
EXP_TEST = 3.841458820694124
#: A bounded upper limit needs the shape's whole interval below this. Exponential-type laws (``xi = 0``
#: in the limit) look bounded at practical thresholds: their *penultimate* shape, the slope of the
#: reciprocal hazard at the threshold (von Mises), is about ``u R(u) - 1`` for normal rewards (``R`` Mills'
#: ratio): -0.40 for a top fifth, -0.26 for a top tenth, -0.19 for a top twentieth. A fitted shape above
#: -0.5 can be that, and extrapolating it as a finite end missed the truth for 27 of 40 such normal points
#: (N = 256; benchmarks/README.md), so there the upper limits also cover the exponential tail.
XI_PENULTIMATE = -0.5
#: Nodes of each of the two Gauss-Legendre panels over the tail.
QUAD_NODES = 64
#: The quadrature's range: where the log-integrand is within this many nats of its maximum.
QUAD_DEPTH = 40.0
#: Fewest valid draws per prompt for a tail fit (``jaxlimits.psis.MIN_TAIL`` exceedances at ``M = N/5``).
MIN_DRAWS = 5 * psis.MIN_TAIL
#: A pooled model point is *carried* by a few prompts when its largest ``SHARE_MAX`` of the prompts (at
#: least one) hold more than this share of the pooled KL (and more than twice their head count's share).
#: Near a prompt's fitted critical beta its exponential tail's KL grows without bound, so the worst-fitted
#: prompt alone can make the pooled KL of 1 or 10 nats: demo data (``jaxlimits.datasets.demo()``), the
#: model's pooled KL 10 at beta 1.52 with one prompt of 200 carrying 95% of it, while the truth is at
#: beta 0.618 with the top 10 prompts carrying 19%. Such a point is flagged ``FEW``.
CARRIED_SHARE = 0.5

_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUAD_NODES)


class TailFit(NamedTuple):
    """The fitted tail of each prompt at each threshold; fields ``[..., thresholds]``.

    Attributes:
      threshold: ``u``, the ``(M+1)``-th largest reward.
      size: ``M``, the number of exceedances (the tail has mass ``M / N``).
      xi, sigma: the generalised Pareto shape and scale (``xi = 0`` where the exponential tail
        was kept; NaN where no fit was possible: a flat tail of tied rewards).
    """

    threshold: Array
    size: Array
    xi: Array
    sigma: Array


def carried_share(prompt_kl, axis: int = 0):
    """``(share, carried)``: the share of the pooled KL held by the largest ``k = max(1, SHARE_MAX P)`` of
    the ``P`` prompts along ``axis``, and whether it exceeds ``max(CARRIED_SHARE, 2 k / P)``
    (:data:`CARRIED_SHARE`). NaN (not carried) where a prompt's KL is not finite or all are 0."""
    v = jnp.moveaxis(jnp.asarray(prompt_kl), axis, 0)
    p = v.shape[0]
    k = max(1, int(estimators.SHARE_MAX * p))
    v = jnp.where(jnp.isfinite(v), jnp.maximum(v, 0), jnp.nan)
    top = jnp.sum(-jnp.sort(-v, axis=0)[:k], 0)  # NaN sorts last: a NaN lane stays NaN through the total
    total = jnp.sum(v, 0)
    share = jnp.where(total > 0, top / jnp.where(total > 0, total, 1), jnp.nan)
    return share, share > max(CARRIED_SHARE, 2 * k / p)


def _xi_safe(xi):
    return jnp.where(xi == 0, 1.0, xi)


def gpd_quantile_y(xi, sigma, log_surv):
    """``y`` with ``log P(Y > y) = log_surv`` under ``GPD(xi, sigma)`` (``xi = 0``: exponential)."""
    return jnp.where(xi == 0, -sigma * log_surv, sigma * jnp.expm1(-xi * log_surv) / _xi_safe(xi))


@jax.jit
def tail_mgf(xi, sigma, lam):
    r"""``log E[exp(lam Y)]`` and the tilted mean ``E[Y exp(lam Y)] / E[exp(lam Y)]``, ``Y ~ GPD(xi, sigma)``.

    Shapes broadcast. ``xi > 0``, or ``xi = 0`` with ``lam sigma >= 1``: the expectation is
    infinite (``+inf``, tilted mean ``+inf``). ``xi = 0`` otherwise: the closed form
    ``-log(1 - lam sigma)``, ``sigma / (1 - lam sigma)``. ``xi < 0``: Gauss-Legendre in
    ``s = log P(Y > y)`` on the range where ``h(s) = s + lam y(s)`` is within
    :data:`QUAD_DEPTH` of its maximum (mode ``s* = log(lam sigma) / xi`` when ``lam sigma > 1``,
    else ``0``; with ``alpha = 1/|xi|`` and ``q = depth/alpha``, ``h(s*) - h(s) >= depth`` below
    ``s* - alpha (q + sqrt(q^2 + 8 q)) / 2`` and above ``s* + sqrt(2 depth alpha)``), in two
    panels split ``8 sqrt(alpha) + 8`` below the mode. Accuracy (float64, against the
    incomplete-gamma closed form in mpmath): below ``1e-8`` relative for ``-3 <= xi <= -1e-3``
    and ``lam sigma`` up to ``1e5`` (``1e-10`` for ``xi >= -1``).
    """
    xi, sigma, lam = jnp.broadcast_arrays(*[jnp.asarray(v) for v in (xi, sigma, lam)])
    dtype = jnp.result_type(xi.dtype, sigma.dtype, lam.dtype)
    a = lam * sigma
    # exponential tail
    exp_ok = (xi == 0) & (a < 1)
    a_e = jnp.where(exp_ok, a, 0)
    log_e = -jnp.log1p(-a_e)
    mean_e = sigma / (1 - a_e)
    # finite end: quadrature
    neg = xi < 0
    xs = jnp.where(neg, xi, -1.0)
    alpha = -1 / xs
    a_q = jnp.where(neg, a, 1.0)
    s_c = jnp.where(a_q > 1, jnp.log(jnp.where(a_q > 1, a_q, 2.0)) / xs, 0.0)
    q = QUAD_DEPTH / alpha
    s_lo = s_c - alpha * (q + jnp.sqrt(q * q + 8 * q)) / 2
    s_hi = jnp.where(a_q > 1, jnp.minimum(0.0, s_c + jnp.sqrt(2 * QUAD_DEPTH * alpha)), 0.0)
    # two panels: the mode's neighbourhood and the slowly decaying far tail (long when |xi| >= 1)
    s_m = jnp.clip(s_c - (8 * jnp.sqrt(alpha) + 8), s_lo, s_hi)
    nodes, w = jnp.asarray(_GL_X, dtype), jnp.log(jnp.asarray(_GL_W, dtype))
    ends = [(s_m, s_hi), (s_lo, s_m)]
    s = jnp.concatenate([a_[..., None] + (b_ - a_)[..., None] / 2 * (nodes + 1) for a_, b_ in ends], axis=-1)
    log_w = jnp.concatenate([w + jnp.log((b_ - a_) / 2)[..., None] for a_, b_ in ends], axis=-1)
    z = jnp.expm1(-xs[..., None] * s) / xs[..., None]  # y / sigma
    h = s + a_q[..., None] * z + log_w
    log_q = jax.nn.logsumexp(h, axis=-1)
    mean_q = jnp.where(neg, sigma, 1.0) * jnp.sum(jax.nn.softmax(h, axis=-1) * z, axis=-1)
    inf = jnp.asarray(jnp.inf, dtype)
    log_mgf = jnp.where(neg, log_q, jnp.where(exp_ok, log_e, inf))
    mean = jnp.where(neg, mean_q, jnp.where(exp_ok, mean_e, inf))
    nan = jnp.isnan(xi) | jnp.isnan(sigma)
    return jnp.where(nan, jnp.nan, log_mgf).astype(dtype), jnp.where(nan, jnp.nan, mean).astype(dtype)


class _Fit(NamedTuple):
    xi: Array  # the selected model: 0 where the exponential tail is kept
    sigma: Array
    sigma_exp: Array  # the exponential tail's scale (mean exceedance)
    xi_gpd: Array  # the unrestricted generalised Pareto fit
    sigma_gpd: Array


def _fit(exceed, m) -> _Fit:
    """The tail fits of descending exceedances ``[..., K]`` (the first ``m`` used).

    The unrestricted Zhang-Stephens fit, the exponential fit (scale: the mean exceedance) and the
    selected one: the exponential unless the likelihood-ratio test rejects it (:data:`EXP_TEST`).
    """
    dtype = exceed.dtype
    m = jnp.asarray(m, dtype)
    valid = jnp.arange(exceed.shape[-1]) < m[..., None]
    x = jnp.where(valid, exceed, 0)
    xi, sigma = psis.gpd_fit(exceed, m, prior_weight=0.0)
    sig_e = jnp.sum(x, axis=-1) / m
    ll_exp = -m * jnp.log(sig_e) - m
    ratio = jnp.where(valid, xi[..., None] * x / jnp.where(jnp.isfinite(sigma), sigma, 1.0)[..., None], 0)
    ll_gpd = -m * jnp.log(sigma) - (1 + 1 / _xi_safe(xi)) * jnp.sum(jnp.log1p(ratio), axis=-1)
    keep_exp = ~(2 * (ll_gpd - ll_exp) > EXP_TEST)
    ok = jnp.isfinite(xi) & jnp.isfinite(sigma) & (sigma > 0)
    nan = lambda v: jnp.where(ok, v, jnp.nan).astype(dtype)  # noqa: E731
    return _Fit(nan(jnp.where(keep_exp, 0.0, xi)), nan(jnp.where(keep_exp, sig_e, sigma)), nan(sig_e), nan(xi),
                nan(sigma))


def _body(sorted_r, n, m, lam, weights=None):
    """Per prompt, threshold, beta: body log-sum ``A0``, tilted body mean ``A1`` of ``x = r - u``, base sum.

    ``sorted_r [P, N]`` descending (padding ``-inf`` at the end), ``n [P]``, ``m [P, T]``,
    ``lam [B]``; optional ``weights [P, N]`` (a bootstrap's multiplicities of the sorted draws).
    Returns ``u [P, T]`` and ``A0, A1 [P, T, B]``, ``S0 [P, T]`` (``sum_body w x / N``).
    """
    rank = jnp.arange(sorted_r.shape[1])
    u = jnp.take_along_axis(sorted_r, m.astype(jnp.int32), axis=1)  # [P, T]
    body = (rank[None, None, :] >= m[..., None]) & (rank[None, None, :] < n[:, None, None])  # [P, T, N]
    if weights is not None:
        body = body & (weights[:, None, :] > 0)
    log_w = 0.0 if weights is None else jnp.log(jnp.where(weights > 0, weights, 1))[:, None, None, :]
    x = jnp.where(body, sorted_r[:, None, :] - u[..., None], 0)  # <= 0 in the body
    logits = jnp.where(body[..., None, :], lam[:, None] * x[..., None, :] + log_w, -jnp.inf)  # [P, T, B, N]
    a0 = jax.nn.logsumexp(logits, axis=-1) - jnp.log(n)[:, None, None]
    a1 = jnp.sum(jnp.where(body[..., None, :], jax.nn.softmax(logits, axis=-1) * x[..., None, :], 0), axis=-1)
    wx = x if weights is None else x * weights[:, None, :]
    s0 = jnp.sum(wx, axis=-1) / n[:, None]
    return u, a0, a1, s0


#: Body draws per (prompt, threshold) nearest the threshold whose bootstrap terms :func:`_body_replicates`
#: sums in the log domain; the rest are contracted with the weights. Only a replicate that drops all of
#: them (probability ``e^-16`` per prompt and threshold) can need the exact path.
_HEAD = 16


class _BodyTiles(NamedTuple):
    """The replicate-independent part of the bootstrap's body sums (:func:`_body_tiles`)."""

    x: Array  # [P, T, N] x = r - u in the body, 0 elsewhere
    valid: Array  # [P, N] the prompt's valid draws
    head: Array  # [P, T, H] ranks of the first H body draws (clipped to N - 1)
    head_in: Array  # [P, T, H] which of them are in the body
    shift: Array  # [P, T, B] lam x of the first draw after the head (the body's last draw if none)
    e0: Array  # [P, T, B, N] exp(lam x - shift) on the body past the head, 0 elsewhere


def _body_tiles(sorted_r, n, m, lam) -> _BodyTiles:
    """The exponentials of :func:`_body` computed once for every replicate (arguments as there).

    Past the head (the :data:`_HEAD` body draws nearest the threshold) the terms are shifted by the
    largest of them, so ``e0 <= 1`` (``x <= 0`` in the body: no overflow) and a term that underflows
    is below ``tiny`` times the largest term of any head draw a replicate keeps.
    """
    rank = jnp.arange(sorted_r.shape[1])
    valid = rank[None, :] < n[:, None]
    u = jnp.take_along_axis(sorted_r, m.astype(jnp.int32), axis=1)  # [P, T]
    body = (rank[None, None, :] >= m[..., None]) & valid[:, None, :]  # [P, T, N]
    x = jnp.where(body, sorted_r[:, None, :] - u[..., None], 0)
    head = m.astype(jnp.int32)[..., None] + jnp.arange(_HEAD)  # [P, T, H]
    head_in = head < n[:, None, None]
    head = jnp.minimum(head, sorted_r.shape[1] - 1)
    first = jnp.minimum(m + _HEAD, n[:, None] - 1).astype(jnp.int32)  # [P, T]
    shift = lam * jnp.take_along_axis(x, first[..., None], axis=-1)  # [P, T, B]
    rest = body & (rank[None, None, :] >= m[..., None] + _HEAD)
    arg = jnp.where(rest[..., None, :], lam[:, None] * x[..., None, :] - shift[..., None], -jnp.inf)
    return _BodyTiles(x, valid, head, head_in, shift, jnp.exp(arg))


def _body_replicates(tiles: _BodyTiles, n, lam, weights):
    """:func:`_body`'s ``A0, A1 [R, P, T, B]``, ``S0 [R, P, T]`` for weights ``[R, P, N]``, and ``bad [R, P, T, B]``.

    Per replicate ``sum_i w_i e^{lam x_i}`` and ``sum_i w_i e^{lam x_i} x_i``: over the head, a
    log-sum-exp of ``lam x_i + log w_i``; past it, contractions of the weights with the tiles,
    scaled by ``e^{shift - max}``. Equal to :func:`_body` to rounding except where ``bad``: a
    replicate that keeps no head draw and whose kept rest terms underflow (their sum below
    ``tiny / eps`` times the replicate's total weight); recompute those exactly.
    """
    dtype = tiles.e0.dtype
    dot = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)  # no TF32 on GPUs
    r0 = dot("rpn,ptbn->rptb", weights, tiles.e0)
    r1 = dot("rptn,ptbn->rptb", weights[:, :, None, :] * tiles.x, tiles.e0)
    s0 = dot("rpn,ptn->rpt", weights, tiles.x) / n[:, None]
    p_idx = jnp.arange(weights.shape[1])[:, None, None]
    w_h = weights[:, p_idx, tiles.head]  # [R, P, T, H]
    kept = tiles.head_in & (w_h > 0)
    x_h = jnp.take_along_axis(tiles.x, tiles.head, axis=-1)  # [P, T, H]
    logits = jnp.where(kept[..., None, :], lam[:, None] * x_h[..., None, :]
                       + jnp.log(jnp.where(kept, w_h, 1))[..., None, :], -jnp.inf)  # [R, P, T, B, H]
    top = jnp.max(logits, axis=-1)
    empty = jnp.isneginf(top)
    top = jnp.where(empty, tiles.shift, top)  # >= shift: the rest's terms are at most e^shift
    e = jnp.exp(logits - top[..., None])
    scale = jnp.exp(tiles.shift - top)
    tot0 = jnp.sum(e, axis=-1) + r0 * scale
    tot1 = jnp.sum(e * x_h[..., None, :], axis=-1) + r1 * scale
    a0 = top + jnp.log(tot0) - jnp.log(n)[:, None, None]
    a1 = tot1 / tot0
    w_sum = jnp.sum(jnp.where(tiles.valid, weights, 0), axis=-1)[:, :, None, None]  # [R, P, 1, 1]
    fin = jnp.finfo(dtype)
    bad = empty & (r0 * fin.eps <= w_sum * fin.tiny)  # also no kept draw at all: A0 = -inf, A1 = 0
    return a0, a1, s0, bad


def _body_resampled(sorted_r, n, m, lam, tiles: _BodyTiles, weights):
    """:func:`_body`'s ``A0, A1 [R, P, T, B]`` and ``S0 [R, P, T]`` for each of the weights ``[R, P, N]``.

    :func:`_body_replicates`, with the lanes it cannot do exactly recomputed by :func:`_body` (a
    branch taken only when some lane needs it: not under ``vmap``).
    """
    a0, a1, s0, bad = _body_replicates(tiles, n, lam, weights)

    def exact():  # one replicate and beta at a time: [P, T, N] (a tile's memory is taken)
        one = lambda w, lam_b: _body(sorted_r, n, m, lam_b[None], w)[1:3]  # noqa: E731
        e0, e1 = (jnp.moveaxis(v[..., 0], 1, -1) for v in jax.lax.map(
            lambda w: jax.lax.map(lambda lam_b: one(w, lam_b), lam), weights))
        return jnp.where(bad, e0, a0), jnp.where(bad, e1, a1)

    a0, a1 = jax.lax.cond(jnp.any(bad), exact, lambda: (a0, a1))
    return a0, a1, s0


def _exp_mgf(sigma, lam):
    """:func:`tail_mgf` of the exponential tail (``xi = 0``) alone: its closed form, no quadrature."""
    a = lam * sigma
    ok, nan = a < 1, jnp.isnan(a)
    a = jnp.where(ok, a, 0)
    inf = jnp.asarray(jnp.inf, a.dtype)
    return (jnp.where(nan, jnp.nan, jnp.where(ok, -jnp.log1p(-a), inf)),
            jnp.where(nan, jnp.nan, jnp.where(ok, sigma / (1 - a), inf)))


def _curve(a0, a1, s0, frac, xi, sigma, lam, mgf=None):
    """Gain, KL and ``log Z_u`` of body + tail; all broadcast to ``[..., B]`` (``frac = M / N``); ``mgf``:
    the tail's :func:`tail_mgf` if already computed."""
    log_mgf, t1 = tail_mgf(xi[..., None], sigma[..., None], lam) if mgf is None else mgf
    exists = jnp.isfinite(log_mgf)
    lt = jnp.log(frac)[..., None] + jnp.where(exists, log_mgf, 0)
    log_z = jnp.logaddexp(a0, lt)
    p_tail = jnp.exp(lt - log_z)
    tilted = (1 - p_tail) * a1 + p_tail * jnp.where(exists, t1, 0)
    mean_y = jnp.where(xi < 1, sigma / (1 - jnp.where(xi < 1, xi, 0)), jnp.inf)
    base = s0 + frac * mean_y
    gain = tilted - base[..., None]
    kl = lam * tilted - log_z
    inf = jnp.asarray(jnp.inf, gain.dtype)
    nan = jnp.isnan(log_mgf)
    gain = jnp.where(nan, jnp.nan, jnp.where(exists, gain, inf))
    kl = jnp.where(nan, jnp.nan, jnp.where(exists, jnp.maximum(kl, 0), inf))
    return gain, kl, jnp.where(exists, log_z, inf)


#: The profile grid: ``b x_max`` for ``b = -xi / sigma`` (``1/b`` is the upper end above the threshold
#: for ``xi < 0``; ``b <= 0`` is ``xi >= 0``), dense near 1 (an end just above the sample max).
_PROFILE_C = 1 - np.geomspace(1e-7, 12.0, 96)


def _profile_set(exceed, m, level):
    """The profile-likelihood confidence set of the tail (Coles 2001, §2.6.6, §4.3.4), as tails ``[..., J]``.

    Zhang and Stephens' parametrisation: for ``b = -xi/sigma`` the likelihood is maximised at
    ``xi(b) = mean log1p(-b x)``, ``sigma = -xi/b``, with the profile ``M (log(-b/xi) - xi - 1)``.
    ``b`` runs over :data:`_PROFILE_C` ``/ x_max``; shapes below -1 are left out (the likelihood
    is unbounded there, Smith 1985). Returns ``(xi, sigma, in_set)``, ``in_set`` where the
    deviance from the best grid point is within the ``level`` quantile of chi^2(1).
    """
    from scipy.stats import chi2

    dtype = exceed.dtype
    m = jnp.asarray(m, dtype)
    valid = jnp.arange(exceed.shape[-1]) < m[..., None]
    x = jnp.where(valid, exceed, 0)
    x_max = jnp.where(exceed[..., 0] > 0, exceed[..., 0], 1.0)
    b = jnp.asarray(_PROFILE_C, dtype) / x_max[..., None]  # [..., J]
    terms = jnp.log1p(-b[..., :, None] * x[..., None, :])
    xi = jnp.sum(jnp.where(valid[..., None, :], terms, 0), -1) / m[..., None]
    ll = m[..., None] * (jnp.log(-b / xi) - xi - 1)
    ok = (xi >= -1) & jnp.isfinite(ll)
    ll = jnp.where(ok, ll, -jnp.inf)
    in_set = ok & (2 * (jnp.max(ll, -1, keepdims=True) - ll) <= float(chi2.ppf(level, 1)))
    return xi, -xi / b, in_set


def _draw_exceedances(key, xi, sigma, k_slots):
    """``[R, ..., K]`` descending GPD draws (``xi = 0``: exponential); slots past ``M`` are ignored later."""
    u = jax.random.uniform(key, xi.shape + (k_slots,), xi.dtype, minval=jnp.finfo(xi.dtype).tiny)
    y = gpd_quantile_y(xi[..., None], sigma[..., None], jnp.log(u))
    return -jnp.sort(-y, axis=-1)


@functools.partial(jax.jit, static_argnames=("replicates", "k_slots", "level", "members"))
def _tail_core(sorted_r, n, m, lam, key, chi_hi, replicates: int, k_slots: int, level: float, members: bool = False):
    """Fits, point curves and bootstrap curves; see :func:`tail_curve`. ``members``: also the profile set's
    curves ``[J, P, T, B]`` (gain, KL), its shapes and membership ``[J, P, T]`` and the exponential tail's
    curves at the data's exceedance mean ``[P, T, B]`` (the inversion's members, :func:`_member_bands`)."""
    dtype = sorted_r.dtype
    top = jnp.where(jnp.isfinite(sorted_r[:, :k_slots + 1]), sorted_r[:, :k_slots + 1], -jnp.inf)
    u_top = jnp.take_along_axis(top, m.astype(jnp.int32), axis=1)  # [P, T]
    slot = jnp.arange(k_slots)
    valid = slot < m[..., None]
    exceed = jnp.where(valid, top[:, None, :k_slots] - u_top[..., None], 0)  # [P, T, K] descending
    fit = _fit(exceed, m)
    failed = jnp.isnan(fit.xi)  # [P, T]: tied top rewards, no fit: the empirical law (no tail) instead
    frac = m.astype(dtype) / n[:, None]
    zero = jnp.zeros(m.shape[:1] + (1,), dtype)

    def curves(rep=None):
        """``curve(xi, sigma)``: body + tail, the empirical law where failed; ``rep``: a replicate's resampled
        body sums ``((A0, A1, S0), (E0, E1, ES))`` (at the thresholds, then of the whole sample)."""
        if rep is None:
            u, a0, a1, s0 = _body(sorted_r, n, m, lam)
            e0, e1, es = _body(sorted_r, n, zero, lam)[1:]
        else:
            u, ((a0, a1, s0), (e0, e1, es)) = None, rep
        emp = _curve(e0, e1, es, zero, zero - 1, zero + 1, lam)[:2]  # frac 0: no tail

        def curve(x, s, mgf=None):  # x, s: [P, T] or [P, T, J] (a set of tails per prompt and threshold)
            ex = lambda v: v.reshape(v.shape[:2] + (1,) * (x.ndim - 2) + v.shape[2:])  # noqa: E731
            g, k = _curve(ex(a0), ex(a1), ex(s0), ex(frac), x, s, lam, mgf)[:2]
            return tuple(jnp.where(ex(failed)[..., None], ex(e), v) for v, e in zip((g, k), emp))

        return u, curve

    def pooled(curve, g, k, x, s_e):
        """Per prompt ``[P, T, B]`` -> pooled ``[T, B]``: prompts with ``xi > 0`` take their exponential tail."""
        ge, ke = curve(jnp.zeros_like(s_e), s_e)
        heavy = (x > 0)[..., None]
        share = jnp.mean(heavy.astype(dtype), axis=0)
        mean = lambda v, e: jnp.where(share > estimators.SHARE_MAX, jnp.inf, jnp.mean(jnp.where(heavy, e, v), 0))  # noqa: E731
        return mean(g, ge), mean(k, ke)

    u, curve = curves()
    gain, kl = curve(fit.xi, fit.sigma)  # the selected model: the point estimates
    gain_gpd, kl_gpd = curve(fit.xi_gpd, fit.sigma_gpd)  # the unrestricted fit: part of the envelope
    pool = pooled(curve, gain, kl, fit.xi, fit.sigma_exp) + pooled(curve, gain_gpd, kl_gpd, fit.xi_gpd, fit.sigma_exp)
    # the profile-likelihood set of the tail: its extreme curves (NaN outside the set)
    xi_j, sig_j, in_set = _profile_set(exceed, m, level)

    def extremes(acc, tail_j):
        """One tail of the set per prompt and threshold at a time: ``[P, T, B]``, never ``[P, T, J, B, nodes]``."""
        x, s, ins = tail_j  # [P, T]
        g, k = curve(x, s)  # [P, T, B]
        ok = (ins & ~failed)[..., None]
        lo_g, hi_g, lo_k, hi_k = acc
        return (jnp.minimum(lo_g, jnp.where(ok, g, jnp.inf)), jnp.maximum(hi_g, jnp.where(ok, g, -jnp.inf)),
                jnp.minimum(lo_k, jnp.where(ok, k, jnp.inf)), jnp.maximum(hi_k, jnp.where(ok, k, -jnp.inf))), None

    inf = jnp.full(gain.shape, jnp.inf, dtype)
    tails_j = tuple(jnp.moveaxis(v, -1, 0) for v in (xi_j, sig_j, in_set))  # [J, P, T]
    prof = jax.lax.scan(extremes, (inf, -inf, inf, -inf), tails_j)[0]
    prof = tuple(jnp.where(failed[..., None], v, w) for v, w in zip((gain, gain, kl, kl), prof))
    prof_xi = (jnp.min(jnp.where(in_set, xi_j, jnp.inf), -1), jnp.max(jnp.where(in_set, xi_j, -jnp.inf), -1))
    end_j = jnp.where(xi_j < 0, sig_j / jnp.where(xi_j < 0, -xi_j, 1.0), jnp.inf)
    prof_end = (jnp.min(jnp.where(in_set, end_j, jnp.inf), -1), jnp.max(jnp.where(in_set, end_j, -jnp.inf), -1))

    def one(k, rep):
        """One replicate: the tail drawn from the unrestricted fit and refitted unrestricted (model
        uncertainty included), the body resampled (``rep``: its sums under the Poisson weights drawn
        from ``k``, :func:`bodies`; the body's sampling error decides the base mean). Two versions of
        its curve: as fitted (``+inf`` where its tilt does not exist: the upper limits) and with
        ``xi > 0`` replaced by the exponential tail, which lowers every value (the lower limits:
        conservative)."""
        k_tail = jax.random.split(k)[0]
        y = _draw_exceedances(k_tail, jnp.nan_to_num(fit.xi_gpd), jnp.nan_to_num(fit.sigma_gpd, nan=1.0), k_slots)
        f = _fit(jnp.where(valid, y, 0), m)
        xb, sb, eb = (jnp.where(failed, jnp.nan, v) for v in (f.xi_gpd, f.sigma_gpd, f.sigma_exp))
        _, curve_b = curves(rep)
        mgf = tail_mgf(xb[..., None], sb[..., None], lam)  # one quadrature: the lower version differs where xi > 0
        g, k_ = curve_b(xb, sb, mgf)
        heavy = xb > 0
        mgf_l = tuple(jnp.where(heavy[..., None], e, v) for e, v in zip(_exp_mgf(eb[..., None], lam), mgf))
        gl, kl_ = curve_b(jnp.where(heavy, 0.0, xb), jnp.where(heavy, eb, sb), mgf_l)
        gb, kb = curve_b(fit.xi, fit.sigma, mgf_fit)  # the body's sampling error alone, the tail as fitted
        body = (gb - gain, kb - kl)
        return (g, k_, gl, kl_, xb, sb, jnp.mean(g, 0), jnp.mean(k_, 0), jnp.mean(gl, 0), jnp.mean(kl_, 0),
                *body, *(jnp.mean(v, 0) for v in body))

    # the bodies' exponentials once; each chunk of replicates contracts them with its Poisson weights
    mgf_fit = tail_mgf(fit.xi[..., None], fit.sigma[..., None], lam)  # the same in every replicate
    tiles = [(mm, _body_tiles(sorted_r, n, mm, lam)) for mm in (m, zero)]

    def bodies(w):
        """A chunk's resampled body sums ``((A0, A1, S0), (E0, E1, ES))`` for weights ``[C, P, N]``."""
        return [_body_resampled(sorted_r, n, mm, lam, t, w) for mm, t in tiles]

    def chunk(ks):
        """Replicates of keys ``ks [C, 2]``: the Poisson weights as :func:`one`'s key splits draw them."""
        w = jax.vmap(lambda k: jax.random.poisson(jax.random.split(k)[1], 1.0, sorted_r.shape))(ks).astype(dtype)
        return jax.lax.map(lambda a: one(*a), (ks, bodies(w)))

    # chunks of at most N / (4 _HEAD) replicates (their head terms [C, P, T, B, H] a quarter of a tile): a
    # divisor of the replicates if one is at least half that, else the last chunk padded with copies of
    # the last key, dropped after
    keys = jax.random.split(key, replicates)
    most = min(replicates, max(1, sorted_r.shape[1] // (4 * _HEAD)))
    size = max([c for c in range(-(-most // 2), most + 1) if replicates % c == 0], default=None)
    n_chunks = -(-replicates // most) if size is None else replicates // size
    size = -(-replicates // n_chunks) if size is None else size
    keys = jnp.concatenate([keys, jnp.broadcast_to(keys[-1:], (n_chunks * size - replicates,) + keys.shape[1:])])
    reps = jax.lax.map(chunk, keys.reshape((n_chunks, size) + keys.shape[1:]))
    reps = jax.tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:])[:replicates], reps)
    # the exponential tail at its scale's upper limit: the unbounded alternative to a mildly negative shape
    g_exp, k_exp = curve(jnp.zeros_like(fit.sigma_exp), chi_hi * fit.sigma_exp)
    out = ((TailFit(u, m, fit.xi, fit.sigma), fit), (gain, kl, gain_gpd, kl_gpd, g_exp, k_exp), pool, reps,
           (prof, prof_xi, prof_end))
    if not members:
        return out
    g_j, k_j = jax.lax.map(lambda t: curve(t[0], t[1]), tails_j[:2])  # [J, P, T, B]
    g_e, k_e = curve(jnp.zeros_like(fit.sigma_exp), fit.sigma_exp)
    return out + ((g_j, k_j, tails_j[0], tails_j[2] & ~failed[None], g_e, k_e),)


#: TailCurve fields over prompts (``[prompts]``), not betas.
_PER_PROMPT = ("xi", "xi_lo", "xi_hi", "upper_end", "upper_end_lo", "upper_end_hi", "critical_beta",
               "critical_beta_lo", "critical_beta_hi", "fitted", "kl_ceiling")


class TailCurve(NamedTuple):
    """The tail model's tilt per prompt and pooled, with its uncertainty.

    Fields ``[betas]`` (pooled: means over prompts at each shared beta). A prompt whose fit says
    ``xi > 0`` has no tilt; when at most ``jaxlimits.estimators.SHARE_MAX`` of the prompts say so
    (what a 5% test gives when all tails are exponential-type), they enter the mean with their
    exponential tail; beyond that share the pooled point has no tilt (``NO_TILT``, NaN). Where a
    prompt's exponential tail has no tilt (beta below its critical beta), neither has the pool.
      betas: the KL penalties (as given).
      gain, kl: the model's gain (tilted minus base mean reward) and ``KL(pi_beta || pi0)`` at the
        main threshold (``M = jaxlimits.psis.tail_size(N)``); NaN where the tilt does not exist.
      gain_lo, gain_hi, kl_lo, kl_hi: the combined interval (the envelope over the thresholds of
        the parametric bootstrap's percentile intervals); ``+inf`` upper limits where too many
        replicates have no tilt. Where the shape's upper limit ``xi_hi`` is not below
        :data:`XI_PENULTIMATE` (an exponential-type tail could look like that), the upper limits are
        at least those of the exponential tail at its scale's upper limit (``inf`` below its critical
        beta); pooled, where any prompt's are, at least the mean of the prompts' upper limits.
      gain_se, kl_se: ``(hi - lo) / (2 z)``, the interval's width as a normal SE (``inf`` where it
        is open).
      extrapolated: the model's KL beyond ``KL_CEILING_FRACTION`` of the sample ceiling (the
        empirical estimate's trust region, ``jaxlimits.estimators``; NaN KL counts as beyond):
        the point comes from the model, not from what the samples show.
      reasons: ``int32`` bitmask (``jaxlimits.estimators.reason_names``): ``NO_TILT`` where the
        fitted tail says the tilt does not exist; ``FEW`` at extrapolated points of prompts
        whose tail could not be fitted (``fitted``) and, pooled, at any point carried by a few
        prompts (``carried_share``).
      carried_share: the share of the pooled KL held by the largest ``SHARE_MAX`` of the prompts
        (:func:`carried_share`): above :data:`CARRIED_SHARE` the pooled point rests on a few prompts'
        tails near their fitted critical beta, the model's least certain part.
    Fields ``[prompts, betas]`` with the prefix ``prompt_``: the same per prompt.
    Fields ``[prompts]``:
      xi, xi_lo, xi_hi: the selected shape (0: the exponential tail was kept) and the interval
        (the envelope of the unrestricted fits and their bootstrap).
      upper_end, upper_end_lo, upper_end_hi: the fitted upper end of the reward law,
        ``u + sigma / |xi|`` (``inf`` for ``xi >= 0``), and its interval (upper limit ``inf`` unless
        ``xi_hi < XI_PENULTIMATE``).
      critical_beta, critical_beta_lo, critical_beta_hi: the smallest beta at which the tilt
        exists under the selected model: 0 for ``xi < 0``, ``sigma`` for the exponential tail
        (interval: exact given an exponential tail, ``2 M sigma_hat / sigma ~ chi^2(2M)``), ``inf``
        for ``xi > 0``; the envelope over the thresholds.
      fitted: False where the top rewards tie so that no tail can be fitted (the quarter of the
        tail nearest the threshold has no exceedance); such a prompt keeps its empirical law
        (no reward above its sample max: its KL saturates at ``kl_ceiling``), flagged ``FEW``
        where extrapolated (pooled: when more than ``SHARE_MAX`` of the prompts are).
      kl_ceiling: ``log(N / m)`` for ``m`` draws tied at the maximum, the most the samples
        themselves can show.
    Scalars: level, replicates. ``fit``: the :class:`TailFit` ``[prompts, thresholds]``.
    """

    betas: Array
    gain: Array
    kl: Array
    gain_lo: Array
    gain_hi: Array
    kl_lo: Array
    kl_hi: Array
    gain_se: Array
    kl_se: Array
    extrapolated: Array
    reasons: Array
    carried_share: Array
    prompt_gain: Array
    prompt_kl: Array
    prompt_gain_lo: Array
    prompt_gain_hi: Array
    prompt_kl_lo: Array
    prompt_kl_hi: Array
    prompt_extrapolated: Array
    prompt_reasons: Array
    xi: Array
    xi_lo: Array
    xi_hi: Array
    upper_end: Array
    upper_end_lo: Array
    upper_end_hi: Array
    critical_beta: Array
    critical_beta_lo: Array
    critical_beta_hi: Array
    fitted: Array
    kl_ceiling: Array
    level: float
    replicates: int
    fit: TailFit

    def _columns(self):  # the pooled table; per-prompt fields have their own axis (excluded even if P == B)
        return tables.columns(self, shape_of="betas", exclude=_PER_PROMPT)

    def _summary(self):
        ext = np.asarray(self.extrapolated)
        xi = np.asarray(self.xi, float)
        return tables.summary(self, shape_of="betas", headline=[
            f"GPD tail model, {np.asarray(self.prompt_gain).shape[0]} prompts", f"KL {tables.span(self.kl)} nats",
            f"{int(ext.sum())} of {ext.size} extrapolated", tables.flagged(self.reasons),
            f"xi {tables.span(xi)}", f"{self.level:.0%} intervals from {self.replicates} replicates"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def check_tail_samples(samples: Samples, where: str) -> np.ndarray:
    """Raises ValueError unless the tail model applies; returns the valid draws per prompt ``[P]``.

    It needs plain samples (no log-weights, counts or exact law), rewards only, and at least
    :data:`MIN_DRAWS` valid draws per prompt (the first prompt with fewer is named).
    """
    check_samples(samples, where)
    if samples.log_weights is not None or samples.counts is not None or samples.exact:
        raise ValueError(f"{where}: the tail model needs plain samples (no log-weights, counts or exact law); "
                         "expand counts into repeated rows")
    if samples.has_scores:
        raise ValueError(f"{where}: the tail model is a model of the rewards alone; samples with separate scores "
                         "are not supported (drop the scores to get the reward's frontier)")
    n = np.asarray(samples.valid()).sum(axis=1)
    few = np.flatnonzero(n < MIN_DRAWS)
    if few.size:
        p = int(few[0])
        raise ValueError(f"{where}: prompt {p} has {int(n[p])} valid samples; a tail fit needs at least {MIN_DRAWS} "
                         f"({psis.MIN_TAIL} exceedances at the smallest threshold)")
    return n


def _sorted_plain(samples: Samples, where: str):
    """Host arrays: rewards sorted descending with ``-inf`` padding, valid draws per prompt."""
    n = check_tail_samples(samples, where)
    valid = np.asarray(samples.valid())
    srt = -np.sort(-np.where(valid, np.asarray(samples.rewards), -np.inf), axis=1)
    return srt, n


def tail_sizes(n, thresholds=THRESHOLDS) -> np.ndarray:
    """``[P, T]`` exceedance counts: ``tail_size(n)`` times each multiplier, within ``[MIN_TAIL, n/2]``."""
    base = np.asarray(psis.tail_size(np.asarray(n)), float)
    m = np.round(base[:, None] * np.asarray(thresholds, float)[None, :])
    return np.clip(m, psis.MIN_TAIL, np.floor(np.asarray(n)[:, None] / 2)).astype(np.int64)


def _quantiles(x, level, axis):
    """Lower and upper percentile limits, conservative order statistics (``+inf`` kept, NaN ignored)."""
    x = jnp.moveaxis(x, axis, -1)  # sorted along the minor axis: contiguous rows (a strided sort is slow)
    lo = jnp.nanquantile(x, (1 - level) / 2, axis=-1, method="lower")
    hi = jnp.nanquantile(x, (1 + level) / 2, axis=-1, method="higher")
    return lo, hi


def tail_curve(samples: Samples, betas, *, level: float = 0.95, replicates: int = 200,
               thresholds=THRESHOLDS, key: Array | None = None, memory_budget: int | None = None) -> TailCurve:
    r"""The tail model's gain and KL at any betas, per prompt and pooled, with intervals.

    The function for every consumer of extrapolated points (``frontier(tail="gpd")``, inversions,
    ``compare``): one call gives the curve, its interval, ``extrapolated`` and ``reasons``.

    Args:
      samples: plain :class:`Samples` ``[P, N]`` (a mask for ragged prompts is fine), at least
        :data:`MIN_DRAWS` valid draws per prompt, rewards only.
      betas: ``[B]`` KL penalties, shared by all prompts.
      level: coverage of the intervals.
      replicates: parametric bootstrap replicates per threshold.
      thresholds: multipliers of ``M = jaxlimits.psis.tail_size(N)`` refitted for threshold
        sensitivity; the point estimate uses the one nearest 1.
      key: ``jax.random`` key (default ``PRNGKey(0)``).
      memory_budget: bytes of working memory (default ``jaxlimits._sweep.DEFAULT_MEMORY_BUDGET``):
        the betas are evaluated in blocks of :func:`beta_block` (the same replicates for every
        block, so the result does not depend on it); the profile-likelihood set's tails are
        evaluated one at a time.

    Returns:
      A :class:`TailCurve`.

    Raises:
      ValueError: log-weights, counts or scores; a prompt (named) with too few valid samples;
        betas that are not positive; a level outside (0, 1).

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> r = np.random.default_rng(0).uniform(size=(4, 256))
      >>> c = jl.tail_curve(jl.Samples(r), [1.0, 0.01], replicates=50)
      >>> bool(c.gain[1] < 0.5 + 1e-6)  # uniform rewards: the gain saturates at 1 - 1/2
      True
    """
    parts = [_assemble(b, *out, *ctx) for b, out, ctx in _blocks(samples, betas, level, replicates, thresholds, key,
                                                                   memory_budget, "tail_curve")]
    if len(parts) == 1:
        return parts[0]
    nb = sum(int(np.size(c.betas)) for c in parts)
    betas_of = lambda f: f not in _PER_PROMPT + ("level", "replicates", "fit")  # noqa: E731
    return parts[0]._replace(**{f: jnp.concatenate([getattr(c, f) for c in parts], axis=-1)[..., :nb]
                                for f in TailCurve._fields if betas_of(f)})


def _blocks(samples, betas, level, replicates, thresholds, key, memory_budget, where, members=False):
    """Checks the arguments, then yields, block of betas by block, ``(betas, core, context)``: the block's
    betas (the last block without its padding), :func:`_tail_core`'s outputs (``members``: with the
    profile set's curves) and :func:`_assemble`'s remaining arguments ``(chi, ceiling, main, level, replicates)``."""
    srt, n = _sorted_plain(samples, where)
    betas_np = np.asarray(betas, dtype=srt.dtype)
    if betas_np.ndim != 1 or betas_np.size == 0 or not np.all(np.isfinite(betas_np)) or np.any(betas_np <= 0):
        raise ValueError(f"{where}: betas must be a non-empty 1-d array of positive finite numbers, got {betas!r}")
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"{where}: level must be strictly between 0 and 1, got {level!r}")
    replicates = int(replicates)
    if replicates < 2:
        raise ValueError(f"{where}: replicates must be at least 2, got {replicates}")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or min(thresholds) <= 0:
        raise ValueError(f"{where}: thresholds must be positive multipliers of the tail size, got {thresholds!r}")
    m = tail_sizes(n, thresholds)
    main = int(np.argmin(np.abs(np.log(thresholds))))
    k_slots = int(m.max())
    key = jax.random.PRNGKey(0) if key is None else key
    dtype = jnp.asarray(samples.rewards).dtype
    lam = jnp.asarray(1.0 / betas_np, dtype)
    srt_j = jnp.asarray(np.where(np.isfinite(srt), srt, -np.inf), dtype)
    n_j = jnp.asarray(n, dtype)
    # the exponential tail's scale (the critical beta) has an exact interval: 2 M sigma_hat / sigma ~ chi^2(2 M)
    from scipy.stats import chi2

    chi = jnp.asarray(2 * m / chi2.ppf([[[(1 + level) / 2]], [[(1 - level) / 2]]], 2 * m), dtype)  # [2, P, T]
    ties = np.sum(srt == srt[:, :1], axis=1)  # draws tied at the maximum: the ceiling is log(N / ties)
    ceiling = jnp.asarray(np.log(n / ties), dtype)
    # with the profile set's members the block holds 4 more curves per tail of the set (as fitted, made exponential)
    copies = replicates + (2 * len(_PROFILE_C) if members else 0)
    most = beta_block(*srt.shape, len(thresholds), copies, jnp.dtype(dtype).itemsize, memory_budget)
    size = -(-betas_np.size // -(-betas_np.size // most))  # as few blocks as the budget allows, of even sizes
    # blocks of betas, the last padded with its last beta (one program); every block draws the same replicates
    pad = -betas_np.size % size
    lam = jnp.concatenate([lam, jnp.broadcast_to(lam[-1:], (pad,))])
    for start in range(0, betas_np.size, size):
        out = _tail_core(srt_j, n_j, jnp.asarray(m, dtype), lam[start:start + size], key, chi[1], replicates, k_slots,
                         level, members)
        yield betas_np[start:start + size], out, (chi, ceiling, main, level, replicates)


#: Bytes per element of a beta block's largest arrays (the body's ``[P, T, B, N]`` logits and softmax,
#: the quadrature's ``[P, T, B, nodes]`` terms, the replicates' ``[R, P, T, B]`` curves), in itemsizes:
#: measured about 1.3 (the peak resident set over the compiled programs' for 200 prompts x 512 draws,
#: 200 replicates, float32: 180 MB at 49 betas, 90 MB at 1), so 2 is a safe estimate.
_BLOCK_COPIES = 2


def beta_block(prompts: int, samples: int, thresholds: int, replicates: int, itemsize: int,
               memory_budget: int | None = None) -> int:
    """Betas per block of :func:`tail_curve` so that a block's working memory fits ``memory_budget``
    (bytes, default ``jaxlimits._sweep.DEFAULT_MEMORY_BUDGET``); at least 1 (then the memory is that
    of one beta, ``O(P T (N + nodes + R))``)."""
    from ._sweep import DEFAULT_MEMORY_BUDGET

    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    per_beta = _BLOCK_COPIES * itemsize * prompts * thresholds * (samples + 2 * QUAD_NODES + 2 * replicates)
    return max(1, budget // per_beta)


def _assemble(betas, fit, curves, pool, reps, prof, chi, ceiling, main, level, replicates, *_members) -> TailCurve:
    """The :class:`TailCurve` of :func:`_tail_core`'s outputs: percentile limits, envelopes (one compiled
    program; ``_members``, the profile set's curves that the inversions use, are not needed here)."""
    return _assembled(betas, fit, curves, pool, reps, prof, chi, ceiling, main, level)._replace(
        level=level, replicates=replicates)


@functools.partial(jax.jit, static_argnames=("main", "level"))
def _assembled(betas, fit, curves, pool, reps, prof, chi, ceiling, main, level) -> TailCurve:
    tfit, raw = fit
    gain, kl, gain_gpd, kl_gpd, g_exp, k_exp = curves  # [P, T, B]
    # [R, P, T, B] (as fitted, then xi > 0 made exponential), [R, P, T], then pooled [R, T, B], then the
    # body's deviations alone [R, P, T, B] and pooled [R, T, B]
    (g_rep, k_rep, gl_rep, kl_rep, xi_rep, sig_rep, pg_rep, pk_rep, pgl_rep, pkl_rep,
     gb_rep, kb_rep, pgb_rep, pkb_rep) = reps
    (pr_glo, pr_ghi, pr_klo, pr_khi), pr_xi, pr_end = prof  # profile-likelihood extremes [P, T, B], [P, T]
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)

    def env(lo_r, hi_r, los, his, axis):
        """Envelope over thresholds (``axis``) of the replicates' percentile limits and the extra limits."""
        lo = jnp.stack([_quantiles(lo_r, level, 0)[0], *los])
        hi = jnp.stack([_quantiles(hi_r, level, 0)[1], *his])
        return jnp.nanmin(jnp.nanmin(lo, 0), axis), jnp.nanmax(jnp.nanmax(hi, 0), axis)

    def body(dev):  # the body's percentile deviations (0 where there is no tilt to deviate from)
        return tuple(jnp.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0) for q in _quantiles(dev, level, 0))

    def point(v):  # finite values; NaN where the tilt does not exist
        return jnp.where(jnp.isfinite(v), v, jnp.nan)

    no_tilt_of = lambda v: jnp.isposinf(v)  # noqa: E731
    frac = estimators.KL_CEILING_FRACTION
    failed = jnp.isnan(tfit.xi[:, main])  # [P]
    # per prompt
    (gb_lo, gb_hi), (kb_lo, kb_hi) = body(gb_rep), body(kb_rep)
    g_lo, g_hi = env(gl_rep, g_rep, [gain, gain_gpd, pr_glo + gb_lo], [gain, gain_gpd, pr_ghi + gb_hi], -2)
    k_lo, k_hi = env(kl_rep, k_rep, [kl, kl_gpd, pr_klo + kb_lo], [kl, kl_gpd, pr_khi + kb_hi], -2)
    p_gain, p_kl = gain[:, main], kl[:, main]
    p_ext = ~(point(p_kl) <= frac * ceiling[:, None])
    p_reasons = (estimators.reason_bit(no_tilt_of(p_gain), estimators.NO_TILT)
                 | estimators.reason_bit(failed[:, None] & p_ext, estimators.FEW))
    # pooled: replicate r of every prompt together, then the same envelope
    pg_sel, pk_sel, pg_gpd, pk_gpd = pool  # [T, B]
    (qg_lo, qg_hi), (qk_lo, qk_hi) = body(pgb_rep), body(pkb_rep)
    mean_p = lambda v: jnp.mean(v, 0)  # noqa: E731  (the mean of the prompts' profile limits: conservative)
    pg_lo, pg_hi = env(pgl_rep, pg_rep, [pg_sel, pg_gpd, mean_p(pr_glo) + qg_lo],
                       [pg_sel, pg_gpd, mean_p(pr_ghi) + qg_hi], -2)
    pk_lo, pk_hi = env(pkl_rep, pk_rep, [pk_sel, pk_gpd, mean_p(pr_klo) + qk_lo],
                       [pk_sel, pk_gpd, mean_p(pr_khi) + qk_hi], -2)
    pool_gain, pool_kl = pg_sel[main], pk_sel[main]
    pool_ext = ~(point(pool_kl) <= frac * jnp.mean(ceiling))
    share, carried = carried_share(p_kl)  # [B]: the pooled point held up by a few prompts' tails
    pool_reasons = (estimators.reason_bit(no_tilt_of(pool_gain), estimators.NO_TILT)
                    | estimators.reason_bit(((jnp.mean(failed) > estimators.SHARE_MAX) & pool_ext) | carried,
                                            estimators.FEW))
    # shape, upper end, critical beta
    u = tfit.threshold  # [P, T]
    end_of = lambda x, s: jnp.where(x < 0, u + s / jnp.where(x < 0, -x, 1.0), jnp.inf)  # noqa: E731
    x_lo, x_hi = env(xi_rep, xi_rep, [tfit.xi, raw.xi_gpd, pr_xi[0]], [tfit.xi, raw.xi_gpd, pr_xi[1]], -1)
    # no bounded upper limit unless the shape is clearly below what an unbounded tail can imitate
    opened = ~(x_hi < XI_PENULTIMATE)  # [P]; True where the fit failed (NaN)
    # there the upper limit is at least the exponential tail's at its scale's upper limit (inf below that
    # scale, its critical beta); pooled: the mean of the prompts' upper limits (conservative)
    g_hi, k_hi = (jnp.where(opened[:, None], jnp.maximum(v, jnp.max(e, -2)), v) for v, e in ((g_hi, g_exp),
                                                                                          (k_hi, k_exp)))
    pg_hi, pk_hi = (jnp.where(jnp.any(opened), jnp.maximum(v, mean_p(w)), v) for v, w in ((pg_hi, g_hi),
                                                                                           (pk_hi, k_hi)))
    ends = [end_of(tfit.xi, tfit.sigma), end_of(raw.xi_gpd, raw.sigma_gpd)]
    e_rep = end_of(xi_rep, sig_rep)
    e_lo, e_hi = env(e_rep, e_rep, ends + [u + pr_end[0]], ends + [u + pr_end[1]], -1)
    e_hi = jnp.where(opened, jnp.inf, e_hi)
    crit = jnp.where(tfit.xi < 0, 0.0, jnp.where(tfit.xi == 0, tfit.sigma, jnp.inf))  # [P, T]
    crit_lo = jnp.where(tfit.xi == 0, chi[0] * tfit.sigma, crit)
    crit_hi = jnp.where(tfit.xi == 0, chi[1] * tfit.sigma, crit)
    half = lambda lo, hi: (hi - lo) / (2 * z)  # noqa: E731
    return TailCurve(
        jnp.asarray(betas), point(pool_gain), point(pool_kl), pg_lo, pg_hi, pk_lo, pk_hi, half(pg_lo, pg_hi),
        half(pk_lo, pk_hi), pool_ext, pool_reasons, share,
        point(p_gain), point(p_kl), g_lo, g_hi, k_lo, k_hi, p_ext, p_reasons,
        tfit.xi[:, main], x_lo, x_hi, end_of(tfit.xi, tfit.sigma)[:, main], e_lo, e_hi,
        crit[:, main], jnp.min(crit_lo, -1), jnp.max(crit_hi, -1), ~failed, ceiling, None, None, tfit)


def beyond_samples(reasons, *values) -> np.ndarray:
    """Where the samples cannot speak, so the tail model answers (``frontier(tail="gpd")``, the figures).

    True where ``reasons`` (the trust rule's ``int32`` bitmask) has the ``ceiling`` reason
    (:data:`jaxlimits.estimators.CEILING`: the KL is near what the samples can show) or a
    measured value (``values``, e.g. gain and KL) is not finite. A point flagged for other
    reasons only (``bias``, ``tail``, ``no-tilt``, ``few``) keeps its measurement: inside the
    samples' ceiling it is usually closer to the truth than the model's point (demo data at
    beta 1.53: measured KL 0.44 / gain 1.18, flagged; the model's 1.02 / 2.13; truth 0.43 / 1.15).
    Shapes broadcast; a NumPy bool array.
    """
    out = (np.asarray(reasons) & estimators.CEILING) != 0
    for v in values:
        out = out | ~np.isfinite(np.asarray(v, float))
    return out


def extrapolate(frontier, samples: Samples, *, level: float = 0.95, replicates: int = 200, key: Array | None = None,
                memory_budget: int | None = None):
    """A :class:`jaxlimits.Frontier` whose points past what the samples show come from the tail model,
    marked ``extrapolated``.

    What ``jaxlimits.frontier(..., tail="gpd")`` returns. The model replaces a point only where the
    samples cannot speak (:func:`beyond_samples`): its trust-rule reasons include ``ceiling``, or
    its measured gain or KL is not finite. There ``gain``, ``kl``, ``reverse_kl`` (``gain / beta -
    kl``, Theorem 1) and their SEs (the interval's width / 2z) are the tail model's at the same
    beta, and ``reasons`` are the model's (``no-tilt`` where its fitted tail has none, ``few``
    where a few prompts carry the pooled point, :func:`carried_share`; the measured point's
    reasons say nothing about the model); ``saturated`` is True there (a model's point is not a
    measurement). A point flagged for other reasons only (``bias``, ``tail``, ``no-tilt``, ``few`` inside the ceiling)
    keeps its measured values and reasons, flagged as without a tail model. Where more than
    ``jaxlimits.estimators.SHARE_MAX`` of the prompts' top rewards tie (no tail can be fitted;
    :func:`applies`, as the inversions pooled decide) nothing is replaced. ``tail`` holds the
    :class:`TailCurve` with the intervals (at every beta; its ``extrapolated`` is the frontier's:
    the points taken from the model); the other fields are unchanged.

    Args:
      frontier: the pooled frontier of ``samples``.
      samples: plain samples (see :func:`tail_curve`).
      level, replicates, key: of the tail model's intervals (``key``: folded from the given one).
      memory_budget: bytes of working memory of :func:`tail_curve`.
    """
    key = jax.random.PRNGKey(0) if key is None else jax.random.fold_in(key, 16)
    c = tail_curve(samples, np.asarray(frontier.betas), level=level, replicates=replicates, key=key,
                   memory_budget=memory_budget)
    ext = beyond_samples(frontier.reasons, frontier.gain, frontier.kl) & applies(c.fitted)
    ext = jnp.asarray(ext)
    take = lambda measured, model: jnp.where(ext, jnp.asarray(model, measured.dtype), measured)  # noqa: E731
    reasons = jnp.where(ext, c.reasons, frontier.reasons)
    return frontier._replace(
        gain=take(frontier.gain, c.gain), kl=take(frontier.kl, c.kl),
        reverse_kl=take(frontier.reverse_kl, c.gain / c.betas - c.kl),
        gain_se=take(frontier.gain_se, c.gain_se), kl_se=take(frontier.kl_se, c.kl_se),
        gain_lo=take(frontier.gain_lo, c.gain_lo), gain_hi=take(frontier.gain_hi, c.gain_hi),
        kl_lo=take(frontier.kl_lo, c.kl_lo), kl_hi=take(frontier.kl_hi, c.kl_hi),
        reasons=reasons, saturated=frontier.saturated | ext, extrapolated=ext, tail=c._replace(extrapolated=ext))


def applies(fitted) -> bool:
    """Whether the pooled tail model applies: at most ``jaxlimits.estimators.SHARE_MAX`` of the prompts' tails
    could not be fitted (tied top rewards; ``fitted [P]``, e.g. ``TailCurve.fitted``). The one rule of the
    pooled frontier (:func:`extrapolate`) and the pooled inversions (:func:`invert`)."""
    return bool(np.mean(~np.asarray(fitted, bool)) <= estimators.SHARE_MAX)


# ----------------------------------------------------------------------------------------------
# Inverting the tail model's frontier: the KL a gain needs, the gain a KL budget allows, past log N.


class TailSolution(NamedTuple):
    """The tail model's answer to an inversion; every field has the targets' lanes' shape.

    The shape is ``[K]`` (pooled) or ``[P, K]`` (per prompt), as the solution it extends.

    Attributes:
      beta, kl, gain: where the model's point curve meets the target (``gain(beta) = G`` or
        ``KL(beta) = K``, one beta for all prompts when pooled); NaN where there is no answer.
      beta_lo, beta_hi, kl_lo, kl_hi, gain_lo, gain_hi: the answer's interval (the target's own
        limits are the target): every member of the model's uncertainty (each bootstrap replicate,
        each tail of the profile-likelihood set, the fits, at each threshold; :func:`_member_bands`)
        is a whole curve, inverted for the target; the interval is the envelope over the
        thresholds of the replicates' percentile limits and the set's extreme answers. A member with
        ``xi > 0`` has no tilt (any gain at a vanishing KL): it counts as an infinite gain and a KL of
        0 where the frontier is high (the upper limit of a gain, the lower limit of a KL) and with
        its exponential tail on the other side. So ``gain_hi`` is ``inf`` (``kl_lo`` 0) only where
        more than ``(1 - level)/2`` of the replicates (or a fit, or a tail of the set) have no tilt
        or no finite answer, e.g. a gain past their upper end (then ``kl_hi`` is ``inf``). Beta: of
        the replicates with ``xi > 0`` made exponential. The lower limit of the answer (``gain_lo``
        for a KL budget, ``kl_lo`` for a gain) is raised to what the trusted measured frontier shows
        (:func:`_measured_floor`) and to its value at any smaller target of the call (the frontier is
        monotone), but not above the point: the point is always inside.
      no_tilt: the fitted tail has no tilt at any beta (``xi > 0``; pooled: more than
        ``jaxlimits.estimators.SHARE_MAX`` of the prompts): the frontier is degenerate (any gain at
        a vanishing KL), so no answer.
      beyond_end: the target is at or above the most the model's point curve reaches (a gain at or
        above the fitted upper end minus the base mean): no answer. The interval fields still hold
        what the model's band allows there (``beta`` NaN; a finite ``kl_hi`` means the band reaches
        the target: the fitted end is uncertain, a larger one cannot be excluded).
      fitted: the model applies (per prompt: the tail could be fitted; pooled: at most
        ``SHARE_MAX`` of the prompts could not).
      reasons: ``int32`` bitmask: ``NO_TILT`` where ``no_tilt``; pooled, ``FEW`` where the point is
        carried by a few prompts (``carried_share`` above :data:`CARRIED_SHARE`).
      measured_beta, measured_kl, measured_gain, measured_status, measured_reasons: from
        :func:`extend_solution`, what the samples alone answered on the lanes the model answers
        (the empirical solution's values, its status code and trust-rule reasons: flagged, or
        ``KL_AT_OR_ABOVE_CEILING`` / ``GAIN_AT_OR_ABOVE_MAX`` with NaN values), to show beside the
        model's; NaN (status ``NOT_COMPUTED``, reasons 0) on the other lanes. None from :func:`invert`.
      not_applied: from :func:`extend_solution`, True where the target needed the model (past what
        the samples show, or flagged ``ceiling``) but the model does not apply (``fitted`` False: this
        prompt's top rewards tie, or pooled more than ``SHARE_MAX`` of the prompts' do, e.g. rewards
        rounded to bfloat16): those lanes keep the samples' (flagged or unknown) answer. None from
        :func:`invert`.
      carried_share: pooled, the share of the pooled KL at ``beta`` held by the largest
        ``SHARE_MAX`` of the prompts (:func:`carried_share`; NaN where not solved, and per prompt).
    Scalars: level, replicates.
    """

    beta: Array
    kl: Array
    gain: Array
    beta_lo: Array
    beta_hi: Array
    kl_lo: Array
    kl_hi: Array
    gain_lo: Array
    gain_hi: Array
    no_tilt: Array
    beyond_end: Array
    fitted: Array
    reasons: Array
    level: float
    replicates: int
    measured_beta: Array | None = None
    measured_kl: Array | None = None
    measured_gain: Array | None = None
    measured_status: Array | None = None
    measured_reasons: Array | None = None
    not_applied: Array | None = None
    carried_share: Array | None = None

    def _columns(self):
        return tables.columns(self, shape_of="beta", index=("prompt", "target") if np.ndim(self.beta) > 1 else ())

    def _summary(self):
        headline = [f"tail model's inversion, beta {tables.span(self.beta)}", f"KL {tables.span(self.kl)}",
                    f"gain {tables.span(self.gain)}", f"{int(np.sum(np.asarray(self.no_tilt)))} no tilt",
                    f"{int(np.sum(np.asarray(self.beyond_end)))} beyond the fitted upper end"]
        if self.not_applied is not None and np.any(np.asarray(self.not_applied)):
            headline.append(f"{int(np.sum(np.asarray(self.not_applied)))} needed the model but it does not apply "
                            f"(tied top rewards: no tail fitted)")
        return tables.summary(self, shape_of="beta", headline=headline)

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


#: Bisection steps in ``log beta`` of :func:`invert` (the bracket spans at most ``log 1e12``).
BISECTION_STEPS = 64
#: Betas of the grid (log-spaced from the smallest solution / 20 to the largest x 20 or 100 reward spreads) on
#: which every member's curve is inverted (linear interpolation between grid points): one size, so one
#: program serves every call of a shape.
GRID_POINTS = 64
#: Betas of the second grid, over the brackets the first left open next to a beta without a tilt.
REFINE_POINTS = 33


class _PointModel(NamedTuple):
    """The selected fit at the main threshold, per prompt ``[P]``, ready to evaluate anywhere."""

    m: np.ndarray  # exceedances (0 where the fit failed: the empirical law)
    xi: np.ndarray  # -1 where failed (unused: frac 0)
    sigma: np.ndarray
    failed: np.ndarray
    crit: np.ndarray  # the critical beta (0: a finite end), inf for xi > 0
    sup_gain: np.ndarray  # the gain's supremum: end - base mean (inf for xi >= 0)
    spread: np.ndarray  # the rewards' root-mean-square distance from the maximum (a scale)


def _point_model(srt, n, thresholds=THRESHOLDS) -> _PointModel:
    """The fit :func:`tail_curve` uses for its point estimate (the threshold multiplier nearest 1)."""
    main = int(np.argmin(np.abs(np.log(thresholds))))
    m = tail_sizes(n, thresholds)[:, main]
    k = int(m.max())
    top = srt[:, : k + 1]
    u = np.take_along_axis(top, m[:, None], axis=1)
    exceed = np.where(np.arange(k) < m[:, None], top[:, :k] - u, 0)
    f = jax.tree.map(np.asarray, _fit(jnp.asarray(exceed, srt.dtype), jnp.asarray(m, srt.dtype)))
    failed = np.isnan(f.xi)
    xi = np.where(failed, -1.0, f.xi)
    valid = np.isfinite(srt)
    spread = np.sqrt(np.sum(np.where(valid, (srt - srt[:, :1]) ** 2, 0), axis=1) / n)  # the scale of a failed fit
    sigma = np.where(failed, np.where(spread > 0, spread, 1.0), f.sigma)
    crit = np.where(xi < 0, 0.0, np.where(xi == 0, sigma, np.inf))
    mean = np.sum(np.where(valid, srt, 0), axis=1) / n
    end = np.where(failed, srt[:, 0], np.where(xi < 0, u[:, 0] + sigma / np.where(xi < 0, -xi, 1), np.inf))
    return _PointModel(np.where(failed, 0, m), xi, sigma, failed, crit, end - mean, spread)


@jax.jit
def _point_curve(srt, n, m, xi, sigma, lam):
    """The point model's gain and KL at ``lam [P, K]`` (per-prompt inverse betas): ``[P, K]`` each.

    ``srt [P, N]`` descending rewards (``-inf`` padding), ``n, m, xi, sigma [P]``; ``m = 0`` gives
    the empirical law (no tail).
    """
    rank = jnp.arange(srt.shape[1])
    u = jnp.take_along_axis(srt, m.astype(jnp.int32)[:, None], axis=1)  # [P, 1]
    body = (rank[None, :] >= m[:, None]) & (rank[None, :] < n[:, None])
    x = jnp.where(body, srt - u, 0)
    logits = jnp.where(body[:, None, :], lam[..., None] * x[:, None, :], -jnp.inf)  # [P, K, N]
    a0 = jax.nn.logsumexp(logits, axis=-1) - jnp.log(n)[:, None]
    a1 = jnp.sum(jnp.where(body[:, None, :], jax.nn.softmax(logits, axis=-1) * x[:, None, :], 0), axis=-1)
    return _curve(a0, a1, jnp.sum(x, axis=-1) / n, m / n, xi, sigma, lam)[:2]


@functools.partial(jax.jit, static_argnames=("is_kl", "pooled"))
def _bisect(srt, n, m, xi, sigma, y, t_lo, t_hi, *, is_kl: bool, pooled: bool):
    """``t = log beta`` in ``[t_lo, t_hi]`` where the decreasing point curve meets ``y`` (lanes ``[P, K]``
    or pooled ``[K]``); the curve is clipped to the bracket (callers check its ends)."""

    def value(t):
        lam = jnp.exp(-t)
        lam = jnp.broadcast_to(lam, (srt.shape[0],) + lam.shape) if pooled else lam
        g, k = _point_curve(srt, n, m, xi, sigma, lam)
        v = k if is_kl else g
        return jnp.mean(v, axis=0) if pooled else v

    def step(_, b):
        lo, hi = b
        mid = (lo + hi) / 2
        above = value(mid) >= y  # still at or above the target: the root is at a larger beta
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, BISECTION_STEPS, step, (t_lo, t_hi))
    t = (lo + hi) / 2
    lam = jnp.exp(-t)
    lam = jnp.broadcast_to(lam, (srt.shape[0],) + lam.shape) if pooled else lam
    g, k = _point_curve(srt, n, m, xi, sigma, lam)
    return (t, jnp.mean(g, 0), jnp.mean(k, 0)) if pooled else (t, g, k)


@jax.jit
def _brackets(f, o, beta, y):
    """Where each member curve crosses each target, on a grid.

    ``f, o [..., B]``: a family of curves on the ascending grid ``beta [B]`` (``f`` decreasing: the
    inverted quantity; ``o`` the answer, also decreasing), ``y [K, ...]`` the targets (broadcast
    against ``f``'s leading axes). Returns ``(f, o, beta)`` at the last grid point with ``f >= y``
    (``(inf, inf, 0)`` where none) and at the first with ``f < y`` (``(0, 0, inf)`` where none),
    each ``[K, ...]``; one target at a time (memory of one family).
    """
    size = beta.shape[0]
    idx = jnp.arange(size)

    def one(yk):
        above = f >= yk[..., None]
        i_a = jnp.max(jnp.where(above, idx, -1), -1)
        i_b = jnp.min(jnp.where(above, size, idx), -1)
        take = lambda v, i: jnp.take_along_axis(v, jnp.clip(i, 0, size - 1)[..., None], -1)[..., 0]  # noqa: E731
        has_a, has_b = i_a >= 0, i_b < size
        inf = jnp.asarray(jnp.inf, f.dtype)
        return (jnp.where(has_a, take(f, i_a), inf), jnp.where(has_a, take(o, i_a), inf),
                jnp.where(has_a, beta[jnp.clip(i_a, 0, size - 1)], 0), jnp.where(has_b, take(f, i_b), 0),
                jnp.where(has_b, take(o, i_b), 0), jnp.where(has_b, beta[jnp.clip(i_b, 0, size - 1)], inf))

    return jax.lax.map(one, y)


def _merge(state, block):
    """Brackets of two sets of grid points (blocks of one grid, or another grid): the point above with the
    largest beta, the point below with the smallest (the curves are monotone)."""
    if state is None:
        return block
    above = block[2] > state[2]
    below = block[5] < state[5]
    return tuple(np.where(above, b, s) for s, b in zip(state[:3], block[:3])) + tuple(
        np.where(below, b, s) for s, b in zip(state[3:], block[3:]))


def _answers(br, y, no_tilt_answer: float):
    """A member's answer from its bracket: ``(lo, hi, beta_lo, beta_hi)``, each ``[K, ...]``.

    Between two grid points the answer is interpolated linearly in the inverted quantity (``lo = hi``
    there); where the bracket is open (the crossing outside the grid, or next to a beta without a
    tilt) the answer is only bounded by its ends (``0`` or ``inf`` outside the grid). A member with no
    tilt even at the grid's largest beta (``xi > 0``) has a degenerate frontier, any gain at a
    vanishing KL: its answer is ``no_tilt_answer`` (``inf`` for a gain, ``0`` for a KL), beta ``[0, inf]``.
    """
    f_a, o_a, b_a, f_b, o_b, b_b = br
    degenerate = np.isposinf(f_a) & np.isposinf(b_b)
    o_a, o_b = np.where(degenerate, no_tilt_answer, o_a), np.where(degenerate, no_tilt_answer, o_b)
    b_a = np.where(degenerate, 0.0, b_a)
    ok = np.isfinite(f_a) & np.isfinite(o_a) & np.isfinite(b_b) & (f_a > f_b)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(ok, (f_a - y) / np.where(ok, f_a - f_b, 1.0), 0.0)
        mid = o_a + w * (o_b - o_a)
        b_mid = np.exp(np.log(np.where(ok, b_a, 1.0)) + w * np.log(np.where(ok, b_b / b_a, 1.0)))
    return np.where(ok, mid, o_b), np.where(ok, mid, o_a), np.where(ok, b_mid, b_a), np.where(ok, b_mid, b_b)


def _quantile(x, q, axis, low: bool):
    """A conservative order statistic of ``x`` along ``axis`` (``inf`` kept, NaN ignored: NaN where all are),
    on the host: :func:`_quantiles`' rule for one side of the per-member answers (NumPy arrays)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN lane (no member answered) is NaN
        return np.nanquantile(x, q, axis=axis, method="lower" if low else "higher")


def _member_bands(samples, grid, y, *, kind: str, pooled: bool, level: float, replicates: int, key, where: str,
                  memory_budget):
    r"""The answer's interval from inverting every member of the tail model's uncertainty.

    The members are those of :func:`tail_curve`'s band, each a whole curve (a tail and a body): the
    parametric bootstrap's replicates at each threshold, the profile-likelihood set's tails (with
    the body's bootstrap deviations of the answer), the selected and unrestricted fits, and, where
    the shape's upper limit is not below :data:`XI_PENULTIMATE`, the exponential tail at its
    scale's upper limit. Each member's curve on ``grid [G]`` is inverted for each target
    (:func:`_brackets`, :func:`_answers`), then again on a second grid of :data:`REFINE_POINTS`
    betas over the brackets left open next to a beta without a tilt (the same replicates: the
    brackets merge); pooled members are curves of the mean over prompts.

    The frontier of a member with ``xi > 0`` is degenerate (no tilt: any gain at a vanishing KL),
    so its answer is ``inf`` for a KL budget's gain and ``0`` for a gain's KL. As in
    :func:`tail_curve`, such a member counts as fitted on the side where the frontier is high (the
    upper limit of a gain, the lower limit of a KL) and with its exponential tail on the other (a
    lower frontier: conservative). Per threshold: the bootstrap's percentile limits of the answers
    and the profile set's extreme answers (plus the body's percentile deviations) and the point
    fits' answers; the interval is their envelope over the thresholds. Pooled (one beta for all
    prompts, so the prompts' sets cannot be inverted one by one), the profile set enters as two
    curves: the mean over prompts of each set's lowest-frontier tail (its nearest upper end, ``xi > 0``
    made exponential) and of its highest (the farthest end), with the body's pointwise percentile
    deviations on the conservative side.

    Returns ``lo, hi, beta_lo, beta_hi`` of the answer (KL for ``kind="gain"``, gain for
    ``kind="kl"``), ``y``'s shape (``[K]`` pooled, ``[P, K]`` per prompt).
    """
    is_kl = kind == "kl"
    yk = np.asarray(y, float).T  # [K] or [K, P]
    state, extra = {}, None

    def run(grid_):
        nonlocal extra
        for betas, out, ctx in _blocks(samples, grid_, level, replicates, THRESHOLDS, key, memory_budget, where,
                                       members=True):
            if extra is None:  # the shape's interval and the profile set's membership do not depend on beta
                opened = ~(np.asarray(_assemble(betas, *out[:5], *ctx).xi_hi, float) < XI_PENULTIMATE)  # [P]
                extra = (np.asarray(out[5][3]), opened)
            beta = np.concatenate([betas, np.full(np.shape(out[1][0])[-1] - betas.size, betas[-1])])
            for name, (g, k) in _families(out, extra[1], level, pooled).items():
                f, o = (k, g) if is_kl else (g, k)
                shape = (yk.shape[0],) + (1,) * _LEAD[name] + (() if pooled else (yk.shape[1],)) + (1,)
                br = _brackets(f, o, jnp.asarray(beta, f.dtype), jnp.asarray(yk.reshape(shape), f.dtype))
                state[name] = _merge(state.get(name), tuple(np.asarray(v, float) for v in br))

    run(grid)
    # crossings next to a beta without a tilt (an exponential-type tail near its critical beta, where gain and KL
    # rise steeply) are only bounded by the grid points: a second grid over the betas of those brackets
    open_ = [(br[2][m], br[5][m]) for br in state.values()
             for m in [np.isposinf(br[0]) & (br[2] > 0) & np.isfinite(br[5])] if m.any()]
    if open_ and REFINE_POINTS:
        lo, hi = min(float(np.min(a)) for a, _ in open_), max(float(np.max(b)) for _, b in open_)
        run(np.geomspace(lo, hi, REFINE_POINTS))
    return _combine(state, yk, *extra, is_kl=is_kl, pooled=pooled, level=level)


#: Member axes of each family of curves (replicates, the profile set's tails) before ``[P,] T, B``.
_LEAD = {"fit": 1, "exp": 1, "body": 1, "prof": 1, "prof_low": 1, "sel": 0, "gpd": 0, "exphi": 0, "pess": 0, "opt": 0}


def _families(out, opened, level, pooled):
    """The member curves ``(gain, kl)`` of one block of betas, by family (see :func:`_member_bands`).

    ``fit``/``exp``: the bootstrap's replicates as fitted / with ``xi > 0`` made exponential; ``body``:
    the body resampled, the tail as fitted; ``sel``/``gpd``: the selected and unrestricted fits;
    ``exphi``: the exponential tail at its scale's upper limit (pooled: where the prompt's shape
    interval is open, else its selected fit); per prompt ``prof``/``prof_low``: the profile set's tails
    as fitted / with ``xi > 0`` made exponential; pooled ``pess``/``opt``: the mean over prompts of each
    set's nearest-end / farthest-end tail, with the body's pointwise percentile deviations.
    """
    (tfit, raw), (gain, kl, gain_gpd, kl_gpd, g_exp, k_exp), pool, reps, _, mem = out
    g_rep, k_rep, gl_rep, kl_rep = reps[:4]
    g_j, k_j, xi_j, in_set, g_e, k_e = mem
    heavy_j = (xi_j > 0)[..., None]
    # the body's replicates from their deviations (no deviation where the tail has no tilt: inf there)
    body = lambda dev, v: jnp.where(jnp.isinf(v), v, dev + v)  # noqa: E731
    if not pooled:
        return {"fit": (g_rep, k_rep), "exp": (gl_rep, kl_rep), "body": (body(reps[10], gain), body(reps[11], kl)),
                "sel": (gain, kl), "gpd": (gain_gpd, kl_gpd), "exphi": (g_exp, k_exp), "prof": (g_j, k_j),
                "prof_low": (jnp.where(heavy_j, g_e, g_j), jnp.where(heavy_j, k_e, k_j))}
    pg_sel, pk_sel, pg_gpd, pk_gpd = pool
    any_in = jnp.any(in_set, 0)[..., None]

    # the set's tails are ordered by their upper end (_PROFILE_C): the first member in the set has the lowest
    # frontier (the nearest end), the last the highest; per prompt those, the selected fit where the set is empty
    j_lo = jnp.argmax(in_set, 0)[None, ..., None]
    j_hi = (in_set.shape[0] - 1 - jnp.argmax(in_set[::-1], 0))[None, ..., None]

    def ext(v, lo, fallback):
        return jnp.where(any_in, jnp.take_along_axis(v, j_lo if lo else j_hi, 0)[0], fallback)

    def dev(v, lo):  # the body's pointwise percentile deviation (0 where there is none)
        q = jnp.nanquantile(v, (1 - level) / 2 if lo else (1 + level) / 2, axis=0, method="lower" if lo else "higher")
        return jnp.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0)

    g_low, k_low = jnp.where(heavy_j, g_e, g_j), jnp.where(heavy_j, k_e, k_j)
    sel_low = (jnp.where((tfit.xi > 0)[..., None], g_e, gain), jnp.where((tfit.xi > 0)[..., None], k_e, kl))
    op = jnp.asarray(opened)[:, None, None]
    return {"fit": reps[6:8], "exp": reps[8:10], "body": (body(reps[12], pg_sel), body(reps[13], pk_sel)),
            "sel": (pg_sel, pk_sel), "gpd": (pg_gpd, pk_gpd),
            "exphi": tuple(jnp.mean(jnp.where(op, e, v), 0) for e, v in zip((g_exp, k_exp), sel_low)),
            "pess": (jnp.mean(ext(g_low, True, gain), 0) + dev(reps[12], True),
                     jnp.mean(ext(k_low, True, kl), 0) + dev(reps[13], False)),
            "opt": (jnp.mean(ext(g_j, False, gain), 0) + dev(reps[12], False),
                    jnp.mean(ext(k_j, False, kl), 0) + dev(reps[13], True))}


def _combine(state, yk, in_set, opened, *, is_kl: bool, pooled: bool, level: float):
    """The interval from the members' brackets (see :func:`_member_bands`): ``lo, hi, beta_lo, beta_hi``."""
    import functools as ft

    def ans(name):
        lead = _LEAD[name]
        shape = (yk.shape[0],) + (1,) * lead + (() if pooled else (yk.shape[1],)) + (1,)
        return _answers(state[name], yk.reshape(shape), np.inf if is_kl else 0.0)

    a = {name: ans(name) for name in state}
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    # which members bound which side: a high frontier (xi > 0 as fitted) gives a large gain and a small KL
    high, low = ("fit", "prof", "opt"), ("exp", "prof_low", "pess")
    lo_f, hi_f = (low, high) if is_kl else (high, low)
    fmin, fmax = (lambda v: ft.reduce(np.fmin, v)), (lambda v: ft.reduce(np.fmax, v))  # noqa: E731

    def body(i, low_):  # the body's percentile deviation of the answer (0 where there is none)
        with np.errstate(invalid="ignore"):
            d = a["body"][i] - a["sel"][i][:, None]
        return np.nan_to_num(_quantile(d, lo_q if low_ else hi_q, 1, low_), nan=0.0, posinf=0.0, neginf=0.0)

    lo = [_quantile(a[lo_f[0]][0], lo_q, 1, True), a["sel"][0], a["gpd"][0]]
    hi = [_quantile(a[hi_f[0]][1], hi_q, 1, False), a["sel"][1], a["gpd"][1]]
    b_lo = [_quantile(a["exp"][2], lo_q, 1, True), a["sel"][2]]
    b_hi = [_quantile(a["exp"][3], hi_q, 1, False), a["sel"][3]]
    if pooled:
        lo.append(a[lo_f[2]][0])
        hi.append(a[hi_f[2]][1])
        b_lo.append(a["pess"][2])
        b_hi.append(a["pess"][3])
        op = bool(np.any(opened))
    else:
        ins = in_set[None]
        lo.append(np.min(np.where(ins, a[lo_f[1]][0], np.inf), 1) + body(0, True))
        hi.append(np.max(np.where(ins, a[hi_f[1]][1], -np.inf), 1) + body(1, False))
        b_lo.append(np.min(np.where(ins, a["prof_low"][2], np.inf), 1))
        b_hi.append(np.max(np.where(ins, a["prof_low"][3], -np.inf), 1))
        op = opened[None, :, None]
    lo, hi, b_lo, b_hi = fmin(lo), fmax(hi), fmin(b_lo), fmax(b_hi)
    # where the shape's interval is open above: the exponential tail at its scale's upper limit too
    e_lo, e_hi, eb_lo, eb_hi = a["exphi"]
    if is_kl:
        hi = np.where(op, np.fmax(hi, e_hi), hi)
    else:
        lo = np.where(op, np.fmin(lo, e_lo), lo)
    b_lo, b_hi = np.where(op, np.fmin(b_lo, eb_lo), b_lo), np.where(op, np.fmax(b_hi, eb_hi), b_hi)
    env = [np.fmin.reduce(lo, -1), np.fmax.reduce(hi, -1), np.fmin.reduce(b_lo, -1), np.fmax.reduce(b_hi, -1)]
    return [np.maximum(v, 0).T for v in env]


def invert(samples: Samples, targets, *, kind: str, pooled: bool, level: float = 0.95, replicates: int = 200,
           key: Array | None = None, where: str = "invert", memory_budget: int | None = None) -> TailSolution:
    r"""The tail model's inversion: the beta where its curve meets each target, with an interval.

    The model (:func:`tail_curve`'s body + generalised Pareto tail at the main threshold) has
    monotone gain and KL curves in ``beta``; each target is solved by bisection in ``log beta``
    (:data:`BISECTION_STEPS`) between the critical beta (or ``1e-6`` times the tail's scale for a
    finite end) and ``1e6`` times it, pooled on the mean over prompts at one shared beta. The
    interval comes from inverting every member of the model's uncertainty for the target (the
    bootstrap's replicates, the profile-likelihood set's tails and the fits, at every threshold, on
    a grid of :data:`GRID_POINTS` betas around the solutions, refined where needed;
    :func:`_member_bands`): quantiles of
    the replicates' answers, combined with the set's and the fits' as :func:`tail_curve` combines
    them. An upper limit is infinite only where more than ``(1 - level)/2`` of the replicates (or a
    fit or a tail of the set) have no finite answer (no tilt, a gain past their upper end).

    Args:
      samples: plain samples ``[P, N]`` (see :func:`tail_curve`).
      targets: ``[K]`` (pooled; per prompt: shared) or ``[P, K]`` (per prompt) positive finite targets: gains
        (``kind="gain"``) or KL budgets in nats (``kind="kl"``). Others give NaN.
      kind: ``"gain"`` or ``"kl"``.
      pooled: solve the mean over prompts at one beta (the targets ``[K]``) or each prompt.
      level, replicates, key, memory_budget: of the band (:func:`tail_curve`).
      where: the caller's name, for errors.

    Returns:
      A :class:`TailSolution` of the targets' shape.

    Raises:
      ValueError: as :func:`tail_curve` (samples the model does not apply to, named).
    """
    srt, n = _sorted_plain(samples, where)
    dtype = jnp.asarray(samples.rewards).dtype
    y = np.asarray(targets, float)
    if not pooled and y.ndim == 1:
        y = np.broadcast_to(y, (srt.shape[0], y.size))
    pm = _point_model(srt, n)
    heavy = pm.xi > 0
    if pooled:
        share_heavy = heavy.mean()
        allow = share_heavy <= estimators.SHARE_MAX
        # as tail_curve's pool: a few prompts with xi > 0 enter with their exponential tail
        m_top = np.where(pm.failed, 0, pm.m)
        exc = np.where(np.arange(srt.shape[1])[None, :] < m_top[:, None], srt, 0).sum(1) / np.maximum(m_top, 1)
        u = np.take_along_axis(srt, m_top[:, None], axis=1)[:, 0]
        sig_exp = np.where(heavy, exc - u, pm.sigma)
        xi = np.where(heavy, 0.0, pm.xi)
        sigma = sig_exp
        crit = np.where(xi < 0, 0.0, sigma)
        no_tilt = np.broadcast_to(~allow, y.shape)
        fitted = np.broadcast_to(applies(~pm.failed), y.shape)
        crit_l, scale = np.max(crit), np.min(sigma)
        sup_g = np.inf if np.any(xi >= 0) else float(np.mean(pm.sup_gain))
        sup_g = np.broadcast_to(sup_g, y.shape)
        crit_l = np.broadcast_to(crit_l, y.shape)
        scale = np.broadcast_to(scale, y.shape)
    else:
        xi, sigma = pm.xi, pm.sigma
        no_tilt = np.broadcast_to(heavy[:, None], y.shape)
        fitted = np.broadcast_to(~pm.failed[:, None], y.shape)
        crit_l = np.broadcast_to(np.where(heavy, 0.0, pm.crit)[:, None], y.shape)
        scale = np.broadcast_to(sigma[:, None], y.shape)
        sup_g = np.broadcast_to(pm.sup_gain[:, None], y.shape)
    eps = float(np.finfo(dtype).eps)
    with np.errstate(divide="ignore"):
        t_lo = np.where(crit_l > 0, np.log(crit_l) + 64 * eps, np.log(1e-6 * scale))
    t_hi = np.log(1e6 * np.maximum(scale, crit_l))
    good = np.isfinite(y) & (y > 0) & ~no_tilt & fitted
    y_in = np.where(good, y, 1.0)
    j = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    t, g, k = (np.asarray(v, float) for v in _bisect(
        j(np.where(np.isfinite(srt), srt, -np.inf)), j(n), j(pm.m), j(xi), j(sigma), j(y_in), j(t_lo), j(t_hi),
        is_kl=kind == "kl", pooled=pooled))
    # the curve's most at the bracket's small end: a target beyond it is beyond what the model reaches
    top = np.asarray(_bisect(j(np.where(np.isfinite(srt), srt, -np.inf)), j(n), j(pm.m), j(xi), j(sigma),
                             j(np.full(y.shape, np.inf)), j(t_lo), j(t_lo), is_kl=kind == "kl",
                             pooled=pooled)[2 if kind == "kl" else 1], float)
    beyond = good & ((y >= top) | ((kind == "gain") & (y >= sup_g)))
    solved = good & ~beyond
    nan = lambda v: np.where(solved, v, np.nan)  # noqa: E731
    beta, g, k = nan(np.exp(t)), nan(g), nan(k)
    if kind == "gain":
        g = np.where(solved, y, g)
    else:
        k = np.where(solved, y, k)
    lims = [np.full(y.shape, np.nan) for _ in range(6)]
    if (solved | beyond).any():
        # up to where the tilt is negligible (100 times the rewards' spread): the band's end seen, not cut by the grid
        sd = float(np.nanmedian(np.where(np.isfinite(pm.spread), pm.spread, np.nan)))
        b_ok = beta[solved] if solved.any() else np.array([sd * 1e-3])
        lo_b, hi_b = float(np.min(b_ok)) / 20, max(float(np.max(b_ok)) * 20, 100 * sd)
        grid = np.geomspace(lo_b, hi_b, GRID_POINTS)
        key = jax.random.PRNGKey(0) if key is None else key
        a_lo, a_hi, b_lo, b_hi = _member_bands(samples, grid, np.where(solved | beyond, y, y_in), kind=kind,
                                               pooled=pooled, level=level, replicates=replicates,
                                               key=jax.random.fold_in(key, 17), where=where,
                                               memory_budget=memory_budget)
        o_lo, o_hi = a_lo, a_hi
        other = k if kind == "gain" else g
        lims = [np.fmin(b_lo, beta), np.fmax(b_hi, beta), np.fmin(o_lo, other), np.fmax(o_hi, other)]
        # beyond the point curve's reach the band may still reach the target: its interval is kept there
        lims = [np.where(solved | beyond, v, np.nan) for v in lims]
        own = [np.where(solved | beyond, y, np.nan)] * 2
        lims = lims[:2] + (lims[2:] + own if kind == "gain" else own + lims[2:])
        # the answer's lower limit: never below what a smaller target's allows, nor below what the trusted
        # measured frontier shows (the frontier is monotone); kept at or below the point
        i = 2 if kind == "gain" else 4
        floor = _measured_floor(samples, np.where(solved | beyond, y, np.nan), kind=kind, pooled=pooled, level=level)
        lims[i] = np.where(solved | beyond, _monotone_floor(np.fmax(lims[i], floor), y, k if kind == "gain" else g),
                           np.nan)
    share, carried = np.full(y.shape, np.nan), np.zeros(y.shape, bool)
    if pooled and solved.any():  # the pooled point held up by a few prompts' tails near their critical beta
        lam = np.broadcast_to(1 / np.where(solved, beta, 1.0), (srt.shape[0],) + y.shape)
        kl_p = _point_curve(j(np.where(np.isfinite(srt), srt, -np.inf)), j(n), j(pm.m), j(xi), j(sigma), j(lam))[1]
        share, carried = (np.asarray(v) for v in carried_share(kl_p))
        share, carried = np.where(solved, share, np.nan), solved & carried
    reasons = (estimators.reason_bit(jnp.asarray(no_tilt), estimators.NO_TILT)
               | estimators.reason_bit(jnp.asarray(carried), estimators.FEW))
    as_j = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return TailSolution(as_j(beta), as_j(k), as_j(g), *(as_j(v) for v in lims), jnp.asarray(no_tilt),
                        jnp.asarray(beyond), jnp.asarray(fitted), reasons, float(level), int(replicates),
                        carried_share=as_j(share))


def _measured_floor(samples, y, *, kind: str, pooled: bool, level: float) -> np.ndarray:
    """The lower limit the trusted measured frontier gives each target: ``y``'s shape, ``-inf`` where none.

    The frontier never falls as KL grows, so a trusted point (``jaxlimits.frontier``'s pooled points, or
    each prompt's) whose KL is at most the budget ``y`` even at its upper confidence limit bounds the
    gain that budget allows from below by its gain's lower limit (``kind="kl"``); for a target gain
    (``kind="gain"``), a point whose gain is at most ``y`` at its upper limit bounds the KL needed by its
    KL's lower limit. Limits at ``level`` (``+- z SE``); NaN targets give ``-inf``.
    """
    from .frontier import frontier

    f = frontier(samples, per_prompt=not pooled)
    src = f if pooled else f.prompts
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    v = {q: np.asarray(getattr(src, q), float) for q in ("kl", "kl_se", "gain", "gain_se")}
    up = lambda q: v[q] + z * v[f"{q}_se"]  # noqa: E731
    down = lambda q: v[q] - z * v[f"{q}_se"]  # noqa: E731
    reach, value = (up("kl"), down("gain")) if kind == "kl" else (up("gain"), down("kl"))
    ok = ~np.asarray(src.saturated, bool) & np.isfinite(reach) & np.isfinite(value)  # [B] or [P, B]
    with np.errstate(invalid="ignore"):
        hit = ok[..., None, :] & (reach[..., None, :] <= np.asarray(y, float)[..., None])  # [..., K, B]
    return np.max(np.where(hit, value[..., None, :], -np.inf), axis=-1, initial=-np.inf)


def _monotone_floor(lo, y, point):
    """Lower limits ``lo`` raised to the largest at any smaller target of the same lane row (the answer grows
    with the target), then capped at the point (``lo``, ``y``, ``point``: ``[K]`` or ``[P, K]``; NaN kept)."""
    lo, y = np.atleast_2d(np.asarray(lo, float)), np.atleast_2d(np.asarray(y, float))
    by = np.argsort(np.where(np.isnan(y), np.inf, y), axis=-1, kind="stable")
    run = np.fmax.accumulate(np.take_along_axis(np.where(np.isnan(lo), -np.inf, lo), by, -1), axis=-1)
    out = np.empty_like(run)
    np.put_along_axis(out, by, run, -1)
    out = np.where(np.isnan(lo), np.nan, np.fmin(out, np.reshape(point, out.shape)))
    return np.maximum(out, 0).reshape(np.shape(np.asarray(point)))


def extend_solution(sol, samples: Samples, targets, *, kind: str, pooled: bool, level: float = 0.95,
                    replicates: int = 200, key: Array | None = None, where: str = "invert",
                    memory_budget: int | None = None):
    """An inversion's :class:`jaxlimits.inversion.Solution` with its targets past what the samples show
    solved on the tail model (:func:`invert`), marked ``extrapolated``.

    The model answers only where the samples cannot: lanes whose empirical answer is unknown
    (``KL_AT_OR_ABOVE_CEILING``, ``GAIN_AT_OR_ABOVE_MAX``) or solved but flagged with the trust
    rule's ``ceiling`` reason (:data:`jaxlimits.estimators.CEILING`) take the model's ``beta``,
    ``kl``, ``gain``. A lane flagged for other reasons only (``bias``, ``tail``, ``no-tilt``,
    ``few``) keeps its measured answer, flagged (``saturated``, its reasons) as without a tail
    model: inside the samples' ceiling it is usually the better number (see
    :func:`beyond_samples`). On the extrapolated lanes the inverted quantity's SE is the model
    interval's width / 2z (``inf`` where open), the target's 0; ``reasons`` are the model's,
    ``saturated`` True (a model, not a measurement), biases 0, status ``EXTRAPOLATED`` (an answer,
    but the model's: never ``OK``). Where the model has no tilt the status is ``NO_TILT``, where
    the target is past what it reaches ``BEYOND_UPPER_END`` (values NaN), unless the samples gave an
    answer there (flagged ``ceiling``): that flagged answer then stands. Lanes the model does not
    apply to (a tail that could not be fitted) are unchanged and counted in ``tail.not_applied``.
    A KL budget at or past the ceiling allows at least the samples' largest gain (``gain_max``: the
    frontier never falls, and at the ceiling it reaches that; ``jaxlimits.compare``'s bound there): the
    model's lower limit is raised to it (not above the point).
    Every other lane is the empirical answer, unchanged. The result has ``extrapolated`` (bool, the
    solution's shape) and ``tail`` (a :class:`TailSolution` of that shape with the intervals and, on
    the extrapolated lanes, the measured answer it replaced: ``tail.measured_*``).
    ``memory_budget``: of :func:`tail_curve`.
    """
    from .inversion import Status

    status = np.asarray(sol.status)
    shape = status.shape
    y = np.broadcast_to(np.asarray(targets, float), shape[1:] if not pooled else shape)
    y = np.broadcast_to(y, shape)
    sat = np.asarray(sol.saturated)
    at_ceiling = (np.asarray(sol.reasons) & estimators.CEILING) != 0
    need = ((status == Status.KL_AT_OR_ABOVE_CEILING) | (status == Status.GAIN_AT_OR_ABOVE_MAX)
            | ((status == Status.OK) & at_ceiling)) & np.isfinite(y) & (y > 0)
    flat = (lambda v: v.reshape(-1)) if pooled else (lambda v: v.reshape(shape[0], -1))  # noqa: E731
    ts = invert(samples, flat(np.where(need, y, np.nan)), kind=kind, pooled=pooled, level=level,
                replicates=replicates, key=key, where=where, memory_budget=memory_budget)
    ts = ts._replace(**{f: jnp.reshape(getattr(ts, f), shape) for f in ts._fields[:13]})
    if kind == "kl":  # at or past the ceiling the frontier is at least the samples' cap (what compare says there)
        cap = np.broadcast_to(np.asarray(sol.gain_max, float), shape)
        past = (status == Status.KL_AT_OR_ABOVE_CEILING) & np.isfinite(np.asarray(ts.gain_lo, float))
        point = np.asarray(ts.gain, float)
        floor = np.where(np.isnan(point), cap, np.fmin(cap, point))  # the point stays inside
        ts = ts._replace(gain_lo=jnp.asarray(np.where(past, np.fmax(np.asarray(ts.gain_lo, float), floor),
                                                      np.asarray(ts.gain_lo, float)), ts.gain_lo.dtype))
    applied = need & np.asarray(ts.fitted)
    silent = np.asarray(ts.no_tilt) | np.asarray(ts.beyond_end)  # the model gives no number
    # where it gives none but the samples gave one (flagged 'ceiling'), their flagged answer stands
    ext = applied & ~(silent & (status == Status.OK))
    no_tilt = ext & np.asarray(ts.no_tilt)
    beyond = ext & np.asarray(ts.beyond_end) & ~no_tilt
    solved = ext & np.isfinite(np.asarray(ts.beta))
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    dt = sol.kl.dtype

    def take(field, model):
        return jnp.asarray(np.where(ext, np.asarray(model, float), np.asarray(field, float)), dt)

    zero = np.zeros(shape)
    width = lambda q: (np.asarray(getattr(ts, f"{q}_hi"), float) - np.asarray(getattr(ts, f"{q}_lo"), float)) / (2 * z)  # noqa: E731
    kl_se, gain_se = (width("kl"), zero) if kind == "gain" else (zero, width("gain"))
    code = np.where(no_tilt, int(Status.NO_TILT), np.where(beyond, int(Status.BEYOND_UPPER_END),
                                                             np.where(solved, int(Status.EXTRAPOLATED), status)))
    mask = lambda v: np.where(ext, np.asarray(v), False)  # noqa: E731
    measured = {f"measured_{f}": jnp.asarray(np.where(ext, np.asarray(getattr(sol, f), float), np.nan), dt)
                for f in ("beta", "kl", "gain")}
    silent_no_tilt = applied & np.asarray(ts.no_tilt)  # the model's verdict, also where the samples' answer stands
    ts = ts._replace(no_tilt=jnp.asarray(silent_no_tilt),
                     beyond_end=jnp.asarray(applied & np.asarray(ts.beyond_end) & ~silent_no_tilt),
                     fitted=jnp.asarray(mask(ts.fitted)),
                     reasons=jnp.where(jnp.asarray(ext), ts.reasons, 0), **measured,
                     measured_status=jnp.asarray(np.where(ext, status, int(Status.NOT_COMPUTED)).astype(status.dtype)),
                     measured_reasons=jnp.asarray(np.where(ext, np.asarray(sol.reasons), 0).astype(np.int32)),
                     not_applied=jnp.asarray(need & ~np.asarray(ts.fitted)))
    return sol._replace(
        beta=take(sol.beta, ts.beta), kl=take(sol.kl, ts.kl), gain=take(sol.gain, ts.gain),
        kl_se=take(sol.kl_se, np.where(solved, kl_se, np.nan)),
        gain_se=take(sol.gain_se, np.where(solved, gain_se, np.nan)),
        converged=jnp.asarray(np.where(ext, solved, np.asarray(sol.converged))),
        status=jnp.asarray(code.astype(status.dtype)),
        saturated=jnp.asarray(np.where(ext, True, sat)),
        reasons=jnp.asarray(np.where(ext, np.asarray(ts.reasons), np.asarray(sol.reasons)).astype(np.int32)),
        gain_bias=take(sol.gain_bias, zero), kl_bias=take(sol.kl_bias, zero),
        extrapolated=jnp.asarray(ext), tail=ts)
