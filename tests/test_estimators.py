"""The tilted statistics against exact answers: finite laws, closed forms, identities, invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _exact import tilted as exact_tilted
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

import jaxlimits as jl

FIELDS = ("log_z", "gain", "kl", "reverse_kl", "jeffreys", "mean_r", "var_r", "cov_sr", "ess")
SE_FIELDS = ("gain_se", "kl_se", "reverse_kl_se")
# The small-tilt series truncates the standard errors' influence series at K_SE = 10 orders:
# relative error below 1e-6 at lambda * R = 1 (and far smaller elsewhere).
SE_RTOL = 2e-6


def check(st_, p, b, exact, fields, rtol, atol=0.0):
    for name in fields:
        got = float(getattr(st_, name)[p, b])
        want = exact[name]
        assert abs(got - want) <= rtol * abs(want) + atol, f"{name} at prompt {p} beta-index {b}: {got} vs {want}"


BETAS = np.array([0.02, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0])


def test_exact_categorical_law_matches_exact_sums():
    """A categorical base law (values + log-probabilities) makes every estimator exact (MATH.md §10)."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 5)) * [[1.0], [3.0], [0.2]]
    probs = rng.dirichlet(np.ones(5), size=3)
    law = jl.Samples.from_law(values, probs)
    st_ = jl.tilt(law, BETAS)
    for p in range(3):
        for b, beta in enumerate(BETAS):
            check(st_, p, b, exact_tilted(values[p], probs[p], beta), FIELDS, 1e-10, atol=1e-300)
    np.testing.assert_array_equal(st_.gain_se, 0.0)
    assert not np.asarray(st_.saturated).any()


@pytest.mark.parametrize("kind", ["plain", "scores", "counts", "weights", "all"])
def test_samples_match_exact_sums_with_standard_errors(kind):
    """Values, ESS and delta-method standard errors of samples with scores, counts and weights."""
    rng = np.random.default_rng(1)
    p_, n = 3, 23
    r = rng.normal(size=(p_, n)) * 2 + 5
    s = r + rng.normal(size=(p_, n)) if kind in ("scores", "all") else None
    lw = rng.normal(size=(p_, n)) * 2 if kind in ("weights", "all") else None
    c = rng.integers(1, 4, size=(p_, n)).astype(float) if kind in ("counts", "all") else None
    samples = jl.Samples(r, scores=s, log_weights=lw, counts=c)
    st_ = jl.tilt(samples, BETAS, bias_correction=False)  # the plug-in estimator is the exact sum
    for p in range(p_):
        w = np.exp(lw[p]) if lw is not None else np.ones(n)
        for b, beta in enumerate(BETAS):
            ex = exact_tilted(r[p], w, beta, scores=None if s is None else s[p], counts=None if c is None else c[p])
            check(st_, p, b, ex, FIELDS, 1e-10)
            check(st_, p, b, ex, SE_FIELDS, SE_RTOL)


def test_bernoulli_closed_form_exact_law():
    p, betas = 0.3, np.array([0.2, 0.5, 1.0, 5.0, 50.0])
    law = jl.Samples.from_law([[0.0, 1.0]], [[1 - p, p]])
    st_ = jl.tilt(law, betas)
    q = p * np.exp(1 / betas) / (1 - p + p * np.exp(1 / betas))
    np.testing.assert_allclose(st_.gain[0], q - p, rtol=1e-12)
    kl = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
    np.testing.assert_allclose(st_.kl[0], kl, rtol=1e-11)
    np.testing.assert_allclose(st_.log_z[0], np.log(1 - p + p * np.exp(1 / betas)), rtol=1e-12)


def within(est, se, truth, z=4.0):
    """|est - truth| <= z * se, elementwise (z = 4: a fixed-seed test that fails by chance with p ~ 6e-5)."""
    est, se = np.asarray(est), np.asarray(se)
    bad = np.abs(est - truth) > z * se
    assert not bad.any(), f"estimate {est[bad]} vs truth {np.asarray(truth)[bad]} (se {se[bad]})"


def pooled(st_):
    """Mean over prompts and its standard error (independent prompts)."""
    n = st_.gain.shape[0]
    return (
        np.asarray(st_.gain).mean(0), np.sqrt((np.asarray(st_.gain_se) ** 2).sum(0)) / n,
        np.asarray(st_.kl).mean(0), np.sqrt((np.asarray(st_.kl_se) ** 2).sum(0)) / n,
    )


def test_gaussian_closed_form_within_standard_errors():
    """N(mu, sigma^2): gain sigma^2/beta, KL sigma^2/(2 beta^2) (MATH.md §10)."""
    rng = np.random.default_rng(2)
    sigma, betas = 2.0, np.array([4.0, 8.0, 16.0, 40.0])
    r = 7.0 + sigma * rng.standard_normal((64, 2048))
    st_ = jl.tilt(jl.Samples(r), betas)
    assert not np.asarray(st_.saturated).any()
    g, gse, k, kse = pooled(st_)
    within(g, gse, sigma**2 / betas)
    within(k, kse, sigma**2 / (2 * betas**2))


def test_exponential_closed_form_within_standard_errors():
    """Exp(1), beta > 1: gain 1/(beta-1), KL 1/(beta-1) + log(1 - 1/beta) (MATH.md §10)."""
    rng = np.random.default_rng(3)
    betas = np.array([4.0, 8.0, 16.0])
    r = rng.exponential(size=(64, 4096))
    g, gse, k, kse = pooled(jl.tilt(jl.Samples(r), betas))
    within(g, gse, 1 / (betas - 1))
    within(k, kse, 1 / (betas - 1) + np.log1p(-1 / betas))


def test_bernoulli_samples_within_standard_errors():
    rng = np.random.default_rng(4)
    p, betas = 0.3, np.array([1.0, 2.0, 5.0])
    r = (rng.uniform(size=(64, 2048)) < p).astype(float)
    q = p * np.exp(1 / betas) / (1 - p + p * np.exp(1 / betas))
    g, gse, k, kse = pooled(jl.tilt(jl.Samples(r), betas))
    within(g, gse, q - p)
    within(k, kse, q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p)))


def test_jeffreys_identity_on_samples():
    """Theorem 1 holds on samples: gain(s = r) == beta * (kl + reverse_kl)."""
    rng = np.random.default_rng(5)
    r = rng.gamma(2.0, size=(5, 300))
    betas = np.geomspace(0.01, 100, 17)
    st_ = jl.tilt(jl.Samples(r, counts=rng.integers(1, 3, size=r.shape)), betas)
    np.testing.assert_allclose(st_.gain, betas * (np.asarray(st_.kl) + np.asarray(st_.reverse_kl)), rtol=1e-12)
    np.testing.assert_allclose(st_.jeffreys, np.asarray(st_.kl) + np.asarray(st_.reverse_kl), rtol=1e-12)


def test_kl_bounded_by_log_n_and_ceiling():
    rng = np.random.default_rng(6)
    r = np.round(rng.normal(size=(4, 64)), 1)  # ties
    # a property of the plug-in estimate (the bias-corrected one may pass the ceiling, and is flagged there)
    st_ = jl.tilt(jl.Samples(r), np.geomspace(1e-4, 1e3, 30), bias_correction=False)
    kl = np.asarray(st_.kl)
    ceiling = np.asarray(st_.kl_ceiling)
    assert (kl >= -1e-12).all()
    assert (kl <= ceiling[:, None] + 1e-9).all()
    assert (ceiling <= np.log(64) + 1e-12).all()
    top = (r == r.max(1, keepdims=True)).sum(1)
    np.testing.assert_allclose(ceiling, np.log(64 / top), rtol=1e-12)
    np.testing.assert_allclose(kl[:, 0], ceiling, rtol=1e-6)  # beta -> 0: the ceiling
    assert np.asarray(st_.saturated)[:, 0].all()


# -- properties (hypothesis) ---------------------------------------------------------------------

rewards_strategy = st.lists(
    st.floats(-5, 5, allow_nan=False, allow_subnormal=False), min_size=2, max_size=12
).filter(lambda x: max(x) - min(x) > 1e-3)
betas_strategy = st.lists(st.floats(0.05, 50), min_size=1, max_size=4)


WIDTH, NB = 64, 4  # fixed shapes: one compilation serves every example


def _stats(r, betas, **kw):
    """Statistics of one prompt, padded to fixed shapes (mask) so hypothesis does not recompile."""
    n = len(r)
    pad = lambda x: np.concatenate([np.asarray(x, float), np.zeros(WIDTH - n)])[None]  # noqa: E731
    mask = (np.arange(WIDTH) < n)[None]
    b = np.resize(np.asarray(betas, float), NB) if len(betas) <= NB else np.asarray(betas, float)
    st_ = jl.tilt(jl.Samples(pad(r), mask=mask, **{k: pad(v) for k, v in kw.items()}), b)
    return jax.tree.map(lambda a: a[..., : len(betas)] if a.ndim == 2 else a, st_)


@settings(max_examples=25, deadline=None)
@given(rewards_strategy, betas_strategy, st.floats(-100, 100))
def test_shift_invariance(r, betas, c):
    a, b = _stats(r, betas), _stats(list(np.asarray(r) + c), betas)
    np.testing.assert_allclose(a.gain, b.gain, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-8, atol=1e-12)
    s = np.asarray(r) ** 2
    a, b = _stats(r, betas, scores=s), _stats(r, betas, scores=s + c)
    np.testing.assert_allclose(a.gain, b.gain, rtol=1e-8, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(rewards_strategy, betas_strategy, st.floats(0.1, 10))
def test_scaling_rewards_and_beta_together(r, betas, c):
    """The tilted weights depend on r / beta only: KL unchanged, gain scales with the rewards."""
    a, b = _stats(r, betas), _stats(list(np.asarray(r) * c), list(np.asarray(betas) * c))
    np.testing.assert_allclose(b.kl, a.kl, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(b.gain, c * np.asarray(a.gain), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(b.ess, a.ess, rtol=1e-8)


@settings(max_examples=25, deadline=None)
@given(rewards_strategy, betas_strategy, st.randoms(use_true_random=False))
def test_permutation_invariance(r, betas, rnd):
    perm = list(range(len(r)))
    rnd.shuffle(perm)
    a, b = _stats(r, betas), _stats([r[i] for i in perm], betas)
    for name in ("gain", "kl", "reverse_kl", "ess", "gain_se", "kl_se"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(rewards_strategy, betas_strategy, st.lists(st.integers(1, 4), min_size=12, max_size=12))
def test_duplicates_equal_counts(r, betas, counts):
    """Counts are multiplicities: values, standard errors and ESS equal those of the expanded sample."""
    counts = counts[: len(r)]
    expanded = np.repeat(r, counts)
    a = _stats(r, betas, counts=counts)
    b = _stats(list(expanded), betas)
    for name in ("gain", "kl", "reverse_kl", "ess", "gain_se", "kl_se", "reverse_kl_se"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(a.draws, b.draws)


@settings(max_examples=25, deadline=None)
@given(rewards_strategy)
def test_kl_decreases_with_beta_and_is_bounded(r):
    betas = np.geomspace(0.01, 100, 25)
    st_ = _stats(r, betas)
    kl = np.asarray(st_.kl)[0]
    assert (np.diff(kl) <= 1e-12 * np.maximum(kl[:-1], 1e-300) + 1e-15).all()
    assert (kl >= -1e-15).all() and (kl <= np.log(len(r)) + 1e-9).all()


@settings(max_examples=15, deadline=None)
@given(rewards_strategy, rewards_strategy, betas_strategy)
def test_ragged_prompt_equals_prompt_alone(r1, r2, betas):
    rows = [np.concatenate([r, np.full(WIDTH - len(r), np.nan)]) for r in (r1, r2)]  # padding is never read
    mask = np.arange(WIDTH)[None] < np.array([[len(r1)], [len(r2)]])
    b = np.resize(np.asarray(betas, float), NB)
    both = jl.tilt(jl.Samples(np.stack(rows), mask=mask), b)
    for p, r in enumerate((r1, r2)):
        alone = _stats(r, betas)
        for name in ("gain", "kl", "ess", "gain_se"):
            got = getattr(both, name)[p, : len(betas)]
            np.testing.assert_allclose(got, getattr(alone, name)[0], rtol=1e-9, atol=1e-12)


# -- precision ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_float32_matches_float64_over_twelve_decades_of_beta(offset):
    """Relative error of gain and KL at most 1e-3 in float32 for beta from 1e-3 to 1e3 x the reward
    scale, including the large-beta end where KL ~ 1e-7 and the textbook formula cancels (MATH.md §3)."""
    rng = np.random.default_rng(7)
    r = offset + rng.standard_normal((20, 500))
    betas = np.geomspace(1e-3, 1e3, 49)
    s64 = jl.tilt(jl.Samples(r), betas)
    s32 = jl.tilt(jl.Samples(r.astype(np.float32)), betas.astype(np.float32))
    assert s32.kl.dtype == jnp.float32
    for name in ("gain", "kl", "reverse_kl"):
        a, b = np.asarray(getattr(s32, name), np.float64), np.asarray(getattr(s64, name))
        rel = np.abs(a - b) / np.abs(b)
        worst = betas[np.unravel_index(rel.argmax(), rel.shape)[1]]
        assert rel.max() <= 1e-3, f"{name}: {rel.max():.2e} at beta {worst}"
    rel_se = np.abs(np.asarray(s32.kl_se, np.float64) - np.asarray(s64.kl_se)) / np.asarray(s64.kl_se)
    assert rel_se.max() <= 1e-2


def test_textbook_formula_fails_where_tilt_does_not():
    """The cancellation the centred form avoids is real: the naive float32 KL at beta = 1000 is off."""
    rng = np.random.default_rng(8)
    r = rng.standard_normal(500).astype(np.float32)
    beta = np.float32(1000.0)
    lp = r / beta - special.logsumexp(r / beta)
    naive = np.sum(np.exp(lp) * r / beta) - (special.logsumexp(r / beta) - np.log(np.float32(500)))
    exact = float(jl.tilt(jl.Samples(r.astype(np.float64)), [1000.0]).kl[0, 0])
    ours = float(jl.tilt(jl.Samples(r), np.float32([1000.0])).kl[0, 0])
    assert abs(ours - exact) / exact < 1e-4
    assert abs(naive - exact) / exact > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_stay_finite(dtype):
    r = np.array([[1e6, -1e6, 0.0, 3e5], [0.0, 1e-8, 2e-8, 0.0]], dtype=dtype)
    betas = np.array([1e-6, 1e-3, 1.0, 1e6], dtype=dtype)
    st_ = jl.tilt(jl.Samples(r), betas)
    for name in ("log_z", "gain", "kl", "reverse_kl", "ess", "gain_se", "kl_se", "var_r"):
        assert np.isfinite(np.asarray(getattr(st_, name))).all(), name
    assert float(st_.gain[0, 0]) == pytest.approx(1e6 - np.mean(r[0]), rel=1e-5)


def test_log_weights_spanning_hundreds_of_nats_float32():
    """Shifting by max l + max r / beta would underflow every term here (MATH.md §3)."""
    s = jl.Samples(np.float32([[0.0, 100.0]]), log_weights=np.float32([[0.0, -200.0]]))
    st_ = jl.tilt(s, np.float32([0.5]), bias_correction=False)
    assert float(st_.log_z[0, 0]) == pytest.approx(np.log(2.0) - special.logsumexp([0.0, -200.0]), rel=1e-5)


def test_constant_rewards():
    st_ = jl.tilt(jl.Samples(np.full((2, 5), 3.0)), [0.1, 1.0, 10.0])
    np.testing.assert_allclose(st_.gain, 0.0, atol=1e-15)
    np.testing.assert_allclose(st_.kl, 0.0, atol=1e-15)
    np.testing.assert_allclose(st_.ess, 5.0)


# -- gradients (MATH.md §4) -------------------------------------------------------------------------


def test_gradients_with_respect_to_beta():
    rng = np.random.default_rng(9)
    samples = jl.Samples(rng.normal(size=(2, 200)), scores=rng.normal(size=(2, 200)))
    for beta0 in (0.05, 0.7, 3.0, 40.0):  # both regimes of the kernel
        b = jnp.array([beta0])
        st_ = jl.tilt(samples, b, bias_correction=False)  # the closed forms are the plug-in's

        def f(name, bb, p=0):
            return getattr(jl.tilt(samples, bb, bias_correction=False), name)[p, 0]

        for p in range(2):
            d_j = jax.grad(lambda bb, p=p: bb[0] * f("log_z", bb, p))(b)[0]
            np.testing.assert_allclose(d_j, -st_.kl[p, 0], rtol=1e-8)
            d_kl = jax.grad(lambda bb, p=p: f("kl", bb, p))(b)[0]
            np.testing.assert_allclose(d_kl, -st_.var_r[p, 0] / beta0**3, rtol=1e-8)
            d_gain = jax.grad(lambda bb, p=p: f("gain", bb, p))(b)[0]
            np.testing.assert_allclose(d_gain, -st_.cov_sr[p, 0] / beta0**2, rtol=1e-8)


def test_frontier_slope_is_beta():
    """d gain / d KL = beta when s = r (MATH.md §4)."""
    r = jl.Samples(np.random.default_rng(10).gamma(3.0, size=(1, 300)))
    for beta0 in (0.3, 2.0, 20.0):
        g = jax.grad(lambda b: jl.tilt(r, b[None]).gain[0, 0])(jnp.array(beta0))
        k = jax.grad(lambda b: jl.tilt(r, b[None]).kl[0, 0])(jnp.array(beta0))
        np.testing.assert_allclose(g / k, beta0, rtol=1e-8)


def test_gradients_with_respect_to_rewards_check_grads():
    from jax.test_util import check_grads

    r0 = jnp.asarray(np.random.default_rng(11).normal(size=(1, 12)))
    betas = jnp.array([0.4, 30.0])  # one beta in each regime of the kernel
    fn = lambda r: jnp.stack([(st_ := jl.tilt(jl.Samples(r), betas)).gain, st_.kl, st_.log_z])  # noqa: E731
    check_grads(fn, (r0,), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_jit_and_vmap_agree_with_eager():
    rng = np.random.default_rng(12)
    r = rng.normal(size=(3, 4, 50))  # a batch of 3 prompt sets
    betas = jnp.array([0.5, 2.0])
    eager = [np.asarray(jl.tilt(jl.Samples(x), betas).kl) for x in r]
    batched = jax.vmap(lambda x: jl.tilt(jl.Samples(x), betas).kl)(jnp.asarray(r))
    np.testing.assert_allclose(batched, np.stack(eager), rtol=1e-12)
    jitted = jax.jit(lambda x, b: jl.tilt(jl.Samples(x), b).gain)(jnp.asarray(r[0]), betas)
    np.testing.assert_allclose(jitted, jl.tilt(jl.Samples(r[0]), betas).gain, rtol=1e-12)


def test_per_prompt_betas():
    rng = np.random.default_rng(13)
    r = rng.normal(size=(3, 40))
    b = np.array([[0.5, 1.0], [2.0, 4.0], [0.1, 8.0]])
    st_ = jl.tilt(jl.Samples(r), b)
    for p in range(3):
        alone = jl.tilt(jl.Samples(r[p : p + 1]), b[p])
        np.testing.assert_allclose(st_.kl[p], alone.kl[0], rtol=1e-12)


def test_memory_budget_chunks_samples_without_changing_results():
    rng = np.random.default_rng(14)
    samples = jl.Samples(rng.normal(size=(5, 3000)), log_weights=rng.normal(size=(5, 3000)))
    betas = np.geomspace(0.05, 20, 16)
    a = jl.tilt(samples, betas)
    b = jl.tilt(samples, betas, memory_budget=300_000)  # forces chunks of a few hundred samples
    for name in ("gain", "kl", "ess", "gain_se", "kl_se"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-11)


def test_tiles_on_an_accelerator_are_bounded_by_the_budget_not_a_cache(monkeypatch):
    """On a CPU a tile's exponential slab aims at the cache (4 MiB, at most 512 prompts); on a GPU or
    TPU every tile is one sequential step, so the slab takes the budget's share (fewer, larger tiles)
    and working memory stays within the budget either way."""
    from jaxlimits import _sweep

    args = (10_000, 1024, 64, 4)  # prompts, samples, betas, float32
    cpu = _sweep.plan(*args, None)
    assert cpu.tile_prompts * 1024 * 64 * 4 <= 4 * 2**20 and cpu.tile_prompts <= 512
    monkeypatch.setattr(_sweep.jax, "default_backend", lambda: "gpu")
    for budget in (None, 2**30, 4 * 2**30):
        gpu = _sweep.plan(*args, budget)
        cap = _sweep.DEFAULT_MEMORY_BUDGET if budget is None else budget
        assert gpu.tile_prompts > cpu.tile_prompts
        assert _sweep.COPIES * gpu.tile_prompts * 1024 * 64 * 4 <= cap
    assert _sweep.plan(*args, 4 * 2**30).tile_prompts > _sweep.plan(*args, None).tile_prompts
    # a forced size wins everywhere (benchmarks/calibrate_trust.py --tile-bytes)
    monkeypatch.setattr(_sweep, "TILE_BYTES", 2**20)
    assert _sweep.plan(*args, 4 * 2**30).tile_prompts == 2**20 // (1024 * 64 * 4)


def test_tiles_of_the_fused_kernel_hold_no_slab(monkeypatch):
    """Where the fused CPU kernel computes the sums no exponential slab exists: tiles take the budget's
    share of the rows, the finalised fields and the k-hat grid (at most 512 prompts), and a prompt too
    large for the budget is cut into sample chunks; with few betas (the kernel idles) the slab plan stays."""
    from jaxlimits import _sweep, native

    monkeypatch.setattr(native, "runs_for", lambda b: b >= native.MIN_BETAS)
    args = (10_000, 1024, 64, 4)
    slab = _sweep.plan(*args, None)
    fused = _sweep.plan(*args, None, fused=True)
    assert fused.tile_prompts == 512 > slab.tile_prompts
    row = (_sweep.FUSED_SAMPLE_COPIES * 1024 + _sweep.FUSED_BETA_COPIES * 64) * 4
    for budget, extra in ((2**24, 0), (2**24, 10**5), (2**22, 10**5)):
        p = _sweep.plan(*args, budget, fused=True, prompt_bytes=extra)
        assert p.tile_prompts * (row + extra) <= budget < (p.tile_prompts + 1) * (row + extra)
    huge = _sweep.plan(10, 10**7, 64, 4, 2**28, fused=True)
    assert huge.tile_prompts == 1 and _sweep.FUSED_SAMPLE_COPIES * huge.chunk_samples * 4 <= 2**28
    assert huge.padded_samples % huge.chunk_samples == 0
    assert _sweep.plan(10_000, 1024, 8, 4, None, fused=True) == _sweep.plan(10_000, 1024, 8, 4, None)
    monkeypatch.setattr(_sweep, "TILE_BYTES", 2**20)  # a forced size wins here too
    assert _sweep.plan(*args, None, fused=True).tile_prompts == 2**20 // (1024 * 64 * 4)


@pytest.mark.parametrize(
    "betas, message",
    [([1.0, 0.0], r"betas\[1\] = 0.0 is not a positive"), ([-1.0], r"betas\[0\]"), ([np.nan], "positive finite"),
     ([], "non-empty"), (np.ones((3, 2)), "per-prompt betas have 3 rows")],
)
def test_bad_betas_are_named(betas, message):
    with pytest.raises(ValueError, match=message):
        jl.tilt(jl.Samples(np.zeros((2, 3)) + np.arange(3)), betas)


def test_memory_budget_too_small_is_explained():
    with pytest.raises(ValueError, match="memory_budget"):
        jl.tilt(jl.Samples(np.arange(10.0)), np.ones(1000), memory_budget=1000)


def test_derivatives_at_the_switch_between_series_and_tilted_sums():
    """At lambda R = 1 exactly (rewards [-1, 1, 1, -1], beta = 1) the derivatives are whole (MATH.md §4)."""
    samples = jl.Samples(np.array([[-1.0, 1.0, 1.0, -1.0]]))
    b = jnp.array([1.0])
    st_ = jl.tilt(samples, b, bias_correction=False)
    d_gain = jax.grad(lambda bb: jl.tilt(samples, bb, bias_correction=False).gain[0, 0])(b)[0]
    np.testing.assert_allclose(d_gain, -st_.var_r[0, 0] / 1.0**2, rtol=1e-10)
    d_j = jax.grad(lambda bb: bb[0] * jl.tilt(samples, bb, bias_correction=False).log_z[0, 0])(b)[0]
    np.testing.assert_allclose(d_j, -st_.kl[0, 0], rtol=1e-10)
    # and on either side of the switch
    for beta in (1.0 - 1e-6, 1.0 + 1e-6):
        bb = jnp.array([beta])
        g = jax.grad(lambda x: jl.tilt(samples, x, bias_correction=False).gain[0, 0])(bb)[0]
        np.testing.assert_allclose(g, d_gain, rtol=1e-4)


def _dot_precisions(jaxpr):
    """The ``precision`` of every ``dot_general`` in a jaxpr, sub-jaxprs (scan, map, cond, pjit) included."""
    from jax.extend import core

    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, core.ClosedJaxpr):
                    out += _dot_precisions(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    out += _dot_precisions(sub)
    return out


def test_every_contraction_asks_for_full_precision():
    """On GPUs a float32 matmul at the default precision may round to TF32 (10-bit mantissa): the
    kernel's contractions (tilted sums, small-tilt series, SE quadratic forms) all ask for HIGHEST."""
    r = jnp.asarray(np.random.default_rng(0).normal(size=(3, 40)), jnp.float32)
    betas = jnp.asarray([50.0, 2.0, 0.5], jnp.float32)  # the series (small tilt) and the tilted sums
    precisions = _dot_precisions(jax.make_jaxpr(lambda x: jl.tilt(jl.Samples(x, validate=False), betas))(r).jaxpr)
    assert precisions, "no contraction found: the test no longer sees the kernel"
    highest = jax.lax.Precision.HIGHEST
    assert all(p is not None and all(q == highest for q in p) for p in precisions), precisions
