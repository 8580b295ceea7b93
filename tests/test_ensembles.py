"""Ensembles of proxies: aggregations, calibration, loading, and the scaling with K (Thm. 3).

Thm. 3 is an upper bound: the residual of the mean of K unbiased members falls like K^-1/2, and the
gap at least that fast (its mean can fall like 1/K). The tests assert exactly that, with the
measured rates' bootstrap standard errors, never a stronger claim.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file

import jaxlimits as jl
from jaxlimits import ensembles
from jaxlimits.io import DataError

BETAS = np.array([3.0, 1.0, 0.3])


def test_aggregations_match_numpy():
    x = np.random.default_rng(0).normal(size=(3, 5, 4))
    np.testing.assert_allclose(ensembles.aggregate(x, "mean"), x.mean(-1), rtol=1e-14)
    np.testing.assert_allclose(ensembles.aggregate(x, "median"), np.median(x, -1), rtol=1e-14)
    np.testing.assert_allclose(ensembles.aggregate(x, "min"), x.min(-1), rtol=1e-14)
    np.testing.assert_allclose(ensembles.aggregate(x, "mean_minus_std", lam=0.7), x.mean(-1) - 0.7 * x.std(-1),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="unknown aggregation 'max'"):
        ensembles.aggregate(x, "max")
    ens = jl.Ensemble(x, x[..., 0])
    np.testing.assert_allclose(ens.aggregate("min").rewards, x.min(-1), rtol=1e-14)
    np.testing.assert_allclose(ens.aggregate("min").scores, x[..., 0], rtol=1e-14)


def test_ensemble_validation_names_the_member():
    gold = np.zeros((2, 3))
    bad = np.zeros((2, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"member 1 \(b\): rewards\[1, 2\] = .*nan.* is not finite"):
        jl.Ensemble([gold, bad], gold, names=["a", "b"])
    with pytest.raises(ValueError, match="proxy 1 has shape"):
        jl.Ensemble([gold, np.zeros((2, 4))], gold)
    with pytest.raises(ValueError, match="proxies must have shape"):
        jl.Ensemble(np.zeros((2, 3)), gold)
    with pytest.raises(ValueError, match="2 names for 1 members"):
        jl.Ensemble([gold], gold, names=["a", "b"])
    with pytest.raises(ValueError, match="at least 2 members"):
        jl.ensemble_scaling(jl.Ensemble([gold], gold), [1.0])


def test_calibration_to_the_gold_scale():
    rng = np.random.default_rng(1)
    gold = rng.normal(3.0, 2.0, size=(4, 30))
    x = np.stack([gold * 50 - 1000 + rng.normal(size=gold.shape), -gold + rng.normal(size=gold.shape)], -1)
    ens = jl.Ensemble(x, gold)
    mom = np.asarray(ens.calibrated("moments").proxies)
    np.testing.assert_allclose(mom.mean(axis=(0, 1)), gold.mean(), rtol=1e-12)
    np.testing.assert_allclose(mom.std(axis=(0, 1)), gold.std(), rtol=1e-12)
    ols = np.asarray(ens.calibrated("ols").proxies)
    for k in range(2):
        slope, icpt = np.polyfit(x[..., k].ravel(), gold.ravel(), 1)
        np.testing.assert_allclose(ols[..., k], slope * x[..., k] + icpt, rtol=1e-10)
    assert ens.calibrated("none") is ens
    with pytest.raises(ValueError, match="unknown calibration"):
        ens.calibrated("zscore")


def test_ensemble_gaps_are_proxy_gaps_of_members_and_aggregates():
    rng = np.random.default_rng(2)
    gold = rng.normal(size=(3, 40))
    x = gold[..., None] + rng.normal(size=(3, 40, 3))
    gaps = jl.ensemble_gaps(jl.Ensemble(x, gold, names=["a", "b", "c"]), BETAS, lam=0.5)
    assert list(gaps) == ["member a", "member b", "member c", "mean", "median", "min", "mean_minus_std"]
    ref = jl.proxy_gap(jl.Samples(x.mean(-1) - 0.5 * x.std(-1), scores=gold), BETAS)
    np.testing.assert_allclose(gaps["mean_minus_std"].gap, ref.gap, rtol=1e-12)
    np.testing.assert_allclose(gaps["mean_minus_std"].gap_se, ref.gap_se, rtol=1e-12)
    np.testing.assert_allclose(gaps["member b"].gap, jl.proxy_gap(jl.Samples(x[..., 1], scores=gold), BETAS).gap,
                               rtol=1e-12)


def test_exhaustive_subsets_obey_the_finite_population_identity():
    """With every subset averaged: E_sub ||rbar_K - s||^2 = ||ebar_M||^2 + v (1/K - 1/M), exactly."""
    rng = np.random.default_rng(3)
    gold = rng.normal(size=(3, 40))
    x = gold[..., None] + 0.3 + rng.normal(size=(3, 40, 5))  # biased members
    ens = jl.Ensemble(x, gold)
    sc = jl.ensemble_scaling(ens, BETAS, subsets=10, bootstrap=0)
    assert bool(np.all(np.asarray(sc.exhaustive))) and list(np.asarray(sc.subsets)) == [5, 10, 10, 5, 1]
    np.testing.assert_allclose(sc.residual_norm, sc.residual_norm_expected, rtol=1e-12)
    e = x - gold[..., None]
    ebar = e.mean(-1)
    noise = np.mean(np.sum((e - ebar[..., None]) ** 2, axis=-1) / 4)
    assert float(sc.noise_var) == pytest.approx(noise, rel=1e-12)
    assert float(sc.bias_sq) == pytest.approx(np.mean(ebar**2) - noise / 5, rel=1e-12)
    # K = M is the full mean; K = 1 averages the members
    full = jl.proxy_gap(jl.Samples(x.mean(-1), scores=gold), BETAS)
    np.testing.assert_allclose(sc.gap[-1], full.gap, atol=1e-13)
    members = [jl.proxy_gap(jl.Samples(x[..., k], scores=gold), BETAS).gap for k in range(5)]
    np.testing.assert_allclose(sc.gap[0], np.mean(members, axis=0), atol=1e-13)
    np.testing.assert_allclose(sc.gap_abs[0], np.mean(np.abs(members), axis=0), atol=1e-13)
    np.testing.assert_allclose(sc.gold_gain_gold_aligned, full.gold_gain_gold_aligned, atol=1e-13)
    assert np.all(np.isnan(np.asarray(sc.residual_rate_se)))  # no bootstrap, no SE


def _noisy_ensemble(seed, p=48, n=48, m=8, sigma=1.0):
    rng = np.random.default_rng(seed)
    gold = rng.standard_normal((p, n))
    return jl.Ensemble(gold[..., None] + sigma * rng.standard_normal((p, n, m)), gold)


def test_gold_plus_independent_noise_rates():
    """Residual rate within its error of -1/2; the gap falls at least that fast (Thm. 3, an upper bound)."""
    sc = jl.ensemble_scaling(_noisy_ensemble(0), [2.0], subsets=70, bootstrap=200)
    assert bool(np.all(np.asarray(sc.exhaustive)))
    rate, se = float(sc.residual_rate), float(sc.residual_rate_se)
    assert 0 < se < 0.05
    assert abs(rate + 0.5) <= 3 * se
    gap_rate, gap_se = float(sc.gap_rate[0]), float(sc.gap_rate_se[0])
    assert gap_rate <= -0.5 + 3 * gap_se
    # unbiased members: Thm. 3's bias term is zero within its noise
    assert abs(float(sc.bias_sq)) < 0.05 * float(sc.noise_var)
    assert float(sc.noise_var) == pytest.approx(1.0, rel=0.05)
    print(f"residual rate {rate:.3f} ± {se:.3f}, gap rate {gap_rate:.3f} ± {gap_se:.3f}")


@pytest.mark.slow
def test_rate_standard_error_is_calibrated_by_simulation():
    """The bootstrap-over-prompts SE of the residual rate against its spread over 16 independent ensembles.

    With 16 replicates the spread's own relative error is ~18%; the band is a factor 1.8 either way.
    """
    rates, ses = [], []
    for seed in range(16):
        sc = jl.ensemble_scaling(_noisy_ensemble(100 + seed), [2.0], subsets=70, bootstrap=100, seed=seed)
        rates.append(float(sc.residual_rate))
        ses.append(float(sc.residual_rate_se))
    spread, se = np.std(rates, ddof=1), np.sqrt(np.mean(np.square(ses)))
    assert se / 1.8 <= spread <= 1.8 * se
    assert abs(np.mean(rates) + 0.5) <= 3 * spread / 4  # the mean rate is -1/2


def test_load_ensemble_groups_and_deduplicates(tmp_path):
    path = tmp_path / "ens.jsonl"
    rows = [
        {"prompt_id": "a", "h": 1, "g": 1.0, "p1": 0.5, "p2": 0.1},
        {"prompt_id": "a", "h": 1, "g": 1.0, "p1": 0.5, "p2": 0.1},  # duplicate response
        {"prompt_id": "a", "h": 2, "g": 0.0, "p1": 0.2, "p2": 0.3},
        {"prompt_id": "b", "h": 3, "g": 2.0, "p1": 1.5, "p2": 1.1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = jl.load_ensemble(path, ["p1", "p2"], "g", dedupe="h")
    ens = loaded.ensemble
    assert loaded.prompt_ids == ["a", "b"] and ens.names == ("p1", "p2")
    assert ens.proxies.shape == (2, 2, 2)
    np.testing.assert_array_equal(ens.counts, [[2, 1], [1, 0]])
    np.testing.assert_array_equal(ens.mask, [[True, True], [True, False]])
    np.testing.assert_allclose(ens.proxies[0, :, 1], [0.1, 0.3])
    assert "1 rows merged" in loaded.notes[0]
    with pytest.raises(DataError, match="no column 'p3'"):
        jl.load_ensemble(path, ["p1", "p3"], "g")


@pytest.mark.data
def test_alpacafarm_four_proxies(capsys):
    """AlpacaFarm: gold against four proxies (1000 prompts x 2 samples), members calibrated by moments."""
    path = data_file("alpacafarm_gold_vs_proxies_1000x2.jsonl")
    loaded = jl.load_ensemble(path, ["rm", "mrm", "mrm_sft_based", "rm_center"], "gold")
    ens = loaded.ensemble.calibrated("moments")
    sc = jl.ensemble_scaling(ens, [4.0], bootstrap=200)
    assert bool(np.all(np.asarray(sc.exhaustive)))  # C(4, K) <= 32: every subset
    np.testing.assert_allclose(sc.residual_norm, sc.residual_norm_expected, rtol=1e-10)
    assert np.all(np.diff(np.asarray(sc.residual_norm)) < 0)  # averaging more members helps here
    assert np.isfinite(float(sc.residual_rate)) and float(sc.residual_rate_se) > 0
    with capsys.disabled():
        print(f"\nAlpacaFarm, 4 proxies (moments-calibrated), beta 4: residual {np.round(sc.residual_norm, 3)}, "
              f"rate {float(sc.residual_rate):.3f} ± {float(sc.residual_rate_se):.3f}; mean |gap| "
              f"{np.round(sc.gap_abs[:, 0], 3)}, rate {float(sc.gap_rate[0]):.3f} ± {float(sc.gap_rate_se[0]):.3f}; "
              f"bias^2 {float(sc.bias_sq):.2f}, member variance {float(sc.noise_var):.2f}")
