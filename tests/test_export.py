"""The main jitted entry points lower for CPU, GPU and TPU (``jax.export``; no hardware needed).

Cross-platform lowering fails on anything CPU-only in a kernel (host callbacks, unsupported
dtypes or ops); the CPU artifact is also run and compared with the direct call.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxlimits as jl
from jaxlimits import streaming

PLATFORMS = ("cpu", "cuda", "tpu")
P, N = 6, 40
BETAS = np.array([4.0, 2.0, 1.0, 0.5])


def _rewards(dtype):
    return np.random.default_rng(0).standard_normal((P, N)).astype(dtype)


def _tilt(r):
    return jl.tilt(jl.Samples(r), BETAS)


def _tilt_scores_weights(r, s, lw):
    return jl.tilt(jl.Samples(r, scores=s, log_weights=lw), BETAS)


def pool_sweep(r):
    f = jl.frontier(jl.Samples(r), BETAS, per_prompt=False)
    return f.gain, f.kl, f.gain_se, f.kl_se


def _inversion(r, budget):
    sol = jl.max_gain_at_kl(jl.Samples(r), budget, throw=False)
    return sol.beta, sol.gain


def _stream(r):
    acc = streaming.init(P, BETAS, dtype=r.dtype)
    a = streaming.update(acc, jl.Samples(r[:, : N // 2]))
    b = streaming.update(acc, jl.Samples(r[:, N // 2:]))
    return streaming.finalize(streaming.merge(a, b)).kl


def _merge(r):
    """The merge alone: two accumulators in, one out (the reduction of sharded/streamed partials)."""
    acc = streaming.init(P, BETAS, dtype=r.dtype)
    a = streaming.update(acc, jl.Samples(r[:, : N // 2]))
    return streaming._merge_impl(a, a).sums.tilted1


CASES = {
    "tilt": (_tilt, 1),
    "tilt_scores_weights": (_tilt_scores_weights, 3),
    "frontier": (pool_sweep, 1),
    "inversion": (_inversion, 2),
    "streaming": (_stream, 1),
    "merge": (_merge, 1),
}


def _args(name, dtype):
    r = _rewards(dtype)
    if name == "tilt_scores_weights":
        rng = np.random.default_rng(1)
        return r, (r + rng.standard_normal(r.shape)).astype(dtype), rng.standard_normal(r.shape).astype(dtype)
    if name == "inversion":
        return r, np.asarray([0.1, 0.5], dtype)
    return (r,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_exports_for_cpu_cuda_tpu(name, dtype):
    fn, _ = CASES[name]
    args = _args(name, dtype)
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]
    exp = export.export(jax.jit(fn), platforms=PLATFORMS)(*specs)
    assert exp.platforms == PLATFORMS
    text = exp.mlir_module()
    assert "callback" not in text.lower(), "a host callback would not run on an accelerator"
    if dtype == np.float32:
        return  # lowering is the point; the CPU run is checked once, in float64
    # the exported artifact runs on CPU and gives the direct call's numbers (the multi-platform
    # module is compiled anew, so fusion and summation order may differ: rounding only)
    got = exp.call(*[jnp.asarray(a) for a in args])
    want = jax.jit(fn)(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-12, atol=1e-300)
