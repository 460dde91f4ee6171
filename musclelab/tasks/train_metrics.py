"""A cheap per-step training Dice: the training loop's share of work that is not the network.

``torchmetrics.segmentation.DiceScore`` one-hot encodes every batch (``(B, C, H, W)`` tensors per update), and
calling the metric (``forward``) computes a batch value besides updating the epoch state: together about 10 %
of a default UNet training step on a CPU (``benchmarks/bench_train_step.py``). The epoch's Dice needs only the
global confusion matrix, which torchmetrics accumulates with one ``bincount`` per batch; Dice per class is
``2 TP / (2 TP + FP + FN)`` of that matrix — the same global Dice the DiceScore gave.
"""
from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class EpochDice(MulticlassConfusionMatrix):
    """Global (over the epoch, synced across DDP ranks) Dice of label maps, averaged over the foreground classes
    present in the prediction or the reference. ``update(pred, target)`` takes integer maps of any equal shape."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes=num_classes, validate_args=False)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        super().update(preds.reshape(-1), target.reshape(-1))

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        cm = super().compute().double()
        tp = cm.diagonal()[1:]
        denom = cm.sum(0)[1:] + cm.sum(1)[1:]  # 2 TP + FP + FN
        present = denom > 0
        if not present.any():
            return torch.tensor(float("nan"))
        return (2 * tp[present] / denom[present]).mean().float()
