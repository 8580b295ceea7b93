"""Inversions under JAX's transformations: derivatives (implicit, through the correction passes),
vmap, jit (compiled once; ``throw=True`` raises when run). Split from test_inversion.py so that the
two files run on separate test workers."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxlimits as jl
from jaxlimits import inversion as inv
from jaxlimits.inversion import Status

P, N, T = 6, 128, 5


@pytest.fixture(scope="module")
def gauss():
    """As in test_inversion.py."""
    rng = np.random.default_rng(3)
    return jl.Samples(rng.standard_normal((P, N)) * rng.uniform(0.5, 2.0, (P, 1)))


# -- differentiation ---------------------------------------------------------------------------


@pytest.mark.slow
# per prompt: with the heavy tests (CI runs them)
@pytest.mark.parametrize("pooled", [True, pytest.param(False, marks=pytest.mark.heavy)])
def test_gradient_identities(gauss, pooled):
    """d KL*/dG = 1/beta* and d gain*/dK = beta* (implicit differentiation, MATH.md §4-5)."""
    # beta* is the differentiated solution's own (an auxiliary output: no separate solve to compile),
    # every target solved
    def solved(fn, y, field):
        sol = fn(gauss, y, pooled=pooled, throw=False, bias_correction=False)
        return getattr(sol, field), (sol.beta, sol.status)

    def ok(aux):
        beta, status = (np.asarray(a) for a in aux)
        assert np.all(status == Status.OK), status
        return beta

    gains = jnp.array([0.05, 0.2, 0.5, 1.0, 1.5])
    jac, aux = jax.jacfwd(lambda g: solved(jl.min_kl_for_gain, g, "kl"), has_aux=True)(gains)
    jac, beta = np.asarray(jac), ok(aux)
    np.testing.assert_allclose(np.diagonal(jac, axis1=-2, axis2=-1), 1 / beta, rtol=1e-9)
    grad = jax.grad(lambda g: jnp.sum(solved(jl.min_kl_for_gain, g, "kl")[0]))(gains)
    np.testing.assert_allclose(np.asarray(grad), (1 / beta).reshape(-1, T).sum(0), rtol=1e-9)
    budgets = jnp.array([1e-3, 0.05, 0.4, 1.0, 2.0])

    def total_gain(k):
        gain, aux = solved(jl.max_gain_at_kl, k, "gain")
        return jnp.sum(gain), aux

    grad, aux = jax.grad(total_gain, has_aux=True)(budgets)
    np.testing.assert_allclose(np.asarray(grad), ok(aux).reshape(-1, T).sum(0), rtol=1e-9)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.parametrize("pooled", [True, False])
def test_check_grads_rewards(pooled):
    """Derivatives with respect to the rewards (forward and reverse) match finite differences."""
    r = jnp.asarray(np.random.default_rng(5).standard_normal((3, 12)))
    gains, budgets = jnp.array([0.3, 0.8]), jnp.array([0.2, 1.0])

    def f(rewards):
        s = jl.Samples(rewards)
        a = jl.min_kl_for_gain(s, gains, pooled=pooled, throw=False)
        b = jl.max_gain_at_kl(s, budgets, pooled=pooled, throw=False)
        return a.kl, a.beta, b.gain

    check_grads(f, (r,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.heavy
def test_gradient_through_zero_and_infeasible_targets_is_finite(gauss):
    """A zero or infeasible target gives a finite (zero) gradient, never NaN, to the rewards."""

    def f(rewards):
        s = jl.Samples(rewards)
        sol = jl.min_kl_for_gain(s, jnp.array([0.0, 0.2, 0.5, 1.0, 99.0]), pooled=False, throw=False)
        return jnp.sum(jnp.where(sol.status == Status.OK, sol.kl, 0))

    g = jax.grad(f)(gauss.rewards)
    assert np.all(np.isfinite(np.asarray(g)))


# -- transformations -------------------------------------------------------------------------


@pytest.mark.heavy  # ~12 s; CI runs it (the README's test command stays under 10 minutes)
def test_vmap_over_targets_equals_loop(gauss):
    targets = jnp.array([0.05, 0.2, 0.5, 1.0, 1.5])
    batched = jax.vmap(lambda g: jl.min_kl_for_gain(gauss, g, pooled=False, throw=False))(targets)
    for j, g in enumerate(targets):
        one = jl.min_kl_for_gain(gauss, g, pooled=False)
        assert one.kl.shape == (P,)
        np.testing.assert_allclose(np.asarray(batched.kl)[j], np.asarray(one.kl), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(batched.beta)[j], np.asarray(one.beta), rtol=1e-12)
    # and the array call gives the same numbers in [prompts, targets]
    arr = jl.min_kl_for_gain(gauss, targets, pooled=False)
    np.testing.assert_allclose(np.asarray(arr.kl), np.asarray(batched.kl).T, rtol=1e-12)


def test_throw_under_jit_raises_when_run(gauss):
    """With ``throw=True`` under ``jit`` an infeasible target raises when the program runs, with the
    eager message (a host callback; JAX wraps it in its runtime error); feasible ones run through."""
    eager = jl.max_gain_at_kl(gauss, np.array([0.1, 0.5]))
    kmax = float(eager.kl_ceiling[0])
    fn = jax.jit(lambda k: jl.max_gain_at_kl(gauss, k).gain)
    np.testing.assert_allclose(np.asarray(fn(jnp.array([0.1, 0.5]))), np.asarray(eager.gain), rtol=1e-12)
    with pytest.raises(Exception, match=r"KL budget .* is at or above the KL ceiling"):
        jax.block_until_ready(fn(jnp.array([0.1, kmax + 1.0])))


def test_jit_compiles_once_for_a_batch_of_targets(gauss):
    """New target values of the same shape reuse the compiled solver (eager and under jit)."""
    fn = jax.jit(chex.assert_max_traces(lambda s, k: jl.max_gain_at_kl(s, k, throw=False), n=1))
    rng = np.random.default_rng(0)
    for _ in range(3):
        fn(gauss, jnp.asarray(rng.uniform(0.01, 2.0, T)))
    # eagerly: the first call compiles the solver (a cold and a warm-started variant, for the bias
    # correction's re-solves) and the kernel at the solution; new values compile nothing more
    jl.max_gain_at_kl(gauss, rng.uniform(0.01, 2.0, T), throw=False)
    before = inv._solve._cache_size(), inv._at_solution._cache_size()
    for _ in range(3):
        jl.max_gain_at_kl(gauss, rng.uniform(0.01, 2.0, T), throw=False)
    assert (inv._solve._cache_size(), inv._at_solution._cache_size()) == before
