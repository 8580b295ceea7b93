"""The tail model's bootstrap body sums (``jaxlimits.tail._body_resampled``, contractions of the Poisson
weights with exponentials computed once) against the direct formula (``_body`` with the weights, replicate
by replicate: what every replicate computed before), including replicates that underflow in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlimits import tail

P, N = 3, 64


def _case(dtype):
    rng = np.random.default_rng(7)
    r = rng.exponential(size=(P, N)) * 10  # gaps of 1-10 near the top: lam x far below -87 at beta 1e-3
    n = np.array([N, N, 50])
    r[2, 50:] = -np.inf  # a ragged prompt
    srt = -np.sort(-r, axis=1)
    m = np.array([[5, 12], [3, 20], [12, 5]], float)
    lam = 1 / np.array([1e-3, 0.05, 1.0, 100.0])
    w = rng.poisson(1.0, size=(10, P, N)).astype(float)
    w[0] = 1  # the plain sample
    w[1, :, :24] = np.where(np.arange(24) < 3, 0, w[1, :, :24])  # the top 3 dropped: past the threshold too
    w[2:4, :, :m.max().astype(int) + tail._HEAD] = 0  # every head dropped: the rest underflows, the exact path
    w[4] = 0  # nothing kept: A0 = -inf
    w[5, :, np.arange(N) % 7 != 0] = 0  # a sparse replicate
    as_j = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return as_j(srt), as_j(n), as_j(m), as_j(lam), as_j(w)


def _direct(srt, n, m, lam, w):
    return jax.vmap(lambda v: tail._body(srt, n, m, lam, v)[1:])(w)


def _check(got, want, dtype, scale):
    rtol = 2e-5 if dtype == np.float32 else 1e-11
    for g, e, name in zip(got, want, ("A0", "A1", "S0")):
        g, e = np.asarray(g), np.asarray(e)
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(e), err_msg=name)
        np.testing.assert_array_equal(g[~np.isfinite(g)], e[~np.isfinite(e)], err_msg=name)
        f = np.isfinite(e)
        atol = rtol * (scale if name != "A0" else 1.0)  # A1, S0: rewards; A0: nats
        np.testing.assert_allclose(g[f], e[f], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resampled_body_equals_direct_formula(dtype):
    srt, n, m, lam, w = _case(dtype)
    scale = float(np.nanmax(np.where(np.isfinite(srt), srt, np.nan)))
    for mm in (m, jnp.zeros((P, 1), dtype)):  # the thresholds, then the whole sample (the empirical law)
        tiles = jax.jit(tail._body_tiles)(srt, n, mm, lam)
        got = jax.jit(tail._body_resampled)(srt, n, mm, lam, tiles, w)
        want = _direct(srt, n, mm, lam, w)
        _check(got, want, dtype, scale)
        bad = np.asarray(jax.jit(tail._body_replicates)(tiles, n, lam, w)[3])
        assert not bad[[0, 1, 5]].any()  # a kept head draw: never the exact path
        assert bad[4].all()
        if dtype == np.float32:
            assert bad[2:4].any()  # the rest underflowed: exact there
            # the top three dropped: e^(lam x) of every kept draw underflows in float32 at beta 1e-3,
            # where the head's log-sum-exp keeps A0 exact
            naive = np.einsum("pn,ptbn->ptb", np.asarray(w[1]), np.asarray(jnp.where(
                (jnp.arange(N) >= mm[..., None])[..., None, :], jnp.exp(lam[:, None] * tiles.x[..., None, :]), 0)))
            assert (naive[..., 0] == 0).any() and np.isfinite(np.asarray(got[0])[1, ..., 0]).all()


@pytest.mark.parametrize("reps", [50, 23])
def test_replicates_draw_the_same_weights(reps):
    """``_tail_core``'s chunked replicates (50: 25 chunks of 2; 23: 6 of 4, the last padded) resample the body
    with the Poisson weights each replicate's key drew before: its body-only deviations equal the direct
    formula's. The shapes of tests/test_tail.py (8 prompts x 256 draws, 4 betas, 50 replicates)."""
    p, n_draws = 8, 256
    r = np.random.default_rng(11).normal(size=(p, n_draws))
    r[1] = np.round(r[1] * 2) / 2  # tied top rewards: no fit, the empirical law
    srt = jnp.asarray(-np.sort(-r, axis=1))
    n = jnp.full(p, float(n_draws))
    m = tail.tail_sizes(np.full(p, n_draws))
    lam = jnp.asarray(1 / np.array([0.01, 0.1, 1.0, 10.0]))
    key = jax.random.PRNGKey(4)
    chi = jnp.ones(m.shape)
    (_, fit), (gain, kl, *_), _, out, _ = tail._tail_core(srt, n, jnp.asarray(m, float), lam, key, chi, reps,
                                                           int(m.max()), 0.95)
    failed = jnp.isnan(fit.xi)[..., None]
    mm, zero = jnp.asarray(m, float), jnp.zeros((p, 1))

    def direct(k):
        w = jax.random.poisson(jax.random.split(k)[1], 1.0, srt.shape).astype(float)
        _, a0, a1, s0 = tail._body(srt, n, mm, lam, w)
        _, e0, e1, es = tail._body(srt, n, zero, lam, w)
        g, kk = tail._curve(a0, a1, s0, mm / n[:, None], fit.xi, fit.sigma, lam)[:2]
        ge, ke = tail._curve(e0, e1, es, zero, zero - 1, zero + 1, lam)[:2]
        return jnp.where(failed, ge, g) - gain, jnp.where(failed, ke, kk) - kl

    want = jax.jit(jax.vmap(direct))(jax.random.split(key, reps))
    assert np.asarray(failed).any()
    for got, exp in zip(out[10:12], want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(exp), rtol=1e-9, atol=1e-11)
