"""``import gymnax`` with its plotting imports deferred to their first use.

Plain equivalent: ``import gymnax``. The same modules and environments; only
matplotlib.pyplot and seaborn (and with them pandas and scipy.stats), which
gymnax's environment modules import for rendering alone, load when a
renderer first needs them.

Gain: start-up. A fresh process reached a built CartPole config in 1.59 s
against 3.21 s with the plain import, and its peak memory fell by 60-135 MB
(``python benchmarks/throughput.py`` reports the start-up time both ways).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


# Imported at module level by gymnax's environment modules (Pong, Catch,
# FourRooms, MetaMaze, PointRobot) for their ``render`` methods only.
GYMNAX_RENDER_MODULES = ("matplotlib.pyplot", "seaborn")


class _DeferredModule(types.ModuleType):
    """Stands in for a module while gymnax imports it; the first attribute
    read imports the real module and forwards to it (and every later read)."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:  # read while gymnax is importing
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)


def import_gymnax() -> types.ModuleType:
    """``import gymnax``, with its plotting imports deferred to first use.

    gymnax's environment modules import `GYMNAX_RENDER_MODULES` at module
    level, for rendering only, and with them pandas and scipy.stats: most of
    what ``import gymnax`` costs after JAX (``python -X importtime -c "import
    gymnax"``). A fresh process reaches a built config in about half the
    time (`benchmarks/throughput.py` times both ways; its latest figures are
    in ``benchmarks/results/throughput-cpu.md``).

    While gymnax imports, each of those not yet imported is a
    `_DeferredModule` in ``sys.modules``; afterwards ``sys.modules`` is as
    before, so any other ``import seaborn`` is the ordinary one. gymnax's
    modules keep the stand-ins: its renderers import the real module on
    their first use, and every attribute read goes to it. (A stdlib
    ``importlib.util.LazyLoader`` module would not do: the next ``import``
    of it reads its ``__spec__``, and that read loads it.)
    """
    if "gymnax" in sys.modules:
        return importlib.import_module("gymnax")
    deferred = [name for name in GYMNAX_RENDER_MODULES if name not in sys.modules]
    for name in deferred:
        sys.modules[name] = _DeferredModule(name)
    try:
        return importlib.import_module("gymnax")
    finally:
        for name in deferred:
            if isinstance(sys.modules.get(name), _DeferredModule):
                del sys.modules[name]
