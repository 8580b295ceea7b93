r"""The one root solver: safeguarded Newton in a bracket, differentiable by the implicit function theorem.

Used by the inversions (:mod:`jaxlimits.inversion`, lane-wise on many targets at once) and the
over-optimisation peak (:mod:`jaxlimits.proxy`, one scalar root). The caller supplies, at each
iterate, the residual ``f`` (increasing through the root: ``f < 0`` below it, ``f > 0`` above)
and its Newton proposal (in whatever variables make the residual nearly linear); this module
keeps the bracket, falls back to bisection when a proposal leaves it, and decides convergence
with tolerances tied to the dtype (:func:`tolerances`). Everything is ``lax.while_loop``: it jits
and vmaps.

:func:`implicit_root` wraps a solve in ``jax.lax.custom_root``: for ``f(x*(theta), theta) = 0``
the implicit function theorem gives ``dx*/dtheta = -(df/dtheta) / (df/dx)`` at the root, with
``df/dx`` the diagonal of a lane-wise residual's Jacobian (each lane's residual depends on its own
``x`` only), so the iterations are never differentiated.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def tolerances(dtype) -> tuple[float, float, float]:
    """``(ftol, xtol, wtol)`` of a solve in ``dtype``: ``64 eps``, ``sqrt(eps) / 8``, ``16 eps``.

    ``ftol``: relative residual a curve can be evaluated to; ``xtol``: a Newton step this small
    is in the quadratic regime, so the error after it is ``~ step^2 << eps``; ``wtol``: relative
    width of a bracket that has closed.
    """
    eps = float(jnp.finfo(dtype).eps)
    return 64 * eps, float(np.sqrt(eps)) / 8, 16 * eps


def safe_div(a, b):
    """``a / b`` where ``b`` is finite and non-zero, else 0 (the double where: NaN-free gradients)."""
    ok = (b != 0) & jnp.isfinite(b)
    return jnp.where(ok, a / jnp.where(ok, b, 1), 0)


def diagonal_tangent_solve(g, y):
    """The ``tangent_solve`` of ``custom_root`` for a lane-wise residual (a diagonal Jacobian ``g(1)``)."""
    return safe_div(y, g(jnp.ones_like(y)))


def safeguarded_newton(step: Callable, x0, lo, hi, *, max_iter: int, ftol=0.0, active=None,
                       rtsafe: bool = False):
    """Safeguarded Newton, lane-wise, until every lane is done or ``max_iter`` passes.

    Each pass evaluates ``step(x) -> (f, x_newton)``: the residual (``f < 0`` below the root) and
    the Newton proposal. The bracket ``[lo, hi]`` shrinks to ``x`` on the side ``f`` says; a
    proposal strictly inside it is taken, else the bracket's midpoint. With ``rtsafe`` (Numerical
    Recipes' ``rtsafe``) a proposal must also at least halve the previous step, the first compared
    with the bracket's width. A lane is done after ``|f| <= ftol``, a taken Newton step below
    ``xtol`` that halves the previous one, or a bracket narrower than ``wtol (1 + |x|)``
    (:func:`tolerances` of ``x0``'s dtype).

    Args:
      step: ``x -> (f, x_newton)`` on the lanes' shape.
      x0, lo, hi: the start and the bracket, one shape (the lanes).
      max_iter: the cap on passes.
      ftol: residual tolerance per lane (``|f| <= ftol`` is solved; 0: only an exact zero).
      active: lanes to solve (default all); the others are done from the start.
      rtsafe: require each Newton step to halve the previous one.

    Returns:
      ``(x, iterations, converged)``: ``iterations`` ``int32`` passes while the lane was not
      done, ``converged`` False on inactive lanes.
    """
    dtype = jnp.result_type(x0)
    _, xtol, wtol = tolerances(dtype)
    shape = jnp.shape(x0)
    active = jnp.ones(shape, bool) if active is None else active
    prev0 = (hi - lo) if rtsafe else jnp.full(shape, jnp.inf, dtype)

    def cond(state):
        k, done = state[0], state[5]
        return (k < max_iter) & ~jnp.all(done)

    def body(state):
        k, x, lo, hi, prev, done, iters = state
        f, x_newton = step(x)
        lo = jnp.where(f < 0, x, lo)
        hi = jnp.where(f >= 0, x, hi)
        taken = (x_newton > lo) & (x_newton < hi)  # False for NaN
        halves = 2 * jnp.abs(x_newton - x) <= jnp.abs(prev)
        if rtsafe:
            taken = taken & halves
        x_new = jnp.where(taken, x_newton, 0.5 * (lo + hi))
        dx = x_new - x
        small_res = jnp.abs(f) <= ftol
        small_step = taken & (jnp.abs(dx) <= xtol) & halves
        narrow = (hi - lo) <= wtol * (1 + jnp.abs(x))
        x_next = jnp.where(done | small_res, x, x_new)
        iters = iters + (~done).astype(jnp.int32)
        return k + 1, x_next, lo, hi, jnp.where(done, prev, dx), done | small_res | small_step | narrow, iters

    state = (jnp.zeros((), jnp.int32), x0, lo, hi, prev0, ~active, jnp.zeros(shape, jnp.int32))
    _, x, _, _, _, done, iters = jax.lax.while_loop(cond, body, state)
    return x, iters, done & active


def implicit_root(residual: Callable, x0, solve: Callable):
    """A root of the lane-wise ``residual`` by ``solve``, differentiable by the implicit function theorem.

    Args:
      residual: ``x -> f(x)``, closing over what the root depends on (``custom_root`` finds it).
      x0: the start (its gradient is stopped).
      solve: ``(residual, x_init) -> (x, iterations, converged)``.

    Returns:
      ``(x, iterations, converged)``; only ``x`` carries derivatives.
    """

    def solve_aux(f, x_init):
        x, iters, conv = solve(f, x_init)
        # custom_root gives auxiliary outputs tangents of their own dtype, which JAX rejects for
        # integers and booleans: carry them as floats (exact for these small counts)
        return x, (iters.astype(x.dtype), conv.astype(x.dtype))

    x, aux = jax.lax.custom_root(residual, jax.lax.stop_gradient(x0), solve_aux, diagonal_tangent_solve,
                                 has_aux=True)
    iters, conv = jax.lax.stop_gradient(aux)
    return x, iters.astype(jnp.int32), conv > 0
