r"""The tilted sums of the kernel in one fused pass on the CPU: a C++ custom call (XLA FFI).

:func:`jaxlimits.moments.block_sums` needs, per (prompt, beta), ``sum_n E g1`` and ``sum_n E^2 g2``
with ``E = exp(a + lam x - c)``. Written in JAX, XLA's CPU backend materialises the exponential tile,
squares it in another pass and runs two matrix products: 2.8x the time of the exponentials alone
(``benchmarks/README.md``). The kernel in ``csrc/tilted_sums.cc`` evaluates each exponential once and
keeps both families of sums in registers, so the ``[prompts, samples, betas]`` cube never reaches
memory.

It is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``) against the FFI
headers of the installed jaxlib, for this machine's CPU (``-march=native``), and kept in
:func:`cache_dir` under a key of the source, the flags, the compiler, jaxlib's version and the CPU
(about 3 s, once). Where that is impossible (no compiler, a
read-only cache) the same sums run in JAX and :func:`status` says why. ``JAXLIMITS_NATIVE=0``
turns the kernel off; ``JAXLIMITS_NATIVE=1`` makes a failed build an error.

The choice is made when a program is lowered (a primitive with a CPU lowering rule): CPU programs
call the kernel; accelerators, and artifacts of :func:`jax.export` (portable by contract), run the
JAX path, whose products are fast on accelerators. Derivatives (:func:`jax.custom_jvp`) are those of
the JAX path, which also serves as the reference in ``tests/test_native.py``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

TARGET = "jaxlimits_tilted_sums"
SOURCE = Path(__file__).parent / "csrc" / "tilted_sums.cc"
#: Compiler flags. No ``-ffast-math``: reassociation would merge the exponential's two-step range
#: reduction (measured on an earlier float64 form: 2.3 ulp -> 1,200 ulp).
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffinite-math-only",
         "-fno-signed-zeros", "-std=c++17", "-shared", "-fPIC", "-DNDEBUG")
HIGHEST = jax.lax.Precision.HIGHEST


def cache_dir() -> Path:
    """``$JAXLIMITS_NATIVE_DIR``, else ``$XDG_CACHE_HOME/jaxlimits/native`` (``~/.cache/jaxlimits/native``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxlimits" / "native"
    return Path(os.environ.get("JAXLIMITS_NATIVE_DIR") or default)


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags (a kernel built with -march=native runs only there)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _build(compiler: str) -> Path:
    """Compiles the kernel into the cache (atomically: concurrent builds do not clash); its path."""
    import jaxlib

    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        "\0".join([SOURCE.read_text(), " ".join(FLAGS), compiler, jaxlib.__version__, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    out = cache_dir() / key / "libjaxlimits_tilted_sums.so"
    if out.exists():
        return out
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:  # nothing left behind by a failed build
        tmp_lib = Path(tmp) / out.name
        cmd = [compiler, *FLAGS, "-I", include, str(SOURCE), "-o", str(tmp_lib)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
        out.parent.mkdir(exist_ok=True)
        os.replace(tmp_lib, out)
    return out


@functools.lru_cache(maxsize=1)
def _load() -> tuple[bool, str]:
    """Builds (or finds) and registers the kernel once per process: ``(available, why)``."""
    mode = os.environ.get("JAXLIMITS_NATIVE", "auto").strip().lower()
    if mode in ("0", "off", "false", "no"):
        return False, "turned off by JAXLIMITS_NATIVE=0"
    try:
        given = os.environ.get("CXX")
        compiler = shutil.which(given) if given else (shutil.which("c++") or shutil.which("g++")
                                                       or shutil.which("clang++"))
        if compiler is None:
            raise RuntimeError(f"the compiler {given!r} (from $CXX) was not found" if given
                               else "no C++ compiler found (c++, g++, clang++; or set CXX)")
        lib = ctypes.cdll.LoadLibrary(str(_build(compiler)))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.JaxlimitsTiltedSums), platform="cpu")
    except Exception as err:  # any failure leaves the JAX path, which is always correct
        if mode in ("1", "on", "true", "yes"):
            raise RuntimeError(f"JAXLIMITS_NATIVE=1 but the CPU kernel could not be built: {err}") from err
        return False, f"the CPU kernel could not be built ({type(err).__name__}: {err}); the JAX path runs"
    return True, "built and registered"


def available() -> bool:
    """Whether the CPU kernel is in use (builds it on the first call)."""
    return _load()[0]


#: The kernel vectorises over betas (32 float32 or 16 float64 lanes per block): with fewer betas
#: than this most lanes would idle, and the JAX path runs instead.
MIN_BETAS = 16


def runs_for(num_betas: int) -> bool:
    """Whether :func:`tilted_sums` with ``num_betas`` betas runs the kernel (on the default backend)."""
    return num_betas >= MIN_BETAS and jax.default_backend() == "cpu" and available()


def status() -> str:
    """Whether the CPU kernel is in use, and why not where it is not."""
    ok, why = _load()
    return f"CPU kernel in use ({why})" if ok else f"CPU kernel not in use: {why}"


def tilted_sums_jax(x, lam, *, y=None, log_w=None, w1=None, w2=None, c=None, first_is_second=False,
                    second=True, shift=False):
    """The sums in JAX: the reference, the accelerator path and the derivatives. See :func:`tilted_sums`."""
    args, params = _pack(x, lam, y, log_w, w1, w2, c, first_is_second, second, shift)
    return _unpack(_jax_kernel(*args, **params), second)


def _pack(x, lam, y, log_w, w1, w2, c, first_is_second, second, shift):
    """The primitive's seven arrays (``x`` stands in for those not given) and its parameters."""
    if c is None:
        c = jnp.zeros(lam.shape, lam.dtype)
    params = dict(shift=bool(shift), scores=y is not None, first_is_second=bool(first_is_second),
                  has_second=bool(second), use_a=log_w is not None, use_w1=w1 is not None, use_w2=w2 is not None)
    args = [x if v is None else v for v in (x, y, log_w, w1, w2)] + [lam, c]
    return args, params


def _unpack(out, second):
    s1, s2, c = out
    return jnp.swapaxes(s1, -1, -2), (jnp.swapaxes(s2, -1, -2) if second else None), c


def _jax_kernel(x, y, a, w1, w2, lam, c, *, shift, scores, first_is_second, has_second, use_a, use_w1, use_w2):
    """The sums in JAX in the kernel's layout: ``s1 [..., k1, B]``, ``s2 [..., k2, B]``, ``c [..., B]``."""
    from . import moments  # moments calls this module

    first, sec = moments.monomials(scores)
    cols = lambda monos: jnp.stack(moments.monomial_columns(x, y, monos, scores), axis=-1)  # noqa: E731
    g1 = cols(sec if first_is_second else first)
    if use_w1:
        g1 = w1[..., None] * g1
    xi = lam[..., None, :] * x[..., :, None]
    if use_a:
        xi = xi + a[..., :, None]
    if shift:
        c = jax.lax.stop_gradient(jnp.max(xi, axis=-2))
        c = jnp.where(jnp.isfinite(c), c, 0)
    # the tile once (optimization_barrier): else XLA evaluates the exponential once per consumer
    e = jax.lax.optimization_barrier(jnp.exp(xi - c[..., None, :]))
    # one product per family, written [.., k, B]: XLA's CPU dot is ~4x slower when it writes [.., B, k]
    # (the barrier keeps the simplifier from folding the caller's transpose back into the dot)
    s1 = jax.lax.optimization_barrier(jnp.einsum("...nk,...nb->...kb", g1, e, precision=HIGHEST))
    if has_second:
        g2 = cols(sec)
        if use_w2:
            g2 = w2[..., None] * g2
        s2 = jax.lax.optimization_barrier(jnp.einsum("...nk,...nb->...kb", g2, e * e, precision=HIGHEST))
    else:
        s2 = jnp.zeros(s1.shape[:-2] + (0, s1.shape[-1]), s1.dtype)
    return s1, s2, c


# The kernel as a primitive, so that the choice is made at lowering: the custom call on a CPU, the
# JAX path on other platforms and in exported artifacts (``jax.export``: a kernel built for one
# machine's CPU has no place in a serialised program).
tilted_sums_p = Primitive("jaxlimits_tilted_sums")
tilted_sums_p.multiple_results = True


def _abstract(x, y, a, w1, w2, lam, c, *, shift, scores, first_is_second, has_second, use_a, use_w1, use_w2):
    batch, num_b = x.shape[:-1], lam.shape[-1]
    k1 = (5 if first_is_second else 6) if scores else 3
    k2 = (5 if scores else 3) if has_second else 0
    return (jax.core.ShapedArray(batch + (k1, num_b), x.dtype), jax.core.ShapedArray(batch + (k2, num_b), x.dtype),
            jax.core.ShapedArray(batch + (num_b,), x.dtype))


def _batch(args, dims, **params):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    args = [jnp.broadcast_to(a, (size,) + a.shape) if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    return tilted_sums_p.bind(*args, **params), (0, 0, 0)


def _cpu_lowering(ctx, *args, **params):
    if ctx.module_context.lowering_parameters.for_export:
        return _jax_lowering(ctx, *args, **params)
    return _ffi_lowering(ctx, *args, **params)


tilted_sums_p.def_abstract_eval(_abstract)
tilted_sums_p.def_impl(_jax_kernel)
batching.primitive_batchers[tilted_sums_p] = _batch
_jax_lowering = mlir.lower_fun(_jax_kernel, multiple_results=True)
_ffi_lowering = jax.ffi.ffi_lowering(TARGET)
mlir.register_lowering(tilted_sums_p, _jax_lowering)
mlir.register_lowering(tilted_sums_p, _cpu_lowering, platform="cpu")


@functools.partial(jax.custom_jvp, nondiff_argnums=(7,))
def _fused(x, y, a, w1, w2, lam, c, params):
    return tuple(tilted_sums_p.bind(x, y, a, w1, w2, lam, c, **dict(params)))


@_fused.defjvp
def _fused_jvp(params, primals, tangents):
    return jax.jvp(functools.partial(_jax_kernel, **dict(params)), primals, tangents)


def tilted_sums(x, lam, *, y=None, log_w=None, w1=None, w2=None, c=None, first_is_second=False, second=True,
                shift=False):
    r"""First- and second-order tilted sums, one exponential per (row, sample, beta).

    With ``E = exp(log_w + lam x - c)``: ``s1 = sum_n E w1 f(x, y)`` and ``s2 = sum_n E^2 w2 h(x, y)``
    over the monomials ``f``, ``h`` of :func:`jaxlimits.moments.monomials` (first and second order).
    The second-order sums are those at ``2 lam`` with squared weights, and ``exp(2 t) = exp(t)^2``
    (see :mod:`jaxlimits.moments`).

    Args:
      x: ``[..., N]`` exponents per unit of ``lam`` (``r - max r <= 0``).
      lam: ``[..., B]`` inverse temperatures.
      y: ``[..., N]`` the centred scores, or None (no scores: ``y = x``, three monomials).
      log_w: ``[..., N]`` log-weights in the exponent (``-inf``: the sample counts for nothing), or None.
      w1, w2: ``[..., N]`` weights of the first- and second-order columns, or None for 1.
      c: ``[..., B]`` the shift, or None for 0 (ignored with ``shift``).
      first_is_second: the first-order sums over the second-order monomials (the cross sums).
      second: also the second-order sums.
      shift: use ``c = max_n (log_w + lam x)`` (0 where no sample counts) instead of ``c``.

    Returns:
      ``s1 [..., B, k1]``, ``s2 [..., B, k2]`` (None without ``second``), and the shift used ``c [..., B]``.
    """
    args, params = _pack(x, lam, y, log_w, w1, w2, c, first_is_second, second, shift)
    if not (x.dtype in (jnp.float32, jnp.float64) and lam.shape[-1] >= MIN_BETAS and available()):
        return _unpack(_jax_kernel(*args, **params), second)
    s1, s2, c_out = _fused(*args, tuple(sorted(params.items())))
    return _unpack((s1, s2, c_out), second)
