"""One test path for every run: a checkpoint loaded with ``weights_only=True`` as the task of its
``spatial_dims`` (:func:`load_for_test`), tested by a single-device Lightning ``Trainer`` (:func:`tester`), so each
test case is scored exactly once, also after DDP training. ``musclelab.train`` tests a run's best checkpoint
with it; the study runner (:mod:`musclelab.studies.chain`) tests every stage on every data set with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig


def task_class(spatial_dims: int) -> type[pl.LightningModule]:
    """The task that trains and tests ``spatial_dims`` data (2: slices, 3: volumes): one class for both."""
    from musclelab.tasks import SegmentationTask

    return SegmentationTask


def load_for_test(checkpoint: str | Path, spatial_dims: int) -> pl.LightningModule:
    """The task saved in ``checkpoint``, on the CPU, read with ``torch.load(weights_only=True)`` (plain tensors
    and values only: a checkpoint holding arbitrary Python objects is refused)."""
    return task_class(spatial_dims).load_from_checkpoint(str(checkpoint), map_location="cpu", weights_only=True)


def tester(cfg: DictConfig, run_dir: str | Path, logger: Any = None) -> pl.Trainer:
    """A single-device ``Trainer`` for testing with ``cfg.trainer``'s accelerator, precision, determinism and
    ``limit_test_batches``; it never writes checkpoints (nor Lightning's SLURM hpc checkpoints:
    :func:`musclelab.slurm.cluster_plugins`)."""
    from musclelab.slurm import cluster_plugins

    tr = cfg.trainer
    return pl.Trainer(
        accelerator=tr.get("accelerator", "auto"), devices=1, precision=tr.get("precision"),
        logger=logger if logger else False, enable_progress_bar=bool(cfg.callbacks.progress_bar),
        enable_checkpointing=False, default_root_dir=str(run_dir), deterministic=tr.get("deterministic"),
        limit_test_batches=tr.get("limit_test_batches", 1.0), enable_model_summary=False,
        plugins=cluster_plugins(),
    )


def run_test(model: pl.LightningModule, datamodule: pl.LightningDataModule, cfg: DictConfig, run_dir: str | Path,
             logger: Any = None) -> pl.LightningModule:
    """Test ``model`` on ``datamodule``'s test split on one device; the task keeps its per-case rows
    (``test_rows``), examples and forward time for the outputs. Returns ``model``."""
    tester(cfg, run_dir, logger).test(model, datamodule=datamodule, verbose=False)
    return model
