"""Proxy gap, over-optimisation peak, Bradley-Terry blind spot, the figure and the ``proxy`` command.

References are independent: exact enumeration of finite laws in NumPy float64, brute-force pair
sums, dense grid searches and simulation. The gap is never asserted to have a sign or to be
monotone (MATH.md §7): the identity and the bounds are what hold.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import data_file
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxlimits as jl
from jaxlimits import proxy
from jaxlimits.cli import main
from jaxlimits.inversion import Status

BETAS = np.array([3.0, 1.0, 0.3])


# -- exact references --------------------------------------------------------------------------


def _tilt_np(p, x, beta):
    """Tilted law ``p exp(x/beta) / Z`` (float64)."""
    w = np.log(p) + (x - x.max()) / beta
    w = np.exp(w - w.max())
    return w / w.sum()


def _exact_gap_terms(r, s, p, beta):
    """Gains, gap by the closed identity, KLs and E[delta] under both tilts, for one finite law."""
    ps, pr = _tilt_np(p, s, beta), _tilt_np(p, r, beta)
    delta = s - r
    e = np.exp(-(delta - delta.min()) / beta)  # the constant factor cancels in the ratio
    cov = np.sum(ps * s * e) - np.sum(ps * s) * np.sum(ps * e)
    return {
        "gain_s": np.sum(ps * s) - np.sum(p * s),
        "gain_r": np.sum(pr * s) - np.sum(p * s),
        "identity": -cov / np.sum(ps * e),
        "kl_s": np.sum(ps * np.log(ps / p)),
        "kl_r": np.sum(pr * np.log(pr / p)),
        "delta_s": np.sum(ps * delta),
        "delta_r": np.sum(pr * delta),
        "proxy_gain": np.sum(pr * r) - np.sum(p * r),
        "residual_sq": np.sum(p * delta**2),
    }


law_rows = st.lists(st.floats(-3, 3, allow_nan=False), min_size=6, max_size=6)
law_probs = st.lists(st.floats(0.02, 1.0), min_size=6, max_size=6)


@settings(max_examples=25, deadline=None)
@given(st.tuples(law_rows, law_rows), st.tuples(law_rows, law_rows), st.tuples(law_probs, law_probs))
def test_gap_equals_the_closed_identity_on_exact_laws(rs, ss, ps):
    r, s = np.array(rs), np.array(ss)
    p = np.array(ps)
    p = p / p.sum(axis=1, keepdims=True)
    g = jl.proxy_gap(jl.Samples.from_law(r, p, scores=s), BETAS)
    for x in range(2):
        for j, beta in enumerate(BETAS):
            ref = _exact_gap_terms(r[x], s[x], p[x], beta)
            gap = float(g.prompts.gap[x, j])
            assert gap == pytest.approx(ref["identity"], abs=1e-10)
            assert float(g.prompts.gold_gain_gold_aligned[x, j]) == pytest.approx(ref["gain_s"], abs=1e-10)
            assert float(g.prompts.gold_gain_proxy_aligned[x, j]) == pytest.approx(ref["gain_r"], abs=1e-10)
            assert float(g.prompts.kl_proxy_aligned[x, j]) == pytest.approx(ref["kl_r"], abs=1e-10)
            assert float(g.prompts.proxy_gain[x, j]) == pytest.approx(ref["proxy_gain"], abs=1e-10)
            # bounds, never a sign: each tilt maximises its own objective
            lower = beta * (ref["kl_s"] - ref["kl_r"])
            assert lower - 1e-10 <= gap <= lower + ref["delta_s"] - ref["delta_r"] + 1e-10
            assert abs(gap) <= float(g.prompts.gold_range[x]) + 1e-12
        assert float(g.prompts.residual_norm[x]) == pytest.approx(np.sqrt(_exact_gap_terms(r[x], s[x], p[x], 1)[
            "residual_sq"]), abs=1e-12)
    np.testing.assert_array_equal(np.asarray(g.gap_se), 0.0)  # a law has no sampling error
    np.testing.assert_allclose(g.gap, np.mean(np.asarray(g.prompts.gap), axis=0), atol=1e-15)
    res = np.sqrt(np.mean(np.asarray(g.prompts.residual_norm) ** 2))
    if res > 0:
        np.testing.assert_allclose(g.ratio, np.abs(np.asarray(g.gap)) / res, rtol=1e-12)
    else:  # proxy = gold: no gap, ratio reported as 0
        np.testing.assert_array_equal(np.asarray(g.ratio), 0.0)


def test_gap_can_be_negative_and_non_monotone():
    """``r = 2s`` on a three-point law: the gap is negative at every beta and not monotone."""
    s = np.array([[0.0, 1.0, 2.0, 0.0, 0.0, 0.0]] * 2)
    p = np.array([[0.6, 0.3, 0.1, 0.0, 0.0, 0.0]] * 2)
    g = jl.proxy_gap(jl.Samples.from_law(2 * s, p, scores=s), BETAS)  # p = 0 rows drop out
    want = [_exact_gap_terms(2 * s[0, :3], s[0, :3], p[0, :3], b)["identity"] for b in BETAS]
    np.testing.assert_allclose(g.gap, want, atol=1e-12)
    np.testing.assert_allclose(want, [-0.19284582563, -0.52270452038, -0.10589131473], atol=1e-10)


def test_gold_and_shifted_gold_have_zero_gap():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(2, 6))
    p = rng.dirichlet(np.ones(6), size=2)
    law = jl.Samples.from_law(s, p, scores=s)
    g = jl.proxy_gap(law, BETAS)
    np.testing.assert_array_equal(np.asarray(g.gap), 0.0)
    assert float(g.residual_norm) == 0.0 and float(g.ratio[0]) == 0.0
    shift = np.array([[2.5], [-40.0]])  # a constant per prompt
    g2 = jl.proxy_gap(jl.Samples.from_law(s + shift, p, scores=s), BETAS)
    np.testing.assert_allclose(g2.prompts.gap, 0.0, atol=64 * np.finfo(float).eps * 40)
    np.testing.assert_allclose(g2.prompts.residual_norm, np.abs(shift[:, 0]), rtol=1e-12)
    np.testing.assert_allclose(g2.prompts.centred_residual_norm, 0.0, atol=1e-12)
    # on samples: the standard error is zero too
    x = rng.normal(size=(3, 40))
    g3 = jl.proxy_gap(jl.Samples(x + np.array([[1.0], [-2.0], [7.0]]), scores=x), BETAS)
    np.testing.assert_allclose(g3.prompts.gap, 0.0, atol=1e-13)
    np.testing.assert_allclose(g3.prompts.gap_se, 0.0, atol=1e-13)


# -- standard error ------------------------------------------------------------------------------


def _gap_se_np(r, s, beta, counts=None, log_w=None):
    """Delta-method SE of the gap from its joint influence function, per MATH.md §3 (float64)."""
    m = np.ones_like(r) if counts is None else counts
    v = m * (1.0 if log_w is None else np.exp(log_w))
    u = v / v.sum()
    ps, pr = _tilt_np(u, s, beta), _tilt_np(u, r, beta)
    psi = ps / u * (s - ps @ s) - pr / u * (s - pr @ s)
    return np.sqrt(np.sum(u**2 / m * psi**2))


def test_gap_se_is_the_joint_influence_function():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 40))
    r = s + 0.8 * rng.normal(size=(3, 40))
    g = jl.proxy_gap(jl.Samples(r, scores=s), BETAS)
    for x in range(3):
        for j, b in enumerate(BETAS):
            assert float(g.prompts.gap_se[x, j]) == pytest.approx(_gap_se_np(r[x], s[x], b), rel=1e-10)
    # with importance weights
    lw = rng.normal(size=(3, 40))
    gw = jl.proxy_gap(jl.Samples(r, scores=s, log_weights=lw), BETAS)
    for x in range(3):
        assert float(gw.prompts.gap_se[x, 1]) == pytest.approx(_gap_se_np(r[x], s[x], 1.0, log_w=lw[x]), rel=1e-10)
    # pooled over prompts: independent prompts
    np.testing.assert_allclose(g.gap_se, np.sqrt(np.sum(np.asarray(g.prompts.gap_se) ** 2, axis=0)) / 3, rtol=1e-12)


def test_gap_se_with_a_constant_proxy_is_the_gold_gain_se():
    """A constant proxy leaves the base policy: the gap is the gold-aligned gain, whose SE the core computes."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 40))
    g = jl.proxy_gap(jl.Samples(np.zeros((3, 40)) + 1.5, scores=s), BETAS)
    np.testing.assert_allclose(g.prompts.gap, g.prompts.gold_gain_gold_aligned, atol=1e-14)
    # the core's SE uses a series at small tilt, truncated below 1e-6 relative (moments.K_SE)
    np.testing.assert_allclose(g.prompts.gap_se, g.prompts.gold_gain_gold_aligned_se, rtol=1e-6)


def test_counts_give_the_expanded_sample():
    rng = np.random.default_rng(2)
    vals = rng.normal(size=(2, 7))
    gold = vals + rng.normal(size=(2, 7))
    cnt = rng.integers(1, 5, size=(2, 7)).astype(float)
    # the plug-in estimates, for which the gap identity holds exactly on samples
    g = jl.proxy_gap(jl.Samples.from_counts(list(vals), list(cnt), scores=list(gold)), BETAS, bias_correction=False)
    for x in range(2):
        rx, sx = np.repeat(vals[x], cnt[x].astype(int)), np.repeat(gold[x], cnt[x].astype(int))
        for j, b in enumerate(BETAS):
            ref = _exact_gap_terms(rx, sx, np.full(rx.size, 1 / rx.size), b)
            assert float(g.prompts.gap[x, j]) == pytest.approx(ref["identity"], abs=1e-12)
            assert float(g.prompts.gap_se[x, j]) == pytest.approx(_gap_se_np(rx, sx, b), rel=1e-10)
            assert float(g.prompts.gap_se[x, j]) == pytest.approx(
                _gap_se_np(vals[x], gold[x], b, counts=cnt[x]), rel=1e-10)


def test_gap_se_is_calibrated_by_simulation():
    """400 independent replicates (as prompts): the SE matches the spread of the gap across them.

    At beta = 2 the tilt is mild (ESS/N ~ 0.7) and the delta method is accurate; the spread of a
    standard deviation from 400 replicates is ~3.5%, so 12% is a 3.4-sigma band. The SE that
    ignores the correlation of the two gains, ``sqrt(se_s^2 + se_r^2)``, is 2.6 times too large.
    """
    rng = np.random.default_rng(1)
    s = rng.standard_normal((400, 400))
    r = s + 0.7 * rng.standard_normal((400, 400))
    g = jl.proxy_gap(jl.Samples(r, scores=s), [2.0])
    spread = np.std(np.asarray(g.prompts.gap[:, 0]), ddof=1)
    predicted = np.sqrt(np.mean(np.asarray(g.prompts.gap_se[:, 0]) ** 2))
    assert predicted == pytest.approx(spread, rel=0.12)
    naive = np.sqrt(np.mean(np.asarray(g.prompts.gold_gain_gold_aligned_se[:, 0]) ** 2
                            + np.asarray(g.prompts.gold_gain_proxy_aligned_se[:, 0]) ** 2))
    assert naive > 2 * spread


def test_float32_matches_float64():
    rng = np.random.default_rng(4)
    s = rng.normal(size=(3, 40))
    r = s + 0.8 * rng.normal(size=(3, 40))
    g64 = jl.proxy_gap(jl.Samples(r, scores=s), BETAS)
    g32 = jl.proxy_gap(jl.Samples(r.astype(np.float32), scores=s.astype(np.float32)), BETAS.astype(np.float32))
    assert g32.gap.dtype == jnp.float32
    # rounding of inputs (6e-8 relative) through exponentials of r/beta with |r|/beta <= 10
    np.testing.assert_allclose(g32.prompts.gap, g64.prompts.gap, atol=2e-5)
    np.testing.assert_allclose(g32.prompts.gap_se, g64.prompts.gap_se, rtol=1e-4, atol=1e-6)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="gold reward as the samples' scores"):
        jl.proxy_gap(jl.Samples([[0.0, 1.0]]), [1.0])
    with pytest.raises(ValueError, match="positive finite"):
        jl.proxy_gap(jl.Samples([[0.0, 1.0]], scores=[[1.0, 0.0]]), [1.0, -1.0])
    with pytest.raises(ValueError, match="shape \\[betas\\]"):
        jl.proxy_gap(jl.Samples([[0.0, 1.0]], scores=[[1.0, 0.0]]), [[1.0]])
    with pytest.raises(ValueError, match="at least 3 betas"):
        jl.overoptimization_peak(jl.Samples([[0.0, 1.0]], scores=[[1.0, 0.0]]), [1.0, 2.0])


# -- over-optimisation ---------------------------------------------------------------------------


def _spurious_law(a=0.5, c=2.0, rare=0.03):
    """Quality q on 11 levels, a rare spurious feature f the proxy rewards (+a f) and gold punishes (-c f)."""
    q = np.repeat(np.linspace(0, 1, 11), 2)
    f = np.tile([0.0, 1.0], 11)
    p = np.where(f == 1, rare, 1 - rare) / 11
    return q + a * f, q - c * f, p


GRID = np.geomspace(10, 0.01, 31)


def _dense_gain(r, s, u, betas, with_kl=False):
    """Gold gain (and KL) of the tilt by ``r``, ``[P, B]``, by NumPy over a dense grid (rows: prompts)."""
    r, s, u = np.atleast_2d(r), np.atleast_2d(s), np.atleast_2d(u)
    logits = np.log(u)[:, None, :] + (r - r.max(axis=1, keepdims=True))[:, None, :] / betas[None, :, None]
    w = np.exp(logits - logits.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    gain = np.einsum("pbn,pn->pb", w, s) - np.sum(u * s, axis=1)[:, None]
    if not with_kl:
        return gain
    kl = np.sum(np.where(w > 0, w * np.log(np.where(w > 0, w, 1) / u[:, None, :]), 0), axis=-1)
    return gain, kl


@pytest.mark.parametrize("a,c", [(0.5, 2.0), (1.0, 1.0), (0.3, 3.0)])
def test_peak_matches_a_dense_grid_search_on_exact_laws(a, c):
    r, s, p = _spurious_law(a, c)
    law = jl.Samples.from_law([r], [p], scores=[s])
    pk = jl.overoptimization_peak(law, GRID)
    assert int(pk.status) == proxy.PEAK_FOUND and bool(pk.converged)
    dense = np.geomspace(100, 1e-3, 20001)
    gain = _dense_gain(r, s, p, dense)[0]
    k = int(np.argmax(gain))
    assert 0 < k < dense.size - 1
    assert abs(np.log(float(pk.beta) / dense[k])) <= np.log(dense[0] / dense[1])
    assert float(pk.gold_gain) >= gain[k] - 1e-13  # the refined peak is at least the grid's best
    # at the peak d gain / d beta = -Cov(s, r) / beta^2 vanishes; KL and gain are the exact tilt's
    b = float(pk.beta)
    w = _tilt_np(p, r, b)
    assert abs(np.sum(w * r * s) - np.sum(w * r) * np.sum(w * s)) <= 1e-12
    ref = _exact_gap_terms(r, s, p, b)
    assert float(pk.gold_gain) == pytest.approx(ref["gain_r"], abs=1e-12)
    assert float(pk.kl) == pytest.approx(ref["kl_r"], rel=1e-10)
    assert float(pk.proxy_gain) == pytest.approx(ref["proxy_gain"], rel=1e-10)


def test_peak_status_is_data():
    r, s, p = _spurious_law()
    cases = {
        proxy.PEAK_BEYOND_GRID: s,  # aligning to gold: the gold gain keeps rising
        proxy.PEAK_AT_START: -s,  # a proxy that is anti-gold: it falls from the start
        proxy.PEAK_FLAT: np.zeros_like(s),  # a constant proxy: nothing changes
    }
    for status, proxy_reward in cases.items():
        pk = jl.overoptimization_peak(jl.Samples.from_law([proxy_reward], [p], scores=[s]), GRID)
        assert int(pk.status) == status, proxy.PEAK_MESSAGES[int(pk.status)]
        assert not bool(pk.converged)


def test_peak_in_float32():
    """The solver's tolerances follow the dtype: float32 finds the float64 peak to ~1e-5."""
    r, s, p = _spurious_law()
    f64 = jl.overoptimization_peak(jl.Samples.from_law([r], [p], scores=[s]), GRID)
    law32 = jl.Samples.from_law([r.astype(np.float32)], [p], scores=[s.astype(np.float32)])
    pk = jl.overoptimization_peak(law32, GRID.astype(np.float32))
    assert pk.beta.dtype == jnp.float32 and int(pk.status) == proxy.PEAK_FOUND and bool(pk.converged)
    # the root of a covariance evaluated to ~1e-7 relative, whose slope in log beta is ~0.1
    assert float(pk.beta) == pytest.approx(float(f64.beta), rel=1e-4)
    assert float(pk.gold_gain) == pytest.approx(float(f64.gold_gain), rel=1e-5)


def _spurious_samples(num_prompts=8, n=200, seed=0):
    """Draws from spurious-feature laws with different strengths (one per prompt), with a mask."""
    rng = np.random.default_rng(seed)
    rs, ss = [], []
    for x in range(num_prompts):
        r, s, p = _spurious_law(a=0.3 + 0.1 * x, c=2.0, rare=0.05)
        idx = rng.choice(p.size, size=n, p=p)
        rs.append(r[idx] + 0.05 * rng.standard_normal(n))
        ss.append(s[idx])
    return jl.Samples(np.array(rs), scores=np.array(ss), mask=np.ones((num_prompts, n), bool))


SAMPLE_GRID = np.geomspace(20, 0.02, 24)


@pytest.fixture(scope="module")
def sample_result():
    samples = _spurious_samples()
    # the plug-in curve and peak: the dense-grid references below are the plug-in's, and its
    # identities (the curve is the samples' exact tilt, shortfall >= 0 on samples) are what is checked
    return samples, jl.overoptimization(samples, SAMPLE_GRID, bootstrap=16, key=jax.random.PRNGKey(1), same_kl=True,
                                        bias_correction=False)


def test_peak_matches_a_dense_grid_search_on_samples(sample_result):
    samples, res = sample_result
    pk = res.peak
    assert int(pk.status) == proxy.PEAK_FOUND and bool(pk.converged)
    dense = np.geomspace(20, 0.02, 4001)
    r, s = np.asarray(samples.rewards), np.asarray(samples.scores)
    u = np.full(r.shape, 1 / r.shape[1])
    gain = _dense_gain(r, s, u, dense).mean(axis=0)
    k = int(np.argmax(gain))
    assert abs(np.log(float(pk.beta) / dense[k])) <= np.log(dense[0] / dense[1])
    assert float(pk.gold_gain) >= gain[k] - 1e-12
    # the curve is the proxy gap on the decreasing grid: KL increases along it
    assert np.all(np.diff(np.asarray(res.curve.kl_proxy_aligned)) > 0)
    np.testing.assert_allclose(res.curve.gold_gain_proxy_aligned, _dense_gain(r, s, u, SAMPLE_GRID).mean(axis=0),
                               atol=1e-12)
    # the bootstrap runs the jit-compiled search per replicate
    assert 0.5 <= float(pk.found_share) <= 1.0
    assert 0 < float(pk.kl_se) < float(pk.kl)
    # at equal KL the proxy never beats the gold frontier (one shared beta is optimal for the
    # pooled objective, MATH.md §6, and the proxy-aligned policies are feasible at their KL)
    assert np.all(np.asarray(res.shortfall) >= -1e-9)
    gain_s, kl_s = _dense_gain(s, s, u, np.geomspace(200, 0.005, 8001), with_kl=True)
    gain_s, kl_s = gain_s.mean(axis=0), kl_s.mean(axis=0)
    kl_r = np.asarray(res.curve.kl_proxy_aligned)
    inside = kl_r < kl_s.max() * 0.99
    assert inside.sum() >= 5
    # linear interpolation of the dense curve: its error is 3e-8 on this grid (1.2e-7 at 4001
    # points, 1e-8 at 16001: second order), so 1e-6 leaves room only for that
    np.testing.assert_allclose(np.asarray(res.gold_frontier)[inside], np.interp(kl_r[inside], kl_s, gain_s),
                               atol=1e-6)
    # bounds on samples, per prompt
    g = res.curve.prompts
    assert np.all(np.abs(np.asarray(g.gap)) <= np.asarray(g.gold_range)[:, None] + 1e-12)


@pytest.mark.slow
def test_peak_is_differentiable_by_the_implicit_function_theorem():
    """d beta*/d a and d G*/d a (a: the proxy's weight on the spurious feature) against central differences.

    Forward mode through ``custom_root`` (the implicit function theorem, not the iterations). At the
    peak dG/dbeta = 0, so dG*/da is the partial derivative at fixed beta* (envelope theorem), which
    the final differentiable evaluation at beta* carries.
    """
    r0, s, p = _spurious_law(a=0.0)
    f = np.tile([0.0, 1.0], 11)

    def peak(a):
        law = jl.Samples((r0 + a * f)[None], scores=[s], log_weights=[np.log(p)], mask=np.ones((1, 22), bool),
                         exact=True)
        pk = jl.overoptimization_peak(law, GRID)
        return pk.beta, pk.gold_gain

    a0, h = 0.5, 1e-5
    _, (db, dg) = jax.jvp(peak, (a0,), (1.0,))
    (bp, gp), (bm, gm) = peak(a0 + h), peak(a0 - h)
    # central differences: truncation ~ h^2 = 1e-10 relative, rounding ~ eps / h ~ 1e-11
    assert float(db) == pytest.approx((float(bp) - float(bm)) / (2 * h), rel=1e-6)
    assert float(dg) == pytest.approx((float(gp) - float(gm)) / (2 * h), rel=1e-6)


# -- the bias-corrected curve and peak ------------------------------------------------------------


def _quadratic_gold(num_prompts, n, seed, a=1.0):
    """Proxy ``r ~ N(0, 1)``, gold ``s = r - a r^2``: along the proxy tilt ``pi^r = N(lambda, 1)``,
    ``E[s] = lambda - a (1 + lambda^2)``, so the gold gain is ``lambda - a lambda^2``, largest at
    ``lambda* = 1/(2a)``: ``beta* = 2a``, ``KL* = lambda*^2 / 2``, gain ``1/(4a)`` (closed forms)."""
    r = np.random.default_rng(seed).standard_normal((num_prompts, n))
    return jl.Samples(r, scores=r - a * r * r)


def test_corrected_estimates_and_slope_are_the_kernels_and_autodiffs():
    """The peak's direct formulas (MATH.md §3b) against jl.tilt's corrected estimates, and the
    corrected slope against jax.grad of the corrected gain, with counts, weights and a mask."""
    import importlib

    peak = importlib.import_module("jaxlimits.peak")
    rng = np.random.default_rng(1)
    r = rng.standard_normal((3, 40))
    smp = jl.Samples(r, scores=r - 0.5 * r * r + 0.3 * rng.standard_normal((3, 40)),
                     counts=rng.integers(1, 4, (3, 40)).astype(float), log_weights=0.3 * rng.standard_normal((3, 40)),
                     mask=rng.random((3, 40)) > 0.2)
    betas = np.array([3.0, 0.7])
    st = jl.tilt(smp, betas)
    at = peak._direct_tilt(smp, True)
    for b, beta in enumerate(betas):
        d = at(jnp.asarray(beta))
        # the kernel's bias terms at lambda R <= 1 come from its small-tilt series (truncation ~1e-9
        # of the bias, ~0.005 here); at beta = 0.7 from the tilted sums, to rounding
        tol = 1e-10 if beta == 3.0 else 1e-14
        assert float(d["gain"]) == pytest.approx(float(jnp.mean(st.gain[:, b])), abs=tol)
        assert float(d["kl"]) == pytest.approx(float(jnp.mean(st.kl[:, b])), abs=tol)
        # Theorem 1 between the corrected estimates: the proxy's gain is beta (KL + reverse KL)
        assert float(d["proxy_gain"]) == pytest.approx(float(jnp.mean(beta * st.jeffreys[:, b])), abs=tol)
        grad = jax.grad(lambda lam: at(1 / lam)["gain"])(1 / beta)
        assert float(d["slope"]) == pytest.approx(float(grad), rel=1e-12, abs=1e-15)
        plug = peak._direct_tilt(smp, False)(jnp.asarray(beta))
        assert float(plug["gain"] - d["gain"]) == pytest.approx(float(jnp.mean(st.gain_bias[:, b])), abs=tol)
        assert float(plug["slope"]) == pytest.approx(float(jnp.mean(st.cov_sr[:, b])), abs=1e-14)


def test_corrected_peak_moves_toward_the_truth():
    """Simulation against the closed form of _quadratic_gold (beta* = 2): 32 draws per prompt, 200
    prompts pooled, 6 fixed seeds. The plug-in's peak is biased (low in beta, high in KL: order
    1/ESS per prompt, which pooling does not average out); the corrected one is not, to within
    3 Monte Carlo SEs of the mean over seeds (the SD over seeds / sqrt(6)), and is closer."""
    grid = np.geomspace(8, 0.5, 13)
    truth = np.array([2.0, 0.125, 0.25])  # beta*, KL*, gold gain at the peak
    got = {True: [], False: []}
    for seed in range(6):
        smp = _quadratic_gold(200, 32, seed)
        for correct in (True, False):
            pk = jl.overoptimization_peak(smp, grid, bias_correction=correct)
            assert int(pk.status) == proxy.PEAK_FOUND and bool(pk.converged)
            got[correct].append([float(pk.beta), float(pk.kl), float(pk.gold_gain)])
    mean = {c: np.mean(got[c], axis=0) for c in got}
    mc_se = {c: np.std(got[c], axis=0, ddof=1) / np.sqrt(6) for c in got}
    assert mean[False][0] < truth[0] - 3 * mc_se[False][0]  # the plug-in is biased here (measured: 1.80 +- 0.05)
    assert mean[False][1] > truth[1] + 3 * mc_se[False][1]  # (KL 0.147 +- 0.007)
    assert np.all(np.abs(mean[True] - truth) <= 3 * mc_se[True])  # (measured: beta 1.95 +- 0.06, KL 0.132)
    assert np.all(np.abs(mean[True] - truth) < np.abs(mean[False] - truth))
    # the trust rule at the peak is the one kernel's, pooled (jl.frontier's at that beta)
    beta = float(pk.beta)
    assert int(pk.reasons) == int(jl.frontier(smp, [beta]).reasons[0])
    assert int(pk.reasons) & jl.estimators.TAIL and bool(pk.saturated)  # normal rewards, N = 32: k-hat flags it


def test_corrected_peak_on_an_exact_law_is_the_plugin():
    """An exact law has no sampling bias: the corrected peak is the plug-in one, bit for bit, and trusted."""
    r, s, p = _spurious_law()
    law = jl.Samples.from_law([r], [p], scores=[s])
    pk, plug = jl.overoptimization_peak(law, GRID), jl.overoptimization_peak(law, GRID, bias_correction=False)
    for name in ("beta", "kl", "gold_gain", "proxy_gain", "status", "reasons"):
        assert np.asarray(getattr(pk, name)) == np.asarray(getattr(plug, name)), name
    assert int(pk.reasons) == 0


def test_frontier_at_least_keeps_the_shortfall_non_negative():
    from jaxlimits.peak import frontier_at_least

    f = frontier_at_least(jnp.array([0.3, 0.1, jnp.nan, 0.2]), jnp.array([0.2, 0.15, 0.1, jnp.nan]))
    np.testing.assert_array_equal(np.asarray(f), [0.3, 0.15, np.nan, np.nan])


# -- Bradley-Terry blind spot ------------------------------------------------------------------


def test_bt_blind_spot():
    rng = np.random.default_rng(5)
    s = rng.normal(size=(3, 30))
    r = s + 0.5 * rng.normal(size=(3, 30))
    cluster = rng.random((3, 30)) < 0.4
    shifts = np.array([-4.0, -1.0, 0.0, 0.5, 2.0, 6.0])
    bs = jl.bt_blind_spot(jl.Samples(r, scores=s), shifts, BETAS, cluster=cluster)
    # within-cluster likelihood: unchanged; brute force over pairs of distinct draws
    def bt(rr, same):
        tot, w = 0.0, 0.0
        for x in range(3):
            for i in range(30):
                for j in range(30):
                    if i != j and (cluster[x, i] == cluster[x, j]) == same:
                        q = 1 / (1 + np.exp(-(s[x, i] - s[x, j])))
                        tot += q * -np.log1p(np.exp(-(rr[x, i] - rr[x, j])))
                        w += 1
        return 2 * tot / w

    np.testing.assert_allclose(bs.bt_within, bt(r, True), rtol=1e-12)
    assert float(bs.bt_across[0]) == pytest.approx(bt(r - 4.0 * cluster, False), rel=1e-12)
    assert float(np.ptp(np.asarray(bs.bt_across))) > 0.1  # only across-cluster comparisons see c
    # the residual is the convex quadratic in c
    d = s - r
    mass = np.mean(cluster, axis=1)
    inner = np.mean(d * cluster, axis=1)
    quad = np.mean(np.mean(d**2, axis=1)[None] - 2 * shifts[:, None] * inner[None] + shifts[:, None] ** 2 * mass[None],
                   axis=1)
    np.testing.assert_allclose(np.asarray(bs.residual_norm) ** 2, quad, rtol=1e-12)
    assert float(bs.residual_min_shift) == pytest.approx(np.mean(inner) / np.mean(mass), rel=1e-12)
    # the gap at c = 0 is the proxy gap; bounded by the range of gold at every c
    g0 = jl.proxy_gap(jl.Samples(r, scores=s), BETAS)
    np.testing.assert_allclose(bs.gap[2], g0.gap, atol=1e-13)
    assert np.all(np.abs(np.asarray(bs.gap)) <= np.mean(np.ptp(s, axis=1)) + 1e-12)


# -- figure and command line -------------------------------------------------------------------


def test_overoptimization_figure(sample_result, tmp_path):
    _, res = sample_result
    path = tmp_path / "curve.png"
    fig = proxy.overoptimization_figure(res, path, title="spurious feature")
    assert path.stat().st_size > 10_000
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("peak: KL") for lab in labels)
    beyond = np.asarray(res.frontier_status) == int(Status.KL_AT_OR_ABOVE_CEILING)
    assert any(lab.startswith("gold frontier cap") for lab in labels) == bool(beyond.any())
    # onto a caller's axes
    from matplotlib.figure import Figure

    other = Figure()
    ax = other.add_subplot()
    assert proxy.overoptimization_figure(res, ax=ax) is other


def _write_jsonl(path, samples, extra=None):
    r, s = np.asarray(samples.rewards), np.asarray(samples.scores)
    with open(path, "w") as fh:
        for x in range(r.shape[0]):
            for i in range(r.shape[1]):
                row = {"prompt_id": x, "rm": float(r[x, i]), "gold": float(s[x, i])}
                if extra is not None:
                    row.update({k: float(v[x, i]) for k, v in extra.items()})
                fh.write(json.dumps(row) + "\n")


def test_cli_proxy_prints_the_table_peak_and_plot(sample_result, tmp_path, capsys):
    samples, res = sample_result
    path = tmp_path / "data.jsonl"
    _write_jsonl(path, samples)
    out, png = tmp_path / "out.json", tmp_path / "curve.png"
    betas = [str(b) for b in SAMPLE_GRID]
    code = main(["proxy", str(path), "--proxy", "rm", "--gold", "gold", "--x64", "--betas", *betas,
                 "--out", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "over-optimisation peak: beta" in text and "gold gain (proxy-aligned)" in text
    doc = json.loads(out.read_text())
    from jaxlimits.estimators import reason_names

    # the command reports the bias-corrected peak (the fixture is the plug-in's) and its trust rule
    pk = jl.overoptimization_peak(samples, SAMPLE_GRID)
    assert doc["meta"]["peak"]["beta"] == pytest.approx(float(pk.beta), rel=1e-9)
    assert doc["meta"]["peak"]["reasons"] == reason_names(int(pk.reasons))
    assert float(pk.beta) != float(res.peak.beta)
    assert all(r["shortfall"] >= 0 for r in doc["rows"])  # the corrected frontier is at least the curve
    assert len(doc["rows"]) == len(SAMPLE_GRID) and png.stat().st_size > 10_000
    # refuses to overwrite, names a missing column
    assert main(["proxy", str(path), "--proxy", "rm", "--gold", "gold", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["proxy", str(path), "--proxy", "nope", "--gold", "gold"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


# -- real data -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.data
def test_gsm8k_base_samples_end_to_end(tmp_path, capsys):
    """GSM8K base samples: ``rm_logit`` proxy, exact-match ``correct`` gold (200 prompts x 4)."""
    path = data_file("gsm8k_qwen25_05b_base_200x4.jsonl")
    out, png = tmp_path / "gsm8k.json", tmp_path / "gsm8k.png"
    code = main(["proxy", str(path), "--proxy", "rm_logit", "--gold", "correct", "--x64", "--num-betas", "24",
                 "--same-kl", "--out", str(out), "--plot", str(png)])
    text = capsys.readouterr().out
    assert code == 0, text
    print(text)
    doc = json.loads(out.read_text())
    rows, peak = doc["rows"], doc["meta"]["peak"]
    assert peak["status"] in proxy.PEAK_NAMES.values()  # the name, not the code
    kl = np.array([r["kl_proxy_aligned"] for r in rows])
    assert np.all(np.diff(kl) > 0) and kl[-1] < np.log(4)  # 4 samples: KL cannot exceed log 4
    gap = np.array([r["gap"] for r in rows])
    assert np.all(np.abs(gap) <= 1.0)  # gold is 0/1: |gap| <= range of gold
    assert all(r["saturated"] for r in rows)  # 4 samples per prompt never reach ESS 200
    assert all(r["shortfall"] >= -1e-9 for r in rows)  # at equal KL the proxy never beats gold
    assert png.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.data
def test_alpacafarm_gold_versus_four_proxies_end_to_end(tmp_path, capsys):
    path = data_file("alpacafarm_gold_vs_proxies_1000x2.jsonl")
    out = tmp_path / "alpaca.json"
    code = main(["proxy", str(path), "--proxy", "rm", "mrm", "mrm_sft_based", "rm_center", "--gold", "gold",
                 "--calibrate", "moments", "--x64", "--num-betas", "16", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    print(text)
    doc = json.loads(out.read_text())
    ens = doc["meta"]["ensemble"]
    assert set(ens["members"]) == {"member rm", "member mrm", "member mrm_sft_based", "member rm_center",
                                   "mean", "median", "min", "mean_minus_std"}
    rates = ens["rates"]
    assert np.isfinite(rates["residual_rate"]) and rates["residual_rate_se"] > 0
    assert rates["noise_var"] > 0
    kl = np.array([r["kl_proxy_aligned"] for r in doc["rows"]])
    assert kl[-1] < np.log(2)  # two samples per prompt


def _peak(status, reasons=0):
    from jaxlimits.peak import Peak

    return Peak(beta=np.float64(0.5), kl=np.float64(1.2), gold_gain=np.float64(0.3), gold_gain_se=np.float64(0.01),
                proxy_gain=np.float64(0.9), status=np.int32(status), converged=np.bool_(status == 0),
                iterations=np.int32(4 if status == 0 else 0), saturated=np.bool_(reasons != 0),
                beta_se=np.float64(np.nan), kl_se=np.float64(np.nan), found_share=np.float64(0.0),
                reasons=np.int32(reasons))


def test_peak_dict_names_the_status_and_withholds_a_peak_not_found():
    from jaxlimits.cli._common import plain
    from jaxlimits.cli.proxy import peak_dict
    from jaxlimits.estimators import TAIL, reason_names

    found = plain(peak_dict(_peak(int(proxy.PEAK_FOUND), TAIL)))
    assert found["status"] == "PEAK_FOUND" and found["message"] == "peak found"
    assert found["beta"] == 0.5 and found["kl"] == 1.2 and found["gold_gain"] == 0.3 and "grid_end" not in found
    assert found["reasons"] == reason_names(TAIL) == "tail" and found["saturated"] is True
    assert found["beta_se"] is None  # no bootstrap: NaN is null, not a number
    for code in (proxy.PEAK_BEYOND_GRID, proxy.PEAK_AT_START, proxy.PEAK_FLAT, proxy.PEAK_NOT_BRACKETED):
        none = plain(peak_dict(_peak(int(code), TAIL)))
        assert none["status"] == code.name and none["message"] == code.message
        for k in ("beta", "kl", "gold_gain", "gold_gain_se", "proxy_gain", "beta_se", "kl_se"):
            assert none[k] is None, (code.name, k)
        assert none["saturated"] is None and none["reasons"] is None  # no peak, no trust rule of one
        assert none["grid_end"] == {"beta": 0.5, "kl": 1.2, "gold_gain": 0.3, "saturated": True, "reasons": "tail"}
        json.dumps(none, allow_nan=False)


def _tiny_result(reasons, se, peak_reasons):
    """A five-point over-optimisation result built by hand (no solve): gold rises then falls with KL."""
    from jaxlimits.gap import ProxyGap
    from jaxlimits.peak import Overoptimization

    n = len(reasons)
    kl = np.linspace(0.1, 2.0, n)
    g = kl * (2.0 - kl)
    z = np.zeros(n)
    reasons = np.asarray(reasons, np.int32)
    curve = ProxyGap(betas=np.geomspace(4, 0.25, n), gold_gain_gold_aligned=g + 0.1, gold_gain_gold_aligned_se=z + 0.01,
                     gold_gain_proxy_aligned=g, gold_gain_proxy_aligned_se=np.asarray(se, float), proxy_gain=2 * kl,
                     gap=z + 0.1, gap_se=z + 0.01, kl_proxy_aligned=kl, kl_proxy_aligned_se=z + 0.01,
                     kl_gold_aligned=kl, ratio=z, saturated_share=z, saturated=reasons != 0,
                     residual_norm=np.float64(1.0), centred_residual_norm=np.float64(1.0), prompts=None,
                     reasons=reasons)
    return Overoptimization(curve, _peak(int(proxy.PEAK_FOUND), peak_reasons))


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_overoptimization_figure_names_what_is_flagged():
    from jaxlimits.estimators import BIAS, FEW, TAIL

    se = [0.01, 0.01, np.nan, 0.02, 0.02]
    fig = proxy.overoptimization_figure(_tiny_result([0, 0, 0, TAIL, TAIL | BIAS], se, TAIL | FEW))
    labels = _legend(fig)
    assert not any("saturated" in lab for lab in labels)  # the old fixed label, whatever the reasons
    # the flagged points' actual reasons, and the point without an SE (no band), on the dashed curve
    assert "gold gain, aligned to proxy: not trustworthy (bias, tail, no SE)" in labels
    assert "no SE: precision unknown (no band)" in labels
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    solid = np.asarray(lines["gold gain, aligned to proxy"].get_ydata(), float)
    assert np.isfinite(solid).tolist() == [True, True, False, False, False]
    # a flagged peak: a hollow star with its reasons
    star = lines["peak: KL 1.2, beta 0.5, not trustworthy (tail, few)"]
    assert star.get_marker() == "*" and star.get_markerfacecolor() == "none"
    # a trusted curve and peak: one solid curve, a filled star, nothing flagged
    fig = proxy.overoptimization_figure(_tiny_result([0] * 5, [0.01] * 5, 0))
    labels = _legend(fig)
    assert not any("trustworthy" in lab or "SE" in lab for lab in labels)
    star = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}["peak: KL 1.2, beta 0.5"]
    assert star.get_markerfacecolor() != "none"


def test_peak_repr_names_its_reasons_and_a_grid_end():
    from jaxlimits.estimators import CEILING, TAIL
    from jaxlimits.peak import Peak

    assert repr(_peak(int(proxy.PEAK_FOUND), TAIL | CEILING)) == \
        "Peak(PEAK_FOUND; beta 0.5; KL 1.2; gold gain 0.3; flagged (tail, ceiling))"
    assert repr(_peak(int(proxy.PEAK_FOUND))) == "Peak(PEAK_FOUND; beta 0.5; KL 1.2; gold gain 0.3)"
    # no peak: the values are the grid end that bounds it
    assert repr(_peak(int(proxy.PEAK_AT_START))) == "Peak(PEAK_AT_START; grid end beta 0.5; KL 1.2; gold gain 0.3)"
    # a batch of peaks (vmap) names every status and the union of the reasons
    batch = Peak(*[np.stack([a, b]) for a, b in zip(_peak(int(proxy.PEAK_FOUND), TAIL),
                                                      _peak(int(proxy.PEAK_FLAT), CEILING))])
    assert repr(batch).startswith("Peak[2](PEAK_FLAT/PEAK_FOUND; beta ")
    assert repr(batch).endswith("; flagged (tail, ceiling))")
