"""Stop training once every monitored loss has saturated (``callbacks.saturation``).

McSweeney et al. 2022 (§2.3) train each target model "until both the training and validation losses had
saturated". A fixed epoch count instead gives n = 5 about 1/16 of the optimiser steps of n = 125 (batch 8), so the
training length is confounded with n, the axis that study is about. :class:`SaturationStop` ends a run at the
first epoch at which *every* monitored loss has gone ``patience`` epochs without improving on its best by more than
``min_delta`` of that best (a relative tolerance, so the rule does not depend on the loss's scale);
``trainer.max_epochs`` stays the cap. Why our own: Lightning's ``EarlyStopping`` watches one metric, and several of
them stop a run when *any* has stalled, not when all have.

The state (best values, epochs waited) travels in checkpoints, so a resumed run stops where an uninterrupted one
does.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl

from musclelab.errors import ConfigError

FIELD = "callbacks.saturation"


class SaturationStop(pl.Callback):
    """Stop at the end of the first epoch at which every loss in ``monitors`` has saturated.

    Args:
        monitors: logged epoch metrics to watch (lower is better), e.g. ``["train/loss", "val/loss"]``.
        patience: epochs a loss may go without a relative improvement of ``min_delta`` before it counts as
            saturated.
        min_delta: the improvement that counts, as a fraction of the loss's best so far (0.01 = 1 %).
    """

    def __init__(self, monitors: Sequence[str] = ("train/loss", "val/loss"), patience: int = 10,
                 min_delta: float = 0.01) -> None:
        super().__init__()
        if not monitors:
            raise ConfigError(f"{FIELD}.monitors is empty: name the losses to watch, e.g. [train/loss,val/loss]")
        self.monitors = [str(m) for m in monitors]
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = {m: math.inf for m in self.monitors}
        self.wait = {m: 0 for m in self.monitors}
        self.stopped_epoch: int | None = None

    def saturated(self) -> bool:
        """Whether every monitored loss has waited ``patience`` epochs without improving."""
        return all(self.wait[m] >= self.patience for m in self.monitors)

    def update(self, values: dict[str, float]) -> bool:
        """Take one epoch's losses; True when every one has now saturated."""
        for m in self.monitors:
            v, best = values[m], self.best[m]
            if math.isfinite(v) and (not math.isfinite(best) or v < best - self.min_delta * abs(best)):
                self.best[m], self.wait[m] = v, 0
            else:
                self.wait[m] += 1
        return self.saturated()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        missing = [m for m in self.monitors if m not in metrics]
        if missing:
            raise ConfigError(f"{FIELD}.monitors: {missing} not logged in epoch {trainer.current_epoch} (logged: "
                              f"{', '.join(sorted(metrics))}); a validation loss needs a validation set "
                              f"(data.val_fraction / data.split) and trainer.limit_val_batches > 0")
        if self.update({m: float(metrics[m]) for m in self.monitors}):
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "wait": dict(self.wait), "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best.update(state_dict.get("best", {}))
        self.wait.update(state_dict.get("wait", {}))
        self.stopped_epoch = state_dict.get("stopped_epoch")
