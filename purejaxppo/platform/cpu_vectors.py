"""The SIMD width XLA's CPU compiler prefers when it vectorises a kernel.

XLA CPU compiles each kernel with LLVM and asks it for vectors of
``--xla_cpu_prefer_vector_width`` bits, 256 unless ``XLA_FLAGS`` says
otherwise. That default suits CPUs whose 512-bit units lower the clock
(the first AVX-512 Xeons). AMD's Zen 4 and Zen 5 run AVX-512 without
lowering the clock, and on both 512-bit vectors made the same kernels faster.

Measured on the project's 2-core AMD EPYCs with AVX-512, with 512 against
XLA's default 256 (benchmarks/NOTES.md):
- a Zen 5: CartPole defaults trained 6-12% faster
  (alternating fresh processes); 2048 x 128, the vmapped CartPole cases and
  Pendulum 3-42% faster, the MinAtar CNN within the noise (two alternating
  runs of ``python benchmarks/throughput.py --no-sweep``); PureJaxRL's PPO
  gained about the same, so this is the machine's gain, not this library's;
- a Zen 4, which runs 512-bit work as two 256-bit halves: 512
  was faster in every case of two alternating pairs of ``python
  benchmarks/throughput.py --no-sweep --compile-repeats 1 --repeats 5
  --cpu-vector-width 256`` / ``512``, by less: CartPole defaults 0.4-2.3%,
  2048 x 128 0.8-0.9%, 8 seeds 0.7-2.4%, Pendulum 2.9-3.2%, the MinAtar CNN
  7-9%;
- compile time was about the same on both (on the Zen 4 the CNN's 3-9%
  shorter at 512).

The numbers match up to float rounding: different vector widths sum in a
different order, so long runs drift apart within the spread between seeds.

`cpu_vector_width_for` encodes the rule (512 on an AMD CPU with AVX-512,
else XLA's default). `set_cpu_vector_width` applies a choice by editing
``XLA_FLAGS``, which XLA reads once, when JAX starts its backend, so it must
run before the first computation. Like the CPU pool (`purejaxppo.platform.cpu_threads`),
this applies to the whole process, so ``import purejaxppo`` leaves it alone:
the CLI (``--cpu-vector-width``) and the benchmarks apply it. In your own
scripts, call ``set_cpu_vector_width(resolve_cpu_vector_width("auto"))``
first thing (a width already in ``XLA_FLAGS`` wins), or start Python with
``XLA_FLAGS=--xla_cpu_prefer_vector_width=512``.

XLA aborts the process on a flag it does not know. This one has been in XLA
for years and was checked with jaxlib 0.10.2 and 0.11.2; nothing is set
unless a caller asks (the CLI's ``auto`` does on an AMD CPU with AVX-512).
"""

from __future__ import annotations

import numbers
import os
from typing import NamedTuple

FLAG = "--xla_cpu_prefer_vector_width"
ALLOWED_WIDTHS = (128, 256, 512)
XLA_DEFAULT_WIDTH = 256
CPUINFO = "/proc/cpuinfo"


class CpuInfo(NamedTuple):
    """What Linux's ``/proc/cpuinfo`` says of the first CPU: vendor id, model
    name, feature flags, and the family and model numbers (None where absent)."""

    vendor: str
    model: str
    flags: frozenset[str]
    family: int | None = None
    model_number: int | None = None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def cpu_info(path: str = CPUINFO) -> CpuInfo:
    """The first CPU's vendor id, model name, feature flags, family and model
    number from Linux's ``/proc/cpuinfo``; empty fields (None for the
    numbers) where there is no such file."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if line.strip() == "":  # the first CPU's block ends
                    break
    except OSError:
        pass
    return CpuInfo(fields.get("vendor_id", ""), fields.get("model name", ""),
                   frozenset(fields.get("flags", "").split()),
                   _int_or_none(fields.get("cpu family")), _int_or_none(fields.get("model")))


def amd_avx512_core(info: CpuInfo) -> str | None:
    """"Zen 4" or "Zen 5" for an AMD CPU with AVX-512 (family 25, the first
    of AMD's families to have it, or 26), else None. The model name alone
    ("AMD EPYC" on this project's virtual machines) does not tell them
    apart, and they run 512-bit work differently (Zen 4 in two halves)."""
    if info.vendor != "AuthenticAMD" or "avx512f" not in info.flags:
        return None
    return {25: "Zen 4", 26: "Zen 5"}.get(info.family)


def cpu_vector_width_for(path: str = CPUINFO) -> int | None:
    """512 on an AMD CPU with AVX-512 (Zen 4 and later, which run it at full
    clock), else None (XLA's default, 256 bits). Measured faster on a Zen 5
    and on a Zen 4 (module docstring). Intel CPUs
    with AVX-512 keep the default: some of them slow their clock for 512-bit
    work, and none was measured here."""
    info = cpu_info(path)
    return 512 if info.vendor == "AuthenticAMD" and "avx512f" in info.flags else None


def _without_flag(xla_flags: str) -> list[str]:
    return [f for f in xla_flags.split() if f.split("=", 1)[0] != FLAG]


def current_cpu_vector_width() -> int | None:
    """The width ``XLA_FLAGS`` asks for (the last setting of the flag wins,
    as in XLA), or None where it does not set one."""
    width = None
    for token in os.environ.get("XLA_FLAGS", "").split():
        name, _, value = token.partition("=")
        if name == FLAG and value.isdigit():
            width = int(value)
    return width


def with_cpu_vector_width(xla_flags: str, width: int | None) -> str:
    """``xla_flags`` with the flag set to ``width`` (None: removed, leaving
    XLA's default); every other flag is kept as it was."""
    tokens = _without_flag(xla_flags)
    if width is not None:
        tokens.append(f"{FLAG}={width}")
    return " ".join(tokens)


def user_set_width() -> bool:
    """Whether ``XLA_FLAGS`` already sets the flag (the caller's choice)."""
    flags = os.environ.get("XLA_FLAGS", "")
    return len(_without_flag(flags)) != len(flags.split())


def _check_width(width) -> None:
    if width is not None and (
        isinstance(width, bool) or not isinstance(width, numbers.Integral) or width not in ALLOWED_WIDTHS
    ):
        raise ValueError(
            f"cpu_vector_width={width!r} is not allowed; allowed: None (XLA's default, "
            f"{XLA_DEFAULT_WIDTH}) or one of {ALLOWED_WIDTHS} bits"
        )


def set_cpu_vector_width(width: int | None) -> None:
    """Ask XLA CPU for ``width``-bit vectors (128, 256 or 512), or None for
    XLA's default. Call it before the first JAX computation of the process.

    A width ``XLA_FLAGS`` already asks for is left as it is, whatever it
    is (None and 256 both mean XLA's default).

    Raises:
        ValueError: ``width`` is not None or the int 128, 256 or 512.
        RuntimeError: JAX's backends have started with another width; XLA
            read its flags then.
    """
    from purejaxppo.platform.cpu_threads import backend_started

    def effective(w):
        return XLA_DEFAULT_WIDTH if w is None else w

    now = current_cpu_vector_width()
    if not isinstance(width, bool) and effective(width) == effective(now):
        return
    _check_width(width)
    width = None if width is None else int(width)
    if backend_started():
        raise RuntimeError(
            f"cpu vector width: cannot change it to {width or 'the default'} (now "
            f"{current_cpu_vector_width() or 'the default'}): JAX's backend has started, and XLA "
            "read XLA_FLAGS then. Set it before the first JAX computation, or start the process "
            f"with XLA_FLAGS={FLAG}={width or XLA_DEFAULT_WIDTH}."
        )
    flags = with_cpu_vector_width(os.environ.get("XLA_FLAGS", ""), width)
    if flags:
        os.environ["XLA_FLAGS"] = flags
    else:
        os.environ.pop("XLA_FLAGS", None)


def parse_cpu_vector_width(value: str | int | None) -> str | int | None:
    """A ``--cpu-vector-width`` value: ``"auto"`` (`cpu_vector_width_for`),
    ``"default"`` or None (XLA's default), or 128, 256 or 512."""
    if value is None or value == "default":
        return None
    if value == "auto":
        return "auto"
    try:
        width = int(value)
    except (TypeError, ValueError):
        width = 0
    if isinstance(value, bool) or str(width) != str(value).strip() or width not in ALLOWED_WIDTHS:
        raise ValueError(
            f"cpu_vector_width={value!r} is not allowed; allowed: 'auto', 'default' or one of "
            f"{', '.join(map(str, ALLOWED_WIDTHS))}"
        )
    return width


def resolve_cpu_vector_width(choice: str | int | None) -> int | None:
    """The width a run asks for. ``"auto"`` keeps a width ``XLA_FLAGS``
    already sets (the user's choice) and otherwise applies
    `cpu_vector_width_for`; ``None`` / ``"default"`` and widths are taken as
    they are."""
    choice = parse_cpu_vector_width(choice)
    if choice != "auto":
        return choice
    if user_set_width():
        return current_cpu_vector_width()
    return cpu_vector_width_for()
