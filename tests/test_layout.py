"""The layout's promises: a config (or asking whether the run has several
processes, or checking a grid or a population) starts no JAX backend, and a plain run
imports no machine tuning or measurement module (apart from the XLA guard)."""

import subprocess
import sys

from purejaxppo.config import GYMNAX_ENV_NAMES, known_env_names

_PLAIN_RUN = r"""
import sys
import jax._src.xla_bridge as xla_bridge
from purejaxppo import PPOConfig, make_train, preset_config
config = preset_config("Pendulum-v1", total_timesteps=16 * 16, num_envs=16, num_steps=16)
PPOConfig(env_name="Breakout-MinAtar", num_envs=8)
from purejaxppo import distributed  # a one-process run's questions start no backend either
assert (distributed.process_count(), distributed.is_main(), distributed.broadcast_text("x")) == (1, True, "x")
from purejaxppo.sweep import grid_points, parse_grid, points_hparams  # a grid is checked before JAX starts
points_hparams(config, grid_points(parse_grid(["lr=1e-4,3e-4", "clip_eps=0.1,0.2"])))
from purejaxppo.pbt import PBTConfig, check_pbt
check_pbt(preset_config("CartPole-v1"), PBTConfig(population=4, ready_every=3))
print("backends after the configs:", sorted(xla_bridge._backends), "gymnax" in sys.modules)
import jax
result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
jax.block_until_ready(result)
print("modules:", " ".join(sorted(m for m in sys.modules if m.startswith("purejaxppo")
                                  or m in ("timing", "flops"))))
"""


def test_a_config_starts_no_backend_and_a_plain_run_imports_no_tuning():
    out = subprocess.run([sys.executable, "-c", _PLAIN_RUN], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "backends after the configs: [] False" in out, out
    modules = out.split("modules:")[1].split()
    assert "purejaxppo.train" in modules and "purejaxppo.fast.shuffle" in modules
    tuning = [m for m in modules if m.startswith("purejaxppo.platform.") and m != "purejaxppo.platform.xla_guard"]
    assert tuning == [], tuning
    assert "timing" not in modules and "flops" not in modules
    assert "purejaxppo.platform.xla_guard" in modules  # jaxlib 0.10's deadlock guard stays


def test_the_built_in_env_names_are_gymnaxs():
    import gymnax

    assert list(GYMNAX_ENV_NAMES) == list(gymnax.registered_envs)
    assert known_env_names() == list(gymnax.registered_envs)  # gymnax imported: its registry
