"""Guard against an XLA CPU scheduler deadlock seen with jaxlib 0.10.x.

With jaxlib 0.10.2 on CPU, some compiled, vmapped PPO graphs (this library's
and other JAX PPO code alike, depending on the graph) hang forever with every
XLA thread idle. Turning off XLA's concurrency-optimized CPU scheduler avoided
it every time. XLA reads ``XLA_FLAGS`` once, when the first backend starts, so
this module must run before any computation; ``purejaxppo/__init__.py``
imports it first.

The flag is added only where it is known to exist (jaxlib 0.10.x): XLA aborts
the process on an unknown flag, so it is never added blindly. A user's own
``XLA_FLAGS`` setting of the same flag wins, and ``PUREJAXPPO_XLA_GUARD=0``
turns the guard off.
"""

from __future__ import annotations

import os
from importlib import metadata

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
_KNOWN_JAXLIB_PREFIXES = ("0.10.",)


def apply() -> bool:
    """Add ``FLAG=false`` to ``XLA_FLAGS`` if needed; return whether it is set."""
    if os.environ.get("PUREJAXPPO_XLA_GUARD", "1") == "0":
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return f"{FLAG}=false" in flags
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not version.startswith(_KNOWN_JAXLIB_PREFIXES):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
    return True


ACTIVE = apply()
