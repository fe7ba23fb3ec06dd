#!/usr/bin/env bash
# Wheels of what purejaxppo needs beyond the accelerator machines' image, for
# running the benchmarks on a machine that cannot reach a package registry.
#
# That image (Python 3.12, jax 0.11.2 with CUDA) has jax, flax, optax, chex,
# numpy, matplotlib, seaborn, six, filelock, cloudpickle and typing-extensions,
# but not gymnax, its gymnasium, or the CLI's tyro. All of those are
# pure-Python wheels. They are pinned to the versions the whole test suite
# passed with on Python 3.12 and jax 0.11.2 (benchmarks/NOTES.md).
#
#   bash benchmarks/accelerator_wheels.sh [DEST]     # DEST defaults to .whl
#
# .whl is in .gitignore, and ignored paths reach the machine only when
# carried. There, with DEST carried, from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
#   python3 benchmarks/throughput.py --no-sweep --compile-repeats 1 --out-dir "$OUT"
set -euo pipefail
dest="${1:-.whl}"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    -d "$dest" \
    gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6 \
    tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.0
ls "$dest"
