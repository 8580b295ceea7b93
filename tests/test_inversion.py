"""Frontier inversion (MATH.md §4-6): exact laws, closed forms, SciPy, gradients, statuses, CLI.

Compilation dominates the cost of these tests, so they share a few sample shapes and target
counts (each distinct shape compiles the solver once per question and mode).
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.special import logsumexp

import jaxlimits as jl
from jaxlimits import inversion as inv
from jaxlimits.inversion import Status

F64_EPS = float(np.finfo(np.float64).eps)
F32_EPS = float(np.finfo(np.float32).eps)


def bernoulli_kl(q, p):
    """kl(q || p) written with log1p, accurate for q near p."""
    g = q - p
    return q * np.log1p(g / p) + (1 - q) * np.log1p(-g / (1 - p))


# -- exact finite laws --------------------------------------------------------------------------

P_BERN = np.array([0.05, 0.3, 0.5, 0.8])
GAINS = np.array([1e-4, 0.01, 0.1, 0.15, 0.19, 0.3, 0.45, 0.6])  # some above 1 - p: infeasible there


@pytest.fixture(scope="module")
def bernoulli_laws():
    return jl.Samples.from_law([[0.0, 1.0]] * len(P_BERN), [[1 - p, p] for p in P_BERN])


def test_bernoulli_rate_function_exact(bernoulli_laws):
    """KL*(G) = kl(p + G || p) to 1e-10 (float64), per prompt; G >= 1 - p is infeasible."""
    sol = jl.min_kl_for_gain(bernoulli_laws, GAINS, pooled=False, throw=False)
    assert sol.kl.shape == (len(P_BERN), len(GAINS))
    p = P_BERN[:, None]
    feasible = GAINS[None, :] < 1 - p
    status = np.asarray(sol.status)
    np.testing.assert_array_equal(status, np.where(feasible, Status.OK, Status.GAIN_AT_OR_ABOVE_MAX))
    want = np.where(feasible, bernoulli_kl(np.minimum(p + GAINS, 1 - 1e-12), p), np.nan)
    np.testing.assert_allclose(np.asarray(sol.kl), want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(sol.gain), np.where(feasible, GAINS, np.nan), rtol=1e-12, atol=0)
    # lambda* = logit(p + G) - logit(p): the exponential tilt of a Bernoulli law
    q = np.minimum(p + GAINS, 1 - 1e-12)
    lam = np.log(q / (1 - q)) - np.log(p / (1 - p))
    np.testing.assert_allclose(np.asarray(sol.beta), np.where(feasible, 1 / lam, np.nan), rtol=1e-9)
    assert np.all(np.asarray(sol.converged) == feasible)
    # an exact law has no sampling error
    assert np.all(np.asarray(sol.kl_se)[feasible] == 0) and not np.any(np.asarray(sol.saturated)[feasible])
    np.testing.assert_array_equal(np.asarray(sol.gain_max), np.broadcast_to(1 - p, sol.gain.shape))


def test_bernoulli_most_gain_exact(bernoulli_laws):
    """gain*(kl(p + G || p)) = G to 1e-10; the KL ceiling of a Bernoulli law is log(1/p)."""
    p = P_BERN[:, None]
    g = np.array([1e-3, 0.02, 0.04, 0.045])  # below 1 - p for every p
    budgets = bernoulli_kl(p + g, p)
    # one call per prompt row would compile again: use the prompt's own budgets via pooled=False
    # on each row's budgets (the same shape for every prompt)
    for i in range(len(P_BERN)):
        sol = jl.max_gain_at_kl(bernoulli_laws, budgets[i], pooled=False)
        np.testing.assert_allclose(np.asarray(sol.gain)[i], g, rtol=0, atol=1e-10)
        np.testing.assert_allclose(np.asarray(sol.kl)[i], budgets[i], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sol.kl_ceiling)[:, 0], -np.log(P_BERN), rtol=1e-14)


def test_bernoulli_float32(bernoulli_laws):
    """Float32 inputs stay float32 and solve to a tolerance tied to float32's epsilon."""
    law32 = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, bernoulli_laws)
    sol = jl.min_kl_for_gain(law32, GAINS, pooled=False, throw=False)
    assert sol.kl.dtype == jnp.float32
    p = P_BERN[:, None]
    feasible = GAINS[None, :] < 1 - p
    want = bernoulli_kl(np.minimum(p + GAINS, 1 - 1e-12), p)
    # the curve is evaluated to ~100 eps relative (sums and logs in float32); beta* inherits it
    # through d log KL / d log G >= 1, at most ~2 for these laws
    got = np.asarray(sol.kl, dtype=np.float64)
    np.testing.assert_allclose(got[feasible], want[feasible], rtol=1000 * F32_EPS)
    assert np.all(np.asarray(sol.converged)[feasible])


CAT_VALUES = np.array([-1.0, 0.0, 0.5, 2.0, 3.5])
CAT_PROBS = np.array([0.25, 0.35, 0.2, 0.15, 0.05])


def _cat_curves(lam):
    """Exact tilted gain and KL of the 5-outcome law at lambda = 1/beta."""
    logits = np.log(CAT_PROBS) + lam * CAT_VALUES
    log_z = logsumexp(logits)
    q = np.exp(logits - log_z)
    mean0 = CAT_PROBS @ CAT_VALUES
    return q @ CAT_VALUES - mean0, lam * (q @ CAT_VALUES) - log_z


@pytest.fixture(scope="module")
def categorical():
    return jl.Samples.from_law([CAT_VALUES], [CAT_PROBS])


def test_categorical_against_brentq(categorical):
    """Both questions on a 5-outcome law agree with SciPy brentq on the exact curves."""
    gain_max = CAT_VALUES.max() - CAT_PROBS @ CAT_VALUES
    kl_max = -np.log(CAT_PROBS[CAT_VALUES.argmax()])
    fractions = np.array([1e-3, 0.1, 0.5, 0.9, 0.999])
    sol = jl.min_kl_for_gain(categorical, fractions * gain_max)
    for i, g in enumerate(fractions * gain_max):
        lam = brentq(lambda u, g=g: _cat_curves(u)[0] - g, 1e-12, 500, xtol=1e-15, rtol=4 * F64_EPS)
        np.testing.assert_allclose(float(sol.beta[i]), 1 / lam, rtol=1e-10)
        np.testing.assert_allclose(float(sol.kl[i]), _cat_curves(lam)[1], rtol=1e-10, atol=1e-14)
    sol = jl.max_gain_at_kl(categorical, fractions * kl_max)
    for i, k in enumerate(fractions * kl_max):
        lam = brentq(lambda u, k=k: _cat_curves(u)[1] - k, 1e-12, 500, xtol=1e-15, rtol=4 * F64_EPS)
        np.testing.assert_allclose(float(sol.beta[i]), 1 / lam, rtol=1e-10)
        np.testing.assert_allclose(float(sol.gain[i]), _cat_curves(lam)[0], rtol=1e-10, atol=1e-14)
    assert float(sol.kl_ceiling[0]) == pytest.approx(kl_max, rel=1e-14)


@settings(max_examples=15, deadline=None)
@given(
    probs=st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6),
    values=st.lists(st.floats(-3.0, 3.0), min_size=6, max_size=6, unique=True),
    fraction=st.floats(0.001, 0.99),
)
def test_random_laws_round_trip(probs, values, fraction):
    """On random 6-outcome laws: the two questions are inverse to each other, within the limits."""
    pr = np.asarray(probs) / np.sum(probs)
    law = jl.Samples.from_law([values], [pr])
    sol_k = jl.min_kl_for_gain(law, fraction * (max(values) - pr @ np.asarray(values)))
    assert 0 <= float(sol_k.kl) < float(sol_k.kl_ceiling)
    back = jl.max_gain_at_kl(law, sol_k.kl)
    np.testing.assert_allclose(float(back.gain), float(sol_k.gain), rtol=1e-9)
    np.testing.assert_allclose(float(back.beta), float(sol_k.beta), rtol=1e-8)


# -- samples: closed forms within standard error ----------------------------------------------


@pytest.mark.slow
def test_gaussian_within_standard_error():
    """N(0, 1) rewards: KL*(G) = G^2/2 and gain*(K) = sqrt(2K) within the delta-method SE."""
    r = np.random.default_rng(7).standard_normal((1, 20_000))
    s = jl.Samples(r)
    gains = np.array([0.1, 0.3, 0.5, 0.65])
    sol = jl.min_kl_for_gain(s, gains)
    se = np.asarray(sol.kl_se)
    # ESS/N = exp(-G^2) >= 0.65 here: not saturated (the rule flags ESS/N < 0.6)
    assert np.all(se > 0) and not np.any(np.asarray(sol.saturated))
    # 4 SE: a two-sided normal tail of 6e-5 per point (a fixed seed; the delta method is
    # accurate at these ESS)
    np.testing.assert_array_less(np.abs(np.asarray(sol.kl) - gains**2 / 2), 4 * se)
    budgets = np.array([0.005, 0.05, 0.125, 0.2])
    sol = jl.max_gain_at_kl(s, budgets)
    se = np.asarray(sol.gain_se)
    np.testing.assert_array_less(np.abs(np.asarray(sol.gain) - np.sqrt(2 * budgets)), 4 * se)
    np.testing.assert_allclose(np.asarray(sol.kl), budgets, rtol=1e-12)


# -- many prompts: pooled and per prompt ------------------------------------------------------

P, N, T = 6, 128, 5


@pytest.fixture(scope="module")
def gauss():
    rng = np.random.default_rng(3)
    return jl.Samples(rng.standard_normal((P, N)) * rng.uniform(0.5, 2.0, (P, 1)))


def _curves(samples, beta):
    # the plug-in curve: the tests below pin the solver on it (bias_correction=False); the
    # corrected curve (the default) is tested in test_corrected_solution_is_on_the_frontier
    st_ = jl.tilt(samples, np.asarray(beta).reshape(-1) if np.ndim(beta) == 1 else beta, bias_correction=False)
    return np.asarray(st_.gain), np.asarray(st_.kl)


def test_pooled_is_one_shared_beta(gauss):
    """The pooled solution's beta makes the mean over prompts of each prompt's curve hit the target."""
    targets = np.array([0.05, 0.2, 0.5, 1.0, 1.5])
    sol = jl.min_kl_for_gain(gauss, targets, bias_correction=False)
    assert sol.beta.shape == (T,)
    gain, kl = _curves(gauss, np.asarray(sol.beta))
    np.testing.assert_allclose(gain.mean(axis=0), targets, rtol=1e-12)
    np.testing.assert_allclose(kl.mean(axis=0), np.asarray(sol.kl), rtol=1e-12)
    per = jl.min_kl_for_gain(gauss, targets, pooled=False, bias_correction=False)
    assert per.beta.shape == (P, T)
    gain_p, _ = _curves(gauss, np.asarray(per.beta))
    np.testing.assert_allclose(gain_p, np.broadcast_to(targets, (P, T)), rtol=1e-12)
    # The shared beta is optimal for the averaged objective: per-prompt betas spend no more KL
    # in total for the same mean gain (the pooled solution is one feasible split).
    assert np.all(np.asarray(per.kl).mean(axis=0) >= -1e-12)


@pytest.mark.parametrize("pooled", [True, False])
def test_round_trips(gauss, pooled):
    """max_gain_at_kl(min_kl_for_gain(G).kl).gain == G, and the other way round."""
    gains = np.array([0.01, 0.2, 0.5, 1.0, 1.5])
    sol = jl.min_kl_for_gain(gauss, gains, pooled=pooled, bias_correction=False)
    kls = np.asarray(sol.kl)
    if pooled:
        back = jl.max_gain_at_kl(gauss, kls, bias_correction=False)
        np.testing.assert_allclose(np.asarray(back.gain), gains, rtol=1e-11)
        np.testing.assert_allclose(np.asarray(back.beta), np.asarray(sol.beta), rtol=1e-10)
    else:
        for i in range(P):  # the same target shape: one compilation for all rows
            back = jl.max_gain_at_kl(gauss, kls[i], pooled=False, bias_correction=False)
            np.testing.assert_allclose(np.asarray(back.gain)[i], gains, rtol=1e-11)
    budgets = np.array([1e-4, 0.05, 0.4, 1.0, 2.0])
    sol = jl.max_gain_at_kl(gauss, budgets, pooled=pooled, bias_correction=False)
    gains = np.asarray(sol.gain)
    if pooled:
        back = jl.min_kl_for_gain(gauss, gains, bias_correction=False)
        np.testing.assert_allclose(np.asarray(back.kl), budgets, rtol=1e-11)


# per prompt: with the heavy tests (CI runs them)
@pytest.mark.parametrize("pooled", [True, pytest.param(False, marks=pytest.mark.heavy)])
def test_corrected_solution_is_on_the_frontier(gauss, pooled):
    """By default the solved curve is the bias-corrected frontier of ``jl.frontier``/``jl.tilt``.

    At ``beta*`` the corrected curve meets the target to ``correction_rtol`` (1e-6 in float64)
    and the solution's kl, gain, bias and reasons are the kernel's; under ``jit`` the same passes
    give the same solution.
    """
    gains = np.array([0.05, 0.2, 0.5, 1.0, 1.5])
    budgets = np.array([1e-3, 0.05, 0.4, 1.0, 2.0])
    for fn, targets in ((jl.min_kl_for_gain, gains), (jl.max_gain_at_kl, budgets)):
        sol = fn(gauss, targets, pooled=pooled, throw=False)
        plug = fn(gauss, targets, pooled=pooled, throw=False, bias_correction=False)
        ok = np.asarray(sol.status) == Status.OK
        assert ok.sum() >= (5 if pooled else 28)
        beta = np.where(ok, np.asarray(sol.beta), 1.0)
        if pooled:
            at = jl.frontier(gauss, beta, per_prompt=False)
        else:
            at = jl.tilt(gauss, beta)
        solved = np.asarray(at.gain if fn is jl.min_kl_for_gain else at.kl)
        want = np.broadcast_to(targets, solved.shape)
        np.testing.assert_allclose(solved[ok], want[ok], rtol=inv.correction_rtol(np.float64))
        assert np.all(np.asarray(sol.converged)[ok])
        jitted = jax.jit(lambda t, fn=fn: fn(gauss, t, pooled=pooled, throw=False))(targets)
        np.testing.assert_array_equal(np.asarray(jitted.status), np.asarray(sol.status))
        np.testing.assert_allclose(np.asarray(jitted.beta)[ok], np.asarray(sol.beta)[ok], rtol=1e-12)  # the same passes
        np.testing.assert_array_equal(np.asarray(jitted.reasons)[ok], np.asarray(sol.reasons)[ok])
        for field in ("kl", "gain", "gain_bias", "kl_bias"):
            np.testing.assert_allclose(np.asarray(getattr(sol, field))[ok], np.asarray(getattr(at, field))[ok],
                                       rtol=1e-10, atol=1e-15)
        np.testing.assert_array_equal(np.asarray(sol.reasons)[ok], np.asarray(at.reasons)[ok])
        # the correction moved the solution (N = 128: the bias is not negligible) ...
        assert np.all(np.asarray(sol.beta)[ok] != np.asarray(plug.beta)[ok])
        # ... and the plug-in solution carries the same kernel's bias at its own beta
        beta_p = np.where(ok, np.asarray(plug.beta), 1.0)
        at_p = jl.frontier(gauss, beta_p, per_prompt=False) if pooled else jl.tilt(gauss, beta_p)
        np.testing.assert_allclose(np.asarray(plug.gain_bias)[ok], np.asarray(at_p.gain_bias)[ok], rtol=1e-10)


def test_correction_leaves_exact_laws_alone(bernoulli_laws):
    """An exact law has no estimation bias: both settings give the same solution."""
    a = jl.min_kl_for_gain(bernoulli_laws, GAINS, pooled=False, throw=False)
    b = jl.min_kl_for_gain(bernoulli_laws, GAINS, pooled=False, throw=False, bias_correction=False)
    for field in ("beta", "kl", "gain"):
        np.testing.assert_array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)))
    assert np.all(np.asarray(a.gain_bias) == 0)


def test_standard_errors_are_reverse_kl_se(gauss):
    """se(KL*(G)) = se(reverse KL) and se(gain*(K)) = beta se(reverse KL) at beta* (influence functions)."""
    sol = jl.min_kl_for_gain(gauss, np.array([0.05, 0.2, 0.5, 1.0, 1.5]), pooled=False)
    st_ = jl.tilt(gauss, np.asarray(sol.beta))
    np.testing.assert_allclose(np.asarray(sol.kl_se), np.asarray(st_.reverse_kl_se), rtol=1e-10)
    assert np.all(np.asarray(sol.gain_se) == 0)
    np.testing.assert_array_equal(np.asarray(sol.saturated), np.asarray(st_.saturated))


def _tilt_at(samples, beta, pooled):
    """``jaxlimits.tilt`` at the solution: per prompt at each prompt's betas, pooled at the shared ones."""
    beta = np.asarray(beta)
    return jl.tilt(samples, np.broadcast_to(beta, (samples.num_prompts,) + beta.shape) if pooled else beta,
                   bias_correction=False)  # the plug-in curve, which the inversions solve


# Five prompts of 600 draws, with counts and importance weights, and six targets of each question:
# the two tests below share them (each sample type's solver and kernel compile once).
STAT_GAINS = np.array([0.002, 0.05, 0.3, 0.8, 1.3, 1.6])
STAT_KLS = np.array([1e-5, 0.01, 0.1, 0.5, 1.0, 1.8])
STAT_CHUNKED = 6 * 8 * 2 * 4 * 256  # a memory budget of four sample chunks of 170 (padded to 680)


def _stat_draws():
    """(values, counts, log_weights), each [5, 600]."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((5, 600)) * np.array([0.5, 1.0, 1.0, 2.0, 3.0])[:, None]
    return values, rng.integers(1, 4, values.shape).astype(float), 0.3 * rng.standard_normal(values.shape)


@pytest.mark.slow
# per prompt: with the heavy tests (CI runs them)
@pytest.mark.parametrize("pooled", [True, pytest.param(False, marks=pytest.mark.heavy)])
def test_solution_statistics_equal_tilt(pooled):
    """The statistics at the solution (kl, gain, SEs, saturated) equal ``jaxlimits.tilt``'s at beta*.

    Plain samples, counts, importance weights and sample chunks; targets from the small-tilt
    series (lambda R <= 1) to the tilted sums, with prompts on both sides of the saturation rule.
    Pooled (MATH.md §6): kl and gain are the means over prompts, the SE of the mean over
    independent prompts ``sqrt(sum_x se_x^2) / P``; saturated by the one kernel's trust rule at
    beta* (``jl.tilt`` per prompt, the pooled ``jl.frontier`` pooled).
    """
    values, counts, log_weights = _stat_draws()
    num_p = values.shape[0]
    cases = [
        (jl.Samples(values), None),
        (jl.Samples(values, counts=counts), None),
        (jl.Samples(values, log_weights=log_weights), None),
        (jl.Samples(values), STAT_CHUNKED),
    ]
    gains, kls = STAT_GAINS, STAT_KLS
    for samples, budget in cases:
        for fn, targets in ((jl.min_kl_for_gain, gains), (jl.max_gain_at_kl, kls)):
            sol = fn(samples, targets, pooled=pooled, throw=False, memory_budget=budget,
                     bias_correction=False)
            ok = np.asarray(sol.status) == Status.OK
            assert ok.sum() >= (3 if pooled else 15)
            beta = np.where(ok, np.asarray(sol.beta), 1.0)
            st_ = _tilt_at(samples, beta, pooled)
            kl, gain, rkl_se = (np.asarray(a) for a in (st_.kl, st_.gain, st_.reverse_kl_se))
            # the trust rule at the solution is the one kernel's (per prompt, or the pooled frontier's)
            if pooled:
                se = np.sqrt(np.sum(rkl_se**2, axis=0)) / num_p
                kl, gain = kl.mean(axis=0), gain.mean(axis=0)
                sat = np.asarray(jl.frontier(samples, beta, per_prompt=False, memory_budget=budget).saturated)
            else:
                se = rkl_se
                sat = np.asarray(jl.tilt(samples, beta, memory_budget=budget).saturated)
            is_gain = fn is jl.min_kl_for_gain
            np.testing.assert_allclose(np.asarray(sol.kl)[ok], kl[ok], rtol=1e-12)
            np.testing.assert_allclose(np.asarray(sol.gain)[ok], gain[ok], rtol=1e-12)
            want_kl_se = se if is_gain else np.zeros_like(se)
            want_gain_se = np.zeros_like(se) if is_gain else beta * se
            np.testing.assert_allclose(np.asarray(sol.kl_se)[ok], want_kl_se[ok], rtol=1e-10, atol=0)
            np.testing.assert_allclose(np.asarray(sol.gain_se)[ok], want_gain_se[ok], rtol=1e-10, atol=0)
            np.testing.assert_array_equal(np.asarray(sol.saturated)[ok], sat[ok])
        if not pooled and budget is None and samples.log_weights is None:
            # both sides of the series switch are exercised (the trust rule's are the one kernel's,
            # tested with jl.tilt; at N = 600 every per-prompt point has ESS < 600 and is flagged few)
            lam_r = (np.abs(values - values.mean(axis=1, keepdims=True)).max(axis=1)[:, None] / beta)[ok]
            assert np.any(lam_r <= 1) and np.any(lam_r > 1)


# -- boundaries, infeasible targets and errors -----------------------------------------------


def test_boundary_and_infeasible_statuses(gauss):
    """0, just below, at and above the limit, negative and NaN targets: status and values."""
    base = jl.max_gain_at_kl(gauss, 0.0)
    kmax = float(base.kl_ceiling)
    np.testing.assert_allclose(kmax, np.log(N), rtol=1e-14)  # plain distinct samples: log N
    budgets = np.array([0.0, kmax * (1 - 1e-9), kmax, kmax + 1, -0.1])
    sol = jl.max_gain_at_kl(gauss, budgets, throw=False, bias_correction=False)
    assert sol.status.tolist() == [Status.OK, Status.OK, Status.KL_AT_OR_ABOVE_CEILING,
                                   Status.KL_AT_OR_ABOVE_CEILING, Status.NEGATIVE_TARGET]
    assert float(sol.beta[0]) == np.inf and float(sol.kl[0]) == 0 and float(sol.gain[0]) == 0
    assert bool(sol.converged[0]) and bool(sol.converged[1])
    np.testing.assert_allclose(float(sol.kl[1]), budgets[1], rtol=1e-9)
    assert float(sol.gain[1]) < float(sol.gain_max[1]) and bool(sol.saturated[1])
    # NaN exactly where the status says the target is infeasible, never elsewhere
    bad = np.asarray(sol.status) != Status.OK
    for field in ("beta", "kl", "gain", "kl_se", "gain_se"):
        np.testing.assert_array_equal(np.isnan(np.asarray(getattr(sol, field))), bad)
    gmax = float(base.gain_max)
    gains = np.array([0.0, gmax * (1 - 1e-9), gmax, np.inf, np.nan])
    sol = jl.min_kl_for_gain(gauss, gains, throw=False, bias_correction=False)
    assert sol.status.tolist() == [Status.OK, Status.OK, Status.GAIN_AT_OR_ABOVE_MAX,
                                   Status.GAIN_AT_OR_ABOVE_MAX, Status.NAN_TARGET]
    np.testing.assert_allclose(float(sol.gain[1]), gains[1], rtol=1e-9)
    assert float(sol.kl[1]) < kmax
    assert inv.STATUS[int(sol.status[2])] == "GAIN_AT_OR_ABOVE_MAX"
    assert "largest gain the samples can show" in inv.MESSAGES[int(sol.status[2])]


def test_eager_errors_name_target_prompt_and_limit(gauss):
    # the module's shapes (a scalar pooled, T targets per prompt): solvers compiled by the tests above
    with pytest.raises(ValueError, match=r"KL budget 9 .*KL ceiling of the pooled frontier, K_max = 4\.85"):
        jl.max_gain_at_kl(gauss, 9.0)
    gmax = np.asarray(jl.min_kl_for_gain(gauss, np.zeros(T), pooled=False).gain_max)[:, 0]
    p = int(np.argmin(gmax))
    g = float(gmax[p]) * 1.0001  # infeasible for that prompt only
    with pytest.raises(ValueError, match=rf"target gain .*targets\[1\].* largest gain of prompt {p}, max r"):
        jl.min_kl_for_gain(gauss, [0.1, g, 0.1, 0.1, 0.1], pooled=False)
    with pytest.raises(ValueError, match="is negative"):
        jl.min_kl_for_gain(gauss, -1.0)
    with pytest.raises(ValueError, match="must be numbers"):
        jl.min_kl_for_gain(gauss, ["a"])
    with pytest.raises(TypeError, match="jaxlimits.Samples"):
        jl.min_kl_for_gain(np.zeros((2, 3)), 0.1)


def test_not_converged_status(gauss):
    # the plug-in solver's own cap (the correction's re-solves start next to the root, see below)
    sol = jl.min_kl_for_gain(gauss, np.array([0.05, 0.2, 0.5, 1.0, 1.5]), max_iter=1, throw=False,
                             bias_correction=False)
    assert np.any(np.asarray(sol.status) == Status.NOT_CONVERGED)
    assert np.all(np.asarray(sol.converged) == (np.asarray(sol.status) == Status.OK))
    assert np.all(np.isfinite(np.asarray(sol.kl)))  # the last iterate, flagged, not NaN
    with pytest.raises(ValueError, match="did not converge"):
        jl.min_kl_for_gain(gauss, np.array([0.05, 0.2, 0.5, 1.0, 1.5]), max_iter=1, bias_correction=False)
    # with the correction, iterations count every pass's Newton steps (the cap is per solve)
    full = jl.min_kl_for_gain(gauss, np.array([0.05, 0.2, 0.5, 1.0, 1.5]), bias_correction=False)
    corrected = jl.min_kl_for_gain(gauss, np.array([0.05, 0.2, 0.5, 1.0, 1.5]))
    assert np.all(np.asarray(corrected.iterations) > np.asarray(full.iterations))


def test_degenerate_prompt():
    """A prompt whose rewards all tie has no room: only the zero target is feasible there."""
    s = jl.Samples([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0]])
    sol = jl.min_kl_for_gain(s, np.array([0.0, 0.5]), pooled=False, throw=False)
    assert sol.status.tolist() == [[Status.OK, Status.GAIN_AT_OR_ABOVE_MAX], [Status.OK, Status.OK]]
    assert float(sol.kl[0, 0]) == 0 and float(sol.beta[0, 0]) == np.inf


@pytest.mark.heavy  # CI runs it (the README's test command stays under 10 minutes)
@pytest.mark.slow
def test_weights_counts_and_chunked_samples():
    """Counts equal expanded samples; a small memory budget (sample chunks) changes nothing.

    On test_solution_statistics_equal_tilt's draws and targets (its solvers and kernels, compiled).
    """
    values, counts, lw = _stat_draws()
    expanded = jl.Samples.from_ragged([np.repeat(v, c.astype(int)) for v, c in zip(values, counts)])
    a = jl.min_kl_for_gain(jl.Samples(values, counts=counts), STAT_GAINS, pooled=False, throw=False)
    b = jl.min_kl_for_gain(expanded, STAT_GAINS, pooled=False, throw=False)
    np.testing.assert_array_equal(np.asarray(a.status), np.asarray(b.status))
    ok = np.asarray(a.status) == Status.OK
    assert ok.sum() >= 20
    np.testing.assert_allclose(np.asarray(a.kl)[ok], np.asarray(b.kl)[ok], rtol=1e-11)
    np.testing.assert_allclose(np.asarray(a.kl_se)[ok], np.asarray(b.kl_se)[ok], rtol=1e-9)
    # importance weights (SNIS) and sample chunks: the same answer as one block
    w = jl.Samples(values, log_weights=lw)
    # the plug-in curve, as brentq's
    c = jl.max_gain_at_kl(w, STAT_KLS, pooled=False, throw=False, bias_correction=False)
    d = jl.max_gain_at_kl(w, STAT_KLS, pooled=False, throw=False, memory_budget=STAT_CHUNKED, bias_correction=False)
    np.testing.assert_array_equal(np.asarray(c.status), np.asarray(d.status))
    ok = np.asarray(c.status) == Status.OK
    assert ok.sum() >= 20
    np.testing.assert_allclose(np.asarray(c.gain)[ok], np.asarray(d.gain)[ok], rtol=1e-11)
    # against the exact law with those weights: the same curve, solved by brentq (prompt 0, KL 0.5)
    u = np.exp(lw[0] - logsumexp(lw[0]))

    def kl_at(lam):
        logits = np.log(u) + lam * values[0]
        q = np.exp(logits - logsumexp(logits))
        return lam * q @ values[0] - logsumexp(logits)

    assert STAT_KLS[3] == 0.5 and ok[0, 3]
    lam = brentq(lambda x: kl_at(x) - 0.5, 1e-9, 1e3, xtol=1e-15)
    np.testing.assert_allclose(float(c.beta[0, 3]), 1 / lam, rtol=1e-9)
    # the SNIS standard error at the solution is the kernel's (se(gain*) = beta se(reverse KL))
    beta = np.where(ok, np.asarray(c.beta), 1.0)
    st_ = jl.tilt(w, beta)
    np.testing.assert_allclose(np.asarray(c.gain_se)[ok], (beta * np.asarray(st_.reverse_kl_se))[ok], rtol=1e-9)


def test_scores_are_not_used(gauss):
    """The inverted frontier is the rewards' (gain measured with r, MATH.md §5)."""
    with_scores = jl.Samples(gauss.rewards, scores=-gauss.rewards)
    gains = np.array([0.05, 0.2, 0.5, 1.0, 1.5])  # the module's T targets: the solver is compiled
    a = jl.min_kl_for_gain(with_scores, gains)
    b = jl.min_kl_for_gain(gauss, gains)
    np.testing.assert_allclose(np.asarray(a.kl), np.asarray(b.kl), rtol=1e-14)


# -- the command line (in process, and through a subprocess as a user runs it) ---------------


def _write_table(path, rewards):
    lines = ["prompt_id,reward"]
    for p, row in enumerate(rewards):
        lines += [f"q{p},{float(v)!r}" for v in row]
    path.write_text("\n".join(lines) + "\n")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxlimits.cli", "invert", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.heavy  # CI runs it (the README's test command stays under 10 minutes)
@pytest.mark.slow
def test_cli_invert(tmp_path, capsys):
    """``jaxlimits invert`` in process (``main``, as the console script calls it), and once through a
    subprocess, as a user runs it: exit code 2 and the messages, never a traceback. Each run asks
    both questions with as many targets (the solver is compiled once per target shape)."""
    from jaxlimits.cli import main

    rewards = np.random.default_rng(2).standard_normal((4, 64))
    data = tmp_path / "samples.csv"
    _write_table(data, rewards)
    out = tmp_path / "inv.json"
    assert main(["invert", str(data), "--gain", "0.1", "0.5", "--kl", "0.2", "--x64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "KL (nats)" in text and "gain 0.5" in text and "KL 0.2" in text
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["question"] for r in rows] == ["min_kl_for_gain", "min_kl_for_gain", "max_gain_at_kl"]
    # the library on the same samples, as the loader reads them (every draw present: a full mask),
    # with the command's targets: the solver the command compiled
    s = jl.Samples(rewards, mask=np.ones(rewards.shape, bool))
    np.testing.assert_allclose(rows[1]["kl"], float(jl.min_kl_for_gain(s, [0.1, 0.5]).kl[1]), rtol=1e-9)
    # the table and the CSV output (the same solves: nothing compiled again)
    csv_out = tmp_path / "o.csv"
    assert main(["invert", str(data), "--x64", "--gain", "0.1", "0.5", "--out", str(csv_out)]) == 0
    text = capsys.readouterr().out
    assert "inverting the pooled frontier" in text and "wrote" in text
    header = csv_out.read_text().splitlines()[0]
    assert header.startswith("question,target,beta,kl,kl_se,gain,gain_se,status")
    # no overwrite without --force (checked before any work)
    assert main(["invert", str(data), "--gain", "0.1", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    # infeasible targets: exit code 2, a message naming each, and the table still printed
    res = _cli(data, "--kl", 0.2, 99, "--gain", 0.3, 50, "--per-prompt")
    assert res.returncode == 2
    assert "--kl 99: the KL budget is at or above what the samples can show" in res.stderr
    assert "--gain 50: the target gain is at or above the largest gain the samples can show" in res.stderr
    assert "4 of 4 prompts" in res.stderr and "Traceback" not in res.stderr
    assert "kl_at_or_above_ceiling" in res.stdout
    # a usage error without targets
    assert main(["invert", str(data)]) == 2
    assert "--gain G" in capsys.readouterr().err
