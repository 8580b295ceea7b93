"""Sharded sweeps equal one device's: prompts and samples over forced CPU devices, and two processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import jaxlimits as jl
from jaxlimits import sharding

# Estimates agree to 1e-12 relative in float64 (only the summation order differs); the standard
# errors are differences of quadratic forms, ill-conditioned by ~1e4 (see test_streaming.py).
RTOL = 1e-12
RTOL_SE = 1e-11
# The bias terms are differences of second-order sums (sum p^2 (s - mu_p)) whose terms cancel: relative to
# their own size they carry the sums' rounding times that cancellation (measured 5e-10 across 8 devices).
RTOL_BIAS = 1e-8

SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    import jaxlimits as jl
    from jaxlimits import estimators, sharding
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    P, N = 13, 101                                   # divisible by neither 8, 4 nor 2
    r = rng.standard_normal((P, N)) * 2 + 1
    s = r + rng.standard_normal((P, N))
    lw = rng.standard_normal((P, N))
    m = rng.integers(0, 3, (P, N)).astype(float)
    m[:, 0] = 1
    betas = np.geomspace(0.05, 100, 9)
    out = {}
    def err(got, want):
        res = {}
        for f in want._fields:
            if getattr(want, f) is None or f in ("khat", "saturated", "saturated_share"):
                continue  # k-hat needs all of a prompt's samples on one device: NaN when they are split
            a, b = np.asarray(getattr(got, f), float), np.asarray(getattr(want, f), float)
            if f == "reasons":  # the same bits, k-hat's left out
                a, b = (np.asarray(x, int) & ~(estimators.TAIL | estimators.NO_TILT) for x in (a, b))
            same = (a == b) | (np.isnan(a) & np.isnan(b))  # inf upper limits, NaN where no tail is modelled
            res[f] = float(np.max(np.where(same, 0, np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
        return res
    def sums_only(smp):  # what a sample-sharded sweep promises: the mergeable sums (no k-hat, no tail model)
        from jaxlimits import _sweep
        lam = _sweep.as_lambda(betas, smp.num_prompts, smp.dtype)
        plan = _sweep.kernel_plan(smp.num_prompts, smp.num_samples, lam.shape[1], lam.dtype.itemsize, None,
                                  counts=smp.counts is not None)
        return estimators._tilt(smp, lam, plan, largest=False)
    cases = {"plain": jl.Samples(r), "all": jl.Samples(r, s, lw, m)}
    meshes = {"prompts8": (sharding.make_mesh(), "prompts", None),
              "prompts2_samples4": (sharding.make_mesh(2, 4), "prompts", "samples"),
              "samples8": (sharding.make_mesh(1, 8), None, "samples")}
    for cname, smp in cases.items():
        whole, split = jl.tilt(smp, betas), sums_only(smp)
        for mname, (mesh, pa, sa) in meshes.items():
            if cname == "all" and mname == "prompts8":
                continue
            st = sharding.tilt_sharded(smp, betas, mesh=mesh, prompt_axis=pa, sample_axis=sa)
            assert st.kl.shape == (P, len(betas))
            out[f"{cname}/{mname}"] = err(st, whole if sa is None else split)
    f = sharding.frontier_sharded(cases["all"], betas, mesh=sharding.make_mesh(4, 2), sample_axis="samples")
    out["frontier"] = err(f, jl.frontier(cases["all"], betas)._replace(prompts=None, bands=None))
    print(json.dumps(out))
""")


def _check(errors):
    for case, fields in errors.items():
        for name, e in fields.items():
            # (the tail model's SEs are differences of two model values: rounded like the SEs)
            tol = RTOL_BIAS if name.endswith("_bias") else RTOL_SE if name.endswith(("_se", "_sd")) else RTOL
            assert e <= tol, (case, name, e)


@pytest.mark.slow
@pytest.mark.heavy  # ~22 s (8 forced devices in a subprocess); CI runs it
def test_sharded_equals_single_device_on_8_forced_cpu_devices():
    env = dict(os.environ)  # the run's XLA flags (conftest.py); the script appends its device count
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    errors = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(errors) == 6
    _check(errors)


MULTI = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
    import jaxlimits as jl
    from jaxlimits import estimators, sharding
    r = np.random.default_rng(0).standard_normal((7, 50))
    betas = np.geomspace(0.1, 10, 5)
    mine = r[:4] if pid == 0 else r[4:]              # 4 + 3 prompts: process 1's block is padded
    mesh = sharding.make_mesh()
    f = sharding.frontier_sharded(sharding.distribute(jl.Samples(mine), mesh), betas, mesh=mesh)
    g = jl.frontier(jl.Samples(r), betas)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))
    print(json.dumps({"devices": jax.device_count(), "kl": rel(f.kl, g.kl), "gain": rel(f.gain, g.gain),
                      "gain_se": rel(f.gain_se, g.gain_se)}))
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_with_jax_distributed():
    """The documented multi-host launch, as two processes on this machine (gloo collectives)."""
    env = dict(os.environ)  # the run's XLA flags (conftest.py); the script appends its device count
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", MULTI, str(i), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        res = json.loads(out.strip().splitlines()[-1])
        assert res["devices"] == 4
        assert res["kl"] <= RTOL and res["gain"] <= RTOL and res["gain_se"] <= RTOL_SE, res


def test_one_device_mesh_and_errors():
    r = np.random.default_rng(1).standard_normal((3, 20))
    st = sharding.tilt_sharded(jl.Samples(r), [1.0, 0.5])
    np.testing.assert_allclose(np.asarray(st.kl), np.asarray(jl.tilt(jl.Samples(r), [1.0, 0.5]).kl), rtol=RTOL)
    with pytest.raises(ValueError, match="not 'rows'"):
        sharding.tilt_sharded(jl.Samples(r), [1.0], prompt_axis="rows")
    with pytest.raises(ValueError, match="sample_devices=3"):
        sharding.make_mesh(sample_devices=3)
    with pytest.raises(ValueError, match="positive finite"):
        sharding.tilt_sharded(jl.Samples(r), [0.0])
