"""Experiment loggers chosen by name (``logger.name``): ``csv``, ``tensorboard``, ``wandb``, ``none``.

W&B never needs an account for tests or default runs: ``logger=wandb`` works with ``WANDB_MODE=offline``.
All jobs of one Hydra multirun share a W&B group; a resumed run reuses its W&B run id, which is stored
in ``<run dir>/wandb_run_id.txt`` when the run starts.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from musclelab.io import atomic_write_text
from musclelab.registry import Registry

LOGGERS: Registry[str] = Registry("logger", "logger.name")
for _name in ("csv", "tensorboard", "wandb", "none"):
    LOGGERS.register(_name)(_name)

WANDB_ID_FILE = "wandb_run_id.txt"


def build_logger(name: str, run_dir: Path, run_name: str, group: str | None, config: dict[str, Any],
                 **params: Any) -> Logger | None:
    """The logger ``name`` writing under ``run_dir`` (``None`` for ``none``)."""
    LOGGERS.get(name)
    if name == "none":
        return None
    if name == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    if name == "tensorboard":
        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
    return _wandb_logger(run_dir, run_name, group, config, **params)


def _wandb_logger(run_dir: Path, run_name: str, group: str | None, config: dict[str, Any], project: str = "musclelab",
                  entity: str | None = None, mode: str | None = None, log_model: bool = False,
                  **extra: Any) -> Logger:
    from pytorch_lightning.loggers import WandbLogger

    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    if not id_file.exists():
        atomic_write_text(id_file, run_id + "\n")
    mode = mode or os.environ.get("WANDB_MODE")
    kwargs: dict[str, Any] = dict(project=project, entity=entity, group=group, name=run_name, id=run_id,
                                  resume="allow", save_dir=str(run_dir), log_model=log_model, config=config)
    if mode:
        kwargs["mode"] = mode
    kwargs.update(extra)
    return WandbLogger(**kwargs)


def finish_wandb() -> None:
    """Close the active W&B run (if any) so the next job of a multirun starts its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
