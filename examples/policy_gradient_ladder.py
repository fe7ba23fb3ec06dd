"""The policy-gradient ladder as a run: REINFORCE -> REINFORCE with a baseline
-> actor-critic -> TRPO -> PPO-Penalty -> PPO-Clip, on the same rollouts.

    python examples/policy_gradient_ladder.py                       # CartPole-v1 and Acrobot-v1
    python examples/policy_gradient_ladder.py --envs CartPole-v1 --seeds 4

Every rung (`purejaxppo.presets.ladder_config`) trains ``--seeds`` seeds in one
vmapped, compiled call per env, on 8 envs x 512 steps per rollout. Prints and
writes (``--out``, a PNG and a markdown table beside it) each rung's learning
curve (median and 25-75% over seeds of the training return against env
steps) and its final return's IQM with a 95% bootstrap CI, the run's wall
time (compile apart) and the policy's gradient steps per update: what
reusing a rollout buys, step for step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import purejaxppo  # noqa: F401  (before jax computes anything: XLA guard)
import jax
import numpy as np

from purejaxppo import make_train
from purejaxppo.evaluation import final_return
from purejaxppo.presets import LADDER, ladder_config
from purejaxppo.statistics import bootstrap_ci, iqm

LABELS = {
    "reinforce": "REINFORCE",
    "reinforce_baseline": "REINFORCE + baseline",
    "a2c": "actor-critic (A2C)",
    "trpo": "TRPO",
    "ppo_penalty": "PPO-Penalty (adaptive KL)",
    "ppo_clip": "PPO-Clip",
}


def run_rung(algorithm: str, env_name: str, seeds: int, seed: int, **overrides) -> dict:
    """Train one rung over ``seeds`` seeds; its curve, finals and timings."""
    config = ladder_config(algorithm, env_name, **overrides)
    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = jax.block_until_ready(compiled(keys)).metrics
    run_s = time.perf_counter() - start
    finals = np.asarray(final_return(metrics), np.float64)
    low, high = bootstrap_ci(finals)
    return {
        "algorithm": algorithm,
        "env": env_name,
        "steps": (np.arange(config.num_updates) + 1) * config.batch_size,
        "returns": np.asarray(metrics["episode_return"], np.float64),  # (seeds, updates)
        "final": finals,
        "iqm": float(iqm(finals)),
        "ci": (low, high),
        "compile_s": compile_s,
        "run_s": run_s,
        "gradient_steps": float(np.mean(metrics["gradient_steps"])),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| env | rung | final return IQM [95% CI] | run s | compile s | policy gradient steps per update |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        low, high = r["ci"]
        lines.append(f"| {r['env']} | {LABELS[r['algorithm']]} | {r['iqm']:.1f} [{low:.1f}, {high:.1f}] "
                     f"| {r['run_s']:.1f} | {r['compile_s']:.1f} | {r['gradient_steps']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in rows))
    fig, axes = plt.subplots(1, len(envs), figsize=(6.2 * len(envs), 4.2), squeeze=False)
    colors = dict(zip(LADDER, plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(LADDER)))))
    for ax, env in zip(axes[0], envs):
        for r in (r for r in rows if r["env"] == env):
            q25, med, q75 = np.nanpercentile(r["returns"], [25, 50, 75], axis=0)
            color = colors[r["algorithm"]]
            ax.plot(r["steps"], med, color=color, label=LABELS[r["algorithm"]])
            ax.fill_between(r["steps"], q25, q75, color=color, alpha=0.2, linewidth=0)
        ax.set_title(f"{env} ({rows[0]['returns'].shape[0]} seeds: median, 25-75%)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("training episode return")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    parser.add_argument("--rungs", nargs="+", default=list(LADDER), choices=LADDER)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="override every rung's budget (default: ladder_config's 5e5)")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="override the rollout length (default: ladder_config's 512)")
    parser.add_argument("--out", default="examples/policy_gradient_ladder.png",
                        help="the plot; the table goes beside it as .md ('' writes neither)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("total_timesteps", args.total_timesteps),
                                   ("num_steps", args.num_steps)) if v is not None}
    rows = []
    for env_name in args.envs:
        for algorithm in args.rungs:
            row = run_rung(algorithm, env_name, args.seeds, args.seed, **overrides)
            print(f"{env_name:12s} {LABELS[algorithm]:26s} IQM {row['iqm']:8.1f} "
                  f"[{row['ci'][0]:.1f}, {row['ci'][1]:.1f}]  run {row['run_s']:6.1f} s", flush=True)
            rows.append(row)
    text = table(rows)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        plot(rows, out)
        budget = {r["env"]: int(r["steps"][-1]) for r in rows}
        out.with_suffix(".md").write_text(
            f"# The policy-gradient ladder\n\n`python examples/policy_gradient_ladder.py "
            f"--seeds {args.seeds}`: {args.seeds} seeds per rung, "
            + ", ".join(f"{env} {steps:,} steps" for env, steps in budget.items())
            + f", on {jax.devices()[0].platform.upper()} ({jax.device_count()} device(s)). "
            "Final return: the mean training return over each seed's last 10 updates.\n\n"
            + text + "\n\n![the ladder's learning curves](" + out.name + ")\n")
        print(f"\nwrote {out} and {out.with_suffix('.md')}")
    return rows


if __name__ == "__main__":
    main()
