"""purejaxppo against PureJaxRL's PPO (`reference_ppo.py`), timed side by side.

    python benchmarks/versus_reference.py                 # the three cases of the speed targets
    python benchmarks/versus_reference.py --pairs 5 --cases cartpole_default
    python benchmarks/versus_reference.py --quick         # tiny sizes (a smoke run)
    python benchmarks/versus_reference.py --cases cartpole_default --set update_epochs=1 --set num_minibatches=1

``--set FIELD=VALUE`` changes both sides' hyperparameters alike (the
fields of `reference_ppo.ReferenceConfig`), to see where a ratio comes
from: with one epoch of one minibatch, a run is mostly its rollout. Such a
run is not one of the target cases: its files get the settings in their
name and no target table.

The project states its speed targets as absolute figures beside PureJaxRL's on
the same machine class: compile <= 2.7 s (PureJaxRL 5.5 s), >= 175k steps/s
on CartPole defaults (118k), >= 280k over 8 seeds (185k), >= 260k at 2048 x
128 (159k). This shared 2-core machine changes speed by up to 3x between
runs. That moves both sides alike, so the ratio of the two, timed in
the same minutes, moves far less (one pair's ratio can still be off by a
quarter, hence the median over pairs). This script measures that ratio.

Per case it runs ``--pairs`` pairs of fresh processes, one per
implementation, alternating which goes first. Each process times the
compile (``jit(...).lower(...).compile()``) and then the median of
``--repeats`` calls of the compiled function. A pair's two processes run
within a minute of each other, so each pair gives one ratio,
purejaxppo / reference. The table shows the median of each side and the
median of the pairs' ratios, beside the ratio the speed target asks for
(target / PureJaxRL's figure). The last target, 2048 x 128 at about
60% of the compute floor where PureJaxRL is at about 37%, is read the same
way: each side's rate as a fraction of one floor for the case
(`throughput.py`'s, at rates measured once in a probe process on the
device), whose ratio is the rates' ratio, against 0.60 / 0.37. (On several
GPUs or TPU chips each side's floor counts the devices it ran on.)
Both sides run with the same ``XLA_FLAGS`` (purejaxppo's deadlock guard,
see the README, and the vector width `purejaxppo.platform.cpu_vectors` picks for the
CPU, as its CLI applies it: ``--cpu-vector-width``), the size of XLA's CPU thread pool that
`purejaxppo.platform.cpu_threads` picks for the case on the side's devices, as
purejaxppo's CLI applies it (``--cpu-threads``; ``default`` for XLA's own,
one per core; the same for both sides on one device), and the same
hyperparameters, and the table gives
each side's mean episode return at the end of training, to show that
both learn.

Devices differ by design: purejaxppo splits a vmapped case's seeds over
CPU devices as its CLI does (``--cpu-devices``, `purejaxppo.devices`; its
pool then has one thread per device), while the reference runs on one
device, as PureJaxRL's ``ppo.py`` does. Split the same way, the reference
hangs with every thread idle: its flax init makes batched LAPACK QRs, and
two devices running them at once deadlock in jaxlib 0.10.x
(benchmarks/NOTES.md). ``--cpu-devices 1`` puts both sides
on one device.

The cases are `throughput.py`'s, so the rates can be read against its table.
Writes ``benchmarks/results/versus-reference-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import (  # noqa: E402
    CASES, QUICK, QUICK_RATE_REPEATS, RATE_REPEATS, add_cpu_args, add_paired_run_args,
    apply_cpu_vector_width, case_cost, case_cpu_settings, child_env, floor_devices,
    floor_steps_per_s, parse_overrides, pin_to_cpu, probe_device, rates_text, require_positive,
    run_child, run_meta, threads_text, write_results,
)

RESULTS = HERE / "results"
IMPLS = ("purejaxppo", "reference")

# case -> (metric, the speed target, PureJaxRL's figure there)
TARGETS: dict[str, list[tuple[str, float, float]]] = {
    "cartpole_default": [("compile_s", 2.7, 5.5), ("steps_per_s", 175_000, 118_000)],
    "cartpole_default_x8": [("steps_per_s", 280_000, 185_000)],
    "cartpole_2048x128": [("steps_per_s", 260_000, 159_000), ("fraction_of_floor", 0.60, 0.37)],
}


def measure(impl: str, overrides: dict, seeds: int, repeats: int) -> dict:
    """Compile and run one implementation's training in this process."""
    import purejaxppo  # noqa: F401  (the XLA guard, for both sides alike)
    import jax
    import jax.numpy as jnp

    from purejaxppo.devices import shard_seeds
    from timing import compile_timed, run_timed

    # purejaxppo's seeds split over the devices as its CLI splits them; the
    # reference's stay on one device, as PureJaxRL runs (module docstring).
    place = shard_seeds if impl == "purejaxppo" else (lambda keys: keys)

    if impl == "purejaxppo":
        from purejaxppo import PPOConfig, make_train

        config = PPOConfig(**overrides)

        def final_return(out):
            return out.metrics["episode_return"][..., -1]
    else:
        from reference_ppo import ReferenceConfig, final_return as reference_final_return, make_train

        config = ReferenceConfig(**overrides)

        def final_return(out):
            metrics = out["metrics"]
            if seeds:
                return jax.vmap(reference_final_return)(metrics)
            return reference_final_return(metrics)

    if impl == "purejaxppo":
        from purejaxppo.platform.cpu_devices import auto_env_devices

        # One seed's envs split over the CPU devices there are, as its CLI does.
        env_devices = 1 if seeds > 1 else auto_env_devices(config.num_envs, config.minibatch_size, 1,
                                                           config.grad_chunk_size)
        train = make_train(config, env_devices=env_devices if env_devices > 1 else None)
    else:
        train, env_devices = make_train(config), 1
    key = jax.random.PRNGKey(0)
    fn, args = (jax.vmap(train), place(jax.random.split(key, seeds))) if seeds else (train, key)
    compiled, compile_s = compile_timed(fn, args)
    out, run_s, times = run_timed(compiled, args, repeats=repeats)
    steps = config.num_updates * config.num_envs * config.num_steps * max(seeds, 1)
    return {
        "compile_s": compile_s,
        "run_s": float(run_s),
        "run_times_s": times,
        "env_steps_per_call": steps,
        "devices": len(args.sharding.device_set) if seeds else env_devices,
        "backend": jax.default_backend(),
        "steps_per_s": steps / run_s,
        "final_return": float(jnp.nanmean(final_return(out))),
    }


def _spawn(impl: str, overrides: dict, seeds: int, repeats: int, timeout: int,
           threads: int | None = None, devices: int | None = None, backend: str = "cpu") -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--child-config", json.dumps(overrides),
           "--child-seeds", str(seeds), "--repeats", str(repeats)]
    return run_child(cmd, child_env(threads, devices), timeout,
                     f"{impl} ({overrides}, seeds={seeds})", backend)


def compare_case(overrides: dict, seeds: int, pairs: int, repeats: int, timeout: int,
                 cpu_threads: str = "auto", cpu_devices: str = "auto", floor: float | None = None,
                 backend: str = "cpu") -> dict:
    """``pairs`` alternating pairs of fresh processes, both sides on the same
    CPU pool size (on the CPU ``backend``); per side the samples and medians,
    and the median over pairs of purejaxppo / reference. With ``floor`` (the
    case's compute floor in env steps/s, on one device), each side's median
    rate as a fraction of its floor, and their ratio. On the CPU, the floor
    is one for both sides, so that ratio is the rates'; on GPUs or TPUs each
    side's floor counts the devices it ran on (`throughput.floor_devices`)."""
    settings = {"purejaxppo": case_cpu_settings(overrides, seeds, backend, cpu_threads, cpu_devices),
                "reference": case_cpu_settings(overrides, seeds, backend, cpu_threads, "1")}
    threads = {impl: settings[impl][0] for impl in IMPLS}
    samples = {impl: [] for impl in IMPLS}
    for p in range(pairs):
        order = IMPLS if p % 2 == 0 else IMPLS[::-1]
        for impl in order:
            samples[impl].append(_spawn(impl, overrides, seeds, repeats, timeout,
                                        *settings[impl], backend=backend))
    row = {"config": overrides, "seeds": max(seeds, 1), "cpu_threads": threads["purejaxppo"],
           "reference_cpu_threads": threads["reference"],
           "devices": samples["purejaxppo"][0].get("devices", 1),
           "reference_devices": samples["reference"][0].get("devices", 1),
           "env_steps_per_call": samples["purejaxppo"][0]["env_steps_per_call"], "samples": samples}
    for metric in ("compile_s", "steps_per_s", "final_return"):
        for impl in IMPLS:
            row[f"{impl}_{metric}"] = statistics.median(s[metric] for s in samples[impl])
    for metric in ("compile_s", "steps_per_s"):
        row[f"ratio_{metric}"] = statistics.median(
            a[metric] / b[metric] for a, b in zip(samples["purejaxppo"], samples["reference"]))
    if floor:
        floors = {impl: floor * floor_devices(backend, samples[impl][0].get("devices", 1)) for impl in IMPLS}
        row["floor_steps_per_s"] = floors["purejaxppo"]
        row["reference_floor_steps_per_s"] = floors["reference"]
        for impl in IMPLS:
            row[f"{impl}_fraction_of_floor"] = row[f"{impl}_steps_per_s"] / floors[impl]
        # The floors' ratio first: 1.0 exactly where one floor serves both sides.
        row["ratio_fraction_of_floor"] = row["ratio_steps_per_s"] * (floors["reference"] / floors["purejaxppo"])
    return row


def results_stem(device: str, quick: bool = False, settings: dict | None = None) -> str:
    """The results files' name: ``versus-reference-<device>[-quick]``, with
    ``-set-<field>=<value>+...`` after it for a run with ``--set``, so that
    such a run leaves the target cases' results as they were."""
    stem = f"versus-reference-{device}" + ("-quick" if quick else "")
    if settings:
        stem += "-set-" + "+".join(f"{k}={v}" for k, v in settings.items()).replace(" ", "")
    return stem


def _verdict(ratio: float, wanted: float, metric: str) -> str:
    met = ratio <= wanted if metric == "compile_s" else ratio >= wanted
    return "met" if met else "not met"


def _fraction(row: dict, impl: str) -> str:
    value = row.get(f"{impl}_fraction_of_floor")
    return "-" if value is None else f"{value:.0%}"


def _table(rows: dict, meta: dict) -> str:
    lines = [
        f"# purejaxppo against PureJaxRL's PPO on {meta['device']}",
        "",
        f"{meta['machine']}; jax {meta['jax']}, backend {meta['backend']}. "
        f"{meta['pairs']} alternating pairs of fresh processes per case; each process: "
        f"compile (lowering included), then the median of {meta['repeats']} compiled calls. "
        f"Ratio = median over the pairs of purejaxppo / reference. CPU threads: the size of "
        f"XLA's CPU pool each side ran on (`--cpu-threads {meta.get('cpu_threads', 'default')}`; "
        f"\"cores\": XLA's default, one per core). Devices: those each side split the seeds "
        f"over: purejaxppo's by `--cpu-devices {meta.get('cpu_devices', '1')}`, the reference on one, "
        f"as PureJaxRL runs (split alike, its init's batched LAPACK QRs hang: benchmarks/NOTES.md). "
        + (f"XLA CPU's preferred vector width: {meta.get('cpu_vector_width', 256)} bits on both sides "
           f"(`--cpu-vector-width {meta.get('cpu_vector_width_choice', 'auto')}`, `purejaxppo.platform.cpu_vectors`). "
           if meta.get("backend") == "cpu" else "")
        + (f"Both sides' hyperparameters changed from the cases' by `--set`: {meta['set']}. "
           if meta.get("set") else "")
        + (f"Floor: the case's compute floor (`throughput.py`'s: the network's FLOPs and "
           f"transcendentals per env step, `benchmarks/flops.py`, for the case's config) at the rates "
           f"measured once in a probe process, on XLA's default pool "
           f"({rates_text(meta['rates'])}); one floor for both sides"
           + (". " if meta.get("backend") == "cpu" else ", once per device each ran on. ")
           if meta.get("rates") else "")
        + f"Command: `{meta['command']}` at commit {meta.get('commit') or 'unknown'}, {meta['date']}.",
        "",
        "| case | seeds | devices: ours / ref | CPU threads: ours / ref | env steps / call | compile s: purejaxppo | reference | ratio "
        "| steps/s: purejaxppo | reference | ratio | of floor: purejaxppo / reference | final return: purejaxppo | reference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['seeds']} | {r.get('devices', 1)} / {r.get('reference_devices', 1)} "
            f"| {threads_text(r.get('cpu_threads'), meta['backend'])} / "
            f"{threads_text(r.get('reference_cpu_threads', r.get('cpu_threads')), meta['backend'])} "
            f"| {r['env_steps_per_call']:,} "
            f"| {r['purejaxppo_compile_s']:.2f} | {r['reference_compile_s']:.2f} | {r['ratio_compile_s']:.2f} "
            f"| {r['purejaxppo_steps_per_s']:,.0f} | {r['reference_steps_per_s']:,.0f} "
            f"| {r['ratio_steps_per_s']:.2f} "
            f"| {_fraction(r, 'purejaxppo')} / {_fraction(r, 'reference')} "
            f"| {r['purejaxppo_final_return']:.1f} | {r['reference_final_return']:.1f} |"
        )
    # The speed targets are for their cases as they are; not for a run with --set.
    targets = [] if meta.get("set") else [(name, t) for name in rows for t in TARGETS.get(name, [])
                                          if f"ratio_{t[0]}" in rows[name]]
    if targets:
        lines += [
            "",
            "The speed targets as ratios (target / PureJaxRL's figure where the targets were set):",
            "",
            "| case | metric | target | PureJaxRL there | ratio asked | ratio measured | |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for name, (metric, target, bracket) in targets:
            wanted, got = target / bracket, rows[name][f"ratio_{metric}"]
            fmt = {"compile_s": "{:.1f} s", "fraction_of_floor": "{:.0%}"}.get(metric, "{:,.0f}")
            lines.append(
                f"| {name} | {metric} | {fmt.format(target)} | {fmt.format(bracket)} | "
                f"{'<=' if metric == 'compile_s' else '>='} {wanted:.2f} | {got:.2f} | "
                f"{_verdict(got, wanted, metric)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    add_paired_run_args(parser, RESULTS)
    add_cpu_args(parser, "both sides alike", "CPU devices purejaxppo splits a vmapped case's "
                 "seeds over: auto (its rule, as its CLI applies it) or a count; the reference runs on one")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a hyperparameter of both sides, over each case's (repeatable; "
                             "the fields of reference_ppo.ReferenceConfig)")
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-seeds", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    require_positive(parser, args, "pairs", "repeats")
    if args.child:
        row = measure(args.child, json.loads(args.child_config), args.child_seeds, args.repeats)
        print("RESULT " + json.dumps(row))
        return

    import dataclasses

    import purejaxppo  # noqa: F401  (XLA guard before jax starts)

    # Before the first JAX computation: importing gymnax for the reference's
    # config, or validating a config, starts JAX's backend, here the CPU's
    # (the device is the children's alone).
    pin_to_cpu()
    vector_width = apply_cpu_vector_width(args.cpu_vector_width)  # both sides' processes inherit it
    from reference_ppo import ReferenceConfig

    settings = parse_overrides(parser, args.set, [f.name for f in dataclasses.fields(ReferenceConfig)])
    cases = {}
    for name in args.cases:
        overrides, seeds = CASES[name]
        if args.quick:
            overrides, seeds = {**overrides, **QUICK}, min(seeds, 2)
        cases[name] = {**overrides, **settings}, seeds
        try:  # a bad value fails here, naming the field, before anything compiles
            purejaxppo.PPOConfig(**cases[name][0])
        except (TypeError, ValueError) as error:
            parser.error(f"--set with case {name}: {error}")

    # One compute floor per case and device: the rates measured once, in a probe
    # process on the device the children run on.
    probed = probe_device(rates=True, timeout=args.timeout,
                          rate_repeats=QUICK_RATE_REPEATS if args.quick else RATE_REPEATS)
    rates = probed["rates"]
    print(f"device {probed['device']} ({probed['backend']}) rates: {rates_text(rates)}", flush=True)
    rows = {}
    for name, (overrides, seeds) in cases.items():
        floor = floor_steps_per_s(case_cost(purejaxppo.PPOConfig(**overrides)), rates)
        rows[name] = r = compare_case(overrides, seeds, args.pairs, args.repeats, args.timeout,
                                      args.cpu_threads, args.cpu_devices, floor, probed["backend"])
        print(f"{name:22s} compile {r['purejaxppo_compile_s']:5.2f} s vs {r['reference_compile_s']:5.2f} s "
              f"(x{r['ratio_compile_s']:.2f})  steps/s {r['purejaxppo_steps_per_s']:>10,.0f} vs "
              f"{r['reference_steps_per_s']:>10,.0f} (x{r['ratio_steps_per_s']:.2f})", flush=True)

    meta = {
        **run_meta("benchmarks/versus_reference.py", probed),
        "pairs": args.pairs,
        "repeats": args.repeats,
        "cpu_threads": args.cpu_threads,
        "cpu_devices": args.cpu_devices,
        "cpu_vector_width": vector_width,
        "cpu_vector_width_choice": args.cpu_vector_width,
        "quick": args.quick,
        "set": settings,
        "rates": rates,
    }
    stem = results_stem(meta["device"], args.quick, settings)
    write_results(args.out_dir, stem, {"meta": meta, "cases": rows}, _table(rows, meta))
    print(f"wrote {args.out_dir / stem}.{{json,md}}")


if __name__ == "__main__":
    main()
