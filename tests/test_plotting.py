"""Learning curves from run directories: run directories written here by hand
(config.json and metrics.csv) read back value for value, legend labels from
the configs' differences, the PNG drawn, and the errors for what is not a
run directory."""

import csv
import json
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from purejaxppo import METRIC_NAMES, PPOConfig
from purejaxppo.checkpoint import config_to_json
from purejaxppo.plotting import plot_runs, read_run, run_labels, seed_summary

UPDATES, SEEDS, STEPS_PER_UPDATE = 5, 2, 64
nan, inf = float("nan"), float("inf")


def _values(lr_index):
    """Per metric, (SEEDS, UPDATES) values distinct for each run, metric,
    seed and update, with NaN, inf and -inf in places."""
    values = {}
    for m, name in enumerate(("wall_time",) + METRIC_NAMES):
        grid = (1000.0 * lr_index + 100.0 * m + 10.0 * np.arange(SEEDS)[:, None]
                + np.arange(UPDATES)[None, :])
        values[name] = grid
    values["episode_return"][:, 0] = nan  # no episode finished in either seed
    values["episode_return"][1, 2] = nan
    values["loss"][0, 3] = inf
    values["loss"][1, 3] = -inf
    return values


def _write_run(directory, config, values, shuffle_seed=0):
    """A run directory as the command line writes it, rows shuffled."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(
        {"config": config_to_json(config), "args": {"env": config.env_name}, "argv": []}))
    names = ["wall_time"] + list(METRIC_NAMES)
    rows = [[u + 1, (u + 1) * STEPS_PER_UPDATE, s] + [repr(float(values[n][s, u])) for n in names]
            for u in range(UPDATES) for s in range(SEEDS)]
    random.Random(shuffle_seed).shuffle(rows)
    with open(directory / "metrics.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["update", "env_steps", "seed"] + names)
        writer.writerows(rows)
    return directory


@pytest.fixture
def runs(tmp_path):
    """Three CartPole runs of 2 seeds that differ in lr; the last also in
    its env's max_steps_in_episode."""
    base = PPOConfig(env_name="CartPole-v1", num_envs=4, num_steps=16, hidden_sizes=(8,))
    configs = [base.replace(lr=1e-3), base.replace(lr=3e-4),
               base.replace(lr=3e-4, env_params={"max_steps_in_episode": 100})]
    return [(_write_run(tmp_path / f"run{i}", c, _values(i), shuffle_seed=i), c, _values(i))
            for i, c in enumerate(configs)]


def test_read_run_gives_each_metric_per_seed_and_update_in_update_order(runs):
    for directory, config, values in runs:
        run = read_run(directory)
        assert run.config == config
        assert run.directory == directory
        np.testing.assert_array_equal(run.updates, np.arange(1, UPDATES + 1))
        np.testing.assert_array_equal(run.env_steps, np.arange(1, UPDATES + 1) * STEPS_PER_UPDATE)
        assert set(run.metrics) == {"wall_time", *METRIC_NAMES}
        assert run.num_seeds == SEEDS
        for name, want in values.items():
            assert run.metrics[name].shape == (SEEDS, UPDATES)
            np.testing.assert_array_equal(run.metrics[name], want)  # NaN, +-inf included


def test_seed_summary_leaves_out_non_finite_values_without_warnings():
    values = np.array([[nan, 1.0, inf, 4.0, nan],
                       [nan, 3.0, 2.0, 0.0, -inf],
                       [nan, 5.0, nan, 8.0, nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        median, low, high = seed_summary(values)
    np.testing.assert_array_equal(median, [nan, 3.0, 2.0, 4.0, nan])
    np.testing.assert_array_equal(low, [nan, 2.0, 2.0, 2.0, nan])
    np.testing.assert_array_equal(high, [nan, 4.0, 2.0, 6.0, nan])


def test_labels_name_the_env_and_what_differs(runs, tmp_path):
    read = [read_run(d) for d, _, _ in runs]
    assert run_labels(read[:2]) == ["CartPole-v1 lr=0.001", "CartPole-v1 lr=0.0003"]
    assert run_labels(read) == ["CartPole-v1 lr=0.001 max_steps_in_episode=default",
                                "CartPole-v1 lr=0.0003 max_steps_in_episode=default",
                                "CartPole-v1 lr=0.0003 max_steps_in_episode=100"]
    assert run_labels(read[:1]) == ["CartPole-v1"]
    # The same config twice (e.g. another --seed): the directories tell them apart.
    twin = read_run(_write_run(tmp_path / "twin", runs[0][1], runs[0][2]))
    assert run_labels([read[0], twin]) == ["CartPole-v1 (run0)", "CartPole-v1 (twin)"]


def test_plot_runs_writes_a_png_of_the_curves(runs, tmp_path):
    out = tmp_path / "plots" / "sub" / "curves.png"  # directories made
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # all-NaN updates draw without warnings
        got = plot_runs([d for d, _, _ in runs], metric="episode_return", out=out, title="t")
    assert got == out and out.is_file()
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 450)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert len(colors) > 50  # lines, bands, text: not a blank canvas
    # One run, as a plain path, and another metric.
    single = plot_runs(runs[0][0], metric="loss", out=tmp_path / "loss.png")
    assert Image.open(single).size == (700, 450)


def test_plot_runs_refuses_an_unknown_metric(runs, tmp_path):
    with pytest.raises(ValueError, match=r"metric='reward' is not in the runs' metrics; allowed: \[.*'episode_return'"):
        plot_runs([runs[0][0]], metric="reward", out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_files_name_the_path_and_the_run_dir_flag(tmp_path, runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=rf"{empty}/config.json does not exist: is {empty} "
                       r"a run directory\? \(python -m purejaxppo --run-dir"):
        read_run(empty)
    (runs[0][0] / "metrics.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"run0/metrics.csv does not exist"):
        read_run(runs[0][0])


@pytest.mark.parametrize("config_text, message", [
    ("{not json", r"config.json is not readable JSON"),
    ('{"args": {}}', r'config.json has no "config" object'),
    ('{"config": {"num_envs": 0}}', r"config.json holds no valid PPOConfig: num_envs"),
    ('{"config": {"no_such_field": 1}}', r"config.json holds no valid PPOConfig"),
])
def test_a_malformed_config_is_a_one_line_error(runs, config_text, message):
    directory = runs[0][0]
    (directory / "config.json").write_text(config_text)
    with pytest.raises(ValueError, match=message) as error:
        read_run(directory)
    assert "\n" not in str(error.value)


def test_a_row_reported_again_by_a_resumed_run_wins(runs):
    path = runs[0][0] / "metrics.csv"
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    update, seed = int(rows[1][0]), int(rows[1][2])
    again = rows[1][:4] + ["123.5"] * (len(rows[1]) - 4)
    with open(path, "a", newline="") as file:
        csv.writer(file).writerow(again)
    run = read_run(runs[0][0])
    column = list(run.updates).index(update)
    assert all(values[seed, column] == 123.5 for name, values in run.metrics.items() if name != "wall_time")


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:1], r"has a header and no rows"),
    (lambda rows: [["step", "env_steps", "seed", "wall_time", "loss"]] + rows[1:], r"header is"),
    (lambda rows: rows[:1] + [rows[1][:-1]] + rows[2:], r"line 2 has \d+ fields; the header has"),
    (lambda rows: rows[:1] + [["x"] + rows[1][1:]] + rows[2:], r"line 2: update='x'; allowed: an int"),
    (lambda rows: rows[:1] + [rows[1][:4] + ["?"] + rows[1][5:]] + rows[2:], r"line 2: \w+='\?'; allowed: a number"),
    (lambda rows: rows[:1] + rows[2:], r"has no row for update \d+, seed \d+ \(1 missing of 10\)"),
])
def test_a_malformed_metrics_csv_is_a_one_line_error(runs, edit, message):
    path = runs[0][0] / "metrics.csv"
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(edit(rows))
    with pytest.raises(ValueError, match=message) as error:
        read_run(runs[0][0])
    assert str(path) in str(error.value) and "\n" not in str(error.value)
