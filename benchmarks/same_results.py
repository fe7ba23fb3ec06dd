"""Compare a run's final parameters with a saved reference, bit for bit.

Refactors that must not change results are checked with this script:

    python benchmarks/same_results.py save  ref.npz     # before the change
    python benchmarks/same_results.py check ref.npz     # after it

It trains two cases with fixed seeds, the CartPole-v1 default config (an MLP)
and a short Breakout-MinAtar run (the CNN torso), and saves or compares every
leaf of the final parameters, the optimizer state and the metrics. ``check``
exits 1 and names each leaf that differs, with the largest difference.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from purejaxppo import PPOConfig, make_train

CASES = {
    "cartpole": dict(env_name="CartPole-v1", total_timesteps=65_536),
    "breakout_cnn": dict(env_name="Breakout-MinAtar", total_timesteps=32_768, num_envs=64,
                         num_steps=128, update_epochs=4, num_minibatches=8, lr=5e-4,
                         activation="relu", hidden_sizes=(64,), torso="cnn",
                         anneal_lr=True, ent_coef=0.01),
}


def run_case(name: str) -> dict[str, np.ndarray]:
    config = PPOConfig(**CASES[name])
    result = jax.jit(make_train(config))(jax.random.PRNGKey(0))
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(result.train_state.params)[0]:
        flat[f"{name}/params{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    for key, value in result.metrics.items():
        flat[f"{name}/metrics/{key}"] = np.asarray(value)
    return flat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("save", "check"))
    parser.add_argument("path")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    arrays = {}
    for name in args.cases:
        arrays.update(run_case(name))
    if args.mode == "save":
        np.savez(args.path, **arrays)
        print(f"saved {len(arrays)} arrays to {args.path}")
        return 0
    reference = np.load(args.path)
    bad = 0
    for key, value in arrays.items():
        if key not in reference:
            print(f"missing in reference: {key}")
            bad += 1
            continue
        ref = reference[key]
        if ref.shape != value.shape or not np.array_equal(ref, value, equal_nan=True):
            diff = np.nanmax(np.abs(ref.astype(np.float64) - value)) if ref.shape == value.shape else "shape"
            print(f"differs: {key} (max |diff| {diff})")
            bad += 1
    print(f"{len(arrays) - bad} of {len(arrays)} arrays bitwise equal")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
