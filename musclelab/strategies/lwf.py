"""``lwf``: learning without forgetting (Li & Hoiem 2017, TPAMI 40:2935): the parent stage's best checkpoint,
frozen, is the teacher; on the new site's (augmented) training images the new stage adds
``alpha * KL(p_T || q_T)`` per pixel, ``p_T``/``q_T`` the teacher's / student's predictions softened by
``temperature`` (softmax over classes; a sigmoid output: Bernoulli per pixel). KL has the gradient of Li &
Hoiem's cross-entropy with soft targets and is zero when the student equals the teacher."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from musclelab.strategies.base import STRATEGIES, Strategy, StageContext


def soft_targets(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softened predictions: softmax over channels (sigmoid for one channel)."""
    z = logits / float(temperature)
    return torch.sigmoid(z) if z.shape[1] == 1 else F.softmax(z, dim=1)


def distillation(student: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean per-pixel KL(target || softened student)."""
    z = student / float(temperature)
    eps = 1e-7
    if z.shape[1] == 1:
        q = torch.sigmoid(z).clamp(eps, 1 - eps)
        p = target.clamp(eps, 1 - eps)
        return (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean()
    logq = F.log_softmax(z, dim=1)
    return (target * (target.clamp_min(eps).log() - logq)).sum(1).mean()


class LwFTerm:
    name = "lwf"

    def __init__(self, teacher: torch.nn.Module, alpha: float, temperature: float) -> None:
        self.teacher, self.alpha, self.temperature = teacher.eval(), float(alpha), float(temperature)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def target(self, image: torch.Tensor) -> torch.Tensor:
        """The teacher's softened prediction of ``image``."""
        self.teacher.to(image.device).eval()
        return soft_targets(self.teacher(image), self.temperature)

    def __call__(self, task: Any, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        return self.alpha * distillation(logits, self.target(batch["image"]), self.temperature)


@STRATEGIES.register("lwf")
class LwF(Strategy):
    name = "lwf"

    def attach(self, ctx: StageContext, task: Any, dm: Any) -> float:
        from musclelab.evaluation.tester import load_for_test

        parent = Path(ctx.earlier[-1]["run_dir"]) / "checkpoints" / "best.ckpt"
        teacher = load_for_test(parent, ctx.spatial_dims).net
        s = ctx.settings
        task.stage_terms.append(LwFTerm(teacher, s.get("alpha", 1.0), s.get("temperature", 2.0)))
        return 0.0
