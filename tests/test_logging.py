"""Watching a run: live reports from inside the compiled run, the loggers, the
run directory, and the eval and plot commands."""

import io
import json
import struct

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.checkpoint import train_with_checkpoints
from purejaxppo.cli import main
from purejaxppo.loggers import CSVLogger, ProgressDisplay, Report, Reporter, TensorBoardLogger, WandbLogger

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

CONFIG = PPOConfig(env_name="CartPole-v1", total_timesteps=4 * 16 * 10, num_envs=4, num_steps=16,
                   update_epochs=2, num_minibatches=2, hidden_sizes=(8,), log_every=3)
SMALL = ["--env", "CartPole-v1", "--num-envs", "4", "--num-steps", "16", "--hidden-sizes", "8",
         "--total-timesteps", str(4 * 16 * 10), "--eval-episodes", "0", "--no-compile-cache"]


def recorder():
    calls = []
    return calls, lambda update, metrics: calls.append((update, {k: np.array(v) for k, v in metrics.items()}))


@pytest.fixture(scope="module")
def plain():
    """The run without reports: what every logged run must equal."""
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    return keys, jax.jit(jax.vmap(make_train(CONFIG.replace(log_every=0))))(keys)


def test_reports_come_every_log_every_updates_and_after_the_last(plain):
    calls, log_fn = recorder()
    # Reports come while the run runs: all are in once its results are ready.
    result = jax.block_until_ready(jax.jit(make_train(CONFIG, log_fn=log_fn))(jax.random.PRNGKey(0)))
    assert [u for u, _ in calls] == [3, 6, 9, 10]
    for update, metrics in calls:
        assert set(metrics) == set(result.metrics)
        for name, value in metrics.items():
            assert value.shape == ()
            np.testing.assert_array_equal(value, np.asarray(result.metrics[name])[update - 1], err_msg=name)


def test_under_vmap_one_report_carries_every_seed_and_the_run_is_unchanged(plain):
    keys, whole = plain
    calls, log_fn = recorder()
    result = jax.block_until_ready(jax.jit(jax.vmap(make_train(CONFIG, log_fn=log_fn)))(keys))
    assert [u for u, _ in calls] == [3, 6, 9, 10]  # one call per report, not one per seed
    for update, metrics in calls:
        np.testing.assert_array_equal(metrics["loss"], np.asarray(result.metrics["loss"])[:, update - 1])
    for name in whole.metrics:  # reporting changes nothing the run computes
        np.testing.assert_array_equal(np.asarray(result.metrics[name]), np.asarray(whole.metrics[name]),
                                      err_msg=name)


def test_a_sweep_over_seeds_and_hyperparameters_reports_its_grid():
    calls, log_fn = recorder()
    train = make_train(CONFIG.replace(total_timesteps=4 * 16 * 3, log_every=2), log_fn=log_fn)
    lrs = CONFIG.hyperparams().replace(lr=np.array([1e-3, 3e-4], np.float32))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    lr_axes = jax.tree.map(lambda x: 0 if np.ndim(x) else None, lrs)
    sweep = jax.vmap(jax.vmap(train, in_axes=(None, lr_axes)), in_axes=(0, None))  # (seeds, lrs)
    result = jax.block_until_ready(jax.jit(sweep)(keys, lrs))
    assert [u for u, _ in calls] == [2, 3]
    assert calls[0][1]["learning_rate"].shape == (3, 2)
    np.testing.assert_array_equal(calls[1][1]["loss"], np.asarray(result.metrics["loss"])[..., 2])


def test_chunked_runs_count_their_updates_across_chunks(tmp_path):
    calls, log_fn = recorder()
    run = train_with_checkpoints(make_train(CONFIG, log_fn=log_fn), jax.random.PRNGKey(0), tmp_path, every=4)
    assert [u for u, _ in calls] == [3, 6, 9, 10]
    assert float(calls[1][1]["loss"]) == float(np.asarray(run.result.metrics["loss"])[5])


def test_log_fn_needs_an_interval():
    with pytest.raises(ValueError, match="log_fn is given but config.log_every=0"):
        make_train(CONFIG.replace(log_every=0), log_fn=print)
    with pytest.raises(ValueError, match="log_every=-1; allowed: an int >= 0"):
        CONFIG.replace(log_every=-1)


def _report(update, **metrics):
    return Report(update=update, env_steps=update * 64, wall_time=0.5 * update,
                  metrics={k: np.asarray(v, np.float32) for k, v in metrics.items()})


def test_csv_rows_per_seed_appended_and_flushed(tmp_path):
    path = tmp_path / "metrics.csv"
    logger = CSVLogger(path)
    logger.write(_report(1, episode_return=[1.0, np.nan], loss=[0.5, np.inf]))
    # Flushed: readable before close (what a crash leaves).
    assert path.read_text().splitlines() == [
        "update,env_steps,seed,wall_time,episode_return,loss", "1,64,0,0.5,1.0,0.5", "1,64,1,0.5,nan,inf"]
    logger.close()
    again = CSVLogger(path)  # a resumed run appends, without a second header
    again.write(_report(2, episode_return=[2.0, 3.0], loss=[0.25, 0.125]))
    again.close()
    assert path.read_text().splitlines()[3:] == ["2,128,0,1.0,2.0,0.25", "2,128,1,1.0,3.0,0.125"]


def test_the_progress_line_off_a_terminal_and_a_broken_logger_dropped(tmp_path):
    stream = io.StringIO()
    display = ProgressDisplay(total_updates=10, batch_size=64, runs=2, stream=stream, every_s=0.5)

    class Broken:
        def write(self, report):
            raise OSError("disk full")

        def close(self):
            pass

    reporter = Reporter([Broken(), CSVLogger(tmp_path / "metrics.csv")], batch_size=64)
    with pytest.warns(UserWarning, match="Broken failed and is dropped: disk full"):
        reporter(1, {"episode_return": np.array([10.0, 20.0])})
    assert [type(x).__name__ for x in reporter.loggers] == ["CSVLogger"]
    reporter.close()
    for update in (1, 2, 10):
        display.write(_report(update, episode_return=[10.0 * update, 20.0]))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("update 1/10 | 64 env steps | return 15.00 (median)")
    # 128 samples (2 runs x 64) per update over 0.5 s after the first report.
    assert lines[1].startswith("update 2/10 | 128 env steps | 256 steps/s | return 20.00")
    assert lines[-1].startswith("update 10/10 | 640 env steps")


def _tensorboard_scalars(directory):
    """Scalars of a TensorBoard event file, read from its TFRecord framing."""
    from tensorboardX.proto import event_pb2

    (path,) = directory.glob("events.out.tfevents.*")
    data, scalars, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            scalars.append((value.tag, event.step, value.simple_value))
    return scalars


def test_tensorboard_gets_each_metrics_median_against_env_steps(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.write(_report(2, episode_return=[1.0, 3.0, 8.0]))
    logger.close()
    assert _tensorboard_scalars(tmp_path) == [("episode_return", 128, 3.0)]


def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(tmp_path, {"lr": 1e-3}, project="purejaxppo-test", name="t", mode="offline")
    logger.write(_report(1, episode_return=[1.0, 2.0]))
    logger.close()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One CLI run of two seeds into a run directory, with live reports."""
    directory = tmp_path_factory.mktemp("run")
    main([*SMALL, "--num-seeds", "2", "--run-dir", str(directory), "--log-every", "4",
          "--json-out", str(directory / "out.json")])
    return directory


def test_the_run_directory_holds_config_metrics_checkpoint_summary_and_curves(run_dir):
    import csv

    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["checkpoints", "config.json", "curves.png", "metrics.csv", "out.json", "summary.json"]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [(int(r["update"]), int(r["seed"])) for r in rows] == [(4, 0), (4, 1), (8, 0), (8, 1), (10, 0), (10, 1)]
    medians = json.loads((run_dir / "out.json").read_text())["metrics_median"]
    loss_at_8 = np.median([float(r["loss"]) for r in rows if r["update"] == "8"])
    assert loss_at_8 == pytest.approx(medians["loss"][7], rel=1e-6)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_seeds"] == 2 and summary["run_dir"] == str(run_dir)
    assert (run_dir / "checkpoints" / "10" / "checksums.json").is_file()  # the final state, sealed


def test_a_rerun_from_config_json_gives_identical_metrics(run_dir, tmp_path):
    out = tmp_path / "again.json"
    main(["--config", str(run_dir / "config.json"), "--run-dir", str(tmp_path / "again"),
          "--json-out", str(out)])
    first = json.loads((run_dir / "out.json").read_text())["metrics_median"]
    assert json.loads(out.read_text())["metrics_median"] == first
    record = json.loads((tmp_path / "again" / "config.json").read_text())
    assert record["config"] == json.loads((run_dir / "config.json").read_text())["config"]


def test_without_live_reports_metrics_csv_gets_every_update(tmp_path):
    main([*SMALL, "--no-progress", "--run-dir", str(tmp_path)])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 10 and lines[1].startswith("1,64,0,nan,")


def test_eval_and_plot_commands_read_run_directories(run_dir, tmp_path, capsys):
    main(["eval", str(run_dir), "--episodes", "3", "--seed-index", "1"])
    out = capsys.readouterr().out
    assert f"{run_dir} (seed 1): return " in out and "over 3 greedy episode(s)" in out
    main(["plot", str(run_dir), str(run_dir), "--metric", "loss", "--out", str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "run_dir=" in capsys.readouterr().err
