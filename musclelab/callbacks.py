"""Lightning callbacks that write a run's own files (independent of which logger is chosen)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from musclelab.errors import ConfigError
from musclelab.io import atomic_write_text


def csv_column(key: str) -> str:
    """Stable CSV column name for a logged key: ``val/dice`` -> ``val_dice``."""
    return key.replace("/", "_")


class EpochMetricsCSV(pl.Callback):
    """Writes ``metrics.csv``: one row per finished training epoch with every epoch-level metric
    (train/val loss, val Dice, per-class Dice, learning rate, wall time).

    The file is rewritten atomically after each epoch. On resume, rows of epochs that will be re-run are
    dropped, so the file always reads as one consistent history.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict] = []
        self._t0 = 0.0
        self._lr = float("nan")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # runs after a resumed checkpoint's loop state is restored, so current_epoch is the epoch to re-run
        self._t0 = time.perf_counter()
        self.rows = []
        if self.path.exists():
            old = pd.read_csv(self.path)
            self.rows = old[old["epoch"] < trainer.current_epoch].to_dict("records")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the rate used during this epoch (epoch-wise schedules step before epoch-end hooks run)
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else float("nan")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {csv_column(k): float(v) for k, v in trainer.callback_metrics.items()
                   if v.numel() == 1 and not k.startswith("test/")}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        row["lr"] = self._lr
        row["time_s"] = round(time.perf_counter() - self._t0, 3)
        self.rows.append(row)
        atomic_write_text(self.path, pd.DataFrame(self.rows).to_csv(index=False))


class NonFiniteLossError(ConfigError):
    """The training loss became NaN or infinite (usually a learning rate too high for the data)."""


class NonFiniteLossStop(pl.Callback):
    """Stops a run at the first NaN/inf training loss with an error naming the epoch and step (the run is then
    marked ``failed``): training on would only write NaN metrics and checkpoints."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or bool(torch.isfinite(loss.detach()).all()):
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        raise NonFiniteLossError(
            f"training loss is {float(loss.detach().float().reshape(-1)[0])} at epoch {trainer.current_epoch}, "
            f"step {trainer.global_step} (batch {batch_idx}): lower optim.lr (now {lr:g}) or check the input data "
            "(musclelab data verify)")
