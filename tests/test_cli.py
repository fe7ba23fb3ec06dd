"""The command line trains and prints its table; bad flags fail clearly."""

import json
import os
import re
import subprocess
import sys

import pytest

from purejaxppo.cli import cpu_threads_for_args, main, parse_args
from purejaxppo.platform.compile_cache import enable_compilation_cache


def test_cli_trains_and_prints_table(capsys, tmp_path):
    out = tmp_path / "run.json"
    main(["--env", "CartPole-v1", "--total-timesteps", "2048", "--num-envs", "4",
          "--num-steps", "64", "--num-seeds", "2", "--eval-episodes", "2",
          "--hidden-sizes", "16", "--json-out", str(out), "--no-compile-cache"])
    text = capsys.readouterr().out
    assert "CartPole-v1" in text and "compile" in text and "greedy eval" in text
    summary = json.loads(out.read_text())["summary"]
    assert summary["num_seeds"] == 2 and len(summary["final_return"]) == 2
    assert summary["compile_cache"] == "off"


def test_cli_compile_cache_is_reused_by_a_second_process(tmp_path):
    """A second process compiling the same run loads it from the persistent
    cache, and the CLI says so (a warm compile is never shown as a cold one)."""
    env = {**os.environ, "PUREJAXPPO_CACHE_DIR": str(tmp_path / "cache")}
    flags = ["--env", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4",
             "--num-steps", "32", "--hidden-sizes", "8", "--eval-episodes", "0", "--num-seeds", "2",
             "--no-progress"]  # no host callback: the program can be cached
    statuses = []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        proc = subprocess.run([sys.executable, "-m", "purejaxppo", *flags, "--json-out", str(out)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        statuses.append(json.loads(out.read_text())["summary"]["compile_cache"])
    assert statuses == ["miss", "hit"]
    assert any((tmp_path / "cache").iterdir())
    assert "from the compilation cache" in proc.stdout
    # A fresh process applies the auto pool size (2 seeds x 4 envs: one
    # thread) and splits the two seeds over two CPU devices where it can.
    if "PJRT_NPROC" not in env:
        assert "cpu threads 1 (auto)" in proc.stdout
    # and XLA CPU's vector width for this CPU (512 bits on AMD with AVX-512).
    if "--xla_cpu_prefer_vector_width" not in env.get("XLA_FLAGS", ""):
        from purejaxppo.platform.cpu_vectors import cpu_vector_width_for

        assert f"cpu vectors {cpu_vector_width_for() or 256} bits (auto)" in proc.stdout
    if "JAX_NUM_CPU_DEVICES" not in env and "device_count" not in env.get("XLA_FLAGS", ""):
        from purejaxppo.platform.cpu_devices import cpu_devices_for

        assert ("seeds over 2 devices" in proc.stdout) == (cpu_devices_for(2) == 2)
        assert json.loads(out.read_text())["summary"]["devices"] == cpu_devices_for(2)


@pytest.mark.parametrize("argv, expected", [
    ([], 1),                                                  # CartPole preset: 4 envs
    (["--num-seeds", "8"], 1),
    (["--num_seeds=9"], None),
    (["--num-envs", "64"], None),
    (["--env", "Pendulum-v1"], 1),                            # its preset: 16 envs
    (["--env", "Breakout-MinAtar"], None),                    # CNN
    (["--torso", "cnn"], None),
    (["--cpu-threads", "3"], 3),
    (["--num-envs", "64", "--cpu-threads=1"], 1),
    (["--cpu-threads", "default"], None),
])
def test_cli_cpu_threads_read_before_the_parse(monkeypatch, argv, expected):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the rule is the CPU's, wherever the test runs
    assert cpu_threads_for_args(parse_args(argv)) == expected


def test_cli_cpu_rules_stay_off_an_accelerator(monkeypatch):
    """Where JAX will run on a GPU or TPU, ``auto`` sets no CPU pool (its
    variable also sizes a GPU client's host threads) and no CPU devices; a
    count asked for is still applied."""
    from purejaxppo.platform import cpu_threads
    from purejaxppo.cli import apply_cpu_devices, parse_args

    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    for platforms, expected in [("cuda", True), ("tpu,cpu", True), ("cpu", False), ("CPU,cuda", False)]:
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert cpu_threads.accelerator_expected() is expected, platforms
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert cpu_threads_for_args(parse_args([])) is None and cpu_threads_for_args(parse_args(["--cpu-threads", "1"])) == 1
    from purejaxppo.platform.cpu_devices import current_cpu_devices

    before = current_cpu_devices()  # another test of this process may have asked for some
    assert apply_cpu_devices(parse_args(["--num-seeds", "8"])) == (before or 1)
    assert "JAX_NUM_CPU_DEVICES" not in os.environ and current_cpu_devices() == before
    # With JAX_PLATFORMS unset, an installed plugin (here a stand-in entry point) decides.
    monkeypatch.delenv("JAX_PLATFORMS")
    import importlib.metadata

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: ["xla_cuda12"] if group == "jax_plugins" else real(group=group, **kw))
    assert cpu_threads.accelerator_expected()


def test_cli_cpu_vector_width_errors(capsys, monkeypatch):
    """A bad width is refused before the CLI sets anything else up."""
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    before = dict(os.environ)
    with pytest.raises(SystemExit) as exc:
        main(["--cpu-vector-width", "384"])
    assert exc.value.code == 2
    assert "cpu_vector_width='384' is not allowed; allowed: 'auto', 'default' or one of 128, 256, 512" in (
        capsys.readouterr().err)
    assert dict(os.environ) == before


def test_cli_cpu_threads_errors(capsys, monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["--cpu-threads", "0"])
    assert exc.value.code == 2
    assert "cpu_threads='0' is not allowed" in capsys.readouterr().err
    # Once this process's backend runs (its default pool), an explicit other
    # count cannot be applied any more, and says why.
    import jax

    jax.devices()  # start the backend, whichever tests ran before in this process
    with pytest.raises(SystemExit) as exc:
        main(["--cpu-threads", "5", "--total-timesteps", "512"])
    assert exc.value.code == 2
    assert "JAX's CPU backend has started" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    ({"min_compile_time_s": -1.0}, "min_compile_time_s=-1.0 must be >= 0"),
    ({"max_bytes": 0}, "max_bytes=0 must be > 0, or -1"),
])
def test_enable_compilation_cache_rejects_bad_values(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        enable_compilation_cache(tmp_path, **kwargs)


def test_cli_fine_tunes_a_policy_from_a_checkpoint(capsys, tmp_path):
    """--init-from DIR --init-seed i: every seed starts from seed i's policy of
    the run saved in DIR, which --reference-kl keeps as the reference (read
    back from the fine-tuning run's own checkpoint); without --init-from,
    --reference-kl and --init-seed are refused, naming the flag."""
    import jax
    import numpy as np

    from purejaxppo.checkpoint import restore_checkpoint

    flags = ["--env", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4",
             "--num-steps", "32", "--hidden-sizes", "8", "--eval-episodes", "0", "--num-seeds", "2",
             "--no-compile-cache"]
    main([*flags, "--checkpoint-dir", str(tmp_path / "pre")])
    main([*flags, "--init-from", str(tmp_path / "pre"), "--init-seed", "1", "--reference-kl",
          "--reference-kl-coef", "0.1", "--checkpoint-dir", str(tmp_path / "tune"),
          "--json-out", str(tmp_path / "tune.json")])
    assert f"from {tmp_path / 'pre'} (update 8, seed 1)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "tune.json").read_text())["summary"]
    assert summary["init_from"] == {"directory": str(tmp_path / "pre"), "updates_done": 8, "seed": 1}
    pretrained = restore_checkpoint(tmp_path / "pre").state.params
    reference = restore_checkpoint(tmp_path / "tune").state.reference_params
    for seed in range(2):
        for got, want in zip(jax.tree.leaves(reference), jax.tree.leaves(pretrained)):
            np.testing.assert_array_equal(np.asarray(got)[seed], np.asarray(want)[1])
    # The fine-tuning run's checkpoint holds its reference: it resumes without --init-from.
    main([*flags, "--reference-kl", "--reference-kl-coef", "0.1", "--checkpoint-dir", str(tmp_path / "tune")])
    assert "resumed from update 8 of 8" in capsys.readouterr().out
    for argv, message in [
        (["--reference-kl", "--reference-kl-coef", "0.1"], "--init-from DIR"),
        (["--init-seed", "1"], "give --init-from too"),
        (["--init-from", str(tmp_path / "nothing")], "init_from=.*nothing' does not exist"),
        (["--init-from", str(tmp_path / "pre"), "--init-seed", "2"], r"must be an int in \[0, 2\)"),
        (["--init-from", str(tmp_path / "pre"), "--hidden-sizes", "16"], "params do not fit"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*flags, *argv])
        assert exit_info.value.code == 2
        assert re.search(message, capsys.readouterr().err), argv


def test_cli_env_params_and_strict_json(capsys, tmp_path):
    """--env-params KEY=VALUE sets EnvParams fields over the preset's (here
    MountainCar's 200-step limit cut to 16, so episodes end), and the JSON
    written is strict: an update before any episode ended is null, not NaN."""
    flags = ["--env", "MountainCar-v0", "--total-timesteps", "256", "--num-envs", "4",
             "--num-steps", "16", "--num-minibatches", "2", "--hidden-sizes", "8",
             "--eval-episodes", "0", "--no-compile-cache"]
    strict = lambda text: json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))
    main([*flags, "--json-out", str(tmp_path / "long.json")])
    long = strict((tmp_path / "long.json").read_text())
    # One entry per update, null where no episode had ended.
    assert long["metrics_median"]["episode_return"] == [None] * 4 and long["summary"]["final_return"] == [None]
    main([*flags, "--env-params", "max_steps_in_episode=16", "--json-out", str(tmp_path / "cut.json")])
    cut = strict((tmp_path / "cut.json").read_text())
    assert "('max_steps_in_episode', 16)" in cut["config"]
    assert cut["metrics_median"]["episode_length"] == [16.0] * 4  # every episode hits the limit
    assert cut["summary"]["final_return"] == [-16.0]
    for argv, message in [(["--env-params", "max_steps_in_episode"], "--env-params takes KEY=VALUE"),
                          (["--env-params", "gravity=x"], "allowed: a finite number"),
                          (["--env-kwargs", "size=3"], r"env_kwargs \{'size': 3\} for 'MountainCar-v0': .*no arguments")]:
        with pytest.raises(SystemExit):
            main([*flags, *argv])
        assert re.search(message, capsys.readouterr().err), argv


def test_median_over_seeds_leaves_nan_updates_nan_without_a_warning():
    import warnings

    import numpy as np

    from purejaxppo.cli import _median_over_seeds

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(
            _median_over_seeds([[np.nan, 1.0, np.nan], [np.nan, 3.0, 4.0]]), [np.nan, 2.0, 4.0])
        np.testing.assert_array_equal(_median_over_seeds(np.full((2, 3), np.nan)), [np.nan] * 3)


def test_cli_reports_bad_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--env", "CartPol"])
    assert exc.value.code == 2
    assert "Did you mean 'CartPole-v1'" in capsys.readouterr().err


def test_cli_help_describes_each_flag_as_its_own(capsys):
    """Every PPOConfig field is a flag; the env's EnvParams and constructor
    arguments as KEY=VALUE lists, described on those two flags only (tyro
    reads a comment above a field as the next fields' description)."""
    with pytest.raises(SystemExit):
        main(["--help"])
    text = re.sub(r"[│ ]+", " ", capsys.readouterr().out)
    for flag in ("--env-params", "--env-kwargs", "--total-timesteps", "--num-envs", "--reference-kl-coef",
                 "--init-from", "--cpu-devices"):
        assert flag in text, flag
    assert text.count("KEY=VALUE") == 2


def test_cli_trains_a_recurrent_policy_on_a_partial_observation_and_evaluates_it(capsys, tmp_path):
    """``--recurrent gru --obs-features 0 2``: the run directory's config
    holds both, and ``eval`` plays the saved GRU policy on the same
    partial observation."""
    run = tmp_path / "run"
    main(["--env", "CartPole-v1", "--recurrent", "gru", "--recurrent-size", "8", "--obs-features", "0", "2",
          "--total-timesteps", "1024", "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2",
          "--hidden-sizes", "8", "--eval-episodes", "2", "--run-dir", str(run), "--no-progress",
          "--no-compile-cache"])
    assert "greedy eval" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["recurrent"] == "gru" and config["obs_features"] == [0, 2]
    main(["eval", str(run), "--episodes", "2"])
    assert "over 2 greedy episode(s)" in capsys.readouterr().out
