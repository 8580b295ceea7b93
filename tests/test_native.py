"""The fused CPU kernel (jaxlimits/csrc/tilted_sums.cc) against float64 NumPy and the JAX path."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlimits import moments, native

needs_kernel = pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None and not os.environ.get("CXX"),
    reason="no C++ compiler: the JAX path runs (tested everywhere else)",
)

# (scores, log-weights, w1, w2, first_is_second, second): the calls moments.block_sums makes
CALLS = [
    (False, False, True, True, False, True),  # plain samples and counts
    (True, False, True, True, False, True),  # with scores
    (False, True, False, True, False, True),  # importance weights
    (True, True, False, True, False, True),
    (False, True, False, False, True, False),  # their cross sums
    (True, True, False, False, True, False),
]


def _case(rng, batch, n, b, dtype, scores, log_w, w1, w2):
    x = -np.abs(rng.standard_normal(batch + (n,))) * 3
    v = {"x": x, "lam": np.geomspace(0.01, 200, b) * np.ones(batch + (1,))}
    if scores:
        v["y"] = rng.standard_normal(batch + (n,))
    if log_w:
        a = rng.standard_normal(batch + (n,))
        a[..., ::3] = -np.inf  # every third sample counts for nothing
        a[(0,) * len(batch)] = -np.inf  # and one whole row
        v["log_w"] = a
    if w1:
        v["w1"] = rng.integers(0, 3, batch + (n,)).astype(float)
    if w2:
        v["w2"] = rng.uniform(0, 2, batch + (n,))
    return {k: jnp.asarray(a, dtype) for k, a in v.items()}


def _numpy_sums(v, first_is_second, second, shift):
    """float64 sums, and the sums of |terms| (the scale of rounding errors)."""
    v = {k: np.asarray(a, np.float64) for k, a in v.items()}
    x, lam = v["x"], v["lam"]
    scores = "y" in v
    y = v.get("y", x)
    first, sec = moments.monomials(scores)
    cols = lambda monos: np.stack([x**i * y**j if scores else x ** (i + j) for i, j in monos], -1)  # noqa: E731
    g1 = cols(sec if first_is_second else first) * v.get("w1", np.ones_like(x))[..., None]
    g2 = cols(sec) * v.get("w2", np.ones_like(x))[..., None]
    xi = lam[..., None, :] * x[..., :, None] + v.get("log_w", np.zeros_like(x))[..., :, None]
    c = np.max(xi, axis=-2) if shift else np.zeros(lam.shape)
    c = np.where(np.isfinite(c), c, 0)
    e = np.exp(xi - c[..., None, :])
    pairs = ((e, g1), (e * e, g2), (e, np.abs(g1)), (e * e, np.abs(g2)))
    sums = [np.einsum("...nb,...nk->...bk", f, g) for f, g in pairs]
    return sums[0], sums[1], c, sums[2], sums[3]


@needs_kernel
def test_kernel_is_built_here():
    assert native.available(), native.status()
    assert native.status().startswith("CPU kernel in use")


@needs_kernel
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("shift", [False, True])
def test_matches_float64_numpy(dtype, call, shift):
    """Odd sizes (the kernel's beta and sample blocks not filled), -inf log-weights, a dead row."""
    scores, log_w, w1, w2, first_is_second, second = call
    rng = np.random.default_rng(sum(call))
    v = _case(rng, (3, 2), 301, 37, dtype, scores, log_w, w1, w2)
    fn = jax.jit(lambda v: native.tilted_sums(**v, first_is_second=first_is_second, second=second, shift=shift))
    s1, s2, c = fn(v)
    r1, r2, rc, abs1, abs2 = _numpy_sums(v, first_is_second, second, shift)
    # rounding bound of the kernel's sums: partial sums of 256 samples added to totals (256 + N/256
    # additions) and a 1.4-ulp exponential, 300 eps in all (measured: 1.2e-6 float32, 6.7e-16 float64)
    tol = 300 * float(jnp.finfo(dtype).eps)
    assert s1.dtype == dtype and s1.shape == r1.shape
    np.testing.assert_allclose(np.asarray(c, float), rc, rtol=tol, atol=tol)
    # errors against the sum of |terms|: the sums themselves may cancel
    assert np.max(np.abs(np.asarray(s1, float) - r1) / (abs1 + 1e-300)) < tol
    if second:
        assert s2.shape == r2.shape
        assert np.max(np.abs(np.asarray(s2, float) - r2) / (abs2 + 1e-300)) < tol
    else:
        assert s2 is None
    if log_w:
        assert np.all(np.asarray(s1)[0, 0] == 0)  # the dead row


@needs_kernel
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_exponential_accuracy(dtype):
    """One sample per row: the sum is the exponential itself, across the whole normal range."""
    lo = -87.0 if dtype == jnp.float32 else -708.0
    x = jnp.asarray(np.linspace(lo, 0, 20001)[:, None], dtype)
    lam = jnp.ones((x.shape[0], 1), dtype)
    s1, s2, _ = native.tilted_sums(x, lam)
    t = np.asarray(x, np.float64)[:, 0]
    ulp = float(np.finfo(dtype).eps)
    assert np.max(np.abs(np.asarray(s1[:, 0, 0], np.float64) / np.exp(t) - 1)) < 2 * ulp
    inside = 2 * t > lo  # the square underflows below
    rel2 = np.abs(np.asarray(s2[inside, 0, 0], np.float64) / np.exp(2 * t[inside]) - 1)
    assert rel2.max() < 5 * ulp
    # below the normal range: zero, never NaN or garbage
    deep = native.tilted_sums(jnp.asarray([[-1e4, -1e18]], dtype), jnp.ones((1, 1), dtype))
    assert all(np.all(np.asarray(v) == 0) for v in deep[:2])


@needs_kernel
def test_transformations_match_the_jax_path():
    """vmap (an extra leading axis), jit, and derivatives (the JAX path's) agree with the reference."""
    rng = np.random.default_rng(3)
    v = _case(rng, (4, 5), 64, 9, jnp.float32, True, True, False, True)
    kw = dict(shift=True)
    got = jax.vmap(lambda v: native.tilted_sums(**v, **kw))(v)
    want = jax.vmap(lambda v: native.tilted_sums_jax(**v, **kw))(v)
    for u, w in zip(got, want):
        np.testing.assert_allclose(u, w, rtol=2e-5, atol=1e-6)

    def loss(fn, lam):
        s1 = fn(**{**v, "lam": lam}, **kw)[0]
        return jnp.sum(jnp.log(s1[1:, ..., 0]))  # the dead row (0, 0) aside

    g_native = jax.grad(lambda lam: loss(native.tilted_sums, lam))(v["lam"])
    g_jax = jax.grad(lambda lam: loss(native.tilted_sums_jax, lam))(v["lam"])
    np.testing.assert_allclose(g_native, g_jax, rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(np.asarray(g_native)))


def _python(code, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


@needs_kernel
def test_build_cache_and_switches(tmp_path):
    """A fresh cache builds the kernel there; JAXLIMITS_NATIVE=0 turns it off; =1 makes a failed build an error."""
    probe = "from jaxlimits import native; print(native.status())"
    res = _python(probe, JAXLIMITS_NATIVE_DIR=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "CPU kernel in use" in res.stdout
    assert list(tmp_path.glob("*/libjaxlimits_tilted_sums.so"))
    res = _python(probe, JAXLIMITS_NATIVE="0")
    assert "not in use: turned off by JAXLIMITS_NATIVE=0" in res.stdout
    broken = {"JAXLIMITS_NATIVE_DIR": str(tmp_path / "other"), "CXX": str(tmp_path / "no-such-compiler")}
    res = _python(probe, **broken)
    assert res.returncode == 0 and "not in use: the CPU kernel could not be built" in res.stdout
    res = _python(probe, JAXLIMITS_NATIVE="1", **broken)
    assert res.returncode != 0 and "JAXLIMITS_NATIVE=1 but the CPU kernel could not be built" in res.stderr
