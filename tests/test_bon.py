"""Best-of-n against exact answers: closed forms, enumeration of subsets and samples, SciPy, the paper's numbers."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize, stats

import jaxlimits as jl
from jaxlimits import binomial, bon
from jaxlimits.cli import main
from jaxlimits.testbed import exact as tb_exact

# Statistical checks: |estimate - truth| <= Z_TOL standard errors (a false alarm about 1 in 16,000 per
# check for a well-calibrated SE; the seeds are fixed, so the tests are deterministic).
Z_TOL = 4.0


def _brute_gain(r, s, n):
    """Mean over all n-subsets of (mean s over the subset's tied maxima) minus mean(s)."""
    vals = []
    for sub in itertools.combinations(range(len(r)), n):
        sub = list(sub)
        top = max(r[sub])
        vals.append(np.mean([s[i] for i in sub if r[i] == top]))
    return np.mean(vals) - np.mean(s)


def _brute_win(r, n):
    """Mean over all (n+1)-subsets and choices of the base draw: 1 win, 1/2 tie, 0 loss."""
    vals = []
    for sub in itertools.combinations(range(len(r)), n + 1):
        for o in sub:
            best = max(r[i] for i in sub if i != o)
            vals.append(1.0 if best > r[o] else 0.5 if best == r[o] else 0.0)
    return np.mean(vals)


def _population_bon(values, probs, scores, n):
    """Exact E[s of BoN_n] - E[s] and KL for a finite law (uniform tie-breaking), from the level CDF."""
    levels = np.unique(values)
    q = np.array([probs[values == v].sum() for v in levels])
    mean_s = np.array([(probs * scores)[values == v].sum() / q[j] for j, v in enumerate(levels)])
    big_f = np.cumsum(q)
    d = big_f**n - np.concatenate([[0.0], big_f[:-1]]) ** n
    mid = big_f - q / 2
    pos = d > 0
    return float(d @ mean_s - probs @ scores), float(np.sum(d[pos] * np.log(d[pos] / q[pos]))), float(d @ mid)


# ------------------------------------------------------------------------------------------------
# The U-statistic: closed forms (MATH.md §8)


@pytest.fixture(scope="module")
def uniform_res():
    r = np.random.default_rng(1).uniform(size=(64, 1000))
    return bon.best_of_n(jl.Samples(r), [1, 2, 4, 16, 64], frontier=False)


def test_uniform_expected_max_is_n_over_n_plus_1(uniform_res):
    n = np.asarray(uniform_res.n)
    want = n / (n + 1) - 0.5
    got, se = np.asarray(uniform_res.gain), np.asarray(uniform_res.gain_se)
    assert abs(got[0]) < 1e-12 and se[0] < 1e-12  # n = 1 is the base model
    np.testing.assert_array_less(np.abs(got - want)[1:], Z_TOL * se[1:])


def test_exponential_expected_max_is_harmonic_number():
    r = np.random.default_rng(2).exponential(size=(64, 1000))
    res = bon.best_of_n(jl.Samples(r), [2, 5, 20], frontier=False)
    harmonic = np.array([sum(1 / k for k in range(1, n + 1)) for n in (2, 5, 20)])
    np.testing.assert_array_less(np.abs(np.asarray(res.gain) - (harmonic - 1)), Z_TOL * np.asarray(res.gain_se))


@pytest.fixture(scope="module")
def gaussian():
    r = np.random.default_rng(3).standard_normal((64, 4096))
    return jl.Samples(r)


@pytest.fixture(scope="module")
def gaussian_res(gaussian):
    return bon.best_of_n(gaussian, [1, 2, 4, 10, 16], frontier=False)


def _normal_max(n):
    return integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -np.inf, np.inf)[0]


def test_normal_expected_max_matches_quadrature(gaussian_res):
    want = np.array([_normal_max(n) for n in (1, 2, 4, 10, 16)])
    np.testing.assert_allclose(want[1:], [0.5641896, 1.0293754, 1.5387527, 1.7659914], rtol=1e-6)  # MATH.md §8
    got, se = np.asarray(gaussian_res.gain), np.asarray(gaussian_res.gain_se)
    np.testing.assert_array_less(np.abs(got - want)[1:], Z_TOL * se[1:])


def test_gaussian_efficiency_against_the_analytic_frontier(gaussian_res):
    """BoN gain / sqrt(2 sigma^2 K_n) (the Gaussian frontier, MATH.md §10): about 0.908 at n=2, 0.92 at n=16."""
    n = np.asarray(gaussian_res.n)
    kl = np.asarray(gaussian_res.kl)
    np.testing.assert_allclose(kl, np.log(n) - (n - 1) / n, atol=1e-15)  # no ties: the analytic KL
    frontier = np.sqrt(2 * kl)
    eff, eff_se = np.asarray(gaussian_res.gain)[1:] / frontier[1:], np.asarray(gaussian_res.gain_se)[1:] / frontier[1:]
    want = np.array([_normal_max(k) for k in n[1:]]) / frontier[1:]
    np.testing.assert_allclose(want[[0, -1]], [0.9077, 0.9218], atol=5e-5)
    np.testing.assert_array_less(np.abs(eff - want), Z_TOL * eff_se)


@pytest.mark.slow
def test_gaussian_efficiency_against_the_estimated_frontier(gaussian, gaussian_res):
    """The same efficiencies with the frontier estimated from the samples (jaxlimits.max_gain_at_kl)."""
    res = bon.best_of_n(gaussian, [1, 2, 4, 10, 16])
    n = np.asarray(res.n)
    frontier = np.sqrt(2 * np.asarray(res.kl))
    # The estimated frontier against the closed form, within its SE (plus the ratio estimators'
    # O(1/N) bias, far below the SE here: N = 4096 per prompt).
    err = np.abs(np.asarray(res.frontier_gain) - frontier)[1:]
    np.testing.assert_array_less(err, Z_TOL * np.asarray(res.frontier_gain_se)[1:] + 1e-3)
    eff = np.asarray(res.efficiency)
    assert np.isnan(eff[0])  # n = 1: zero KL, zero gain
    want = np.array([_normal_max(k) for k in n[1:]]) / frontier[1:]
    rel = np.hypot(np.asarray(res.gain_se)[1:] / np.asarray(res.gain)[1:],
                   np.asarray(res.frontier_gain_se)[1:] / np.asarray(res.frontier_gain)[1:])
    np.testing.assert_array_less(np.abs(eff[1:] - want), Z_TOL * rel * want + 1e-3)
    # The win-rate frontier: the optimal tilt of the quantile, W(c) = 1/(1-e^-c) - 1/c at
    # KL(c) = log(c/(e^c-1)) + c W(c) (MATH.md §8); BoN falls short by 0.0092 at n=2, 0.0040 at n=4.
    short = np.asarray(res.win_rate_frontier) - np.asarray(res.win_rate)
    np.testing.assert_allclose(short[1:3], [0.0092, 0.0040], atol=1e-3)
    np.testing.assert_allclose(np.asarray(res.win_rate)[1:], n[1:] / (n[1:] + 1), atol=1e-12)


def _win_frontier(kl):
    """Closed-form best win rate at a KL for continuous rewards (MATH.md §8)."""

    def kl_of(c):
        w = 1 / (-math.expm1(-c)) - 1 / c
        return math.log(c) - c - math.log(-math.expm1(-c)) + c * w, w

    c = optimize.brentq(lambda c: kl_of(c)[0] - kl, 1e-9, 700.0)
    return kl_of(c)[1]


def test_win_rate_frontier_closed_form_numbers():
    """MATH.md §8's shortfalls of BoN against the closed-form win-rate frontier."""
    for n, want in ((2, 0.0092), (4, 0.0040), (16, 0.00011)):
        short = _win_frontier(math.log(n) - (n - 1) / n) - n / (n + 1)
        assert abs(short - want) < 0.5 * 10 ** math.floor(math.log10(want)), (n, short)


def _tilted(values, probs, scores, beta):
    """Exact tilted gain and KL of a finite law (NumPy, log-sum-exp)."""
    a = np.log(probs) + values / beta
    p = np.exp(a - a.max())
    p /= p.sum()
    return float(p @ scores - probs @ scores), float(np.sum(p * (np.log(p) - np.log(probs))))


def test_quantile_tilt_matches_the_win_rate_closed_form():
    """Tilting the mid-rank quantile of a fine uniform law gives W(c) at KL(c) (exact sums)."""
    m = 20_000
    law = jl.Samples.from_law([np.arange(m) / m], [np.full(m, 1 / m)])
    q = np.asarray(bon.quantile_samples(law).rewards)[0]
    np.testing.assert_allclose(q, (np.arange(m) + 0.5) / m, atol=1e-12)
    for c in (1.0, 4.0):
        w = 1 / (-math.expm1(-c)) - 1 / c
        kl = math.log(c) - c - math.log(-math.expm1(-c)) + c * w
        gain, kl_ = _tilted(q, np.full(m, 1 / m), q, 1 / c)
        assert abs(gain + 0.5 - w) < 1e-6  # discretisation error ~ c^2 / (12 m^2)
        assert abs(kl_ - kl) < 1e-6
    # ties count one half: mid-ranks of a tied sample
    tied = bon.quantile_samples(jl.Samples([[3.0, 1.0, 2.0, 2.0]], counts=[[1, 1, 1, 1]]))
    assert np.asarray(tied.rewards).tolist() == [[0.875, 0.125, 0.5, 0.5]]


# ------------------------------------------------------------------------------------------------
# The U-statistic: exact by enumeration (ties, counts, the jackknife)

R_TIED = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 5.0])
S_TIED = np.array([0.3, -1.0, 2.0, 0.5, 1.5, -0.2, 0.9, 1.1])


def test_u_statistic_equals_the_average_over_all_subsets_with_ties():
    ns = [1, 2, 3, 5, 7, 8]
    res = bon.best_of_n(jl.Samples(R_TIED, scores=S_TIED), ns, frontier=False)
    for i, n in enumerate(ns):
        assert abs(float(res.gain[i]) - _brute_gain(R_TIED, S_TIED, n)) < 1e-13, n
        if n < len(R_TIED):
            assert abs(float(res.win_rate[i]) - _brute_win(R_TIED, n)) < 1e-13, n
    assert np.isnan(float(res.win_rate[-1]))  # n = N: the unbiased win rate needs n + 1 draws
    np.testing.assert_allclose(np.asarray(res.reward_gain),
                               [_brute_gain(R_TIED, R_TIED, n) for n in ns], atol=1e-13)


def test_jackknife_matches_leave_one_out_by_enumeration():
    ns = [2, 3, 5]
    res = bon.best_of_n(jl.Samples(R_TIED, scores=S_TIED), ns, frontier=False)
    big_n = len(R_TIED)
    for i, n in enumerate(ns):
        loo = np.array([_brute_gain(np.delete(R_TIED, k), np.delete(S_TIED, k), n) for k in range(big_n)])
        var = (big_n - 1) / big_n * np.sum((loo - loo.mean()) ** 2)
        assert abs(float(res.gain_se[i]) - math.sqrt(var)) < 1e-12, n
        wloo = np.array([_brute_win(np.delete(R_TIED, k), n) for k in range(big_n)])
        wvar = (big_n - 1) / big_n * np.sum((wloo - wloo.mean()) ** 2)
        assert abs(float(res.win_rate_se[i]) - math.sqrt(wvar)) < 1e-12, n


def test_u_statistic_is_exactly_unbiased_over_all_samples():
    """Average the estimate over every sample of size N from a tied finite law, weighted by its
    probability: it equals the population's exact BoN gain (uniform tie-breaking) and win rate."""
    values = np.array([0.0, 1.0, 1.0, 2.0])
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    scores = np.array([0.5, -1.0, 2.0, 1.0])
    big_n = 5
    seqs = np.array(list(itertools.product(range(4), repeat=big_n)))  # all 1024 ordered samples
    weight = np.prod(probs[seqs], axis=1)
    s = jl.Samples(values[seqs], scores=scores[seqs])
    ns = [1, 2, 3, 4, 5]
    res = bon.best_of_n(s, ns, frontier=False)
    for i, n in enumerate(ns):
        gain, _, win = _population_bon(values, probs, scores, n)
        assert abs(weight @ np.asarray(res.prompts.gain)[:, i] - gain) < 1e-13, n
        if n < big_n:
            assert abs(weight @ np.asarray(res.prompts.win_rate)[:, i] - win) < 1e-13, n


def test_counts_equal_the_expanded_sample():
    rc = np.array([0.0, 1.0, 2.0, 3.0, 5.0])
    cc = np.array([1, 2, 3, 1, 1])
    ns = [1, 2, 3, 5, 7]
    a = bon.best_of_n(jl.Samples(rc, counts=cc), ns, frontier=False)
    b = bon.best_of_n(jl.Samples(np.repeat(rc, cc)), ns, frontier=False)
    for field in ("gain", "gain_se", "kl_exact", "kl", "win_rate", "win_rate_se"):
        np.testing.assert_allclose(np.asarray(getattr(a, field)), np.asarray(getattr(b, field)), atol=1e-13,
                                   err_msg=field)


def test_ragged_prompts_match_one_prompt_at_a_time():
    rng = np.random.default_rng(4)
    rows = [rng.normal(size=k) for k in (5, 9, 7)]
    res = bon.best_of_n(jl.Samples.from_ragged(rows), [2, 4], frontier=False)
    for p, row in enumerate(rows):
        one = bon.best_of_n(jl.Samples(row), [2, 4], frontier=False)
        np.testing.assert_allclose(np.asarray(res.prompts.gain)[p], np.asarray(one.gain), atol=1e-14)
        np.testing.assert_allclose(np.asarray(res.prompts.gain_se)[p], np.asarray(one.gain_se), atol=1e-14)
    np.testing.assert_allclose(np.asarray(res.gain), np.asarray(res.prompts.gain).mean(0), atol=1e-15)
    np.testing.assert_allclose(np.asarray(res.gain_se), np.sqrt((np.asarray(res.prompts.gain_se) ** 2).sum(0)) / 3)


def test_continuous_win_rate_is_exactly_n_over_n_plus_1(uniform_res):
    n = np.asarray(uniform_res.n)[:-1]
    np.testing.assert_allclose(np.asarray(uniform_res.win_rate)[:-1], n / (n + 1), atol=1e-12)


def test_float32_is_the_float64_answer_rounded():
    r = np.random.default_rng(5).normal(size=(4, 300)).astype(np.float32)
    a = bon.best_of_n(jl.Samples(r), [2, 16, 300], frontier=False)
    b = bon.best_of_n(jl.Samples(r.astype(np.float64)), [2, 16, 300], frontier=False)
    assert a.gain.dtype == jnp.float32 and a.prompts.gain.dtype == jnp.float32
    for field in ("gain", "gain_se", "kl_exact", "win_rate"):
        np.testing.assert_allclose(np.asarray(getattr(a, field), np.float64), np.asarray(getattr(b, field)),
                                   rtol=2 * np.finfo(np.float32).eps, atol=1e-7, err_msg=field)


def test_log_binomial_against_exact_integers():
    xs = np.array([1, 2, 5, 29, 30, 31, 100, 1000, 12345, 10**6, 10**7], dtype=float)
    for k in (1, 2, 3, 7, 29, 30, 256, 1000, 5000):
        ok = xs >= k
        got = binomial.log_binom(xs[ok], k)
        exact = np.array([math.log(math.comb(int(x), k)) for x in xs[ok]])  # exact integers, then one log
        np.testing.assert_allclose(got, exact, rtol=1e-13, atol=1e-13)
    assert binomial.log_binom(np.array([3.0, -1.0]), 5).tolist() == [-np.inf, -np.inf]
    assert binomial.log_binom(np.array([0.0, 7.0]), 0).tolist() == [0.0, 0.0]


# ------------------------------------------------------------------------------------------------
# KL of best-of-n


def test_exact_kl_of_a_uniform_law_over_ten():
    """MATH.md §8: 0.18932 (n=2), 1.73306 (n=16), 2.30259 = log 10 (n=256), while the analytic is 4.549."""
    law = jl.Samples.from_law([np.arange(10.0)], [np.full(10, 0.1)])
    res = bon.best_of_n(law, [2, 16, 256], frontier=False)
    np.testing.assert_allclose(np.asarray(res.kl_exact), [0.18932, 1.73306, 2.30259], atol=5e-6)
    # 40-digit values of the same sums (mpmath): n = 256 is log 10 - 5.4e-11
    want = [0.18931819485616676774, 1.7330632293457351669, 2.3025850929399938456]
    np.testing.assert_allclose(np.asarray(res.kl_exact), want, rtol=1e-14)
    assert abs(float(res.kl_analytic[2]) - 4.549) < 5e-4
    np.testing.assert_array_equal(np.asarray(res.kl), np.asarray(res.kl_exact))  # auto: a law is exact
    # The same law as ten distinct draws (the empirical law): the same plug-in KL.
    emp = bon.best_of_n(jl.Samples(np.arange(10.0)), [2], frontier=False)
    assert abs(float(emp.kl_exact[0]) - float(res.kl_exact[0])) < 1e-14


def test_exact_law_matches_the_testbed_enumeration():
    """Gain and KL of BoN on a tied categorical law against jaxlimits.testbed.exact (independent code)."""
    rng = np.random.default_rng(6)
    values = np.array([0.0, 1.0, 1.0, 2.5, 2.5, 2.5, 4.0])
    probs = rng.dirichlet(np.ones(7))
    scores = rng.normal(size=7)
    law = jl.Samples.from_law([values], [probs], scores=[scores])
    ns = [1, 2, 3, 8, 50]
    res = bon.best_of_n(law, ns, frontier=False)
    for i, n in enumerate(ns):
        pt = tb_exact.bon_point(jnp.log(probs), jnp.asarray(values), n, scores=jnp.asarray(scores))
        assert abs(float(res.gain[i]) - float(pt.gain)) < 1e-13
        assert abs(float(res.kl_exact[i]) - float(pt.kl)) < 1e-13
        gain, kl, win = _population_bon(values, probs, scores, n)
        assert abs(float(res.win_rate[i]) - win) < 1e-13
    np.testing.assert_array_equal(np.asarray(res.gain_se), 0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=12), st.integers(1, 40))
def test_exact_kl_is_at_most_the_analytic_kl(levels, n):
    values = np.asarray(levels, float)
    law = jl.Samples.from_law([values], [np.full(len(values), 1 / len(values))])
    res = bon.best_of_n(law, [n], frontier=False)
    kl = float(res.kl_exact[0])
    assert -1e-12 <= kl <= float(res.kl_analytic[0]) + 1e-12
    assert kl <= math.log(len(values)) + 1e-12  # and at most log N on N atoms


def test_beirami_value_and_limits():
    """MATH.md §8: 1.8215173 at n=16, eps=0.05; -> log n - (n-1)/n as eps -> 0; -> 0 as eps -> 1."""
    assert abs(float(bon.beirami_kl(math.log(0.05), 16)) - 1.8215173) < 5e-8
    analytic = math.log(16) - 15 / 16
    for lp in (-50.0, -700.0, -1e5):  # eps underflows: the series keeps it finite
        assert abs(float(bon.beirami_kl(lp, 16)) - analytic) < 1e-14
    assert float(bon.beirami_kl(0.0, 16)) == 0.0
    assert abs(float(bon.beirami_kl(-1e-12, 16))) < 1e-9
    # float32: finite and equal to the analytic limit where eps underflows
    v32 = bon.beirami_kl(jnp.float32(-200.0), jnp.float32(16))
    assert v32.dtype == jnp.float32 and abs(float(v32) - analytic) < 1e-6


def test_beirami_is_exact_for_a_top_atom_above_a_continuum():
    """Beirami's formula is the exact BoN KL for one atom of mass eps above a continuous remainder."""
    m, eps = 20_000, 0.05
    values = np.arange(m + 1, dtype=float)
    probs = np.concatenate([np.full(m, (1 - eps) / m), [eps]])
    law = jl.Samples.from_law([values], [probs])
    res = bon.best_of_n(law, [16], frontier=False)
    # The discretised remainder adds O(n / m) to the exact KL.
    assert abs(float(res.kl_exact[0]) - float(bon.beirami_kl(math.log(eps), 16))) < 16 / m


@settings(max_examples=60, deadline=None)
@given(st.floats(-800, 0), st.integers(1, 10_000))
def test_beirami_lies_between_zero_and_the_analytic_kl(lp, n):
    v = float(bon.beirami_kl(lp, n))
    assert -1e-12 <= v <= math.log(n) - (n - 1) / n + 1e-12


def test_beirami_in_best_of_n_averages_the_estimate_over_draws():
    r = np.random.default_rng(7).normal(size=(3, 40))
    lp = np.log(np.random.default_rng(8).uniform(1e-6, 0.2, size=(3, 40)))
    ns = [2, 8]
    res = bon.best_of_n(jl.Samples(r), ns, log_probs=lp, kl_method="beirami", frontier=False)
    for i, n in enumerate(ns):  # sum over sorted positions of the U-statistic weights times KLhat
        want = 0.0
        for p in range(3):
            order = np.argsort(r[p])
            w = np.array([math.comb(j, n - 1) for j in range(40)]) / math.comb(40, n)
            want += w @ np.asarray(bon.beirami_kl(lp[p, order], n)) / 3
        assert abs(float(res.kl_beirami[i]) - want) < 1e-13
    np.testing.assert_array_equal(np.asarray(res.kl), np.asarray(res.kl_beirami))
    none = bon.best_of_n(jl.Samples(r), ns, frontier=False)
    assert np.all(np.isnan(np.asarray(none.kl_beirami)))
    assert any("log_probs" in n_ for n_ in none.notices)


def test_auto_kl_is_exact_where_rewards_tie():
    r = np.array([[0.0, 1.0, 1.0, 2.0, 3.0], [0.1, 0.5, 0.7, 2.0, 3.0]])
    res = bon.best_of_n(jl.Samples(r), [2, 4], frontier=False)
    np.testing.assert_array_equal(np.asarray(res.prompts.tied), [True, False])
    np.testing.assert_array_equal(np.asarray(res.prompts.kl)[0], np.asarray(res.prompts.kl_exact)[0])
    np.testing.assert_allclose(np.asarray(res.prompts.kl)[1], np.log([2, 4]) - np.array([1, 3]) / [2, 4])
    assert any("tie" in n for n in res.notices)


# ------------------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_clear_errors():
    s = jl.Samples.from_ragged([[0.0, 1.0, 2.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="exceeds the 2 draws of prompt 1"):
        bon.best_of_n(s, [3])
    with pytest.raises(ValueError, match="whole number >= 1"):
        bon.best_of_n(s, [0])
    with pytest.raises(ValueError, match="whole number >= 1"):
        bon.best_of_n(s, [1.5])
    with pytest.raises(ValueError, match="kl_method"):
        bon.best_of_n(s, [1], kl_method="bogus")
    with pytest.raises(ValueError, match="needs log_probs"):
        bon.best_of_n(s, [1], kl_method="beirami")
    weighted = jl.Samples([[0.0, 1.0]], log_weights=[[0.0, -1.0]])
    with pytest.raises(ValueError, match="importance log-weights"):
        bon.best_of_n(weighted, [2])
    with pytest.raises(ValueError, match=r"log_probs\[0, 1\] = 0.5"):
        bon.best_of_n(jl.Samples([[0.0, 1.0]]), [2], log_probs=[[-1.0, 0.5]], frontier=False)
    with pytest.raises(ValueError, match="shape"):
        bon.best_of_n(jl.Samples([[0.0, 1.0]]), [2], log_probs=[[-1.0, -0.5, -2.0]], frontier=False)
    with pytest.raises(TypeError, match="Samples"):
        bon.best_of_n(np.zeros((2, 3)), [1])
    # constant log-weights are no weights at all
    flat = bon.best_of_n(jl.Samples([[0.0, 1.0, 3.0]], log_weights=[[-2.0, -2.0, -2.0]]), [2], frontier=False)
    assert abs(float(flat.gain[0]) - _brute_gain(np.array([0.0, 1, 3]), np.array([0.0, 1, 3]), 2)) < 1e-14


# ------------------------------------------------------------------------------------------------
# Soft best-of-n


def test_soft_best_of_n_limits():
    rng = np.random.default_rng(9)
    r = rng.normal(size=(4, 24))
    s = jl.Samples(r)
    # n = N: one subset, the tilted (SNIS) gain of the samples at beta = lam, exactly.
    full = bon.soft_best_of_n(s, [24], lam=0.7, num_subsets=16)
    want = [_tilted(r[p], np.full(24, 1 / 24), r[p], 0.7)[0] for p in range(4)]
    np.testing.assert_allclose(np.asarray(full.prompt_gain)[:, 0], want, atol=1e-12)
    # one draw: no gain, up to Monte Carlo error; a tiny temperature: hard best-of-n (ties share).
    res = bon.soft_best_of_n(s, [1, 4], lam=1e-9, num_subsets=2048)
    hard = bon.best_of_n(s, [1, 4], frontier=False)
    for i in range(2):
        assert abs(float(res.gain[i]) - float(hard.gain[i])) < Z_TOL * float(res.gain_se[i]) + 1e-12
    # a huge temperature: the base model
    hot = bon.soft_best_of_n(s, [4], lam=1e9, num_subsets=2048)
    assert abs(float(hot.gain[0])) < Z_TOL * float(hot.gain_se[0])


def test_soft_best_of_n_on_an_exact_law_and_with_counts():
    law = jl.Samples.from_law([[0.0, 1.0, 2.0]], [[0.5, 0.3, 0.2]])
    res = bon.soft_best_of_n(law, [1, 64], lam=0.5, num_subsets=1024)
    assert abs(float(res.gain[0])) < Z_TOL * float(res.gain_se[0])
    tilt = _tilted(np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.3, 0.2]), np.array([0.0, 1.0, 2.0]), 0.5)[0]
    assert abs(float(res.gain[1]) - tilt) < 0.05  # n -> inf: the tilted policy, O(1/n) away
    counts = bon.soft_best_of_n(jl.Samples([[0.0, 1.0]], counts=[[3, 1]]), [4], lam=0.3, num_subsets=16)
    plain = _tilted(np.array([0.0, 0, 0, 1]), np.full(4, 0.25), np.array([0.0, 0, 0, 1]), 0.3)[0]
    assert abs(float(counts.gain[0]) - plain) < 1e-12
    with pytest.raises(ValueError, match="lam"):
        bon.soft_best_of_n(law, [2], lam=0.0)


# ------------------------------------------------------------------------------------------------
# The command line (in process; the same synthetic data as tests/test_plot.py and test_compare.py)


def test_cli_bon(tmp_path, capsys):
    rows = np.random.default_rng(11).standard_normal((16, 64))
    lp = np.log(np.random.default_rng(12).uniform(1e-4, 0.5, size=rows.shape))
    lines = [f"{p},{float(rows[p, i])!r},{float(lp[p, i])!r}" for p in range(16) for i in range(64)]
    f = tmp_path / "s.csv"
    f.write_text("prompt_id,reward,logprob\n" + "\n".join(lines) + "\n")
    out = tmp_path / "bon.csv"
    assert main(["bon", str(f), "--n", "1", "2", "4", "--log-prob-col", "logprob", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "effic." in text and "win rate" in text
    import csv

    with out.open(newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [int(r["n"]) for r in table] == [1, 2, 4]
    lib = bon.best_of_n(jl.Samples(rows), [1, 2, 4], log_probs=lp, frontier=False)
    np.testing.assert_allclose([float(r["gain"]) for r in table], np.asarray(lib.gain), atol=1e-12)
    np.testing.assert_allclose([float(r["kl_beirami"]) for r in table], np.asarray(lib.kl_beirami), atol=1e-12)
    assert 0.8 < float(table[1]["efficiency"]) < 1.2
    assert main(["bon", str(f), "--n", "65"]) == 2
    assert "exceeds the 64 draws" in capsys.readouterr().err
    assert main(["bon", str(f), "--n", "2", "--log-prob-col", "logprob", "--dedupe", "reward"]) == 2


@pytest.mark.slow
def test_per_prompt_frontier_solves_each_prompt_at_its_own_kl():
    law = jl.Samples.from_law([[0.0, 1.0, 2.0, 2.0], [0.0, 0.5, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]],
                              [[0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.7, 0.1, 0.1, 0.1]])
    res = bon.best_of_n(law, [2, 3], per_prompt_frontier=True)
    kl = np.asarray(res.prompts.kl)
    for p in range(3):
        one = jax.tree.map(lambda x, p=p: x[p: p + 1], law)
        want = jl.max_gain_at_kl(one, kl[p], throw=False).gain
        np.testing.assert_allclose(np.asarray(res.prompts.frontier_gain)[p], np.asarray(want), rtol=1e-9)
    eff = np.asarray(res.prompts.efficiency)
    assert np.all((eff > 0) & (eff <= 1 + 1e-9))  # an exact law: best-of-n never beats the frontier


def test_flagged_frontier_reasons_in_rows():
    """The frontier's trust-rule reasons at each n: a bitmask in the result, spelled out in the CLI rows."""
    from jaxlimits.cli.bon import rows_of
    from jaxlimits.estimators import reason_names

    r = np.random.default_rng(1).standard_normal((20, 64))
    res = bon.best_of_n(jl.Samples(r), [1, 2, 16])
    ok = np.asarray(res.frontier_status) == 0
    reasons = np.asarray(res.frontier_reasons)
    np.testing.assert_array_equal(reasons != 0, np.asarray(res.saturated) & ok)
    assert reasons[-1] != 0  # n = 16: KL 1.8 of log 64 = 4.2 nats, from 64 draws
    assert [row["frontier_reasons"] for row in rows_of(res)] == [reason_names(int(x)) for x in reasons]
