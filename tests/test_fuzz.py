"""The fuzz campaign of issue 17, kept in the suite: no silent NaN, no traceback.

Random valid inputs (values, masks, counts, log-weights, betas; float32 and float64) at fixed
shapes, so that each property compiles once per dtype, against an independent long-double
implementation of MATH.md §3; bad arguments to the public functions; and one test per class of
failure the campaign found (with the value or the message it must give). Hypothesis runs
derandomized (``derandomize=True``: the examples are the same on every run, so a failure
reproduces) with a bounded number of examples per property.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jaxlimits as jl
from jaxlimits import bon, moments, streaming

P, N = 2, 6  # one shape for every example: one compilation per dtype and structure
_FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(examples: int):
    """The campaign's settings with ``examples`` examples (derandomized: the same ones every run)."""
    return settings(_FUZZ, max_examples=examples)
L = np.longdouble


# -- the independent reference (MATH.md §3, long double, one prompt) ----------------------------
def reference(r, beta, s=None, lw=None, m=None, valid=None) -> dict:
    """Gain, KL, reverse KL, ESS and their delta-method SEs of one prompt, in long double."""
    r = np.asarray(r, L)
    s = r if s is None else np.asarray(s, L)
    ok = np.ones(r.shape, bool) if valid is None else np.asarray(valid, bool)
    m = np.ones(r.shape, L) if m is None else np.asarray(m, L)
    lw = np.zeros(r.shape, L) if lw is None else np.asarray(lw, L)
    ok = ok & (m > 0) & (lw > -np.inf)
    r, s, m, lw = r[ok], s[ok], m[ok], lw[ok]
    lv = np.log(m) + lw
    u = np.exp(lv - lv.max())
    u /= u.sum()
    lam = 1 / L(beta)
    lp = lv + lam * r
    p = np.exp(lp - lp.max())
    p /= p.sum()
    mu_s, mu_r, base_s, base_r = (p * s).sum(), (p * r).sum(), (u * s).sum(), (u * r).sum()
    pos = p > 0
    rho = p / u
    w2 = u * u / m
    se = lambda psi: np.sqrt((w2 * psi * psi).sum())  # noqa: E731
    return {
        "gain": mu_s - base_s,
        "kl": (p[pos] * np.log(p[pos] / u[pos])).sum(),
        "reverse_kl": (u * (np.log(u) - np.log(np.where(pos, p, 1)))).sum() if pos.all() else L(np.inf),
        "ess": 1 / (p * p / m).sum(),
        "gain_se": se(rho * (s - mu_s) - (s - base_s)),
        "kl_se": se(rho * lam * (r - mu_r) - (rho - 1)),
        "reverse_kl_se": se((rho - 1) - lam * (r - base_r)),
        "kl_ceiling": -np.log(u[r == r.max()].sum()),
        "spread": r.max() - r.min(),
        "s_spread": s.max() - s.min(),
        "s_size": np.abs(s).max(),
    }


# -- random valid inputs ------------------------------------------------------------------------
@st.composite
def cases(draw, *, weighted: bool, scores: bool = False):
    """A valid ``Samples`` ``[P, N]`` (mask and counts always; log-weights if ``weighted``) and 3 betas."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    scale = 10.0 ** draw(st.integers(-3, 3))
    kind = draw(st.sampled_from(["normal", "ties", "offset", "single"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    r = rng.standard_normal((P, N))
    if kind == "ties":
        r = rng.integers(0, 2, (P, N)).astype(float)
    elif kind == "offset":
        r = r + 20.0
    r = r * scale
    mask = rng.random((P, N)) < 0.8
    counts = rng.integers(0, 4, (P, N)).astype(float)
    if kind == "single":
        mask[:] = False
    for p in range(P):  # at least one entry counts in every prompt
        i = rng.integers(N)
        mask[p, i], counts[p, i] = True, max(counts[p, i], 1.0)
    lw = None
    if weighted:
        lw = rng.standard_normal((P, N)) * draw(st.sampled_from([0.5, 3.0, 30.0]))
        lw[rng.random((P, N)) < 0.1] = -np.inf
        for p in range(P):
            ok = mask[p] & (counts[p] > 0)
            if not np.any(ok & np.isfinite(lw[p])):
                lw[p, np.flatnonzero(ok)[0]] = 0.0
    s = rng.standard_normal((P, N)) * scale if scores else None
    betas = np.sort(scale * 10.0 ** rng.uniform(-1.5, 2.0, 3))[::-1]
    cast = lambda x: None if x is None else np.asarray(x, dtype)  # noqa: E731
    smp = jl.Samples(cast(r), scores=cast(s), log_weights=cast(lw), counts=cast(counts), mask=mask)
    return smp, betas


def _references(smp, betas):
    host = lambda x: None if x is None else np.asarray(x, np.float64)  # noqa: E731
    r, s, lw, m, mask = (host(getattr(smp, f)) for f in ("rewards", "scores", "log_weights", "counts", "mask"))
    return [[reference(r[p], b, None if s is None else s[p], None if lw is None else lw[p], m[p],
                       mask[p].astype(bool)) for b in betas] for p in range(P)]


def _tolerance(dtype, ref, beta, field) -> float:
    """What rounding in ``dtype`` allows: ``eps`` times the size of the terms, with a margin of 2^10.

    The gain is a difference of means of values of size ``max |s|`` (rounded on input) over a
    spread amplified by ``lambda S``; the KLs are differences of terms up to ``lambda S`` and the
    ceiling; the ESS has the relative rounding of the tilted weights.
    """
    eps = float(np.finfo(dtype).eps) * 1024
    lam_s = float(ref["spread"]) / beta
    size = {
        "gain": float(ref["s_spread"]) * (1 + lam_s) + float(ref["s_size"]),
        "kl": 1 + lam_s + float(ref["kl_ceiling"]),
        "reverse_kl": 1 + lam_s + float(ref["kl_ceiling"]),
        "ess": float(ref["ess"]) * (1 + lam_s),
    }[field]
    return eps * size


def _check_against_reference(stats, smp, betas, *, se: bool = True) -> None:
    refs = _references(smp, betas)
    for p in range(P):
        for b, beta in enumerate(betas):
            ref = refs[p][b]
            for field in ("gain", "kl", "reverse_kl", "ess"):
                x = float(getattr(stats, field)[p, b])
                assert math.isfinite(x), f"{field}[{p}, {b}] = {x} (silent NaN), beta {beta}"
                want = float(ref[field])
                if field == "reverse_kl" and not math.isfinite(want):
                    continue  # a tilted weight underflows: the reverse KL is infinite in truth
                tol = _tolerance(smp.dtype, ref, beta, field)
                assert abs(x - want) <= tol, f"{field}[{p}, {b}] = {x}, reference {want}, tol {tol}, beta {beta}"
            if not se:
                continue
            for field in ("gain_se", "kl_se", "reverse_kl_se"):
                x = float(getattr(stats, field)[p, b])
                want = float(ref[field])
                if math.isnan(x):  # allowed: "not resolvable in this dtype" (moments.resolved)
                    continue
                assert x >= 0
                base = field[: -len("_se")]
                tol = 0.05 * want + _tolerance(smp.dtype, ref, beta, base)
                assert abs(x - want) <= tol, f"{field}[{p}, {b}] = {x}, reference {want}, beta {beta}"


@fuzz(30)
@given(cases(weighted=False))
def test_tilt_matches_the_reference_counts_and_masks(case):
    smp, betas = case
    _check_against_reference(jl.tilt(smp, betas, bias_correction=False), smp, betas)  # the plug-in estimator


@fuzz(30)
@given(cases(weighted=True, scores=True))
def test_tilt_matches_the_reference_log_weights_and_scores(case):
    smp, betas = case
    _check_against_reference(jl.tilt(smp, betas, bias_correction=False), smp, betas)  # the plug-in estimator


@fuzz(30)
@given(st.integers(-45, 36), st.integers(-45, 40), st.integers(0, 20), st.integers(0, 2**32 - 1))
def test_extreme_magnitudes_are_computed_or_refused(reward_exp, beta_exp, count_exp, seed):
    """Issue 17, classes 4 and 5: float32 anywhere in its range: finite results or a ValueError
    naming the field (rewards, counts or betas), never a silent NaN or infinity."""
    rng = np.random.default_rng(seed)
    r = np.float32(rng.standard_normal((P, N)) * 10.0**reward_exp)
    counts = np.float32(np.maximum(1, np.round(rng.random((P, N)) * 10.0**count_exp)))
    betas = np.sort(10.0 ** (beta_exp + rng.uniform(-1, 1, 3)))[::-1]
    try:
        stats = jl.tilt(jl.Samples(r, counts=counts), betas)
    except ValueError as e:
        assert any(f in str(e) for f in ("rewards", "counts", "betas")), str(e)
        return
    for field in ("gain", "kl", "ess", "kl_ceiling", "betas"):
        x = np.asarray(getattr(stats, field))
        assert np.isfinite(x).all(), f"{field} = {x}"
    # the reverse KL is about lambda S (S the spread): infinite only where that exceeds float32
    lam_s = (r.max(axis=1) - r.min(axis=1)).astype(np.float64)[:, None] / betas[None, :]
    rkl = np.asarray(stats.reverse_kl)
    assert (np.isfinite(rkl) | (lam_s > np.finfo(np.float32).max / 16)).all(), f"reverse_kl = {rkl}"
    # KL >= 0 up to the rounding of its first-order terms, eps * lambda S (S the spread): at
    # lambda S ~ 1e-13 float32 gives KL ~ 1e-29 with absolute errors of that size (see the report)
    assert (np.asarray(stats.kl) >= -np.finfo(np.float32).eps * lam_s).all()
    assert (np.asarray(stats.ess) >= 1 - 1e-3).all()


def _chunks(smp: jl.Samples, assign: np.ndarray, k: int) -> list[jl.Samples]:
    """The samples split into ``k`` chunks of the same shape (entries of the others masked out)."""
    out = []
    for c in range(k):
        mask = np.asarray(smp.mask) & (assign == c)
        out.append(jl.Samples(smp.rewards, scores=smp.scores, log_weights=smp.log_weights, counts=smp.counts,
                              mask=mask, validate=False))
    return out


@fuzz(20)
@given(cases(weighted=False), st.integers(0, 2**32 - 1))
def test_streaming_update_and_merge_match_tilt(case, seed):
    """Issue 17, class 1: chunks holding one sample or only ties rebase without overflow."""
    smp, betas = case
    assign = np.random.default_rng(seed).integers(0, 3, (P, N))
    parts = _chunks(smp, assign, 3)
    acc = streaming.init(P, np.broadcast_to(betas, (P, 3)), dtype=smp.dtype)  # per prompt: one compilation
    a = streaming.update(streaming.update(acc, parts[0]), parts[1])
    b = streaming.update(acc, parts[2])
    whole = jl.tilt(smp, betas, bias_correction=False)
    for st_ in (streaming.finalize(streaming.update(a, parts[2]), bias_correction=False),
                streaming.finalize(streaming.merge(b, a), bias_correction=False)):
        _check_against_reference(st_, smp, betas, se=False)
        for field in ("gain", "kl", "ess"):
            x, y = np.asarray(getattr(st_, field), np.float64), np.asarray(getattr(whole, field), np.float64)
            tol = 1e3 * float(np.finfo(smp.dtype).eps) * (1 + np.abs(y) + float(np.max(np.abs(smp.rewards))) / betas)
            np.testing.assert_array_less(np.abs(x - y), tol)


def _poison(smp: jl.Samples, values) -> jl.Samples:
    """The same samples with non-finite values in every entry that does not count."""
    off = ~np.asarray(smp.valid())
    fill = lambda x, v: None if x is None else jnp.asarray(np.where(off, v, np.asarray(x)), smp.dtype)  # noqa: E731
    return jl.Samples(fill(smp.rewards, values[0]), scores=fill(smp.scores, values[1]),
                      log_weights=fill(smp.log_weights, values[2]), counts=smp.counts, mask=smp.mask)


@fuzz(20)
@given(cases(weighted=False), st.tuples(*[st.sampled_from([np.nan, np.inf, -np.inf])] * 3))
def test_non_finite_values_under_a_mask_change_nothing(case, values):
    """Issue 17, class 2: what is masked out (or has count 0) is ignored by every function."""
    smp, betas = case
    bad = _poison(smp, values)
    np.testing.assert_array_equal(jl.tilt(bad, betas).gain, jl.tilt(smp, betas).gain)
    n = [1, int(np.min(np.asarray(smp.draws())))]
    want = jl.best_of_n(smp, n, frontier=False)
    got = jl.best_of_n(bad, n, frontier=False)
    np.testing.assert_array_equal(got.gain, want.gain)
    np.testing.assert_array_equal(got.win_rate, want.win_rate)
    np.testing.assert_array_equal(bon.quantile_samples(bad).rewards, bon.quantile_samples(smp).rewards)
    soft = lambda x: jl.soft_best_of_n(x, n, lam=float(betas[0]), num_subsets=4).gain  # noqa: E731
    np.testing.assert_array_equal(soft(bad), soft(smp))
    acc = streaming.init(P, np.broadcast_to(betas, (P, 3)), dtype=smp.dtype)
    np.testing.assert_array_equal(streaming.finalize(streaming.update(acc, bad)).kl,
                                  streaming.finalize(streaming.update(acc, smp)).kl)


# -- bad arguments: every public function names the one it rejects ------------------------------
_S = jl.Samples(np.asarray([[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 2.0, 2.0]]))
_SC = jl.Samples(_S.rewards, scores=_S.rewards[:, ::-1])
_CALLS = {
    # the name the message must hold: functions of the bad value
    "samples": [lambda x: jl.tilt(x, [1.0]), lambda x: jl.frontier(x, [1.0]), lambda x: jl.default_betas(x),
                lambda x: jl.max_gain_at_kl(x, 0.1), lambda x: jl.min_kl_for_gain(x, 0.1),
                lambda x: jl.best_of_n(x, [1]), lambda x: jl.soft_best_of_n(x, [1], lam=1.0),
                lambda x: jl.proxy_gap(x, [1.0]), lambda x: jl.bootstrap_bands(x, [1.0], 2),
                lambda x: jl.resample(x, jax.random.PRNGKey(0)), lambda x: jl.overoptimization(x, [1.0]),
                lambda x: jl.overoptimization_peak(x, [1.0, 2.0]), lambda x: jl.bt_blind_spot(x)],
    "betas": [lambda x: jl.tilt(_S, x), lambda x: jl.proxy_gap(_SC, x),
              lambda x: streaming.init(2, x), lambda x: jl.bootstrap_bands(_S, x, 2)],
    "memory_budget": [lambda x: jl.tilt(_S, [1.0], memory_budget=x),
                      lambda x: jl.frontier(_S, [1.0], memory_budget=x),
                      lambda x: jl.max_gain_at_kl(_S, 0.1, memory_budget=x)],
    "num_betas": [lambda x: jl.frontier(_S, num_betas=x), lambda x: jl.overoptimization(_SC, num_betas=x)],
    "num": [lambda x: jl.default_betas(_S, num=x)],
    "replicates": [lambda x: jl.bootstrap_bands(_S, [1.0], x)],
    "max_iter": [lambda x: jl.max_gain_at_kl(_S, 0.1, max_iter=x),
                 lambda x: jl.overoptimization_peak(_SC, [4.0, 2.0, 1.0], max_iter=x)],
    "ns": [lambda x: jl.best_of_n(_S, x)],
    "lam": [lambda x: jl.soft_best_of_n(_S, [1], lam=x)],
    "num_subsets": [lambda x: jl.soft_best_of_n(_S, [1], lam=1.0, num_subsets=x)],
    "num_prompts": [lambda x: streaming.init(x, [1.0])],
    "chunk": [lambda x: streaming.update(streaming.init(2, [1.0]), x)],
    "rewards": [lambda x: jl.Samples(x)],
    "counts": [lambda x: jl.Samples(_S.rewards, counts=x)],
}
#: Arguments whose default is None (None is not a bad value for them).
_NONE_OK = {"memory_budget", "max_iter", "counts"}
_TARGETS = [(name, i) for name, fns in _CALLS.items() for i in range(len(fns))]
_BAD = [None, "a", math.nan, math.inf, -1, object(), []]


@fuzz(60)
@given(st.sampled_from(_TARGETS), st.sampled_from(_BAD))
def test_bad_arguments_raise_a_clear_error_naming_them(target, bad):
    """Issue 17, class 9: a ValueError or TypeError naming the argument, never another exception."""
    name, i = target
    assume(not (bad is None and name in _NONE_OK))
    with pytest.raises((ValueError, TypeError)) as err:
        _CALLS[name][i](bad)
    assert name in str(err.value), f"{name}: {err.value!r}"


# -- one test per class, with the right value or message -----------------------------------------
def test_class1_streaming_rebase_of_a_single_sample_float32():
    acc = streaming.init(1, [100.0, 1.0], dtype=jnp.float32)
    acc = streaming.update(acc, jl.Samples(np.float32([[0.0]])))
    acc = streaming.update(acc, jl.Samples(np.float32([[0.03]])))
    got = streaming.finalize(acc, bias_correction=False)  # the values are the plug-in's
    want = jl.tilt(jl.Samples(np.float32([[0.0, 0.03]])), [100.0, 1.0], bias_correction=False)
    np.testing.assert_allclose(got.gain, want.gain, rtol=1e-4)
    np.testing.assert_allclose(got.gain, [[2.25e-6, 2.25e-4]], rtol=1e-3)  # 0.015 tanh(0.015 / beta)
    np.testing.assert_allclose(got.ess, want.ess, rtol=1e-5)


def test_class1_out_of_core_sweep_with_one_row_per_chunk(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": "a", "reward": {r}}}\n' for r in (0.0, 0.03, 0.01)))
    out = streaming.sweep_files(path, [100.0, 1.0], chunk_rows=1, dtype=jnp.float32)
    want = jl.tilt(jl.Samples(np.float32([[0.0, 0.03, 0.01]])), [100.0, 1.0])
    np.testing.assert_allclose(out.frontier.kl, want.kl[0], rtol=1e-3)
    np.testing.assert_allclose(out.frontier.gain, want.gain[0], rtol=1e-3)


def test_class2_best_of_n_ignores_a_masked_nan():
    res = jl.best_of_n(jl.Samples([[0.0, 1.0, 2.0, np.nan]], mask=[[1, 1, 1, 0]]), [2], frontier=False)
    np.testing.assert_allclose(res.gain, [2 / 3], rtol=1e-6)  # E max of 2 of {0, 1, 2} - 1
    clean = jl.Samples([[0.0, 1.0, 2.0]], scores=[[1.0, 0.0, 2.0]])
    dirty = jl.Samples([[0.0, 1.0, 2.0, np.inf]], scores=[[1.0, 0.0, 2.0, np.nan]], mask=[[1, 1, 1, 0]])
    np.testing.assert_allclose(jl.proxy_gap(dirty, [1.0]).gap, jl.proxy_gap(clean, [1.0]).gap, rtol=1e-6)
    run = lambda base: jl.run_from_samples("r", jl.Samples([[1.0, 2.0, 3.0]]), base, 0.1).gain  # noqa: E731
    assert run(dirty) == run(clean)


def test_class3_kl_ceiling_beyond_float32_log_weight_range():
    # padded to the shape of the class 6 cases (one compilation of tilt and the solver for both)
    s = jl.Samples(np.float32([[0, 1, 2, 3, 0, 0]]), log_weights=np.float32([[0, 0, 0, -120, 0, 0]]),
                   mask=[[1, 1, 1, 1, 0, 0]])
    want = 120 + math.log(3 + math.exp(-120))  # -log u(argmax r) = 121.0986...
    np.testing.assert_allclose(jl.tilt(s, [1.0]).kl_ceiling, [want], rtol=1e-6)
    with pytest.raises(ValueError, match="at or above the KL ceiling"):
        jl.max_gain_at_kl(s, 500.0)
    sol = jl.max_gain_at_kl(s, 500.0, throw=False)
    assert int(sol.status) == int(jl.inversion.Status.KL_AT_OR_ABOVE_CEILING)


@pytest.mark.parametrize("beta", [1e-46, 1e39])
def test_class4_betas_outside_float32(beta):
    s = jl.Samples(np.float32([[0, 1, 2, 3]]))
    with pytest.raises(ValueError, match=r"betas\[0\] = .* outside what float32"):
        jl.tilt(s, [beta])
    with pytest.raises(ValueError, match=r"betas\[0\] = .* outside what float32"):  # every sweep checks
        jl.overoptimization_peak(s.replace(scores=s.rewards), [beta, 1.0, 2.0])
    assert np.isfinite(jl.tilt(s.replace(rewards=np.float64([[0, 1, 2, 3]])), [beta]).kl).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(rewards=[[1e38, -1e38, 0.0]]), "rewards of prompt 0 have a magnitude of 1e\\+38"),
    (dict(rewards=[[0.0, 1e20, 0.0]]), "rewards of prompt 0 have a spread of 1e\\+20"),
    (dict(rewards=[[0.0, 1.0, 2.0]], scores=[[0.0, 1e20, 0.0]]), "scores of prompt 0 have a spread"),
    (dict(rewards=[[0.0, 1.0, 2.0]], counts=[[1e19, 1e19, 1.0]]), "counts of prompt 0 sum to 2e\\+19"),
])
def test_class5_magnitudes_that_overflow_float32_are_refused(kwargs, match):
    f32 = {k: np.float32(v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        jl.Samples(**f32)
    jl.Samples(**{k: np.float64(v) for k, v in kwargs.items()})  # float64 holds them


def test_class5_streaming_totals_are_checked():
    acc = streaming.init(1, [1.0], dtype=jnp.float32)
    for _ in range(2):
        acc = streaming.update(acc, jl.Samples(np.float32([[0.0, 1.0]]), counts=np.float32([[3e18, 1.0]])))
    with pytest.raises(ValueError, match="counts of prompt 0 sum to 6e\\+18"):
        streaming.finalize(acc)


@pytest.mark.parametrize("r, lw, beta", [
    ([6368.7177734375, 3816.29296875, 19746.568359375, 12386.98046875, 3462.7939453125, 6759.0625],
     [0.0, -10.161314010620117, -27.236366271972656, -37.124908447265625, -120.14750671386719, -23.822063446044922],
     3056.555374163385),  # was gain_se 0 (truth 0.079), kl_se 100 times the truth
    ([4545.68701171875, 10947.2548828125, 6042.8935546875, 19662.033203125, 5026.4482421875, 17317.5390625],
     [0.0, -14.876747131347656, -18.339771270751953, -28.791534423828125, -11.387060165405273, -11.28661060333252],
     12110.532711382803),  # was gain_se 8.0 (truth 0.42)
])
def test_class6_an_unresolvable_se_is_nan_not_zero(r, lw, beta):
    """float32, rewards of 1e4, base weights on one sample (ESS 1): the SE formulas cancel."""
    r, lw = np.float32([r]), np.float32([lw])
    want = reference(r[0], beta, lw=lw[0])
    mask = np.ones(r.shape, bool)
    for smp in (jl.Samples(r, log_weights=lw, mask=mask),
                jl.Samples(r.astype(np.float64), log_weights=lw.astype(np.float64), mask=mask)):
        got = jl.tilt(smp, [beta])
        for field in ("gain_se", "kl_se", "reverse_kl_se"):
            x = float(getattr(got, field)[0, 0])
            assert math.isnan(x) or abs(x - float(want[field])) <= 0.05 * float(want[field]), (field, x, want[field])
        if smp.dtype == np.float64:  # float64 resolves them (the cancellation costs it about 10 digits)
            np.testing.assert_allclose(got.gain_se[0, 0], float(want["gain_se"]), rtol=1e-4)
            np.testing.assert_allclose(got.kl_se[0, 0], float(want["kl_se"]), rtol=1e-4)
    sol = jl.max_gain_at_kl(jl.Samples(r, log_weights=lw, mask=mask), float(want["kl"]), throw=False)
    assert math.isnan(float(sol.gain_se)) or float(sol.gain_se) > 0


def test_class6_resolved_keeps_true_zeros_and_resolvable_values():
    var = jnp.asarray([0.0, 1e-9, 1.0], jnp.float32)
    bound = jnp.asarray([0.0, 1.0, 1.0], jnp.float32)
    out = np.asarray(moments.resolved(var, bound))
    assert out[0] == 0 and math.isnan(out[1]) and out[2] == 1
    ties = jl.Samples(np.full((1, 6), 2.0, np.float32), log_weights=np.zeros((1, 6), np.float32),
                      mask=np.ones((1, 6), bool))  # the shape of the class 6 cases: no new compilation
    np.testing.assert_array_equal(np.asarray(jl.tilt(ties, [1.0]).gain_se), 0)


def test_class7_default_grid_for_tiny_rewards():
    s = jl.Samples(np.float64([[1e-300, 2e-300, 3e-300]]))
    betas = jl.default_betas(s, 8)
    assert betas.max() < 1e-298
    f = jl.frontier(s, betas)
    assert float(f.kl[-1]) > 0.5 * math.log(3)  # the grid reaches toward the ceiling log 3
    np.testing.assert_allclose(f.kl_ceiling, math.log(3), rtol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: jl.tilt(np.zeros((2, 4)), [1.0]), "tilt: samples must be a jaxlimits.Samples, got ndarray"),
    (lambda: jl.tilt(_S, ["a"]), "betas must be numbers"),
    (lambda: jl.frontier(_S, num_betas=None), "num_betas must be a whole number >= 2, got None"),
    (lambda: jl.tilt(_S, [1.0], memory_budget=math.nan), "memory_budget must be a whole number >= 1, got nan"),
])
def test_class9_messages(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
