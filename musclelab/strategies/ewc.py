"""``ewc``: elastic weight consolidation (Kirkpatrick et al. 2017, PNAS 114:3521): after each stage the diagonal
(empirical) Fisher information of its best weights on its own training data, ``F = mean over fisher_batches of
(d loss / d theta)^2`` (the batch-gradient estimate Avalanche's EWCPlugin uses; network in eval mode, no
augmentation), cached in that stage's directory (``ewc_fisher-<key>.pt``); later stages add
``lambda/2 * sum_j sum F_j (theta - theta_j*)^2`` over the earlier stages ``j``. Online EWC (Schwarz et al. 2018):
one penalty with ``F = sum_j gamma^(i-1-j) F_j`` anchored at the previous stage's weights."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from musclelab.io import atomic_torch_save, atomic_write_json, file_lock
from musclelab.strategies.base import STRATEGIES, Strategy, StageContext


def diagonal_fisher(net: torch.nn.Module, loss_fn: Any, loader: Any, n_batches: int) -> dict[str, torch.Tensor]:
    """Mean squared loss gradient per parameter over the first ``n_batches`` batches of ``loader``."""
    net.eval()
    fisher = {n: torch.zeros_like(p) for n, p in net.named_parameters() if p.requires_grad}
    seen = 0
    for batch in loader:
        if seen >= n_batches:
            break
        net.zero_grad()
        loss_fn(net(batch["image"]), batch["label"]).backward()
        for n, p in net.named_parameters():
            if p.grad is not None and n in fisher:
                fisher[n] += p.grad.detach() ** 2
        seen += 1
    net.zero_grad()
    return {n: f / max(seen, 1) for n, f in fisher.items()}


def stage_fisher(ctx: StageContext, j: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """(Fisher, anchor weights, seconds spent computing it in this call) of earlier stage ``j``, cached in its
    directory: a Fisher read from the cache (computed by an earlier stage or another ordering or strategy run that
    shares stage ``j``) costs 0 here; its cost was counted once, by the stage that computed it."""
    from musclelab.evaluation.tester import load_for_test

    run_dir = Path(ctx.earlier[j]["run_dir"])
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    n_batches = int(ctx.settings.get("fisher_batches", 8))
    key = hashlib.sha256(json.dumps({"data": ctx.earlier[j]["data"], "n": n_batches, "size": ckpt.stat().st_size,
                                     "batch": int(ctx.cfg.data.batch_size)}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    path, meta = run_dir / f"ewc_fisher-{key}.pt", run_dir / f"ewc_fisher-{key}.json"
    model = load_for_test(ckpt, ctx.spatial_dims)
    anchor = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    seconds = 0.0
    with file_lock(run_dir.with_name(run_dir.name + ".fisher.lock"), what=f"Fisher of {run_dir.name}"):
        if not path.exists():
            t0 = time.perf_counter()
            dm = ctx.site_datamodule(j)
            with torch.random.fork_rng():
                torch.manual_seed(int(ctx.cfg.seed))
                loader = torch.utils.data.DataLoader(dm.datasets["train"], batch_size=int(ctx.cfg.data.batch_size),
                                                     shuffle=False)
                fisher = diagonal_fisher(model.net, model.loss_fn, loader, n_batches)
            atomic_torch_save(fisher, path)
            seconds = time.perf_counter() - t0
            atomic_write_json(meta, {"seconds": seconds, "fisher_batches": n_batches})
    fisher = torch.load(path, map_location="cpu", weights_only=True)
    return fisher, anchor, seconds


class EWCPenalty:
    """``lambda/2 * sum_k sum F_k (theta - theta_k*)^2`` over the task's network parameters."""

    name = "ewc"

    def __init__(self, terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]], lam: float) -> None:
        self.terms, self.lam = terms, float(lam)

    def __call__(self, task: Any, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        return self.penalty(task.net)

    def penalty(self, net: torch.nn.Module) -> torch.Tensor:
        total = None
        params = dict(net.named_parameters())
        for fisher, anchor in self.terms:
            for n, f in fisher.items():
                p = params[n]
                f, a = f.to(p.device), anchor[n].to(p.device)
                t = (f * (p - a) ** 2).sum()
                total = t if total is None else total + t
        return 0.5 * self.lam * (total if total is not None else torch.zeros(()))


@STRATEGIES.register("ewc")
class EWC(Strategy):
    name = "ewc"

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        s = ctx.settings
        per_stage = [stage_fisher(ctx, j) for j in range(len(ctx.earlier))]
        if s.get("online"):
            gamma, last = float(s.get("gamma", 1.0)), len(per_stage) - 1
            fisher = {n: sum(gamma ** (last - j) * fs[0][n] for j, fs in enumerate(per_stage))
                      for n in per_stage[-1][0]}
            terms = [(fisher, per_stage[-1][1])]
        else:
            terms = [(f, a) for f, a, _ in per_stage]
        task.stage_terms.append(EWCPenalty(terms, float(s.get("lambda", 1000.0))))
        # the Fishers this stage computed count as its cost; the reused ones were counted where they were computed
        ctx.notes["fisher_computed"] = [ctx.earlier[j]["dataset"] for j, fs in enumerate(per_stage) if fs[2] > 0]
        ctx.notes["fisher_reused"] = [ctx.earlier[j]["dataset"] for j, fs in enumerate(per_stage) if fs[2] == 0]
        return float(sum(fs[2] for fs in per_stage))
