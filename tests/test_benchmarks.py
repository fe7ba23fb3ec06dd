"""Smoke run of the throughput benchmark at tiny sizes (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_benchmark_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--quick", "--repeats", "1",
           "--cases", "cartpole_default", "--no-sweep", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("throughput-*-quick.json")
    data = json.loads(json_path.read_text())
    row = data["cases"]["cartpole_default"]
    for key in ("compile_s", "run_s", "steps_per_s", "env_only_steps_per_s", "rollout_only_steps_per_s",
                "floor_steps_per_s", "fraction_of_floor", "peak_host_rss_mb"):
        assert row[key] > 0, key
    assert row["env_steps_per_call"] == 256
    assert data["meta"]["rates"]["matmul_flops_per_s"] > 0
    md = json_path.with_suffix(".md").read_text()
    assert "| cartpole_default | 1 | 256 |" in md
