"""The pooled frontier: means over prompts, default grid, bootstrap bands, calibrated saturation."""

import jax
import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import estimators


@pytest.fixture(scope="module")
def gaussian():
    rng = np.random.default_rng(0)
    return jl.Samples(rng.normal(size=(40, 1024)) * rng.uniform(0.5, 2.0, size=(40, 1)))


def test_pooled_means_and_standard_errors(gaussian):
    betas = np.array([8.0, 4.0, 2.0])
    f = jl.frontier(gaussian, betas)
    st_ = jl.tilt(gaussian, betas)
    np.testing.assert_allclose(f.gain, np.asarray(st_.gain).mean(0), rtol=1e-12)
    np.testing.assert_allclose(f.kl, np.asarray(st_.kl).mean(0), rtol=1e-12)
    np.testing.assert_allclose(f.gain_se, np.sqrt((np.asarray(st_.gain_se) ** 2).sum(0)) / 40, rtol=1e-12)
    np.testing.assert_allclose(f.kl_ceiling, np.asarray(st_.kl_ceiling).mean(), rtol=1e-12)
    assert f.prompts.gain.shape == (40, 3)


def test_pooling_tile_by_tile_equals_per_prompt(gaussian):
    betas = np.array([8.0, 1.0, 0.25])
    a = jl.frontier(gaussian, betas)
    b = jl.frontier(gaussian, betas, per_prompt=False, memory_budget=2**20)  # several tiles, padded
    assert b.prompts is None
    for name in ("gain", "kl", "reverse_kl", "gain_se", "kl_se", "ess_fraction", "saturated_share"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-11)


def test_default_grid_spans_kl_near_zero_to_the_ceiling(gaussian):
    f = jl.frontier(gaussian, num_betas=40)
    betas, kl = np.asarray(f.betas), np.asarray(f.kl)
    assert 35 <= len(betas) <= 60
    assert np.all(np.diff(betas) < 0) and np.all(np.diff(kl) > 0)
    assert kl[0] < 2e-3
    assert kl[-1] >= 0.9 * float(f.kl_ceiling)
    ratio = betas[:-1] / betas[1:]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # geometric ...
    per_octave = np.log(2) / np.log(ratio[0])
    assert abs(per_octave - round(per_octave)) < 1e-9  # ... with a whole number of points per octave


def test_default_grid_from_the_quickly_compiled_coarse_sweep(gaussian, monkeypatch):
    """The coarse sweep is compiled with quick code generation up to _QUICK_WORK (CPU): same grid."""
    import importlib

    frontier = importlib.import_module("jaxlimits.frontier")
    calls = []
    quick = frontier._coarse_frontier
    monkeypatch.setattr(frontier, "_coarse_frontier", lambda *a, **k: calls.append(1) or quick(*a, **k))
    a = frontier.default_betas(gaussian, num=16)
    assert calls == ([1] if jax.default_backend() == "cpu" else [])
    monkeypatch.setattr(frontier, "_QUICK_WORK", 0)
    b = frontier.default_betas(gaussian, num=16)
    assert len(calls) <= 1
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_saturated_share_flags_the_low_beta_end(gaussian):
    f = jl.frontier(gaussian, np.array([20.0, 5.0, 0.5, 0.05]))
    np.testing.assert_array_equal(f.saturated, [False, False, True, True])
    assert float(f.saturated_share[-1]) == pytest.approx(1.0)
    assert float(f.ess_fraction[0]) > 0.99


def test_bootstrap_bands_agree_with_delta_method(gaussian):
    betas = np.array([8.0, 4.0])
    f = jl.frontier(gaussian, betas, bootstrap=64, key=jax.random.PRNGKey(1))
    b = f.bands
    assert b.replicates == 64
    assert (np.asarray(b.gain_lo) < np.asarray(f.gain)).all() and (np.asarray(f.gain) < np.asarray(b.gain_hi)).all()
    # 64 replicates estimate an SE to ~9% (1/sqrt(2*63)); the delta method agrees within 3 of those
    np.testing.assert_allclose(b.gain_se, f.gain_se, rtol=0.3)
    np.testing.assert_allclose(b.kl_se, f.kl_se, rtol=0.3)


def test_resample_keeps_draws_and_is_a_pytree_of_counts():
    s = jl.Samples.from_ragged([[1.0, 2.0, 3.0], [4.0, 5.0]], counts=[[2, 1, 1], [3, 3]])
    rs = jl.resample(s, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(rs.draws(), s.draws())
    assert (np.asarray(rs.counts)[~np.asarray(s.mask)] == 0).all()


def test_frontier_rejects_per_prompt_betas_and_exact_bootstrap(gaussian):
    with pytest.raises(ValueError, match="shared by all prompts"):
        jl.frontier(gaussian, np.ones((40, 2)))
    law = jl.Samples.from_law([[0.0, 1.0]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="exact law"):
        jl.frontier(law, [1.0], bootstrap=10)


def test_constant_rewards_grid():
    f = jl.frontier(jl.Samples(np.ones((3, 8))))
    np.testing.assert_allclose(f.kl, 0.0, atol=1e-15)


@pytest.mark.slow
def test_coverage_where_not_saturated():
    """Where ``saturated`` is False, the reported 95% intervals ``[lo, hi]`` cover the truth.

    The rule and the intervals are calibrated in benchmarks/calibrate_trust.py; this re-checks
    them on fresh draws, light tails and an exponential one (the delta method's interval alone
    covers 0.81-0.93 of exponential prompts at these N; the tail model's upper limit repairs it).
    The interval errs on the safe side (0.96-0.99 in the calibration), so the check is one-sided
    with a ceiling that still catches an interval wide open everywhere.
    """
    rng = np.random.default_rng(123)
    betas = np.geomspace(0.3, 8, 12)
    lam = 1 / betas
    mean_u = 1 / (-np.expm1(-lam)) - 1 / lam
    exp_lam = np.where(lam < 1, lam, np.nan)
    laws = {
        "normal": (lambda shape: rng.standard_normal(shape), lam, lam**2 / 2),
        "uniform": (lambda shape: rng.uniform(size=shape), mean_u - 0.5, lam * mean_u - np.log(np.expm1(lam) / lam)),
        "exponential": (lambda shape: rng.exponential(size=shape), exp_lam / (1 - exp_lam),
                        exp_lam / (1 - exp_lam) + np.log1p(-exp_lam)),
    }
    for name, (draw, gain, kl) in laws.items():
        covered_g, covered_k = [], []
        for n in (256, 1024):
            st_ = jl.tilt(jl.Samples(draw((400, n))), betas)
            ok = ~np.asarray(st_.saturated) & np.isfinite(gain)  # (exponential: no tilt for beta <= 1)
            inside = lambda lo, x, hi: (np.asarray(lo) <= x) & (x <= np.asarray(hi))  # noqa: E731
            covered_g.append(inside(st_.gain_lo, gain, st_.gain_hi)[ok])
            covered_k.append(inside(st_.kl_lo, kl, st_.kl_hi)[ok])
        cg, ck = np.concatenate(covered_g), np.concatenate(covered_k)
        assert cg.size > 1500, f"{name}: too few unflagged estimates to check ({cg.size})"
        assert 0.93 <= cg.mean() <= 0.995, f"{name}: gain coverage {cg.mean():.3f}"
        assert 0.93 <= ck.mean() <= 0.995, f"{name}: KL coverage {ck.mean():.3f}"


def test_trust_rule_constants_are_the_documented_ones():
    """The thresholds of the README's "Can I trust the number?" table (calibrated by benchmarks/calibrate_trust.py)."""
    got = (estimators.BIAS_SE_RATIO, estimators.BIAS_RMS_RATIO, estimators.RESIDUAL_SE_RATIO, estimators.KHAT_MAX,
           estimators.KHAT_POOLED_FRACTION, estimators.KHAT_NO_TILT, estimators.KL_CEILING_FRACTION, estimators.ESS_MIN,
           estimators.SPREAD_MAX, estimators.SHARE_MAX, estimators.DRAWS_MIN)
    assert got == (4.5, 0.45, 0.25, 0.5, 0.52, 1.0, 0.5, 600.0, 0.01, 0.05, 25)
