"""Where compile time goes: lowering, XLA compile, and MLIR and LLVM time per kernel.

Compiles ``jax.jit(make_train(config))`` once in a fresh child process with
XLA's per-kernel compile times logged (``TF_CPP_VMODULE``: ``ir_compiler``
for LLVM, ``fusion_compiler`` for the MLIR fusion emitters) and the
optimized HLO dumped, then reports:

* lowering (JAX tracing to StableHLO) and XLA compile, wall seconds;
* the time of XLA CPU's two per-kernel stages, summed over all kernels:
  the MLIR fusion emitters, which build each fused kernel's code, and LLVM
  code generation. Both are CPU seconds over XLA's compile threads, so
  they can exceed the wall time. Between them they take most of the
  compile here: about 12 ms (MLIR) and 16-18 ms (LLVM) a kernel on this
  project's CPU (benchmarks/NOTES.md);
* the slowest kernels (MLIR + LLVM), each with its shape and the JAX op it came from
  (the ``op_name`` metadata: e.g. ``jit(_uniform)`` is a threefry draw;
  a bare ``jax.random.bits`` draw shows only as ``while/body/...``);
* kernels and their MLIR and LLVM time by the stage of ``train`` they belong to
  (`kernel_region`: the init, the update's random draw, the rollout, the
  critic, GAE, the PPO update with the loss's gradient apart).

Usage::

    python benchmarks/compile_profile.py                      # CartPole defaults
    python benchmarks/compile_profile.py --set num_envs=2048 --top 20
    python benchmarks/compile_profile.py --json out.json
    python benchmarks/compile_profile.py --seeds 8             # jax.vmap over 8 seeds
    python benchmarks/compile_profile.py --reference           # PureJaxRL's PPO (reference_ppo.py)

``--reference`` profiles the baseline of the speed targets instead, for
the kernel counts and codegen times behind the compile ratio that
``versus_reference.py`` measures. It has no named scopes, so its kernels
all fall under ``other`` (or ``no op_name``).

CPU backend only (the LLVM log lines are the CPU compiler's). One run is one
sample: compile times on a shared machine vary by +-20% between processes,
so compare variants by alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import parse_overrides, run_meta  # noqa: E402

_CHILD = r"""
import json, sys, time
import jax
import purejaxppo  # the XLA guard, for either side
overrides, seeds, which = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if which == "reference":
    sys.path.insert(0, sys.argv[4])
    from reference_ppo import ReferenceConfig, make_train
    train = make_train(ReferenceConfig(**overrides))
else:
    from purejaxppo import PPOConfig, make_train
    train = make_train(PPOConfig(**overrides))
# Lowered for the key's shape alone: no eager op compiles beside train's.
key = jax.eval_shape(jax.random.PRNGKey, 0)
if seeds > 1:
    train, key = jax.vmap(train), jax.ShapeDtypeStruct((seeds, *key.shape), key.dtype)
start = time.perf_counter()
lowered = jax.jit(train).lower(key)
mid = time.perf_counter()
lowered.compile()
end = time.perf_counter()
print(json.dumps({"lower_s": mid - start, "compile_s": end - mid, "key_shape": list(key.shape)}))
"""

_STAGE_LINE = r"Compiled {stage} module: (\S+) time: ([0-9.]+) (us|ms|s) "
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def kernel_times(log: str, stage: str = "LLVM") -> dict[str, float]:
    """Seconds per kernel module of one compile stage, from XLA's log lines:
    ``"LLVM"`` (``ir_compiler``) or ``"MLIR"`` (``fusion_compiler``)."""
    times: dict[str, float] = {}
    for name, value, unit in re.findall(_STAGE_LINE.format(stage=stage), log):
        times[name] = times.get(name, 0.0) + float(value) * _UNIT[unit]
    return times


def _leading_shape(text: str) -> str:
    """The shape an HLO instruction's right-hand side starts with: an array
    shape (``f32[4,64]{1,0}``) or a tuple, parentheses balanced (a loop XLA
    compiles as one kernel returns its whole carry)."""
    if not text.startswith("("):
        return text.split(" ", 1)[0]
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[: i + 1]
    return text


def kernel_origins(hlo_text: str) -> dict[str, tuple[str, str]]:
    """``instruction name -> (shape, op_name)`` from an optimized HLO dump."""
    origins = {}
    for match in re.finditer(r"^\s*%?([\w.\-]+) = ([^\n]*)", hlo_text, re.M):
        name, shape = match.group(1), _leading_shape(match.group(2))
        op = re.search(r'op_name="([^"]*)"', match.group(0))
        origins[name] = (shape, op.group(1) if op else "")
    return origins


def _instruction(module_name: str) -> str:
    """The HLO instruction a kernel module compiles. The LLVM log prefixes
    the MLIR stage's module name with ``__compute_module_`` (so a module
    that already had the prefix shows it twice). Kernels that XLA's older
    emitters build carry a suffix after the instruction's name: ``dot.60_elemental``;
    ``call.10_computation``, a small ``while`` loop XLA compiles as one kernel
    (jaxlib 0.12 does this for the threefry and Gram-Schmidt loops)."""
    name = module_name
    while name.startswith("__compute_module_"):
        name = name.removeprefix("__compute_module_")
    name = name.removesuffix("_kernel_module")
    return re.sub(r"(\.\d+)_(?:elemental|computation)$", r"\1", name)


def _by_instruction(times: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for module, seconds in times.items():
        out[_instruction(module)] = out.get(_instruction(module), 0.0) + seconds
    return out


SCOPES = ("init", "draw", "rollout", "critic", "gae", "ppo_update")
"""The `jax.named_scope` names of `make_train`'s stages (purejaxppo/train.py)."""
REGIONS = (*SCOPES[:-1], "ppo_update: gradient", "ppo_update: other", "other", "no op_name")


def kernel_region(op_name: str) -> str:
    """The stage of ``train`` a kernel belongs to, from its ``op_name``: the
    first of `SCOPES` among its path's segments (``vmap(rollout)`` counts as
    ``rollout``), the PPO update's ``jvp`` and ``transpose`` ops (the
    loss's gradient) apart; ``"other"`` for ops outside every scope (the
    loop's glue, normalisation, metrics)."""
    if not op_name:
        return "no op_name"
    for segment in op_name.split("/"):
        name = re.sub(r"^(?:\w+\()+|\)+$", "", segment)  # vmap(rollout) -> rollout
        if name in SCOPES:
            if name != "ppo_update":
                return name
            gradient = "jvp(" in op_name or "transpose(" in op_name
            return "ppo_update: gradient" if gradient else "ppo_update: other"
    return "other"


def profile(overrides: dict, top: int, seeds: int = 1, reference: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as dump:
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="0",
            TF_CPP_VMODULE="ir_compiler=2,fusion_compiler=1",
            XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} "
                       "--xla_dump_hlo_as_text --xla_dump_hlo_pass_re=NONE").strip(),
        )
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(overrides), str(seeds),
             "reference" if reference else "purejaxppo", str(HERE)],
            env=env, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"the compile child failed:\n{proc.stderr[-4000:]}")
        timing = json.loads(proc.stdout.strip().splitlines()[-1])
        times = _by_instruction(kernel_times(proc.stderr))
        mlir_times = _by_instruction(kernel_times(proc.stderr, "MLIR"))
        # The training program is the largest module compiled.
        dumps = sorted(Path(dump).glob("*jit_*cpu_after_optimizations.txt"), key=lambda p: p.stat().st_size)
        origins = kernel_origins(dumps[-1].read_text()) if dumps else {}
    rows = []
    for kernel in set(times) | set(mlir_times):
        shape, op = origins.get(kernel, ("", ""))
        rows.append({"kernel": kernel, "llvm_s": times.get(kernel, 0.0),
                     "mlir_s": mlir_times.get(kernel, 0.0), "shape": shape,
                     "op_name": op.removeprefix("jit(train)/")})
    rows.sort(key=lambda r: -(r["llvm_s"] + r["mlir_s"]))
    regions = {name: {"kernels": 0, "llvm_s": 0.0, "mlir_s": 0.0} for name in REGIONS}
    for row in rows:
        region = regions[kernel_region(row["op_name"])]
        region["kernels"] += 1
        region["llvm_s"] += row["llvm_s"]
        region["mlir_s"] += row["mlir_s"]
    return {
        "implementation": "reference" if reference else "purejaxppo",
        "config": overrides,
        "seeds": seeds,
        **timing,
        "llvm_total_s": sum(times.values()),
        "mlir_total_s": sum(mlir_times.values()),
        "kernels": len(rows),
        # Kernels whose op_name names a jax.random sampler. A bare
        # `jax.random.bits` draw carries no such name, so this is a lower bound.
        "threefry_llvm_s": sum(r["llvm_s"] for r in rows if "_uniform" in r["op_name"]
                               or "threefry" in r["op_name"] or "random_bits" in r["op_name"]),
        "regions": regions,
        "slowest": rows[:top],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a PPOConfig override (repeatable)")
    parser.add_argument("--top", type=int, default=15, help="slowest kernels to list")
    parser.add_argument("--seeds", type=int, default=1,
                        help="compile jax.vmap(train) over this many seeds (default 1: train itself)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--reference", action="store_true",
                        help="profile PureJaxRL's PPO (reference_ppo.py) instead; --set takes its fields")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    import dataclasses

    if args.reference:
        from reference_ppo import ReferenceConfig as Config
    else:
        from purejaxppo import PPOConfig as Config
    overrides = parse_overrides(parser, args.set, [f.name for f in dataclasses.fields(Config)])
    try:  # a bad value fails here, naming the field, before the child compiles
        # (the reference's config checks nothing; its fields are PPOConfig's too)
        from purejaxppo import PPOConfig

        PPOConfig(**overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--set: {error}")
    report = profile(overrides, args.top, args.seeds, args.reference)
    seeds = f" x {args.seeds} seeds" if args.seeds > 1 else ""
    print(f"{report['implementation']}, config {overrides or 'defaults'}{seeds}: lower {report['lower_s']:.2f} s, "
          f"compile {report['compile_s']:.2f} s; MLIR {report['mlir_total_s']:.2f} s and "
          f"LLVM {report['llvm_total_s']:.2f} s over {report['kernels']} kernels; "
          f"LLVM of named random samplers "
          f"(uniform/normal/gumbel; bare bits draws are not named) {report['threefry_llvm_s']:.2f} s")
    for name, region in report["regions"].items():
        if not region["kernels"]:  # the reference has no named scopes
            continue
        print(f"  {name:<26} {region['kernels']:4d} kernels  {region['mlir_s']:6.2f} s MLIR"
              f"  {region['llvm_s']:6.2f} s LLVM")
    print(f"{'MLIR ms':>8} {'LLVM ms':>8}  {'kernel':<34} {'shape':<22} op")
    for row in report["slowest"]:
        print(f"{row['mlir_s'] * 1e3:8.0f} {row['llvm_s'] * 1e3:8.0f}  {row['kernel'][:34]:<34} {row['shape'][:22]:<22} "
              f"{row['op_name'][:90]}")
    if args.json:
        meta = run_meta("benchmarks/compile_profile.py")
        if os.environ.get("PJRT_NPROC"):
            meta["command"] = f"PJRT_NPROC={os.environ['PJRT_NPROC']} {meta['command']}"
        args.json.write_text(json.dumps({"meta": meta, **report}, indent=1))


if __name__ == "__main__":
    main()
