"""``joint``: stage ``i`` trains on the union of the training sets of sites ``0..i``, continuing from the previous
joint stage (Avalanche's ``Cumulative``): the upper bound the other strategies are compared with."""
from __future__ import annotations

import time
from typing import Any

from torch.utils.data import ConcatDataset

from musclelab.strategies.base import STRATEGIES, Strategy, StageContext


@STRATEGIES.register("joint")
class Joint(Strategy):
    name = "joint"
    has_settings = False

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        t0 = time.perf_counter()
        parts = [ctx.site_datamodule(j).datasets["train"] for j in range(len(ctx.earlier))]
        dm.datasets["train"] = ConcatDataset([*parts, dm.datasets["train"]])
        return time.perf_counter() - t0
