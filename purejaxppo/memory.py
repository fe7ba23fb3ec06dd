"""The memory a run needs on each device, estimated before it compiles.

A run too large for its device otherwise compiles for minutes and then dies
with XLA's ``RESOURCE_EXHAUSTED``, or takes the machine into swap. The
estimate counts what one run keeps live during an update, per device:

- its `TrainState`, exactly (`jax.eval_shape` of ``train.init``): parameters,
  Adam's moments, env states and observations, statistics;
- the rollout: for each of T x N steps, the observation and the observation
  the step ended in, the action, its noise, five scalars, and the drawn
  reset state (one env state), and a recurrent policy's hidden state;
- the update: the flat batch (a copy of the rollout's samples) and one
  minibatch's activations and gradients through the actor and critic (for
  a recurrent policy, the GRU's gates and states at every step).

It is a lower bound on XLA's peak (which adds its own temporaries), so it
refuses only runs that cannot fit. `check_memory` raises with the estimate
and what the device has.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np

from purejaxppo.networks import resolve_torso
from purejaxppo.normalization import RunningMeanStd


def _bytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one run needs, and how many runs share a device.

    Attributes:
        state: its `TrainState`.
        rollout: one update's trajectory and randomness.
        update: the flat batch and one minibatch's activations and gradients.
        runs_per_device: runs (seeds, sweep points) on one device.
        devices: devices one run's envs are split over (each holds 1/D of
            its rollout and batch).
    """

    state: int
    rollout: int
    update: int
    runs_per_device: int = 1
    devices: int = 1

    @property
    def per_device(self) -> int:
        """Bytes needed on each device."""
        return (self.state + (self.rollout + self.update) // self.devices) * self.runs_per_device

    def __str__(self) -> str:
        return (f"about {_gb(self.per_device)} per device (per run: state {_gb(self.state)}, rollout "
                f"{_gb(self.rollout)}, update {_gb(self.update)}; {self.runs_per_device} run(s) per "
                "device)")


def _largest_weight(config, obs_size: int, action_dim: int) -> tuple[int, str]:
    """The largest MLP or GRU weight matrix (elements) and which layer it is."""
    sizes = (obs_size,) + tuple(config.hidden_sizes)
    layers = [(a * b, f"{a} x {b}") for a, b in zip(sizes, sizes[1:])]
    if config.recurrent is not None:
        h = config.recurrent_size
        layers += [(a * 3 * h, f"{a} x {3 * h} (GRU)") for a in (sizes[-1], h)]
        sizes += (h,)
    layers.append((sizes[-1] * max(action_dim, 1), f"{sizes[-1]} x {action_dim} (policy head)"))
    return max(layers)


def estimate_memory(train, runs_per_device: int = 1) -> MemoryEstimate:
    """The `MemoryEstimate` of ``train`` (from `make_train`) with
    ``runs_per_device`` runs vmapped on each device. Traces ``train.init``
    abstractly; compiles nothing.

    Raises:
        ValueError: one weight matrix would exceed 2**31 elements (the
            largest array a PRNG draw fills).
    """
    config, spec = train.config, train.env_spec
    obs_size = math.prod(spec.obs_shape)
    largest, layer = _largest_weight(config, obs_size, spec.action_dim)
    if largest > 2**31 - 1:
        raise ValueError(
            f"hidden_sizes={config.hidden_sizes}"
            f"{f' with recurrent_size={config.recurrent_size}' if config.recurrent else ''} "
            f"makes a {layer} weight matrix of {largest:,} "
            f"elements, over the 2**31 - 1 one array can be drawn with; allowed: smaller layers"
        )

    def init(key):
        if config.reference_kl:  # needs given parameters: fresh ones have their shapes
            obs_norm = RunningMeanStd.create(spec.obs_shape) if config.normalize_obs else None
            return train.init(key, params=train.random_params(key), obs_norm=obs_norm)
        return train.init(key)

    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    T, N = config.num_steps, config.num_envs
    env_bytes = _bytes(state.env.replace(hidden=None))  # N envs' states and observations
    obs_bytes = 4 * obs_size
    act_bytes = 4 * max(spec.action_dim, 1)
    # A recurrent policy's state per env and step (cores x H floats).
    hidden_bytes = 0 if state.env.hidden is None else 4 * math.prod(state.env.hidden.shape[1:])
    per_step = 2 * obs_bytes + 2 * act_bytes + 5 * 4 + env_bytes // N + hidden_bytes
    rollout = T * N * per_step
    widths = sum(config.hidden_sizes) + obs_size + spec.action_dim
    if hidden_bytes:  # the GRU's input projection, gates and state
        widths += 7 * hidden_bytes // 4
    if resolve_torso(config.torso, spec.obs_shape) == "cnn":
        widths += obs_size * sum(config.cnn_channels)  # the convolutions' feature maps
    minibatch = config.minibatch_size * widths * 4 * 2 * 3  # actor and critic, forward and backward
    update = T * N * (obs_bytes + act_bytes + 4 * 4) + minibatch
    devices = len(train.env_devices) if getattr(train, "env_devices", None) else 1
    return MemoryEstimate(state=_bytes(state), rollout=rollout, update=update,
                          runs_per_device=runs_per_device, devices=devices)


def device_memory(device: jax.Device | None = None) -> int | None:
    """Bytes a device can hold: an accelerator's allocator limit; for a CPU
    device, the machine's physical memory shared by its CPU devices. None
    when unknown."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # not every backend reports it
        pass
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform == "cpu":
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None
        return total // max(len(jax.local_devices(backend="cpu")), 1)
    return None


def check_memory(train, runs_per_device: int = 1, device: jax.Device | None = None) -> MemoryEstimate:
    """Refuse a run that cannot fit: a `ValueError` with the estimate and
    what ``device`` (default: this process's first) has. Returns the estimate."""
    estimate = estimate_memory(train, runs_per_device)
    device = device or jax.local_devices()[0]
    have = device_memory(device)
    if have is not None and estimate.per_device > have:
        raise ValueError(
            f"the run needs {estimate}, and {device.platform}:{device.id} has {_gb(have)}; "
            "allowed: fewer num_envs x num_steps, smaller hidden_sizes, or fewer seeds per device "
            "(more devices)"
        )
    return estimate
