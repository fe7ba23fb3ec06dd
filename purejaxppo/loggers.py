"""Where live reports go: a CSV file, TensorBoard, Weights & Biases, a terminal.

`make_train(config, log_fn=...)` hands the host each reported update's
metrics (`purejaxppo.train.LogFn`). `Reporter` is such a ``log_fn``: it adds
the env steps and the wall time, and passes one `Report` to each of its
loggers. A logger is anything with ``write(report)`` and ``close()``:

    >>> class Printer:
    ...     def write(self, report):
    ...         print(report.update, report.median("episode_return"))
    ...     def close(self):
    ...         pass
    >>> reporter = Reporter([CSVLogger("run/metrics.csv"), Printer()], config.batch_size)
    >>> result = jax.jit(jax.vmap(make_train(config.replace(log_every=10), log_fn=reporter)))(keys)
    >>> reporter.close()

`CSVLogger` flushes each report, so a run that crashes or is stopped keeps
every row logged so far. TensorBoard (tensorboardX) and W&B are optional
extras, imported only when asked for.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Report:
    """One reported update, for every run of the batch.

    Attributes:
        update: updates done (counted from 1).
        env_steps: env steps each run has taken (``update * batch_size``).
        wall_time: seconds since the `Reporter` started.
        metrics: each metric's values, flat over the runs (seeds): shape
            (runs,).
    """

    update: int
    env_steps: int
    wall_time: float
    metrics: dict[str, np.ndarray]

    @property
    def runs(self) -> int:
        return len(next(iter(self.metrics.values())))

    def median(self, name: str) -> float:
        """The median over runs of a metric, NaN runs left out (NaN if all are)."""
        values = self.metrics[name].astype(np.float64)
        finite = values[~np.isnan(values)]
        return float(np.median(finite)) if finite.size else math.nan


class Logger(Protocol):
    def write(self, report: Report) -> None: ...

    def close(self) -> None: ...


class Reporter:
    """A ``log_fn`` for `make_train` that writes each report to ``loggers``.

    ``batch_size`` turns updates into env steps. A logger that raises is
    reported once (a warning) and dropped; training goes on.
    """

    def __init__(self, loggers: Sequence[Logger], batch_size: int):
        self.loggers = list(loggers)
        self.batch_size = batch_size
        self.start = time.perf_counter()
        self.last: Report | None = None

    def __call__(self, update: int, metrics: dict[str, Any]) -> None:
        flat = {name: np.asarray(value).reshape(-1) for name, value in metrics.items()}
        report = Report(update=update, env_steps=update * self.batch_size,
                        wall_time=time.perf_counter() - self.start, metrics=flat)
        self.last = report
        for logger in list(self.loggers):
            try:
                logger.write(report)
            except Exception as error:  # a broken logger must not end the run
                warnings.warn(f"{type(logger).__name__} failed and is dropped: {error}", stacklevel=2)
                self.loggers.remove(logger)

    def replay(self, metrics: dict[str, Any]) -> None:
        """Write every update of a finished run's ``metrics`` (each of shape
        (*batch, updates)), for loggers that did not watch it live (wall time
        NaN: not measured per update)."""
        updates = np.shape(next(iter(metrics.values())))[-1]
        arrays = {name: np.asarray(value) for name, value in metrics.items()}
        for i in range(updates):
            flat = {name: value[..., i].reshape(-1) for name, value in arrays.items()}
            report = Report(update=i + 1, env_steps=(i + 1) * self.batch_size, wall_time=math.nan,
                            metrics=flat)
            for logger in self.loggers:
                logger.write(report)

    def close(self) -> None:
        """Close every logger (once; a second call does nothing)."""
        loggers, self.loggers = self.loggers, []
        for logger in loggers:
            logger.close()


class CSVLogger:
    """``metrics.csv``: one row per reported update and run: ``update,
    env_steps, seed, wall_time`` and every metric (non-finite as ``nan``,
    ``inf``). Appends to an existing file of the same columns (a resumed
    run); flushed after each report."""

    FIXED = ("update", "env_steps", "seed", "wall_time")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = None
        self.writer = None

    def write(self, report: Report) -> None:
        names = sorted(report.metrics)
        if self.file is None:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            self.file = open(self.path, "a", newline="")
            self.writer = csv.writer(self.file)
            if fresh:
                self.writer.writerow([*self.FIXED, *names])
            self.names = names
        for seed in range(report.runs):
            self.writer.writerow([report.update, report.env_steps, seed, repr(round(report.wall_time, 3)),
                                  *(repr(float(report.metrics[n][seed])) for n in self.names)])
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class TensorBoardLogger:
    """TensorBoard event files in ``directory`` (tensorboardX, the
    ``tensorboard`` extra): each metric's median over runs as
    ``<metric>``, against env steps."""

    def __init__(self, directory: str | Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs tensorboardX: pip install "
                              "'purejaxppo[tensorboard]'") from None
        self.writer = SummaryWriter(str(directory))

    def write(self, report: Report) -> None:
        for name in report.metrics:
            self.writer.add_scalar(name, report.median(name), report.env_steps)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run (the ``wandb`` extra): each metric's median
    over runs, against env steps. ``mode="offline"`` writes it locally (sync
    later with ``wandb sync``); ``None`` follows ``WANDB_MODE``."""

    def __init__(self, directory: str | Path, config: dict, project: str = "purejaxppo",
                 name: str | None = None, mode: str | None = None):
        try:
            import wandb
        except ImportError:
            raise ImportError("W&B logging needs wandb: pip install 'purejaxppo[wandb]'") from None
        self.run = wandb.init(project=project, name=name, dir=str(directory), config=config, mode=mode,
                              reinit="finish_previous")

    def write(self, report: Report) -> None:
        self.run.log({name: report.median(name) for name in report.metrics}, step=report.env_steps)

    def close(self) -> None:
        self.run.finish()


class ProgressDisplay:
    """The command line's view of a running job. On a terminal, a progress bar
    (rich) with env steps, steps/s, the time left and the median return;
    otherwise one line per ``every_s`` seconds (and the last report)."""

    def __init__(self, total_updates: int, batch_size: int, runs: int, stream=None, every_s: float = 10.0,
                 first_update: int = 0):
        """``runs``: runs per report (seeds); ``first_update``: where a
        resumed run starts."""
        self.total, self.batch_size, self.runs = total_updates, batch_size, runs
        self.stream = stream or sys.stdout
        self.every_s = every_s
        self.next_line = 0.0
        self.first: Report | None = None  # the rate is measured from the first report on
        self.bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("updates"),
                                TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                console=Console(file=self.stream), transient=False)
            self.task = self.bar.add_task("train", total=total_updates, completed=first_update, status="")

    def status(self, report: Report) -> str:
        first = self.first
        seconds = report.wall_time - first.wall_time
        rate = ((report.update - first.update) * self.batch_size * self.runs / seconds
                if seconds > 0 else math.nan)
        speed = f"{rate:,.0f} steps/s | " if math.isfinite(rate) else ""
        return (f"{report.env_steps:,} env steps | {speed}"
                f"return {report.median('episode_return'):.2f} (median)")

    def write(self, report: Report) -> None:
        self.first = self.first or report
        if self.bar is not None:
            if self.first is report:  # shown from the first report on (after the compile)
                self.bar.start()
            self.bar.update(self.task, completed=report.update, status=self.status(report))
        elif report.wall_time >= self.next_line or report.update == self.total:
            print(f"update {report.update}/{self.total} | {self.status(report)} | "
                  f"{report.wall_time:.1f} s", file=self.stream, flush=True)
            self.next_line = report.wall_time + self.every_s

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
