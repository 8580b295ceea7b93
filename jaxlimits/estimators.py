r"""The tilted statistics of every (prompt, beta): gain, KL and their uncertainty.

For each prompt the optimal KL-regularised policy is the tilt ``pi_beta = pi0 exp(r/beta) / Z``
(MATH.md §2). From base-model samples, with normalised base weights ``u`` and tilted weights
``p = softmax(log u + r/beta)`` (MATH.md §3, Definitions 1 and 2 of the paper):

.. math::

   \widehat{\Delta} = \sum_i p_i s_i - \sum_i u_i s_i, \qquad
   \widehat{KL} = \sum_i p_i \log(p_i / u_i), \qquad
   \widehat{KL}_{rev} = \sum_i u_i \log(u_i / p_i),

and Theorem 1 holds on samples: ``gain(s = r) = beta * (kl + reverse_kl)``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, moments, psis, tables, tail_bound, two_valued
from .samples import Samples, check_samples

Array = jax.Array

# -- The trust rule (README "Can I trust the number?"; calibrated cell by cell by
# benchmarks/calibrate_trust.py, tables in benchmarks/README.md). It judges the reported interval
# [lo, hi], whose upper limit allows for an unseen exponential tail (jaxlimits.tail_bound) where
# the rewards' tail is modelled ("modelled": plain samples or counts, a tail of at least 5 draws
# that are not mostly ties; for the gain, scores equal to the rewards), and which for two-valued
# rewards is the pass rate's binomial interval mapped through the tilt (jaxlimits.two_valued; one
# prompt counts as modelled then too). Those intervals cover over all data sets, so there the rule
# needs no clause on the ESS or k-hat, which (computed from the same draws) only selected the data
# sets whose largest draws happened to be small. What predicts a wrong interval differs between one
# prompt's estimate and a pooled one:
#
# one prompt (TiltStats.reasons)              a pooled point (Frontier.reasons)
#   few:     an SE the dtype cannot resolve       fewer than DRAWS_MIN draws per prompt, or a
#            (NaN); not modelled: also ESS <      pooled SE that is NaN; with fewer than 1 -
#            ESS_MIN or uneven weights            SHARE_MAX of the prompts modelled: also the mean
#            (unevenness > SPREAD_MAX)            unevenness over prompts > SPREAD_MAX
#   bias:    |bias| > BIAS_SE_RATIO * se          rms bias > BIAS_RMS_RATIO * rms se over prompts,
#                                                 or mean |bias|/ESS > RESIDUAL_SE_RATIO * pooled se
#   tail:    modelled: the top draws reject the   modelled: more than SHARE_MAX of the prompts'
#            exponential tail for a heavier one   top draws reject it; else mean k-hat >
#            (its premise); else k-hat > KHAT_MAX KHAT_POOLED_FRACTION x PSIS's threshold
#   no-tilt: k-hat >= KHAT_NO_TILT                more than SHARE_MAX of the prompts no-tilt
#   ceiling: KL > KL_CEILING_FRACTION * ceiling   more than SHARE_MAX of the prompts at the ceiling
#            (not two-valued: seen whole)
#
# "bias" compares the estimated bias of the plug-in estimate (which the default estimate removes;
# what is left is of higher order, measured at a tenth of it or less where unflagged) with the
# SE. Pooled, two things: (1) the bias is also the scale of the estimate's second-order
# fluctuation, which the first-order SE misses (where the SE vanishes, e.g. Bernoulli rewards at
# the KL's stationary point, the interval covers nothing): per prompt, independent of P, so the
# root-mean-square bias is held against the root-mean-square SE; (2) what the correction leaves,
# of order |bias|/ESS per prompt (for the sample variance exactly bias/N), does not average out
# over prompts while the pooled SE shrinks like 1/sqrt(P). Judging by the removed bias against
# the pooled SE (the first version) flagged every point of a well-sampled law once P was large
# (uniform rewards, N = 64, P = 2,000: even KL 0.001); (2) alone missed (1). "unevenness" is
# (N/ESS - 1)/ESS, the squared coefficient of variation of the tilted weights per effective
# draw: where it is large the delta method's variance runs low (by 10-20% at ESS ~ 100 with
# uneven weights), which pooling does not cure. k-hat is PSIS's (jaxlimits.psis).
#: Flag when the estimated bias exceeds this many standard errors (gain or KL).
BIAS_SE_RATIO = 4.5
#: A pooled point: flag when the root-mean-square bias over prompts exceeds this fraction of the
#: root-mean-square SE (at P = 100 the same as BIAS_SE_RATIO against the pooled SE).
BIAS_RMS_RATIO = 0.45
#: A pooled point: flag when the mean over prompts of |bias|/ESS, the order of the bias the
#: correction leaves, exceeds this many pooled standard errors (a shift of 0.25 SE leaves a 95%
#: interval covering 94.3%).
RESIDUAL_SE_RATIO = 0.25
#: One prompt's k-hat above this: the weights' variance is infinite (k >= 1/2), its SE meaningless.
KHAT_MAX = 0.5
#: A pooled point: the mean k-hat over prompts above this fraction of PSIS's reliability threshold
#: for N draws (0.23 at N = 64, 0.35 at 1,024): the delta method's variance is not to be trusted for
#: much lighter tails than PSIS's own estimates, and less so with fewer draws.
KHAT_POOLED_FRACTION = 0.52
#: Say the tilt may not exist from this k-hat on (the weights' mean is infinite for k >= 1).
KHAT_NO_TILT = 1.0
#: Flag estimates whose KL is above this fraction of what the samples can show (``kl_ceiling``).
KL_CEILING_FRACTION = 0.5
#: One prompt's interval needs at least this many effective draws (Kish's ESS of the tilted weights).
ESS_MIN = 600.0
#: The largest unevenness ``(N/ESS - 1)/ESS`` of the tilted weights that keeps the variance honest.
SPREAD_MAX = 0.01
#: A pooled point needs this many draws per prompt (on average): with fewer, each prompt's delta-method
#: SE is far too small (pooled intervals covered 50-60% at N = 4 and 85-91% at N = 16 in the calibration).
DRAWS_MIN = 25
#: A pooled point is flagged when more than this share of its prompts is flagged no-tilt (or ceiling).
SHARE_MAX = 0.05

#: Bits of ``reasons``: each flagged point carries every reason that applies.
BIAS, TAIL, NO_TILT, CEILING, FEW = 1, 2, 4, 8, 16
#: One short word per reason (tables, CSV/JSON, figures), in bit order.
REASON_NAMES = {BIAS: "bias", TAIL: "tail", NO_TILT: "no-tilt", CEILING: "ceiling", FEW: "few"}
#: What each reason means, for messages.
REASON_MESSAGES = {
    BIAS: "the estimated bias is large beside the standard error (too few effective samples for the tilt)",
    TAIL: ("the largest rewards look heavier-tailed than exponential (or, where that tail is not modelled, "
           "the tilted weights are: PSIS k-hat): the interval is unreliable and the tilt may not exist"),
    NO_TILT: "PSIS k-hat >= 1: the weights' mean may not exist, so the tilt itself may not exist",
    CEILING: "the KL is near what the samples can show (log N / m)",
    FEW: "too few draws, too few effective draws or too uneven tilted weights for the interval, or an SE the dtype "
         "cannot resolve",
}


def _bias_large(bias, se):
    """The ``bias`` reason's test: the estimated bias beyond ``BIAS_SE_RATIO`` SEs, or not finite."""
    return (jnp.abs(bias) > BIAS_SE_RATIO * se) | ~jnp.isfinite(bias)


def _few(ess, draws):
    """One prompt's ``few`` reason: too few effective draws, or too uneven tilted weights."""
    return (ess < ESS_MIN) | (unevenness(ess, draws) > SPREAD_MAX)


def unevenness(ess, draws):
    """``(N/ESS - 1)/ESS``: the tilted weights' squared coefficient of variation per effective draw."""
    return jnp.maximum(draws / ess - 1, 0) / ess


def reason_names(code):
    """``'bias+tail'`` for a reasons bitmask (``''`` for a trusted point); an array gives an array of them."""
    arr = np.asarray(code)
    if arr.ndim:
        return np.vectorize(reason_names, otypes=[object])(arr)
    code = int(arr)
    return "+".join(name for bit, name in REASON_NAMES.items() if code & bit)


class TiltStats(NamedTuple):
    """Tilted statistics per prompt and beta.

    Fields of shape ``[prompts, betas]``:
      betas: the betas.
      log_z: ``log E_pi0[exp(r/beta)]``.
      gain: ``E_beta[s] - E_0[s]`` (Def. 1; covariance form, Thm. 2).
      kl: ``KL(pi_beta || pi0)`` (Def. 2). reverse_kl: ``KL(pi0 || pi_beta)``.
      jeffreys: ``kl + reverse_kl``; ``gain == beta * jeffreys`` when scores are the rewards.
        These five are bias-corrected by default (the plug-in estimate minus its estimated
        second-order bias, below; ``bias_correction=False`` gives the plug-in estimates).
      gain_bias, kl_bias: the estimated bias of the plug-in gain and KL (``E[plug-in] - truth``
        to order ``1/ESS``; MATH §3b, :func:`jaxlimits.moments.bias_terms`).
      mean_r, var_r: tilted mean and variance of the reward (``d kl / d beta = -var_r / beta^3``).
      cov_sr: tilted covariance of score and reward (``d gain / d beta = -cov_sr / beta^2``).
      ess: Kish's effective sample size of the tilted weights, in draws.
      gain_se, kl_se, reverse_kl_se: delta-method standard errors (0 for an exact law; NaN where
        the samples' dtype cannot resolve them: the formula's terms cancel below its rounding, as
        in float32 with base weights on one sample; see ``moments.resolved``; use float64).
      khat: PSIS k-hat of the tilted weights (:mod:`jaxlimits.psis`; NaN where not computed:
        fewer than 25 draws, tied top weights, an exact law, or sample-sharded sweeps).
      reasons: why the estimate cannot be trusted, a bitmask of ``BIAS``, ``TAIL``, ``NO_TILT``,
        ``CEILING`` and ``FEW`` (0: trusted; :func:`reason_names` spells it).
      saturated: ``reasons != 0``: the estimate cannot be trusted.
      gain_lo, gain_hi, kl_lo, kl_hi: the 95% interval (``jaxlimits.tail_bound.LEVEL``): the lower
        limit ``estimate - z se``; the upper limit also allows for an unseen exponential tail
        beyond the top draws (:mod:`jaxlimits.tail_bound`; ``inf`` where that tail's tilt may not
        exist), ``estimate + z se`` where the tail is not modelled. Two-valued rewards (pass/fail):
        the binomial interval of the pass rate mapped through the tilt (:mod:`jaxlimits.two_valued`).
        These are the intervals the trust rule was calibrated with.
      gain_tail, gain_tail_sd, kl_tail, kl_tail_sd: the exponential-tail model's value and SE
        (NaN where it is not applied: importance weights, scores for the gain, ties, streaming
        and sample-sharded sweeps).

    Fields of shape ``[prompts]``:
      draws: number of draws ``N`` (sum of counts).
      kl_ceiling: the largest KL the samples can show, ``-log u(argmax r)`` (``log(N/m)`` for
        ``m`` plain samples tied at the maximum; MATH.md §5).
    """

    betas: Array
    log_z: Array
    gain: Array
    kl: Array
    reverse_kl: Array
    jeffreys: Array
    mean_r: Array
    var_r: Array
    cov_sr: Array
    ess: Array
    gain_se: Array
    kl_se: Array
    reverse_kl_se: Array
    saturated: Array
    draws: Array
    kl_ceiling: Array
    gain_bias: Array
    kl_bias: Array
    khat: Array
    reasons: Array
    gain_lo: Array
    gain_hi: Array
    kl_lo: Array
    kl_hi: Array
    gain_tail: Array
    gain_tail_sd: Array
    kl_tail: Array
    kl_tail_sd: Array

    def _columns(self):
        return tables.columns(self, shape_of="gain", index=("prompt", "beta_index"))

    def _summary(self):
        return tables.summary(self, shape_of="gain", headline=[
            f"beta {tables.span(self.betas)}", f"KL {tables.span(self.kl)}", f"gain {tables.span(self.gain)}",
            tables.flagged(self.reasons)])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def reason_bit(condition, bit: int) -> Array:
    """``bit`` where ``condition`` holds, else 0, as ``int32`` (bitmasks never mix integer widths)."""
    return jnp.where(condition, jnp.int32(bit), jnp.int32(0))


def trust_reasons(gain_bias, gain_se, kl_bias, kl_se, khat, kl, kl_ceiling, ess, draws, modelled=False,
                  heavier=False) -> Array:
    """One prompt's trust rule: an ``int32`` bitmask of reasons per point (0: trusted); shapes broadcast.

    ``modelled``: the upper limits allow for an unseen exponential tail (:mod:`jaxlimits.tail_bound`);
    there the interval covers without the ``few`` clause's ESS and unevenness tests, and ``tail``
    means the largest draws reject that tail for a heavier one (``heavier``) instead of k-hat >
    ``KHAT_MAX`` (which selected the data sets whose largest draws happened to be small)."""
    heavy = jnp.where(modelled, heavier, (khat > KHAT_MAX) & ~(khat >= KHAT_NO_TILT))
    return (
        reason_bit((~modelled & _few(ess, draws)) | jnp.isnan(gain_se) | jnp.isnan(kl_se), FEW)
        | reason_bit(_bias_large(gain_bias, gain_se) | _bias_large(kl_bias, kl_se), BIAS)
        | reason_bit(heavy, TAIL)
        | reason_bit(khat >= KHAT_NO_TILT, NO_TILT)
        | reason_bit(kl > KL_CEILING_FRACTION * kl_ceiling, CEILING)
    )


def residual_bias(bias, ess):
    """``|bias| / ESS``: the order of the bias left after the correction (0 where the bias is 0)."""
    return jnp.where(bias == 0, 0, jnp.abs(bias) / ess)


def pooled_reasons(gain_bias, gain_se, kl_bias, kl_se, mean_khat, mean_draws, mean_unevenness, no_tilt_share,
                   ceiling_share, gain_residual, kl_residual, gain_bias_rms_ratio, kl_bias_rms_ratio,
                   modelled_share=0.0, heavier_share=0.0) -> Array:
    """A pooled point's trust rule (means over prompts; ``[B]``): an ``int32`` bitmask.

    ``gain_residual``, ``kl_residual``: means over prompts of :func:`residual_bias`;
    ``*_bias_rms_ratio``: root-mean-square bias over root-mean-square SE (NaN where both are 0);
    ``modelled_share``: the share of prompts whose upper limits allow for an unseen tail
    (:mod:`jaxlimits.tail_bound`): from ``1 - SHARE_MAX`` on, the unevenness clause is not applied
    (the interval covers without it) and ``tail`` means that more than ``SHARE_MAX`` of the prompts'
    largest draws reject the exponential tail for a heavier one (``heavier_share``) instead of the
    mean k-hat test (which selected the pools whose largest draws happened to be small).
    """
    modelled = modelled_share >= 1 - SHARE_MAX
    def large(residual, bias, se, rms_ratio):
        return ((residual > RESIDUAL_SE_RATIO * se) | (rms_ratio > BIAS_RMS_RATIO) | ~jnp.isfinite(residual)
                | ~jnp.isfinite(bias) | (jnp.isinf(rms_ratio)))

    return (
        reason_bit((mean_draws < DRAWS_MIN) | (~modelled & (mean_unevenness > SPREAD_MAX)) | jnp.isnan(gain_se)
                   | jnp.isnan(kl_se), FEW)
        | reason_bit(large(gain_residual, gain_bias, gain_se, gain_bias_rms_ratio)
                     | large(kl_residual, kl_bias, kl_se, kl_bias_rms_ratio), BIAS)
        | reason_bit(jnp.where(modelled, heavier_share > SHARE_MAX,
                               mean_khat > KHAT_POOLED_FRACTION * psis.khat_threshold(mean_draws)), TAIL)
        | reason_bit(no_tilt_share > SHARE_MAX, NO_TILT)
        | reason_bit(ceiling_share > SHARE_MAX, CEILING)
    )


def stats_of_tile(ref, sums, lam, arrays=None, *, has_scores: bool, exact: bool,
                  bias_correction: bool = True, khat: bool = True) -> TiltStats:
    """The :class:`TiltStats` of a tile from its sums (``arrays``: the tile's samples, for PSIS k-hat
    (``khat``) and the exponential-tail upper limits; without them both are NaN)."""
    t = moments.finalize(ref, sums, lam, has_scores=has_scores, exact=exact)
    draws = sums.draws
    kl_ceiling = moments.kl_ceiling(sums)
    nan = jnp.full(lam.shape, jnp.nan, lam.dtype)
    k_hat, bound = nan, None
    if arrays is not None and not exact:
        rewards, _, log_weights, counts, mask = arrays
        top = None if log_weights is not None else psis.top_draws(rewards, counts=counts, mask=mask)
        if khat:
            k_hat = psis.tilted_khat(rewards, lam, log_weights=log_weights, counts=counts, mask=mask, top=top)
        if top is not None:
            bound = tail_bound.exponential_tail(top, lam, t.log_z, t.mean_r, ref.r_bar, ref.r_max, draws)
    log_z, gain, kl, rkl, jd = t.log_z, t.gain, t.kl, t.reverse_kl, t.jeffreys
    if bias_correction:  # where the bias term itself overflows (extreme float32 magnitudes) the plug-in stays
        fix = lambda x, b: jnp.where(jnp.isfinite(x - b), x - b, x)  # noqa: E731  (and the point is flagged)
        log_z = fix(log_z, t.log_z_bias)
        gain = fix(gain, t.gain_bias)
        kl = fix(kl, t.kl_bias)
        rkl = fix(rkl, t.reverse_kl_bias)
        jd = fix(jd, t.kl_bias + t.reverse_kl_bias)
    gain_model = kl_model = gain_sd = kl_sd = nan
    heavier = False
    if bound is not None:
        heavier = bound.heavier[:, None]
        kl_model, kl_sd = bound.kl, bound.kl_sd
        if not has_scores:  # the tail of other scores is not modelled
            gain_model, gain_sd = bound.gain, bound.gain_sd
    gain_lo, kl_lo = tail_bound.lower_limit(gain, t.gain_se), tail_bound.lower_limit(kl, t.kl_se)
    gain_hi = tail_bound.upper_limit(gain, t.gain_se, gain_model, gain_sd)
    kl_hi = tail_bound.upper_limit(kl, t.kl_se, kl_model, kl_sd)
    gain_ok, kl_ok = ~jnp.isnan(gain_model), ~jnp.isnan(kl_model)
    ceiling = kl_ceiling[:, None]
    if not exact and sums.tilted_w is None:  # two-valued rewards (plain samples, counts): the binomial interval
        two = _two_valued(ref, sums)
        b_lo, b_hi, bk_lo, bk_hi = two_valued.limits(two, draws, ref.r_max, lam)
        is_two = (two.two_valued & (draws >= DRAWS_MIN))[:, None]
        # the samples see the whole two-point law: its KL up to the ceiling log(1/p) is p's, no saturation
        ceiling = jnp.where(is_two, jnp.inf, ceiling)
        kl_lo = jnp.where(is_two, jnp.minimum(bk_lo, kl), kl_lo)
        kl_hi = jnp.where(is_two, jnp.maximum(bk_hi, kl), kl_hi)
        kl_ok = kl_ok | is_two
        if not has_scores:
            gain_lo = jnp.where(is_two, jnp.minimum(b_lo, gain), gain_lo)
            gain_hi = jnp.where(is_two, jnp.maximum(b_hi, gain), gain_hi)
            gain_ok = gain_ok | is_two
    if exact:
        reasons = jnp.zeros(lam.shape, jnp.int32)
    else:
        reasons = trust_reasons(t.gain_bias, t.gain_se, t.kl_bias, t.kl_se, k_hat, kl, ceiling, t.ess,
                                draws[:, None], modelled=gain_ok & kl_ok, heavier=heavier)
    return TiltStats(
        1 / lam, log_z, gain, kl, rkl, jd, t.mean_r, t.var_r, t.cov_sr,
        t.ess, t.gain_se, t.kl_se, t.reverse_kl_se, reasons != 0, draws, kl_ceiling,
        t.gain_bias, t.kl_bias, k_hat, reasons, gain_lo, gain_hi, kl_lo, kl_hi,
        gain_model, gain_sd, kl_model, kl_sd,
    )


def _two_valued(ref, sums) -> two_valued.TwoValued:
    """Which prompts' draws take two values, from the sums (base variance from the centred moments)."""
    m1 = sums.moments1[:, :, 0]  # sum v x~^k, x~ = (r - r_bar) / R
    mean_x = m1[:, 1] / m1[:, 0]
    var_r = ref.r_scale**2 * (m1[:, 2] / m1[:, 0] - mean_x**2)
    return two_valued.detect(sums.draws, jnp.exp(sums.log_top_mass), ref.r_bar, ref.r_max, var_r)


@functools.partial(jax.jit, static_argnames=("plan", "bias_correction", "largest"))
def _tilt(samples: Samples, lam: Array, plan: _sweep.Plan, bias_correction: bool = True,
          largest: bool = True) -> TiltStats:
    """``largest=False``: from the mergeable sums alone, as streaming and sample-sharded sweeps
    compute them (no k-hat, no tail model: the rule for tails that are not modelled)."""
    fn = functools.partial(stats_of_tile, has_scores=samples.has_scores, exact=samples.exact,
                           bias_correction=bias_correction)
    return _sweep.sweep(samples, lam, plan, fn, with_samples=largest)


def tilt(samples: Samples, betas, *, bias_correction: bool = True, memory_budget: int | None = None) -> TiltStats:
    r"""Tilted statistics of every prompt at every beta (MATH.md §3).

    .. math::

       p_i = \mathrm{softmax}(\log u + r/\beta)_i, \quad
       \widehat{\Delta} = \textstyle\sum p_i s_i - \sum u_i s_i, \quad
       \widehat{KL} = \textstyle\sum p_i \log(p_i/u_i).

    Jit-compiled; the ``[prompts, samples, betas]`` cube is processed in tiles that fit
    ``memory_budget`` and is never materialised. Differentiable with respect to the betas and
    the rewards (``jax.grad``); ``d(beta log Z)/d beta = -kl`` (MATH.md §4).

    Args:
      samples: :class:`Samples` ``[P, N]``.
      betas: ``[B]`` (shared) or ``[P, B]`` (per prompt) positive KL penalties.
      bias_correction: report the bias-corrected estimates (default; MATH §3b: the plug-in
        minus its second-order bias, which is ``O(1/ESS)`` while what is left is ``O(1/ESS^2)``);
        False reports the plug-in estimates of Definitions 1 and 2. Either way the fields
        ``gain_bias`` and ``kl_bias`` hold the estimated bias and ``reasons`` the trust rule.
      memory_budget: bytes of working memory for the sweep (default 256 MiB).

    Returns:
      :class:`TiltStats` with ``[P, B]`` fields.

    Raises:
      ValueError: for a beta that is not positive and finite, or a budget too small.

    Examples:
      >>> import jax.numpy as jnp, jaxlimits as jl
      >>> law = jl.Samples.from_law([[0.0, 1.0]], [[0.5, 0.5]])
      >>> st = jl.tilt(law, jnp.array([1.0]))
      >>> round(float(st.gain[0, 0]), 6)  # e/(1+e) - 1/2
      0.231059
    """
    check_samples(samples, "tilt")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    lam = _sweep.as_lambda(betas, samples.num_prompts, samples.dtype)
    n_eval = lam.shape[1]  # exp(lam x') slab (its square is among _sweep.COPIES)
    p = _sweep.kernel_plan(samples.num_prompts, samples.num_samples, n_eval, lam.dtype.itemsize, memory_budget,
                           counts=samples.counts is not None)
    return _tilt(samples, lam, p, bool(bias_correction))
