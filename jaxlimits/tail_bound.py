r"""Upper confidence limits that allow for the part of the reward law the samples have not seen.

The delta-method interval ``estimate +- z se`` of :mod:`jaxlimits.estimators` judges the tilt by
the draws at hand. Its failure is one-sided: a data set that happens to lack the rare large
rewards has both a low estimate and a small SE, so the interval sits below the truth (one prompt
of exponential rewards, N = 1,024: 7% of the intervals miss below at KL 0.001, 29% at KL 0.28;
`benchmarks/README.md`). Pooling over prompts does not cure it where the tilt leans on the tail.

The upper limit here lets the unseen tail be as heavy as an **exponential tail** fitted to the
``M`` largest draws (``M = jaxlimits.psis.tail_size(N)``; threshold ``u``, the ``(M+1)``-th
largest): the empirical law below ``u`` (its draws keep their mass ``1/N``) and, above it, mass
``M/N`` with ``r = u + Y``, ``Y`` exponential with mean ``sigma`` (Coles 2001, ch. 4: the limit
law of the exceedances of every law in the Gumbel domain, e.g. normal, Gumbel, exponential, and
heavier than any bounded law's). With ``lam = 1/beta``, ``g = 1/(1 - lam sigma)`` and sums over
the body (draws below the top ``M``) in units of ``exp(lam r_max)``,

.. math::

   Z = Z_{body} + \frac MN e^{\lambda (u - r_{max})} g, \quad
   E_\beta[r] - u = \frac{X_{body} + \frac MN e^{\lambda (u - r_{max})} g \cdot \sigma g}{Z}, \quad
   E_0[r] = \bar r + \frac MN (\sigma - \hat\sigma),

   \mathrm{gain} = E_\beta[r] - E_0[r], \qquad
   \mathrm{KL} = \lambda E_\beta[r] - \log Z - \lambda r_{max}.

The model's value at the fitted scale ``sigma_hat`` (the mean exceedance) is its estimate; its
SE is the distance to the value at the scale's upper ``(1 + LEVEL)/2`` limit
``2 M sigma_hat / chi^2_{(1-LEVEL)/2}(2M)`` (exact for exponential exceedances), over ``z``. The
tilt of the model does not exist where ``lam sigma >= 1``: there its value is ``inf``.

The reported interval is ``[estimate - z se, max(estimate + z se, model + z sqrt(sd^2 + se^2))]``
(pooled: sums over prompts, as for the SE). Only the upper limit moves: it covered 94-99% of
simulated data sets at every KL up to the sample ceiling for normal, uniform, Beta, Gumbel and
exponential rewards at N = 64-4,096, one prompt or pooled over 100 (the delta-method interval:
30-95%), at 1.1-1.9x the width where the tilt is moderate (`benchmarks/README.md`).

Not modelled (the upper limit is the delta method's there): importance-weighted samples (the
tail of the weighted law is not the rewards'), the gain measured with scores other than the
rewards (their tail is not modelled; the KL's limit still is), prompts with fewer than
``psis.MIN_TAIL`` tail draws, and tails made of ties (more than ``TIED_SHARE_MAX`` of the top
``M`` draws equal to the largest or to the threshold: binary or few-valued rewards, whose law is
bounded and fully seen).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import psis

Array = jax.Array

#: Coverage of the intervals of :class:`jaxlimits.TiltStats` and :class:`jaxlimits.Frontier`.
LEVEL = 0.95
#: The normal quantile of ``LEVEL`` (two-sided).
Z = 1.959963984540054
#: A tail with more than this share of its draws tied (at the largest reward or at the threshold)
#: is a few-valued law: not modelled.
TIED_SHARE_MAX = 0.25


class TailBound(NamedTuple):
    """The exponential-tail model of each (prompt, beta), ``[P, B]``.

    Attributes:
      gain, kl: the model's values at the fitted scale (``inf`` where its tilt does not exist).
      gain_sd, kl_sd: their SEs from the scale's upper limit (``inf`` where the tilt at that
        limit does not exist).
      applies: ``[P]`` booleans: the prompt's tail is modelled (else the values are NaN).
      heavier: ``[P]`` booleans: the largest draws reject the exponential tail for a heavier one
        (a generalised Pareto shape ``xi > 0`` selected by the likelihood-ratio test of
        :mod:`jaxlimits.tail`, at 5%): the model's premise fails and the tilt may not exist at
        any beta. Measured rates: 0-1.7% of normal, Gumbel and exponential prompts (N = 64-4,096);
        Student-t(3) (no tilt): 6% at N = 64, 27% at 256, 62% at 1,024, 93% at 4,096.
    """

    gain: Array
    gain_sd: Array
    kl: Array
    kl_sd: Array
    applies: Array
    heavier: Array


def _scale_factors(k_slots: int, dtype) -> Array:
    """``[k_slots]``: ``2 m / chi^2_{(1 - LEVEL)/2}(2 m)`` for ``m`` tail draws (1 for ``m = 0``)."""
    from scipy.stats import chi2

    m = np.arange(k_slots)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(m > 0, 2 * m / chi2.ppf((1 - LEVEL) / 2, 2 * np.maximum(m, 1)), 1.0)
    return jnp.asarray(f, dtype)


def exponential_tail(top: tuple[Array, Array], lam: Array, log_z: Array, mean_r: Array, r_bar: Array,
                     r_max: Array, draws: Array) -> TailBound:
    """The exponential-tail model's gain and KL and their SEs at every (prompt, beta).

    Args:
      top: :func:`jaxlimits.psis.top_draws` of the prompts' (plain, or counted) rewards.
      lam: ``[P, B]`` inverse temperatures ``1/beta``.
      log_z, mean_r: ``[P, B]`` the plug-in ``log E_0[exp(lam r)]`` and tilted mean reward of the
        samples (:class:`jaxlimits.moments.Tilted`).
      r_bar, r_max, draws: ``[P]`` the base mean reward, the largest reward and the number of draws.

    Returns:
      A :class:`TailBound`. The body's sums are the samples' minus the top ``M`` draws' (no
      exponential over the other draws); where that difference is below the rounding of the
      whole, the body is dropped (a larger tilted mean: the limit errs upwards).
    """
    top_r, m = top
    dtype = lam.dtype
    k_slots = top_r.shape[-1]
    idx = jnp.arange(k_slots)
    in_tail = idx[None, :] < m[:, None]  # [P, K]
    u = jnp.take_along_axis(top_r, m.astype(jnp.int32)[:, None], axis=-1)[:, 0]  # threshold [P]
    mf = m.astype(dtype)
    exceed = jnp.where(in_tail, top_r - u[:, None], 0)
    sigma = jnp.sum(exceed, axis=-1) / jnp.maximum(mf, 1)
    tied = jnp.where(in_tail, (top_r == top_r[:, :1]) | (top_r == u[:, None]), False)
    applies = ((m >= psis.MIN_TAIL) & jnp.isfinite(u)
               & (jnp.sum(tied, axis=-1) <= TIED_SHARE_MAX * mf) & (sigma > 0))
    sigma_hi = sigma * _scale_factors(k_slots, dtype)[m.astype(jnp.int32)]
    from . import tail as gpd  # (here: jaxlimits.tail imports the estimators, which import this module)

    heavier = applies & (gpd._fit(jax.lax.stop_gradient(exceed), m).xi > 0)

    q = (mf / draws)[:, None]  # the tail's mass M/N
    lam3 = lam[:, :, None]
    rel = jnp.where(in_tail, top_r - r_max[:, None], -jnp.inf)[:, None, :]  # <= 0
    e = jnp.exp(lam3 * rel)  # [P, B, K]: the top draws' tilted weights in units of exp(lam r_max)
    s0 = jnp.sum(e, axis=-1) / draws[:, None]
    s1 = jnp.sum(e * exceed[:, None, :], axis=-1) / draws[:, None]
    a = jnp.exp(log_z - lam * r_max[:, None])  # E_0[exp(lam (r - r_max))]
    z_body = a - s0
    resolved = z_body > 64 * jnp.finfo(dtype).eps * a
    z_body = jnp.where(resolved, z_body, 0)
    x_body = jnp.where(resolved, jnp.minimum(a * (mean_r - u[:, None]) - s1, 0), 0)  # body draws are <= u
    eu = jnp.exp(lam * (u - r_max)[:, None])
    du = (r_bar - u)[:, None]
    ru = lam * (r_max - u)[:, None]

    def at(scale):
        ls = lam * scale[:, None]
        exists = ls < 1
        g = 1 / jnp.where(exists, 1 - ls, 1)
        zt = q * eu * g
        z = z_body + zt
        mt = (x_body + zt * scale[:, None] * g) / z  # tilted mean minus u
        gain = mt - (du + q * (scale - sigma)[:, None])
        kl = lam * mt - jnp.log(z) - ru
        inf = jnp.asarray(jnp.inf, dtype)
        return jnp.where(exists, gain, inf), jnp.where(exists, kl, inf)

    g0, k0 = at(sigma)
    g1, k1 = at(sigma_hi)
    sd = lambda hi, lo: jnp.where(jnp.isfinite(hi), jnp.abs(hi - lo) / Z, jnp.inf)  # noqa: E731
    nan = jnp.asarray(jnp.nan, dtype)
    ok = applies[:, None]
    return TailBound(jnp.where(ok, g0, nan), jnp.where(ok, sd(g1, g0), nan), jnp.where(ok, k0, nan),
                     jnp.where(ok, sd(k1, k0), nan), applies, heavier)


def upper_limit(estimate: Array, se: Array, model: Array, model_sd: Array) -> Array:
    """``max(estimate + z se, model + z sqrt(model_sd^2 + se^2))`` (the first alone where the model is NaN)."""
    wald = estimate + Z * se
    tail = model + Z * jnp.sqrt(model_sd**2 + se**2)
    return jnp.where(jnp.isnan(model), wald, jnp.maximum(wald, tail))


def lower_limit(estimate: Array, se: Array) -> Array:
    """``estimate - z se``."""
    return estimate - Z * se

