r"""Alignment runs held against the frontier (MATH.md §9).

A run (PPO, GRPO, DPO, ...) reports a measured sequence-level ``KL_run`` and gain ``G_run`` on the
same prompts and reward as the base samples. Against the frontier estimated from those samples:

.. math::

   \text{left on the table} = \mathrm{gain}^*(KL_{run}) - G_{run}, \qquad
   \text{reward efficiency} = \frac{G_{run}}{\mathrm{gain}^*(KL_{run})}, \qquad
   \text{KL efficiency} = \frac{\mathrm{KL}^*(G_{run})}{KL_{run}},

and a point above the frontier is impossible up to estimation error, so it is flagged when it is
above by more than its uncertainty.

Units are a real trap: trainers (TRL, OpenRLHF, verl) log the KL **per token**, and the frontier is
in nats **per sequence**. A run says which it is (``unit``), and a per-token KL needs the mean
completion length; nothing is converted unless the unit is stated, and every conversion is
written into the result's notes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import pooling, tables
from .samples import Samples, check_samples
from .status import MESSAGES, Status, solved

Array = jax.Array

#: Units a run's KL may be given in.
UNITS = ("sequence", "token")


class Run(NamedTuple):
    """One alignment run (or checkpoint): its measured KL and gain.

    Attributes:
      name: a label.
      kl: measured ``KL(pi || pi0)``, in nats per sequence or per token (``unit``).
      gain: measured gain ``E_pi[r] - E_0[r]`` in the reward the frontier is of.
      kl_se, gain_se: their standard errors; None (the default) where not given: the above-frontier
        flag then counts only the frontier's uncertainty (as for 0, an exact value), and
        :class:`Comparison` reports the SE as missing.
      unit: ``"sequence"`` (default) or ``"token"``.
      completion_length: the mean completion length in tokens, needed when ``unit == "token"``
        (sequence KL = per-token KL x length).
    """

    name: str
    kl: float
    gain: float
    kl_se: float | None = None
    gain_se: float | None = None
    unit: str = "sequence"
    completion_length: float | None = None


def _as_run(run) -> Run:
    """A :class:`Run`, a dict or a tuple of its fields, as a :class:`Run` (unchecked)."""
    if isinstance(run, Mapping):
        return Run(**run)
    return run if isinstance(run, Run) else Run(*run)


def _se_given(run: Run) -> tuple[bool, bool]:
    """Whether the run gave its KL's and its gain's standard errors (not None)."""
    return run.kl_se is not None, run.gain_se is not None


def check_run(i: int, run, columns: Mapping[str, str] | None = None) -> Run:
    """``run`` (a :class:`Run`, a dict or a tuple of its fields) as a checked :class:`Run`; a standard
    error not given (None) becomes 0.0 (what the flag uses; :func:`compare` reports it as missing).

    ``columns`` names the table column a field was read from (``{"kl": "KL_seq"}``), for the message.

    Raises:
      ValueError: a non-finite KL or gain, a negative KL or SE, a bad unit or completion length.
    """
    run = _as_run(run)
    run = run._replace(**{f: 0.0 for f in ("kl_se", "gain_se") if getattr(run, f) is None})
    where = f"run {i} ({run.name!r})"
    for field in ("kl", "gain", "kl_se", "gain_se"):
        v = getattr(run, field)
        what = f"{field} (column {columns[field]!r})" if columns and columns.get(field) else field
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {what} = {v!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"{where}: {what} = {v!r} is not finite")
        if field != "gain" and v < 0:
            raise ValueError(f"{where}: {what} = {v!r} is negative")
    if run.unit not in UNITS:
        raise ValueError(f"{where}: unit must be one of {', '.join(UNITS)}, got {run.unit!r}")
    if run.unit == "token":
        L = run.completion_length
        if L is None:
            raise ValueError(
                f"{where}: a per-token KL needs the mean completion length (completion_length) to give a "
                f"sequence-level KL"
            )
        if not (isinstance(L, (int, float, np.number)) and math.isfinite(float(L)) and float(L) > 0):
            raise ValueError(f"{where}: completion_length = {L!r} must be a positive number of tokens")
    elif run.completion_length is not None:
        raise ValueError(
            f"{where}: completion_length is given but unit is 'sequence'; pass unit='token' if the KL is per token"
        )
    return run


def sequence_kl(run: Run) -> tuple[float, float, str]:
    """A run's sequence-level KL and its SE (NaN where not given), with a note saying what was assumed."""
    se = math.nan if run.kl_se is None else float(run.kl_se)
    if run.unit == "token":
        L = float(run.completion_length)
        kl = float(run.kl) * L
        note = (
            f"KL given per token: sequence KL = {float(run.kl):.4g} nats/token x {L:.4g} tokens = {kl:.4g} nats "
            f"(assumes the logged value is the mean over completion tokens and {L:.4g} the mean completion "
            f"length of the same batch)"
        )
        return kl, se * L, note
    return float(run.kl), se, "KL taken as sequence-level, as given (unit='sequence')"


def run_from_samples(
    name: str,
    policy: Samples,
    base: Samples,
    kl: float,
    *,
    kl_se: float | None = None,
    unit: str = "sequence",
    completion_length: float | None = None,
) -> Run:
    r"""A run whose gain is measured from its own samples on the same prompts as the base samples.

    .. math::

       G = \frac1P \sum_x \big(\bar r^{\,\pi}_x - \bar r^{\,0}_x\big), \qquad
       \mathrm{se}(G) = \frac1P \sqrt{\textstyle\sum_x \big(s^2_{\pi,x}/N_{\pi,x} + s^2_{0,x}/N_{0,x}\big)},

    with the rewards (what the frontier is of), per prompt, conditional on the prompt set like the
    frontier's standard errors. The KL is not in the samples: give it (e.g. from the training log).

    Args:
      name: a label.
      policy: the run's samples ``[P, M]`` (rows in the same prompt order as ``base``).
      base: the base samples ``[P, N]`` the frontier is estimated from.
      kl, kl_se, unit, completion_length: as in :class:`Run`.

    Examples:
      >>> import jaxlimits as jl
      >>> base = jl.Samples([[0.0, 1.0], [1.0, 3.0]])
      >>> pol = jl.Samples([[1.0, 2.0], [2.0, 4.0]])
      >>> jl.run_from_samples("ppo", pol, base, kl=0.3).gain
      1.0
    """
    for what, s in (("policy", policy), ("base", base)):
        if not isinstance(s, Samples):
            raise TypeError(f"run_from_samples: {what} must be a jaxlimits.Samples, got {type(s).__name__}")
    if policy.num_prompts != base.num_prompts:
        raise ValueError(
            f"run_from_samples: the policy samples have {policy.num_prompts} prompts and the base samples "
            f"{base.num_prompts}; they must be the same prompts, in the same order"
        )
    if policy.log_weights is not None and not policy.exact:
        raise ValueError("run_from_samples: the policy samples carry importance weights; give plain draws")
    mp_, vp, np_ = _mean_var(policy)
    mb, vb, nb = _mean_var(base)
    d = mp_ - mb
    var = (0.0 if policy.exact else vp / np_) + (0.0 if base.exact else vb / nb)
    gain = float(np.mean(d))
    gain_se = float(pooling.pooled_se_of_variances(np.broadcast_to(var, d.shape)))
    run = Run(name, float(kl), gain, None if kl_se is None else float(kl_se), gain_se, unit, completion_length)
    check_run(0, run)
    return run  # kl_se None where not given (check_run's copy has 0.0)


def _mean_var(s: Samples):
    """Per-prompt mean and variance (ddof 1) of the rewards, and the number of draws (host, float64)."""
    s = s.neutralised()
    r = np.asarray(s.rewards, np.float64)
    valid = np.asarray(s.valid())
    if s.log_weights is not None:
        lw = np.where(valid, np.asarray(s.log_weights, np.float64), -np.inf)
        w = np.exp(lw - lw.max(axis=1, keepdims=True))
    else:
        w = np.where(valid, 1.0 if s.counts is None else np.asarray(s.counts, np.float64), 0.0)
    n = w.sum(axis=1) if s.log_weights is None else np.asarray(s.draws(), np.float64)
    u = w / w.sum(axis=1, keepdims=True)
    mean = np.sum(u * r, axis=1)
    var = np.sum(u * (r - mean[:, None]) ** 2, axis=1) * n / np.maximum(n - 1, 1)
    return mean, var, n


class Measurement(NamedTuple):
    """A run measured from its own samples (:func:`measure_run`).

    Attributes:
      run: the :class:`Run`: ``kl`` is the sequence-level k1 estimate ``mean(log pi - log pi_ref)``
        with its SE, ``gain`` the reward gain over the base samples with its SE.
      kl_k3, kl_k3_se: the k3 estimate ``mean((rho - 1) - log rho)``, ``rho = pi_ref / pi``, and its SE
        (unbiased too, never negative per sample, heavier-tailed where the policy has moved far).
      notes: what was assumed.
    """

    run: Run
    kl_k3: float
    kl_k3_se: float
    notes: tuple[str, ...]


def _prompt_mean_se(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Mean over prompts of the per-prompt weighted means of ``x [P, M]``, and its SE given the prompts."""
    n = w.sum(axis=1)
    m = np.sum(w * x, axis=1) / n
    var = np.sum(w * (x - m[:, None]) ** 2, axis=1) / np.maximum(n - 1, 1)
    return float(pooling.pooled_mean(m)), float(pooling.pooled_se_of_variances(var / n))


def measure_run(name: str, policy: Samples, log_ratio, base: Samples, *, z: float = 1.96) -> Measurement:
    r"""A run placed on the plane from its own samples: sequence KL and reward gain, with SEs.

    .. math::

       \widehat{KL} = \frac1P \sum_x \overline{d}_x, \quad d = \log\pi(y|x) - \log\pi_{ref}(y|x),
       \qquad \widehat{KL}_{k3} = \frac1P \sum_x \overline{(e^{-d} - 1 + d)}_x,

    both unbiased for ``KL(pi || pi_ref)`` per sequence when ``y ~ pi`` (MATH.md §9); the SEs are
    conditional on the prompts, like the gain's (:func:`run_from_samples`). A k1 estimate below zero
    by less than ``z`` SEs is sampling noise and is set to 0 (with a note).

    Args:
      name: a label.
      policy: the policy's samples ``[P, M]`` (their rewards; rows in the base samples' prompt order).
      log_ratio: ``[P, M]`` ``log pi(y|x) - log pi_ref(y|x)`` of the same samples (whole sequences).
      base: the base samples ``[P, N]``.
      z: how many SEs below zero a k1 estimate may be and still be taken as noise.

    Raises:
      ValueError: mismatched shapes or prompts, non-finite log-ratios, or a KL negative beyond noise
        (the two log-probabilities swapped, or samples not drawn from the policy).

    Examples:
      >>> import jaxlimits as jl
      >>> base = jl.Samples([[0.0, 1.0], [1.0, 3.0]])
      >>> pol = jl.Samples([[1.0, 2.0], [2.0, 4.0]])
      >>> m = jl.measure_run("ppo", pol, [[0.5, 1.5], [1.0, 1.0]], base)
      >>> m.run.kl, m.run.gain
      (1.0, 1.0)
    """
    if not isinstance(policy, Samples):
        raise TypeError(f"measure_run: policy must be a jaxlimits.Samples, got {type(policy).__name__}")
    if policy.log_weights is not None:
        raise ValueError("measure_run: the policy samples carry importance weights; give the policy's own draws")
    d = np.asarray(log_ratio, np.float64)
    shape = tuple(np.shape(policy.rewards))
    if d.shape != shape:
        raise ValueError(f"measure_run: log_ratio has shape {d.shape} but the policy's rewards have shape {shape}")
    valid = np.asarray(policy.valid())
    bad = valid & ~np.isfinite(d)
    if bad.any():
        p, i = (int(v[0]) for v in np.nonzero(bad))
        raise ValueError(f"measure_run: log_ratio of prompt {p}, sample {i} is {d[p, i]}, not finite")
    w = np.where(valid, 1.0 if policy.counts is None else np.asarray(policy.counts, np.float64), 0.0)
    d = np.where(valid, d, 0.0)
    kl, kl_se = _prompt_mean_se(d, w)
    with np.errstate(over="ignore"):  # exp(-d) overflows only where pi_ref / pi > 1e308: k3 is then infinite
        k3, k3_se = _prompt_mean_se(np.expm1(-d) + d, w)
    notes = [f"{name}: KL measured from {int(w.sum())} policy samples on {len(w)} prompts: "
             f"k1 = {kl:.4g} ± {kl_se:.2g}, k3 = {k3:.4g} ± {k3_se:.2g} nats per sequence (assumes the samples "
             f"were drawn from the policy itself, and the log-probabilities are of that sampling distribution: "
             f"temperature 1, no top-p)"]
    # Under y ~ pi, E[exp(-d)] = sum_y pi_ref(y) over pi's support <= 1, so E[k3] = KL - (the reference's mass
    # outside that support): the two agree unless the samples are not the policy's own draws.
    gap_se = math.hypot(kl_se, k3_se)
    if abs(kl - k3) > 3 * gap_se + 1e-12 * max(abs(kl), 1.0):
        notes.append(f"{name}: k1 and k3 differ by {kl - k3:.3g} (more than 3 SEs, {3 * gap_se:.2g}): for the policy's "
                     f"own draws they estimate the same KL; check that the samples were drawn from the policy (not "
                     f"with top-p/top-k or another temperature) and that the log-probabilities are whole-sequence sums")
    if kl < 0:
        if kl < -z * kl_se:
            raise ValueError(
                f"measure_run: {name}: mean(log pi - log pi_ref) = {kl:.4g} is negative by more than {z} standard "
                f"errors ({kl_se:.2g}): check that the policy and reference log-probabilities are not swapped and that "
                f"the samples were drawn from the policy")
        notes.append(f"{name}: the k1 estimate {kl:.3g} is within {z} SEs of 0 (sampling noise): set to 0")
        kl = 0.0
    run = run_from_samples(name, policy, base, kl=kl, kl_se=kl_se)
    return Measurement(run, k3, k3_se, tuple(notes))


def load_policy_samples(
    path,
    *,
    prompt: str = "prompt_id",
    reward: str = "reward",
    logprob: str = "logprob",
    ref_logprob: str = "ref_logprob",
    prompt_ids: Sequence[Any] | None = None,
) -> tuple[Samples, np.ndarray]:
    """A policy's samples from a long table (one row a sample) for :func:`measure_run`.

    Args:
      path: the table (``.jsonl``, ``.csv``, ``.parquet``).
      prompt, reward: columns of the prompt id and the reward (the same reward as the base samples').
      logprob, ref_logprob: columns of each completion's sequence log-probability under the policy
        and under the reference (the base model the frontier is of).
      prompt_ids: the base samples' prompt ids, in their order (``jaxlimits.io.Loaded.prompt_ids``):
        the policy's prompts are put in that order and must be the same set.

    Returns:
      ``(samples [P, M], log_ratio [P, M])``.

    Raises:
      jaxlimits.io.DataError: a missing column or bad value (naming file, line, column), or prompts
        that differ from the base samples'.
    """
    from . import io

    table = io.read_table(path)
    pids = table.column(prompt, numeric=False, option="--prompt-col")
    r = table.column(reward, option="--policy-reward-col")
    d = table.column(logprob, option="--policy-logprob-col") - table.column(ref_logprob, option="--ref-logprob-col")
    key = lambda v: _label(v.item() if isinstance(v, np.generic) else v)  # noqa: E731
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pids):
        groups.setdefault(key(p), []).append(i)
    order = list(groups)
    if prompt_ids is not None:
        want = [key(p) for p in prompt_ids]
        missing, extra = [p for p in want if p not in groups], [p for p in order if p not in set(want)]
        if missing or extra:
            raise io.DataError(
                f"{table.path}: the policy samples must answer the base samples' prompts: "
                f"{len(missing)} base prompt(s) missing (e.g. {missing[:3]}), {len(extra)} other prompt(s) "
                f"(e.g. {extra[:3]})")
        order = want
    s = Samples.from_ragged([r[groups[p]] for p in order])
    ratio = np.zeros(np.shape(s.rewards))
    for j, p in enumerate(order):
        ratio[j, : len(groups[p])] = d[groups[p]]
    return s, ratio


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "kl", "kl_se", "gain", "gain_se", "frontier_gain", "frontier_gain_se", "frontier_beta",
        "left_on_table", "reward_efficiency", "min_kl", "kl_efficiency", "excess_z", "above_frontier",
        "lower_bound", "frontier_saturated", "frontier_status", "min_kl_status", "frontier_gain_lower_bound",
        "left_on_table_lower_bound", "reward_efficiency_upper_bound", "frontier_reasons", "extrapolated",
        "frontier_carried_share", "min_kl_reasons", "min_kl_carried_share",
        "frontier_gain_lo", "frontier_gain_hi", "frontier_beta_lo", "frontier_beta_hi", "measured_frontier_gain",
        "measured_frontier_status",
        "measured_frontier_reasons", "measured_frontier_saturated", "measured_min_kl", "measured_min_kl_status",
        "measured_min_kl_reasons", "measured_min_kl_saturated",
        "kl_se_given", "gain_se_given",
    ],
    meta_fields=["names", "notes", "notices", "level", "status"],
)
@dataclasses.dataclass(frozen=True)
class Comparison:
    """Runs against the frontier; every array field is ``[runs]``.

    Attributes:
      kl, kl_se: the runs' sequence-level KL (converted from per-token where the run said so).
      gain, gain_se: the runs' measured gains.
      kl_se_given, gain_se_given: whether the run gave that standard error; where it did not, the
        SE field holds 0.0 (what the flag and ``excess_z`` use: only the frontier's uncertainty, and
        the other SE if given) and :meth:`rows` writes it as missing (None: null in JSON, an empty
        CSV cell).
      frontier_gain, frontier_gain_se, frontier_beta: ``gain*(KL_run)`` on the pooled frontier
        (``jaxlimits.max_gain_at_kl``). NaN where the run's KL is at or beyond what the samples can
        show (``lower_bound``): the frontier there is unknown, only bounded below by
        ``frontier_gain_lower_bound``. On an exact law beyond ``K_max`` the frontier is flat at its
        maximum, and that is its value.
      left_on_table: ``frontier_gain - gain`` (NaN where unknown; then ``left_on_table_lower_bound``;
        on extrapolated lanes from the model's point: the note gives it with the model's interval).
      reward_efficiency: ``gain / frontier_gain`` (NaN where unknown; then ``reward_efficiency_upper_bound``;
        on extrapolated lanes from the model's point, as ``left_on_table``).
      min_kl: ``KL*(gain)``, the least KL that reaches the run's gain (``jaxlimits.min_kl_for_gain``;
        0 for a gain <= 0; NaN where the gain is beyond what the samples can show).
      kl_efficiency: ``min_kl / kl`` (how much of the spent KL was needed).
      excess_z: ``(gain - frontier_gain) / se``, ``se = sqrt(gain_se^2 + frontier_gain_se^2 +
        (frontier_beta kl_se)^2)`` (``d gain*/dK = beta*`` carries the KL's error); NaN where unknown.
        An SE the run did not give counts as 0: then ``se`` is only the frontier's uncertainty (the
        notices and the run's note say so).
      above_frontier: the run is above the frontier by more than ``z_level * se`` (impossible up
        to estimation error: check units, prompts and reward). False where the frontier is unknown.
      lower_bound: the frontier at the run's KL is unknown (the KL is at or beyond what the samples
        show): only the bounds are known.
      frontier_saturated: the frontier at that KL is computed but the trust rule flags it
        (``frontier_reasons`` says why); False where it is not computed (``lower_bound``).
      frontier_reasons: the pooled trust rule's reasons there (``int32`` bitmask,
        ``jaxlimits.estimators.reason_names`` spells it; 0 where trusted or not computed); on
        extrapolated lanes the tail model's reasons (``no-tilt``; ``few``: the model's pooled point
        rests on a few prompts, ``frontier_carried_share``).
      frontier_status, min_kl_status: ``jaxlimits.status.Status`` codes of the two solves: whether
        the solve found an answer (``ok`` where it did, flagged or not); whether the trust rule flags
        it is ``frontier_saturated`` / ``frontier_reasons``, and ``status`` is the one word for both.
      frontier_gain_lower_bound, left_on_table_lower_bound, reward_efficiency_upper_bound: where
        the frontier is unknown, the samples' cap ``mean_x (max r - E_0 r)`` (best-of-N reaches it
        within that KL, so the frontier is at least that) and the bounds it gives; NaN elsewhere.
      extrapolated: with ``tail="gpd"``, the frontier at the run's KL comes from the tail model
        (past what the samples show, or flagged ``ceiling`` there; a frontier flagged for other
        reasons keeps the measurement): ``frontier_gain`` is the model's, its SE
        the model interval's width / 2z; False without a tail model.
      frontier_gain_lo, frontier_gain_hi: the model's interval of the frontier's gain there (NaN
        where not extrapolated; ``inf`` upper limit where the data cannot bound it).
      frontier_beta_lo, frontier_beta_hi: the model's interval of ``frontier_beta`` there (NaN where
        not extrapolated).
      frontier_carried_share: on extrapolated lanes, the share of the model's pooled KL held by the
        largest ``jaxlimits.estimators.SHARE_MAX`` of the prompts (``jaxlimits.tail.carried_share``;
        above ``jaxlimits.tail.CARRIED_SHARE`` the point is flagged ``few``: read the model's
        interval, not its point, nor ``left_on_table``, ``reward_efficiency``, ``excess_z`` from it;
        the note says so); NaN elsewhere.
      min_kl_reasons, min_kl_carried_share: the same for ``KL*(gain)`` where ``min_kl_status`` is
        extrapolated (the model's reasons; ``kl_efficiency`` from a ``few`` point is not to be
        read either); 0 / NaN elsewhere.
      measured_frontier_gain, measured_frontier_status, measured_frontier_reasons: where the tail
        model answers ``gain*(KL_run)``, what the samples alone answered there (the empirical
        solution's gain, status code and trust-rule reasons: flagged, or no answer past the
        ceiling); NaN / ``NOT_COMPUTED`` / 0 elsewhere and without a tail model. As for the frontier,
        the status is the solve's code (``ok``: it answered) and the trust rule's verdict is apart:
      measured_frontier_saturated: that answer is flagged (its reasons are not empty).
      measured_min_kl, measured_min_kl_status, measured_min_kl_reasons, measured_min_kl_saturated: the
        same for ``KL*(gain)``.
      status: per run, one word of :data:`jaxlimits.status.VOCABULARY` (``ok``, ``saturated``,
        ``unknown``, ``above_frontier``, ...), the same in tables, CSV and JSON.
      names: the runs' names. notes: one sentence per run (unit assumed, status).
      notices: what holds for all runs. level: the two-sided level of the flag (``z_level``).
    """

    kl: Array
    kl_se: Array
    gain: Array
    gain_se: Array
    frontier_gain: Array
    frontier_gain_se: Array
    frontier_beta: Array
    left_on_table: Array
    reward_efficiency: Array
    min_kl: Array
    kl_efficiency: Array
    excess_z: Array
    above_frontier: Array
    lower_bound: Array
    frontier_saturated: Array
    frontier_status: Array
    min_kl_status: Array
    frontier_gain_lower_bound: Array
    left_on_table_lower_bound: Array
    reward_efficiency_upper_bound: Array
    frontier_reasons: Array
    extrapolated: Array
    frontier_carried_share: Array
    min_kl_reasons: Array
    min_kl_carried_share: Array
    frontier_gain_lo: Array
    frontier_gain_hi: Array
    frontier_beta_lo: Array
    frontier_beta_hi: Array
    measured_frontier_gain: Array
    measured_frontier_status: Array
    measured_frontier_reasons: Array
    measured_frontier_saturated: Array
    measured_min_kl: Array
    measured_min_kl_status: Array
    measured_min_kl_reasons: Array
    measured_min_kl_saturated: Array
    kl_se_given: Array
    gain_se_given: Array
    names: tuple[str, ...]
    notes: tuple[str, ...]
    notices: tuple[str, ...]
    level: float
    status: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        """One dict per run (for tables, CSV and JSON): unknown values and flags are ``None``.

        ``status`` is a word of :data:`jaxlimits.status.VOCABULARY`; ``note`` says why, per run;
        the two solver codes appear as their names (``jaxlimits.status.NAMES``); a standard error
        the run did not give is None (``kl_se_given``, ``gain_se_given`` are not columns).
        """
        from .estimators import reason_names
        from .status import NAMES

        skip = ("names", "notes", "notices", "level", "status", "kl_se_given", "gain_se_given")
        keys = [f.name for f in dataclasses.fields(self) if f.name not in skip]
        cols = {k: np.asarray(getattr(self, k)) for k in keys}
        out = []
        for i, name in enumerate(self.names):
            row: dict[str, Any] = {"name": name, "status": self.status[i] if self.status else None}
            unknown = bool(cols["lower_bound"][i])
            for k, v in cols.items():
                x = v[i]
                if k.endswith("_status"):  # the solver's code, in lower case like `status`
                    row[k] = NAMES[int(x)].lower()
                elif k.endswith("_reasons"):  # spelled out: 'tail+few' ('' where trusted)
                    row[k] = reason_names(int(x))
                elif v.dtype == bool:
                    row[k] = None if unknown and k in ("above_frontier", "frontier_saturated") else bool(x)
                else:
                    row[k] = float(x) if np.isfinite(x) else None
            for k in ("kl_se", "gain_se"):
                if not bool(np.asarray(getattr(self, f"{k}_given"))[i]):
                    row[k] = None
            row["note"] = self.notes[i]
            out.append(row)
        return out

    def _columns(self):
        return tables.columns(self, shape_of="kl", exclude=("notices",))

    def _summary(self):
        words, counts = np.unique(np.asarray(self.status, dtype=object).astype(str), return_counts=True)
        return tables.summary(self, shape_of="kl", headline=[
            "runs " + ", ".join(self.names[:4]) + (" ..." if len(self.names) > 4 else ""),
            "status " + ", ".join(f"{int(n)} {w}" for w, n in zip(words, counts)),
            f"KL {tables.span(self.kl)}", f"reward efficiency {tables.span(self.reward_efficiency)}"])

    # rows() above is the CLI's table (values made JSON-ready); to_dict/to_pandas are the arrays
    to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS[1:]


def compare(
    samples: Samples,
    runs: Sequence[Run | Mapping | tuple],
    *,
    level: float = 0.95,
    memory_budget: int | None = None,
    tail: str | None = None,
    tail_replicates: int = 200,
) -> Comparison:
    r"""Alignment runs held against the frontier of the base samples (MATH.md §9).

    .. math::

       \mathrm{left} = \mathrm{gain}^*(KL) - G, \quad
       \eta_{reward} = G / \mathrm{gain}^*(KL), \quad
       \eta_{KL} = \mathrm{KL}^*(G) / KL.

    Args:
      samples: base samples :class:`jaxlimits.Samples` ``[P, N]`` (the frontier is of their rewards).
      runs: :class:`Run` values (or dicts / tuples of its fields): measured KL and gain, optional
        standard errors, optional ``unit="token"`` with ``completion_length``.
      level: two-sided level of the above-frontier flag (0.95: ``z = 1.96``).
      memory_budget: bytes of working memory for the frontier solves.
      tail: None (default) or ``"gpd"``: a run's KL (or gain) past what the samples show is held
        against the tail model's frontier (``jaxlimits.max_gain_at_kl(..., tail="gpd")``), marked
        ``extrapolated``; where the model has no answer (no tilt, beyond its upper end) the run
        stays ``unknown`` with the samples' bound.
      tail_replicates: bootstrap replicates of the tail model.

    Returns:
      A :class:`Comparison` with ``[runs]`` fields.

    Raises:
      ValueError: a run with a non-finite or negative KL, an unknown unit, or a per-token KL
        without a completion length.

    Examples:
      >>> import jaxlimits as jl
      >>> law = jl.Samples.from_law([[0.0, 1.0]], [[0.7, 0.3]])  # Bernoulli(0.3) rewards
      >>> res = jl.compare(law, [jl.Run("on", kl=0.087177, gain=0.2), jl.Run("below", kl=0.087177, gain=0.1)])
      >>> [round(float(x), 3) for x in res.reward_efficiency]
      [1.0, 0.5]
    """
    from . import inversion
    from .estimators import FEW, SHARE_MAX, reason_names
    from .status import of_solution as status_of
    from .targets import solve_bucketed

    check_samples(samples, "compare")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    given = np.array([_se_given(_as_run(r)) for r in runs], bool).reshape(-1, 2)  # [runs, (kl, gain)]
    runs = [check_run(i, r) for i, r in enumerate(runs)]
    if not runs:
        raise ValueError("compare: no runs given")
    conv = [sequence_kl(r) for r in runs]
    kl = np.array([c[0] for c in conv])
    kl_se = np.array([c[1] for c in conv])
    gain = np.array([float(r.gain) for r in runs])
    gain_se = np.array([float(r.gain_se) for r in runs])
    notes = [c[2] for c in conv]
    dt = samples.dtype

    tail_kw = {} if tail is None else dict(tail=tail, tail_level=level, tail_replicates=tail_replicates)
    sol = solve_bucketed(functools.partial(inversion.max_gain_at_kl, **tail_kw), samples, kl,
                         memory_budget=memory_budget)
    status = np.asarray(sol.status, np.int32)
    ext = np.zeros(kl.shape, bool) if sol.extrapolated is None else np.asarray(sol.extrapolated)
    no_model = ext & ((status == Status.NO_TILT) | (status == Status.BEYOND_UPPER_END))
    beyond = (status == Status.KL_AT_OR_ABOVE_CEILING) | no_model
    ext = ext & ~no_model
    nan_kl = np.full(kl.shape, np.nan)
    f_lo = nan_kl if sol.tail is None else np.where(ext, np.asarray(sol.tail.gain_lo, np.float64), np.nan)
    f_hi = nan_kl if sol.tail is None else np.where(ext, np.asarray(sol.tail.gain_hi, np.float64), np.nan)
    b_lo, b_hi = ((nan_kl, nan_kl) if sol.tail is None else
                  (np.where(ext, np.asarray(getattr(sol.tail, f"beta_{e}"), np.float64), np.nan) for e in ("lo", "hi")))
    cap = np.broadcast_to(np.asarray(sol.gain_max, np.float64), kl.shape)
    ceiling = np.broadcast_to(np.asarray(sol.kl_ceiling, np.float64), kl.shape)
    # On an exact law the frontier is flat at its maximum beyond K_max; on samples the cap is
    # only what N draws show: the frontier there is unknown, at least the cap.
    lower = beyond & (not samples.exact)
    f_gain = np.where(beyond, np.where(lower, np.nan, cap), np.asarray(sol.gain, np.float64))
    f_se = np.where(beyond, np.where(lower, np.nan, 0.0), np.asarray(sol.gain_se, np.float64))
    beta = np.where(lower, np.nan, np.asarray(sol.beta, np.float64))
    f_sat = np.asarray(sol.saturated) & ~beyond & ~ext
    # the trust rule's reasons where flagged; the tail model's (no-tilt, few: carried by a few prompts) where it answers
    f_reasons = np.where(f_sat | ext, np.asarray(sol.reasons), 0).astype(np.int32)
    f_share = _carried(sol, ext)

    sol2 = solve_bucketed(functools.partial(inversion.min_kl_for_gain, **tail_kw), samples, np.maximum(gain, 0.0),
                          memory_budget=memory_budget)
    status2 = np.asarray(sol2.status, np.int32)
    min_kl = np.where(gain <= 0, 0.0, np.asarray(sol2.kl, np.float64))
    status2 = np.where(gain <= 0, int(Status.OK), status2)
    min_kl = np.where(solved(status2), min_kl, np.nan)  # OK, or EXTRAPOLATED: the tail model's answer
    ext2 = status2 == Status.EXTRAPOLATED
    kl_reasons = np.where(ext2, np.asarray(sol2.reasons), 0).astype(np.int32)
    kl_share = _carried(sol2, ext2)
    kl2_lo = np.full(kl.shape, np.nan) if sol2.tail is None else np.asarray(sol2.tail.kl_lo, np.float64)
    kl2_hi = np.full(kl.shape, np.nan) if sol2.tail is None else np.asarray(sol2.tail.kl_hi, np.float64)

    def measured(s, field):  # what the samples alone answered where the tail model answers (beside the model's)
        if s.tail is None:
            return nan_kl, np.full(kl.shape, int(Status.NOT_COMPUTED)), np.zeros(kl.shape, np.int32)
        return (np.asarray(getattr(s.tail, f"measured_{field}"), np.float64), np.asarray(s.tail.measured_status),
                np.asarray(s.tail.measured_reasons, np.int32))

    m_gain, m_status, m_reasons = measured(sol, "gain")
    m_kl, m_kl_status, m_kl_reasons = measured(sol2, "kl")
    gain_le0 = gain <= 0  # KL*(gain) is 0 there, not solved
    m_kl, m_kl_reasons = np.where(gain_le0, np.nan, m_kl), np.where(gain_le0, 0, m_kl_reasons)
    m_kl_status = np.where(gain_le0, int(Status.NOT_COMPUTED), m_kl_status)

    with np.errstate(divide="ignore", invalid="ignore"):
        left = f_gain - gain
        eff = np.where(f_gain > 0, gain / f_gain, np.nan)
        kl_eff = np.where(kl > 0, min_kl / kl, np.nan)
        se = np.sqrt(gain_se**2 + np.where(beyond, 0.0, f_se) ** 2 + np.where(beyond, 0.0, beta * kl_se) ** 2)
        z_level = statistics.NormalDist().inv_cdf(0.5 + level / 2)
        # Where nothing is uncertain (an exact law and exact runs) only the solver's tolerance remains.
        tol = z_level * se + math.sqrt(float(jnp.finfo(dt).eps)) * np.maximum(np.abs(f_gain), 1e-300)
        excess = gain - f_gain
        excess_z = np.where(se > 0, excess / se, np.where(np.abs(excess) > tol, np.sign(excess) * np.inf, 0.0))
        # + 0.0: no -0.0; NaN where unknown or extrapolated (a z against a model's open interval means nothing)
        excess_z = np.where(lower | ext, np.nan, excess_z) + 0.0
        above = ~lower & (excess > tol)
        f_bound = np.where(lower, cap, np.nan)
        left_bound = f_bound - gain
        eff_bound = np.where(lower & (cap > 0), gain / cap, np.nan)

    k_top = max(1, int(SHARE_MAX * samples.num_prompts))  # the prompts a carried point rests on
    carried = ext & ((f_reasons & FEW) != 0)
    carried2 = ext2 & ((kl_reasons & FEW) != 0)

    def rests_on(share) -> str:
        held = f" hold {share:.0%} of its KL" if np.isfinite(share) else " hold most of its KL"
        return (f"flagged few: the largest {k_top} of the {samples.num_prompts} prompts{held}, "
                "the model's pooled point resting on their fitted tails "
                "near their fitted critical beta, the model's least certain part: read its interval, not its point")

    for i in range(len(runs)):
        extra = []
        if beyond[i] and samples.exact:
            extra.append(f"its KL is beyond the law's K_max ({ceiling[i]:.4g} nats): the frontier is flat at "
                         f"{cap[i]:.4g}")
        elif lower[i] and no_model[i]:
            extra.append(f"its KL {kl[i]:.4g} is past what the samples show and the tail model gives no frontier "
                         f"there ({inversion.MESSAGES[int(status[i])]}); at least the samples' cap {cap[i]:.4g}")
        elif lower[i]:
            extra.append(
                f"its KL {kl[i]:.4g} is at or beyond what the samples can show (ceiling {ceiling[i]:.4g} "
                f"nats): the frontier there is unknown, at least the samples' cap {cap[i]:.4g}, so 'left on the "
                f"table' is at least {left_bound[i]:.4g} (a lower bound)"
                + (f" and the reward efficiency at most {eff_bound[i]:.3g}" if np.isfinite(eff_bound[i]) else "")
                + (f" (its gain {gain[i]:.4g} is above that cap, so these bounds cannot tell whether the run is "
                   f"below the frontier or above it)" if left_bound[i] < 0 else "")
            )
        elif ext[i]:
            measured_f = (f"; measured {m_gain[i]:.4g} ({reason_names(int(m_reasons[i]))})"
                          if np.isfinite(m_gain[i]) else "")
            extra.append(f"at its KL {kl[i]:.4g} the samples' frontier is unknown or at the ceiling: the tail "
                         f"model's is {f_gain[i]:.4g} [{f_lo[i]:.3g}, {f_hi[i]:.3g}] (extrapolated, not measured)"
                         + measured_f + "; " + (f"{rests_on(f_share[i])}, nor the " if carried[i] else "from it ")
                         + _model_left(gain[i], f_gain[i], f_lo[i], f_hi[i])
                         + (" derived from it (only their intervals)" if carried[i] else ""))
        elif f_sat[i]:
            why = reason_names(int(f_reasons[i])) or "too few effective samples"
            extra.append(f"the trust rule flags the frontier at its KL ({why}): take it with caution")
        elif not solved(status[i]):
            extra.append(f"frontier: {MESSAGES[int(status[i])]}")
        if status2[i] == Status.GAIN_AT_OR_ABOVE_MAX:
            extra.append(f"its gain is at or above the largest the samples can show ({cap[i]:.4g}): no KL*(gain)")
        elif status2[i] in (Status.NO_TILT, Status.BEYOND_UPPER_END):
            extra.append(f"no KL*(gain) for its gain: {MESSAGES[int(status2[i])]}")
        elif ext2[i]:
            where = ("past what the samples show" if m_kl_status[i] == Status.GAIN_AT_OR_ABOVE_MAX
                     else "where the samples' KL*(gain) is at the ceiling")
            measured_kl = (f"; measured {m_kl[i]:.4g} ({reason_names(int(m_kl_reasons[i]))})"
                           if np.isfinite(m_kl[i]) else "")
            extra.append(f"its gain is {where}: KL*(gain) {min_kl[i]:.4g} [{kl2_lo[i]:.3g}, {kl2_hi[i]:.3g}] is the "
                         f"tail model's (extrapolated, not measured){measured_kl}"
                         + (f"; KL*(gain) {rests_on(kl_share[i])} (nor the KL efficiency "
                            f"{kl_eff[i]:.3g} derived from it)" if carried2[i] else ""))
        if above[i]:
            extra.append(
                f"ABOVE the frontier by {excess[i]:.4g} ({excess_z[i]:.3g} standard errors{_se_counted(given[i])}): "
                f"impossible up to estimation error; check the KL's unit, the prompts and the reward"
            )
        notes[i] = "; ".join([notes[i]] + extra)
    words = []
    for i in range(len(runs)):
        if lower[i]:
            words.append("unknown")
        elif above[i]:
            words.append("above_frontier")
        elif not solved(status[i]) and not beyond[i]:
            words.append(status_of(int(status[i]), False, samples.exact)[0])
        else:
            words.append("extrapolated" if ext[i] or ext2[i] else "saturated" if f_sat[i] else "ok")

    notices = [
        "the frontier is of the base samples' rewards; runs must report gains in the same reward, on the same "
        "prompts, as E_pi[r] - E_0[r]",
        f"above_frontier: excess > {z_level:.3g} standard errors (two-sided level {level})",
    ]
    lacking = [r.name for r, g in zip(runs, given) if not g.all()]
    if np.all(gain_se == 0) and np.all(kl_se == 0):
        notices.append("no standard errors were given for the runs: the flag and excess_z count only the frontier's "
                       "uncertainty" + (" (kl_se, gain_se are left empty)" if not given.any() else ""))
    elif lacking:
        notices.append(f"runs without standard errors ({', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}): "
                       "their flag and excess_z count only the frontier's uncertainty (and any SE they gave); the SEs "
                       "they did not give are left empty")
    as_dt = lambda x: jnp.asarray(x, dt)  # noqa: E731
    return Comparison(
        kl=as_dt(kl), kl_se=as_dt(kl_se), gain=as_dt(gain), gain_se=as_dt(gain_se),
        frontier_gain=as_dt(f_gain), frontier_gain_se=as_dt(f_se), frontier_beta=as_dt(beta),
        left_on_table=as_dt(left), reward_efficiency=as_dt(eff), min_kl=as_dt(min_kl), kl_efficiency=as_dt(kl_eff),
        excess_z=as_dt(excess_z), above_frontier=jnp.asarray(above), lower_bound=jnp.asarray(lower),
        frontier_saturated=jnp.asarray(f_sat), frontier_status=jnp.asarray(status),
        min_kl_status=jnp.asarray(status2), frontier_gain_lower_bound=as_dt(f_bound),
        left_on_table_lower_bound=as_dt(left_bound), reward_efficiency_upper_bound=as_dt(eff_bound),
        frontier_reasons=jnp.asarray(f_reasons), extrapolated=jnp.asarray(ext),
        frontier_carried_share=as_dt(f_share), min_kl_reasons=jnp.asarray(kl_reasons),
        min_kl_carried_share=as_dt(kl_share), frontier_gain_lo=as_dt(f_lo),
        frontier_gain_hi=as_dt(f_hi), frontier_beta_lo=as_dt(b_lo), frontier_beta_hi=as_dt(b_hi),
        measured_frontier_gain=as_dt(m_gain),
        measured_frontier_status=jnp.asarray(m_status, jnp.int32), measured_frontier_reasons=jnp.asarray(m_reasons),
        measured_frontier_saturated=jnp.asarray(m_reasons != 0),
        measured_min_kl=as_dt(m_kl), measured_min_kl_status=jnp.asarray(m_kl_status, jnp.int32),
        measured_min_kl_reasons=jnp.asarray(m_kl_reasons), measured_min_kl_saturated=jnp.asarray(m_kl_reasons != 0),
        kl_se_given=jnp.asarray(given[:, 0]),
        gain_se_given=jnp.asarray(given[:, 1]), names=tuple(r.name for r in runs), notes=tuple(notes),
        notices=tuple(notices), level=float(level),
        status=tuple(words),
    )


def _carried(sol, ext) -> np.ndarray:
    """The tail model's ``carried_share`` on the lanes ``ext`` it answers (NaN elsewhere and without a model)."""
    share = None if sol.tail is None else sol.tail.carried_share
    if share is None:
        return np.full(np.shape(ext), np.nan)
    return np.where(ext, np.asarray(share, np.float64), np.nan)


def _model_left(gain: float, f_gain: float, f_lo: float, f_hi: float) -> str:
    """A run's 'left on the table' and reward efficiency from the tail model's frontier, with the interval
    the model's gives them (``f_hi`` may be ``inf``)."""
    eff = f"reward efficiency {gain / f_gain:.3g}" if f_gain > 0 else "no reward efficiency"
    if f_gain > 0 and f_lo > 0:  # gain / frontier over the frontier's interval (gain / inf = 0)
        ends = sorted((gain / f_lo, gain / f_hi))
        eff += f" [{ends[0]:.3g}, {ends[1]:.3g}]"
    return f"left on the table {f_gain - gain:.4g} [{f_lo - gain:.3g}, {f_hi - gain:.3g}] and {eff}"


def _se_counted(given) -> str:
    """What a run's ``excess_z`` counts where the run did not give both SEs (``given``: KL's, gain's)."""
    if given.all():
        return ""
    missing = " or ".join(w for w, g in zip(("KL", "gain"), given) if not g)
    gave = " and the run's gain SE" if given[1] else " and the run's KL SE" if given[0] else ""
    return f", of the frontier's uncertainty{gave} only: the run gave no {missing} SE"


# ----------------------------------------------------------------------------------------------
# Runs from a table (a training log exported from TRL, a CSV of results, ...).


def _label(v) -> str:
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    return str(v)


def _run_label(column: str, value) -> str:
    """A run's name from its name column: the value itself (``ppo-a``), or ``step 200`` for a bare number."""
    text = _label(value)
    try:
        float(text)
    except ValueError:
        return text
    return f"{column} {text}"


def load_runs(
    path,
    *,
    kl: str = "kl",
    gain: str | None = None,
    reward: str | None = None,
    baseline: float | None = None,
    name: str | None = None,
    kl_se: str | None = None,
    gain_se: str | None = None,
    unit: str = "sequence",
    length: str | None = None,
    completion_length: float | None = None,
    where: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[list[Run], list[str]]:
    """Runs from a CSV/JSONL/Parquet table, one run (or checkpoint) a row, with columns you name.

    Args:
      path: the table.
      kl: column of the measured KL.
      gain: column of the measured gain; or
      reward: column of the measured mean reward, with ``baseline`` (the base model's mean reward on
        the same prompts; ``gain = reward - baseline``).
      name: column naming each row: its value (``"ppo-a"``), or column and value for a number
        (``"step"`` gives ``"step 200"``); default: a column called ``name`` or ``run`` if the
        table has one (said in the notes), else the file and line.
      kl_se, gain_se: optional columns of standard errors.
      unit: ``"sequence"`` or ``"token"``: what the KL column is. Nothing is converted unless
        ``"token"`` is stated.
      length: column of the mean completion length (tokens), for ``unit="token"``; or
      completion_length: one mean completion length for all rows.
      where: keep only rows whose column has one of the values, e.g. ``{"step": [200, 500]}``.

    Returns:
      ``(runs, notes)``: the :class:`Run` list and what was assumed, for people.

    Raises:
      jaxlimits.io.DataError: a missing column or a bad value (naming file, line and column).
      ValueError: inconsistent options (both or neither of gain/reward, a reward without a
        baseline, a per-token KL without a length, a length with a sequence-level KL).
    """
    from . import io

    if (gain is None) == (reward is None):
        raise ValueError("load_runs: name exactly one of gain (a gain column) or reward (a mean-reward column)")
    if reward is not None and baseline is None:
        raise ValueError("load_runs: a reward column needs baseline, the base model's mean reward on the same prompts")
    if unit not in UNITS:
        raise ValueError(f"load_runs: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "token" and (length is None) == (completion_length is None):
        raise ValueError(
            "load_runs: a per-token KL needs the mean completion length: a column (length) or a number "
            "(completion_length), not both"
        )
    if unit == "sequence" and (length is not None or completion_length is not None):
        raise ValueError("load_runs: a completion length only applies to unit='token' (a per-token KL)")
    table = io.read_table(path)
    keep = np.ones(len(table), bool)
    for col, values in (where or {}).items():
        raw = table.column(col, numeric=False)
        wanted = {_label(v) for v in values}
        keep &= np.array([_label(v) in wanted for v in raw])
    if not keep.any():
        raise ValueError(f"load_runs: {path}: no row matches {dict(where or {})}")
    idx = np.flatnonzero(keep)
    # The filter comes first: a value in a row it drops (a summary row's None) is never converted.
    kept = io.Table(table.path, {c: v[idx] for c, v in table.columns.items()}, table.lines[idx], table.kind)
    k = kept.column(kl, option="--run-kl-col")
    if gain is not None:
        g = kept.column(gain, option="--run-gain-col")
    else:
        g = kept.column(reward, option="--run-reward-col") - float(baseline)
    kse = kept.column(kl_se) if kl_se else [None] * len(idx)  # None: not given (reported as missing)
    gse = kept.column(gain_se) if gain_se else [None] * len(idx)
    lens = kept.column(length, option="--length-col") if length else None
    guessed = None
    if name is None:  # a table that names its runs is read with those names
        guessed = name = next((col for col in ("name", "run") if col in table.columns), None)
    labels = kept.column(name, numeric=False) if name else None
    runs = []
    for j, i in enumerate(idx):
        label = _run_label(name, labels[j]) if name else f"{Path(str(table.path)).stem}:{table.kind} {table.lines[i]}"
        L = None if unit == "sequence" else float(lens[j]) if lens is not None else float(completion_length)
        try:
            run = Run(label, float(k[j]), float(g[j]), None if kse[j] is None else float(kse[j]),
                      None if gse[j] is None else float(gse[j]), unit, L)
            check_run(j, run, columns={"kl": kl, "gain": gain or reward, "kl_se": kl_se, "gain_se": gain_se})
            runs.append(run)  # an SE not given stays None (check_run's copy has 0.0)
        except ValueError as e:
            raise io.DataError(f"{table.where(i)}: {e}") from None
    notes = [f"{len(runs)} runs from {table.path} (KL column {kl!r}, unit {unit!r}"
             + (f", names from column {guessed!r})" if guessed else ")")]
    if reward is not None:
        notes.append(
            f"gain = {reward!r} - {float(baseline):.6g} (the base mean reward; assumes the run's reward is measured "
            f"on the same prompts and with the same reward as the base samples)"
        )
    if unit == "token":
        src = f"column {length!r}" if length else f"{float(completion_length):.4g} tokens"
        notes.append(f"KL per token, converted to per sequence with the mean completion length from {src}")
    else:
        notes.append(
            "KL taken as sequence-level, as given; trainers often log a per-token KL: if so, say unit='token' "
            "(--kl-unit token) with the mean completion length"
        )
    return runs, notes
