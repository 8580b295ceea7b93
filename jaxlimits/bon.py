r"""Best-of-n held against the frontier (MATH.md §8).

Best-of-n (BoN) draws ``n`` responses from the base model and keeps the one with the highest
reward ``r``. From ``N >= n`` i.i.d. base samples of a prompt:

* **Expected score** by the unbiased U-statistic over all ``n``-subsets: sort by ``r``
  ascending, then

  .. math::

     \widehat{E}[s(\mathrm{BoN}_n)] = \sum_{i=n}^{N} \frac{\binom{i-1}{n-1}}{\binom{N}{n}}\, s_{(i)},

  with ``s`` averaged within each tie group of ``r`` (exact for uniform tie-breaking). A tie
  group (or a row of count ``m``) covering draws ``a+1 .. b`` in the sorted order gets the
  weight ``(C(b, n) - C(a, n)) / C(N, n)`` (hockey-stick identity), computed in log space with
  ``betaln``. Its standard error is the jackknife (the leave-one-out statistics of a
  U-statistic follow from prefix and suffix sums, exactly, in ``O(N)`` per prompt).
* **KL** three ways: the analytic ``log n - (n-1)/n`` (continuous rewards; an upper bound with
  ties), the exact discrete formula on the (empirical or exact) law with distinct levels
  ``v_1 < .. < v_J``, masses ``q_j`` and CDF ``F_j``,

  .. math::

     \mathrm{KL}(\pi_n \| \pi_0) = \sum_j (F_j^n - F_{j-1}^n) \log\frac{F_j^n - F_{j-1}^n}{q_j},

  and Beirami et al.'s estimator from the base-model probability ``eps`` of the selected
  response (:func:`beirami_kl`), averaged over BoN draws (the same U-statistic weights).
* **Win rate** against a base draw (ties count one half), the unbiased U-statistic of degree
  ``n + 1``; the **win-rate frontier** is the ordinary frontier with the reward replaced by its
  within-prompt mid-rank quantile ``Q(r) = F(r-) + P(r)/2``.
* **Efficiency**: ``gain_BoN / gain*(K_n)`` with ``gain*`` the frontier (``jaxlimits.max_gain_at_kl``).

Soft best-of-n (:func:`soft_best_of_n`) picks among the ``n`` draws with probability
``softmax(r / lam)``; its expected score is estimated by resampling subsets.

The parts, by concept: :mod:`jaxlimits.binomial` (log-binomial numerics),
:mod:`jaxlimits.ustatistics` (the tie-group U-statistics, their jackknife and their input checks),
:mod:`jaxlimits.bon_kl` (the closed-form KLs), :mod:`jaxlimits.soft_bon` (soft best-of-n) and
:mod:`jaxlimits.targets` (bucketed frontier solves); this module holds :func:`best_of_n` and
re-exports the rest of its public names.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import pooling, tables
from .bon_kl import analytic_kl as analytic_kl
from .bon_kl import beirami_kl as beirami_kl
from .samples import Samples, check_samples
from .soft_bon import SoftBestOfN as SoftBestOfN
from .soft_bon import soft_best_of_n as soft_best_of_n
from .status import MESSAGES, Status
from .targets import TARGET_BUCKET as TARGET_BUCKET
from .targets import solve_bucketed
from .ustatistics import check_iid, check_log_probs, check_ns, core, prepare

Array = jax.Array

#: How the KL of each prompt's BoN policy is chosen for the frontier comparison (``kl``).
KL_METHODS = ("auto", "analytic", "exact", "beirami")


# ----------------------------------------------------------------------------------------------
# Results.


class BestOfNPrompts(NamedTuple):
    """Per-prompt best-of-n statistics, each ``[prompts, len(ns)]`` (``draws``: ``[prompts]``).

    Attributes:
      gain, gain_se: expected score gain of BoN (U-statistic) and its jackknife SE.
      reward_gain, reward_gain_se: the same measured with the rewards (equal to ``gain`` without scores).
      kl: the KL used for the frontier comparison (see ``BestOfN.kl_method``).
      kl_exact, kl_beirami: the exact discrete KL and Beirami's estimate (NaN without log-probs).
      win_rate, win_rate_se: probability that BoN beats a base draw (ties count 1/2).
      frontier_gain: the prompt's frontier gain at ``kl`` (NaN where it is not computed).
      efficiency: ``reward_gain / frontier_gain``.
      draws: ``[prompts]`` number of draws ``N``.
      tied: ``[prompts]`` some rewards of the prompt tie.
    """

    gain: Array
    gain_se: Array
    reward_gain: Array
    reward_gain_se: Array
    kl: Array
    kl_exact: Array
    kl_beirami: Array
    win_rate: Array
    win_rate_se: Array
    frontier_gain: Array
    efficiency: Array
    draws: Array
    tied: Array

    def _columns(self):
        return tables.columns(self, shape_of="gain", index=("prompt", "n_index"))

    def _summary(self):
        return tables.summary(self, shape_of="gain", headline=[
            f"gain {tables.span(self.gain)}", f"KL {tables.span(self.kl)}", f"draws {tables.span(self.draws)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "n", "gain", "gain_se", "reward_gain", "reward_gain_se", "kl", "kl_analytic", "kl_exact",
        "kl_beirami", "frontier_gain", "frontier_gain_se", "frontier_beta", "frontier_status",
        "saturated", "frontier_reasons", "efficiency", "win_rate", "win_rate_se", "win_rate_frontier", "prompts",
    ],
    meta_fields=["kl_method", "notices"],
)
@dataclasses.dataclass(frozen=True)
class BestOfN:
    """Best-of-n against the frontier; fields ``[len(ns)]``, pooled over prompts (means).

    Attributes:
      n: the numbers of draws.
      gain, gain_se: expected gain of BoN measured with the scores (U-statistic; SE by the
        jackknife, pooled as ``sqrt(sum se_x^2) / P``; NaN where some prompt has ``N = n``).
      reward_gain, reward_gain_se: the same measured with the rewards ``r`` (what the frontier is
        of; equal to ``gain`` without separate scores).
      kl: the KL of BoN used against the frontier, the mean over prompts of the per-prompt choice
        described by ``kl_method``.
      kl_analytic: ``log n - (n-1)/n``.
      kl_exact: exact discrete KL on each prompt's (empirical or exact) law, mean over prompts.
      kl_beirami: Beirami's estimator averaged over BoN draws, mean over prompts (NaN without
        log-probabilities; see ``notices``).
      frontier_gain, frontier_gain_se, frontier_beta: the pooled frontier at ``kl``
        (``jaxlimits.max_gain_at_kl``); NaN where the KL is at or beyond what the samples show.
      frontier_status: ``jaxlimits.status.Status`` codes of that solve
        (``NOT_COMPUTED`` with ``frontier=False``).
      saturated: the frontier value at ``kl`` cannot be trusted (or was not computed).
      frontier_reasons: the pooled trust rule's reasons at ``kl`` (``int32`` bitmask,
        ``jaxlimits.estimators.reason_names`` spells it; 0 where trusted or not computed).
      efficiency: ``reward_gain / frontier_gain`` (MATH.md §8).
      win_rate, win_rate_se: probability that BoN beats a base draw, ties one half (BoNBoN;
        ``n/(n+1)`` for continuous rewards); NaN where some prompt has ``N < n + 1``.
      win_rate_frontier: the best win rate at ``kl``: 1/2 plus the frontier gain of the
        mid-rank quantiles ``Q(r)``.
      prompts: :class:`BestOfNPrompts`, ``[prompts, len(ns)]``.
      kl_method: how ``kl`` was chosen.
      notices: what the numbers assume or could not compute, for people.
    """

    n: Array
    gain: Array
    gain_se: Array
    reward_gain: Array
    reward_gain_se: Array
    kl: Array
    kl_analytic: Array
    kl_exact: Array
    kl_beirami: Array
    frontier_gain: Array
    frontier_gain_se: Array
    frontier_beta: Array
    frontier_status: Array
    saturated: Array
    frontier_reasons: Array
    efficiency: Array
    win_rate: Array
    win_rate_se: Array
    win_rate_frontier: Array
    prompts: BestOfNPrompts
    kl_method: str
    notices: tuple[str, ...]

    def _columns(self):
        return tables.columns(self, shape_of="n", exclude=("notices",))

    def _summary(self):
        return tables.summary(self, shape_of="n", headline=[
            f"n {tables.span(self.n)}", f"KL {tables.span(self.kl)} ({self.kl_method})",
            f"reward gain {tables.span(self.reward_gain)}", f"efficiency {tables.span(self.efficiency)}",
            f"{int(np.sum(np.asarray(self.saturated)))} of {np.size(self.saturated)} frontier values flagged",
            f"{len(self.notices)} notices" if self.notices else ""])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


# ----------------------------------------------------------------------------------------------
# Public API.


def quantile_samples(samples: Samples) -> Samples:
    r"""The samples with rewards (and scores) replaced by their within-prompt mid-rank quantile.

    ``Q(r) = F(r-) + P(r)/2`` under each prompt's base law (counts and log-weights respected), so
    the frontier of the result is the win-rate frontier minus 1/2 (MATH.md §8): win rate is
    linear in the policy, ``P(Y > Y_0) + P(Y = Y_0)/2 = E_pi[Q(r)]``.

    Examples:
      >>> import jaxlimits as jl
      >>> from jaxlimits import bon
      >>> bon.quantile_samples(jl.Samples([[3.0, 1.0, 2.0, 2.0]])).rewards.tolist()
      [[0.875, 0.125, 0.5, 0.5]]
    """
    st = prepare(samples.neutralised().replace(scores=None), None)
    q = np.zeros_like(st.mid)
    np.put_along_axis(q, st.order, st.mid, axis=1)
    q = np.where(np.asarray(samples.valid()), q, 0.0)
    return Samples.tree_unflatten(
        (samples.exact,), (jnp.asarray(q, samples.dtype), None, samples.log_weights, samples.counts, samples.mask))


def best_of_n(
    samples: Samples,
    ns: Sequence[int] | Array,
    *,
    log_probs=None,
    kl_method: str = "auto",
    frontier: bool = True,
    per_prompt_frontier: bool = False,
    memory_budget: int | None = None,
) -> BestOfN:
    r"""Best-of-n from base-model samples, held against the frontier (MATH.md §8).

    .. math::

       \widehat{E}[s(\mathrm{BoN}_n)] = \sum_{i=n}^{N} \frac{\binom{i-1}{n-1}}{\binom{N}{n}} s_{(i)},
       \qquad \mathrm{efficiency} = \frac{\mathrm{gain}_{BoN}(n)}{\mathrm{gain}^*(K_n)}.

    Args:
      samples: :class:`jaxlimits.Samples` ``[P, N]`` of i.i.d. base draws (counts allowed; an
        exact law, ``Samples.from_law``, gives exact answers). Importance-weighted samples are
        refused: a best-of-n draw needs draws from ``pi0`` itself.
      ns: numbers of draws, each ``1 <= n <= N`` (for samples).
      log_probs: optional ``[P, N]`` base-model log-probabilities of the samples (sequence
        log-probabilities under ``pi0``), for Beirami's KL estimator.
      kl_method: the KL of BoN used against the frontier. ``"auto"``: per prompt, the exact
        discrete formula where rewards tie (or for an exact law: the analytic formula is only an
        upper bound there), the analytic ``log n - (n-1)/n`` where all draws are distinct
        (continuous rewards; the exact formula on N samples saturates at ``log N``).
        ``"analytic"``, ``"exact"`` or ``"beirami"`` (needs ``log_probs``) force one.
      frontier: compute the frontier gain at ``kl``, the efficiency and the win-rate frontier
        (needs ``jaxlimits.max_gain_at_kl``); False skips it (those fields are NaN).
      per_prompt_frontier: also each prompt's own frontier at its own KL
        (``prompts.frontier_gain``, ``prompts.efficiency``).
      memory_budget: bytes of working memory for the frontier solves.

    Returns:
      A :class:`BestOfN` with ``[len(ns)]`` fields (pooled: means over prompts) and per-prompt
      values in ``prompts``.

    Raises:
      ValueError: an ``n`` above some prompt's number of draws, importance-weighted samples,
        log-probabilities that are not ``<= 0``, or an unknown ``kl_method``.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> r = np.random.default_rng(0).uniform(size=(50, 400))
      >>> res = jl.best_of_n(jl.Samples(r), [1, 2, 4], frontier=False)
      >>> [round(float(g) + 0.5, 1) for g in res.gain]  # E[max of n U(0,1)] = n/(n+1)
      [0.5, 0.7, 0.8]
    """
    check_samples(samples, "best_of_n")
    if kl_method not in KL_METHODS:
        raise ValueError(f"kl_method must be one of {', '.join(KL_METHODS)}; got {kl_method!r}")
    samples = samples.neutralised()  # NaN under a mask must not reach the sums
    check_iid(samples, "best_of_n")
    ns_arr = check_ns(ns, samples)
    lp = check_log_probs(log_probs, samples)
    if kl_method == "beirami" and lp is None:
        raise ValueError("kl_method='beirami' needs log_probs: the base-model log-probability of every sample")
    notices: list[str] = []
    res, st = core(samples, ns_arr, lp)
    tied, draws = st.tied, st.big_n
    p, k = samples.num_prompts, len(ns_arr)
    if lp is None:
        notices.append(
            "kl_beirami: not computed (NaN): Beirami's estimator needs the base-model log-probability of each "
            "sample (log_probs)"
        )

    kl_exact, kl_analytic = res["kl_exact"], res["kl_analytic"]
    if kl_method == "auto":
        use_exact = tied | samples.exact
        kl = np.where(use_exact[:, None], kl_exact, kl_analytic)
        if samples.exact:
            notices.append("kl: the exact discrete formula on the exact law")
        else:
            n_exact = int(np.sum(use_exact))
            notices.append(
                f"kl: the exact discrete formula on the {n_exact} of {p} prompts whose rewards tie (log n - (n-1)/n "
                f"is only an upper bound there), log n - (n-1)/n on the {p - n_exact} whose draws are all distinct"
            )
    elif kl_method == "analytic":
        kl = kl_analytic
        if np.any(tied) or samples.exact:
            notices.append("kl: log n - (n-1)/n although rewards tie (it is only an upper bound there)")
    elif kl_method == "exact":
        kl = kl_exact
        if not samples.exact:
            notices.append("kl: the exact discrete formula on the empirical law (it saturates at log N as n nears N)")
    else:
        kl = res["kl_beirami"]
        notices.append("kl: Beirami et al.'s estimator, averaged over best-of-n draws")

    gain, reward_gain = res["u"][..., 0], res["u"][..., 1]
    gain_se, reward_gain_se = res["u_se"][..., 0], res["u_se"][..., 1]
    if not samples.exact and np.any(ns_arr[None, :] >= draws[:, None]):
        notices.append("gain_se: NaN where n equals a prompt's number of draws (a single subset: no jackknife)")
    if not samples.exact and np.any(ns_arr[None, :] + 1 > draws[:, None]):
        notices.append("win_rate: NaN where a prompt has fewer than n + 1 draws (the unbiased estimate needs them)")
    if samples.has_scores:
        notices.append("gain is measured with the scores; efficiency uses reward_gain (the frontier is of the rewards)")

    dt = samples.dtype
    as_dt = lambda x: jnp.asarray(x, dt)  # noqa: E731
    kl = np.maximum(kl, 0.0)  # rounding can leave -1e-17 at n = 1
    kl_pool = kl.mean(axis=0)
    nan = np.full((k,), np.nan)
    frontier_gain, frontier_se, frontier_beta, win_front = nan, nan, nan, nan
    status = np.full((k,), int(Status.NOT_COMPUTED), np.int32)
    saturated = np.ones((k,), bool)
    reasons = np.zeros((k,), np.int32)
    pp_front = np.full(kl.shape, np.nan)
    if frontier:
        from . import inversion

        sol = solve_bucketed(inversion.max_gain_at_kl, samples, kl_pool, memory_budget=memory_budget)
        frontier_gain, frontier_se, frontier_beta = (
            np.asarray(x, np.float64) for x in (sol.gain, sol.gain_se, sol.beta))
        status = np.asarray(sol.status, np.int32)
        saturated = np.asarray(sol.saturated) | (status != Status.OK)
        reasons = np.where(status == Status.OK, np.asarray(sol.reasons), 0).astype(np.int32)
        wsol = solve_bucketed(inversion.max_gain_at_kl, quantile_samples(samples), kl_pool,
                               memory_budget=memory_budget)
        win_front = 0.5 + np.asarray(wsol.gain, np.float64)
        for code in sorted(set(status.tolist()) - {int(Status.OK)}):
            which = [int(n) for n, c in zip(ns_arr, status) if c == code]
            notices.append(f"frontier at n = {which}: {MESSAGES[code]}")
        shaky = np.asarray(sol.saturated) & (status == Status.OK)
        if np.any(shaky):
            from .estimators import reason_names

            why = ", ".join(f"{int(n)}: {reason_names(int(r)) or 'few'}" for n, r in zip(ns_arr[shaky], reasons[shaky]))
            notices.append(f"frontier at n = {[int(n) for n in ns_arr[shaky]]}: flagged by the trust rule ({why})")
        if per_prompt_frontier:
            pp_front = np.asarray(_per_prompt_frontier(samples, as_dt(kl), memory_budget), np.float64)
    elif per_prompt_frontier:
        raise ValueError("per_prompt_frontier needs frontier=True")

    with np.errstate(divide="ignore", invalid="ignore"):  # undefined at n = 1 (zero KL, zero gain)
        pp_eff = np.where((kl > 0) & (pp_front > 0), reward_gain / pp_front, np.nan)
        efficiency = np.where((kl_pool > 0) & (frontier_gain > 0), reward_gain.mean(axis=0) / frontier_gain, np.nan)
    if np.any(efficiency > 1):
        notices.append(
            f"efficiency > 1 at n = {[int(n) for n in ns_arr[efficiency > 1]]}: no policy beats the frontier in "
            f"population, so the frontier estimate is low there (ratio estimators are biased low with few "
            f"effective samples; best-of-n's U-statistic is unbiased): more samples per prompt are needed"
        )
    prompts = BestOfNPrompts(
        gain=as_dt(gain), gain_se=as_dt(gain_se), reward_gain=as_dt(reward_gain), reward_gain_se=as_dt(reward_gain_se),
        kl=as_dt(kl), kl_exact=as_dt(kl_exact), kl_beirami=as_dt(res["kl_beirami"]), win_rate=as_dt(res["win"]),
        win_rate_se=as_dt(res["win_se"]), frontier_gain=as_dt(pp_front), efficiency=as_dt(pp_eff),
        draws=as_dt(draws), tied=jnp.asarray(tied),
    )
    return BestOfN(
        n=jnp.asarray(ns_arr),
        gain=as_dt(gain.mean(axis=0)),
        gain_se=as_dt(pooling.pooled_se(gain_se)),
        reward_gain=as_dt(reward_gain.mean(axis=0)),
        reward_gain_se=as_dt(pooling.pooled_se(reward_gain_se)),
        kl=as_dt(kl_pool),
        kl_analytic=as_dt(kl_analytic[0]),
        kl_exact=as_dt(kl_exact.mean(axis=0)),
        kl_beirami=as_dt(res["kl_beirami"].mean(axis=0)),
        frontier_gain=as_dt(frontier_gain),
        frontier_gain_se=as_dt(frontier_se),
        frontier_beta=as_dt(frontier_beta),
        frontier_status=jnp.asarray(status),
        saturated=jnp.asarray(saturated),
        frontier_reasons=jnp.asarray(reasons),
        efficiency=as_dt(efficiency),
        win_rate=as_dt(res["win"].mean(axis=0)),
        win_rate_se=as_dt(pooling.pooled_se(res["win_se"])),
        win_rate_frontier=as_dt(win_front),
        prompts=prompts,
        kl_method=kl_method,
        notices=tuple(notices),
    )


def _per_prompt_frontier(samples: Samples, kl: Array, memory_budget) -> Array:
    """Each prompt's frontier gain at its own KL budgets ``kl`` ``[P, K]`` (NaN where unsolved)."""
    from . import inversion

    rows = jax.tree.map(lambda x: x[:, None, :], samples)

    def one(sub, budgets):
        return inversion.max_gain_at_kl(sub, budgets, pooled=True, throw=False, memory_budget=memory_budget).gain

    return jax.vmap(one)(rows, kl)


