"""A user's own env: the protocol checker, an env object, a "module:function" from the CLI."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.checkpoint import restore_checkpoint, restore_policy, train_with_checkpoints
from purejaxppo.envs import check_env, load_env, make_env
from purejaxppo.evaluation import make_evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/ as a namespace package
from examples.custom_env import Corridor, CorridorParams, make_env as make_corridor  # noqa: E402

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

TINY = dict(env_name="Corridor", num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(16,),
            total_timesteps=4 * 16 * 3)


def test_the_example_env_keeps_the_protocol():
    env, params = make_corridor()
    assert check_env(env, params) == []
    assert check_env(env) == []  # its default_params


class FiveValues(Corridor):  # gymnax < 1.0's step
    def step(self, key, state, action, params=None):
        obs, state, reward, terminated, _, info = super().step(key, state, action, params)
        return obs, state, reward, terminated, info


class NoFinalObservation(Corridor):
    def step(self, key, state, action, params=None):
        out = super().step(key, state, action, params)
        return (*out[:5], {})


class WrongShape(Corridor):
    def observation_space(self, params):
        return super().observation_space(params).__class__(0.0, 1.0, (self.length,), jnp.float32)


class FloatFlags(Corridor):
    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, info = super().step_env(key, state, action, params)
        return obs, state, reward, terminated.astype(jnp.float32), info


class ChangingState(Corridor):
    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, info = super().step_env(key, state, action, params)
        return obs, state.replace(position=state.position.astype(jnp.float32)), reward, terminated, info


class Impure(Corridor):
    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, info = super().step_env(key, state, action, params)
        noise = jax.pure_callback(lambda: np.float32(np.random.rand()), jax.ShapeDtypeStruct((), jnp.float32))
        return obs, state, reward + noise, terminated, info


@pytest.mark.parametrize("env, expected", [
    (FiveValues(), r"step returned 5 values; the protocol \(gymnax >= 1.0\) returns six"),
    (NoFinalObservation(), r"info lacks 'final_observation'"),
    (WrongShape(), r"reset's observation has shape \(9,\) per env; the observation space says \(8,\)"),
    (FloatFlags(), r"step 0's terminated is float32; the protocol's flags are bool"),
    (ChangingState(), r"step_env changes the state.s structure, shapes or dtypes from reset.s"),
    (Impure(), r"gave two results for the same key, state and action"),
    (object(), r"object has no default_params"),
])
def test_check_env_names_each_violation(env, expected):
    problems = check_env(env, None if isinstance(env, object) and not isinstance(env, Corridor) else CorridorParams(),
                         num_steps=2)
    assert len(problems) >= 1 and any(__import__("re").search(expected, p) for p in problems), problems


def test_an_env_object_trains_and_its_checkpoints_restore(tmp_path):
    """``make_train(config, env=...)``: env_name is only a label; the
    checkpoint restores with the same env object given again."""
    env, params = make_corridor(length=6)
    config = PPOConfig(**TINY)
    train = make_train(config, env=env, env_params=params)
    assert train.env is env and train.env_spec.obs_shape == (7,)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    loss = train_with_checkpoints(train, keys, tmp_path / "ckpt", every=3).result.metrics["value_loss"]
    assert loss.shape == (2, 3) and np.all(np.isfinite(loss))
    with pytest.raises(ValueError, match="'Corridor' is not a registered gymnax environment"):
        restore_checkpoint(tmp_path / "ckpt")  # the label names no env
    ckpt = restore_checkpoint(tmp_path / "ckpt", env=env, env_params=params)
    assert ckpt.updates_done == 3
    policy = restore_policy(tmp_path / "ckpt", seed=1, env=env, env_params=params)
    evaluate = make_evaluate(config, 2, env=env, env_params=params)
    assert evaluate(policy.params, jax.random.PRNGKey(1), policy.obs_norm).shape == (2,)


def test_the_example_checks_its_env_and_learns_it(capsys, monkeypatch):
    """``python examples/custom_env.py``: the protocol is kept and every
    seed reaches the corridor's best return."""
    from examples.custom_env import main

    monkeypatch.setattr(sys, "argv", ["custom_env.py", "--num-seeds", "2", "--total-timesteps", "40960"])
    main()
    out = capsys.readouterr().out
    assert "check_env: the protocol is kept" in out
    returns = [float(r) for r in out.split("final returns ")[1].split(" (")[0].split(", ")]
    best = float(out.split("(the best is ")[1].split(")")[0])
    assert len(returns) == 2 and min(returns) > best - 0.05, out


class DeclaresItsPeriod(Corridor):
    def truncation_period(self, params):
        return params.max_steps_in_episode


def test_a_declared_truncation_period_takes_the_reduced_critic_pass_with_the_same_results():
    """An env declaring ``truncation_period`` skips the final observations'
    values the rollout already has; the run is the one without it."""
    config = PPOConfig(**{**TINY, "num_steps": 24})
    params = CorridorParams(max_steps_in_episode=10)  # several truncations per rollout
    runs = {}
    for env in (Corridor(), DeclaresItsPeriod()):
        train = make_train(config, env=env, env_params=params)
        runs[type(env).__name__] = jax.jit(train)(jax.random.PRNGKey(3)).metrics
    for name, value in runs["Corridor"].items():
        np.testing.assert_allclose(runs["DeclaresItsPeriod"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_env_errors_name_the_problem(tmp_path, monkeypatch):
    env, params = make_corridor()
    with pytest.raises(ValueError, match=r"config.env_kwargs=\{'length': 3\} with an env object given"):
        make_train(PPOConfig(**TINY, env_kwargs={"length": 3}), env=env)
    with pytest.raises(ValueError, match="env_params \\(a params object\\) is given without env"):
        make_train(PPOConfig(**{**TINY, "env_name": "CartPole-v1"}), env_params=params)
    with pytest.raises(ValueError, match=r"env_params has unknown field\(s\) \['gravity'\] for 'Corridor'"):
        make_train(PPOConfig(**TINY, env_params={"gravity": 1.0}), env=env)
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        load_env("no_such_module:make")
    with pytest.raises(ValueError, match="has no attribute 'make_nothing'"):
        load_env("examples.custom_env:make_nothing")
    (tmp_path / "three.py").write_text("def make():\n    return 1, 2, 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"returned a tuple of 3 values; allowed: \(env, env_params\) or an env"):
        load_env("three:make")
    with pytest.raises(ValueError, match="env_kwargs .*unexpected keyword"):
        load_env("examples.custom_env:make_env", {"width": 3})
    no_limit = type("NoLimit", (), {})()  # params without max_steps_in_episode
    with pytest.raises(ValueError, match="whose params have no max_steps_in_episode; allowed: an int >= 1"):
        make_evaluate(PPOConfig(**TINY), 2, env=_WithParams(), env_params=no_limit)
    assert make_env("examples.custom_env:make_env", (("length", 5),))[2].obs_shape == (6,)


class _WithParams(Corridor):
    def observation_space(self, params):
        return super().observation_space(CorridorParams())

    def action_space(self, params=None):
        return super().action_space()


def test_the_cli_trains_a_module_function_env_and_evaluates_it(capsys, tmp_path, monkeypatch):
    """``--env examples.custom_env:make_env`` (found from the working
    directory) with ``--env-kwargs``; ``eval`` restores it from the run's
    config."""
    from purejaxppo.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    run = tmp_path / "run"
    main(["--env", "examples.custom_env:make_env", "--env-kwargs", "length=5", "--total-timesteps", "1536",
          "--num-envs", "4", "--num-steps", "128", "--num-minibatches", "2", "--hidden-sizes", "8",
          "--eval-episodes", "2", "--run-dir", str(run), "--no-progress", "--no-compile-cache"])
    assert "greedy eval" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["env_name"] == "examples.custom_env:make_env"
    main(["eval", str(run), "--episodes", "2"])
    assert "over 2 greedy episode(s)" in capsys.readouterr().out
    main(["check-env", "--env", "examples.custom_env:make_env", "--steps", "4"])
    assert "keeps the env protocol: observations (9,), actions Discrete(2)" in capsys.readouterr().out
    (tmp_path / "broken_env.py").write_text(
        "from test_custom_envs import NoFinalObservation\ndef make():\n    return NoFinalObservation()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["check-env", "--env", "broken_env:make", "--steps", "4"])
    assert exit_info.value.code == 1 and "info lacks 'final_observation'" in capsys.readouterr().out
