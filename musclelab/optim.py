"""Optimisers and learning-rate schedules chosen by name (config group ``optim``)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from musclelab.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizer", "optim.name")
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)
OPTIMIZERS.register("sgd")(torch.optim.SGD)

SCHEDULERS: Registry[str] = Registry("scheduler", "optim.scheduler")
for _name in ("none", "cosine", "plateau", "poly"):
    SCHEDULERS.register(_name)(_name)


def build_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params`` at learning rate ``lr``; other ``optim.*`` keys are passed on."""
    cls = OPTIMIZERS.get(name)
    try:
        return cls(params, lr=lr, **kwargs)
    except TypeError as err:
        raise TypeError(f"optim: bad parameter for optimizer '{name}' ({err}); check the keys in config group `optim`") from err


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, max_epochs: int, monitor: str) -> dict | None:
    """A Lightning ``lr_scheduler`` dict stepping once per epoch, or None for ``none``.

    cosine: cosine decay to 0 over ``max_epochs``; poly: (1 - epoch/max_epochs)^0.9 as in nnU-Net;
    plateau: halve the rate when ``monitor`` stops improving for 5 epochs.
    """
    SCHEDULERS.get(name)
    epochs = max(1, int(max_epochs))
    if name == "none":
        return None
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    elif name == "poly":
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: max(0.0, 1 - e / epochs) ** 0.9)
    else:
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=5)
    return {"scheduler": sched, "interval": "epoch", "monitor": monitor}
