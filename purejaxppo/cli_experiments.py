"""Command line experiments: ``sweep`` (a grid) and ``pbt`` (a population).

    python -m purejaxppo sweep --env Pendulum-v1 --grid lr=1e-4,3e-4,1e-3 clip_eps=0.1,0.2 --num-seeds 4
    python -m purejaxppo pbt --env Pendulum-v1 --population 8 --ready-every 25 --explore lr clip_eps

Every other flag is the training command's (``python -m purejaxppo --help``):
the env's preset under them, ``--num-seeds``, ``--seed``, ``--run-dir``, the
CPU settings. A sweep trains all points x seeds in one compiled call
(`purejaxppo.sweep`), prints the points ranked by the IQM of their seeds'
final returns with a 95% bootstrap CI, and writes ``sweep.md``,
``sweep.json`` and ``sweep.png`` into its run directory, with one run
directory per point beside them (``config.json``, ``metrics.csv``,
``summary.json``, the final state in ``checkpoints/``: ``eval`` and ``plot``
take it, ``--config`` reruns it alone).

A PBT run (`purejaxppo.pbt`) trains ``--num-seeds`` populations, saving a
checkpoint every ``--checkpoint-every`` updates (the same command with the
same ``--run-dir`` resumes it), and writes ``metrics.csv`` (a row per member:
``seed`` = population x P + member; the hyperparameters each ran with, the
member it copied, its score), ``pbt.json`` (each population's best member,
its hyperparameters and lineage), ``schedules.png`` and ``curves.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from purejaxppo.cli import (
    Args,
    _nan_to_none,
    apply_platform,
    parse_args,
    resolve_run_dir,
    with_env_args,
    write_run_config,
)
from purejaxppo.paths import output_dir

# Training-command flags that belong to one run, not to a grid or a population.
_SINGLE_RUN_FLAGS = ("--checkpoint-dir", "--init-from", "--init-seed", "--json-out", "--tensorboard",
                     "--wandb", "--wandb-project", "--env-devices", "--coordinator-address",
                     "--num-processes", "--process-id", "--distributed", "--heartbeat-timeout",
                     "--config", "--eval-episodes", "--progress", "--no-progress")
# Checkpointing in chunks: pbt takes these; a sweep saves each point's final state only.
_CHECKPOINT_FLAGS = ("--checkpoint-every", "--on-bad-checkpoint")


def _split_argv(prog: str, parser: argparse.ArgumentParser, argv: list[str],
                refused: tuple[str, ...]) -> tuple[argparse.Namespace, Args]:
    """``argv`` as this command's own flags (``parser``) and the training
    command's `Args`; a flag of ``refused`` is a `ValueError` naming it."""
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        print(f"\nand the training command's flags but {', '.join(refused)}:\n")
        parse_args(["--help"])
    try:
        known, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as error:
        raise ValueError(f"{prog}: {error}") from None
    for token in rest:
        flag = token.split("=", 1)[0]
        if flag in refused:
            raise ValueError(f"{prog}: {flag} is not taken by '{prog}'; allowed: the training "
                             f"command's other flags (python -m purejaxppo --help)")
    args = parse_args(rest)
    return known, args


def _run_dir(args: Args, config, name: str) -> Path | None:
    run_dir = resolve_run_dir(args.run_dir, config.env_name)
    if run_dir is not None and args.run_dir == "auto":
        run_dir = run_dir.with_name(f"{name}-{run_dir.name}")
    return None if run_dir is None else output_dir("run_dir", run_dir)


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4g}"


def _write_metrics(path: Path, metrics: dict, batch_size: int) -> None:
    """``metrics.csv`` of every update of every run (``seed``: the flat run
    index), written whole (over an older one)."""
    from purejaxppo.loggers import CSVLogger, Reporter

    path.unlink(missing_ok=True)
    reporter = Reporter([CSVLogger(path)], batch_size)
    reporter.replay(metrics)
    reporter.close()


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(_nan_to_none(payload), indent=1, allow_nan=False))


def _write_point(run_dir: Path, config, args: Args, argv: list[str], state, metrics, keys,
                 summary: dict) -> None:
    """One grid point's run directory: config.json, metrics.csv,
    summary.json and the final state in checkpoints/."""
    from purejaxppo.checkpoint import save_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_config(run_dir, config, args, argv)
    _write_metrics(run_dir / "metrics.csv", metrics, config.batch_size)
    _write_json(run_dir / "summary.json", summary)
    save_checkpoint(run_dir / "checkpoints", config, state, metrics, config.hyperparams(), keys)


def _plot(run_dirs: list[Path], out: Path, title: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the plot extra
        return
    from purejaxppo.plotting import plot_runs

    plot_runs(run_dirs, out=out, title=title)


def sweep_command(argv: list[str]) -> dict:
    """``python -m purejaxppo sweep --grid FIELD=V1,V2 ... [training flags]``:
    every point of the grid x every seed in one compiled call, ranked."""
    import jax

    from purejaxppo import sweep as sweeps

    parser = argparse.ArgumentParser(
        prog="purejaxppo sweep", add_help=False, exit_on_error=False, allow_abbrev=False,
        description="Train every point of a hyperparameter grid x every seed in one compiled call; "
                    "print and write the points ranked by the IQM of their final returns.")
    parser.add_argument("--grid", nargs="+", default=None, metavar="FIELD=V1,V2",
                        help="the grid: one FIELD=V1,V2,... per traced hyperparameter (lr, gamma, "
                             "gae_lambda, clip_eps, ent_coef, vf_coef, max_grad_norm, ...)")
    own, args = _split_argv("sweep", parser, argv, _SINGLE_RUN_FLAGS + _CHECKPOINT_FLAGS)
    if own.grid is None:
        raise ValueError("sweep: --grid FIELD=V1,V2 ... is required (e.g. --grid lr=1e-4,3e-4 clip_eps=0.1,0.2)")
    if args.num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive int, got {args.num_seeds}")
    config = with_env_args(args.config, args)
    grid = sweeps.parse_grid(own.grid)
    points = sweeps.grid_points(grid)
    sweeps.points_hparams(config, points)  # every value checked before anything starts
    runs = len(points) * args.num_seeds
    apply_platform(dataclasses.replace(args, num_seeds=runs))  # before anything starts JAX
    run_dir = _run_dir(args, config, "sweep")
    if args.compile_cache:
        from purejaxppo.platform.compile_cache import enable_compilation_cache

        enable_compilation_cache()
    steps = config.num_updates * config.batch_size
    print(f"purejaxppo sweep | {config.env_name} | {len(points)} points x {args.num_seeds} seed(s) x "
          f"{steps:,} steps in one call | backend {jax.default_backend()} | {jax.device_count()} "
          f"device(s)", flush=True)
    result = sweeps.run_sweep(config, points, args.num_seeds, args.seed)
    table = sweeps.rank_points(result)
    lines = ["| rank | point | IQM [95% CI] | median | mean |", "|---:|---|---|---:|---:|"]
    for rank, row in enumerate(table, 1):
        low, high = row["iqm_ci95"]
        nan = f" ({row['nan_seeds']} NaN)" if row["nan_seeds"] else ""
        nan += f" (diverged: {row['diverged']})" if row["diverged"] else ""
        lines.append(f"| {rank} | {row['label']}{nan} | {_fmt(row['iqm'])} [{_fmt(low)}, {_fmt(high)}] | "
                     f"{_fmt(row['median'])} | {_fmt(row['mean'])} |")
    rate = runs * steps / result.run_s
    print(f"compile {result.compile_s:.2f} s | run {result.run_s:.2f} s | {rate:,.0f} env steps/s (all runs)\n")
    print(f"final return (mean over each seed's last 10 updates), {args.num_seeds} seed(s) per point:")
    print("\n".join(lines))
    summary = {"env_name": config.env_name, "argv": ["sweep", *argv], "grid": {k: list(v) for k, v in grid.items()},
               "num_seeds": args.num_seeds, "env_steps_per_run": steps, "compile_s": result.compile_s,
               "run_s": result.run_s, "steps_per_s": rate, "ranking": table}
    if run_dir is not None:
        keys = jax.random.split(jax.random.PRNGKey(args.seed), args.num_seeds)
        point_dirs = []
        for row in table:
            i, point = row["index"], row["point"]
            pconfig = sweeps.point_config(config, point)
            pick = lambda x: x[i]
            point_dirs.append(run_dir / row["label"])
            _write_point(point_dirs[-1], pconfig, args, ["sweep", *argv],
                         jax.tree.map(pick, result.result.train_state),
                         {k: v[i] for k, v in result.metrics.items()}, keys,
                         {"env_name": config.env_name, "point": point, "num_seeds": args.num_seeds,
                        "final_return": row["final_returns"], "iqm": row["iqm"], "iqm_ci95": row["iqm_ci95"]})
        _write_json(run_dir / "sweep.json", summary)
        (run_dir / "sweep.md").write_text(
            f"# Sweep of {config.env_name}\n\n{len(points)} points x {args.num_seeds} seeds x {steps:,} "
            f"steps; command: `python -m purejaxppo sweep {' '.join(argv)}`\n\n" + "\n".join(lines) + "\n")
        _plot(point_dirs, run_dir / "sweep.png", f"{config.env_name}: median and 25-75% over seeds")
        print(f"\nrun directory: {run_dir} (one run directory per point; compare: "
              f"python -m purejaxppo plot {run_dir}/*/)")
    return summary


def pbt_command(argv: list[str]) -> dict:
    """``python -m purejaxppo pbt [--population 8 --ready-every 10 ...] [training
    flags]``: population-based training in one compiled program."""
    import jax
    import jax.numpy as jnp

    from purejaxppo import pbt as pbts
    from purejaxppo.checkpoint import train_with_checkpoints
    from purejaxppo.devices import shard_seeds
    from purejaxppo.distributed import to_host
    from purejaxppo.evaluation import final_return
    from purejaxppo.statistics import summarize_final_returns
    from purejaxppo.sweep import grid_points, parse_grid, points_hparams

    defaults = pbts.PBTConfig()
    parser = argparse.ArgumentParser(
        prog="purejaxppo pbt", add_help=False, exit_on_error=False, allow_abbrev=False,
        description="Population-based training inside one compiled program (Jaderberg et al. 2017).")
    parser.add_argument("--population", type=int, default=defaults.population, help="members per population")
    parser.add_argument("--ready-every", type=int, default=defaults.ready_every,
                        help="updates between exploit-and-explore steps")
    parser.add_argument("--quantile", type=float, default=defaults.quantile,
                        help="fraction of members replaced at each step (0: no selection)")
    parser.add_argument("--explore", nargs="+", default=list(defaults.explore), metavar="FIELD",
                        help="the hyperparameters explored")
    parser.add_argument("--bounds", nargs="+", default=[], metavar="FIELD=LOW,HIGH",
                        help="where an explored field may go (default: purejaxppo.pbt.DEFAULT_BOUNDS)")
    parser.add_argument("--resample-prob", type=float, default=defaults.resample_prob,
                        help="probability of a fresh draw from the bounds instead of x0.8 / x1.2")
    parser.add_argument("--grid", nargs="+", default=None, metavar="FIELD=V1,V2",
                        help="the first population, as a grid of --population points (default: "
                             "each explored field drawn from its bounds)")
    own, args = _split_argv("pbt", parser, argv, _SINGLE_RUN_FLAGS)
    if args.num_seeds < 1:
        raise ValueError(f"num_seeds must be a positive int, got {args.num_seeds}")
    if args.checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be an int >= 0, got {args.checkpoint_every}")
    bounds = []
    for item in own.bounds:
        name, _, text = item.partition("=")
        try:
            low, high = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--bounds {item!r}; allowed: FIELD=LOW,HIGH (e.g. lr=1e-5,1e-2)") from None
        bounds.append((name.replace("-", "_"), low, high))
    pbt = pbts.PBTConfig(population=own.population, ready_every=own.ready_every, quantile=own.quantile,
                         explore=tuple(n.replace("-", "_") for n in own.explore), bounds=tuple(bounds),
                         resample_prob=own.resample_prob)
    config = with_env_args(args.config, args)
    pbts.check_pbt(config, pbt)  # a ready_every that leaves no ready point
    first = None
    if own.grid is not None:
        points = grid_points(parse_grid(own.grid))
        if len(points) != pbt.population:
            raise ValueError(f"--grid has {len(points)} points; the first population needs "
                             f"--population {pbt.population} of them")
        first = points_hparams(config, points)
    runs = args.num_seeds * pbt.population
    apply_platform(dataclasses.replace(args, num_seeds=runs))  # before anything starts JAX
    run_dir = _run_dir(args, config, "pbt")
    trainer = pbts.make_pbt(config, pbt)
    if args.compile_cache:
        from purejaxppo.platform.compile_cache import enable_compilation_cache

        enable_compilation_cache()
    if first is None:
        first = pbts.initial_population(config, pbt, jax.random.fold_in(jax.random.PRNGKey(args.seed), 7))
    from purejaxppo.devices import largest_divisor_at_most
    from purejaxppo.memory import check_memory

    check_memory(trainer.trainer, runs_per_device=runs // largest_divisor_at_most(args.num_seeds,
                                                                                 jax.device_count()))
    hparams = jax.tree.map(lambda x: jnp.broadcast_to(x, (args.num_seeds,) + x.shape), first)
    keys = shard_seeds(jax.random.split(jax.random.PRNGKey(args.seed), args.num_seeds))
    steps = config.num_updates * config.batch_size
    print(f"purejaxppo pbt | {config.env_name} | {args.num_seeds} population(s) x {pbt.population} members "
          f"x {steps:,} steps | ready every {pbt.ready_every} updates, {pbt.replaced} replaced, exploring "
          f"{', '.join(pbt.explore)} | backend {jax.default_backend()}", flush=True)
    checkpoint_dir = None if run_dir is None else run_dir / "checkpoints"
    if run_dir is not None:
        write_run_config(run_dir, config, args, ["pbt", *argv])
    every = args.checkpoint_every or config.num_updates
    report = lambda done, chunk: print(f"update {done}/{config.num_updates}: median return "
                                       f"{np.nanmedian(chunk['episode_return'][..., -1]):.4g}", flush=True)
    import tempfile

    # --run-dir none: the chunks' checkpoints go to a scratch directory, removed at the end.
    with tempfile.TemporaryDirectory() as scratch:
        # A member that goes NaN scores -inf and is replaced at the next ready
        # point; only a population without selection stops on it.
        run = train_with_checkpoints(trainer, keys, checkpoint_dir or scratch, every=every, hparams=hparams,
                                     callback=report if every < config.num_updates else None,
                                     on_bad_checkpoint=args.on_bad_checkpoint,
                                     stop_on_nonfinite=pbt.replaced == 0)
    metrics = to_host(run.result.metrics)  # (populations, members, updates)
    finals = final_return(metrics)  # (populations, members)
    best = np.argmax(np.where(np.isfinite(finals), finals, -np.inf), axis=1)
    done = config.num_updates - (run.resumed_from or 0)
    resumed = f" | resumed from update {run.resumed_from}" if run.resumed_from else ""
    print(f"compile {run.compile_s:.2f} s | run {run.run_s:.2f} s | "
          f"{runs * done * config.batch_size / max(run.run_s, 1e-9):,.0f} env steps/s (all members){resumed}\n")
    went_nonfinite = np.asarray(metrics["nonfinite"]).any(axis=-1)  # (populations, members)
    if went_nonfinite.any():
        print(f"note: {int(went_nonfinite.sum())} member(s) had a NaN or infinite loss, gradient or parameters "
              "in some update (the nonfinite metric says when); a member whose returns go NaN scores -inf, "
              "so selection replaces it at the next ready point\n")
    state_hp = to_host(run.result.train_state.hparams)
    populations = []
    print("population  best member  final return  population IQM  its hyperparameters at the end")
    for s in range(args.num_seeds):
        m = int(best[s])
        chosen = {name: float(getattr(state_hp, name)[s, m]) for name in pbt.explore}
        population_iqm = summarize_final_returns(finals[s])["iqm"]
        line = pbts.lineage(metrics["parent"][s], m)
        print(f"{s:>10} {m:>12} {_fmt(finals[s, m]):>13} {_fmt(population_iqm):>15}  "
              + ", ".join(f"{k}={v:.4g}" for k, v in chosen.items()))
        populations.append({"best_member": m, "final_return": float(finals[s, m]),
                            "final_returns": finals[s].tolist(), "population_iqm": population_iqm,
                            "hyperparameters": chosen, "lineage": line.tolist(),
                            "copies": int(np.sum(np.asarray(metrics["parent"][s])
                                                 != np.arange(pbt.population)[:, None]))})
    summary = {"env_name": config.env_name, "pbt": dataclasses.asdict(pbt), "num_seeds": args.num_seeds,
               "env_steps_per_member": steps, "compile_s": run.compile_s, "run_s": run.run_s,
               "resumed_from": run.resumed_from, "populations": populations,
               "best_final_return_iqm": summarize_final_returns(finals[np.arange(args.num_seeds), best])["iqm"]}
    if run_dir is None:
        return summary
    _write_metrics(run_dir / "metrics.csv", metrics, config.batch_size)  # a resumed run's too, whole
    _write_json(run_dir / "pbt.json", summary)
    _plot([run_dir], run_dir / "curves.png", f"{config.env_name}: every member, median and 25-75%")
    if (run_dir / "curves.png").exists():  # matplotlib (the plot extra) is there
        from purejaxppo.plotting import plot_schedules

        plot_schedules(pbts.schedules({k: v[0] for k, v in metrics.items()}, pbt), populations[0]["lineage"],
                       config.batch_size, run_dir / "schedules.png",
                       f"{config.env_name}: PBT's schedules (population 0; bold: its best member's lineage)")
    print(f"\nrun directory: {run_dir} (evaluate a member: python -m purejaxppo eval {run_dir} "
          f"--seed-index POPULATION*{pbt.population}+MEMBER)")
    return summary
