"""One process with D devices against D processes with one device each.

    python benchmarks/processes.py                # both cases, 3 alternating pairs
    python benchmarks/processes.py --quick        # tiny sizes (a smoke run)

The same training program over the same number of devices, launched two
ways: one process that holds all D devices (``JAX_NUM_CPU_DEVICES=D`` on a
CPU), or D processes joined by `purejaxppo.distributed.initialize`, one
device each, whose collectives go between processes (gloo over TCP on a
CPU). Two cases: ``seeds`` (D seeds, one per device: no collective inside
an update) and ``envs`` (one seed's envs split over the D devices: a
gradient all-reduce per minibatch). Each launch compiles (timed apart),
then times ``--repeats`` calls of the compiled program; the figure is env
steps/s of the median call, and the table gives the median over
``--pairs`` alternating launches of each kind. Results go to
``benchmarks/results/multiprocess/multiprocess-<backend>.{json,md}``.

On a CPU each device gets one XLA thread (``PJRT_NPROC=1``), so both kinds
use D threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "benchmarks" / "results" / "multiprocess"

CASES = {
    # name: (PPOConfig fields, seeds, env_devices)
    "seeds": ({"env_name": "CartPole-v1", "num_envs": 64, "num_steps": 128,
               "total_timesteps": 64 * 128 * 40}, "D", None),
    "envs": ({"env_name": "CartPole-v1", "num_envs": 1024, "num_steps": 64, "num_minibatches": 4,
              "total_timesteps": 1024 * 64 * 10}, 1, "D"),
}
QUICK = {"seeds": {"num_envs": 8, "num_steps": 16, "total_timesteps": 8 * 16 * 4},
         "envs": {"num_envs": 32, "num_steps": 16, "total_timesteps": 32 * 16 * 4}}


def child(spec: dict) -> None:
    """One launch's process: join the run (when it has several processes),
    compile, time ``repeats`` calls; process 0 prints ``RESULT {json}``."""
    import purejaxppo  # noqa: F401  (the XLA guard, before JAX starts)
    from purejaxppo import distributed

    if spec["processes"] > 1:
        distributed.initialize(spec["address"], spec["processes"], spec["process_id"])
    import jax

    from purejaxppo.config import PPOConfig
    from purejaxppo.devices import shard_seeds
    from purejaxppo.train import make_train

    devices = jax.device_count()
    config = PPOConfig(**spec["fields"])
    seeds = devices if spec["seeds"] == "D" else spec["seeds"]
    env_devices = devices if spec["env_devices"] == "D" else spec["env_devices"]
    train = make_train(config, env_devices=env_devices)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    if env_devices is None:
        fn, arg = jax.jit(jax.vmap(train)), shard_seeds(keys)
    else:
        fn, arg = jax.jit(train), keys[0]
    start = time.perf_counter()
    compiled = fn.lower(arg).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(arg))
        times.append(time.perf_counter() - start)
    returns = distributed.to_host(out.metrics["episode_return"])  # every process takes part
    if distributed.is_main():
        steps = config.num_updates * config.batch_size * seeds
        print("RESULT " + json.dumps({
            "backend": jax.default_backend(), "devices": devices, "processes": jax.process_count(),
            "compile_s": compile_s, "times_s": times, "steps_per_s": steps / statistics.median(times),
            "final_return_median": float(statistics.median(returns[..., -1].ravel().tolist())),
        }), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(case: str, fields: dict, devices: int, processes: int, repeats: int, timeout: int) -> dict:
    """One launch of ``case`` over ``devices`` devices in ``processes``
    processes (1, or ``devices``); process 0's result."""
    _, seeds, env_devices = CASES[case]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_NUM_CPU_DEVICES=str(devices // processes), PJRT_NPROC="1")
    address = f"127.0.0.1:{_free_port()}"
    procs = []
    for i in range(processes):
        spec = {"fields": fields, "seeds": seeds, "env_devices": env_devices, "repeats": repeats,
                "processes": processes, "process_id": i, "address": address}
        procs.append(subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=timeout) for p in procs]
    for line in outs[0][0].splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{case} over {processes} process(es) failed:\n"
                       + "\n".join(err[-3000:] for _, err in outs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--devices", type=int, default=2, help="D, the devices of every launch")
    parser.add_argument("--pairs", type=int, default=3, help="alternating launches of each kind")
    parser.add_argument("--repeats", type=int, default=5, help="compiled calls per launch (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per launch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    for name in ("devices", "pairs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    rows = []
    for case in args.cases:
        fields = {**CASES[case][0], **(QUICK[case] if args.quick else {})}
        runs = {1: [], args.devices: []}
        for _ in range(args.pairs):  # alternating, so drifts of a shared machine hit both
            for processes in runs:
                runs[processes].append(launch(case, fields, args.devices, processes, args.repeats,
                                              args.timeout))
        for processes, results in runs.items():
            rows.append({
                "case": case, "fields": fields, "devices": args.devices, "processes": processes,
                "backend": results[0]["backend"],
                "steps_per_s": statistics.median(r["steps_per_s"] for r in results),
                "compile_s": statistics.median(r["compile_s"] for r in results),
                "launches": results,
            })
    import jax

    backend = rows[0]["backend"]
    payload = {"jax": jax.__version__, "python": sys.version.split()[0], "quick": args.quick,
               "pairs": args.pairs, "repeats": args.repeats, "rows": rows}
    lines = [f"# One process with {args.devices} devices against {args.devices} processes ({backend})", "",
             f"jax {jax.__version__}; median over {args.pairs} alternating launches of each kind, each "
             f"the median of {args.repeats} compiled calls; compile timed apart. On a CPU, one XLA "
             "thread per device. Command: `python benchmarks/processes.py"
             + "".join(f" {a}" for a in sys.argv[1:]) + "`.", "",
             "| case | config | processes x devices | env steps/s | vs one process | compile s |",
             "|---|---|---|---:|---:|---:|"]
    for row in rows:
        base = next(r for r in rows if r["case"] == row["case"] and r["processes"] == 1)
        config = ", ".join(f"{k}={v}" for k, v in row["fields"].items() if k != "env_name")
        per = args.devices // row["processes"]
        lines.append(f"| {row['case']} | {row['fields']['env_name']}: {config} | {row['processes']} x {per} "
                     f"| {row['steps_per_s']:,.0f} | {row['steps_per_s'] / base['steps_per_s']:.2f} "
                     f"| {row['compile_s']:.1f} |")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"multiprocess-{backend}" + ("-quick" if args.quick else "")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1))
    (args.out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
