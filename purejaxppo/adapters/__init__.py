"""Adapters: other JAX env suites on purejaxppo's env protocol.

Each module maps one suite onto gymnax >= 1.0's API (docs/environments.md):
automatic reset, ``terminated`` apart from ``truncated``, the observation an
episode ended in as ``info["final_observation"]``, and gymnax ``Box`` /
``Discrete`` spaces. Each env subclasses gymnax's ``Environment`` and keeps
its ``step``, so training takes the presampled-reset fast path.

Name an adapter's env as ``"<suite>/<id>"`` (``PPOConfig(env_name=...)``,
``--env``); `purejaxppo.envs.load_env` calls the module's
``make(id, **env_kwargs) -> (env, env_params)``. Each suite is an optional
extra (``pip install "purejaxppo[navix]"``, or ``[envs]`` for all); a module
imports its suite only when ``make`` is called, and says which extra to
install when it is missing.

| module | suite | extra |
|---|---|---|
| `navix` | navix: MiniGrid in JAX | ``navix`` |
| `xminigrid` | XLand-MiniGrid | ``xminigrid`` |
| `craftax` | Craftax and Craftax-Classic | ``craftax`` |
| `jumanji` | Jumanji | ``jumanji`` |
| `brax` | Brax (MJX) continuous control | ``brax`` |
"""
