"""Process-level set-up for heavy commands: run under tcmalloc when the machine has it.

XLA:CPU allocates fresh activation buffers every step. Under glibc malloc those are mmapped and
unmapped each time, so every step page-faults its whole working set back in: measured here,
MobileNetV2 x0.35 at 32 px trains at 1425 img/s with 2.9 s of system time per 20 steps, and at
2521 img/s with 0.16 s under tcmalloc, which keeps the pages (docs/benchmarks.md). The library
cannot change its own allocator, so the `lcnn` entry point re-executes itself with LD_PRELOAD.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/libtcmalloc_minimal.so.4",
)
DISABLE_ENV = "LCNN_NO_TCMALLOC"


def find_tcmalloc() -> str | None:
    """Path of tcmalloc-minimal (Debian: libtcmalloc-minimal4), or None."""
    return next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)


def reexec_with_tcmalloc(argv: list[str]) -> None:
    """Replace this process by the same command under tcmalloc, unless already so or disabled."""
    if os.environ.get(DISABLE_ENV) or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
    env[DISABLE_ENV] = "1"  # never loop, even if the preload silently fails
    os.execve(sys.executable, [sys.executable, "-m", "lcnn_jax.cli", *argv], env)


CACHE_ENV = "LCNN_CACHE_DIR"


def compilation_cache_dir() -> str:
    """Where compiled XLA programs persist: $LCNN_CACHE_DIR, else ~/.cache/lcnn_jax/xla."""
    return os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "lcnn_jax" / "xla")


def enable_compilation_cache(cache_dir: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache (shared by train, eval, sweeps and experiments).

    A train step compiles in 5-40 s on a 2-core CPU and loads from the cache in well under a
    second (docs/benchmarks.md), so every run after the first of an architecture (other seeds,
    reruns, the eval of a finished run) skips the compile. Programs that compile in under 0.5 s
    are not worth the disk.
    """
    import jax

    path = cache_dir or compilation_cache_dir()
    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path
