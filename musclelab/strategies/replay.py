"""``replay``: a memory of ``per_site`` training items (2D slices or 3D patches) of every earlier site, chosen at
random with ``seed``, appended to every training batch of later stages so they make ``fraction`` of it.

A batch of ``B`` new-site items gets ``k = round(B * fraction / (1 - fraction))`` memory items (batch ``B + k``;
the new site is seen exactly as in naive fine-tuning). The memory items of a batch are drawn from a generator
seeded by (seed, rank, batches fetched so far): no random stream to save, so a resumed stage draws as the
uninterrupted one; under DDP each rank mixes into its own batches. Mixing happens before the batch augmentation,
so memory items are augmented like the rest.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from musclelab.errors import ConfigError
from musclelab.strategies.base import STRATEGIES, Strategy, StageContext


def build_memory(datasets: list[Any], per_site: int, seed: int) -> dict[str, Any]:
    """``per_site`` random items of each dataset (3D patches are drawn with a seeded torch stream), collated."""
    items = []
    for j, ds in enumerate(datasets):
        rng = np.random.default_rng([int(seed), j])
        n = len(ds)
        idx = rng.choice(n, size=min(int(per_site), n), replace=False)
        with torch.random.fork_rng():
            torch.manual_seed(int(seed) * 1000 + j)
            items += [ds[int(i)] for i in sorted(idx)]
    return default_collate(items)


class ReplayMixer:
    """Appends memory items to a training batch (``batch["replayed"]`` marks them)."""

    def __init__(self, memory: dict[str, Any], fraction: float, seed: int) -> None:
        self.memory, self.fraction, self.seed = memory, float(fraction), int(seed)
        self.size = len(memory["image"])

    def n_memory(self, batch_size: int) -> int:
        return int(round(batch_size * self.fraction / (1.0 - self.fraction)))

    def __call__(self, batch: dict[str, Any], step: int, rank: int = 0) -> dict[str, Any]:
        b = int(batch["image"].shape[0])
        k = self.n_memory(b)
        if k == 0 or self.size == 0:
            return batch
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + rank * 7919 + int(step))
        pick = torch.randint(self.size, (k,), generator=g)
        out = dict(batch)
        for key, value in batch.items():
            mem = self.memory.get(key)
            if mem is None:
                continue
            if torch.is_tensor(value):
                out[key] = torch.cat([value, mem[pick].to(value.device, value.dtype)])
            elif isinstance(value, list):
                out[key] = [*value, *[mem[int(i)] for i in pick]]
        out["replayed"] = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(k, dtype=torch.bool)]).to(
            batch["image"].device)
        return out


@STRATEGIES.register("replay")
class Replay(Strategy):
    name = "replay"

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        s = ctx.settings
        fraction = float(s.get("fraction", 0.25))
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"study.replay.fraction must be in [0, 1), got {fraction}")
        t0 = time.perf_counter()
        datasets = [ctx.site_datamodule(j).datasets["train"] for j in range(len(ctx.earlier))]
        memory = build_memory(datasets, int(s.get("per_site", 32)), int(s.get("seed", 0)))
        task.batch_mixers.append(ReplayMixer(memory, fraction, int(s.get("seed", 0))))
        return time.perf_counter() - t0
