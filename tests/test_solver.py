"""The one solver, the one status type and the pooling module (jaxlimits.solver, .status, .pooling)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import inversion, pooling, proxy, solver, status


def _cube_root(a, *, rtsafe):
    """``x`` with ``x^3 = a`` in the bracket ``[0, 4]``, lane-wise, by the one solver."""

    def residual(x):
        return x**3 - a

    def solve(f, x_init):
        def step(x):
            fx, dfx = jax.jvp(f, (x,), (jnp.ones_like(x),))
            return fx, x - fx / dfx

        lo, hi = jnp.zeros_like(x_init), jnp.full_like(x_init, 4.0)
        return solver.safeguarded_newton(step, x_init, lo, hi, max_iter=60, rtsafe=rtsafe)

    return solver.implicit_root(residual, jnp.full_like(a, 3.0), solve)


@pytest.mark.parametrize("rtsafe", [False, True])
def test_newton_finds_the_root_and_its_implicit_derivative(rtsafe):
    a = jnp.asarray([0.5, 2.0, 27.0, 50.0])
    x, iters, conv = _cube_root(a, rtsafe=rtsafe)
    np.testing.assert_allclose(x, np.cbrt(np.asarray(a)), rtol=1e-12)
    assert bool(jnp.all(conv)) and iters.dtype == jnp.int32 and int(jnp.max(iters)) < 60
    # implicit function theorem: dx*/da = 1 / (3 x*^2), not the derivative of the iterations
    grad = jax.grad(lambda v: jnp.sum(_cube_root(v, rtsafe=rtsafe)[0]))(a)
    np.testing.assert_allclose(grad, 1 / (3 * np.cbrt(np.asarray(a)) ** 2), rtol=1e-10)


def test_newton_inactive_lanes_and_the_iteration_cap():
    a = jnp.asarray([2.0, 3.0])

    def step(x):
        return x**3 - a, x - (x**3 - a) / (3 * x**2)

    lo, hi = jnp.zeros(2), jnp.full(2, 4.0)
    x, iters, conv = solver.safeguarded_newton(step, jnp.full(2, 3.0), lo, hi, max_iter=60,
                                               active=jnp.asarray([True, False]))
    assert conv.tolist() == [True, False] and int(iters[1]) == 0 and float(x[1]) == 3.0
    _, iters, conv = solver.safeguarded_newton(step, jnp.full(2, 3.0), lo, hi, max_iter=1)
    assert not bool(jnp.any(conv)) and iters.tolist() == [1, 1]


def test_tolerances_follow_the_dtype():
    ftol, xtol, wtol = solver.tolerances(jnp.float32)
    eps = float(jnp.finfo(jnp.float32).eps)
    assert (ftol, wtol) == (64 * eps, 16 * eps) and xtol == pytest.approx(np.sqrt(eps) / 8)


def test_one_status_type():
    s = status.Status
    assert inversion.Status is s and inversion.STATUS is status.NAMES and inversion.MESSAGES is status.MESSAGES
    assert len({int(c) for c in s}) == len(s)  # one code, one meaning
    assert set(status.NAMES) == set(status.MESSAGES) == {int(c) for c in s}
    assert proxy.PEAK_FOUND == s.OK and proxy.PEAK_FLAT == s.PEAK_FLAT
    assert proxy.PEAK_NAMES[int(proxy.PEAK_FLAT)] == "PEAK_FLAT" and proxy.PEAK_NAMES[0] == "PEAK_FOUND"
    assert s.NOT_COMPUTED == -1 and s(-1).message == "not computed"
    assert status.of_solution(s.NOT_COMPUTED, True) == ("ok", "no frontier")
    res = jl.best_of_n(jl.Samples(np.arange(12.0).reshape(2, 6)), [2], frontier=False)
    assert res.frontier_status.tolist() == [int(s.NOT_COMPUTED)]
    assert res.to_dict()["frontier_status_name"] == ["NOT_COMPUTED"]


def test_pooling_numpy_and_jax_agree():
    se = np.array([[0.1, np.nan], [0.2, 0.5], [0.3, 0.5]])
    want = np.sqrt(np.sum(se**2, axis=0)) / 3
    got = pooling.pooled_se(se)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), [False, True])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-15)
    np.testing.assert_allclose(pooling.pooled_se(jnp.asarray(se[:, :1])), want[:1], rtol=1e-12)
    np.testing.assert_allclose(pooling.pooled_se_of_variances(se[:, :1] ** 2), want[:1], rtol=1e-15)
    assert pooling.saturated_share(np.array([[True], [False], [False], [False]])).tolist() == [0.25]
    x = jnp.asarray([-1.0, 0.0, 4.0, jnp.nan])
    assert np.array_equal(pooling.safe_sqrt(x), [0.0, 0.0, 2.0, np.nan], equal_nan=True)
    assert float(jax.grad(pooling.safe_sqrt)(0.0)) == 0.0
    assert float(pooling.kl_ceiling(0.0, np.log(0.25))) == pytest.approx(np.log(4))
