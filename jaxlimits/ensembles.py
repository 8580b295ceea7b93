r"""Ensembles of proxy rewards: aggregations and how the gap shrinks with members (MATH.md §7, Thm. 3).

An :class:`Ensemble` holds ``M`` proxy rewards and a gold reward on the same draws (axes
``[prompts, samples, members]``). Aggregating the members gives one proxy (a
:class:`~jaxlimits.Samples` with the aggregate as ``rewards`` and gold as ``scores``) whose gap is
:func:`jaxlimits.proxy_gap`. Aggregations: ``mean``, ``median``, ``min`` (worst case) and
``mean_minus_std`` (``mean - lam * std`` over members, population std).

Theorem 3: for members ``r^(j) = s + b + e^(j)`` with uncorrelated noise of variance ``sigma^2``,
the mean of ``K`` members has

.. math::

   E\,\|\bar r_K - s\|^2_{L2(\pi_0)} = \|b\|^2 + \sigma^2 / K,

so with unbiased members ``||rbar_K - s|| = O(K^{-1/2})`` and the gap, Lipschitz in the residual
(Prop. 4), is ``O(K^{-1/2})`` too: an upper bound. Its first-order term is zero-mean, so the
signed mean gap can fall like ``1/K``. :func:`ensemble_scaling` measures both on the data.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _sweep, estimators, pooling, tables
from .gap import ProxyGap, base_weights, check_grid, proxy_gap_jit
from .moments import HIGHEST
from .samples import Samples

Array = jax.Array

#: Aggregations of the members, in the order :func:`ensemble_gaps` reports them.
AGGREGATIONS = ("mean", "median", "min", "mean_minus_std")
#: Calibrations of the members to the gold scale (see :meth:`Ensemble.calibrated`).
CALIBRATIONS = ("none", "moments", "ols")


def aggregate(proxies, how: str = "mean", *, lam: float = 1.0) -> Array:
    """Aggregates members along the last axis: ``[..., M] -> [...]``.

    Args:
      proxies: ``[..., M]`` member rewards.
      how: ``"mean"``, ``"median"``, ``"min"`` or ``"mean_minus_std"`` (``mean - lam * std``,
        population standard deviation over members).
      lam: the weight of the std in ``mean_minus_std``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxlimits import ensembles
      >>> float(ensembles.aggregate(jnp.array([1.0, 1.0, 4.0, 4.0]), "mean_minus_std", lam=0.5))
      1.75
    """
    x = jnp.asarray(proxies)
    if how == "mean":
        return jnp.mean(x, axis=-1)
    if how == "median":
        return jnp.median(x, axis=-1)
    if how == "min":
        return jnp.min(x, axis=-1)
    if how == "mean_minus_std":
        return jnp.mean(x, axis=-1) - lam * jnp.std(x, axis=-1)
    raise ValueError(f"unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}")


@jax.tree_util.register_pytree_node_class
class Ensemble:
    """``M`` proxy rewards and a gold reward on the same draws (a pytree).

    Args:
      proxies: ``[P, N, M]`` member rewards, or a sequence of ``M`` arrays ``[P, N]``.
      gold: ``[P, N]`` gold reward.
      log_weights, counts, mask: optional ``[P, N]``, as in :class:`jaxlimits.Samples`.
      exact: the rows are a finite law (``log_weights`` its log-probabilities).
      names: optional member names (default ``"0"``, ``"1"``, ...).
      validate: check the data eagerly (each member as a :class:`~jaxlimits.Samples`).

    Raises:
      ValueError: a shape mismatch, or a bad value (naming the member, prompt and sample).

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> gold = np.zeros((2, 3)); ens = jl.Ensemble([gold + 1, gold - 1], gold)
      >>> ens.num_members, ens.aggregate("mean").rewards.tolist()
      (2, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """

    __slots__ = ("proxies", "gold", "log_weights", "counts", "mask", "exact", "names")

    def __init__(self, proxies, gold, log_weights=None, counts=None, mask=None, *, exact: bool = False,
                 names: Sequence[str] | None = None, validate: bool = True):
        base = Samples(gold, log_weights=log_weights, counts=counts, mask=mask, exact=exact, validate=validate)
        if isinstance(proxies, (list, tuple)):
            if not proxies:
                raise ValueError("an ensemble needs at least one proxy")
            cols = []
            for k, p in enumerate(proxies):
                a = jnp.asarray(p, base.dtype) if isinstance(p, (jax.Array, jax.core.Tracer)) else np.asarray(p)
                if a.ndim == 1 and base.num_prompts == 1:
                    a = a[None, :]
                if tuple(a.shape) != tuple(base.rewards.shape):
                    raise ValueError(f"proxy {k} has shape {tuple(a.shape)} but gold has shape "
                                     f"{tuple(base.rewards.shape)}")
                cols.append(jnp.asarray(a, base.dtype))
            prox = jnp.stack(cols, axis=-1)
        else:
            arr = proxies if isinstance(proxies, (jax.Array, jax.core.Tracer)) else np.asarray(proxies)
            if arr.ndim != 3 or tuple(arr.shape[:2]) != tuple(base.rewards.shape):
                raise ValueError(f"proxies must have shape [prompts, samples, members] = "
                                 f"{tuple(base.rewards.shape)} + (M,), got {tuple(arr.shape)}")
            prox = jnp.asarray(arr, base.dtype)
        m = prox.shape[-1]
        if m == 0:
            raise ValueError("an ensemble needs at least one proxy")
        names = tuple(str(k) for k in range(m)) if names is None else tuple(str(n) for n in names)
        if len(names) != m:
            raise ValueError(f"{len(names)} names for {m} members")
        for name, val in (("proxies", prox), ("gold", base.rewards), ("log_weights", base.log_weights),
                          ("counts", base.counts), ("mask", base.mask)):
            object.__setattr__(self, name, val)
        object.__setattr__(self, "exact", bool(exact))
        object.__setattr__(self, "names", names)
        if validate and not isinstance(prox, jax.core.Tracer):
            for k in range(m):
                try:
                    self.member(k, validate=True)
                except ValueError as e:
                    raise ValueError(f"member {k} ({names[k]}): {e}") from None

    def tree_flatten(self):
        return (self.proxies, self.gold, self.log_weights, self.counts, self.mask), (self.exact, self.names)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, val in zip(("proxies", "gold", "log_weights", "counts", "mask"), children):
            object.__setattr__(obj, name, val)
        object.__setattr__(obj, "exact", aux[0])
        object.__setattr__(obj, "names", aux[1])
        return obj

    def __setattr__(self, name, value):
        raise AttributeError("Ensemble is immutable")

    def __repr__(self) -> str:
        p, n, m = self.proxies.shape
        return f"Ensemble({p} prompts x {n} samples x {m} members, {self.proxies.dtype})"

    @property
    def num_members(self) -> int:
        return int(self.proxies.shape[-1])

    @property
    def num_prompts(self) -> int:
        return int(self.proxies.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.proxies.shape[1])

    @property
    def dtype(self):
        return self.proxies.dtype

    def with_proxy(self, rewards, *, validate: bool = False) -> Samples:
        """``Samples(rewards=rewards, scores=gold)`` with this ensemble's weights, counts and mask."""
        if validate:
            return Samples(rewards, scores=self.gold, log_weights=self.log_weights, counts=self.counts,
                           mask=self.mask, exact=self.exact)
        return Samples.tree_unflatten((self.exact,), (rewards, self.gold, self.log_weights, self.counts, self.mask))

    def member(self, k: int, *, validate: bool = False) -> Samples:
        """Member ``k`` as the proxy of a :class:`~jaxlimits.Samples` (gold as scores)."""
        return self.with_proxy(self.proxies[..., k], validate=validate)

    def aggregate(self, how: str = "mean", *, lam: float = 1.0) -> Samples:
        """The aggregated proxy (see :func:`aggregate`) as a :class:`~jaxlimits.Samples` (gold as scores)."""
        return self.with_proxy(aggregate(self.proxies, how, lam=lam))

    def base(self) -> Samples:
        """The gold reward as a :class:`~jaxlimits.Samples` (the gold-aligned reference)."""
        return Samples.tree_unflatten((self.exact,), (self.gold, None, self.log_weights, self.counts, self.mask))

    def calibrated(self, method: str = "moments") -> Ensemble:
        """Members mapped affinely onto the gold scale (pooled over prompts with base weights).

        Members of a real ensemble often live on different scales (one AlpacaFarm proxy has a
        standard deviation of 4,800, the gold 10); their mean is then one member. ``"moments"``
        matches each member's pooled mean and standard deviation to gold's (uses gold's moments
        only); ``"ols"`` is each member's least-squares affine fit to gold (uses the gold
        labels); ``"none"`` returns the ensemble unchanged.
        """
        if method == "none":
            return self
        if method not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {method!r}; use one of {', '.join(CALIBRATIONS)}")
        valid, log_u, _ = base_weights(self.base())
        w = jnp.exp(log_u) / self.num_prompts  # pooled base weights, sum 1
        g = jnp.where(valid, self.gold, 0)
        x = jnp.where(valid[..., None], self.proxies, 0)
        wk = w[..., None]
        mg = jnp.sum(w * g)
        mx = jnp.sum(wk * x, axis=(0, 1))
        vx = jnp.sum(wk * (x - mx) ** 2, axis=(0, 1))
        if method == "moments":
            sg = jnp.sqrt(jnp.sum(w * (g - mg) ** 2))
            slope = jnp.where(vx > 0, sg / jnp.sqrt(jnp.where(vx > 0, vx, 1)), 1)
        else:
            cov = jnp.sum(wk * (x - mx) * (g - mg)[..., None], axis=(0, 1))
            slope = jnp.where(vx > 0, cov / jnp.where(vx > 0, vx, 1), 0)
        new = mg + (self.proxies - mx) * slope
        new = jnp.where(valid[..., None], new, 0)
        return Ensemble.tree_unflatten((self.exact, self.names), (new, self.gold, self.log_weights, self.counts,
                                                                  self.mask))


# ---------------------------------------------------------------------------------------------
# Loading from a long table.


@dataclass
class LoadedEnsemble:
    """An :class:`Ensemble` read from a table, with the prompt ids, a description and notes."""

    ensemble: Ensemble
    prompt_ids: list[Any]
    source: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def ensemble_from_table(
    table,
    proxies: Sequence[str],
    gold: str,
    *,
    prompt: str = "prompt_id",
    log_weight: str | None = None,
    count: str | None = None,
    dedupe: str | None = None,
) -> LoadedEnsemble:
    """Groups a long table (one row per sample) into an :class:`Ensemble`.

    Args:
      table: a :class:`jaxlimits.io.Table` (``jaxlimits.io.read_table``).
      proxies: the columns of the ``M`` proxy rewards.
      gold: the column of the gold reward.
      prompt, log_weight, count, dedupe: as in :func:`jaxlimits.io.samples_from_table`; with
        ``dedupe`` rows of a prompt with the same key and the same values in every used column
        are merged into one row with a count.

    Raises:
      jaxlimits.io.DataError: a missing column or a bad value (naming file, line and column).
    """
    from .io import DataError

    if not proxies:
        raise DataError(f"{table.path}: give at least one proxy column")
    names = list(proxies)
    cols = [table.column(c, option="--proxy") for c in names] + [table.column(gold, option="--gold")]
    if log_weight is not None:
        cols.append(table.column(log_weight, option="--log-weight-col"))
    counts = np.ones(len(table)) if count is None else table.column(count, option="--count-col")
    bad = (counts < 0) | (counts != np.round(counts))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{table.where(i)}: column {count!r} is {counts[i]!r}, not a whole number >= 0")
    values = np.stack(cols, axis=1)  # [rows, M + 1 (+1)]
    pids = table.keys(prompt, option="--prompt-col")
    keys = table.keys(dedupe, option="--dedupe") if dedupe else None

    order: dict[Any, list[int]] = {}
    for i, p in enumerate(pids):
        order.setdefault(p, []).append(i)
    rows_per, counts_per, merged, conflicts = [], [], 0, 0
    for idx in order.values():
        if keys is None:
            rows_per.append(values[idx])
            counts_per.append(counts[idx])
            continue
        groups: dict[tuple, int] = {}
        seen: dict[Any, set] = {}
        out_rows, out_counts = [], []
        for i in idx:
            k = (keys[i], tuple(values[i]))
            seen.setdefault(k[0], set()).add(k[1])
            if k in groups:
                out_counts[groups[k]] += counts[i]
                merged += 1
            else:
                groups[k] = len(out_rows)
                out_rows.append(values[i])
                out_counts.append(counts[i])
        conflicts += sum(len(v) > 1 for v in seen.values())
        rows_per.append(np.asarray(out_rows))
        counts_per.append(np.asarray(out_counts))
    for p, c in zip(order, counts_per):
        if c.sum() <= 0:
            raise DataError(f"{table.where(order[p][0])}: prompt {p!r} has no sample with a positive count")
    width = max(len(r) for r in rows_per)
    num_p, m = len(rows_per), len(names)
    arr = np.zeros((num_p, width, values.shape[1]))
    cnt = np.zeros((num_p, width))
    mask = np.zeros((num_p, width), bool)
    for p, (r, c) in enumerate(zip(rows_per, counts_per)):
        arr[p, : len(r)] = r
        cnt[p, : len(r)] = c
        mask[p, : len(r)] = True
    use_counts = count is not None or dedupe is not None
    ens = Ensemble(
        arr[..., :m], arr[..., m], log_weights=arr[..., m + 1] if log_weight is not None else None,
        counts=cnt if use_counts else None, mask=mask, names=names,
    )
    notes = []
    if keys is not None:
        notes.append(f"deduplicated by {dedupe!r}: {merged} rows merged into counts")
        if conflicts:
            notes.append(f"{conflicts} (prompt, {dedupe}) groups carry different values for the same key; "
                         "each distinct value was kept as its own row")
    source = {"file": str(table.path), "rows": len(table), "prompts": num_p,
              "columns": {"prompt": prompt, "proxies": names, "gold": gold,
                          **{k: v for k, v in dict(log_weight=log_weight, count=count, dedupe=dedupe).items() if v}}}
    return LoadedEnsemble(ens, list(order), source, notes)


def load_ensemble(path, proxies: Sequence[str], gold: str, **columns) -> LoadedEnsemble:
    """Reads a long-format file into an :class:`Ensemble` (see :func:`ensemble_from_table`)."""
    from .io import read_table

    return ensemble_from_table(read_table(path), proxies, gold, **columns)


# ---------------------------------------------------------------------------------------------
# Gaps of the members and the aggregations.


def ensemble_gaps(
    ensemble: Ensemble,
    betas,
    *,
    how: Sequence[str] = AGGREGATIONS,
    lam: float = 1.0,
    members: bool = True,
    memory_budget: int | None = None,
) -> dict[str, ProxyGap]:
    """The :func:`jaxlimits.proxy_gap` of every member and every aggregation.

    Args:
      ensemble: the :class:`Ensemble`.
      betas: ``[B]`` KL penalties.
      how: aggregations (see :func:`aggregate`).
      lam: weight of the std in ``mean_minus_std``.
      members: include each member on its own (keys ``"member <name>"``).
      memory_budget: bytes of working memory for each sweep.

    Returns:
      ``{name: ProxyGap}``, members first, then the aggregations in the order of ``how``.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> rng = np.random.default_rng(0); gold = rng.standard_normal((3, 40))
      >>> ens = jl.Ensemble([gold + rng.standard_normal(gold.shape) for _ in range(3)], gold)
      >>> list(jl.ensemble_gaps(ens, [3.0, 1.0, 0.3], members=False))
      ['mean', 'median', 'min', 'mean_minus_std']
    """
    _sweep.check_betas(betas, ensemble.num_prompts, ensemble.dtype)
    check_grid(betas)
    b = jnp.asarray(betas, ensemble.dtype)
    out = {}
    if members:
        for k, name in enumerate(ensemble.names):
            out[f"member {name}"] = proxy_gap_jit(ensemble.member(k), b, memory_budget)
    for h in how:
        out[h] = proxy_gap_jit(ensemble.aggregate(h, lam=lam), b, memory_budget)
    return out


# ---------------------------------------------------------------------------------------------
# Scaling with the number of members.


class EnsembleScaling(NamedTuple):
    """How the K-member mean approaches gold, for ``K = 1..M`` (Thm. 3).

    Averages are over subsets of ``K`` members (every subset when there are at most ``subsets``
    of them, else ``subsets`` random ones). Standard errors are a bootstrap over prompts
    (prompts resampled with replacement, subsets and members held fixed): they say how well the
    prompt set pins these numbers down *for these members*, not how they would vary with other
    members.

    Attributes:
      ks: ``[M]`` ``1..M``.
      betas: ``[B]``.
      subsets: ``[M]`` number of subsets averaged at each K; exhaustive: ``[M]`` all were used.
      residual_norm, residual_norm_se: ``[M]`` root mean square over subsets of the pooled
        ``||rbar_K - s||_{L2(pi0)}`` (centred per prompt with ``centred=True``).
      residual_norm_expected: ``[M]`` ``sqrt(||ebar_M||^2 + noise_var (1/K - 1/M))``, what the
        exhaustive subset average equals exactly (finite-population identity).
      bias_sq, noise_var: the decomposition of Thm. 3, ``E||rbar_K - s||^2 = bias_sq + noise_var/K``,
        estimated without bias from the members: ``noise_var`` is the pooled between-member
        variance (``1/(M-1)``), ``bias_sq = ||ebar_M||^2 - noise_var / M`` (NaN for ``M = 1``).
      gold_gain_gold_aligned: ``[B]``.
      gold_gain_proxy_aligned, gap: ``[M, B]`` means over subsets (the signed gap).
      gap_abs, gap_abs_se: ``[M, B]`` mean over subsets of ``|pooled gap|``.
      residual_rate, residual_rate_se: the fitted log-log slope of ``residual_norm`` against K.
      gap_rate, gap_rate_se: ``[B]`` the fitted log-log slope of ``gap_abs`` against K.
      bootstrap: number of bootstrap replicates.
    """

    ks: Array
    betas: Array
    subsets: Array
    exhaustive: Array
    residual_norm: Array
    residual_norm_se: Array
    residual_norm_expected: Array
    bias_sq: Array
    noise_var: Array
    gold_gain_gold_aligned: Array
    gold_gain_proxy_aligned: Array
    gap: Array
    gap_abs: Array
    gap_abs_se: Array
    residual_rate: Array
    residual_rate_se: Array
    gap_rate: Array
    gap_rate_se: Array
    bootstrap: int

    def _columns(self):
        return tables.columns(self, shape_of="ks", exclude=("betas", "gold_gain_gold_aligned", "gap_rate",
                                                            "gap_rate_se"))

    def _summary(self):
        return tables.summary(self, shape_of="ks", headline=[
            f"K {tables.span(self.ks)}", f"{np.size(self.betas)} betas",
            f"residual norm {tables.span(self.residual_norm)}", f"residual rate {tables.span(self.residual_rate)}",
            f"bias_sq {tables.span(self.bias_sq)}", f"noise_var {tables.span(self.noise_var)}"])

    rows, to_dict, to_pandas, __repr__, _repr_html_ = tables.METHODS


def subset_design(num_members: int, subsets: int, seed: int = 0):
    """Subsets of members for each K: ``(masks [T, M], ks [T], weights [T], counts [M], exhaustive [M])``.

    For each ``K`` every subset when there are at most ``subsets`` of them (weights
    ``1 / C(M, K)``), else ``subsets`` subsets drawn uniformly at random (weights ``1/subsets``).
    """
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    rng = np.random.default_rng(seed)
    masks, ks, weights, counts, exhaustive = [], [], [], [], []
    for k in range(1, num_members + 1):
        n = math.comb(num_members, k)
        if n <= subsets:
            combos = [list(c) for c in itertools.combinations(range(num_members), k)]
        else:
            combos = [rng.choice(num_members, k, replace=False) for _ in range(subsets)]
        for c in combos:
            row = np.zeros(num_members)
            row[np.asarray(c)] = 1
            masks.append(row)
            ks.append(k)
            weights.append(1 / len(combos))
        counts.append(len(combos))
        exhaustive.append(n <= subsets)
    return np.asarray(masks), np.asarray(ks), np.asarray(weights), np.asarray(counts), np.asarray(exhaustive)


def _residuals(ens: Ensemble, centred: bool):
    """``[P, N, M]`` member residuals ``r_j - s`` (centred per prompt and member) and ``u``, ``valid``."""
    valid, log_u, _ = base_weights(ens.base())
    u = jnp.where(valid, jnp.exp(log_u), 0)
    e = jnp.where(valid[..., None], ens.proxies - ens.gold[..., None], 0)
    if centred:
        e = e - jnp.sum(u[..., None] * e, axis=1, keepdims=True)
        e = jnp.where(valid[..., None], e, 0)
    return e, u


@functools.partial(jax.jit, static_argnames=("centred", "memory_budget"))
def _scaling_rows(ens: Ensemble, masks, betas, centred: bool, memory_budget):
    """Per subset row: gold gain of the subset mean ``[T, P, B]`` and residual^2 ``[T, P]``.

    The gold-aligned gain comes from the same loop (gold as one more "subset", aligned to with
    gold as the score), so the program holds one copy of the tilt kernel. ``lax.map`` runs the
    subsets one after another inside the compiled program: memory stays within the sweep's
    budget, and vmapping them in batches of 8 measured 10% slower on a 2-core CPU (200 prompts x
    256 samples x 8 members, 255 subsets, 8 betas: 2.9 s against 3.2 s).
    """
    e, u = _residuals(ens, centred)
    m = masks.shape[1]
    proxies = jnp.concatenate([ens.proxies, ens.gold[..., None]], axis=-1)
    rows = jnp.concatenate([jnp.pad(masks, ((0, 0), (0, 1))), jnp.eye(1, m + 1, m, dtype=masks.dtype)], axis=0)

    def one(mask):
        rbar = jnp.matmul(proxies, mask, precision=HIGHEST) / jnp.sum(mask)
        st = estimators.tilt(ens.with_proxy(rbar), betas, memory_budget=memory_budget)
        d = jnp.matmul(e, mask[:m], precision=HIGHEST) / jnp.maximum(jnp.sum(mask[:m]), 1)
        return st.gain, jnp.sum(u * d * d, axis=1)

    gains, res2 = jax.lax.map(one, rows)
    return gains[-1], gains[:-1], res2[:-1]


def _slope(log_k, log_y):
    """OLS slope of ``log_y [..., M]`` on ``log_k [M]``."""
    x = log_k - jnp.mean(log_k)
    y = log_y - jnp.mean(log_y, axis=-1, keepdims=True)
    return jnp.sum(x * y, axis=-1) / jnp.sum(x * x)


@jax.jit
def _summaries(prompt_w, gain_s, gains, res2, avg, log_k):
    """Per-K curves and fitted slopes for one weighting of the prompts (``prompt_w [P]``, sum 1)."""
    gap = gain_s[None] - gains  # [T, P, B]
    pooled_gap = jnp.einsum("p,tpb->tb", prompt_w, gap, precision=HIGHEST)
    pooled_res2 = jnp.matmul(res2, prompt_w, precision=HIGHEST)  # [T]
    res_k = pooling.safe_sqrt(jnp.matmul(avg, pooled_res2, precision=HIGHEST))  # [M]
    gap_abs = jnp.matmul(avg, jnp.abs(pooled_gap), precision=HIGHEST)  # [M, B]
    return res_k, gap_abs, _slope(log_k, jnp.log(res_k)), _slope(log_k, jnp.log(gap_abs).T)


def ensemble_scaling(
    ensemble: Ensemble,
    betas,
    *,
    subsets: int = 32,
    bootstrap: int = 200,
    seed: int = 0,
    centred: bool = False,
    memory_budget: int | None = None,
) -> EnsembleScaling:
    r"""The gold gain, gap and residual of the K-member mean for ``K = 1..M``, and their rates (Thm. 3).

    For each ``K`` the members of random subsets (all subsets when there are at most
    ``subsets``) are averaged, ``rbar_K``, and :func:`jaxlimits.tilt` gives the gold gain of the
    policy aligned to it; the subsets run through one jit-compiled ``lax.map``. The rates are
    OLS slopes of ``log residual_norm`` and ``log gap_abs`` on ``log K``; Thm. 3 predicts
    ``-1/2`` for the residual of unbiased members and *at most* ``-1/2`` for the gap (it can
    fall like ``1/K``). With biased members the residual levels off at ``sqrt(bias_sq)``: the
    slope then measures a curve, not a power law; read it with ``bias_sq`` and ``noise_var``.

    Args:
      ensemble: the :class:`Ensemble` (consider :meth:`Ensemble.calibrated` first when members
        are on different scales).
      betas: ``[B]`` KL penalties.
      subsets: the most subsets averaged at each K.
      bootstrap: replicates of the bootstrap over prompts for the standard errors (0: none).
      seed: seed of the random subsets and the bootstrap.
      centred: measure the residual after removing each prompt's mean (what the gap can see).
      memory_budget: bytes of working memory for each sweep.

    Returns:
      :class:`EnsembleScaling`. A zero residual or gap gives a NaN rate.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> rng = np.random.default_rng(0); gold = rng.standard_normal((48, 48))
      >>> ens = jl.Ensemble(gold[..., None] + rng.standard_normal((48, 48, 8)), gold)
      >>> sc = jl.ensemble_scaling(ens, [2.0], subsets=70, bootstrap=200)
      >>> abs(float(sc.residual_rate) + 0.5) < 3 * float(sc.residual_rate_se)
      True
    """
    if not isinstance(ensemble, Ensemble):
        raise ValueError(f"ensemble_scaling needs a jaxlimits.Ensemble, got {type(ensemble).__name__}")
    m = ensemble.num_members
    if m < 2:
        raise ValueError(f"ensemble_scaling needs at least 2 members, got {m}")
    _sweep.check_betas(betas, ensemble.num_prompts, ensemble.dtype)
    check_grid(betas)
    if bootstrap < 0 or bootstrap == 1:
        raise ValueError(f"bootstrap must be 0 or at least 2 replicates, got {bootstrap}")
    dt = ensemble.dtype
    masks, ks, weights, counts, exhaustive = subset_design(m, subsets, seed)
    b = jnp.asarray(betas, dt)
    gain_s, gains, res2 = _scaling_rows(ensemble, jnp.asarray(masks, dt), b, centred, memory_budget)
    avg = np.zeros((m, len(ks)))
    avg[ks - 1, np.arange(len(ks))] = weights
    avg = jnp.asarray(avg, dt)
    log_k = jnp.log(jnp.arange(1, m + 1, dtype=dt))
    num_p = ensemble.num_prompts
    w0 = jnp.full((num_p,), 1 / num_p, dt)
    res_k, gap_abs, res_rate, gap_rate = _summaries(w0, gain_s, gains, res2, avg, log_k)
    nan = jnp.full((), jnp.nan, dt)
    res_se, gap_abs_se, res_rate_se, gap_rate_se = (
        jnp.full_like(res_k, jnp.nan), jnp.full_like(gap_abs, jnp.nan), nan, jnp.full_like(gap_rate, jnp.nan)
    )
    if bootstrap:
        key = jax.random.PRNGKey(seed)
        idx = jax.random.randint(key, (bootstrap, num_p), 0, num_p)
        w = jax.vmap(lambda i: jnp.zeros(num_p, dt).at[i].add(1 / num_p))(idx)
        reps = jax.vmap(_summaries, in_axes=(0, None, None, None, None, None))(w, gain_s, gains, res2, avg, log_k)
        res_se, gap_abs_se, res_rate_se, gap_rate_se = (jnp.std(x, axis=0, ddof=1) for x in reps)
    # Thm. 3 decomposition from the members themselves.
    e, u = _residuals(ensemble, centred)
    ebar = jnp.mean(e, axis=-1)
    full_sq = jnp.mean(jnp.sum(u * ebar * ebar, axis=1))
    noise_var = jnp.mean(jnp.sum(u * jnp.sum((e - ebar[..., None]) ** 2, axis=-1), axis=1)) / (m - 1)
    kk = jnp.arange(1, m + 1, dtype=dt)
    expected = pooling.safe_sqrt(full_sq + noise_var * (1 / kk - 1 / m))
    gap_mean = jnp.matmul(avg, jnp.mean(gain_s[None] - gains, axis=1), precision=HIGHEST)
    gold_mean = jnp.matmul(avg, jnp.mean(gains, axis=1), precision=HIGHEST)
    return EnsembleScaling(
        jnp.arange(1, m + 1), b, jnp.asarray(counts), jnp.asarray(exhaustive),
        res_k, res_se, expected, full_sq - noise_var / m, noise_var,
        jnp.mean(gain_s, axis=0), gold_mean, gap_mean, gap_abs, gap_abs_se,
        res_rate, res_rate_se, gap_rate, gap_rate_se, int(bootstrap),
    )
