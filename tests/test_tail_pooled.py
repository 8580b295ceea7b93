"""The tail model pooled over prompts (issue 16): a point carried by a few prompts' tails is flagged,
and the inversions' lower limits stand on the trusted measured frontier and on monotonicity."""

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import estimators, tail


def test_carried_share_counts_the_largest_five_percent_of_prompts():
    kl = np.ones((40, 3))
    kl[0, 1] = 100.0  # one prompt of 40 (k = 2) holds most of the pooled KL at the second beta
    kl[:, 2] = np.nan  # a prompt without a tilt: no share
    share, carried = (np.asarray(v) for v in tail.carried_share(kl))
    np.testing.assert_allclose(share[:2], [2 / 40, 101 / 139])
    assert np.isnan(share[2])
    np.testing.assert_array_equal(carried, [False, True, False])
    # few prompts: the largest one must hold more than twice its head count's share (here 2/3), not only half
    share, carried = (np.asarray(v) for v in tail.carried_share(np.array([[3.0], [1.0], [1.0]])))
    assert share[0] == pytest.approx(0.6) and not carried[0]
    # another axis; all zero KL is no share
    share, carried = tail.carried_share(np.zeros((2, 25)), axis=1)
    assert np.all(np.isnan(np.asarray(share))) and not np.any(np.asarray(carried))


def test_pooled_point_carried_by_one_prompt_near_its_critical_beta_is_flagged():
    """19 uniform prompts (finite ends) and one exponential prompt: just above that prompt's fitted critical
    beta its KL explodes, and the pooled KL is almost all its own."""
    rng = np.random.default_rng(2)
    r = np.concatenate([rng.uniform(size=(19, 256)), rng.exponential(size=(1, 256))])
    srt = -np.sort(-r, 1)
    crit = float(tail._point_model(srt, np.full(20, 256.0)).crit[-1])  # the exponential prompt's (~1.02)
    c = jl.tail_curve(jl.Samples(r), np.array([8.0, 1.005 * crit]), replicates=20)
    share = np.asarray(c.carried_share)
    kl = np.asarray(c.prompt_kl)
    np.testing.assert_allclose(share, kl[-1] / kl.sum(0), rtol=1e-6)  # k = 1 of 20 prompts: the largest
    assert share[0] < tail.CARRIED_SHARE < share[1]
    assert bool(c.extrapolated[1]) and int(c.reasons[1]) & estimators.FEW
    assert not int(c.reasons[0]) & estimators.FEW


def test_monotone_floor_raises_lower_limits_to_smaller_targets_and_keeps_the_point_inside():
    lo = np.array([[0.5, 0.2, np.nan, 0.1], [0.3, 0.1, 0.4, 0.9]])
    y = np.array([[1.0, 2.0, 3.0, 0.5], [1.0, 2.0, 3.0, 4.0]])
    point = np.array([[0.8, 0.9, np.nan, 0.6], [0.5, 0.35, 1.0, 2.0]])
    out = tail._monotone_floor(lo, y, point)
    # row 0 by target: 0.5 (0.1), 1 (0.5), 2 (0.2 -> 0.5), 3 (NaN kept); row 1: 0.3, 0.1 -> 0.3, 0.4, 0.9;
    # the second target's 0.3 stays at or below its point 0.35
    np.testing.assert_array_equal(out, [[0.5, 0.5, np.nan, 0.1], [0.3, 0.3, 0.4, 0.9]])
    capped = tail._monotone_floor(np.array([0.5, 0.2]), np.array([1.0, 2.0]), np.array([0.6, 0.3]))
    np.testing.assert_array_equal(capped, [0.5, 0.3])  # the floor 0.5 would pass the point 0.3


@pytest.mark.parametrize("pooled", [True, False])
def test_measured_floor_is_a_lower_limit_of_the_normal_frontier(pooled):
    """Standard-normal rewards: the gain a KL budget K allows is sqrt(2 K), the KL a gain G needs G^2 / 2."""
    r = np.random.default_rng(3).standard_normal((4, 1024))  # one prompt is trusted from ESS 600 on
    s = jl.Samples(r)
    kls = np.array([1e-4, 0.05, 0.2, 1.0, 5.0])
    gains = np.array([0.01, 0.3, 0.6, 1.5, 3.0])
    yk, yg = (kls, gains) if pooled else (np.broadcast_to(kls, (4, 5)), np.broadcast_to(gains, (4, 5)))
    fk = tail._measured_floor(s, yk, kind="kl", pooled=pooled, level=0.95)
    fg = tail._measured_floor(s, yg, kind="gain", pooled=pooled, level=0.95)
    assert fk.shape == fg.shape == np.shape(yk)
    assert all(np.array_equal(np.maximum.accumulate(f, -1), f) for f in (fk, fg))  # monotone in the target
    assert np.all(fk[..., 0] == -np.inf) and np.all(fg[..., 0] == -np.inf)  # no trusted point that small
    assert np.all(np.isfinite(fk[..., 2])) and np.all(fk[..., 2] > 0)  # a trusted point below KL 0.2
    assert np.all(fk <= np.sqrt(2 * kls)) and np.all(fg <= gains**2 / 2)
    assert np.all(tail._measured_floor(s, np.full(np.shape(yk), np.nan), kind="kl", pooled=pooled,
                                       level=0.95) == -np.inf)


@pytest.mark.heavy
def test_an_error_says_when_the_tail_model_did_not_apply():
    """2 of 8 prompts with tied top rewards (more than 5%): pooled, the model does not apply, and a budget past
    the ceiling raises the samples' error with the reason the model gave no answer."""
    r = np.random.default_rng(5).uniform(size=(8, 256))
    r[:2, :80] = 1.5
    with pytest.raises(ValueError, match=r"K_max .*tail='gpd' did not apply to 1 target\(s\).*top rewards tie"):
        jl.max_gain_at_kl(jl.Samples(r), [0.01, 10.0], tail="gpd", tail_replicates=10)
    sol = jl.max_gain_at_kl(jl.Samples(r), [0.01, 10.0], tail="gpd", tail_replicates=10, throw=False)
    np.testing.assert_array_equal(np.asarray(sol.tail.not_applied), [False, True])
    # per prompt the error names the first prompt that needed the model and could not have it
    with pytest.raises(jl.PromptError,
                       match=r"prompt 0.*did not apply.*their prompts' top rewards tie"):
        jl.max_gain_at_kl(jl.Samples(r), [4.0], tail="gpd", tail_replicates=10, pooled=False)


@pytest.mark.heavy  # ~19 s; CI runs it (the README's test command stays under 10 minutes)
def test_a_budget_past_the_ceiling_allows_at_least_the_samples_largest_gain():
    """Exp(1) rewards, KL 8 past log 256: the model's lower limit is at least the samples' cap (max r - mean r,
    what compare bounds the frontier by there; here 5.8, against a true gain of 10.4: g - log(1 + g) = 8), and
    the point stays inside."""
    r = np.random.default_rng(6).exponential(size=(8, 256))
    sol = jl.max_gain_at_kl(jl.Samples(r), [8.0], tail="gpd", tail_replicates=10, throw=False)
    assert int(sol.status[0]) == jl.inversion.Status.EXTRAPOLATED
    lo, point, cap = float(sol.tail.gain_lo[0]), float(sol.tail.gain[0]), float(sol.gain_max[0])
    assert lo >= min(cap, point) - 1e-6 * cap and lo <= point
    assert 4.0 < cap < 10.4  # the bound is below the truth


def test_where_the_model_gives_no_number_the_samples_flagged_answer_stands():
    """Student-t(3) rewards (no tilt), KL 4 inside the ceiling log 256 but flagged 'ceiling': a prompt whose
    fitted tail has no tilt keeps its measured (flagged) answer instead of losing it to NO_TILT."""
    s = jl.Samples(np.random.default_rng(0).standard_t(3, size=(8, 256)))
    plain = jl.max_gain_at_kl(s, [4.0], pooled=False, throw=False)
    sol = jl.max_gain_at_kl(s, [4.0], pooled=False, tail="gpd", tail_replicates=10, throw=False)
    no_tilt = np.asarray(sol.tail.no_tilt)[:, 0]
    inside = np.asarray(plain.status)[:, 0] == jl.inversion.Status.OK
    kept = no_tilt & inside
    assert kept.any()
    assert np.all((np.asarray(plain.reasons)[kept, 0] & estimators.CEILING) != 0)
    np.testing.assert_array_equal(np.asarray(sol.gain)[kept, 0], np.asarray(plain.gain)[kept, 0])
    assert np.all(np.asarray(sol.status)[kept, 0] == jl.inversion.Status.OK) and not np.any(
        np.asarray(sol.extrapolated)[kept, 0])
