"""Shared set-up for the benchmarks: the default training config, its datamodule and task, timing helpers.

Every benchmark builds exactly what ``musclelab train`` builds (config composed by the CLI's composer, the
datamodule of :func:`musclelab.train.build_datamodule`, the callbacks of :func:`musclelab.train.build_callbacks`)
so a ratio measures musclelab, not a re-implementation of it.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl

os.environ.setdefault("WANDB_MODE", "offline")


def compose(overrides: list[str], run_dir: Path) -> Any:
    """The training config ``musclelab train <overrides>`` would run, writing into ``run_dir``."""
    from musclelab.compose import compose_train_config

    return compose_train_config([*overrides, f"paths.output_dir={run_dir}"])


def build_task(cfg: Any, class_names: list[str]) -> Any:
    """The task ``musclelab train`` builds for ``cfg`` (scratch init), 2D or 3D (:func:`musclelab.train.build_task`).

    Also works on a checkout from before issue 16 (augmentation in the loader, a separate 3D task class), so one
    script measures both trees."""
    from musclelab import train

    if hasattr(train, "build_task"):
        return train.build_task(cfg, class_names)
    from musclelab.checkpoint_meta import data_fields
    from musclelab.tasks import SegmentationTask
    from musclelab.train import _params
    from musclelab.train_volume import is_volume, volume_task

    kw = dict(model=cfg.model.name, model_params=_params(cfg.model.get("params"), ()), in_channels=cfg.data.channels,
              class_names=list(class_names), img_size=cfg.data.get("img_size"), loss=cfg.loss.name,
              loss_params=_params(cfg.loss.get("params"), ()), optim=_params(cfg.optim, ()),
              max_epochs=cfg.trainer.max_epochs, monitor=cfg.callbacks.checkpoint.monitor,
              overlay_cases=cfg.callbacks.overlay_cases, body_composition=bool(cfg.eval.body_composition),
              meta=data_fields(cfg.data))
    return (volume_task(cfg) if is_volume(cfg) else SegmentationTask)(**kw)


class EpochTimer(pl.Callback):
    """Wall time of every training epoch (``train_s``: epoch start to validation start, or to the epoch-end hooks
    without validation) and of every whole epoch
    including validation and the epoch-end callbacks (``full_s``: epoch start to the next start / fit end)."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.full_s: list[float] = []
        self._t0 = self._t_full = 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        now = time.perf_counter()
        if self._t_full:
            self.full_s.append(now - self._t_full)
        self._t0 = self._t_full = now

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        # validation runs inside the training epoch (before its end hooks): the training part ends here
        if not trainer.sanity_checking and len(self.train_s) < len(self.full_s) + 1:
            self.train_s.append(time.perf_counter() - self._t0)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if len(self.train_s) < len(self.full_s) + 1:  # no validation this epoch
            self.train_s.append(time.perf_counter() - self._t0)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self.full_s.append(time.perf_counter() - self._t_full)


def median(xs: list[float], skip: int = 1) -> float:
    """Median of ``xs`` without the first ``skip`` (warm-up) values."""
    return statistics.median(xs[skip:] if len(xs) > skip else xs)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds over ``repeats`` calls, after one warm-up call."""
    fn()
    return statistics.median(timed(fn) for _ in range(repeats))
