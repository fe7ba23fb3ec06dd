"""Grids and populations from Python and the command line: a grid's points
train in one call as each would alone, ranked by IQM; the sweep and pbt
commands write their run directories and refuse bad input in one line."""

import json
import shutil

import jax
import numpy as np
import pytest

from purejaxppo import PPOConfig, make_train
from purejaxppo.checkpoint import restore_checkpoint, restore_policy
from purejaxppo.cli import main
from purejaxppo.plotting import read_run
from test_checkpoint import assert_trees_equal
from purejaxppo.sweep import grid_points, parse_grid, point_label, points_hparams

pytestmark = pytest.mark.usefixtures("quick_compiles")  # compile-bound: XLA's quick mode

# CONFIG is what the commands' TINY flags give (no preset: CartPole's is the library defaults).
CONFIG = PPOConfig(env_name="CartPole-v1", total_timesteps=4 * 32 * 8, num_envs=4, num_steps=32,
                   update_epochs=1, num_minibatches=2, hidden_sizes=(16,))
TINY = ["--env", "CartPole-v1", "--total-timesteps", "1024", "--num-envs", "4", "--num-steps", "32",
        "--update-epochs", "1", "--num-minibatches", "2", "--hidden-sizes", "16", "--no-compile-cache"]


def test_parse_grid_reads_fields_and_refuses_what_a_grid_cannot_take():
    grid = parse_grid(["lr=1e-4,3e-4", "clip-eps=0.1,0.2,0.3"])
    assert grid == {"lr": (1e-4, 3e-4), "clip_eps": (0.1, 0.2, 0.3)}
    points = grid_points(grid)
    assert len(points) == 6 and points[1] == {"lr": 1e-4, "clip_eps": 0.2}
    assert point_label(points[1]) == "lr=0.0001,clip_eps=0.2"
    for items, match in [
        (["num_envs=4,8"], "num_envs is a static field .* allowed fields: lr, gamma"),
        (["learning_rate=1"], "learning_rate is not a field"),
        (["lr"], "allowed: FIELD=V1,V2"),
        (["lr=1e-3,fast"], "must be numbers"),
        (["lr=1e-3", "lr=1e-4"], "names lr twice"),
        (["lr=1e-3,1e-3"], "repeats a value"),
        ([], "at least one"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_grid(items)
    with pytest.raises(ValueError, match=r"hyperparams.gamma\[1\] = 1.5; allowed: finite values in \[0, 1\]"):
        points_hparams(CONFIG, [{"gamma": 0.9}, {"gamma": 1.5}])


def test_rank_points_puts_nan_last_and_names_a_diverged_point():
    from purejaxppo import TrainResult
    from purejaxppo.sweep import SweepResult, rank_points

    nonfinite = np.zeros((3, 2, 5), np.int32)
    nonfinite[2, 1, 3] = 2  # point 2, seed 1: its gradient norm at update 4
    sweep = SweepResult(config=CONFIG, points=[{"lr": 1e-3}, {"lr": 1e-4}, {"lr": 1e-2}],
                        result=TrainResult(train_state=None, metrics={"nonfinite": nonfinite}),
                        final_returns=np.array([[10.0, 20.0], [30.0, 40.0], [np.nan, np.nan]]),
                        compile_s=0.0, run_s=0.0)
    table = rank_points(sweep)
    assert [row["index"] for row in table] == [1, 0, 2]
    assert table[0]["iqm"] == 35.0 and table[0]["diverged"] is None
    assert table[2]["nan_seeds"] == 2 and "update 4" in table[2]["diverged"], table[2]["diverged"]


def test_sweep_command_writes_a_ranked_table_and_a_run_directory_per_point(capsys, tmp_path):
    out = tmp_path / "sweep"
    summary = run_command(["sweep", *TINY, "--grid", "lr=1e-3,1e-4", "ent_coef=0.01", "--num-seeds", "2",
                           "--seed", "3", "--run-dir", str(out)])
    text = capsys.readouterr().out
    assert "2 points x 2 seed(s)" in text and "| rank | point | IQM [95% CI] |" in text
    iqms = [row["iqm"] for row in summary["ranking"]]
    assert iqms == sorted(iqms, reverse=True) and len(iqms) == 2
    # Each point trained in the one call as it would alone, with the same keys.
    point = {"lr": 1e-4, "ent_coef": 0.01}
    alone = jax.jit(jax.vmap(make_train(CONFIG.replace(**point))))(jax.random.split(jax.random.PRNGKey(3), 2))
    run = read_run(out / point_label(point))
    assert run.config == CONFIG.replace(**point)
    for name in ("loss", "episode_return", "learning_rate"):
        np.testing.assert_allclose(run.metrics[name], alone.metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    row = next(r for r in summary["ranking"] if r["point"] == point)
    np.testing.assert_allclose(row["final_returns"], np.nanmean(
        np.asarray(alone.metrics["episode_return"])[:, -10:], axis=1), rtol=1e-5)
    ranked = [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| 1 ")
              or line.startswith("| 2 ")]
    assert ranked == [row["label"] for row in summary["ranking"][:2]]
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["grid"] == {"lr": [1e-3, 1e-4], "ent_coef": [0.01]}
    assert (out / "sweep.md").is_file() and (out / "sweep.png").is_file()
    assert run.metrics["episode_return"].shape == (2, 8)
    best = summary["ranking"][0]
    np.testing.assert_allclose(json.loads((out / best["label"] / "summary.json").read_text())["final_return"],
                               best["final_returns"])
    policy = restore_policy(out / best["label"] / "checkpoints", seed=1)  # what eval plays
    np.testing.assert_array_equal(jax.tree.leaves(policy.params)[0], jax.tree.leaves(
        restore_checkpoint(out / best["label"] / "checkpoints").state.params)[0][1])


def run_command(argv):
    """The subcommand ``argv[0]`` run as ``main`` runs it; its summary."""
    from purejaxppo.cli import SUBCOMMANDS

    return SUBCOMMANDS[argv[0]](argv[1:])


def test_pbt_command_resumes_bit_for_bit_and_writes_schedules(capsys, tmp_path):
    out, p = tmp_path / "pbt", 4
    argv = ["pbt", *TINY, "--population", str(p), "--ready-every", "2", "--explore", "lr", "clip_eps",
            "--grid", "lr=1e-3,3e-4", "clip_eps=0.1,0.2", "--num-seeds", "2", "--checkpoint-every", "4",
            "--run-dir", str(out)]
    first = run_command(argv)
    text = capsys.readouterr().out
    assert "2 population(s) x 4 members" in text and "best member" in text
    assert [q["lineage"][-1] for q in first["populations"]] == [q["best_member"] for q in first["populations"]]
    run = read_run(out)
    assert run.metrics["hp_lr"].shape == (2 * p, 8)  # populations x members, updates
    np.testing.assert_allclose(run.metrics["hp_lr"][:p, 0], [1e-3, 1e-3, 3e-4, 3e-4], rtol=1e-6)
    parent = run.metrics["parent"].reshape(2, p, 8)
    assert (parent != np.arange(p)[:, None]).any()  # members copied others
    assert (run.metrics["hp_lr"] != run.metrics["hp_lr"][:, :1]).any()  # and explored
    assert (out / "schedules.png").is_file() and (out / "pbt.json").is_file()

    # Stopped after update 4: the same command resumes it to the same bits.
    shutil.copytree(out / "checkpoints", tmp_path / "whole")
    shutil.rmtree(out / "checkpoints" / "8")
    again = run_command(argv)
    assert again["resumed_from"] == 4 and again["populations"] == first["populations"]
    whole, resumed = restore_checkpoint(tmp_path / "whole"), restore_checkpoint(out / "checkpoints")
    assert resumed.pbt == whole.pbt and resumed.pbt.population == p
    assert_trees_equal(resumed.state, whole.state)
    for name, values in whole.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[name], values, err_msg=name)
    # One member's policy, as eval --seed-index plays it: population 1, member 1.
    policy = restore_policy(out / "checkpoints", seed=p + 1)
    assert_trees_equal(policy.params, jax.tree.map(lambda x: x[1, 1], whole.state.members.params))
    with pytest.raises(ValueError, match="population settings"):
        run_command([*argv, "--quantile", "0.5"])


@pytest.mark.parametrize("argv, match", [
    (["sweep", "--grid", "num_envs=4,8"], "num_envs is a static field"),
    (["sweep", "--env", "CartPole-v1"], "--grid FIELD=V1,V2 ... is required"),
    (["sweep", "--grid", "lr=1e-3", "--checkpoint-every", "5"], "--checkpoint-every is not taken by 'sweep'"),
    (["sweep", "--grid", "lr=-1"], r"hyperparams.lr\[0\] = -1"),
    (["pbt", "--population", "1"], "population = 1; allowed: an int >= 2"),
    (["pbt", "--bounds", "lr=1e-3"], "FIELD=LOW,HIGH"),
    (["pbt", "--grid", "lr=1e-3,1e-4", "--population", "4"], "--grid has 2 points; the first population needs"),
    (["pbt", "--json-out", "x.json"], "--json-out is not taken by 'pbt'"),
])
def test_experiment_commands_refuse_bad_input_in_one_line(capsys, argv, match):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("purejaxppo: error:") and len(err.splitlines()) == 1
    assert __import__("re").search(match, err), err
