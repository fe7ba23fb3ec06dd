"""Shared test helpers. Importing purejaxppo first applies its XLA guard
(see purejaxppo/platform/xla_guard.py) before jax starts a backend."""

import os
import sys
from pathlib import Path

# The suite runs in two worker processes (pytest-xdist, pyproject.toml): on a
# GPU, each must not take most of its memory up front, as JAX does by default.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The command line's default run directories (runs/<env>/<time>) go to a
# scratch directory, not into the checkout.
import tempfile  # noqa: E402

os.environ.setdefault("PUREJAXPPO_RUNS", tempfile.mkdtemp(prefix="purejaxppo-test-runs-"))

import purejaxppo  # noqa: F401  (must come before any jax computation)
import pytest

from purejaxppo import PPOConfig

ROOT = Path(__file__).resolve().parent.parent
# The measurement helpers (benchmarks/flops.py, benchmarks/timing.py) are
# importable by the tests as they are by the benchmark scripts beside them.
sys.path.insert(0, str(ROOT / "benchmarks"))
SPEC_DIRS = [ROOT.parent / "shared" / "spec", Path(__file__).parent / "spec"]


def spec_path(name: str) -> Path:
    """The spec CSV: ../shared/spec when present (CI), else the vendored copy."""
    for d in SPEC_DIRS:
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(name)


@pytest.fixture
def tiny_config() -> PPOConfig:
    """A CartPole config small enough to compile and run in seconds."""
    return PPOConfig(
        env_name="CartPole-v1",
        total_timesteps=4 * 32 * 3,
        num_envs=4,
        num_steps=32,
        update_epochs=2,
        num_minibatches=2,
        hidden_sizes=(16, 16),
    )


@pytest.fixture
def default_prng_impl():
    """Sets JAX's default PRNG implementation for one test (``set(name)``, as
    often as needed), restoring the previous one afterwards, whatever happens."""
    import jax

    before = jax.config.jax_default_prng_impl

    def set_impl(name):
        jax.config.update("jax_default_prng_impl", name)

    try:
        yield set_impl
    finally:
        jax.config.update("jax_default_prng_impl", before)


@pytest.fixture(scope="module")
def quick_compiles():
    """XLA's quick compile mode (``jax_disable_most_optimizations``) for a
    module whose tests are bound by compiling large env graphs (the
    adapters' suites: ~30% less compile time), restored after it. Use with
    ``pytestmark = pytest.mark.usefixtures("quick_compiles")``."""
    import jax

    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)
