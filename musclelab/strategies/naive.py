"""``naive``: sequential fine-tuning (Yoon 2024's chains as they were): nothing is added to a stage."""
from __future__ import annotations

from typing import Any

from musclelab.strategies.base import STRATEGIES, Strategy, StageContext


@STRATEGIES.register("naive")
class Naive(Strategy):
    name = "naive"
    has_settings = False

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        return 0.0
