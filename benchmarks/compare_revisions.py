"""Two revisions of purejaxppo timed side by side: the A/B of a change.

    python benchmarks/compare_revisions.py eaa47e8 f807448 --cases cartpole_default
    python benchmarks/compare_revisions.py HEAD~1                 # against the working tree
    python benchmarks/compare_revisions.py HEAD --quick --pairs 1  # a smoke run

This shared machine drifts by more between two runs of a script than many
changes are worth (benchmarks/NOTES.md), so a change is measured by
alternating fresh processes of the code before and after it, within the
same minutes. ``BASE`` and ``HEAD`` are git revisions; ``HEAD`` defaults to
``.``, the working tree as it is (uncommitted changes included). Each other
revision is checked out in a temporary ``git worktree``, removed afterwards.

Per case it runs ``--pairs`` pairs of fresh processes, one per revision,
alternating which goes first. Each process imports purejaxppo from its
revision (it checks that it did, and the results record the path), times
the compile of the case's training function (``jit(...).lower(...).compile()``),
then takes the median of ``--repeats`` calls of the compiled function. Each
pair gives one ratio, head / base; the table shows each side's median and
the median of the pairs' ratios, for the compile time (below 1: head
compiles faster) and for env steps/s (above 1: head trains faster).

Both sides run with the same ``XLA_FLAGS`` (the vector width
`purejaxppo.platform.cpu_vectors` picks, as the CLI applies it), on the CPU pool
this checkout's `purejaxppo.platform.cpu_threads` rule picks for the case, and on
one device (a vmapped case's seeds are not split over devices, since older
revisions cannot). The cases are `throughput.py`'s. The processes use only
``purejaxppo.PPOConfig`` (its ``num_updates`` and the case's fields) and
``make_train``, so any revision whose package has them can be measured.
The temporary worktrees are removed when the script ends, also on an error,
Ctrl-C or SIGTERM.

Writes ``compare-<base>-<head>-<device>-<cases>[-quick].json`` and ``.md``
under ``--out-dir`` (default ``benchmarks/results/compare/``), ``<cases>``
the case names joined by ``+``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from throughput import (  # noqa: E402
    CASES, QUICK, _source_revision, add_cpu_args, add_paired_run_args, apply_cpu_vector_width,
    case_cpu_settings, child_env, pin_to_cpu, probe_device, require_positive, run_child, run_meta,
    threads_text, write_results,
)

WORKING_TREE = "."
SIDES = ("base", "head")

# Run in a fresh process whose current directory is the revision's checkout:
# ``python -c`` puts that directory first on sys.path, ahead of any installed copy.
CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
overrides, seeds, repeats, root = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import purejaxppo
if Path(purejaxppo.__file__).resolve().parent != Path(root).resolve() / "purejaxppo":
    sys.exit(f"imported {purejaxppo.__file__}, not the revision's copy in {root}")
import jax
from purejaxppo import PPOConfig, make_train
config = PPOConfig(**overrides)
train = make_train(config)
key = jax.random.PRNGKey(0)
fn, arg = (jax.vmap(train), jax.random.split(key, seeds)) if seeds else (train, key)
start = time.perf_counter()
compiled = jax.jit(fn).lower(arg).compile()
compile_s = time.perf_counter() - start
times = []
for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(arg))
    times.append(time.perf_counter() - start)
run_s = statistics.median(times)
steps = config.num_updates * config.num_envs * config.num_steps * max(seeds, 1)
print("RESULT " + json.dumps({"compile_s": compile_s, "run_s": run_s, "run_times_s": times,
                              "env_steps_per_call": steps, "steps_per_s": steps / run_s,
                              "module": purejaxppo.__file__, "backend": jax.default_backend()}))
"""


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def resolve_revision(rev: str) -> str:
    """The short commit of ``rev``, or ``.`` for the working tree.
    ValueError naming the revision if git does not know it."""
    if rev == WORKING_TREE:
        return WORKING_TREE
    try:
        return _git("rev-parse", "--short", "--verify", f"{rev}^{{commit}}")
    except (OSError, subprocess.CalledProcessError):
        raise ValueError(f"revision {rev!r} is not a commit of the checkout at {ROOT}; "
                         "allowed: a commit, branch, tag or HEAD~N, or '.' for the working tree") from None


def label(rev: str) -> str:
    """How a resolved revision is named in the results: the working tree as
    HEAD's commit, with ``-dirty`` when it has changes (untracked files
    included; the results folder aside)."""
    return rev if rev != WORKING_TREE else f"{_source_revision(untracked=True)} (working tree)"


def _exit_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


@contextlib.contextmanager
def checkouts(revs: dict[str, str]):
    """``{side: directory}``: the working tree for ``.``, else a temporary
    detached worktree of the commit, removed on exit (SIGTERM included)."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    added: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(prefix="purejaxppo-ab-") as tmp:
            try:
                dirs = {}
                for side, rev in revs.items():
                    if rev == WORKING_TREE:
                        dirs[side] = ROOT
                        continue
                    path = Path(tmp) / side
                    added.append(path)  # before the add: an interrupted add is cleaned up too
                    proc = subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), rev],
                                          cwd=ROOT, capture_output=True, text=True)
                    if proc.returncode:
                        raise SystemExit(f"git worktree add of {rev} failed: {proc.stderr.strip()}")
                    dirs[side] = path
                yield dirs
            finally:
                for path in added:
                    if path.exists():
                        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT,
                                       capture_output=True, text=True)
    finally:
        # With the temporary directory gone, prune drops any registration left behind.
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True, text=True)
        signal.signal(signal.SIGTERM, previous)


def _spawn(root: Path, overrides: dict, seeds: int, repeats: int, timeout: int, threads: int | None,
           name: str = "", devices: int | None = 1, backend: str = "cpu") -> dict:
    """One process of one revision (checked out at ``root``, named ``name``
    in errors) on ``backend`` (checked); SystemExit naming it, the case and
    the cause if it fails."""
    cmd = [sys.executable, "-c", CHILD, json.dumps(overrides), str(seeds), str(repeats), str(root)]
    what = f"{name or root} on {overrides} (seeds={seeds})"
    try:
        return run_child(cmd, child_env(threads, devices), timeout, what, backend, cwd=root)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{what}: no result within --timeout {timeout} s") from None
    except RuntimeError as error:
        raise SystemExit(str(error)) from None


def compare_case(dirs: dict[str, Path], overrides: dict, seeds: int, pairs: int, repeats: int,
                 timeout: int, cpu_threads: str = "auto", names: dict[str, str] | None = None,
                 backend: str = "cpu") -> dict:
    """``pairs`` alternating pairs of fresh processes, base and head on the
    same CPU pool and one device (on the CPU ``backend``); per side the
    samples and medians, and the median over pairs of head / base."""
    threads, devices = case_cpu_settings(overrides, seeds, backend, cpu_threads, "1")
    samples = {side: [] for side in SIDES}
    for p in range(pairs):
        for side in (SIDES if p % 2 == 0 else SIDES[::-1]):
            samples[side].append(_spawn(dirs[side], overrides, seeds, repeats, timeout, threads,
                                        (names or {}).get(side, side), devices, backend))
    steps = {s["env_steps_per_call"] for side in SIDES for s in samples[side]}
    if len(steps) != 1:
        raise SystemExit(f"base and head ran different numbers of env steps per call on {overrides}: "
                         f"{sorted(steps)}; the comparison needs the same work on both sides")
    row = {"config": overrides, "seeds": max(seeds, 1), "cpu_threads": threads,
           "env_steps_per_call": samples["base"][0]["env_steps_per_call"], "samples": samples}
    for metric in ("compile_s", "steps_per_s"):
        for side in SIDES:
            row[f"{side}_{metric}"] = statistics.median(s[metric] for s in samples[side])
        row[f"ratio_{metric}"] = statistics.median(
            h[metric] / b[metric] for b, h in zip(samples["base"], samples["head"]))
    return row


def _table(rows: dict, meta: dict) -> str:
    lines = [
        f"# {meta['head']} against {meta['base']} on {meta['device']}",
        "",
        f"{meta['machine']}; jax {meta['jax']}, backend {meta['backend']}. "
        f"{meta['pairs']} alternating pair{'s' if meta['pairs'] != 1 else ''} of fresh processes per case, one per revision; each "
        f"process: compile (lowering included), then the median of {meta['repeats']} compiled calls. "
        f"Ratio = median over the pairs of head / base. "
        + (f"Both sides on the CPU pool of `--cpu-threads {meta['cpu_threads']}` (\"cores\": "
           f"XLA's default), one device and XLA CPU's vector width {meta['cpu_vector_width']} bits. "
           if meta["backend"] == "cpu" else "Both sides on one device. ")
        + f"Command: `{meta['command']}`, {meta['date']}.",
        "",
        "| case | seeds | CPU threads | env steps / call | compile s: base | head | ratio (< 1: head faster) "
        "| steps/s: base | head | ratio (> 1: head faster) | ratios of the pairs (steps/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        pair_ratios = ", ".join(f"{h['steps_per_s'] / b['steps_per_s']:.3f}"
                                for b, h in zip(r["samples"]["base"], r["samples"]["head"]))
        lines.append(
            f"| {name} | {r['seeds']} | {threads_text(r['cpu_threads'], meta['backend'])} | {r['env_steps_per_call']:,} "
            f"| {r['base_compile_s']:.2f} | {r['head_compile_s']:.2f} | {r['ratio_compile_s']:.3f} "
            f"| {r['base_steps_per_s']:,.0f} | {r['head_steps_per_s']:,.0f} | {r['ratio_steps_per_s']:.3f} "
            f"| {pair_ratios} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the revision before the change (a commit, branch, tag, HEAD~N)")
    parser.add_argument("head", nargs="?", default=WORKING_TREE,
                        help="the revision after it; '.' (the default): the working tree")
    parser.add_argument("--cases", nargs="*", default=["cartpole_default"], choices=list(CASES))
    add_paired_run_args(parser, HERE / "results" / "compare")
    add_cpu_args(parser, "both sides alike")
    args = parser.parse_args()
    require_positive(parser, args, "pairs", "repeats", "timeout")
    try:
        revs = {"base": resolve_revision(args.base), "head": resolve_revision(args.head)}
    except ValueError as error:
        parser.error(str(error))

    import purejaxppo  # noqa: F401  (XLA guard before jax starts)

    pin_to_cpu()  # the device is the children's alone
    vector_width = apply_cpu_vector_width(args.cpu_vector_width)  # both sides' processes inherit it
    probed = probe_device(rates=False, timeout=args.timeout)
    names = {side: label(rev) for side, rev in revs.items()}
    rows = {}
    with checkouts(revs) as dirs:
        for name in args.cases:
            overrides, seeds = CASES[name]
            if args.quick:
                overrides, seeds = {**overrides, **QUICK}, min(seeds, 2)
            rows[name] = r = compare_case(dirs, overrides, seeds, args.pairs, args.repeats,
                                          args.timeout, args.cpu_threads, names, probed["backend"])
            print(f"{name:22s} compile {r['base_compile_s']:5.2f} s -> {r['head_compile_s']:5.2f} s "
                  f"(x{r['ratio_compile_s']:.3f})  steps/s {r['base_steps_per_s']:>10,.0f} -> "
                  f"{r['head_steps_per_s']:>10,.0f} (x{r['ratio_steps_per_s']:.3f})", flush=True)

    meta = {
        **run_meta("benchmarks/compare_revisions.py", probed),
        "base": names["base"],
        "head": names["head"],
        "pairs": args.pairs,
        "repeats": args.repeats,
        "cpu_threads": args.cpu_threads,
        "cpu_vector_width": vector_width,
        "quick": args.quick,
    }
    slug = lambda name: re.sub(r"[^A-Za-z0-9_.-]+", "-", name.split(" ")[0])
    stem = (f"compare-{slug(names['base'])}-{slug(names['head'])}-{meta['device']}-{'+'.join(args.cases)}"
            + ("-quick" if args.quick else ""))
    write_results(args.out_dir, stem, {"meta": meta, "cases": rows}, _table(rows, meta))
    print(f"wrote {args.out_dir / stem}.{{json,md}}")


if __name__ == "__main__":
    main()
