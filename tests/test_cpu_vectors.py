"""XLA CPU's preferred vector width: the rule, the flag edits, the errors, and
that the width reaches LLVM's code."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from purejaxppo.platform import cpu_vectors
from purejaxppo.cli import apply_cpu_vector_width

FLAG = "--xla_cpu_prefer_vector_width"


def _cpuinfo(tmp_path, vendor, flags, family=None, model=None):
    """A cpuinfo file whose first CPU is as given and whose second is not:
    only the first is read."""
    path = tmp_path / "cpuinfo"
    numbers = "".join(
        f"{name}\t: {value}\n" for name, value in (("cpu family", family), ("model", model)) if value is not None
    )
    first = f"processor\t: 0\nvendor_id\t: {vendor}\n{numbers}model name\t: X\nflags\t\t: {' '.join(flags)}\n\n"
    second = "processor\t: 1\nvendor_id\t: Other\ncpu family\t: 6\nmodel\t: 85\nmodel name\t: Y\nflags\t\t: fpu avx512f\n\n"
    path.write_text(first + second)
    return str(path)


@pytest.mark.parametrize("vendor, flags, expected", [
    ("AuthenticAMD", ["sse2", "avx2", "avx512f", "avx512bw"], 512),   # Zen 4, Zen 5
    ("AuthenticAMD", ["sse2", "avx2"], None),                         # Zen 3: no AVX-512
    ("GenuineIntel", ["sse2", "avx2", "avx512f"], None),              # may slow its clock: not measured
    ("GenuineIntel", ["sse2", "avx2"], None),
])
def test_rule_picks_512_only_for_amd_with_avx512(tmp_path, vendor, flags, expected):
    path = _cpuinfo(tmp_path, vendor, flags)
    assert cpu_vectors.cpu_info(path) == (vendor, "X", frozenset(flags), None, None)
    assert cpu_vectors.cpu_vector_width_for(path) == expected


@pytest.mark.parametrize("vendor, flags, family, expected", [
    ("AuthenticAMD", ["avx2", "avx512f"], 25, "Zen 4"),
    ("AuthenticAMD", ["avx2", "avx512f"], 26, "Zen 5"),
    ("AuthenticAMD", ["avx2"], 25, None),              # Zen 3 is family 25 too, without AVX-512
    ("AuthenticAMD", ["avx2", "avx512f"], 27, None),   # a later family: not named
    ("AuthenticAMD", ["avx2", "avx512f"], None, None),
    ("GenuineIntel", ["avx2", "avx512f"], 6, None),
])
def test_cpu_family_read_and_amd_avx512_core_named(tmp_path, vendor, flags, family, expected):
    info = cpu_vectors.cpu_info(_cpuinfo(tmp_path, vendor, flags, family, 17 if family else None))
    assert (info.family, info.model_number) == ((family, 17) if family else (None, None))
    assert cpu_vectors.amd_avx512_core(info) == expected
    # The width rule goes by vendor and flags alone: 512 on Zen 4 and Zen 5 alike.
    assert cpu_vectors.cpu_vector_width_for(_cpuinfo(tmp_path, vendor, flags, family)) == (
        512 if vendor == "AuthenticAMD" and "avx512f" in flags else None
    )


def test_rule_without_cpuinfo_keeps_xla_default(tmp_path):
    assert cpu_vectors.cpu_info(str(tmp_path / "absent")) == ("", "", frozenset(), None, None)
    assert cpu_vectors.cpu_vector_width_for(str(tmp_path / "absent")) is None


def test_flag_edits_keep_every_other_flag():
    flags = f"--a=1 {FLAG}=128 --b=2 {FLAG}=256"
    assert cpu_vectors.with_cpu_vector_width(flags, 512) == f"--a=1 --b=2 {FLAG}=512"
    assert cpu_vectors.with_cpu_vector_width(flags, None) == "--a=1 --b=2"
    assert cpu_vectors.with_cpu_vector_width("", 256) == f"{FLAG}=256"


def test_current_width_is_the_last_setting(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"{FLAG}=128 --x=1 {FLAG}=512")
    assert cpu_vectors.current_cpu_vector_width() == 512
    monkeypatch.setenv("XLA_FLAGS", "--x=1")
    assert cpu_vectors.current_cpu_vector_width() is None


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), ("default", None), (None, None), ("512", 512), (256, 256), ("128", 128),
])
def test_parse_accepts(value, expected):
    assert cpu_vectors.parse_cpu_vector_width(value) == expected


@pytest.mark.parametrize("value", ["300", "0", "-256", "512.0", "wide", True, 1024, ""])
def test_parse_refuses_naming_field_value_and_allowed(value):
    with pytest.raises(ValueError) as error:
        cpu_vectors.parse_cpu_vector_width(value)
    assert f"cpu_vector_width={value!r} is not allowed" in str(error.value)
    assert "'auto', 'default' or one of 128, 256, 512" in str(error.value)


def test_auto_keeps_a_width_the_user_set(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", f"--x=1 {FLAG}=128")
    assert cpu_vectors.resolve_cpu_vector_width("auto") == 128
    assert cpu_vectors.resolve_cpu_vector_width("512") == 512
    monkeypatch.setenv("XLA_FLAGS", "--x=1")
    assert cpu_vectors.resolve_cpu_vector_width("auto") == cpu_vectors.cpu_vector_width_for()


@pytest.mark.parametrize("width", [512.0, "512", True, 384, 0])
def test_set_refuses_what_is_not_an_allowed_int(monkeypatch, width):
    """512.0 would reach XLA as "512.0", which aborts the process."""
    monkeypatch.setenv("XLA_FLAGS", "--x=1")
    with pytest.raises(ValueError, match=f"cpu_vector_width={width!r} is not allowed"):
        cpu_vectors.set_cpu_vector_width(width)
    assert os.environ["XLA_FLAGS"] == "--x=1"


def test_default_and_256_are_the_same_width(monkeypatch):
    """Both mean XLA's default: asking for one where the other holds is no
    change, so it is not refused after the backend started."""
    import jax

    jax.devices()
    monkeypatch.setenv("XLA_FLAGS", "--x=1")
    cpu_vectors.set_cpu_vector_width(256)
    assert os.environ["XLA_FLAGS"] == "--x=1"
    monkeypatch.setenv("XLA_FLAGS", f"{FLAG}=256")
    cpu_vectors.set_cpu_vector_width(None)
    assert os.environ["XLA_FLAGS"] == f"{FLAG}=256"


@pytest.mark.parametrize("user_width", [64, 1024, 256])
def test_auto_leaves_a_users_width_alone_even_one_it_would_refuse(monkeypatch, user_width):
    """XLA takes widths this module does not offer; a user who set one keeps
    it, and the CLI's auto neither refuses nor rewrites it."""
    monkeypatch.setenv("XLA_FLAGS", f"--x=1 {FLAG}={user_width}")
    assert cpu_vectors.resolve_cpu_vector_width("auto") == user_width
    cpu_vectors.set_cpu_vector_width(cpu_vectors.resolve_cpu_vector_width("auto"))
    assert apply_cpu_vector_width("auto") == f"{user_width} bits (XLA_FLAGS)"
    assert os.environ["XLA_FLAGS"] == f"--x=1 {FLAG}={user_width}"


def test_set_refuses_bad_widths_and_changes_after_start(monkeypatch):
    import jax

    jax.devices()  # this process's backend has started, with whatever flags it had
    now = cpu_vectors.current_cpu_vector_width()
    with pytest.raises(ValueError, match="cpu_vector_width=384 is not allowed"):
        cpu_vectors.set_cpu_vector_width(384)
    cpu_vectors.set_cpu_vector_width(now)  # no change: fine
    other = 128 if now != 128 else 256
    with pytest.raises(RuntimeError, match="JAX's backend has started"):
        cpu_vectors.set_cpu_vector_width(other)
    assert cpu_vectors.current_cpu_vector_width() == now
    # The CLI's auto keeps what the process started with, and says so.
    monkeypatch.setattr(cpu_vectors, "cpu_vector_width_for", lambda path=None: other)
    if FLAG not in os.environ.get("XLA_FLAGS", ""):
        assert "JAX had started; kept" in apply_cpu_vector_width("auto")


_PROGRAM = """
import sys
from purejaxppo.platform.cpu_vectors import set_cpu_vector_width
set_cpu_vector_width(int(sys.argv[1]))
import jax, jax.numpy as jnp
x = jnp.linspace(-1.0, 1.0, 4096, dtype=jnp.float32)
y = jax.jit(lambda v: jnp.tanh(v) * 2.0 + 1.0)(x)
assert abs(float(y[0]) - (float(jnp.tanh(-1.0)) * 2 + 1)) < 1e-6
import os; print("XLA_FLAGS=" + os.environ["XLA_FLAGS"])
"""


@pytest.mark.parametrize("width", [256, 512])
def test_width_reaches_llvm_in_a_fresh_process(tmp_path, width):
    """XLA accepts the flag set through `set_cpu_vector_width` (it aborts on
    flags it does not know), computes the same values, and on a CPU with
    AVX-512 its LLVM code uses vectors of that width: 8 floats at 256 bits,
    16 at 512."""
    dump = tmp_path / "dump"
    env = {**os.environ, "XLA_FLAGS": f"--xla_dump_to={dump}", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _PROGRAM, str(width)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--xla_dump_to={dump}" in proc.stdout
    # 256 is XLA's default: asking for it where no width is set changes no flag.
    assert (f"{FLAG}={width}" in proc.stdout) == (width != cpu_vectors.XLA_DEFAULT_WIDTH)
    flags = cpu_vectors.cpu_info().flags
    if "avx512f" not in flags:
        pytest.skip("the CPU has no AVX-512: LLVM caps vectors at its registers")
    checked = 0
    # The machine code: 512-bit vectors live in zmm registers.
    objects = list(dump.glob("*jit__lambda*fusion_kernel_module.o"))  # the tanh kernel
    if objects and shutil.which("objdump"):
        asm = "".join(subprocess.run(["objdump", "-d", str(p)], capture_output=True, text=True,
                                     check=True).stdout for p in objects)
        assert ("zmm" in asm) == (width == 512)
        assert "ymm" in asm or width == 512
        checked += 1
    # LLVM's optimised IR, where this XLA writes it (jaxlib 0.10 does, 0.11 not).
    kernels = list(dump.glob("*jit__lambda*fusion_kernel_module.ir-with-opt.ll"))
    if kernels:
        text = "".join(p.read_text() for p in kernels)
        lanes = width // 32
        assert f"<{lanes} x float>" in text
        assert f"<{2 * lanes} x float>" not in text
        checked += 1
    if not checked:
        pytest.skip("no kernel's code to read: no objdump, and no LLVM IR in this XLA's dump")


def test_rule_needs_only_the_avx512_foundation_flag(tmp_path):
    """AVX-512 is the avx512f (foundation) flag; other AVX-512 extensions are
    not asked for."""
    assert cpu_vectors.cpu_vector_width_for(_cpuinfo(tmp_path, "AuthenticAMD", ["avx2", "avx512f"])) == 512
    assert cpu_vectors.cpu_vector_width_for(_cpuinfo(tmp_path, "AuthenticAMD", ["avx2", "avx512bw"])) is None


@pytest.mark.parametrize("flags", [f"{FLAG}=wide", f"{FLAG}=", FLAG, f"{FLAG}=-256", f"{FLAG}_x=512"])
def test_current_width_ignores_settings_that_are_not_a_width(monkeypatch, flags):
    monkeypatch.setenv("XLA_FLAGS", f"--x=1 {flags}")
    assert cpu_vectors.current_cpu_vector_width() is None


@pytest.mark.parametrize("value", [512.0, 256.5, "+512", " 512x"])
def test_parse_refuses_what_is_not_a_plain_width(value):
    """A float is no width, even one equal to an allowed int: 512.0 would
    reach XLA as "512.0", which aborts the process."""
    with pytest.raises(ValueError, match="^" + re.escape(f"cpu_vector_width={value!r} is not allowed")):
        cpu_vectors.parse_cpu_vector_width(value)


def test_set_before_start_edits_only_its_flag(monkeypatch):
    from purejaxppo.platform import cpu_threads

    monkeypatch.setattr(cpu_threads, "backend_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", f"--x=1 {FLAG}=128 --y=2")
    cpu_vectors.set_cpu_vector_width(512)
    assert os.environ["XLA_FLAGS"] == f"--x=1 --y=2 {FLAG}=512"
    cpu_vectors.set_cpu_vector_width(None)
    assert os.environ["XLA_FLAGS"] == "--x=1 --y=2"
    monkeypatch.setenv("XLA_FLAGS", f"{FLAG}=512")
    cpu_vectors.set_cpu_vector_width(None)
    assert os.environ.get("XLA_FLAGS", "") == ""
