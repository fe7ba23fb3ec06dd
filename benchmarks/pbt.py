"""PBT against a grid sweep at equal env steps: does population-based training pay?

    python benchmarks/pbt.py                          # every env of CASES
    python benchmarks/pbt.py --envs Pendulum-v1 --seeds 8
    python benchmarks/pbt.py --quick                  # a smoke run (tiny budgets)

For each env, from its preset, two arms with the same total env steps:

* **grid**: 8 hyperparameter points (`CASES`) x S seeds, one compiled call
  (``jax.vmap`` over points and seeds); the best point is the one with the
  highest IQM of its seeds' final returns;
* **PBT**: S populations of 8 members (`purejaxppo.pbt`), one compiled call,
  each population starting from the same 8 points, exploring the grid's
  fields; a population's result is its member with the highest final return.

A final return is the mean ``episode_return`` over the last 10 updates
(`purejaxppo.evaluation.final_return`); each selected policy (the best grid
point's S seeds, each population's best member) also plays 16 greedy
episodes on keys neither arm trained on, which measures it apart from the
noise that selected it. Both arms use the same seed keys.

Writes ``benchmarks/results/pbt/pbt-<device>.{json,md}`` (the comparison, each
grid point's IQM, the PBT populations' IQM), ``pbt-<device>-schedules.png``
(the hyperparameters PBT's members ran at each update of one population, the
best member's lineage in bold) and adds two rows per env to the returns table
(``benchmarks/results/returns-<device>.{json,md}``): ``<env> grid-best`` and
``<env> PBT``. ``--quick`` writes ``-quick`` files only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Case:
    """One env's comparison: the preset's config with ``overrides``, the grid
    (field -> values; their product is the 8 points and PBT's first
    population), and PBT's ``ready_every``."""

    overrides: dict
    grid: dict
    ready_every: int
    seeds: int = 4


CASES = {
    "Pendulum-v1": Case(overrides={}, grid={"lr": (3e-4, 1e-3, 3e-3, 1e-2), "clip_eps": (0.1, 0.3)},
                        ready_every=25),
    "Breakout-MinAtar": Case(overrides={"total_timesteps": 1_500_000},
                             grid={"lr": (1e-3, 2.5e-3, 5e-3, 1e-2), "clip_eps": (0.1, 0.2)},
                             ready_every=10),
    "SpaceInvaders-MinAtar": Case(overrides={"total_timesteps": 1_000_000},
                                  grid={"lr": (1e-3, 2.5e-3, 5e-3, 1e-2), "clip_eps": (0.1, 0.2)},
                                  ready_every=10),
}


def run_case(env: str, case: Case, seeds: int, quick: bool) -> dict:
    import jax

    from purejaxppo import make_train, preset_config
    from purejaxppo.evaluation import final_return, make_evaluate
    from purejaxppo.pbt import PBTConfig, lineage, make_pbt
    from purejaxppo.statistics import summarize_final_returns
    from purejaxppo.sweep import grid_points, points_hparams
    from returns import EVAL_SEED, TRAIN_SEED, learning_curve
    from timing import compile_timed, run_timed

    overrides = dict(case.overrides)
    config = preset_config(env, **overrides)
    ready_every = case.ready_every
    if quick:
        config = config.replace(num_envs=min(config.num_envs, 4), num_steps=64, num_minibatches=2,
                                update_epochs=1)
        config = config.replace(total_timesteps=8 * config.batch_size)  # an episode or two per env
        ready_every = 2
    points = grid_points(case.grid)
    population = points_hparams(config, points)  # the grid's points, PBT's first population
    keys = jax.random.split(jax.random.PRNGKey(TRAIN_SEED), seeds)

    # Grid: points x seeds in one call.
    train = make_train(config)
    grid_fn = jax.vmap(jax.vmap(train, in_axes=(0, None)), in_axes=(None, 0))
    compiled, grid_compile_s = compile_timed(grid_fn, keys, population)
    grid, grid_run_s, _ = run_timed(compiled, keys, population)
    grid_final = final_return(jax.device_get(grid.metrics))  # (points, seeds)
    grid_stats = [summarize_final_returns(f) for f in grid_final]
    best = int(np.argmax([s["iqm"] if np.isfinite(s["iqm"]) else -np.inf for s in grid_stats]))

    # PBT: seeds populations, each starting from the grid's points.
    pbt = PBTConfig(population=len(points), ready_every=ready_every, quantile=0.25,
                    explore=tuple(case.grid))
    pbt_fn = jax.vmap(make_pbt(config, pbt), in_axes=(0, None))
    compiled, pbt_compile_s = compile_timed(pbt_fn, keys, population)
    result, pbt_run_s, _ = run_timed(compiled, keys, population)
    pbt_metrics = jax.device_get(result.metrics)  # (seeds, members, updates)
    pbt_final = final_return(pbt_metrics)
    chosen = np.argmax(np.where(np.isfinite(pbt_final), pbt_final, -np.inf), axis=1)  # (seeds,)
    seed_index = np.arange(seeds)

    # Greedy evaluation of the selected policies, on keys neither arm trained on.
    evaluate = jax.jit(jax.vmap(make_evaluate(config, 16)))
    eval_keys = jax.random.split(jax.random.PRNGKey(EVAL_SEED), seeds)
    pick = lambda tree, index: jax.tree.map(lambda x: x[index], tree)
    grid_state = pick(grid.train_state, best)
    members = result.train_state.members
    pbt_state = jax.tree.map(lambda x: x[seed_index, chosen], members)
    grid_eval = np.asarray(evaluate(grid_state.params, eval_keys, grid_state.obs_norm)).mean(axis=1)
    pbt_eval = np.asarray(evaluate(pbt_state.params, eval_keys, pbt_state.obs_norm)).mean(axis=1)

    steps = config.num_updates * config.batch_size
    curve_of = lambda returns: learning_curve(returns, config.batch_size)
    pbt_returns = pbt_metrics["episode_return"][seed_index, chosen]
    schedules = {name: pbt_metrics[f"hp_{name}"][0].tolist() for name in case.grid}
    lineage0 = lineage(pbt_metrics["parent"][0], int(chosen[0])).tolist()
    row = lambda label, finals, evals, compile_s, run_s, returns, note: {
        "env": env, "label": label, "seeds": seeds, "budget": steps, "env_steps_per_seed": steps,
        "num_updates": config.num_updates, "config": dataclasses.asdict(config), "source": note,
        "target": None, "final_returns": np.asarray(finals).tolist(),
        **{f"final_return_{k}": v for k, v in summarize_final_returns(finals).items()},
        "target_met": None, "eval_episodes": 16, "eval_returns": np.asarray(evals).tolist(),
        "eval_return_mean": float(np.mean(evals)), "compile_s": compile_s, "run_s": run_s,
        "wall_s": compile_s + run_s, "curve": curve_of(returns), "quick": quick,
    }
    point_label = ", ".join(f"{k}={v:g}" for k, v in points[best].items())
    return {
        "env": env,
        "points": points,
        "grid_iqm": [s["iqm"] for s in grid_stats],
        "grid_iqm_ci95": [s["iqm_ci95"] for s in grid_stats],
        "best_point": points[best],
        "pbt": dataclasses.asdict(pbt),
        "pbt_population_iqm": summarize_final_returns(pbt_final.ravel())["iqm"],
        "schedules_seed0": schedules,
        "lineage_seed0": lineage0,
        "chosen_members": chosen.tolist(),
        "batch_size": config.batch_size,
        "rows": {
            f"{env} grid-best": row(
                f"{env} grid-best", grid_final[best], grid_eval, grid_compile_s, grid_run_s,
                grid.metrics["episode_return"][best],
                f"The best of an 8-point grid ({point_label}) over {seeds} seeds; the whole grid "
                f"ran {len(points)} x {seeds} runs of {steps:,} steps (benchmarks/pbt.py)."),
            f"{env} PBT": row(
                f"{env} PBT", pbt_final[seed_index, chosen], pbt_eval, pbt_compile_s, pbt_run_s,
                pbt_returns,
                f"PBT, {seeds} populations of {len(points)} members started at the grid's points, "
                f"ready every {ready_every} updates, exploring {', '.join(case.grid)}; each "
                f"population's best member (benchmarks/pbt.py)."),
        },
    }


def markdown(results: list[dict], meta: dict) -> str:
    fmt = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:.4g}"
    lines = [f"# PBT against a grid on {meta['device']}", "",
             f"{meta['machine']}; jax {meta['jax']}. Commands: "
             + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", meta["command"]) for r in results))
             + ". Equal env steps: "
             "8 grid points x S seeds against S populations of 8. Final return = mean episode return "
             "over the last 10 updates; IQM over seeds with a 95% bootstrap CI; greedy eval = 16 "
             "greedy episodes of each selected policy on fresh keys.", "",
             "| env | arm | seeds | steps per run | IQM [95% CI] | greedy eval mean | run s |",
             "|---|---|---:|---:|---|---:|---:|"]
    for res in results:
        for name, r in res["rows"].items():
            low, high = r["final_return_iqm_ci95"]
            lines.append(f"| {res['env']} | {name.split(' ', 1)[1]} | {r['seeds']} | {r['budget']:,} | "
                         f"{fmt(r['final_return_iqm'])} [{fmt(low)}, {fmt(high)}] | "
                         f"{fmt(r['eval_return_mean'])} | {r['run_s']:.1f} |")
    lines += ["", "Each grid point's IQM (final return over seeds):", ""]
    for res in results:
        cells = ", ".join(f"{', '.join(f'{k}={v:g}' for k, v in p.items())}: {fmt(i)}"
                          for p, i in zip(res["points"], res["grid_iqm"]))
        lines.append(f"- {res['env']}: {cells}; PBT's whole final populations: IQM "
                     f"{fmt(res['pbt_population_iqm'])}.")
    return "\n".join(lines) + "\n"


def plot_schedules(results: list[dict], path: Path) -> None:
    """One row per env of `purejaxppo.plotting.draw_schedule`, one panel per field."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from purejaxppo.plotting import draw_schedule

    fields = max(len(r["schedules_seed0"]) for r in results)
    figure = Figure(figsize=(4.2 * fields, 3.2 * len(results)), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(results), fields, squeeze=False)
    for row_axes, res in zip(axes, results):
        for ax, (name, values) in zip(row_axes, res["schedules_seed0"].items()):
            draw_schedule(ax, values, res["lineage_seed0"], res["batch_size"], name)
            ax.set_title(f"{res['env']}: {name}", fontsize="small")
    figure.suptitle("Hyperparameter schedules PBT found (one population; thin: each member)",
                    fontsize="medium")
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", type=int, default=None, help="seeds (populations) per arm")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, -quick files")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")

    import purejaxppo  # noqa: F401  (XLA guard before jax starts)
    import jax

    import returns
    from throughput import device_name, machine_name

    device = device_name()
    suffix = "-quick" if args.quick else ""
    out = args.out_dir / "pbt"
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/pbt.py", *sys.argv[1:]])
    meta = {"device": device, "machine": machine_name(), "jax": jax.__version__,
            "backend": jax.default_backend(), "command": command, "date": time.strftime("%Y-%m-%d"),
            "commit": returns.git_commit()}
    results = []
    for env in args.envs:
        case = CASES[env]
        seeds = args.seeds or (2 if args.quick else case.seeds)
        start = time.perf_counter()
        res = {**run_case(env, case, seeds, args.quick), "command": command}
        results.append(res)
        for name, r in res["rows"].items():
            print(f"{name}: IQM {r['final_return_iqm']:.4g} {r['final_return_iqm_ci95']}, greedy eval "
                  f"{r['eval_return_mean']:.4g} ({time.perf_counter() - start:.0f} s)", flush=True)

    stem = f"pbt-{device}{suffix}"
    # Merged: the envs not rerun keep their results (each env takes minutes to an hour).
    rerun = {res["env"] for res in results}
    if (out / f"{stem}.json").exists():
        kept = json.loads((out / f"{stem}.json").read_text())["results"]
        results = [res for res in kept if res["env"] not in rerun] + results
        results.sort(key=lambda res: list(CASES).index(res["env"]) if res["env"] in CASES else len(CASES))
    (out / f"{stem}.json").write_text(json.dumps(returns.json_safe({"meta": meta, "results": results}),
                                                 indent=1))
    (out / f"{stem}.md").write_text(markdown(results, meta))
    plot_schedules(results, out / f"{stem}-schedules.png")
    # The returns table: two rows per env, merged into it.
    table = f"returns-{device}{suffix}"
    rows = returns._load_rows(args.out_dir / f"{table}.json")
    for res in results:
        if res["env"] not in rerun:
            continue
        for name, r in res["rows"].items():
            rows[name] = {**r, "command": command, "commit": meta["commit"], "device": device,
                          "backend": meta["backend"], "jax": meta["jax"], "date": meta["date"]}
    returns.write_results(rows, args.out_dir, table, {k: meta[k] for k in ("device", "machine", "jax", "backend")})
    print(f"wrote {out / stem}.json, .md, -schedules.png and rows of {args.out_dir / table}.md")


if __name__ == "__main__":
    main()
