"""The persistent compilation cache: compiled XLA programs kept on disk between Python sessions.

A session's first call of each entry point (:func:`jaxlimits.frontier`, :func:`jaxlimits.tilt`,
...) is mostly compilation; with the cache on, later sessions load the compiled programs instead.
The ``jaxlimits`` console script turns it on by itself; a library user calls
:func:`enable_compilation_cache` once (README "Scale" gives the measured effect).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Programs that compile faster than this (seconds) are not written to the cache. Low: a warm CLI
#: ``frontier`` of 1M rows still compiled ~18 small programs (0.02-0.5 s each, ~0.6 s in all) at
#: 0.5 s; reading them back costs milliseconds (benchmarks/README.md, "Loading 1,000,000 rows").
MIN_COMPILE_SECONDS = 0.02


def default_dir() -> str:
    """``$JAXLIMITS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxlimits/xla`` (``~/.cache/jaxlimits/xla``)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxlimits" / "xla"
    return os.environ.get("JAXLIMITS_CACHE_DIR", str(default))


def enable_compilation_cache(path=None) -> str | None:
    """Keeps compiled programs on disk, so that later Python sessions skip their compilation.

    Call it once, before the first computation. Without ``path`` the folder is
    ``$JAXLIMITS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxlimits/xla`` (by default
    ``~/.cache/jaxlimits/xla``), the console script's; ``JAXLIMITS_CACHE_DIR=""`` turns it off,
    and a cache already configured for JAX (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config.update``) is left as it is. A ``path`` given is used whatever JAX had.

    Args:
      path: the folder (created if missing), or None for the default above.

    Returns:
      The folder in use, or None when the cache stays off (turned off, or the folder cannot be
      created, e.g. a read-only home: computations then run as before, compiling each session).
    """
    import jax

    if path is None:
        if jax.config.jax_compilation_cache_dir:  # JAX_COMPILATION_CACHE_DIR, or set in code
            return jax.config.jax_compilation_cache_dir
        path = default_dir()
        if not path:
            return None
    path = str(path)
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
