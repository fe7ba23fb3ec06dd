"""The command line trains and prints its table; bad flags fail clearly."""

import json

import pytest

from purejaxppo.cli import main


def test_cli_trains_and_prints_table(capsys, tmp_path):
    out = tmp_path / "run.json"
    main(["--env", "CartPole-v1", "--total-timesteps", "2048", "--num-envs", "4",
          "--num-steps", "64", "--num-seeds", "2", "--eval-episodes", "2",
          "--hidden-sizes", "16", "--json-out", str(out)])
    text = capsys.readouterr().out
    assert "CartPole-v1" in text and "compile" in text and "greedy eval" in text
    summary = json.loads(out.read_text())["summary"]
    assert summary["num_seeds"] == 2 and len(summary["final_return"]) == 2


def test_cli_reports_bad_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--env", "CartPol"])
    assert exc.value.code == 2
    assert "Did you mean 'CartPole-v1'" in capsys.readouterr().err
