"""What experiment trackers (W&B, MLflow, TensorBoard) get beyond Lightning's per-epoch metric logging.

Lightning already sends every ``self.log`` metric (per-epoch train/val loss and Dice, test means) to every
logger, and W&B gets the resolved config at start (MLflow: as parameters, :mod:`musclelab.loggers`). Here:

* :func:`tracking_callbacks`: the training loss and learning rate of every logged step (``train/loss_step`` and
  ``lr-<Optimizer>`` as Lightning names it, every ``trainer.log_every_n_steps``). Our own callback: the task logs
  the loss per epoch (``metrics.csv`` stays one row per epoch), and Lightning's ``LearningRateMonitor`` also
  writes into ``trainer.callback_metrics``, which would add a column to ``metrics.csv``; and
  :class:`ValidationOverlays`: every ``callbacks.val_overlays.every_n_epochs`` epochs, the first
  ``callbacks.val_overlays.cases`` validation slices with their predictions as an image (2D models; only with a
  logger that shows images);
* :func:`log_run_end`: the test overlay and learning curve as images, ``test_cases.csv`` as a table (W&B) or an
  artifact (MLflow, with ``config_resolved.yaml``).

Images go to each tracker its own way: W&B ``log_image``, TensorBoard ``add_image``, MLflow ``log_artifact``
(under ``images/``). The CSV logger gets the step metrics only. Nothing here runs without a logger.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger

log = logging.getLogger(__name__)

VAL_OVERLAY_DIR = "val_overlays"


def _kind(logger: Logger) -> str:
    name = type(logger).__name__
    return {"WandbLogger": "wandb", "MLFlowLogger": "mlflow", "TensorBoardLogger": "tensorboard"}.get(name, "other")


def log_images(loggers: Sequence[Logger], key: str, paths: Sequence[Path], step: int | None = None) -> None:
    """PNG files as images in every tracker that shows images (W&B, TensorBoard, MLflow artifacts)."""
    paths = [Path(p) for p in paths if Path(p).is_file()]
    if not paths:
        return
    for lg in loggers:
        kind = _kind(lg)
        if kind == "wandb":
            lg.log_image(key, [str(p) for p in paths], step=step)
        elif kind == "tensorboard":
            from PIL import Image

            for i, p in enumerate(paths):
                img = np.asarray(Image.open(p).convert("RGB"))
                tag = key if len(paths) == 1 else f"{key}/{i}"
                lg.experiment.add_image(tag, img, global_step=step or 0, dataformats="HWC")
            lg.experiment.flush()
        elif kind == "mlflow":
            for p in paths:
                lg.experiment.log_artifact(lg.run_id, str(p), f"images/{key.replace('/', '_')}")


def learning_rates(trainer: pl.Trainer) -> dict[str, float]:
    """The current learning rate of every optimiser (and parameter group): ``lr-Adam``, ``lr-Adam/pg1``, ..."""
    out: dict[str, float] = {}
    for i, opt in enumerate(trainer.optimizers):
        name = f"lr-{type(opt).__name__}" + (f"-{i}" if len(trainer.optimizers) > 1 else "")
        for j, group in enumerate(opt.param_groups):
            out[name + (f"/pg{j + 1}" if len(opt.param_groups) > 1 else "")] = float(group["lr"])
    return out


class StepLoss(Callback):
    """``train/loss_step`` and the learning rates to every logger every ``trainer.log_every_n_steps`` optimiser
    steps (sent to the loggers only, not to ``trainer.callback_metrics``)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        if loss is None or not trainer.loggers or step % max(1, trainer.log_every_n_steps):
            return
        if trainer.global_rank == 0:
            metrics = {"train/loss_step": float(loss.detach()), **learning_rates(trainer)}
            for lg in trainer.loggers:
                lg.log_metrics(metrics, step=step)


class ValidationOverlays(Callback):
    """The first ``cases`` validation slices, ground truth and prediction, as an image every ``every_n_epochs``
    epochs (``val_overlays/epoch_NNN.png`` in the run directory, and each tracker's image view). 2D only."""

    def __init__(self, run_dir: Path, cases: int = 4, every_n_epochs: int = 1) -> None:
        self.dir = Path(run_dir) / VAL_OVERLAY_DIR
        self.cases = int(cases)
        self.every = max(1, int(every_n_epochs))
        self._examples: list[dict[str, Any]] = []

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._examples = []

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if (trainer.sanity_checking or self.cases < 1 or len(self._examples) >= self.cases
                or trainer.current_epoch % self.every or not isinstance(batch, dict) or "image" not in batch
                or batch["image"].ndim != 4):
            return
        k = self.cases - len(self._examples)
        with torch.no_grad():
            pred = pl_module.predict_labels(batch["image"][:k]).cpu().numpy()
        for i in range(min(k, len(pred))):
            self._examples.append({"case_id": str(batch["case_id"][i]) if "case_id" in batch else str(i),
                                   "image": batch["image"][i].cpu().numpy(),
                                   "label": batch["label"][i].cpu().numpy(), "pred": pred[i]})

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._examples or trainer.sanity_checking or trainer.global_rank != 0:
            return
        from musclelab.outputs.plots import plot_overlays

        epoch = trainer.current_epoch
        path = plot_overlays(self._examples, list(pl_module.class_names), self.dir / f"epoch_{epoch:03d}.png",
                             heading=f"validation, epoch {epoch}")
        log_images(trainer.loggers, "val/overlay", [path], step=trainer.global_step)
        self._examples = []


def tracking_callbacks(loggers: Sequence[Logger], run_dir: Path, val_overlays: dict[str, Any] | None) -> list[Callback]:
    """The callbacks that feed ``loggers``: step loss and learning rate for any logger, validation overlays only
    when one of them shows images (W&B, TensorBoard, MLflow; not the CSV logger)."""
    if not loggers:
        return []
    settings = dict(val_overlays or {})
    out: list[Callback] = [StepLoss()]
    if any(_kind(lg) in ("wandb", "tensorboard", "mlflow") for lg in loggers):
        out.append(ValidationOverlays(run_dir, int(settings.get("cases", 4)), int(settings.get("every_n_epochs", 1))))
    return out


def log_run_end(loggers: Sequence[Logger], run_dir: Path) -> None:
    """After the test: the test overlay and learning curve as images, ``test_cases.csv`` as a W&B table and an
    MLflow artifact (with ``config_resolved.yaml`` and ``test_summary.json``)."""
    if not loggers:
        return
    run_dir = Path(run_dir)
    log_images(loggers, "test/overlay", [run_dir / "test_overlay.png"])
    log_images(loggers, "learning_curve", [run_dir / "learning_curve.png"])
    cases = run_dir / "test_cases.csv"
    for lg in loggers:
        kind = _kind(lg)
        if kind == "wandb" and cases.is_file():
            lg.log_table("test_cases", dataframe=pd.read_csv(cases))
        elif kind == "mlflow":
            for name in ("test_cases.csv", "test_summary.json", "config_resolved.yaml", "metrics.csv"):
                if (run_dir / name).is_file():
                    lg.experiment.log_artifact(lg.run_id, str(run_dir / name))
