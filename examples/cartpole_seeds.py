"""Eight CartPole-v1 seeds in one compiled, vmapped call; curves printed and plotted.

    python examples/cartpole_seeds.py [--num-seeds 8] [--out examples/cartpole_seeds.png]

Prints compile time and steady-state time apart, a table of the median and
inter-quartile range of ``episode_return`` over seeds along the run, each
seed's final return, and writes a PNG of the curves (median, IQR shaded,
every seed thin).
"""

import argparse
import time

import purejaxppo  # noqa: F401  (before jax computes anything: XLA guard)
import jax
import numpy as np

from purejaxppo import PPOConfig, make_train
from purejaxppo.devices import shard_seeds
from purejaxppo.evaluation import final_return
from purejaxppo.platform.cpu_devices import current_cpu_devices, resolve_cpu_devices, set_cpu_devices
from purejaxppo.platform.cpu_threads import resolve_cpu_threads, set_cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seeds", type=int, default=8)
    parser.add_argument("--total-timesteps", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="examples/cartpole_seeds.png")
    args = parser.parse_args()
    # The seeds split over CPU devices, up to one per core, and XLA's CPU
    # pool (one thread for small runs and for split seeds); a
    # JAX_NUM_CPU_DEVICES or PJRT_NPROC already set wins. Both are set before
    # JAX starts (opt-in machine tuning, `purejaxppo.platform`).
    devices = resolve_cpu_devices("auto", args.num_seeds)
    if devices is not None:
        set_cpu_devices(devices)
    set_cpu_threads(resolve_cpu_threads("auto", num_envs=4, num_seeds=args.num_seeds,
                                        devices=current_cpu_devices() or 1))

    config = PPOConfig(env_name="CartPole-v1", total_timesteps=args.total_timesteps)
    keys = shard_seeds(jax.random.split(jax.random.PRNGKey(args.seed), args.num_seeds))
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start
    steps = config.num_updates * config.batch_size * args.num_seeds
    print(f"{args.num_seeds} seeds x {config.num_updates * config.batch_size:,} steps "
          f"over {len(keys.sharding.device_set)} device(s) | "
          f"compile {compile_s:.2f} s | run {run_s:.2f} s | {steps / run_s:,.0f} steps/s")

    returns = np.asarray(result.metrics["episode_return"])  # (seeds, updates)
    x = (np.arange(config.num_updates) + 1) * config.batch_size
    q25, med, q75 = np.nanpercentile(returns, [25, 50, 75], axis=0)
    print(f"\n{'env steps':>10} {'median':>8} {'q25':>8} {'q75':>8}")
    for i in np.linspace(0, config.num_updates - 1, 11).astype(int):
        print(f"{x[i]:>10,} {med[i]:>8.1f} {q25[i]:>8.1f} {q75[i]:>8.1f}")
    finals = final_return(result.metrics)
    print("\nfinal return per seed (mean of the last 10 updates):", np.round(finals, 1))
    print(f"median final return: {np.median(finals):.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in returns:
        ax.plot(x, r, color="tab:blue", alpha=0.15, lw=0.8)
    ax.fill_between(x, q25, q75, color="tab:blue", alpha=0.3, label="inter-quartile range")
    ax.plot(x, med, color="tab:blue", lw=2, label=f"median of {args.num_seeds} seeds")
    ax.set(xlabel="environment steps", ylabel="episode return",
           title=f"purejaxppo PPO, CartPole-v1, default config ({args.num_seeds} seeds, one jit)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
