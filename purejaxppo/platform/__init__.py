"""Machine tuning: opt-in settings of the process that runs PPO, not PPO itself.

Each module sets something XLA or JAX reads once, when the backend starts,
so each applies before the first computation of the process:

* `xla_guard`: turns off XLA CPU's concurrency-optimised scheduler where
  jaxlib 0.10 deadlocks with it (``import purejaxppo`` applies it first).
* `cpu_threads`: the size of XLA's CPU thread pool.
* `cpu_vectors`: the SIMD width XLA's CPU compiler prefers.
* `cpu_devices`: how many devices JAX's CPU backend shows, and the rules
  for splitting seeds or one seed's envs over them.
* `compile_cache`: JAX's persistent compilation cache.

The CLI applies them all (docs/cpu.md); a Python run imports none of them
but the guard.
"""
