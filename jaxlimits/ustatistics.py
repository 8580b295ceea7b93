r"""Best-of-n from samples: tie-group U-statistics and their jackknife (MATH.md §8).

Per prompt, rows sorted by reward with their tie groups; the U-statistic over all ``n``-subsets
gives a tie group covering draws ``a+1 .. b`` the weight ``(C(b, n) - C(a, n)) / C(N, n)``
(:mod:`jaxlimits.binomial`), the exact law of best-of-n on the (empirical or exact) law gives its
KL, and the leave-one-out statistics follow from prefix and suffix sums, exactly, in ``O(N)``
per prompt. Also the checks these statistics need of their input (i.i.d. draws, ``n <= N``).

They are sorts, prefix sums and log-binomials over whole numbers: computed on the host in
float64 with NumPy (milliseconds, exact to ~1e-14, and no compilation: as a jitted XLA program
the ~100 small kernels took 20 s to compile per shape on CPU).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .binomial import diff_exp, log_binom, log_binom_at
from .bon_kl import beirami
from .pooling import safe_sqrt
from .samples import PromptError, Samples


class Sorted(NamedTuple):
    """Per prompt, rows sorted by reward (invalid rows last), with their tie groups; ``[P, N]`` float64."""

    y: np.ndarray  # [P, N, V] values averaged by the U-statistic: centred scores, centred rewards
    m: np.ndarray  # draws of the row (counts; 0 where invalid)
    q: np.ndarray  # base mass of the row (normalised)
    lp: np.ndarray | None  # log-probabilities of the rows (Beirami), or None
    start: np.ndarray  # index of the first row of the row's tie group
    end: np.ndarray  # index of the last row of the row's tie group
    a: np.ndarray  # draws strictly below the group
    b: np.ndarray  # draws through the end of the group
    group_y: np.ndarray  # [P, N, V] sum over the group of m * y
    group_q: np.ndarray  # base mass of the group
    log_f_hi: np.ndarray  # log F at the top of the group
    log_ratio: np.ndarray  # log(F_lo / F_hi) of the group (-inf for the lowest group)
    mid: np.ndarray  # mid-rank quantile F_lo + Q/2 of the row's reward
    order: np.ndarray  # the sort order (int)
    big_n: np.ndarray  # [P] total draws
    tied: np.ndarray  # [P] some rewards tie (a group of two or more draws)


def excl_cumsum(x):
    c = np.cumsum(x, axis=1)
    return np.concatenate([np.zeros_like(c[:, :1]), c[:, :-1]], axis=1)


def rev_excl_cumsum(x):
    c = np.flip(np.cumsum(np.flip(x, 1), axis=1), 1)
    return np.concatenate([c[:, 1:], np.zeros_like(c[:, :1])], axis=1)


def take(x, idx):
    return np.take_along_axis(x, idx if x.ndim == idx.ndim else idx[..., None], axis=1)


def group_sum(x, starts):
    """Sum of ``x`` ([P, N] or [P, N, V]) over each row's group (contiguous runs), back on the rows."""
    p, n = starts.shape
    flat = x.reshape((p * n,) + x.shape[2:])
    first = np.flatnonzero(starts.reshape(-1))
    sums = np.add.reduceat(flat, first, axis=0)
    lengths = np.diff(np.append(first, p * n))
    return np.repeat(sums, lengths, axis=0).reshape(x.shape)


def host(x, dtype=np.float64):
    return None if x is None else np.asarray(x, dtype=dtype)


def prepare(samples: Samples, log_probs) -> Sorted:
    r = host(samples.rewards)
    s = r if samples.scores is None else host(samples.scores)
    valid = np.asarray(samples.valid())
    m = np.where(valid, 1.0 if samples.counts is None else host(samples.counts), 0.0)
    order = np.argsort(np.where(valid, r, np.inf), axis=1, kind="stable")
    r, s, m, valid = (np.take_along_axis(x, order, axis=1) for x in (r, s, m, valid))
    if samples.log_weights is not None:
        lw = np.take_along_axis(host(samples.log_weights), order, axis=1)
        with np.errstate(divide="ignore"):
            lw = np.where(valid, lw + np.log(np.where(valid, m, 1.0)), -np.inf)
        lw = lw - lw.max(axis=1, keepdims=True)
        q = np.where(valid, np.exp(lw), 0.0)
        q = q / q.sum(axis=1, keepdims=True)
    else:
        q = m / m.sum(axis=1, keepdims=True)
    lp = None if log_probs is None else np.take_along_axis(host(log_probs), order, axis=1)

    p, n = r.shape
    idx = np.broadcast_to(np.arange(n), (p, n))
    same = np.zeros((p, n), bool)
    same[:, 1:] = (r[:, 1:] == r[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    starts = ~same
    ends = np.ones((p, n), bool)
    ends[:, :-1] = starts[:, 1:]
    start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    end = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n - 1), 1), axis=1), 1)

    cm = np.cumsum(m, axis=1)
    a = np.take_along_axis(cm - m, start, axis=1)
    b = np.take_along_axis(cm, end, axis=1)
    big_n = cm[:, -1]

    # Centred values: the U-statistic is shift-equivariant (its weights sum to 1).
    wt = q if (samples.exact or samples.log_weights is not None) else m / big_n[:, None]
    y = np.stack([s - np.sum(wt * s, axis=1, keepdims=True), r - np.sum(wt * r, axis=1, keepdims=True)], axis=-1)
    y = np.where(valid[..., None], y, 0.0)
    group_y = group_sum(m[..., None] * y, starts)

    group_q = group_sum(q, starts)
    f_lo = np.take_along_axis(excl_cumsum(q), start, axis=1)
    f_hi_left = np.take_along_axis(np.cumsum(q, axis=1), end, axis=1)
    s_hi = np.take_along_axis(rev_excl_cumsum(q), end, axis=1)  # mass above the group, summed from the top
    with np.errstate(divide="ignore", invalid="ignore"):
        log_f_hi = np.where(f_hi_left < 0.5, np.log(f_hi_left), np.log1p(-s_hi))
        ratio = np.clip(group_q / np.exp(log_f_hi), 0.0, 1.0)
        log_ratio = np.where(f_lo > 0, np.log1p(-ratio), -np.inf)
    mid = f_lo + group_q / 2
    tied = np.any(valid & (b - a >= 2), axis=1)
    return Sorted(y, m, q, lp, start, end, a, b, group_y, group_q, log_f_hi, log_ratio, mid, order, big_n, tied)


def loo_variance(stat_minus, m, big_n):
    """Jackknife variance ``(N-1)/N sum_i (T_-i - mean T_-)^2`` over draws (rows weighted by counts)."""
    mean = np.sum(m * stat_minus, axis=1) / big_n
    dev = np.where(m > 0, stat_minus - mean[:, None], 0.0)
    return (big_n - 1) / big_n * np.sum(m * dev**2, axis=1)


def per_n(st: Sorted, n: int, *, exact: bool) -> dict:
    """Per-prompt statistics of BoN_n: a dict of ``[P]`` (or ``[P, V]``) float64 arrays."""
    big_n = st.big_n[:, None]
    m, a, b = st.m, st.a, st.b
    size = b - a
    out = {}

    # The exact law of BoN on the (empirical or exact) law: mass F_hi^n - F_lo^n on each level.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_d = n * st.log_f_hi + np.log(-np.expm1(n * st.log_ratio))
        pos = (st.group_q > 0) & (st.q > 0) & (log_d > -np.inf)
        rho = np.where(pos, np.exp(log_d) * st.q / np.where(pos, st.group_q, 1.0), 0.0)
        out["kl_exact"] = np.sum(np.where(pos, rho * (log_d - np.log(np.where(pos, st.group_q, 1.0))), 0.0), axis=1)

    if exact:
        w = rho
        out["u"] = np.einsum("pn,pnv->pv", w, st.y)
        out["u_se"] = np.zeros_like(out["u"])
        out["win"] = np.sum(w * st.mid, axis=1)
        out["win_se"] = np.zeros_like(out["win"])
    else:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            la, lb, la1, lb1, lb2 = log_binom_at(np.stack([a, b, a - 1, b - 1, b - 2]), n, st.big_n.max())
            log_cn, log_c1 = log_binom(np.stack([big_n, big_n - 1]), n)
            log_cw, log_cw1 = log_binom(np.stack([big_n, big_n - 1]), n + 1)

            # U-statistic weights: the group covering draws a+1..b gets (C(b,n) - C(a,n)) / C(N,n).
            frac = np.where(m > 0, m / np.where(size > 0, size, 1.0), 0.0)
            w = diff_exp(la - log_cn, lb - log_cn) * frac
            w = w / np.sum(w, axis=1, keepdims=True)  # sums to 1 exactly in exact arithmetic
            mean_y = np.einsum("pn,pnv->pv", m, st.y) / big_n
            out["u"] = np.einsum("pn,pnv->pv", w, st.y) - mean_y

            # Jackknife: removing one draw of the group (a, b] leaves groups below at (a, b), groups
            # above at (a-1, b-1) and the own group at (a, b-1) without that draw's value; the
            # normaliser becomes C(N-1, n).
            below = (diff_exp(la - log_c1, lb - log_c1) * frac)[..., None] * st.y
            above = (diff_exp(la1 - log_c1, lb1 - log_c1) * frac)[..., None] * st.y
            own_w = diff_exp(la - log_c1, lb1 - log_c1)[..., None]
            others = np.where((size > 1)[..., None], (st.group_y - st.y) / np.maximum(size - 1, 1)[..., None], 0.0)
            u_minus = take(excl_cumsum(below), st.start) + own_w * others + take(rev_excl_cumsum(above), st.end)
            total = np.einsum("pn,pnv->pv", m, st.y)[:, None, :]
            g_minus = u_minus - (total - st.y) / (big_n - 1)[..., None]
            var = np.stack([loo_variance(g_minus[..., v], m, st.big_n) for v in range(g_minus.shape[-1])], -1)
            out["u_se"] = np.where((st.big_n >= n + 1)[:, None], safe_sqrt(var), np.nan)

            # Win rate against a base draw: the U-statistic of degree n + 1 (ties count one half).
            # By Vandermonde, a group of M draws above a others holds the maximum of an (n+1)-subset
            # with t of its draws in C(M, t) C(a, n+1-t) ways; the base draw is one of those t with
            # probability t/(n+1) and then ties (t >= 2) or loses (t = 1):
            # win = 1 - sum_groups M (C(b-1, n) + C(a, n)) / 2 / C(N, n+1) / (n+1).
            v = np.sum(m * 0.5 * (np.exp(lb1 - log_cw) + np.exp(la - log_cw)), axis=1)
            out["win"] = np.where(st.big_n >= n + 1, 1 - v / (n + 1), np.nan)
            e_lb1, e_lb2, e_la, e_la1 = (np.exp(x - log_cw1) for x in (lb1, lb2, la, la1))
            below_w = m * 0.5 * (e_lb1 + e_la)
            above_w = m * 0.5 * (e_lb2 + e_la1)
            own = 0.5 * (size - 1) * (e_lb2 + e_la)
            v_minus = take(excl_cumsum(below_w), st.start) + own + take(rev_excl_cumsum(above_w), st.end)
            win_var = loo_variance(1 - v_minus / (n + 1), m, st.big_n)
            out["win_se"] = np.where(st.big_n >= n + 2, safe_sqrt(win_var), np.nan)
    if st.lp is not None:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            bei = beirami(np, np.where(m > 0, st.lp, -1.0), float(n))
        out["kl_beirami"] = np.sum(np.where(m > 0, w * bei, 0.0), axis=1)
    else:
        out["kl_beirami"] = np.full(st.big_n.shape, np.nan)
    out["kl_analytic"] = np.full(st.big_n.shape, math.log(n) - (n - 1) / n)
    return out


def core(samples: Samples, ns: np.ndarray, log_probs):
    st = prepare(samples, log_probs)
    outs = [per_n(st, int(n), exact=samples.exact) for n in ns]
    res = {k: np.stack([o[k] for o in outs], axis=1) for k in outs[0]}  # [P, K, ...]
    # n = 1 is the base model itself: no gain, no KL, a win rate of 1/2 (exactly, not up to rounding).
    one = np.asarray(ns) == 1
    for k in ("u", "kl_exact", "kl_beirami"):
        res[k][:, one] = np.where(np.isnan(res[k][:, one]), np.nan, 0.0)
    res["win"][:, one] = 0.5
    return res, st


def check_ns(ns, samples: Samples) -> np.ndarray:
    arr = np.asarray(ns)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"ns must be a non-empty list of numbers of draws, got shape {arr.shape}")
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"ns must be whole numbers, got {ns!r}")
    bad = ~np.isfinite(arr.astype(float)) | (arr < 1) | (arr != np.round(arr))
    if bad.any():
        raise ValueError(f"ns[{int(np.flatnonzero(bad)[0])}] = {arr[bad][0]!r}: n must be a whole number >= 1")
    if not samples.exact:
        draws = np.asarray(samples.draws())
        worst = int(np.argmin(draws))
        if arr.max() > draws[worst]:
            raise PromptError(
                f"n = {int(arr.max())} exceeds the {int(draws[worst])} draws of {PromptError.PLACE}: best-of-n "
                f"from samples needs n <= N on every prompt", worst
            )
    return arr.astype(np.int64)


def check_iid(samples: Samples, what: str) -> None:
    if samples.exact or samples.log_weights is None:
        return
    lw = np.asarray(samples.log_weights)
    valid = np.asarray(samples.valid())
    spread = np.where(valid, lw, -np.inf).max(axis=1) - np.where(valid, lw, np.inf).min(axis=1)
    if np.any(spread > 0):
        p = int(np.flatnonzero(spread > 0)[0])
        raise PromptError(
            f"{what} needs i.i.d. unweighted base samples (counts are fine), but {PromptError.PLACE} carries "
            f"importance log-weights that differ: a best-of-n draw from the sampler q is not one from pi0. "
            f"Resample to pi0 first, or give the law exactly (Samples.from_law)", p
        )


def check_log_probs(log_probs, samples: Samples):
    if log_probs is None:
        return None
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim == 1 and samples.num_prompts == 1:
        lp = lp[None]
    if lp.shape != tuple(samples.rewards.shape):
        raise ValueError(f"log_probs has shape {lp.shape} but the samples have shape {tuple(samples.rewards.shape)}")
    valid = np.asarray(samples.valid())
    bad = valid & ~(np.isfinite(lp) | (lp == -np.inf))
    bad |= valid & (lp > 0)
    if bad.any():
        p, i = (int(x) for x in np.argwhere(bad)[0])
        raise PromptError(
            f"log_probs[{p}, {i}] = {float(lp[p, i])!r} is not a log-probability (must be <= 0 and not NaN): "
            f"{PromptError.PLACE}, sample {i}", p, i
        )
    return np.where(valid, lp, -1.0)
