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

from . import _sweep, moments
from .samples import Samples, check_samples

Array = jax.Array

# -- When to distrust an estimate (MATH.md §3). Calibrated by simulation: see
# benchmarks/calibrate_saturation.py and the table in benchmarks/README.md. With this rule the
# unflagged +-1.96 SE intervals cover 94-95% for normal, uniform and Bernoulli rewards; below
# ESS 200 or ESS/N 0.6 coverage falls to 85-90% and the ratio estimators' bias (-5% to -15%)
# is no longer small beside the SE.
#: An estimate needs an effective sample size of at least this many draws ...
ESS_MIN = 200.0
#: ... and at least this fraction of the draws.
ESS_FRACTION_MIN = 0.6
#: Flag estimates whose KL is above this fraction of what the samples can show (``kl_ceiling``).
KL_CEILING_FRACTION = 0.5


class TiltStats(NamedTuple):
    """Tilted statistics per prompt and beta.

    Fields of shape ``[prompts, betas]``:
      betas: the betas.
      log_z: ``log E_pi0[exp(r/beta)]``.
      gain: ``E_beta[s] - E_0[s]`` (Def. 1; covariance form, Thm. 2).
      kl: ``KL(pi_beta || pi0)`` (Def. 2). reverse_kl: ``KL(pi0 || pi_beta)``.
      jeffreys: ``kl + reverse_kl``; ``gain == beta * jeffreys`` when scores are the rewards.
      mean_r, var_r: tilted mean and variance of the reward (``d kl / d beta = -var_r / beta^3``).
      cov_sr: tilted covariance of score and reward (``d gain / d beta = -cov_sr / beta^2``).
      ess: Kish's effective sample size of the tilted weights, in draws.
      gain_se, kl_se, reverse_kl_se: delta-method standard errors (0 for an exact law; NaN where
        the samples' dtype cannot resolve them: the formula's terms cancel below its rounding, as
        in float32 with base weights on one sample; see ``moments.resolved``; use float64).
      saturated: True where the estimate cannot be trusted (too few effective samples or a KL
        near what the samples can show); see ``ESS_MIN``, ``ESS_FRACTION_MIN``, ``KL_CEILING_FRACTION``.

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


def saturation(ess: Array, kl: Array, draws: Array, kl_ceiling: Array) -> Array:
    """The distrust rule: ``[P, B]`` booleans from the diagnostics (MATH.md §3)."""
    n = draws[:, None]
    return (ess < ESS_MIN) | (ess < ESS_FRACTION_MIN * n) | (kl > KL_CEILING_FRACTION * kl_ceiling[:, None])


def _stats_of_tile(ref, sums, lam, *, has_scores: bool, exact: bool) -> TiltStats:
    t = moments.finalize(ref, sums, lam, has_scores=has_scores, exact=exact)
    draws = sums.draws
    kl_ceiling = moments.kl_ceiling(sums)
    if exact:
        sat = jnp.zeros(lam.shape, bool)
    else:
        sat = saturation(t.ess, t.kl, draws, kl_ceiling)
    return TiltStats(
        1 / lam, t.log_z, t.gain, t.kl, t.reverse_kl, t.jeffreys, t.mean_r, t.var_r, t.cov_sr,
        t.ess, t.gain_se, t.kl_se, t.reverse_kl_se, sat, draws, kl_ceiling,
    )


@functools.partial(jax.jit, static_argnames=("plan",))
def _tilt(samples: Samples, lam: Array, plan: _sweep.Plan, ext=None) -> TiltStats:
    fn = functools.partial(_stats_of_tile, has_scores=samples.has_scores, exact=samples.exact)
    return _sweep.sweep(samples, lam, plan, fn, ext=ext)


def tilt(samples: Samples, betas, *, memory_budget: int | None = None) -> TiltStats:
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
    ext = None if samples.log_weights is not None else _sweep.octave_grid(betas, lam.dtype)
    n_eval = 2 * lam.shape[1] if ext is None else ext[0].shape[0]
    p = _sweep.plan(samples.num_prompts, samples.num_samples, n_eval, lam.dtype.itemsize, memory_budget)
    return _tilt(samples, lam, p, ext)
