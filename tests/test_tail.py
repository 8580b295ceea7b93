"""The tail model (jaxlimits.tail): quadrature against closed forms, fits against known tails, inputs.

Shapes are shared (8 prompts x 256 draws, 4 betas, 50 replicates) so that one compiled program
serves every law; float32 has its own test.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special

import jaxlimits as jl
from jaxlimits import estimators, tail

P, N, R = 8, 256, 50


def _curve(rewards, betas, dtype=np.float64):
    return jl.tail_curve(jl.Samples(np.asarray(rewards, dtype)), np.asarray(betas, dtype), replicates=R)


def _covered(lo, hi, truth, least=P - 2):
    """At least ``least`` of the ``P`` prompts' intervals hold the truth at every beta.

    Nominal 95% intervals: fewer than 6 of 8 happens with probability 0.6% per beta.
    """
    inside = (np.asarray(lo) <= truth) & (truth <= np.asarray(hi))
    assert np.all(inside.sum(axis=0) >= least), inside.sum(axis=0)


# -- quadrature over the tail ------------------------------------------------------------------


def test_mgf_closed_forms():
    lam = jnp.asarray([0.01, 0.5, 0.99, 3.0, 50.0, 1e3])
    # uniform on [0, 1] is GPD(-1, 1): E e^{lam Y} = expm1(lam)/lam, tilted mean 1/(1 - e^-lam) - 1/lam
    log_m, mean = tail.tail_mgf(-1.0, 1.0, lam)
    lam_np = np.asarray(lam)
    np.testing.assert_allclose(log_m, lam_np + np.log(-np.expm1(-lam_np) / lam_np), rtol=1e-11)
    np.testing.assert_allclose(mean, 1 / -np.expm1(-lam_np) - 1 / lam_np, rtol=1e-10)
    # exponential (xi = 0): -log(1 - lam sigma) below the critical point, infinite from it on
    log_m, mean = tail.tail_mgf(0.0, 2.0, jnp.asarray([0.1, 0.4, 0.5, 0.7]))
    np.testing.assert_allclose(log_m[:2], -np.log1p(-2 * np.array([0.1, 0.4])), rtol=1e-14)
    np.testing.assert_allclose(mean[:2], 2 / (1 - 2 * np.array([0.1, 0.4])), rtol=1e-14)
    assert np.all(np.isinf(log_m[2:])) and np.all(np.isinf(mean[2:]))
    # a polynomial tail: no tilt at any beta
    log_m, mean = tail.tail_mgf(0.1, 1.0, jnp.asarray([1e-3, 1.0]))
    assert np.all(np.isposinf(log_m)) and np.all(np.isposinf(mean))


@pytest.mark.parametrize("xi,sigma", [(-0.2, 0.2), (-0.05, 1.0), (-0.8, 1.0)])
def test_mgf_against_direct_integration(xi, sigma):
    end = sigma / -xi
    for lam in (0.3, 4.0, 40.0):
        def dens(y, lam=lam):
            return np.exp(lam * (y - end)) * (1 + xi * y / sigma) ** (-1 / xi - 1) / sigma

        brk = [max(end - 30 / lam, 0.0)]
        z, _ = integrate.quad(dens, 0, end, points=brk, limit=400, epsabs=0, epsrel=1e-13)
        z1, _ = integrate.quad(lambda y: y * dens(y), 0, end, points=brk, limit=400, epsabs=0, epsrel=1e-13)
        log_m, mean = tail.tail_mgf(xi, sigma, lam)
        np.testing.assert_allclose(float(log_m), np.log(z) + lam * end, rtol=1e-9)
        np.testing.assert_allclose(float(mean), z1 / z, rtol=1e-9)


def test_mgf_float32_jit_vmap():
    xi = jnp.asarray([-1.0, -0.2, -0.01, 0.0], jnp.float32)
    sigma = jnp.asarray([1.0, 0.2, 1.0, 1.0], jnp.float32)
    lam = jnp.asarray([0.5, 5.0, 50.0], jnp.float32)
    f = jax.jit(jax.vmap(lambda x, s: tail.tail_mgf(x, s, lam)))
    l32, m32 = f(xi, sigma)
    assert l32.dtype == jnp.float32
    l64, m64 = jax.vmap(lambda x, s: tail.tail_mgf(x, s, lam.astype(float)))(xi.astype(float), sigma.astype(float))
    ok = np.isfinite(np.asarray(l64))
    np.testing.assert_array_equal(np.isfinite(np.asarray(l32)), ok)
    # float32 rounding of the inputs and of ~128 terms: a few ulps of float32 relative
    np.testing.assert_allclose(np.asarray(l32)[ok], np.asarray(l64)[ok], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(m32)[ok], np.asarray(m64)[ok], rtol=2e-6)


def test_body_alone_is_the_empirical_estimate():
    """Threshold at the max sample (no tail): exactly the plug-in estimate; a 5-draw tail moves it by its weight."""
    r = np.random.default_rng(3).standard_normal((2, N))
    srt = jnp.asarray(-np.sort(-r, axis=1))
    n = jnp.full(2, float(N))
    betas = np.array([1.0, 0.1, 0.01, 1e-4])  # the grid of the tied-top test: one compiled tilt
    lam = jnp.asarray(1 / betas)
    emp = jl.tilt(jl.Samples(r), betas, bias_correction=False)
    for m in (0, 5):
        mm = jnp.full((2, 1), float(m))
        u, a0, a1, s0 = jax.jit(tail._body)(srt, n, mm, lam)
        xi, sig = jnp.full((2, 1), -0.3), jnp.full((2, 1), 0.4)
        gain, kl, log_z = jax.jit(tail._curve)(a0, a1, s0, mm / n[:, None], xi, sig, lam)
        if m == 0:
            np.testing.assert_allclose(gain[:, 0], emp.gain, rtol=1e-12)
            np.testing.assert_allclose(kl[:, 0], emp.kl, rtol=1e-10)
            np.testing.assert_allclose(log_z[:, 0] + lam * u, emp.log_z, rtol=1e-12)
        else:  # the tail's tilted weight times the reward range bounds the change
            weight = jnp.exp(jnp.log(5 / N) + lam * (srt[:, :1] - u + 0.4 / 0.3) - log_z[:, 0])
            spread = (srt[:, 0] - srt[:, -1] + 0.4 / 0.3)[:, None]
            assert np.all(np.abs(gain[:, 0] - emp.gain) <= weight * spread)


# -- fits against laws with known tails --------------------------------------------------------


def test_exponential_tail_recovered():
    """Exp(1) rewards have an exact exponential tail: critical beta 1, gain 1/(beta - 1) above it."""
    r = np.random.default_rng(0).exponential(size=(P, N))
    betas = np.array([4.0, 2.0, 1.5, 0.5])
    c = _curve(r, betas)
    ok = betas > 1
    truth = 1 / (betas[ok] - 1)
    kl_truth = truth + np.log1p(-1 / betas[ok])
    _covered(c.prompt_gain_lo[:, ok], c.prompt_gain_hi[:, ok], truth)
    _covered(c.prompt_kl_lo[:, ok], c.prompt_kl_hi[:, ok], kl_truth)
    assert int(c.reasons[-1]) & estimators.NO_TILT and np.isnan(c.gain[-1])  # below the critical beta
    crit = np.asarray(c.critical_beta)
    kept = np.asarray(c.xi) == 0
    assert kept.sum() >= P - 1  # the exponential tail is kept (a 5% test)
    assert np.all((np.asarray(c.critical_beta_lo) <= 1)[kept] & (np.asarray(c.critical_beta_hi) >= 1)[kept])
    np.testing.assert_allclose(crit[kept].mean(), 1.0, atol=3 * 0.2 / np.sqrt(kept.sum()))


def test_uniform_finite_end():
    """Uniform rewards (xi = -1): a finite end at 1, where the gain saturates (at 1/2, not at the sample max)."""
    r = np.random.default_rng(1).uniform(size=(P, N))
    betas = np.array([1.0, 0.1, 0.01, 1e-4])
    c = _curve(r, betas)
    lam = 1 / betas
    truth = 1 / -np.expm1(-lam) - 1 / lam - 0.5
    _covered(c.prompt_gain_lo, c.prompt_gain_hi, truth)
    np.testing.assert_array_equal(c.extrapolated, np.asarray(c.kl) > 0.5 * np.log(N))
    assert c.extrapolated[-1]
    ends = np.asarray(c.upper_end)
    assert np.all(np.asarray(c.upper_end_lo) <= 1) and np.all(np.asarray(c.upper_end_hi) >= 1)
    assert np.all(ends > r.max(axis=1))
    assert np.all(np.asarray(c.critical_beta) == 0) and not np.any(c.reasons)
    assert np.all(np.asarray(c.xi_lo) <= -1) and np.all(np.asarray(c.xi_hi) >= -1)


def test_beta_law_shape_and_tilt():
    """Beta(2, 5): xi = -1/5 and the tilt from Kummer's function, E exp(lam r) = 1F1(2; 7; lam)."""
    a, b = 2.0, 5.0
    r = np.random.default_rng(2).beta(a, b, size=(P, N))
    betas = np.array([0.5, 0.1, 0.05, 0.02])
    c = _curve(r, betas)
    lam = 1 / betas
    mean = a / (a + b) * special.hyp1f1(a + 1, a + b + 1, lam) / special.hyp1f1(a, a + b, lam)
    gain = mean - a / (a + b)
    kl = lam * mean - np.log(special.hyp1f1(a, a + b, lam))
    _covered(c.prompt_gain_lo, c.prompt_gain_hi, gain)
    _covered(c.prompt_kl_lo, c.prompt_kl_hi, kl)
    inside = (np.asarray(c.xi_lo) <= -1 / b) & (-1 / b <= np.asarray(c.xi_hi))
    assert inside.sum() >= P - 1


def test_student_t_says_no_tilt():
    r = np.random.default_rng(4).standard_t(3, size=(P, N))
    before = r.copy()
    c = _curve(r, [4.0, 2.0, 1.0, 0.5])
    np.testing.assert_array_equal(r, before)  # nothing the user gave is modified
    assert np.all(np.asarray(c.reasons) & estimators.NO_TILT)
    assert np.all(np.isnan(c.gain)) and np.all(np.isposinf(c.gain_hi))
    assert "no-tilt" in repr(c)


def test_float32_matches_float64():
    """The model's tilt (body + tail) in float32 against float64, on the same fitted tails."""
    r = np.random.default_rng(1).uniform(size=(2, N))
    betas = np.array([1.0, 0.1, 0.01, 1e-4])
    out = {}
    for dt in (np.float32, np.float64):
        srt = jnp.asarray(-np.sort(-r, axis=1), dt)
        n, mm = jnp.full(2, float(N), dt), jnp.full((2, 1), 51.0, dt)
        lam = jnp.asarray(1 / betas, dt)
        u, a0, a1, s0 = jax.jit(tail._body)(srt, n, mm, lam)
        xi, sig = jnp.full((2, 1), -0.9, dt), jnp.full((2, 1), 0.2, dt)
        out[dt] = jax.jit(tail._curve)(a0, a1, s0, mm / n[:, None], xi, sig, lam)
    assert out[np.float32][0].dtype == jnp.float32
    # float32 rounding of rewards near 1 and of log Z up to ~1e4 / beta: relative 1e-5 at most
    for v32, v64 in zip(out[np.float32], out[np.float64]):
        np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-6)


# -- inputs ------------------------------------------------------------------------------------


def test_bad_inputs():
    r = np.random.default_rng(0).standard_normal((3, 64))
    mask = np.ones_like(r, bool)
    mask[1, 20:] = False
    with pytest.raises(ValueError, match="prompt 1 has 20 valid samples"):
        jl.tail_curve(jl.Samples(r, mask=mask), [1.0])
    with pytest.raises(ValueError, match="plain samples"):
        jl.tail_curve(jl.Samples(r, counts=np.ones_like(r)), [1.0])
    with pytest.raises(ValueError, match="scores"):
        jl.tail_curve(jl.Samples(r, scores=r + 1), [1.0])
    with pytest.raises(ValueError, match="positive"):
        jl.tail_curve(jl.Samples(r), [0.0])


def test_tied_top_keeps_the_empirical_law():
    """Rewards whose top tie (bf16 reward models): no tail fit; the empirical law, flagged where extrapolated."""
    rng = np.random.default_rng(5)
    r = rng.uniform(size=(P, N))
    r[:2, : N // 3] = 1.5  # a third of the draws at the maximum: an atom, ceiling log 3
    betas = np.array([1.0, 0.1, 0.01, 1e-4])
    c = _curve(r, betas)
    np.testing.assert_array_equal(c.fitted, np.arange(P) >= 2)
    emp = jl.tilt(jl.Samples(r[:2]), betas, bias_correction=False)
    np.testing.assert_allclose(c.prompt_gain[:2], emp.gain, rtol=1e-10)
    np.testing.assert_allclose(c.kl_ceiling[:2], np.log(N / (N // 3)), rtol=1e-12)
    few = (np.asarray(c.prompt_reasons[:2]) & estimators.FEW) != 0
    np.testing.assert_array_equal(few, np.asarray(c.prompt_extrapolated[:2]))
    assert few[:, -1].all() and not few[:, 0].any()
    assert not np.any(np.asarray(c.prompt_reasons[2:]) & estimators.FEW)
    # pooled, 2 of 8 prompts unfitted is more than SHARE_MAX: the frontier keeps the samples' points, as the
    # pooled inversions do (their points at the ceiling stay flagged, not extrapolated)
    assert not tail.applies(c.fitted)
    f = jl.frontier(jl.Samples(r), betas, tail="gpd", tail_replicates=R)
    assert not np.any(np.asarray(f.extrapolated)) and not np.any(np.asarray(f.tail.extrapolated))
    plain = jl.frontier(jl.Samples(r), betas)
    np.testing.assert_array_equal(np.asarray(f.gain), np.asarray(plain.gain))
    assert np.any(np.asarray(plain.reasons) & estimators.CEILING)  # there was something to extrapolate


# -- the frontier with a tail model ------------------------------------------------------------


@pytest.fixture(scope="module")
def frontiers():
    r = np.random.default_rng(1).uniform(size=(P, N))
    betas = np.array([1.0, 0.04, 0.01, 1e-4])
    s = jl.Samples(r)
    return betas, jl.frontier(s, betas, per_prompt=False), jl.frontier(s, betas, per_prompt=False, tail="gpd",
                                                                        tail_replicates=R)


def test_frontier_with_tail_model(frontiers):
    betas, plain, f = frontiers
    assert plain.extrapolated is None and plain.tail is None and "extrapolated" not in plain.to_dict()
    # the model replaces only the points past what the samples show (flagged 'ceiling'), not every flagged one
    ext = (np.asarray(plain.reasons) & estimators.CEILING) != 0
    assert ext[-1] and not ext[0]
    np.testing.assert_array_equal(f.extrapolated, ext)
    np.testing.assert_array_equal(tail.beyond_samples(plain.reasons, plain.gain, plain.kl), ext)
    c = f.tail
    for name in ("gain", "kl", "gain_se", "kl_se"):
        np.testing.assert_array_equal(np.asarray(getattr(f, name))[~ext], np.asarray(getattr(plain, name))[~ext])
        np.testing.assert_array_equal(np.asarray(getattr(f, name))[ext], np.asarray(getattr(c, name))[ext])
    np.testing.assert_array_equal(np.asarray(f.reasons)[ext], np.asarray(c.reasons)[ext])
    assert np.all(np.asarray(f.saturated)[ext])
    # Theorem 1 on the model's points: gain = beta (KL + reverse KL)
    np.testing.assert_allclose((betas * (f.kl + f.reverse_kl))[ext], np.asarray(f.gain)[ext], rtol=1e-10)
    assert "extrapolated" in repr(f) and f.to_dict()["extrapolated"].dtype == bool


def test_flagged_inside_the_ceiling_keeps_the_measurement(frontiers):
    """Uniform rewards (closed form: gain 1/(1 - e^-lam) - 1/lam - 1/2, KL lam E[r] - log((e^lam - 1)/lam)):
    at beta 0.04 (KL 2.0 of a ceiling of 5.5) the trust rule flags the point 'no-tilt' only (k-hat >= 1 in
    more than 5% of the prompts); the samples can speak there, so it keeps its measured value, SEs and
    reasons (not the model's), and holds the exact tilt within its SEs. At beta 0.01 (flagged 'ceiling')
    the model's point replaces it."""
    betas, plain, f = frontiers
    lam = 1 / betas[:2]
    mean = 1 / -np.expm1(-lam) - 1 / lam
    gain, kl = mean - 0.5, lam * mean - np.log(np.expm1(lam) / lam)
    assert estimators.reason_names(int(plain.reasons[1])) == "no-tilt"
    assert not bool(f.extrapolated[1]) and bool(f.saturated[1])
    for name in ("gain", "kl", "reverse_kl", "gain_se", "kl_se", "gain_lo", "gain_hi", "reasons"):
        assert np.asarray(getattr(f, name))[1] == np.asarray(getattr(plain, name))[1], name
    assert float(f.gain[1]) != float(f.tail.gain[1])  # the model's point differs: it was not taken
    assert abs(float(f.gain[1]) - gain[1]) < 2 * float(f.gain_se[1])
    assert abs(float(f.kl[1]) - kl[1]) < 2 * float(f.kl_se[1])
    assert int(plain.reasons[2]) & estimators.CEILING and bool(f.extrapolated[2])
    assert float(f.gain[2]) == float(f.tail.gain[2]) != float(plain.gain[2])
    # a point without a finite measured value is the model's too, whatever its reasons
    np.testing.assert_array_equal(tail.beyond_samples(np.array([0, 1, 8, 0]), [0.1, 0.2, 0.3, np.nan]),
                                  [False, False, True, True])


def test_figure_draws_extrapolated_points_apart(frontiers):
    from jaxlimits import plot

    _, _, f = frontiers
    ax = plot.frontier_figure(f).axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("extrapolated: tail model's 95% interval") for lab in labels)
    assert "extrapolated from a GPD tail model (not measured)" in labels
    ext = np.asarray(f.extrapolated)
    (measured,) = [ln for ln in ax.get_lines() if ln.get_label() == "frontier (optimal policy)"]
    # the measured curve holds only measured points (plus the origin): no extrapolated KL on it
    assert not np.isin(np.asarray(f.kl)[ext], measured.get_xdata()).any()


def test_frontier_tail_bad_inputs():
    r = np.random.default_rng(0).standard_normal((3, 64))
    with pytest.raises(ValueError, match="tail must be None .* or 'gpd'.*'foo'"):
        jl.frontier(jl.Samples(r), [1.0], tail="foo")
    mask = np.ones_like(r, bool)
    mask[2, 10:] = False
    with pytest.raises(ValueError, match=r"frontier\(tail='gpd'\): prompt 2 has 10 valid samples"):
        jl.frontier(jl.Samples(r, mask=mask), [1.0], tail="gpd")


def test_cli_frontier_tail(tmp_path, capsys):
    from jaxlimits.cli import main

    r = np.random.default_rng(1).uniform(size=(P, N))
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"prompt_id": {p}, "reward": {float(v)!r}}}\n' for p in range(P) for v in r[p]))
    out = tmp_path / "f.json"
    args = ["frontier", str(path), "--x64", "--betas", "1", "0.04", "0.01", "0.0001", "--tail", "gpd",
            "--tail-replicates", str(R), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "extrapolated" in text and "README 'Beyond log N'" in text
    rows = json.loads(out.read_text())["rows"]
    assert [row["status"] for row in rows][-1] == "extrapolated" and rows[-1]["extrapolated"] is True
    # beside the model's point, what the samples measured there and why it is flagged ('ceiling': the
    # samples cannot speak there); beta 0.04, flagged 'no-tilt' only, keeps its measurement
    assert "ceiling" in rows[-1]["measured_reasons"] and rows[-1]["measured_gain"] != rows[-1]["gain"]
    assert rows[1]["status"] == "saturated" and rows[1]["reasons"] == "no-tilt" and rows[1]["measured_gain"] is None
    assert "measured KL / gain (flag)" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("0.0001 "))
    assert f"{rows[-1]['measured_kl']:.4g} / {rows[-1]['measured_gain']:.4g} ({rows[-1]['measured_reasons']})" in line
    hi = float(rows[-1]["tail_gain_hi"])  # the string "inf" in JSON where the interval is open
    assert rows[-1]["tail_gain_lo"] <= rows[-1]["gain"] <= hi
    assert rows[0]["tail_gain_lo"] is None and rows[0]["status"] == "ok"
    # 2 of 8 prompts with tied top rewards: the model does not apply, and the CLI says so (same betas: one program)
    r[:2, : N // 3] = 1.5
    path.write_text("".join(f'{{"prompt_id": {p}, "reward": {float(v)!r}}}\n' for p in range(P) for v in r[p]))
    assert main(args[:-2]) == 0
    text = capsys.readouterr().out
    assert "--tail gpd did not apply: 2 of 8 prompts' top rewards tie" in text
    assert "extrapolated" not in text.split("did not apply")[1]
    assert main(["frontier", str(path), "--tail", "gpd", "--stream"]) == 2
    assert "--tail is not available with --stream" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frontier", str(path), "--tail", "foo"])
    assert "invalid choice: 'foo'" in capsys.readouterr().err


def test_table_is_the_pooled_curve_even_with_as_many_prompts_as_betas(frontiers):
    c = frontiers[2].tail
    c = c._replace(**{name: getattr(c, name)[: len(c.betas)] for name in tail._PER_PROMPT})  # P == B
    cols = c.to_dict()
    assert {"betas", "gain", "gain_lo", "extrapolated", "reasons"} <= set(cols)
    assert not {"xi", "upper_end", "critical_beta", "fitted", "kl_ceiling"} & set(cols)
    assert repr(c).startswith(f"TailCurve[4](GPD tail model, {P} prompts")


def test_beta_blocks_equal_one_block():
    """A memory budget that splits the betas (blocks of 2 for 3 betas: the last one padded) changes nothing."""
    r = np.random.default_rng(5).normal(size=(P, N))
    betas = [0.05, 0.5, 5.0]
    whole = _curve(r, betas)
    per_beta = tail.beta_block(P, N, len(tail.THRESHOLDS), R, 8, 1)  # 1: one beta's bytes are over the budget
    assert per_beta == 1
    budget = 2 * tail._BLOCK_COPIES * 8 * P * len(tail.THRESHOLDS) * (N + 2 * tail.QUAD_NODES + 2 * R)
    assert tail.beta_block(P, N, len(tail.THRESHOLDS), R, 8, budget) == 2
    split = jl.tail_curve(jl.Samples(r), np.asarray(betas), replicates=R, memory_budget=budget)
    for f in whole._fields:
        if f not in ("level", "replicates", "fit"):
            np.testing.assert_allclose(np.asarray(getattr(split, f)), np.asarray(getattr(whole, f)), rtol=1e-12,
                                       err_msg=f)
