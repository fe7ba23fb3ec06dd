"""A persistent compilation cache: compile a training run once per machine.

Compiling ``make_train(config)`` takes seconds (on a 2-core CPU, most of it
is LLVM code generation of the update's kernels; see benchmarks/NOTES.md).
JAX can keep compiled executables on disk and reuse them in a later process
when the same program is compiled again for the same backend, JAX version and
XLA flags. `enable_compilation_cache` turns that on with a size cap;
`CacheCounter` tells whether a compilation was served from the cache, so a
warm-cache compile time is never reported as a cold one.

The library itself never changes JAX's global configuration on import; the
command line turns the cache on (``--no-compile-cache`` turns it off), and
Python users call `enable_compilation_cache` themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MAX_BYTES = 2 * 1024**3
"""Default cap of the cache's size on disk (least recently used entries go first)."""

_LOOKUPS = "/jax/compilation_cache/compile_requests_use_cache"
_HITS = "/jax/compilation_cache/cache_hits"


def default_cache_dir() -> Path:
    """``$PUREJAXPPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/purejaxppo/xla``, else
    ``~/.cache/purejaxppo/xla``."""
    if os.environ.get("PUREJAXPPO_CACHE_DIR"):
        return Path(os.environ["PUREJAXPPO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "purejaxppo" / "xla"


def enable_compilation_cache(
    cache_dir: str | os.PathLike | None = None,
    min_compile_time_s: float = 0.5,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Turn on JAX's persistent compilation cache; return its directory.

    Args:
        cache_dir: where executables are kept (created if missing); default
            `default_cache_dir`.
        min_compile_time_s: programs that compile faster than this are not
            stored (>= 0).
        max_bytes: the cache's cap on disk, > 0, or -1 for no cap.

    It applies to the compilations that follow it, including when some
    program was compiled earlier in the process (JAX decides once per process
    whether the cache is in use; this resets that decision). It changes JAX's
    global configuration (``jax_compilation_cache_dir`` and two related
    options).
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if min_compile_time_s < 0:
        raise ValueError(f"min_compile_time_s={min_compile_time_s!r} must be >= 0")
    if max_bytes != -1 and max_bytes <= 0:
        raise ValueError(f"max_bytes={max_bytes!r} must be > 0, or -1 for no cap")
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    compilation_cache.reset_cache()
    return path


class CacheCounter:
    """Counts persistent-cache hits and misses of the compilations in a ``with`` block.

    >>> with CacheCounter() as counter:
    ...     compiled = jax.jit(f).lower(x).compile()
    >>> counter.hits, counter.misses
    """

    def __init__(self) -> None:
        self.lookups = 0
        self.hits = 0
        self.enabled = False

    @property
    def misses(self) -> int:
        """Lookups not served from the cache (compiled, and stored if slow enough)."""
        return self.lookups - self.hits

    def _listen(self, event: str, **_kwargs) -> None:
        if event == _LOOKUPS:
            self.lookups += 1
        elif event == _HITS:
            self.hits += 1

    def __enter__(self) -> "CacheCounter":
        import jax

        # JAX looks the cache up even when no directory is set (and finds nothing).
        self.enabled = bool(jax.config.jax_compilation_cache_dir)
        jax.monitoring.register_event_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        import jax

        jax.monitoring.unregister_event_listener(self._listen)

    @property
    def status(self) -> str:
        """``"hit"`` where a compiled program came from the cache, ``"miss"``
        where the cache was looked up but nothing came from it, ``"off"``
        where no cache directory was set (JAX still looks the cache up then,
        and finds nothing).

        Tiny helper programs compiled along the way take less than the
        storage threshold and miss every time; they do not make a hit partial.
        """
        if not self.enabled:
            return "off"
        return "hit" if self.hits else "miss"
