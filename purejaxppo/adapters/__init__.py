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

import difflib
import importlib
from types import ModuleType


def import_suite(module: str, extra: str) -> ModuleType:
    """``module`` of an adapter's suite, imported; where it is missing, an
    ``ImportError`` naming the extra that installs it."""
    try:
        importlib.import_module(module.split(".")[0])  # the package itself, even if a submodule is loaded
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"the {extra} adapter needs the {extra} extra: pip install "
                          f"'purejaxppo[{extra}]' ({error})") from None


def check_id(suite: str, env_id: str, ids: list[str]) -> None:
    """Raise a ``ValueError`` unless ``env_id`` is one of the suite's
    ``ids``, naming the close ones and listing them all."""
    if env_id not in ids:
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"{suite} has no env {env_id!r}.{hint} Allowed: {', '.join(ids)}")
