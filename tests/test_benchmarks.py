"""Smoke run of the throughput benchmark at tiny sizes (no timing assertions)."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_throughput_benchmark_smoke(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--quick", "--repeats", "1",
           "--compile-repeats", "1", "--cases", "cartpole_default", "--no-sweep", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("throughput-*-quick.json")
    data = json.loads(json_path.read_text())
    row = data["cases"]["cartpole_default"]
    for key in ("compile_s", "run_s", "steps_per_s", "env_only_steps_per_s", "rollout_only_steps_per_s",
                "floor_steps_per_s", "fraction_of_floor", "case_floor_steps_per_s", "fraction_of_case_floor",
                "peak_host_rss_mb"):
        assert row[key] > 0, key
    # The case's own floor: the rates measured in its process, on its pool.
    throughput = _load_benchmark("throughput")
    own = row["case_rates"]
    assert own["tanh_per_s"] == max(own["tanh_by_size"].values())
    assert row["case_floor_steps_per_s"] == pytest.approx(throughput.floor_steps_per_s(row["cost_per_env_step"], own))
    assert row["floor_steps_per_s"] == pytest.approx(
        throughput.floor_steps_per_s(row["cost_per_env_step"], data["meta"]["rates"]))
    assert row["env_steps_per_call"] == 256
    # The cold compile is the median of the fresh processes' samples (here one).
    assert len(row["compile_samples_s"]) == 1 and row["compile_samples_s"][0] > 0
    assert row["compile_s"] == row["compile_samples_s"][0]
    # The warm compile is a persistent-cache hit in a new process, not a cold compile.
    assert row["warm_cache"] == "hit" and row["warm_compile_s"] > 0
    # The floor's rates: the best size's median, each size's rate and the best size's calls kept.
    rates = data["meta"]["rates"]
    for name, key in (("matmul", "matmul_flops_per_s"), ("tanh", "tanh_per_s")):
        by_size = rates[f"{name}_by_size"]
        assert len(by_size) >= 3 and min(by_size.values()) > 0, name
        assert rates[key] == max(by_size.values()), name
        low, high = rates[f"{name}_spread"]
        assert 0 < low <= rates[key] <= high, name
    assert f"tanh {rates['tanh_per_s'] / 1e9:.2f} G/s (calls " in json_path.with_suffix(".md").read_text()
    startup = data["meta"]["startup"]
    assert startup["startup_s"] > 0 and startup["eager_plotting_s"] > 0
    if (ROOT / ".git").exists():  # the results name the commit they measured
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        assert data["meta"]["commit"] in (head, head + "-dirty")
    # 4 envs, 1 seed: the auto pool is one thread, and the child ran on it.
    if "PJRT_NPROC" not in os.environ:
        assert row["cpu_threads"] == 1
        assert row["xla_cpu_pool_threads"] in (1, None)
    md = json_path.with_suffix(".md").read_text()
    assert f"| cartpole_default | 1 | 1 | {row['cpu_threads'] or 'cores'} | 256 |" in md
    assert "compile s (warm cache)" in md
    assert f"which imports gymnax; median of 1): {startup['startup_s']:.2f} s;" in md
    assert f"at commit {data['meta']['commit'] or 'unknown'}" in md
    # The results name the CPU they were timed on (the project's machines change CPU from run to run).
    machine = data["meta"]["machine"]
    assert machine.endswith(f", {os.cpu_count()} cores") and md.splitlines()[2].startswith(machine)
    if Path("/proc/cpuinfo").exists():
        models = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")]
        assert not models or machine.startswith(models[0] + " (")


def _load_benchmark(name):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    import importlib.util

    module_name = f"benchmark_{name}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_machine_name_gives_the_family_and_core(tmp_path):
    """Results files tell CPUs that share a model name apart (a Zen 4 and a
    Zen 5 EPYC both say "AMD EPYC")."""
    throughput = _load_benchmark("throughput")

    def cpuinfo(vendor, flags, numbers=""):
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\n{numbers}model name\t: X\nflags\t\t: {flags}\n\n")
        return str(path)

    cores = f"{os.cpu_count()} cores"
    name = throughput.machine_name(cpuinfo("AuthenticAMD", "avx2 avx512f", "cpu family\t: 25\nmodel\t\t: 17\n"))
    assert name.startswith("X (") and name.endswith(f", AVX-512, Zen 4: family 25 model 17), {cores}")
    name = throughput.machine_name(cpuinfo("GenuineIntel", "avx2", "cpu family\t: 6\nmodel\t\t: 85\n"))
    assert name.endswith(f", AVX2, family 6 model 85), {cores}")
    assert throughput.machine_name(cpuinfo("GenuineIntel", "avx2")).endswith(f", AVX2), {cores}")


def test_returns_iqm_and_bootstrap():
    import numpy as np

    pytest.importorskip("rliable")
    returns = _load_benchmark("returns")
    # n = 8: drop the lowest and highest two, mean of 3, 4, 5, 6.
    assert returns.iqm(np.arange(1, 9)) == 4.5
    assert returns.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # order does not matter
    # rliable's IQM is the 25% trimmed mean: floor(n/4) values off each end, so
    # for n = 5 the mean of the middle 3, and below 4 values the plain mean.
    assert returns.iqm([100.0, 0.0, 10.0, 1.0, 2.0]) == pytest.approx((1 + 2 + 10) / 3)
    assert returns.iqm([1.0, 2.0, 9.0]) == 4.0 and returns.iqm([3.0]) == 3.0
    x = np.random.default_rng(0).normal(size=10)
    assert returns.iqm(x) == pytest.approx(np.sort(x)[2:8].mean())  # NumPy's: n = 10 drops 2 each end

    estimate = returns.iqm_ci95(np.arange(1, 9))
    low, high = estimate["ci95"]
    assert estimate["iqm"] == 4.5 and low < 4.5 < high
    assert estimate == returns.iqm_ci95(np.arange(1, 9))  # seeded: the same twice
    # A percentile bootstrap CI of the IQM: close to NumPy's (seeds resampled with replacement).
    rng = np.random.default_rng(1)
    resampled = np.sort(np.arange(1.0, 9.0)[rng.integers(0, 8, size=(10_000, 8))], axis=1)[:, 2:6].mean(axis=1)
    np.testing.assert_allclose(estimate["ci95"], np.quantile(resampled, [0.025, 0.975]), atol=0.3)
    # NumPy's global RNG (which rliable's bootstrap draws from) is left as it was.
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    returns.iqm_ci95(x, resamples=50)
    assert np.random.rand() == expected
    assert returns.iqm_ci95([2.0, 2.0, 2.0], resamples=50)["ci95"] == (2.0, 2.0)
    stats = returns.summarize_final_returns([1.0, float("nan"), 3.0], resamples=50)
    assert stats["nan_seeds"] == 1 and stats["iqm"] == 2.0
    # A row's statistics from its JSON final returns (NaN stored as None).
    row = returns.row_statistics({"final_returns": [1.0, None, 3.0, 5.0], "target": 3.0}, resamples=50)
    assert row["final_return_nan_seeds"] == 1 and row["final_return_iqm"] == 3.0 and row["target_met"] is True
    assert len(row["final_return_iqm_ci95"]) == 2


def test_returns_aggregates():
    import numpy as np

    pytest.importorskip("rliable")
    returns = _load_benchmark("returns")
    reference = returns.MINATAR_REFERENCE
    games = list(returns.MINATAR_GAMES)
    baseline = "+" + returns.BASELINE_LABEL

    def rows_of(normalised, suffix=""):
        return {game + suffix: {"env": game, "final_returns": [v * reference[game] for v in values]}
                for game, values in zip(games, normalised)}

    # Normalised scores of 4 seeds per game. All 16 sorted: 0 x4, 0.25 ... 2.0, 3 x4; the
    # IQM drops 4 at each end: the mean of 0.25, 0.5, ..., 2.0 = 9/8.
    normalised = [[0.5, 1.0, 1.5, 2.0], [0.25, 0.75, 1.25, 1.75], [0.0] * 4, [3.0] * 4]
    presets = rows_of(normalised)
    presets["Seaquest-MinAtar"] = {"env": "Seaquest-MinAtar", "final_returns": [5.0, 6.0, 7.0, 8.0]}
    agg = returns.aggregates(presets, resamples=200)
    entry = agg["normalised_iqm"]["presets"]
    assert entry["games"] == games and entry["seeds_per_game"] == 4 and not entry["missing"]
    assert entry["iqm"] == pytest.approx(9 / 8)
    assert entry["ci95"][0] <= 9 / 8 <= entry["ci95"][1]
    assert agg == returns.aggregates(presets, resamples=200)  # reproducible
    assert "Seaquest-MinAtar" in agg["left_out"]  # no reference score: not in the normalised aggregate
    # No baseline rows: reported, nothing computed.
    poi = agg["probability_of_improvement"]
    assert poi["value"] is None and poi["missing"] == [g + baseline for g in games]
    assert agg["normalised_iqm"][baseline]["iqm"] is None
    assert "not computed: missing Breakout-MinAtar" + baseline in returns.markdown_aggregates(agg)

    # Every preset seed above every baseline seed: P = 1, also in every resample.
    worse = rows_of([[v - 5.0 for v in values] for values in normalised], baseline)
    poi = returns.aggregates({**presets, **worse}, resamples=200)["probability_of_improvement"]
    assert poi["games"] == games and not poi["missing"]  # Seaquest only with both of its rows
    assert poi["value"] == 1.0 and poi["ci95"] == (1.0, 1.0)
    # Identical rows: P = 1/2.
    same = rows_of(normalised, baseline)
    agg = returns.aggregates({**presets, **same}, resamples=200)
    poi = agg["probability_of_improvement"]
    assert poi["value"] == 0.5 and poi["ci95"][0] <= 0.5 <= poi["ci95"][1]
    assert agg["normalised_iqm"][baseline]["iqm"] == pytest.approx(9 / 8)
    assert "**0.5** [" in returns.markdown_aggregates(agg)
    # With Seaquest's baseline row too, the comparison covers Seaquest (raw returns need no reference).
    seaquest = {"Seaquest-MinAtar" + baseline: {"env": "Seaquest-MinAtar", "final_returns": [1.0, 2.0, 3.0, 4.0]}}
    poi = returns.aggregates({**presets, **same, **seaquest}, resamples=200)["probability_of_improvement"]
    assert poi["games"] == games + ["Seaquest-MinAtar"]
    assert poi["value"] == pytest.approx((4 * 0.5 + 1.0) / 5)
    # One baseline row missing: listed, no error; rows of different seed counts are cut to the fewest.
    partial = {**presets, **same}
    del partial["Freeway-MinAtar" + baseline]
    assert returns.aggregates(partial, resamples=200)["probability_of_improvement"]["missing"] == [
        "Freeway-MinAtar" + baseline]
    longer = {**presets, **same}
    longer["Asterix-MinAtar" + baseline] = {"env": "Asterix-MinAtar", "final_returns": [0.0] * 4 + [np.nan, 1.0]}
    entry = returns.aggregates(longer, resamples=200)["normalised_iqm"][baseline]
    assert entry["seeds_per_game"] == 4 and entry["cut"] is True
    # A preset that holds PureJaxRL's settings is its own baseline (0.5 against itself).
    from purejaxppo.presets import PUREJAXRL_MINATAR

    held = {**presets, **worse}
    del held["Freeway-MinAtar" + baseline]
    stored = {k: list(v) if isinstance(v, tuple) else v for k, v in PUREJAXRL_MINATAR.items()}
    held["Freeway-MinAtar"] = dict(held["Freeway-MinAtar"], config=stored)
    assert returns.baseline_row(held, "Freeway-MinAtar") == "Freeway-MinAtar"
    assert returns.baseline_row(held, "Asterix-MinAtar") == "Asterix-MinAtar" + baseline
    poi = returns.aggregates(held, resamples=200)["probability_of_improvement"]
    assert not poi["missing"] and poi["value"] == pytest.approx((3 * 1.0 + 0.5) / 4)
    held["Freeway-MinAtar"]["config"] = dict(stored, lr=1e-3)  # another setting: the baseline is missing
    assert returns.baseline_row(held, "Freeway-MinAtar") == "Freeway-MinAtar" + baseline


def test_returns_benchmark_smoke(tmp_path):
    import math

    pytest.importorskip("rliable")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "returns.py"), "--quick", "--presets", "CartPole-v1",
           "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("returns-*-quick.json")
    row = json.loads(json_path.read_text())["rows"]["CartPole-v1"]
    assert row["seeds"] == 2 and len(row["final_returns"]) == 2 and len(row["eval_returns"]) == 2
    assert math.isfinite(row["final_return_iqm"])
    assert row["compile_s"] > 0 and row["run_s"] > 0
    curve = row["curve"]
    assert row["num_updates"] == 2
    for key in ("env_steps", "median", "p25", "p75"):
        assert len(curve[key]) == row["num_updates"], key
    md = json_path.with_suffix(".md").read_text()
    assert "| CartPole-v1 | 2 |" in md
    assert (tmp_path / f"{json_path.stem}.png").exists()
    assert (tmp_path / f"{json_path.stem}-CartPole-v1.png").exists()
    # The aggregates: no MinAtar rows here, so reported missing, and no profile drawn.
    aggregates = json.loads(json_path.read_text())["aggregates"]
    assert aggregates["normalised_iqm"]["presets"]["missing"][0] == "Breakout-MinAtar"
    assert "## Aggregates" in md and "not computed: missing Breakout-MinAtar" in md
    assert not (tmp_path / f"{json_path.stem}-minatar-profile.png").exists()


def test_compile_profile_parses_xla_logs_and_smoke_runs(tmp_path):
    module = _load_benchmark("compile_profile")
    log = (
        "I1123 ir_compiler.cc:293] Compiled LLVM module: __compute_module_add_fusion.2_kernel_module "
        "time: 12.5 ms (12500 us) (cumulative: 1 s)\n"
        "I1123 ir_compiler.cc:293] Compiled LLVM module: __compute_module_wrapped_copy time: 800 us (800 us) x\n"
        "I1123 fusion_compiler.cc:494] Compiled MLIR module: add_fusion.2_kernel_module time: 9 ms (9000 us) x\n"
    )
    import pytest

    assert module.kernel_times(log) == pytest.approx({
        "__compute_module_add_fusion.2_kernel_module": 0.0125, "__compute_module_wrapped_copy": 0.0008,
    })
    assert module.kernel_times(log, "MLIR") == pytest.approx({"add_fusion.2_kernel_module": 0.009})
    # The LLVM log names a kernel by the MLIR stage's module name with a prefix.
    assert module._instruction("__compute_module_add_fusion.2_kernel_module") == "add_fusion.2"
    assert module._instruction("add_fusion.2_kernel_module") == "add_fusion.2"
    assert module._instruction("__compute_module___compute_module_wrapped_negate") == "wrapped_negate"
    assert module._instruction("__compute_module_wrapped_negate") == "wrapped_negate"
    # Older emitters' kernels, and a while loop compiled as one kernel (jaxlib 0.12).
    assert module._instruction("__compute_module_dot.60_elemental_kernel_module") == "dot.60"
    assert module._instruction("__compute_module_call.10_computation_kernel_module") == "call.10"
    assert module._instruction("wrapped_computation") == "wrapped_computation"
    hlo = (
        '  %add_fusion.2 = u32[64,4]{1,0} fusion(%a), kind=kLoop, metadata={op_name="jit(train)/jit(_uniform)/add"}\n'
        '  %call.10 = (s32[], u32[4]{0}, /*index=2*/(f32[2], u32[])) call(%tuple.1), to_apply=%while.3_computation, '
        'metadata={op_name="jit(train)/init/while"}\n'
    )
    origins = module.kernel_origins(hlo)
    assert origins["add_fusion.2"] == ("u32[64,4]{1,0}", "jit(train)/jit(_uniform)/add")
    assert origins["call.10"] == ("(s32[], u32[4]{0}, /*index=2*/(f32[2], u32[]))", "jit(train)/init/while")
    assert module.kernel_region("") == "no op_name"
    assert module.kernel_region("while/body/closed_call/sub") == "other"
    assert module.kernel_region("init/jit(_uniform)/add") == "init"
    assert module.kernel_region("vmap()/while/body/closed_call/vmap(rollout)/while/body/add") == "rollout"
    assert module.kernel_region("while/body/closed_call/ppo_update/while/body/closed_call/add") == "ppo_update: other"
    assert module.kernel_region("while/body/ppo_update/while/body/closed_call/jvp()/exp") == "ppo_update: gradient"
    assert module.kernel_region("while/body/ppo_update/transpose(jvp())/add_any") == "ppo_update: gradient"

    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compile_profile.py"), "--set", "total_timesteps=512",
           "--seeds", "2", "--top", "10", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["lower_s"] > 0 and report["compile_s"] > 0 and report["kernels"] > 10
    # The env's samplers now fuse into their consumers (purejaxppo.fast.straight_threefry): often no kernel is named after one.
    assert 0 <= report["threefry_llvm_s"] < report["llvm_total_s"]
    assert len(report["slowest"]) == 10 and any(k["shape"] for k in report["slowest"])
    assert report["seeds"] == 2 and report["key_shape"] == [2, 2]  # jax.vmap(train) over 2 keys
    regions = report["regions"]
    assert sum(r["kernels"] for r in regions.values()) == report["kernels"]
    assert sum(r["llvm_s"] for r in regions.values()) == pytest.approx(report["llvm_total_s"])
    assert 0 < report["mlir_total_s"] and sum(r["mlir_s"] for r in regions.values()) == pytest.approx(
        report["mlir_total_s"])
    # Both stages' times land on the same kernels: most kernels have both.
    both = [r for r in report["slowest"] if r["llvm_s"] > 0 and r["mlir_s"] > 0]
    assert both, report["slowest"]
    # Every stage's named scope reaches the kernels' op_name, under jax.vmap too.
    for name in (*module.SCOPES[:-1], "ppo_update: gradient", "ppo_update: other"):
        assert regions[name]["kernels"] > 0, name
    assert report["implementation"] == "purejaxppo"

    # The baseline's compile, profiled alike; its --set takes the reference's fields.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compile_profile.py"), "--reference", "--set",
           "total_timesteps=512", "--top", "3", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["implementation"] == "reference" and report["config"] == {"total_timesteps": 512}
    assert report["kernels"] > 10 and report["llvm_total_s"] > 0
    assert sum(r["kernels"] for r in report["regions"].values()) == report["kernels"]
    # (An unknown --set field is parse_overrides' error: see the versus_reference --set test.)
    proc = subprocess.run(cmd[:2] + ["--reference", "--set", "num_envs=0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "num_envs must be a positive int, got 0" in proc.stderr, proc.stderr[-2000:]


def test_reference_uses_purejaxppo_defaults():
    """The baseline is timed with the same hyperparameters as purejaxppo's defaults."""
    import dataclasses

    from purejaxppo import PPOConfig

    reference = _load_benchmark("reference_ppo")
    ours = PPOConfig()
    for field in dataclasses.fields(reference.ReferenceConfig):
        assert getattr(reference.ReferenceConfig(), field.name) == getattr(ours, field.name), field.name
    assert reference.ReferenceConfig().num_updates == ours.num_updates
    assert reference.ReferenceConfig().minibatch_size == ours.minibatch_size


def test_reference_final_return_is_each_envs_last_finished_episode():
    """The reference's final return means what purejaxppo's episode_return
    means: each env's most recently finished episode, envs that never finished
    left out, even when no episode ends in the last update."""
    import numpy as np

    reference = _load_benchmark("reference_ppo")
    rng = np.random.default_rng(0)
    done = rng.random((3, 5, 4)) < 0.2  # (updates, steps, envs)
    done[:, :, 3] = False  # env 3 never finishes
    done[-1] = False  # nothing ends in the last update
    done[0, 0, :3] = True  # the others all finish at least once
    returns = rng.normal(size=done.shape).astype(np.float32)
    expected = []
    for env in range(3):
        flat_done, flat_returns = done[..., env].reshape(-1), returns[..., env].reshape(-1)
        expected.append(flat_returns[np.flatnonzero(flat_done)[-1]])
    got = reference.final_return({"returned_episode": done, "returned_episode_returns": returns})
    np.testing.assert_allclose(float(got), np.mean(expected), rtol=1e-6)
    never = reference.final_return({"returned_episode": np.zeros_like(done), "returned_episode_returns": returns})
    assert np.isnan(float(never))


def test_versus_reference_smoke(tmp_path):
    import math

    versus = _load_benchmark("versus_reference")
    # A compile ratio is met at or below what the target asks, a rate ratio at or above.
    assert versus._verdict(0.45, 2.7 / 5.5, "compile_s") == "met"
    assert versus._verdict(0.60, 2.7 / 5.5, "compile_s") == "not met"
    assert versus._verdict(1.60, 260 / 159, "steps_per_s") == "not met"
    assert versus._verdict(1.70, 260 / 159, "steps_per_s") == "met"

    cmd = [sys.executable, str(ROOT / "benchmarks" / "versus_reference.py"), "--quick", "--pairs", "1",
           "--repeats", "1", "--cases", "cartpole_default", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (json_path,) = tmp_path.glob("versus-reference-*-quick.json")
    row = json.loads(json_path.read_text())["cases"]["cartpole_default"]
    ours, ref = row["samples"]["purejaxppo"][0], row["samples"]["reference"][0]
    assert ours["env_steps_per_call"] == ref["env_steps_per_call"] == 256
    for sample in (ours, ref):
        assert sample["compile_s"] > 0 and sample["steps_per_s"] > 0
        assert math.isfinite(sample["final_return"]) and sample["final_return"] > 0
    assert row["ratio_steps_per_s"] == ours["steps_per_s"] / ref["steps_per_s"]
    assert row["ratio_compile_s"] == ours["compile_s"] / ref["compile_s"]
    if "PJRT_NPROC" not in os.environ:  # both sides on the auto pool of the case
        assert row["cpu_threads"] == 1
    md = json_path.with_suffix(".md").read_text()
    threads = row['cpu_threads'] or 'cores'
    assert f"| cartpole_default | 1 | 1 / 1 | {threads} / {threads} | 256 |" in md
    assert "| cartpole_default | compile_s | 2.7 s | 5.5 s | <= 0.49 |" in md
    # One compute floor for both sides, from the rates this run measured once.
    throughput = _load_benchmark("throughput")
    meta = json.loads(json_path.read_text())["meta"]
    from purejaxppo import PPOConfig

    cost = throughput.case_cost(PPOConfig(**row["config"]))
    assert row["floor_steps_per_s"] == pytest.approx(throughput.floor_steps_per_s(cost, meta["rates"]))
    for impl in ("purejaxppo", "reference"):
        assert row[f"{impl}_fraction_of_floor"] == row[f"{impl}_steps_per_s"] / row["floor_steps_per_s"]
    assert row["ratio_fraction_of_floor"] == row["ratio_steps_per_s"]
    assert (f"| {row['purejaxppo_fraction_of_floor']:.0%} / {row['reference_fraction_of_floor']:.0%} |" in md)


def test_versus_reference_set_changes_both_sides_and_leaves_the_cases_results(capsys):
    versus = _load_benchmark("versus_reference")
    assert versus.results_stem("cpu") == "versus-reference-cpu"
    assert versus.results_stem("cpu", True, {}) == "versus-reference-cpu-quick"
    assert (versus.results_stem("gpu", False, {"update_epochs": 1, "num_minibatches": 1})
            == "versus-reference-gpu-set-update_epochs=1+num_minibatches=1")
    row = {"seeds": 1, "env_steps_per_call": 512, "purejaxppo_compile_s": 1.0, "reference_compile_s": 2.0,
           "ratio_compile_s": 0.5, "purejaxppo_steps_per_s": 3.0, "reference_steps_per_s": 2.0,
           "ratio_steps_per_s": 1.5, "purejaxppo_final_return": 9.0, "reference_final_return": 9.0}
    meta = {"device": "cpu", "machine": "m", "jax": "0", "backend": "cpu", "pairs": 1, "repeats": 1,
            "command": "c", "date": "d"}
    assert "ratio asked" in versus._table({"cartpole_default": row}, meta)
    # The floor target (about 60% where PureJaxRL is at about 37%) as the ratio of the two fractions.
    big = {**row, "floor_steps_per_s": 10.0, "purejaxppo_fraction_of_floor": 0.3,
           "reference_fraction_of_floor": 0.2, "ratio_fraction_of_floor": 1.5}
    table = versus._table({"cartpole_2048x128": big}, meta)
    assert "| cartpole_2048x128 | fraction_of_floor | 60% | 37% | >= 1.62 | 1.50 | not met |" in table
    assert "| 30% / 20% |" in table
    # A row without a floor (results from before it) shows none and asks no floor target.
    table = versus._table({"cartpole_2048x128": row}, meta)
    assert "| - / - |" in table and "fraction_of_floor" not in table
    # The speed targets are for their cases as they are: no target table for a changed run.
    table = versus._table({"cartpole_default": row}, {**meta, "set": {"update_epochs": 1}})
    assert "ratio asked" not in table and "by `--set`: {'update_epochs': 1}" in table

    throughput = _load_benchmark("throughput")
    parser = argparse.ArgumentParser()
    assert throughput.parse_overrides(parser, ["update_epochs=1", "env_name=Acrobot-v1", "hidden_sizes=(8, 8)"],
                                      ["update_epochs", "env_name", "hidden_sizes"]) == {
        "update_epochs": 1, "env_name": "Acrobot-v1", "hidden_sizes": (8, 8)}
    # Bad input stops the run before anything compiles, naming the field and what is allowed:
    # a --set item (parse_overrides, as the script calls it) ...
    from reference_ppo import ReferenceConfig

    fields = [f.name for f in __import__("dataclasses").fields(ReferenceConfig)]
    for items, message in ((["epochs=1"], "no field 'epochs'; the fields are ['anneal_lr'"),
                           (["update_epochs"], "--set takes FIELD=VALUE, got 'update_epochs'")):
        with pytest.raises(SystemExit) as exit_:
            throughput.parse_overrides(argparse.ArgumentParser(prog="versus_reference.py"), items, fields)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    # ... and a value a case's config refuses, from the script itself.
    script = str(ROOT / "benchmarks" / "versus_reference.py")
    proc = subprocess.run([sys.executable, script, "--set", "num_minibatches=3", "--cases", "cartpole_default"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and ("--set with case cartpole_default: num_minibatches=3 must divide "
                                     "batch_size") in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git checkout")
def test_compare_revisions_smoke(tmp_path):
    compare = _load_benchmark("compare_revisions")
    with pytest.raises(ValueError, match="'no-such-revision' is not a commit"):
        compare.resolve_revision("no-such-revision")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert compare.resolve_revision("HEAD") == head and compare.resolve_revision(".") == "."
    worktrees = lambda: subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True,
                                       text=True, check=True).stdout
    before = worktrees()

    # HEAD in a temporary worktree against the working tree.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_revisions.py"), "HEAD", "--quick",
           "--pairs", "1", "--repeats", "1", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert worktrees() == before  # the temporary worktree is gone
    (json_path,) = tmp_path.glob(f"compare-{head}-{head}*-cartpole_default-quick.json")
    data = json.loads(json_path.read_text())
    assert data["meta"]["base"] == head and data["meta"]["head"].startswith(head)
    row = data["cases"]["cartpole_default"]
    base, new = row["samples"]["base"][0], row["samples"]["head"][0]
    assert base["env_steps_per_call"] == new["env_steps_per_call"] == 256
    # Each side imported its own checkout: head the working tree, base a temporary worktree.
    assert Path(new["module"]).resolve() == ROOT / "purejaxppo" / "__init__.py"
    assert Path(base["module"]).parts[-3:] == ("base", "purejaxppo", "__init__.py")
    assert not Path(base["module"]).resolve().is_relative_to(ROOT)
    assert base["compile_s"] > 0 and new["steps_per_s"] > 0
    assert row["ratio_steps_per_s"] == new["steps_per_s"] / base["steps_per_s"]
    assert row["ratio_compile_s"] == new["compile_s"] / base["compile_s"]
    md = json_path.with_suffix(".md").read_text()
    assert f"| cartpole_default | 1 | {row['cpu_threads'] or 'cores'} | 256 |" in md

    # A bad revision is refused before anything runs.
    proc = subprocess.run([*cmd[:2], "no-such-revision"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "'no-such-revision' is not a commit" in proc.stderr


def test_cases_cpu_pool(monkeypatch):
    """Each case's processes run on the pool and devices the library's rules
    pick for it."""
    from purejaxppo.platform.cpu_devices import cpu_devices_for

    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    throughput = _load_benchmark("throughput")
    devices = {name: throughput.case_cpu_devices(s, "auto") for name, (o, s) in throughput.CASES.items()}
    assert devices == {name: cpu_devices_for(max(s, 1)) for name, (o, s) in throughput.CASES.items()}
    assert devices["cartpole_default"] == 1 and throughput.case_cpu_devices(8, "3") == 3
    picked = {name: throughput.case_cpu_threads(o, s, "auto", devices[name])
              for name, (o, s) in throughput.CASES.items()}
    x64_split = cpu_devices_for(64) > 1  # seeds over devices: one thread each
    assert picked == {"cartpole_default": 1, "cartpole_2048x128": None, "cartpole_default_x8": 1,
                      "cartpole_default_logged": 1, "cartpole_2048x128_logged": None,
                      "cartpole_default_x64": 1 if x64_split else None, "pendulum": 1,
                      "breakout_minatar_cnn": None,
                      "breakout_minatar_cnn_x4": 1 if cpu_devices_for(4) > 1 else None,
                      "cartpole_gru": 1, "cartpole_gru_x8": 1}
    env = throughput.child_env(1, 2)
    assert env["PJRT_NPROC"] == "1" and env["JAX_NUM_CPU_DEVICES"] == "2"
    assert throughput.case_cpu_threads({}, 0, "default") is None
    assert throughput.case_cpu_threads({"num_envs": 2048}, 0, "2") == 2
    assert throughput.child_env(1)["PJRT_NPROC"] == "1" and "PJRT_NPROC" not in throughput.child_env(None)


def test_cpu_settings_and_floors_apply_to_the_cpu_only(monkeypatch):
    """Off the CPU no pool size or CPU device count is set for a case (the
    pool variable also sizes a GPU client's host threads), and a floor
    counts one device's rates once per device the case ran on, where on the
    CPU its devices share one pool and the floor is the pool's."""
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    from purejaxppo.platform import cpu_devices as devices_module

    monkeypatch.setattr(devices_module, "available_cores", lambda: 2)
    throughput = _load_benchmark("throughput")
    for name, (overrides, seeds) in throughput.CASES.items():
        devices = throughput.case_cpu_devices(seeds, "auto", overrides)
        assert throughput.case_cpu_settings(overrides, seeds, "cpu") == (
            throughput.case_cpu_threads(overrides, seeds, "auto", devices), devices)
        for backend in ("gpu", "tpu"):
            assert throughput.case_cpu_settings(overrides, seeds, backend, "2", "4") == (None, None)
    # On two cores: one seed's envs over two devices where each keeps 256
    # samples of a minibatch (2048 x 128; the CNN's 64 envs), seeds over
    # two devices, small runs on one; every split device on one thread.
    settings = {name: throughput.case_cpu_settings(overrides, seeds, "cpu")
                for name, (overrides, seeds) in throughput.CASES.items()}
    assert settings == {
        "cartpole_default": (1, 1), "cartpole_2048x128": (1, 2), "cartpole_default_x8": (1, 2),
        "cartpole_default_logged": (1, 1), "cartpole_2048x128_logged": (1, 2),
        "cartpole_default_x64": (1, 2), "pendulum": (1, 1), "breakout_minatar_cnn": (1, 2),
        "breakout_minatar_cnn_x4": (1, 2), "cartpole_gru": (1, 1), "cartpole_gru_x8": (1, 2)}
    assert [throughput.floor_devices(b, 4) for b in ("cpu", "gpu", "tpu")] == [1, 4, 4]
    assert throughput.threads_text(1, "cpu") == "1" and throughput.threads_text(None, "cpu") == "cores"
    assert throughput.threads_text(None, "gpu") == "-"


def test_versus_reference_floors_count_each_sides_accelerators(monkeypatch):
    """On GPUs each side's floor counts the devices it ran on: purejaxppo's
    seeds split over two, the reference on one, so the fractions' ratio is
    half the rates' ratio; on the CPU one floor serves both. No pool or
    device count is asked for off the CPU."""
    # A device count already in the environment (an earlier in-process CLI
    # run of this worker sets one) would be left alone, as the CLI leaves it.
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "")
    versus = _load_benchmark("versus_reference")
    asked = []

    def fake_spawn(impl, overrides, seeds, repeats, timeout, threads=None, devices=None, backend="cpu"):
        asked.append((impl, threads, devices))
        ours = impl == "purejaxppo"
        return {"compile_s": 1.0 if ours else 2.0, "steps_per_s": 300.0 if ours else 100.0,
                "final_return": 1.0, "env_steps_per_call": 64, "devices": 2 if ours else 1,
                "backend": backend}

    monkeypatch.setattr(versus, "_spawn", fake_spawn)
    row = versus.compare_case({"env_name": "CartPole-v1"}, 8, 1, 1, 10, floor=1000.0, backend="gpu")
    assert {(threads, devices) for _, threads, devices in asked} == {(None, None)}
    assert row["floor_steps_per_s"] == 2000.0 and row["reference_floor_steps_per_s"] == 1000.0
    assert row["purejaxppo_fraction_of_floor"] == 0.15 and row["reference_fraction_of_floor"] == 0.1
    assert row["ratio_steps_per_s"] == 3.0 and row["ratio_fraction_of_floor"] == 1.5
    asked.clear()
    row = versus.compare_case({"env_name": "CartPole-v1"}, 8, 1, 1, 10, floor=1000.0, backend="cpu")
    assert all(devices is not None for _, _, devices in asked)
    assert row["floor_steps_per_s"] == row["reference_floor_steps_per_s"] == 1000.0
    assert row["ratio_fraction_of_floor"] == row["ratio_steps_per_s"] == 3.0


def test_child_results_are_checked_against_the_probes_backend(tmp_path):
    """A child whose backend is not the probe's (one that found a TPU taken
    and fell back to the CPU) fails the run, naming both, as does a child
    that prints no result; the parent, pinned to the CPU, leaves its
    children's environment as the user's."""
    throughput = _load_benchmark("throughput")
    child = [sys.executable, "-c", 'print("noise"); print(\'RESULT {"backend": "cpu", "x": 1}\')']
    assert throughput.run_child(child, dict(os.environ), 60, "the child", "cpu")["x"] == 1
    with pytest.raises(RuntimeError, match="'cpu', not on 'tpu'"):
        throughput.run_child(child, dict(os.environ), 60, "the child", "tpu")
    with pytest.raises(RuntimeError, match=r"the child failed \(exit code 3\)"):
        throughput.run_child([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ), 60,
                             "the child")
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import throughput, jax\n"
        "throughput.pin_to_cpu(); assert jax.config.jax_platforms == 'cpu'\n"
        "assert throughput.child_env(None).get('JAX_PLATFORMS') == os.environ.get('JAX_PLATFORMS')\n"
        "probed = throughput.probe_device(rates=False)\n"
        "assert probed['backend'] == jax.default_backend() == 'cpu' and 'rates' not in probed\n"
        "print('OK', probed['device'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "benchmarks")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "OK cpu" in proc.stdout, proc.stderr[-3000:]


def test_accelerator_wheels_pin_versions_the_project_allows():
    """The wheels `benchmarks/accelerator_wheels.sh` fetches for a machine
    without a registry: every pinned package that `pyproject.toml` names is
    in its range, and gymnax and tyro (what that image lacks) are among them."""
    import re
    import tomllib

    from packaging.requirements import Requirement

    script = (ROOT / "benchmarks" / "accelerator_wheels.sh").read_text()
    pins = dict(re.findall(r"\b([a-z][a-z0-9-]*)==([0-9][0-9.]*)", script))
    assert {"gymnax", "tyro"} <= set(pins), pins
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {r.name.lower(): r.specifier for r in map(Requirement, deps)}
    checked = [name for name in pins if name in ranges]
    assert checked, "no pinned package is a project dependency"
    for name in checked:
        assert pins[name] in ranges[name], f"{name}=={pins[name]} is outside pyproject's {ranges[name]}"


def test_throughput_plot_draws_each_sweep_with_its_floor(tmp_path):
    import matplotlib.pyplot as plt

    throughput = _load_benchmark("throughput")
    point = lambda x, floor: {"x": x, "steps_per_s": 1e5 * x, "rollout_only_steps_per_s": 3e5 * x,
                              "env_only_steps_per_s": 9e5 * x, **({"case_floor_steps_per_s": 2e5 * x} if floor else {})}
    for floor in (True, False):  # results written before the case floor have no such line
        sweeps = {"num_envs": [point(4, floor), point(16, floor)], "seeds": [point(1, floor), point(8, floor)]}
        path = tmp_path / f"plot-{floor}.png"
        throughput._plot(sweeps, path, "cpu")
        assert path.stat().st_size > 0
        for ax in plt.gcf().axes:
            labels = [line.get_label() for line in ax.get_lines()]
            assert ("compute floor, on its threads" in labels) == floor, labels
            floor_line = [line for line in ax.get_lines() if line.get_label().startswith("compute floor")]
            if floor:
                assert list(floor_line[0].get_ydata()) == [2e5 * p["x"] for p in sweeps[
                    "num_envs" if ax is plt.gcf().axes[0] else "seeds"]]
        plt.close("all")


def test_processes_benchmark_smoke(tmp_path):
    # One launch of one process (--devices 1): the script's launch, timing and
    # tables; the launches of several processes are tests/test_multiprocess.py's.
    cmd = [sys.executable, str(ROOT / "benchmarks" / "processes.py"), "--quick", "--cases", "seeds",
           "--devices", "1", "--pairs", "1", "--repeats", "2", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads((tmp_path / "multiprocess-cpu-quick.json").read_text())["rows"]
    assert (row["case"], row["processes"], row["devices"]) == ("seeds", 1, 1)
    (launch,) = row["launches"]
    assert launch["processes"] == 1 and launch["devices"] == 1 and len(launch["times_s"]) == 2
    # 4 updates of 8 envs x 16 steps, one seed, over the median call (of two: their mean).
    assert row["steps_per_s"] == pytest.approx(512 / (sum(launch["times_s"]) / 2))
    assert row["compile_s"] == launch["compile_s"] > 0
    assert "| seeds | CartPole-v1: num_envs=8, num_steps=16, total_timesteps=512 | 1 x 1 |" in (
        tmp_path / "multiprocess-cpu-quick.md").read_text()


def test_pbt_benchmark_smoke(tmp_path):
    # Both arms at a tiny budget on one env: the script's selection, greedy
    # evaluation, tables, schedules plot and its rows in the returns table.
    pytest.importorskip("rliable")  # the returns table's statistics
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pbt.py"), "--quick", "--envs", "Pendulum-v1",
           "--seeds", "2", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads((tmp_path / "pbt" / "pbt-cpu-quick.json").read_text())["results"]
    assert len(result["points"]) == 8 and len(result["grid_iqm"]) == 8
    assert result["best_point"] == result["points"][result["grid_iqm"].index(max(result["grid_iqm"]))]
    grid, pbt = result["rows"]["Pendulum-v1 grid-best"], result["rows"]["Pendulum-v1 PBT"]
    assert grid["budget"] == pbt["budget"] and grid["seeds"] == pbt["seeds"] == 2
    assert len(pbt["eval_returns"]) == 2 and len(result["lineage_seed0"]) == pbt["num_updates"]
    assert (tmp_path / "pbt" / "pbt-cpu-quick-schedules.png").is_file()
    rows = json.loads((tmp_path / "returns-cpu-quick.json").read_text())["rows"]
    assert set(rows) == {"Pendulum-v1 grid-best", "Pendulum-v1 PBT"}
    assert "| Pendulum-v1 PBT | 2 |" in (tmp_path / "returns-cpu-quick.md").read_text()
