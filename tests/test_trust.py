"""Bias-corrected estimates, PSIS k-hat and the trust rule (MATH §3b; README "Can I trust the number?")."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import jaxlimits as jl
from jaxlimits import estimators, moments, psis

BETAS = np.array([100.0, 5.0, 1.5, 0.9, 0.3, 0.05])  # both kernels: the small-tilt series and the tilted sums


def direct_bias(r, s, lw, m, beta):
    """MATH §3b's bias formulas, written out in float64 NumPy (counts as p^2/m, weights as ratios)."""
    lam = 1 / beta
    v = np.exp(lw) * m
    u = v / v.sum()
    lp = np.log(v) + lam * r
    p = np.exp(lp - logsumexp(lp))
    mu_p, mu_u, nu, r_bar = (p * s).sum(), (u * s).sum(), (p * r).sum(), (u * r).sum()
    p2, u2 = (p**2 / m).sum(), (u**2 / m).sum()
    log_z = -(p2 - u2) / 2
    gain = -(p**2 / m * (s - mu_p)).sum() + (u**2 / m * (s - mu_u)).sum()
    kl = -lam * (p**2 / m * (r - nu)).sum() - log_z
    rkl = log_z + lam * (u**2 / m * (r - r_bar)).sum()
    return np.array([log_z, gain, kl, rkl])


def _data(kind, n=40, seed=1):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(n)
    kw = {}
    if kind in ("scores", "all"):
        kw["scores"] = r + 0.5 * rng.standard_normal(n)
    if kind in ("weights", "all"):
        kw["log_weights"] = 0.3 * rng.standard_normal(n)
    if kind in ("counts", "all"):
        kw["counts"] = rng.integers(1, 4, n).astype(float)
    return r, kw


@pytest.mark.parametrize("kind", ["plain", "scores", "counts", "weights", "all"])
def test_bias_terms_match_the_formulas(kind):
    r, kw = _data(kind)
    smp = jl.Samples(r[None], **{k: v[None] for k, v in kw.items()})
    lam = jnp.asarray(1 / BETAS)[None]
    ref, sums = moments.sums_from_samples(smp, lam)
    t = moments.finalize(ref, sums, lam, has_scores=smp.has_scores, exact=False)
    got = np.stack([t.log_z_bias[0], t.gain_bias[0], t.kl_bias[0], t.reverse_kl_bias[0]], axis=1)
    n = r.size
    want = np.stack([direct_bias(r, kw.get("scores", r), kw.get("log_weights", np.zeros(n)),
                                 kw.get("counts", np.ones(n)), b) for b in BETAS])
    # the series branch is truncated at ~1e-10 relative (measured 1.6e-10 to 3.7e-10)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-300)


def test_corrected_estimates_are_plug_in_minus_bias_and_keep_theorem_1():
    rng = np.random.default_rng(5)
    r = rng.gamma(2.0, size=(5, 300))
    betas = np.geomspace(0.01, 100, 17)
    smp = jl.Samples(r, counts=rng.integers(1, 3, size=r.shape))
    c = jl.tilt(smp, betas)
    p = jl.tilt(smp, betas, bias_correction=False)
    np.testing.assert_allclose(c.gain, np.asarray(p.gain) - np.asarray(p.gain_bias), rtol=1e-12)
    np.testing.assert_allclose(c.kl, np.asarray(p.kl) - np.asarray(p.kl_bias), rtol=1e-12)
    # the same formula in two programs: equal to rounding (measured 1.4e-15 apart under the suite's
    # quick XLA code generation, conftest.py, which rounds the two finalisations differently; bitwise
    # equal under XLA's default code generation)
    np.testing.assert_allclose(c.gain_se, p.gain_se, rtol=1e-14)
    # Theorem 1 between the corrected estimates (the bias terms are built so that it holds)
    np.testing.assert_allclose(c.gain, betas * (np.asarray(c.kl) + np.asarray(c.reverse_kl)), rtol=1e-12)
    np.testing.assert_allclose(c.jeffreys, np.asarray(c.kl) + np.asarray(c.reverse_kl), rtol=1e-12)


def test_counts_give_the_expanded_samples_bias():
    rng = np.random.default_rng(2)
    r = np.round(rng.standard_normal(30), 2)
    m = rng.integers(1, 4, 30).astype(float)
    a = jl.tilt(jl.Samples(r, counts=m), BETAS)
    b = jl.tilt(jl.Samples(np.repeat(r, m.astype(int))), BETAS)
    for name in ("gain", "kl", "gain_bias", "kl_bias", "log_z"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, err_msg=name)


def _jackknife_bias(r, lw, beta):
    """Leave-one-out jackknife estimate of the bias of the SNIS gain and KL (importance weights)."""
    lam = 1 / beta

    def est(r, lw):
        u = np.exp(lw - logsumexp(lw, axis=-1, keepdims=True))
        lp = lw + lam * r
        p = np.exp(lp - logsumexp(lp, axis=-1, keepdims=True))
        log_z = logsumexp(lp, axis=-1) - logsumexp(lw, axis=-1)
        return (p * r).sum(-1) - (u * r).sum(-1), lam * (p * r).sum(-1) - log_z

    n = r.size
    keep = ~np.eye(n, dtype=bool)
    loo = est(np.broadcast_to(r, (n, n))[keep].reshape(n, n - 1), np.broadcast_to(lw, (n, n))[keep].reshape(n, n - 1))
    full = est(r, lw)
    return [(n - 1) * (np.mean(x) - f) for x, f in zip(loo, full)]


def test_importance_weighted_bias_agrees_with_the_jackknife():
    """The weighted case (derived in moments.bias_terms) against the jackknife, which estimates the same O(1/N) term."""
    rng = np.random.default_rng(3)
    n = 800
    r = rng.standard_normal(n)
    lw = 0.7 * rng.standard_normal(n)
    betas = np.array([2.0, 1.0])  # ESS 560 and 290 of 800 (at beta = 0.6, ESS ~ 100, they differ by 15%)
    st = jl.tilt(jl.Samples(r, log_weights=lw), betas, bias_correction=False)
    for b, beta in enumerate(betas):
        jack = _jackknife_bias(r, lw, beta)
        got = (float(st.gain_bias[0, b]), float(st.kl_bias[0, b]))
        for g, j in zip(got, jack):
            # they differ at O(1/N^2) relative to O(1/N): measured 0.8-0.9% at beta = 2, 3.2-3.8% at 1
            assert abs(g - j) <= 0.06 * abs(j), (beta, got, jack)


def test_the_correction_removes_most_of_the_bias():
    """Simulation, standard-normal rewards, N = 64, beta = 1 (MATH §3b: -0.040 -> -0.009 for the gain)."""
    r = jax.random.normal(jax.random.PRNGKey(0), (20000, 64), jnp.float32)
    st = jl.tilt(jl.Samples(r), np.float32([1.0]))
    gain_c, kl_c = float(jnp.mean(st.gain)), float(jnp.mean(st.kl))
    gain_p, kl_p = float(jnp.mean(st.gain + st.gain_bias)), float(jnp.mean(st.kl + st.kl_bias))
    # Monte Carlo SE of these means: 0.0017 (gain) and 0.0011 (KL)
    assert abs(gain_c - 1.0) < 0.5 * abs(gain_p - 1.0)
    assert abs(kl_c - 0.5) < 0.5 * abs(kl_p - 0.5)
    assert gain_p - 1.0 < -0.03 and kl_p - 0.5 < -0.02  # the plug-in's bias is there to remove


def test_bias_terms_float32_match_float64_over_the_beta_range():
    rng = np.random.default_rng(4)
    r = rng.standard_normal((3, 200)) * 2 + 5
    betas = np.geomspace(1e-2, 1e4, 13)
    s64 = jl.tilt(jl.Samples(r), betas)
    s32 = jl.tilt(jl.Samples(r.astype(np.float32)), betas.astype(np.float32))
    # measured: gain and KL to 5e-7 relative; the bias terms to 1e-6 except where they are below
    # 1e-7 of their largest value (large beta), where float32 resolves them only to ~20% -- a
    # correction of 1e-8 of the gain there, far below the estimate's own rounding
    for name in ("gain_bias", "kl_bias", "gain", "kl"):
        a, b = np.asarray(getattr(s32, name), np.float64), np.asarray(getattr(s64, name))
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7 * np.abs(b).max(), err_msg=name)


# -- PSIS k-hat -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [30, 226, 1024])
def test_khat_matches_arviz(n):
    from arviz_stats.base import array_stats  # a test dependency (pyproject)
    rng = np.random.default_rng(n)
    r = rng.standard_normal((2, n))
    lw = 0.5 * rng.standard_normal((2, n))
    lam = np.array([[0.3, 1.0, 3.0]] * 2)
    k = np.asarray(psis.tilted_khat(jnp.asarray(r), jnp.asarray(lam)))
    kw = np.asarray(psis.tilted_khat(jnp.asarray(r), jnp.asarray(lam), log_weights=jnp.asarray(lw)))
    # arviz's psislw takes log-likelihoods: the weights are exp(-input)
    ref = np.array([[array_stats.psislw(-(x * r[p]))[1] for x in lam[p]] for p in range(2)])
    ref_w = np.array([[array_stats.psislw(-(lw[p] + x * r[p]))[1] for x in lam[p]] for p in range(2)])
    np.testing.assert_allclose(k, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kw, ref_w, rtol=1e-10, atol=1e-12)


def test_khat_with_counts_is_the_expanded_samples():
    rng = np.random.default_rng(8)
    r = np.round(rng.standard_normal(300), 3)
    m = rng.integers(1, 3, 300).astype(float)
    lam = jnp.asarray([[0.5, 2.0]])
    a = psis.tilted_khat(jnp.asarray(r[None]), lam, counts=jnp.asarray(m[None]))
    b = psis.tilted_khat(jnp.asarray(np.repeat(r, m.astype(int))[None]), lam)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_khat_of_an_exponential_tail_is_one_over_a_beta():
    """Rewards with an exponential tail of rate a give Pareto weights with k = 1/(a beta)."""
    a = 2.0
    x = jax.random.exponential(jax.random.PRNGKey(1), (100, 4096)) / a
    betas = np.array([2.5, 1.0, 0.625])  # k = 0.2, 0.5, 0.8
    k = np.asarray(psis.tilted_khat(x, jnp.broadcast_to(1 / jnp.asarray(betas), (100, 3))))
    np.testing.assert_allclose(k.mean(axis=0), 1 / (a * betas), atol=0.04)  # the prior pulls towards 0.5 by ~0.01


def test_khat_is_nan_without_a_tail_to_fit():
    k = psis.tilted_khat(jnp.asarray([[0.0, 1.0] * 8]), jnp.asarray([[1.0]]))  # 16 draws: tail of 3 < 5
    assert np.isnan(np.asarray(k)).all()
    k = psis.tilted_khat(jnp.asarray([[0.0] * 50 + [1.0] * 50]), jnp.asarray([[1.0]]))  # the top weights tie
    assert np.isnan(np.asarray(k)).all()


# -- the trust rule -------------------------------------------------------------------------------


def test_student_t_is_flagged_where_the_tilt_may_not_exist():
    r = jax.random.t(jax.random.PRNGKey(2), 3.0, (50, 1024))
    st = jl.tilt(jl.Samples(r), np.array([3.0, 1.0, 0.3]))
    khat = np.asarray(st.khat)
    no_tilt = (np.asarray(st.reasons) & estimators.NO_TILT) != 0
    np.testing.assert_array_equal(no_tilt, khat >= 1)
    assert no_tilt[:, -1].mean() > 0.9  # at beta = 0.3 nearly every prompt
    assert "no-tilt" in estimators.reason_names(estimators.NO_TILT | estimators.CEILING)
    assert "may not exist" in estimators.REASON_MESSAGES[estimators.NO_TILT]


def test_every_flagged_point_has_a_reason_and_names_spell_it():
    r = jax.random.normal(jax.random.PRNGKey(3), (20, 64))
    st = jl.tilt(jl.Samples(r), np.array([8.0, 1.0, 0.2]))
    np.testing.assert_array_equal(np.asarray(st.saturated), np.asarray(st.reasons) != 0)
    assert estimators.reason_names(0) == ""
    assert estimators.reason_names(estimators.BIAS | estimators.TAIL) == "bias+tail"


def test_pooled_points_at_small_kl_are_trusted_with_64_samples():
    r = jax.random.normal(jax.random.PRNGKey(4), (2000, 64))
    f = jl.frontier(jl.Samples(r), [10.0, 7.0, 3.0])  # KL 0.005, 0.01, 0.056
    assert float(f.kl[1]) < 0.0105
    assert (np.asarray(f.reasons)[:2] == 0).all()
    # one prompt's own interval too: its upper limit allows for an unseen tail (jaxlimits.tail_bound)
    assert (np.asarray(f.prompts.reasons)[:, :2] == 0).mean() > 0.97
    # where that tail is not modelled (importance weights), one prompt needs ESS >= 600
    w = jl.tilt(jl.Samples(r, log_weights=jnp.zeros_like(r)), [10.0])
    assert ((np.asarray(w.reasons) & estimators.FEW) != 0).all()


def test_pooled_bias_is_judged_against_the_pooled_se():
    r = jax.random.normal(jax.random.PRNGKey(5), (2000, 16))
    f = jl.frontier(jl.Samples(r), [0.5])  # ESS ~ 2 of 16: the bias dwarfs a pooled SE
    assert int(f.reasons[0]) & estimators.BIAS
    assert abs(float(f.gain_bias[0])) > float(f.gain_se[0])


def test_an_exact_law_is_never_flagged():
    law = jl.Samples.from_law([[0.0, 1.0, 5.0]], [[0.5, 0.3, 0.2]])
    f = jl.frontier(law, [10.0, 1.0, 0.01])
    assert (np.asarray(f.reasons) == 0).all()
    assert np.isnan(np.asarray(f.prompts.khat)).all()


def _benchmark(name: str):
    """The module of the script ``benchmarks/<name>.py`` (the folder is not a package)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_calibration_script_quick_cells_cover():
    """A small version of benchmarks/calibrate_trust.py (fixed seed, two laws, N = 64, P = 1 and 100)."""
    cal = _benchmark("calibrate_trust")
    rows, summary = cal.main(["--quick"])
    judged = [r for r in rows if r["unflagged"] >= 20 and r["coverage_gain"] is not None]
    assert judged, "no cell had unflagged replicates"
    for r in judged:  # 3 binomial SEs below the 93% target is a failure
        se = np.sqrt(0.93 * 0.07 / r["unflagged"])
        assert min(r["coverage_gain"], r["coverage_kl"]) >= 0.93 - 3 * se, r


def test_pooled_khat_from_a_subset_of_prompts():
    """The pooled rule's mean k-hat: every prompt's up to KHAT_PROMPTS, an evenly spaced subset beyond."""
    import importlib

    fr = importlib.import_module("jaxlimits.frontier")  # the module (jaxlimits.frontier is the function)
    r = jax.random.gumbel(jax.random.PRNGKey(3), (600, 128))
    betas = [2.0, 1.0, 0.5]
    per = jl.frontier(jl.Samples(r), betas)
    pooled = jl.frontier(jl.Samples(r), betas, per_prompt=False)
    full = np.nanmean(np.asarray(per.prompts.khat), axis=0)
    np.testing.assert_allclose(np.asarray(per.khat), full, rtol=1e-6)
    assert np.max(np.abs(np.asarray(pooled.khat) - full)) < 0.02  # 256 of 600 prompts
    small = jl.Samples(r[: fr.KHAT_PROMPTS])  # all of them: the same mean
    a = jl.frontier(small, betas, per_prompt=False)
    b = jl.frontier(small, betas)
    np.testing.assert_allclose(np.asarray(a.khat), np.asarray(b.khat), rtol=1e-5)


def test_calibration_pools_as_the_frontier_does():
    """The calibration judges what users get: its pooled point (k-hat from at most KHAT_PROMPTS of the
    prompts) has jl.frontier's reasons and estimates (it once pooled every prompt's k-hat)."""
    cal = _benchmark("calibrate_trust")
    fr = importlib.import_module("jaxlimits.frontier")
    rng = np.random.default_rng(0)
    r = rng.random((600, 128))  # bounded rewards (k-hat < 0), but exponential ones in the k-hat subset:
    r[fr.khat_subset(600)] = rng.exponential(size=(fr.KHAT_PROMPTS, 128))  # the subset's mean k-hat says tail,
    betas = jnp.asarray([8.0, 4.0, 2.5])  # every prompt's would not (-0.2 .. -0.1)
    # importance weights (all equal): the tail is not modelled, so the pooled tail clause is k-hat's
    smp = jl.Samples(r, log_weights=np.zeros_like(r))
    gain, kl, _, _, reasons, *_ = cal._pooled(jl.tilt(smp, betas), 600)
    f = jl.frontier(smp, betas, per_prompt=False)
    assert np.all(np.asarray(f.reasons)[1:] & estimators.TAIL)
    np.testing.assert_array_equal(np.asarray(reasons)[0], np.asarray(f.reasons))
    np.testing.assert_allclose(np.asarray(gain)[0], np.asarray(f.gain), rtol=1e-5)


def test_pooled_point_with_an_unresolved_se_is_flagged():
    """Binary rewards in float32 at the gain's stationary point: the prompts' SEs cannot be resolved
    (NaN, each flagged ``few``), and so the pooled SE is NaN: the pooled point is flagged too, never
    reported as trusted with an interval that covers nothing."""
    r = (jax.random.uniform(jax.random.PRNGKey(1), (100, 256)) < 0.3).astype(jnp.float32)
    f = jl.frontier(jl.Samples(r), [0.6048905], per_prompt=False)
    assert np.isnan(float(f.gain_se[0]))  # (measured: both SEs NaN here)
    assert int(f.reasons[0]) & estimators.FEW
    # and the rule itself, directly
    nan = jnp.array([jnp.nan])
    one = jnp.array([1.0])
    zero = jnp.array([0.0])
    code = estimators.pooled_reasons(zero, nan, zero, one, zero, one * 256, zero, zero, zero, zero, zero, zero, zero)
    assert int(code[0]) & estimators.FEW


def test_interval_variants_influence_gives_the_library_se():
    """benchmarks/interval_variants.py's influence values are centred and give jl.tilt's SEs (sqrt(sum psi^2) / N)."""
    iv = _benchmark("interval_variants")
    r = np.random.default_rng(1).exponential(size=(5, 64)).astype(np.float32)
    st = jl.tilt(jl.Samples(r), [4.0, 1.5])
    for b, beta in enumerate([4.0, 1.5]):
        psi_g, psi_k = iv.influence(r.astype(np.float64), 1 / beta)
        np.testing.assert_allclose(psi_g.sum(1), 0, atol=1e-12)
        np.testing.assert_allclose(psi_k.sum(1), 0, atol=1e-12)
        np.testing.assert_allclose(np.sqrt((psi_g**2).sum(1)) / 64, np.asarray(st.gain_se)[:, b], rtol=1e-4)
        np.testing.assert_allclose(np.sqrt((psi_k**2).sum(1)) / 64, np.asarray(st.kl_se)[:, b], rtol=1e-4)
