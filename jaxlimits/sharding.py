r"""Multi-device and multi-host sweeps on JAX's own machinery (``Mesh``, ``NamedSharding``, ``shard_map``).

Prompts are independent, so the ``[prompts, samples]`` data are split over a mesh axis of
prompts: each device runs the tiled kernel on its prompts, and the pooled frontier is a sum over
devices. For very many samples per prompt a second mesh axis splits the samples: each device
takes the sums of its samples relative to a reference shared by all (largest reward and
log-weight by ``pmax``, weighted means by ``psum``), and the devices' sums merge by the
log-sum-exp rule of :func:`jaxlimits.moments.merge`,

.. math::

   c = \max_d c_d, \qquad S = \sum_d e^{c_d - c} S_d,

exactly (MATH.md §3). Results equal one device's to rounding (1e-12 relative in float64).
Prompt and sample counts need not divide the device counts (prompts are padded and dropped,
samples padded with a mask).

**On one host**, every visible device is used by default (``jax.devices()``); on a CPU, several
devices can be forced *before JAX starts* with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.

**On several hosts** (GPU or TPU pods, or CPU machines with the gloo collectives), each process
calls ``jax.distributed.initialize`` first, loads only its own prompts and builds global arrays
with :func:`distribute`; the same :func:`tilt_sharded` / :func:`frontier_sharded` call then runs
on all processes (SPMD). A worked launch on two machines (``host0``, ``host1``)::

    # sweep.py
    import sys, numpy as np, jax
    jax.distributed.initialize(coordinator_address="host0:8476",
                               num_processes=2, process_id=int(sys.argv[1]))
    import jaxlimits as jl
    from jaxlimits import sharding
    mesh = sharding.make_mesh()                        # every device of every process
    mine = np.load(f"rewards_part{jax.process_index()}.npy")   # this process's prompts [P_i, N]
    samples = sharding.distribute(jl.Samples(mine), mesh)
    f = sharding.frontier_sharded(samples, np.geomspace(10, 0.1, 64), mesh=mesh)
    if jax.process_index() == 0:
        print(np.asarray(f.kl), np.asarray(f.gain))

    host0$ python sweep.py 0
    host1$ python sweep.py 1

On CPUs add ``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before
``initialize`` (the test suite runs exactly this with two processes on one machine).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from . import _sweep, estimators, moments
from .frontier import Frontier, default_betas, from_pool, pool_of
from .samples import Samples, check_samples

Array = jax.Array

PROMPTS = "prompts"
SAMPLES = "samples"


def make_mesh(prompt_devices: int | None = None, sample_devices: int = 1, devices=None) -> Mesh:
    """A mesh of ``prompt_devices x sample_devices`` devices, axes ``("prompts", "samples")``.

    Args:
      prompt_devices: devices along the prompts (default: all devices / ``sample_devices``).
      sample_devices: devices along the samples of each prompt (1: no sample sharding).
      devices: the devices (default ``jax.devices()``: every device of every process).

    Examples:
      >>> from jaxlimits import sharding
      >>> sharding.make_mesh().axis_names
      ('prompts', 'samples')
    """
    devs = list(jax.devices() if devices is None else devices)
    if sample_devices < 1 or len(devs) % sample_devices:
        raise ValueError(f"sample_devices={sample_devices} does not divide the {len(devs)} devices")
    if prompt_devices is None:
        prompt_devices = len(devs) // sample_devices
    if prompt_devices * sample_devices > len(devs) or prompt_devices < 1:
        raise ValueError(f"a {prompt_devices} x {sample_devices} mesh needs more than the {len(devs)} devices")
    grid = np.asarray(devs[: prompt_devices * sample_devices], dtype=object).reshape(prompt_devices, sample_devices)
    return Mesh(grid, (PROMPTS, SAMPLES))


def _axis_size(mesh: Mesh, name) -> int:
    return 1 if name is None else int(mesh.shape[name])


def _global_reference(rewards, scores, log_weights, counts, mask, *, axis) -> moments.Reference:
    """:func:`moments.reference` of prompts whose samples are split over the mesh axis ``axis``."""
    return moments.reference(rewards, scores, log_weights, counts, mask,
                             reduce_sum=functools.partial(jax.lax.psum, axis_name=axis),
                             reduce_max=functools.partial(jax.lax.pmax, axis_name=axis))


def _merge_over(s: moments.Sums, axis) -> moments.Sums:
    """Merges the sums of the devices along ``axis`` (log-sum-exp rule; collectives)."""

    def lse(c, x):
        if x is None:
            return None, None
        top = jax.lax.pmax(c, axis)
        top = jnp.where(jnp.isfinite(top), top, 0)
        scale = jnp.exp(jnp.where(jnp.isfinite(c), c - top, -jnp.inf))
        return top, jax.lax.psum(x * scale[..., None], axis)

    c1, t1 = lse(s.log_scale, s.tilted1)
    c2, t2 = lse(s.log_scale2, s.tilted2)
    cw, tw = lse(s.log_scale_w, s.tilted_w)
    add = lambda x: None if x is None else jax.lax.psum(x, axis)  # noqa: E731
    return moments.Sums(c1, t1, c2, t2, cw, tw, add(s.base1), add(s.base2), add(s.moments1), add(s.moments2),
                        add(s.draws), _logsumexp_over(s.log_top_mass, axis))


def _logsumexp_over(x, axis):
    """``log sum exp(x)`` over the devices of ``axis`` (``-inf`` where every device has ``-inf``)."""
    top = jax.lax.pmax(x, axis)
    top = jnp.where(jnp.isfinite(top), top, 0)
    return jnp.log(jax.lax.psum(jnp.exp(x - top), axis)) + top


@functools.partial(jax.jit, static_argnames=("plan", "mesh", "prompt_axis", "sample_axis"))
def _tilt_sharded(samples, lam, plan, mesh, prompt_axis, sample_axis):
    fn = functools.partial(estimators.stats_of_tile, has_scores=samples.has_scores, exact=samples.exact)
    kw = {}
    if sample_axis is not None:
        kw = dict(reference_fn=functools.partial(_global_reference, axis=sample_axis),
                  combine=functools.partial(_merge_over, axis=sample_axis))

    def body(smp, lam_loc):
        return _sweep.sweep(smp, lam_loc, plan, fn, with_samples=sample_axis is None, **kw)

    return jax.shard_map(
        body, mesh=mesh, in_specs=(P(prompt_axis, sample_axis), P(prompt_axis, None)), out_specs=P(prompt_axis),
        check_vma=False,
    )(samples, lam)


def _pad(samples: Samples, lam, n_p: int, n_s: int):
    """Pads prompts (repeating the last: finite, dropped later) and samples (masked out)."""
    num_p, num_n = samples.rewards.shape
    tp = -(-num_p // n_p) * n_p
    tn = -(-num_n // n_s) * n_s
    arrays = [samples.rewards, samples.scores, samples.log_weights, samples.counts, samples.mask]
    if tn != num_n:
        if arrays[4] is None:
            arrays[4] = jnp.ones((num_p, num_n), bool)
        arrays = [_sweep.pad_samples(a, tn, f) for a, f in zip(arrays, [0, 0, 0, 1, False])]
    arrays = [_sweep.pad_prompts(a, tp) for a in arrays]
    return Samples.tree_unflatten((samples.exact,), tuple(arrays)), _sweep.pad_prompts(lam, tp)


def _prepare(samples: Samples, betas, mesh, prompt_axis, sample_axis, memory_budget):
    check_samples(samples, "sharding")
    mesh = make_mesh() if mesh is None else mesh
    for name in (prompt_axis, sample_axis):
        if name is not None and name not in mesh.axis_names:
            raise ValueError(f"the mesh has axes {mesh.axis_names}, not {name!r}")
    _sweep.check_betas(betas, samples.num_prompts, samples.dtype)
    lam = _sweep.as_lambda(betas, samples.num_prompts, samples.dtype)
    n_p, n_s = _axis_size(mesh, prompt_axis), _axis_size(mesh, sample_axis)
    if samples.rewards.is_fully_addressable if isinstance(samples.rewards, jax.Array) else True:
        padded, lam = _pad(samples, lam, n_p, n_s)
    else:  # global arrays of several processes: distribute() has made them divisible
        padded = samples
        if samples.num_prompts % n_p or samples.num_samples % n_s:
            raise ValueError(f"global samples of shape {samples.rewards.shape} do not divide the mesh "
                             f"({n_p} x {n_s}); build them with sharding.distribute")
    n_eval = lam.shape[1]  # exp(lam x') slab (its square is among _sweep.COPIES)
    plan = _sweep.kernel_plan(padded.num_prompts // n_p, padded.num_samples // n_s, n_eval, lam.dtype.itemsize,
                              memory_budget, counts=padded.counts is not None)
    spec = NamedSharding(mesh, P(prompt_axis, sample_axis))
    padded = jax.tree.map(lambda a: jax.device_put(a, spec), padded)
    lam = jax.device_put(lam, NamedSharding(mesh, P(prompt_axis, None)))
    return mesh, padded, lam, plan


def tilt_sharded(
    samples: Samples,
    betas,
    *,
    mesh: Mesh | None = None,
    prompt_axis: str | None = PROMPTS,
    sample_axis: str | None = None,
    memory_budget: int | None = None,
) -> estimators.TiltStats:
    r""":func:`jaxlimits.tilt` with prompts (and optionally samples) split over a device mesh.

    .. math::

       S_x(\beta) = \sum_d e^{c_{x,d} - c_x} S_{x,d}(\beta), \qquad c_x = \max_d c_{x,d}

    (MATH.md §3) merges the devices' sums of a prompt when its samples are split.

    Args:
      samples: :class:`~jaxlimits.Samples` ``[P, N]`` (host data, or global arrays from
        :func:`distribute`).
      betas: ``[B]`` or ``[P, B]`` positive KL penalties.
      mesh: a :class:`jax.sharding.Mesh` (default :func:`make_mesh`: all devices over prompts).
      prompt_axis: mesh axis over which prompts are split (None: not split).
      sample_axis: mesh axis over which each prompt's samples are split (None: not split).
      memory_budget: bytes of working memory per device.

    Returns:
      :class:`~jaxlimits.TiltStats` ``[P, B]``, sharded over ``prompt_axis``; equal to
      :func:`jaxlimits.tilt` to rounding.

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> from jaxlimits import sharding
      >>> r = np.random.default_rng(0).standard_normal((5, 64))
      >>> st = sharding.tilt_sharded(jl.Samples(r), [1.0, 0.5])
      >>> bool(np.allclose(st.kl, jl.tilt(jl.Samples(r), [1.0, 0.5]).kl))
      True
    """
    num_p = samples.num_prompts
    mesh, padded, lam, plan = _prepare(samples, betas, mesh, prompt_axis, sample_axis, memory_budget)
    st = _tilt_sharded(padded, lam, plan, mesh, prompt_axis, sample_axis)
    if st.draws.shape[0] != num_p:
        st = jax.tree.map(lambda a: a[:num_p], st)
    return st


@jax.jit
def _pool_valid(st: estimators.TiltStats, keep):
    """Pools the prompts with ``keep`` (padding and prompts without samples left out)."""
    ok = keep & (st.draws > 0)
    clean = jax.tree.map(lambda a: jnp.where(ok.reshape(ok.shape + (1,) * (a.ndim - 1)), a, 0), st)
    clean = clean._replace(draws=jnp.where(ok, st.draws, 1))  # ess / draws stays finite
    return pool_of(clean, ok.astype(st.kl.dtype))


def frontier_sharded(
    samples: Samples,
    betas=None,
    *,
    mesh: Mesh | None = None,
    prompt_axis: str | None = PROMPTS,
    sample_axis: str | None = None,
    num_betas: int = 64,
    per_prompt: bool = False,
    memory_budget: int | None = None,
) -> Frontier:
    """:func:`jaxlimits.frontier` on a device mesh: per-prompt statistics sharded, pooled across devices.

    Prompts without a valid sample (the padding of :func:`distribute`) are left out of the pool.

    Args:
      samples, mesh, prompt_axis, sample_axis, memory_budget: as in :func:`tilt_sharded`.
      betas: ``[B]`` KL penalties (default :func:`jaxlimits.default_betas`, ``num_betas`` points;
        host data only).
      per_prompt: keep the per-prompt :class:`~jaxlimits.TiltStats` (sharded over prompts).

    Returns:
      A :class:`~jaxlimits.Frontier` (no bootstrap bands).

    Examples:
      >>> import numpy as np, jaxlimits as jl
      >>> from jaxlimits import sharding
      >>> r = np.random.default_rng(0).standard_normal((7, 64))
      >>> f = sharding.frontier_sharded(jl.Samples(r), [2.0, 1.0])
      >>> bool(np.allclose(f.kl, jl.frontier(jl.Samples(r), [2.0, 1.0]).kl))
      True
    """
    if betas is None:
        betas = default_betas(samples, num=num_betas, memory_budget=memory_budget)
    betas = np.asarray(betas)
    if betas.ndim != 1:
        raise ValueError("the frontier needs one grid of betas shared by all prompts (shape [betas])")
    num_p = samples.num_prompts
    mesh, padded, lam, plan = _prepare(samples, betas, mesh, prompt_axis, sample_axis, memory_budget)
    st = _tilt_sharded(padded, lam, plan, mesh, prompt_axis, sample_axis)
    keep = jax.device_put(jnp.arange(st.draws.shape[0]) < num_p, NamedSharding(mesh, P(prompt_axis)))
    pool = _pool_valid(st, keep)
    if per_prompt and st.draws.shape[0] != num_p:
        st = jax.tree.map(lambda a: a[:num_p], st)
    return from_pool(pool, jnp.asarray(betas, lam.dtype), st if per_prompt else None)


def distribute(local: Samples, mesh: Mesh, *, prompt_axis: str = PROMPTS, prompts_per_process: int | None = None
               ) -> Samples:
    """Global :class:`~jaxlimits.Samples` from each process's own block of prompts (multi-host).

    Every process passes its prompts ``[P_i, N]`` (the same ``N`` everywhere); blocks are padded
    with empty prompts (all samples masked: left out of :func:`frontier_sharded`'s pool, NaN rows
    in :func:`tilt_sharded`) to ``prompts_per_process`` (default: the largest ``P_i``, agreed by
    an all-gather), rounded up to the process's devices along ``prompt_axis``. The global prompt
    order is process 0's block, then process 1's, and so on.
    Uses :func:`jax.make_array_from_process_local_data`.
    """
    from jax.experimental import multihost_utils

    local_n = np.asarray([local.num_prompts])
    if prompts_per_process is None:
        counts = np.asarray(multihost_utils.process_allgather(local_n)).reshape(-1)
        prompts_per_process = int(counts.max())
    if local.num_prompts > prompts_per_process:
        raise ValueError(f"this process has {local.num_prompts} prompts, more than prompts_per_process="
                         f"{prompts_per_process}")
    per_dev = mesh.shape[prompt_axis] // jax.process_count()
    target = -(-prompts_per_process // max(per_dev, 1)) * max(per_dev, 1)
    pad = target - local.num_prompts
    arrays = []
    mask = np.ones(local.rewards.shape, bool) if local.mask is None else np.asarray(local.mask)
    for name in ("rewards", "scores", "log_weights", "counts", "mask"):
        a = mask if name == "mask" else getattr(local, name)
        if a is None:
            arrays.append(None)
            continue
        a = np.asarray(a)
        fill = False if name == "mask" else (1 if name == "counts" else 0)
        arrays.append(np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)]) if pad else a)
    spec = NamedSharding(mesh, P(prompt_axis, None))
    shape = (target * jax.process_count(), local.num_samples)
    glob = [None if a is None else jax.make_array_from_process_local_data(spec, a, shape) for a in arrays]
    return Samples.tree_unflatten((local.exact,), tuple(glob))
