r"""The KL-reward Pareto frontier of a prompt set (MATH.md §5-6).

One beta shared by all prompts is optimal for the averaged objective, so the set's frontier is

.. math::

   \mathrm{gain}(\beta) = \frac1P \sum_x \mathrm{gain}_x(\beta), \qquad
   \mathrm{KL}(\beta) = \frac1P \sum_x \mathrm{KL}_x(\beta).

Standard errors are conditional on the prompt set (prompts are independent:
``se = sqrt(sum_x se_x^2) / P``); a bootstrap over each prompt's samples is the check.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, pooling, psis, tables, tail_bound
from .samples import Samples, check_samples

Array = jax.Array

#: The pooled estimate is flagged when more than this share of the prompts is flagged for a tilt
#: that may not exist or the sample ceiling (``jaxlimits.estimators.SHARE_MAX``).
SATURATED_SHARE_MAX = estimators.SHARE_MAX


class Bands(NamedTuple):
    """Bootstrap percentile bands of the pooled frontier, each ``[betas]``."""

    level: float
    gain_lo: Array
    gain_hi: Array
    kl_lo: Array
    kl_hi: Array
    gain_se: Array
    kl_se: Array
    replicates: int

    def _columns(self):
        return tables.columns(self, shape_of="gain_lo")

    def _summary(self):
        return tables.summary(self, shape_of="gain_lo", headline=[
            f"level {self.level:g}", f"{self.replicates} replicates", f"gain {tables.span(self.gain_lo)} (lo)",
            f"{tables.span(self.gain_hi)} (hi)"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


class Frontier(NamedTuple):
    """The pooled frontier; fields ``[betas]`` unless noted.

    Attributes:
      betas: the KL penalties, decreasing (so KL increases along the curve).
      gain, kl, reverse_kl: means over prompts (``gain`` measured with the scores), of the
        bias-corrected per-prompt estimates by default (see :func:`jaxlimits.tilt`).
      gain_se, kl_se: delta-method standard errors of those means.
      gain_bias, kl_bias: mean over prompts of the estimated bias of the plug-in estimates. The
        per-prompt bias does not average out over prompts while the pooled SE shrinks like
        ``1/sqrt(P)``: this is what decides whether a pooled point can be trusted.
      ess_fraction: mean over prompts of ``ess / draws``.
      saturated_share: a share of prompts (:mod:`jaxlimits.pooling`): of those flagged for a tilt
        that may not exist and of those flagged for the sample ceiling
        (:data:`jaxlimits.estimators.NO_TILT`, ``CEILING``), the larger.
      reasons: ``int32`` bitmask per point (0: trusted; ``jaxlimits.estimators.reason_names``),
        the pooled rule of :func:`jaxlimits.estimators.pooled_reasons`: the bias the correction
        leaves against the pooled SE, the mean k-hat, the mean unevenness of the weights, and the
        shares of prompts whose tilt may not exist or that are at their ceiling.
      saturated: ``reasons != 0`` (or ``extrapolated``): the point cannot be trusted as a measurement.
      khat: mean over prompts of the PSIS k-hat (NaN where none was computed); pooled
        (``per_prompt=False``) it and the share of no-tilt prompts are estimated from at most
        ``KHAT_PROMPTS`` = 256 prompts, evenly spaced (the fit costs more than the sweep).
      gain_lo, gain_hi, kl_lo, kl_hi: the 95% interval (``jaxlimits.tail_bound.LEVEL``): lower
        limit ``estimate - z se``; upper limit the larger of ``estimate + z se`` and the mean over
        prompts of the exponential-tail model plus ``z`` times its pooled SE
        (:mod:`jaxlimits.tail_bound`: allows for the tail the samples have not seen; ``inf``
        where that tail's tilt may not exist for some prompt). The intervals the trust rule was
        calibrated with.
      kl_ceiling: scalar, mean over prompts of the largest KL their samples can show.
      prompts: the per-prompt :class:`jaxlimits.TiltStats` ``[prompts, betas]`` (or None).
      bands: bootstrap :class:`Bands` (or None).
      extrapolated: with ``tail="gpd"``, ``[betas]`` booleans: the samples cannot speak there
        (the measured point is flagged ``ceiling``, or has no finite value:
        :func:`jaxlimits.tail.beyond_samples`), so ``gain``, ``kl``, ``reverse_kl``, their
        SEs and intervals there come from the tail model
        (:func:`jaxlimits.tail_curve`: its intervals; SE = the interval's width / 2z, ``inf``
        where it is open), ``reasons`` there are the model's (``no-tilt``: the fitted tail has no tilt
        there, values NaN; 0: none) and ``saturated`` stays True (a model is not a
        measurement). A point flagged for other reasons only keeps its measured values and
        reasons. None without a tail model.
      tail: the :class:`jaxlimits.TailCurve` behind the extrapolated points (its intervals are
        ``gain_lo``, ``gain_hi``, ...; the model per prompt is ``prompt_gain``, ...: ``prompts``
        stays the measured statistics), or None.
    """

    betas: Array
    gain: Array
    kl: Array
    reverse_kl: Array
    gain_se: Array
    kl_se: Array
    ess_fraction: Array
    saturated_share: Array
    saturated: Array
    kl_ceiling: Array
    prompts: estimators.TiltStats | None
    bands: Bands | None
    extrapolated: Array | None
    tail: object
    gain_bias: Array
    kl_bias: Array
    reasons: Array
    khat: Array
    gain_lo: Array
    gain_hi: Array
    kl_lo: Array
    kl_hi: Array

    def _columns(self):
        return tables.columns(self, shape_of="betas")

    def _summary(self):
        import numpy as np

        ok = ~np.asarray(self.saturated) & np.isfinite(np.asarray(self.kl))
        if self.extrapolated is not None:
            ok &= ~np.asarray(self.extrapolated)
        best = (f"largest trusted KL {tables.span(np.asarray(self.kl)[ok].max())} with gain "
                f"{tables.span(np.asarray(self.gain)[ok][np.argmax(np.asarray(self.kl)[ok])])}") if ok.any() else (
            "no trusted point")
        extra = [x for x, on in (("per-prompt stats", self.prompts is not None), ("bands", self.bands is not None),
                                 ("tail model", self.tail is not None)) if on]
        ext = "" if self.extrapolated is None else f"{int(np.sum(np.asarray(self.extrapolated)))} extrapolated"
        return tables.summary(self, shape_of="betas", headline=[
            f"KL {tables.span(self.kl)} nats", best, tables.flagged(self.reasons),
            f"KL ceiling {tables.span(self.kl_ceiling)}", ext, " and ".join(extra) + (" attached" if extra else "")])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


class Pool(NamedTuple):
    """Running sums over prompts of the per-prompt statistics (each ``[B]``, counts scalar)."""

    count: Array
    gain: Array
    kl: Array
    reverse_kl: Array
    gain_var: Array
    kl_var: Array
    ess_fraction: Array
    kl_ceiling: Array
    gain_bias: Array
    kl_bias: Array
    draws: Array  # scalar: sum of the prompts' draws
    khat: Array  # sum of the finite per-prompt k-hats
    khat_count: Array  # how many were finite
    unevenness: Array
    no_tilt: Array  # prompts flagged NO_TILT
    ceiling: Array  # prompts flagged CEILING
    gain_residual: Array  # sum of |gain bias| / ESS: the size of what the correction leaves
    kl_residual: Array
    gain_bias_sq: Array  # sum of squared biases: the scale of the second-order fluctuation
    kl_bias_sq: Array
    reverse_kl_var: Array  # sum of the reverse KL's squared SEs (the inversions' SE)
    gain_tail: Array  # sum of the exponential-tail model's gain (the estimate where not modelled)
    gain_tail_var: Array  # sum of its variance (model sd^2 + se^2; se^2 where not modelled)
    kl_tail: Array
    kl_tail_var: Array
    tail_modelled: Array  # prompts whose upper limits allow for an unseen tail (gain and KL)
    tail_heavier: Array  # modelled prompts whose largest draws reject the exponential tail for a heavier one


def pool_of(st: estimators.TiltStats, weight: Array) -> Pool:
    """Sums over the prompt axis, ``weight`` [P] (0 for padding prompts)."""
    w = weight[:, None]
    s = lambda x: jnp.sum(jnp.where(w > 0, w * x, 0), axis=0)  # noqa: E731  (padding may hold inf: 0 * inf)
    has_k = jnp.isfinite(st.khat)
    flag = lambda bit: s(((st.reasons & bit) != 0).astype(w.dtype))  # noqa: E731
    modelled = ~jnp.isnan(st.gain_tail) & ~jnp.isnan(st.kl_tail)
    return Pool(
        jnp.sum(weight),
        s(st.gain),
        s(st.kl),
        s(st.reverse_kl),
        s(st.gain_se**2),
        s(st.kl_se**2),
        s(st.ess / st.draws[:, None]),
        jnp.sum(weight * st.kl_ceiling),
        s(st.gain_bias),
        s(st.kl_bias),
        jnp.sum(weight * st.draws),
        s(jnp.where(has_k, st.khat, 0)),
        s(has_k.astype(w.dtype)),
        s(estimators.unevenness(st.ess, st.draws[:, None])),
        flag(estimators.NO_TILT),
        # at the ceiling: the flag, or (two-valued prompts, exempt from it alone) the estimate past half of it
        s((((st.reasons & estimators.CEILING) != 0)
           | ((st.kl > estimators.KL_CEILING_FRACTION * st.kl_ceiling[:, None]) & (st.kl_se > 0))).astype(w.dtype)),
        s(estimators.residual_bias(st.gain_bias, st.ess)),
        s(estimators.residual_bias(st.kl_bias, st.ess)),
        s(st.gain_bias**2),
        s(st.kl_bias**2),
        s(st.reverse_kl_se**2),
        *_tail_sums(s, st.gain, st.gain_se, st.gain_tail, st.gain_tail_sd),
        *_tail_sums(s, st.kl, st.kl_se, st.kl_tail, st.kl_tail_sd),
        s(modelled.astype(w.dtype)),
        s((modelled & ((st.reasons & estimators.TAIL) != 0)).astype(w.dtype)),
    )


def _tail_sums(s, estimate, se, model, model_sd):
    """Pool sums of the exponential-tail model (:mod:`jaxlimits.tail_bound`): where a prompt's tail
    is not modelled, its estimate and SE stand in, so the pooled limit is never below the delta
    method's."""
    modelled = ~jnp.isnan(model)
    return (s(jnp.where(modelled, model, estimate)),
            s(jnp.where(modelled, model_sd**2, 0) + se**2))


@jax.jit  # one program, not ~40 eager steps each compiled apart (they were most of a warm CLI run)
def from_pool(pool: Pool, betas, prompts=None, bands=None) -> Frontier:
    n = pool.count
    gain_se, kl_se = pooling.se_of_variance_sum(pool.gain_var, n), pooling.se_of_variance_sum(pool.kl_var, n)
    gain_bias, kl_bias = pool.gain_bias / n, pool.kl_bias / n
    khat = jnp.where(pool.khat_count > 0, pool.khat / jnp.maximum(pool.khat_count, 1), jnp.nan)
    no_tilt, ceiling = pool.no_tilt / n, pool.ceiling / n
    reasons = estimators.pooled_reasons(gain_bias, gain_se, kl_bias, kl_se, khat, pool.draws / n,
                                        pool.unevenness / n, no_tilt, ceiling, pool.gain_residual / n,
                                        pool.kl_residual / n, jnp.sqrt(pool.gain_bias_sq / pool.gain_var),
                                        jnp.sqrt(pool.kl_bias_sq / pool.kl_var), pool.tail_modelled / n,
                                        pool.tail_heavier / n)
    # nothing random (an exact law, or rewards that all tie): zero SE and bias, nothing to distrust
    certain = (gain_se == 0) & (kl_se == 0) & (gain_bias == 0) & (kl_bias == 0)
    reasons = jnp.where(certain, jnp.int32(0), reasons)
    gain, kl = pool.gain / n, pool.kl / n
    upper = lambda est, se, tail, var: jnp.maximum(  # noqa: E731
        est + tail_bound.Z * se, tail / n + tail_bound.Z * pooling.se_of_variance_sum(var, n))
    return Frontier(
        betas,
        gain,
        kl,
        pool.reverse_kl / n,
        gain_se,
        kl_se,
        pool.ess_fraction / n,
        jnp.maximum(no_tilt, ceiling),  # the larger of the pooled rule's two shares (jaxlimits.pooling)
        reasons != 0,
        pool.kl_ceiling / n,
        prompts,
        bands,
        None,
        None,
        gain_bias,
        kl_bias,
        reasons,
        khat,
        tail_bound.lower_limit(gain, gain_se),
        upper(gain, gain_se, pool.gain_tail, pool.gain_tail_var),
        tail_bound.lower_limit(kl, kl_se),
        upper(kl, kl_se, pool.kl_tail, pool.kl_tail_var),
    )


@functools.partial(jax.jit, static_argnames=("plan", "per_prompt", "bias_correction", "khat"))
def pool_sweep(samples: Samples, lam: Array, plan: _sweep.Plan, per_prompt: bool,
               bias_correction: bool = True, khat: bool = True):
    fn = functools.partial(estimators.stats_of_tile, has_scores=samples.has_scores, exact=samples.exact,
                           bias_correction=bias_correction)
    if per_prompt:
        st = _sweep.sweep(samples, lam, plan, fn, with_samples=khat)
        return pool_of(st, jnp.ones(st.draws.shape, lam.dtype)), st
    b = lam.shape[1]
    zero = jnp.zeros((b,), lam.dtype)
    scalar = jnp.zeros((), lam.dtype)
    init = Pool(*[scalar if f in ("count", "kl_ceiling", "draws") else zero for f in Pool._fields])

    def reduce(carry, st, ok):
        part = pool_of(st, ok.astype(lam.dtype))
        return jax.tree.map(jnp.add, carry, part)

    # the tiles' samples give the exponential-tail limits (cheap: the top draws); k-hat is fitted
    # on a subset of prompts below. Without k-hat (the inversions' bias passes) neither is computed.
    pool = _sweep.sweep(samples, lam, plan, functools.partial(fn, khat=False), reduce=reduce, init=init,
                        with_samples=khat)
    if khat and not samples.exact:
        pool = _pooled_khat(pool, samples, lam)
    return pool, None


#: The pooled rule's mean k-hat (and share of no-tilt prompts) is estimated from at most this many
#: prompts, evenly spaced: the fit costs several times the sweep per (prompt, beta) (a pooled
#: frontier of 4,000 x 1,024 x 32 took 5x as long with every prompt's), and the mean over 256
#: prompts was within 0.013 of the mean over all 4,000 (normal rewards; tests/test_trust.py).
KHAT_PROMPTS = 256
# working memory of one chunk of the k-hat fit (its profile grid is [prompts, betas, ~40, M])
_KHAT_CHUNK_BYTES = 16 * 2**20


def _pooled_khat(pool: Pool, samples: Samples, lam: Array) -> Pool:
    """The pool's k-hat sums (and no-tilt count) from the k-hat of a subset of prompts, scaled to all."""
    num_p, num_n = samples.rewards.shape
    idx = khat_subset(num_p)
    num_s = idx.size
    pick = lambda a: None if a is None else a[idx]  # noqa: E731
    arrays = [pick(a) for a in (samples.rewards, samples.log_weights, samples.counts, samples.mask, lam)]
    per_prompt = psis.fit_bytes(num_n, lam.shape[1], samples.counts is not None, lam.dtype.itemsize)
    t = int(max(1, min(num_s, _KHAT_CHUNK_BYTES // per_prompt)))
    pad = -num_s % t
    arrays = [None if a is None else jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in arrays]
    chunks = [None if a is None else a.reshape((-1, t) + a.shape[1:]) for a in arrays]

    def one(c):
        r, lw, counts, mask, lam_c = c
        return psis.tilted_khat(r, lam_c, log_weights=lw, counts=counts, mask=mask)

    k = jax.lax.map(one, chunks).reshape((-1, lam.shape[1]))[:num_s]  # [S, B]
    khat, count, no_tilt = subset_khat_sums(k, num_p)
    return pool._replace(khat=khat, khat_count=count, no_tilt=pool.no_tilt + no_tilt)


def khat_subset(num_prompts: int) -> np.ndarray:
    """The prompts whose k-hat the pooled rule uses: at most ``KHAT_PROMPTS``, evenly spaced."""
    return np.linspace(0, num_prompts - 1, min(num_prompts, KHAT_PROMPTS)).round().astype(int)


def subset_khat_sums(k: Array, num_prompts: int):
    """``(khat, khat_count, no_tilt)`` pool sums ``[B]`` from the k-hat ``k`` ``[S, B]`` of
    :func:`khat_subset`'s prompts, scaled to all ``num_prompts``."""
    has = jnp.isfinite(k)
    scale = num_prompts / k.shape[0]
    count = lambda x: scale * jnp.sum(x, axis=0).astype(k.dtype)  # noqa: E731
    return (scale * jnp.sum(jnp.where(has, k, 0), axis=0), count(has),
            count(has & (k >= estimators.KHAT_NO_TILT)))


def _plan_for(samples, betas, memory_budget, khat_in_tiles: bool = True):
    """``lam [P, B]`` and the plan of a sweep (``khat_in_tiles``: the tiles fit k-hat, per-prompt results)."""
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    if np.ndim(betas) != 1:
        raise ValueError("the frontier needs one grid of betas shared by all prompts (shape [betas])")
    lam = _sweep.as_lambda(betas, samples.num_prompts, samples.dtype)
    n_eval = lam.shape[1]  # exp(lam x') slab (its square is among _sweep.COPIES)
    p = _sweep.kernel_plan(samples.num_prompts, samples.num_samples, n_eval, lam.dtype.itemsize, memory_budget,
                           counts=samples.counts is not None, khat=khat_in_tiles)
    return lam, p


def frontier(
    samples: Samples,
    betas=None,
    *,
    num_betas: int = 64,
    per_prompt: bool = True,
    bias_correction: bool = True,
    bootstrap: int = 0,
    key: Array | None = None,
    level: float = 0.95,
    memory_budget: int | None = None,
    progress: bool | None = None,
    tail: str | None = None,
    tail_replicates: int = 200,
) -> Frontier:
    r"""The prompt set's KL-reward frontier (MATH.md §6): pooled means at each shared beta.

    Args:
      samples: :class:`Samples` ``[P, N]``.
      betas: ``[B]`` KL penalties; by default :func:`default_betas` (``num_betas`` points from
        KL near 0 to the saturation ceiling, octave-aligned); any grid costs one exponential per
        (prompt, sample, beta).
      per_prompt: keep the per-prompt statistics (``[P, B]`` each); False pools tile by tile,
        with memory independent of the number of prompts.

        Defaults differ from the CLI's on purpose: ``jaxlimits frontier`` pools
        (``per_prompt=False``) on a 32-point grid (``--num-betas 32``), for files of any number of
        prompts and a table one screen long; the library keeps the per-prompt statistics
        (``Frontier.prompts``) on 64 points for a smooth curve. Pass ``per_prompt=False,
        num_betas=32`` for the CLI's numbers.
      bias_correction: pool the bias-corrected per-prompt estimates (default) or the plug-in
        ones (see :func:`jaxlimits.tilt`).
      bootstrap: number of bootstrap replicates (resampling each prompt's draws) for ``bands``.
      key: ``jax.random`` key of the bootstrap (default ``PRNGKey(0)``).
      level: coverage of the percentile bands.
      memory_budget: bytes of working memory for the sweep.
      progress: show a progress bar (``tqdm``, if installed) while sweeping blocks of prompts;
        ``None`` shows it only for long sweeps on a terminal.
      tail: None (default: only what the samples show) or ``"gpd"``: the points past what the
        samples show (flagged ``ceiling``, or without a finite measured value; points flagged for
        other reasons keep their measured values) come from a model of each prompt's upper
        reward tail (empirical body plus a generalised Pareto tail,
        :func:`jaxlimits.tail_curve`), marked ``extrapolated``, with
        the model's interval (at ``level``) in ``Frontier.tail``. Plain samples, rewards only.
        Off by default: see the README's "Beyond log N" for what its calibration says.
      tail_replicates: bootstrap replicates of the tail model (per threshold).

    Returns:
      A :class:`Frontier`, betas decreasing (KL increasing).

    Raises:
      ValueError: ``tail`` other than None or ``"gpd"``; with ``tail="gpd"``, samples with
        log-weights, counts or scores, or a prompt (named) with too few samples for a tail fit.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> r = np.random.default_rng(0).standard_normal((8, 256))
      >>> f = jl.frontier(jl.Samples(r), [4.0, 2.0, 1.0])
      >>> bool(f.kl[0] < f.kl[1] < f.kl[2])
      True
    """
    check_samples(samples, "frontier")
    if tail not in (None, "gpd"):
        raise ValueError(f"frontier: tail must be None (only what the samples show) or 'gpd' (a generalised Pareto "
                         f"model of the upper reward tail), got {tail!r}")
    if tail is not None:
        from .tail import check_tail_samples

        check_tail_samples(samples, "frontier(tail='gpd')")
    if betas is None:
        num_betas = _sweep.positive_int(num_betas, "num_betas", 2)
        betas = default_betas(samples, num=num_betas, memory_budget=memory_budget)
    betas = np.asarray(betas) if not isinstance(betas, jax.core.Tracer) else betas
    lam, p = _plan_for(samples, betas, memory_budget, khat_in_tiles=bool(per_prompt))
    blocks = _blocks(samples, lam.shape[1], progress)
    if len(blocks) == 1:
        pool, st = pool_sweep(samples, lam, p, per_prompt, bool(bias_correction))
    else:
        pool, st = _frontier_in_blocks(samples, betas, blocks, per_prompt, memory_budget, bool(bias_correction))
    bands = None
    if bootstrap:
        bands = bootstrap_bands(samples, betas, bootstrap, key=key, level=level, memory_budget=memory_budget,
                                bias_correction=bias_correction)
    f = from_pool(pool, jnp.asarray(betas, lam.dtype), st, bands)
    if tail is not None:
        from .tail import extrapolate

        f = extrapolate(f, samples, level=level, replicates=tail_replicates, key=key, memory_budget=memory_budget)
    return f


#: Work (prompts x samples x betas) above which a sweep on a terminal shows a progress bar.
_PROGRESS_WORK = 2e9


def _blocks(samples: Samples, num_betas: int, progress: bool | None) -> list[slice]:
    """Prompt blocks of the sweep: one, unless a progress bar is wanted."""
    num_p = samples.num_prompts
    work = num_p * samples.num_samples * num_betas
    if progress is None:
        import sys

        progress = work > _PROGRESS_WORK and sys.stderr.isatty()
    if not progress or num_p < 2 or isinstance(samples.rewards, jax.core.Tracer):
        return [slice(0, num_p)]
    size = max(1, -(-num_p // 50))
    return [slice(i, min(i + size, num_p)) for i in range(0, num_p, size)]


def _frontier_in_blocks(samples, betas, blocks, per_prompt, memory_budget, bias_correction):
    """The sweep block by block with a progress bar; pooled sums and per-prompt rows combine exactly."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is optional
        tqdm = lambda it, **kw: it  # noqa: E731
    pool, parts = None, []
    for blk in tqdm(blocks, desc="frontier", unit="block", leave=False):
        part = jax.tree.map(lambda a, blk=blk: a[blk], samples)
        lam, p = _plan_for(part, betas, memory_budget, khat_in_tiles=per_prompt)
        pl, st = pool_sweep(part, lam, p, per_prompt, bias_correction)
        pool = pl if pool is None else jax.tree.map(jnp.add, pool, pl)
        parts.append(st)
    st = jax.tree.map(lambda *a: jnp.concatenate(a), *parts) if per_prompt else None
    return pool, st


def resample(samples: Samples, key: Array) -> Samples:
    """One bootstrap replicate: each prompt's draws resampled with replacement, as counts.

    A draw is a row with probability ``m_i / N`` (inverse-CDF sampling, ``O(N log N)`` per prompt).
    Importance weights are kept: the replicate resamples the sampler's draws, not the target law.
    """
    check_samples(samples, "resample")
    valid = samples.valid()
    m = samples.draws()  # [P]
    counts = jnp.where(valid, 1.0 if samples.counts is None else samples.counts, 0).astype(samples.dtype)
    cdf = jnp.cumsum(counts, axis=1)
    n_max = samples.num_samples if isinstance(m, jax.core.Tracer) else int(np.max(np.asarray(m)))
    u = jax.random.uniform(key, (samples.num_prompts, n_max), samples.dtype) * m[:, None]
    idx = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(cdf, u)
    idx = jnp.minimum(idx, samples.num_samples - 1)
    use = (jnp.arange(n_max)[None, :] < m[:, None]).astype(samples.dtype)
    new_counts = jax.vmap(lambda i, w: jnp.zeros(samples.num_samples, samples.dtype).at[i].add(w))(idx, use)
    return Samples.tree_unflatten(
        (False,), (samples.rewards, samples.scores, samples.log_weights, new_counts, samples.mask)
    )


def bootstrap_bands(
    samples: Samples,
    betas,
    replicates: int,
    *,
    key: Array | None = None,
    level: float = 0.95,
    memory_budget: int | None = None,
    bias_correction: bool = True,
) -> Bands:
    """Percentile bands of the pooled frontier over bootstrap replicates (``lax.map`` over them).

    Each replicate's curve is the bias-corrected one by default, like :func:`frontier`'s.
    """
    check_samples(samples, "bootstrap_bands")
    level = float(_sweep.numbers(level, "level"))
    if not 0 < level < 1:
        raise ValueError(f"level must be a coverage strictly between 0 and 1, got {level!r}")
    if samples.exact:
        raise ValueError("an exact law has no sampling error to bootstrap")
    replicates = _sweep.positive_int(replicates, "replicates (bootstrap)", 2)
    key = jax.random.PRNGKey(0) if key is None else key
    lam, p = _plan_for(samples, betas, memory_budget, khat_in_tiles=False)
    curves = _bootstrap(samples, lam, p, jax.random.split(key, replicates), bool(bias_correction))
    q = jnp.asarray([(1 - level) / 2, (1 + level) / 2], lam.dtype)
    g = jnp.quantile(curves[0], q, axis=0)
    k = jnp.quantile(curves[1], q, axis=0)
    return Bands(level, g[0], g[1], k[0], k[1], jnp.std(curves[0], axis=0, ddof=1),
                 jnp.std(curves[1], axis=0, ddof=1), replicates)


@functools.partial(jax.jit, static_argnames=("plan", "bias_correction"))
def _bootstrap(samples, lam, plan, keys, bias_correction: bool = True):
    def one(key):
        rs = resample(samples, key)
        pool, _ = pool_sweep(rs, lam, plan, False, bias_correction=bias_correction, khat=False)
        return pool.gain / pool.count, pool.kl / pool.count

    return jax.lax.map(one, keys)


def _std(x: np.ndarray) -> float:
    """Standard deviation that neither underflows nor overflows (rewards of 1e-300 or 1e300)."""
    top = float(np.max(np.abs(x)))
    return top * float(np.std(x / top)) if top > 0 else 0.0


#: XLA options of the grid's coarse sweep on a CPU: quicker code generation (LLVM's machine-code
#: optimisation off, the elemental emitters; XLA's program passes run in full, no fast math). A
#: cold CLI ``frontier`` of 1M rows was mostly two compilations, this one's and the frontier's:
#: this one compiles in a fifth of the time (4.5 s -> 1.0 s at load 4) and runs ~10x slower
#: (0.02 s -> 0.2 s for 256 x 500 x 65), its KL within 3e-6 of the default compilation's.
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
#: Work (prompts x samples x betas) up to which the coarse sweep is compiled quickly (beyond it the
#: slower run would cost more than the compilation saves).
_QUICK_WORK = 2e7
_coarse_frontier = jax.jit(pool_sweep.__wrapped__, static_argnames=("plan", "per_prompt", "bias_correction", "khat"),
                           compiler_options=_QUICK_COMPILE)


def default_betas(samples: Samples, num: int = 64, *, kl_low: float = 1e-3, ceiling_fraction: float = 0.95,
                  memory_budget: int | None = None) -> np.ndarray:
    """A grid of betas from pooled KL ``kl_low`` to ``ceiling_fraction`` of the KL ceiling.

    A coarse sweep over at most 256 prompts locates the ends; the grid is geometric, decreasing,
    with exactly ``num`` points. Where a whole number of points per octave fits by widening the
    range by at most an octave at each end, the step is a whole fraction of an octave (round
    numbers of betas per doubling); otherwise the ``num`` points span the range evenly.
    """
    check_samples(samples, "default_betas")
    num = _sweep.positive_int(num, "num", 2)
    sub = samples
    if samples.num_prompts > 256:
        idx = np.linspace(0, samples.num_prompts - 1, 256).round().astype(int)
        sub = jax.tree.map(lambda a: a[idx], samples)
    r = np.asarray(sub.rewards, dtype=np.float64)
    valid = np.asarray(sub.valid())
    spread = np.nanmedian([_std(r[p][valid[p]]) for p in range(r.shape[0])])
    top = float(np.max(np.abs(r[valid])))
    scale = spread if spread > 0 else (top if top > 0 else 1.0)
    coarse = scale * np.logspace(4, -4, 65)
    lam, p = _plan_for(sub, coarse, memory_budget, khat_in_tiles=False)
    quick = jax.default_backend() == "cpu" and sub.num_prompts * sub.num_samples * lam.shape[1] <= _QUICK_WORK
    sweep = _coarse_frontier if quick else pool_sweep
    pool, _ = sweep(sub, lam, p, False, bias_correction=False, khat=False)  # the plug-in reaches the ceiling
    f = from_pool(pool, coarse)
    kl = np.asarray(f.kl, dtype=np.float64)
    ceiling = float(f.kl_ceiling)
    if not np.any(kl > 0) or ceiling <= 0:  # constant rewards: any grid shows KL = 0
        return scale * np.logspace(1, -1, num)
    lo_target = min(kl_low, 0.5 * ceiling_fraction * ceiling)
    hi_target = ceiling_fraction * ceiling
    b_hi = float(np.interp(np.log(lo_target), np.log(np.maximum(kl, 1e-300)), np.log(coarse)))
    reach = kl >= hi_target
    b_lo = float(np.log(coarse[np.argmax(reach)])) if reach.any() else float(np.log(coarse[-1]))
    b_hi, b_lo = np.exp(b_hi), np.exp(b_lo)
    if not b_hi > b_lo:
        b_hi, b_lo = b_lo * 10, b_lo
    octaves = np.log2(b_hi / b_lo)
    per_octave = int(np.floor((num - 1) / octaves))
    widen = ((num - 1) / max(per_octave, 1) - octaves) / 2  # octaves added at each end to align
    if per_octave < 1 or widen > 1.0:  # too few points to align without leaving the range: span it
        return b_hi * (b_lo / b_hi) ** (np.arange(num) / (num - 1))
    return b_hi * 2.0 ** (widen - np.arange(num) / per_octave)
