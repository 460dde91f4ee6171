"""The epoch Dice of training and validation from three per-class counts, at the cost of a few passes over the voxels.

Why our own metric: torchmetrics' ``DiceScore(input_format="index")`` one-hot encodes both maps (voxels × classes
of memory and work per update), and its ``MulticlassConfusionMatrix`` counts ``num_classes²`` bins with
``torchmetrics.utilities.data._bincount``, which under ``torch.use_deterministic_algorithms(True)`` (every CPU
preset) falls back to comparing each voxel with every bin (``repeat``/``eq``/``sum``: voxels × classes²). With 30
classes that was 0.54 s of a 0.65 s 3D training step (issue 16). The global Dice per class needs only

    TP_c = #(pred == target == c),   P_c = #(pred == c),   T_c = #(target == c),   Dice_c = 2 TP_c / (P_c + T_c)

which ``torch.bincount`` gives in three passes (voxels, independent of the class count). ``torch.bincount`` without
weights is deterministic on the CPU and on CUDA (integer counts; PyTorch only flags the weighted CUDA kernel), so it
is used directly. The numbers are the ones DiceScore (``average="none"``, ``aggregation_level="global"``,
``include_background=False``) gave: NaN for a class absent from both maps (tested against torchmetrics).
"""
from __future__ import annotations

import torch
from torchmetrics import Metric


def class_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(3, num_classes)`` int64 counts of label maps of any equal shape: TP, predicted and reference voxels."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    hit = target[pred == target]
    return torch.stack([torch.bincount(hit, minlength=num_classes)[:num_classes],
                        torch.bincount(pred, minlength=num_classes)[:num_classes],
                        torch.bincount(target, minlength=num_classes)[:num_classes]])


class EpochDice(Metric):
    """Global (over the epoch, summed across DDP ranks) Dice of integer label maps.

    ``update(pred, target)`` takes maps of any equal shape (2D slices or 3D volumes); :meth:`per_class` is the
    foreground Dice per class (NaN where a class is in neither map, as torchmetrics' DiceScore); :meth:`compute`
    (synced across ranks) is their mean over the classes present in the prediction or the reference (the logged
    ``train/dice``), or with ``per_class=True`` the per-class values themselves (validation)."""

    full_state_update = False

    def __init__(self, num_classes: int, per_class: bool = False) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.return_per_class = bool(per_class)
        self.add_state("counts", torch.zeros(3, self.num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        self.counts += class_counts(preds, target, self.num_classes)

    def per_class(self) -> torch.Tensor:
        """Dice of each foreground class (float32, NaN for a class in neither map)."""
        tp, pred, ref = self.counts[:, 1:].double()
        denom = pred + ref
        dice = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(denom, float("nan")))
        return dice.float()

    def compute(self) -> torch.Tensor:  # type: ignore[override]
        dice = self.per_class()
        if self.return_per_class:
            return dice
        present = ~dice.isnan()
        return dice[present].mean() if present.any() else torch.tensor(float("nan"))
