"""Inversions and compare with the tail model (tail="gpd"): exact answers of exponential rewards,
the empirical answer kept inside the trusted range, no tilt and the fitted upper end reported, CLI.

One shape (8 prompts x 256 draws, float64, 30 replicates) so that few programs are compiled.
"""

import json

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import estimators, tail
from jaxlimits.inversion import Status

P, N, R, A = 8, 256, 30, 2.0


def _exp_truth(beta):
    """Exponential rewards of rate A tilted at beta: rate b = A - 1/beta; gain, KL(Exp(b) || Exp(A))."""
    b = A - 1 / np.asarray(beta)
    return 1 / b - 1 / A, np.log(b / A) + A / b - 1


@pytest.fixture(scope="module")
def exp_samples():
    import jax

    jax.config.update("jax_enable_x64", True)
    # with the all-True mask the CLI's loader builds: the CLI test below then reuses these compiled programs
    return jl.Samples(np.random.default_rng(3).exponential(1 / A, size=(P, N)), mask=np.ones((P, N), bool))


@pytest.mark.heavy  # ~20 s; CI runs it (the README's test command stays under 10 minutes)
def test_min_kl_for_gain_past_the_max_exponential(exp_samples):
    gains = np.array([0.05, 4.0])  # inside the trusted range; past the samples' largest gain (~2.6)
    plain = jl.min_kl_for_gain(exp_samples, gains, throw=False)
    assert int(plain.status[1]) == Status.GAIN_AT_OR_ABOVE_MAX
    sol = jl.min_kl_for_gain(exp_samples, gains, tail="gpd", tail_replicates=R)
    ext = np.asarray(sol.extrapolated)
    assert not ext[0] and ext[1]
    # an extrapolated answer has its own code, never OK: its name, message and the repr say so
    assert list(sol.status_names()) == ["OK", "EXTRAPOLATED"]
    assert "past what the samples show" in sol.messages()[1] and "1 extrapolated" in repr(sol)
    assert "0 saturated or not estimated" in repr(sol)  # the extrapolated lane is not counted twice
    # inside: the existing answer, unchanged
    for f in ("beta", "kl", "gain", "kl_se", "reasons", "saturated"):
        assert np.asarray(getattr(sol, f))[0] == np.asarray(getattr(plain, f))[0], f
    assert np.isnan(np.asarray(sol.tail.beta)[0])
    # past the max: the tail model, against the exact tilt (beta* = 1/(A - 1/(G + 1/A)))
    beta_true = 1 / (A - 1 / (gains[1] + 1 / A))
    kl_true = _exp_truth(beta_true)[1]
    # the point solves the model's curve (tail_curve's point estimate at that beta) ...
    c = jl.tail_curve(exp_samples, [float(sol.beta[1])], replicates=2)
    np.testing.assert_allclose([float(c.gain[0]), float(c.kl[0])], [gains[1], float(sol.kl[1])], rtol=1e-6)
    # ... and the model's interval holds the truth (the pooled point is biased: beta* is 0.06 above the
    # critical beta 1/A, and the pooled critical beta is the largest of the prompts' fitted ones)
    t = sol.tail
    assert float(t.kl_lo[1]) <= kl_true <= float(t.kl_hi[1])
    assert float(t.beta_lo[1]) <= beta_true <= float(t.beta_hi[1])
    assert float(t.gain_lo[1]) == float(t.gain_hi[1]) == float(sol.gain[1]) == gains[1]
    assert bool(sol.saturated[1]) and float(sol.gain_se[1]) == 0


@pytest.mark.heavy
def test_max_gain_at_kl_past_the_ceiling_per_prompt(exp_samples):
    budget = 8.0  # past log N = 5.5
    # and KL 4: inside what the samples show (status OK) but flagged 'ceiling' (above half of log N)
    plain = jl.max_gain_at_kl(exp_samples, [4.0], pooled=False)
    assert np.all(np.asarray(plain.status) == Status.OK) and np.all(np.asarray(plain.reasons) & estimators.CEILING)
    sol = jl.max_gain_at_kl(exp_samples, [4.0, budget], pooled=False, tail="gpd", tail_replicates=R)
    assert sol.status.shape == (P, 2) and np.all(np.asarray(sol.extrapolated)[:, 1])
    from scipy import optimize

    beta_true = optimize.brentq(lambda b: _exp_truth(b)[1] - budget, 1 / A * (1 + 1e-12), 10)
    g_true = _exp_truth(beta_true)[0]
    t = sol.tail
    inside = (np.asarray(t.gain_lo)[:, 1] <= g_true) & (g_true <= np.asarray(t.gain_hi)[:, 1])
    assert inside.sum() >= P - 1, inside.ravel()
    np.testing.assert_allclose(np.asarray(sol.kl)[:, 1], budget, rtol=1e-6)
    assert np.median(np.abs(np.asarray(sol.gain)[:, 1] / g_true - 1)) < 0.2
    # at KL 4 the model answers too, and the measured (flagged 'ceiling') answer is kept beside it
    ext = np.asarray(sol.extrapolated)[:, 0]
    assert ext.sum() >= P - 1
    np.testing.assert_allclose(np.asarray(t.measured_gain)[ext, 0], np.asarray(plain.gain)[ext, 0], rtol=1e-12)
    assert np.all(np.asarray(t.measured_status)[ext, 0] == Status.OK)
    np.testing.assert_array_equal(np.asarray(t.measured_reasons)[ext, 0], np.asarray(plain.reasons)[ext, 0])
    assert np.all(np.asarray(sol.gain)[ext, 0] != np.asarray(plain.gain)[ext, 0])


@pytest.mark.heavy  # ~16 s; CI runs it
def test_intervals_from_replicates_hold_the_exponential_truth(exp_samples):
    """Each bootstrap replicate's (and profile member's) curve inverted, the interval from their answers:
    informative (a real lower limit of the gain at a KL inside the ceiling, where the projected band gave
    [0, inf]) and holding the exact tilt (gain 1/(A - 1/beta) - 1/A) on most prompts of a fixed seed."""
    from scipy import optimize

    from jaxlimits import tail

    budget = 1.0  # inside the ceiling log N = 5.5: not 'ceiling' (the tail-aware rule trusts most of these)
    beta_true = optimize.brentq(lambda b: _exp_truth(b)[1] - budget, 1 / A * (1 + 1e-12), 100)
    g_true = _exp_truth(beta_true)[0]
    # the model's own answer (tail.invert: with tail="gpd" the samples' flagged answer stands here, below)
    t = tail.invert(exp_samples, [budget], kind="kl", pooled=False, replicates=R)
    ok = np.isfinite(np.asarray(t.beta))[:, 0]
    assert ok.sum() >= P - 1
    lo, hi = (np.asarray(getattr(t, f"gain_{e}"))[ok, 0] for e in ("lo", "hi"))
    assert np.all(lo > 0.4 * g_true) and np.all(lo <= np.asarray(t.gain)[ok, 0])  # finite below, under the point
    assert ((lo <= g_true) & (g_true <= hi)).sum() >= ok.sum() - 1, (lo, hi, g_true)
    # with tail="gpd" an answer inside the ceiling (no 'ceiling' reason), flagged or not, keeps the measurement
    plain = jl.max_gain_at_kl(exp_samples, [budget], pooled=False)
    sol = jl.max_gain_at_kl(exp_samples, [budget], pooled=False, tail="gpd", tail_replicates=R)
    inside = ~(np.asarray(plain.reasons) & estimators.CEILING).astype(bool)
    assert inside.sum() >= P - 1 and not np.asarray(sol.extrapolated)[inside].any()
    for f in ("beta", "kl", "gain", "gain_se", "reasons", "saturated", "status"):
        np.testing.assert_array_equal(np.asarray(getattr(sol, f))[inside], np.asarray(getattr(plain, f))[inside])
    # pooled: one beta for all prompts, a real lower limit too
    pooled = tail.invert(exp_samples, [budget], kind="kl", pooled=True, replicates=R)
    assert np.isfinite(float(pooled.beta[0]))
    assert 0.5 * g_true < float(pooled.gain_lo[0]) <= g_true <= float(pooled.gain_hi[0])
    # the least KL for the true gain: the interval holds the true KL; with xi > 0 plausible (exponential
    # rewards: about half the replicates) the lower limit is 0 (such a tail needs no KL), the upper finite
    sk = tail.invert(exp_samples, [g_true], kind="gain", pooled=False, replicates=R)
    ok = np.isfinite(np.asarray(sk.beta))[:, 0]
    klo, khi = (np.asarray(getattr(sk, f"kl_{e}"))[ok, 0] for e in ("lo", "hi"))
    assert ((klo <= budget) & (budget <= khi)).sum() >= ok.sum() - 1, (klo, khi)
    assert np.isfinite(khi).sum() >= ok.sum() // 2


def test_member_brackets_on_a_known_curve():
    """The per-member inversion on a grid: a member curve f = 1/beta, o = 2/beta crossed at y = 1/b*."""
    import jax.numpy as jnp

    from jaxlimits import tail as tail_model

    grid = np.geomspace(0.1, 10, 41)
    f = np.stack([1 / grid, 3 / grid, np.full_like(grid, np.inf)])  # the last: no tilt anywhere (xi > 0)
    y = np.array([[0.5], [2.0]])  # [K, 1]: each target against every member
    br = tuple(np.asarray(v) for v in tail_model._brackets(jnp.asarray(f), jnp.asarray(2 * f), jnp.asarray(grid),
                                                           jnp.asarray(y)))
    lo, hi, b_lo, b_hi = tail_model._answers(br, y, np.inf)
    np.testing.assert_allclose(lo[:, :2], [[1.0, 1.0], [4.0, 4.0]], rtol=1e-12)  # o = 2 y on the curve
    np.testing.assert_allclose(hi[:, :2], lo[:, :2])
    b_true = np.array([[2.0, 6.0], [0.5, 1.5]])  # f = y
    # beta: log beta interpolated linearly in f between grid points 12% apart (second order in the step)
    np.testing.assert_allclose(b_lo[:, :2], b_true, rtol=3e-3)
    assert np.array_equal(b_lo[:, :2], b_hi[:, :2]) and np.all(b_lo[:, 2] == 0) and np.all(np.isposinf(b_hi[:, 2]))
    assert np.all(np.isposinf(lo[:, 2])) and np.all(np.isposinf(hi[:, 2]))  # a degenerate frontier: any gain
    assert np.all(tail_model._answers(br, y, 0.0)[0][:, 2] == 0)  # ... at a vanishing KL
    # a crossing beyond the grid's large end is only bounded: [0, o at the largest beta]
    br2 = tuple(np.asarray(v) for v in tail_model._brackets(jnp.asarray(f[:1]), jnp.asarray(2 * f[:1]),
                                                            jnp.asarray(grid), jnp.asarray([[0.01]])))
    lo2, hi2 = tail_model._answers(br2, np.array([[0.01]]), np.inf)[:2]
    assert lo2[0, 0] == 0 and hi2[0, 0] == 2 / grid[-1]


@pytest.mark.heavy
def test_student_t_reports_no_tilt():
    s = jl.Samples(np.random.default_rng(0).standard_t(3, size=(P, N)))
    sol = jl.max_gain_at_kl(s, [8.0], pooled=False, tail="gpd", tail_replicates=R, throw=False)
    status = np.asarray(sol.status)[:, 0]
    no = status == Status.NO_TILT
    assert no.any() and np.all(np.isnan(np.asarray(sol.gain)[no, 0]))
    assert np.all(np.asarray(sol.reasons)[no, 0] & estimators.NO_TILT)
    assert np.all(np.asarray(sol.extrapolated)[no, 0]) and np.all(np.asarray(sol.tail.no_tilt)[no, 0])
    pooled = jl.min_kl_for_gain(s, [50.0], tail="gpd", tail_replicates=R, throw=False)
    assert int(pooled.status[0]) == Status.NO_TILT and np.isnan(float(pooled.kl[0]))
    with pytest.raises(ValueError, match="no tilt"):
        jl.min_kl_for_gain(s, [50.0], tail="gpd", tail_replicates=R)


def test_uniform_gain_beyond_the_fitted_upper_end():
    s = jl.Samples(np.random.default_rng(1).uniform(size=(P, N)))
    sol = jl.min_kl_for_gain(s, [0.49, 0.7], tail="gpd", tail_replicates=R, throw=False)  # sup of the gain: 0.5
    assert int(sol.status[1]) == Status.BEYOND_UPPER_END and np.isnan(float(sol.kl[1]))
    assert bool(sol.tail.beyond_end[1]) and bool(sol.extrapolated[1])
    assert int(sol.status[0]) == Status.EXTRAPOLATED and bool(sol.extrapolated[0])
    from jaxlimits.status import of_solution

    assert of_solution(int(sol.status[1]), True)[0] == "unknown"
    assert of_solution(int(sol.status[0]), True) == ("extrapolated", "")


def test_bad_inputs(exp_samples):
    with pytest.raises(ValueError, match="tail must be None"):
        jl.min_kl_for_gain(exp_samples, 1.0, tail="pareto")
    with pytest.raises(ValueError, match="plain samples"):
        jl.max_gain_at_kl(jl.Samples.from_law([[0.0, 1.0]], [[0.5, 0.5]]), 0.1, tail="gpd")
    with pytest.raises(ValueError, match="prompt 0 has 10 valid samples"):
        jl.max_gain_at_kl(jl.Samples(np.zeros((1, 10))), 0.1, tail="gpd")
    import jax

    with pytest.raises(ValueError, match="needs concrete targets"):
        jax.jit(lambda g: jl.min_kl_for_gain(exp_samples, g, tail="gpd").kl)(1.0)


@pytest.mark.heavy  # ~12 s; test_cli_invert_and_compare_tail covers compare with a tail model by default
def test_compare_with_tail(exp_samples):
    runs = [jl.Run("far", kl=8.0, gain=1.0)]
    plain = jl.compare(exp_samples, runs)
    assert plain.status == ("unknown",) and not bool(plain.extrapolated[0])
    res = jl.compare(exp_samples, runs, tail="gpd", tail_replicates=R)
    row = res.rows()[0]
    assert row["status"] == "extrapolated" and row["extrapolated"] is True and "tail model" in row["note"]
    assert row["frontier_gain_lo"] <= row["frontier_gain"] and row["left_on_table"] > 0
    # the solver codes say it too (not 'ok'), and KL*(gain) past the samples' largest gain is the model's
    assert row["frontier_status"] == "extrapolated"
    far = jl.compare(exp_samples, [jl.Run("big", kl=0.5, gain=4.0)], tail="gpd", tail_replicates=R).rows()[0]
    assert far["min_kl_status"] == "extrapolated" and far["min_kl"] > 0
    # at KL 0.5 (flagged, not 'ceiling') the measured frontier stands, as without a tail model: a gain of 4
    # (past the samples' largest, ~2.6) is above it
    assert far["status"] == "above_frontier" and not far["extrapolated"] and far["frontier_status"] == "ok"
    assert "KL*(gain)" in far["note"] and "tail model" in far["note"]


def _write(tmp_path, r):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": {p}, "reward": {float(v)!r}}}\n' for p in range(len(r)) for v in r[p]))
    return path


@pytest.mark.heavy  # CI runs it (the README's test command stays under 10 minutes)
def test_cli_invert_and_compare_tail(tmp_path, capsys):
    from jaxlimits.cli import main

    r = np.random.default_rng(3).exponential(1 / A, size=(P, N))
    path = _write(tmp_path, r)
    out = tmp_path / "inv.json"
    assert main(["invert", str(path), "--x64", "--gain", "0.05", "4", "--tail", "gpd", "--tail-replicates", str(R),
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "extrapolated" in text and "Beyond log N" in text
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["status"] != "extrapolated" and rows[0]["tail_kl_lo"] is None
    assert rows[1]["status"] == "extrapolated" and rows[1]["tail_kl_lo"] <= rows[1]["kl"]
    # pooled: the share of the model point's KL its largest 5% of prompts hold, and the note where that flags it
    assert 0 < rows[1]["tail_carried_share"] <= 1 and rows[0]["tail_carried_share"] is None
    carried = rows[1]["tail_carried_share"] > max(tail.CARRIED_SHARE, 2 / P)
    assert ("few" in rows[1]["reasons"].split("+")) == carried == ("the largest 5% of the prompts hold" in text)
    # the measured answer beside the model's: past the samples' largest gain there is none, and it says why
    assert rows[0]["measured_kl"] is None and rows[0]["measured_status"] is None
    assert rows[1]["measured_kl"] is None and rows[1]["measured_solver_status"] == "GAIN_AT_OR_ABOVE_MAX"
    assert "measured (flag)" in text and "- (gain_at_or_above_max)" in text
    # a budget inside the samples' range flagged 'ceiling': the measured (flagged) gain beside the model's, in the
    # table and --out (at KL 1, flagged for other reasons only, the measurement stands: test_compare_shows_...)
    out2 = tmp_path / "inv2.csv"
    assert main(["invert", str(path), "--x64", "--kl", "4", "--tail", "gpd", "--tail-replicates", str(R),
                 "--out", str(out2)]) == 0
    text = capsys.readouterr().out
    import csv

    with out2.open() as fh:
        row = next(csv.DictReader(fh))
    assert row["status"] == "extrapolated" and float(row["measured_gain"]) > 0 and "ceiling" in row["measured_reasons"]
    line = next(x for x in text.splitlines() if x.strip().startswith("KL 4 "))
    assert f"{float(row['measured_gain']):.4g} ({row['measured_reasons']})" in line
    # the model's beta with its interval too (tail_beta_lo/hi in --out; an empty upper limit is open: inf); a point
    # carried by a few prompts (few) is printed as its interval only, the point stays in --out
    b_hi = f"{float(row['tail_beta_hi']):.3g}]" if row["tail_beta_hi"] else "inf]"
    g_hi = f"{float(row['tail_gain_hi']):.3g}]" if row["tail_gain_hi"] else "inf]"
    point = "" if "few" in row["reasons"].split("+") else "{:.4g} "
    assert (point.format(float(row["gain"])) + f"[{float(row['tail_gain_lo']):.3g}, {g_hi}") in line
    assert (point.format(float(row["beta"])) + f"[{float(row['tail_beta_lo']):.3g}, {b_hi}") in line
    assert (f"{float(row['gain']):.4g} [" in line) == (point != "")
    assert main(["invert", str(path), "--gain", "4", "--tail", "gpd", "--tail-replicates", "1"]) == 2
    assert "--tail-replicates 1" in capsys.readouterr().err
    runs = tmp_path / "runs.csv"
    runs.write_text("name,kl,gain\nfar,8.0,1.0\n")
    cmp_out = tmp_path / "cmp.json"
    assert main(["compare", str(path), "--x64", "--runs", str(runs), "--run-gain-col", "gain", "--tail", "gpd",
                 "--tail-replicates", str(R), "--out", str(cmp_out)]) == 0
    rows = json.loads(cmp_out.read_text())["rows"]
    assert rows[0]["status"] == "extrapolated" and rows[0]["frontier_status"] == "extrapolated"
    # past the ceiling the samples give no frontier: the measured column says why
    assert rows[0]["measured_frontier_gain"] is None
    assert rows[0]["measured_frontier_status"] == "kl_at_or_above_ceiling"
    # the table: the model's frontier with its interval in brackets, no plain left/eff. computed from it
    table = capsys.readouterr().out
    line = next(x for x in table.splitlines() if x.startswith("far "))
    assert f"[{rows[0]['frontier_gain_lo']:.4g}, " in line and f"{rows[0]['left_on_table']:.4g}" not in line
    assert "measured (flag)" in table and "- (kl_at_or_above_ceiling)" in line


def test_compare_shows_the_measured_frontier_beside_the_model(exp_samples):
    """At a KL inside the ceiling where the samples' frontier is flagged 'ceiling': both numbers, the flag's
    reasons. Flagged for other reasons only (KL 1: 'tail', 'few'), the samples' frontier stands, flagged."""
    runs = [jl.Run("mid", kl=1.0, gain=0.5), jl.Run("high", kl=4.0, gain=0.5)]
    mid, row = jl.compare(exp_samples, runs, tail="gpd", tail_replicates=R).rows()
    assert row["extrapolated"] and row["measured_frontier_status"] == "ok" and row["measured_frontier_reasons"]
    assert "ceiling" in row["measured_frontier_reasons"]
    assert row["measured_frontier_saturated"] is True  # the solve answered ('ok'), the trust rule flags it
    plain_mid, plain = jl.compare(exp_samples, runs).rows()
    assert row["measured_frontier_gain"] == pytest.approx(plain["frontier_gain"], rel=1e-12)
    assert row["measured_frontier_gain"] != row["frontier_gain"]
    assert plain_mid["status"] == "saturated" and "ceiling" not in plain_mid["frontier_reasons"]
    assert not mid["extrapolated"] and mid["status"] == "saturated" and mid["measured_frontier_gain"] is None
    for k in ("frontier_gain", "frontier_gain_se", "frontier_reasons", "left_on_table", "min_kl"):
        assert mid[k] == plain_mid[k], k


def test_tail_not_applied_is_said(tmp_path, capsys):
    """Pooled, with more than 5% of the prompts' top rewards tied (no tail can be fitted) the model does not
    apply: the flagged or unknown lanes keep the samples' answer, ``tail.not_applied`` marks them and the CLI
    says why (it used to keep them silently)."""
    from jaxlimits.cli import main
    from jaxlimits.status import Status

    r = np.random.default_rng(3).exponential(1 / A, size=(P, N))
    top = np.argsort(-r, axis=1)[:, :130]
    for i in (0, 1):  # 2 of 8 prompts: their top half ties (rounding that coarse leaves no tail to fit)
        r[i, top[i]] = r[i, top[i, 0]]
    s = jl.Samples(r)
    sol = jl.max_gain_at_kl(s, [0.01, 10.0], tail="gpd", tail_replicates=R, throw=False)
    assert not np.asarray(sol.extrapolated).any()
    assert np.asarray(sol.tail.not_applied).tolist() == [False, True]
    assert np.asarray(sol.status)[1] == int(Status.KL_AT_OR_ABOVE_CEILING)
    assert "1 needed the model but it does not apply" in repr(sol.tail)
    path = _write(tmp_path, r)
    # an unanswered target exits 2, as without --tail; the note says why the model gave no answer
    assert main(["invert", str(path), "--kl", "10", "--tail", "gpd", "--tail-replicates", str(R)]) == 2
    assert "--tail gpd did not apply to 1 target(s)" in capsys.readouterr().out
