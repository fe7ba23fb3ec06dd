"""Output paths checked before anything compiles.

A run that trains for an hour and then cannot write its results has lost
them. `output_dir` and `output_file` make sure a path can be written to
first (creating the directories it needs, and writing and removing a probe
file), and raise a one-line `ValueError` naming the field, the value and
what is wrong: an empty string, a file where a directory is needed, a
directory where a file is, a location that cannot be written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _given(name: str, path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {path!r}")
    if str(path).strip() == "":
        raise ValueError(f"{name} is an empty string; allowed: a directory or file path "
                         "(use '.' for the current directory)")
    return Path(path)


def _probe(name: str, directory: Path, shown: Path) -> None:
    """Write and remove a file in ``directory``: the one sure test (as root,
    permission bits say little; a read-only mount says nothing to them)."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".purejaxppo-probe-", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{name}={str(shown)!r} cannot be written: "
                         f"{error.strerror or error} ({directory})") from None


def output_dir(name: str, path: str | os.PathLike) -> Path:
    """``path`` as a directory that exists and can be written (created,
    with its parents, if absent); else a `ValueError` naming ``name``."""
    path = _given(name, path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a file; allowed: a directory, or a path "
                         "where one can be created")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{name}={str(path)!r} cannot be created: "
                         f"{error.strerror or error}") from None
    _probe(name, path, path)
    return path


def output_file(name: str, path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written: not a directory, in a
    directory that exists (created if absent) and can be written."""
    path = _given(name, path)
    if path.is_dir():
        raise ValueError(f"{name}={str(path)!r} is a directory; allowed: a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{name}={str(path)!r}: its directory {str(path.parent)!r} cannot be "
                         f"created: {error.strerror or error}") from None
    _probe(name, path.parent, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{name}={str(path)!r} cannot be written: permission denied")
    return path


def input_dir(name: str, path: str | os.PathLike) -> Path:
    """``path`` as an existing directory; else a `ValueError` naming ``name``."""
    path = _given(name, path)
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise ValueError(f"{name}={str(path)!r} {what}; allowed: a directory a run saved "
                         "checkpoints to")
    return path
