"""Segmentation losses chosen by name (config group ``loss``): ``ce``, ``dice``, ``ce_dice``, ``bce_dice``,
``kawamoto`` (sigmoid BCE + Dice for one target, softmax CE + Dice for a target with partners).

All losses take logits ``(B, C, H, W)`` and an integer label map ``(B, H, W)`` so the task never needs to
know how a loss wants its target. MONAI supplies the Dice and Dice+CE terms; we only wrap them to
(1) convert label maps into the target layout each term expects and (2) record which output activation a loss
implies (``softmax`` over C classes, or ``sigmoid`` with a single channel for binary problems), because the
number of model output channels and the prediction rule follow from it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from musclelab.registry import Registry


class SegLoss(nn.Module):
    """Base class: ``activation`` is ``softmax`` or ``sigmoid``; ``num_classes`` counts background."""

    activation = "softmax"

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2 (background + at least one class), got {num_classes}")
        self.num_classes = num_classes

    @property
    def out_channels(self) -> int:
        """Model output channels this loss expects: 1 for binary sigmoid losses, else one per class."""
        if self.activation == "sigmoid" and self.num_classes == 2:
            return 1
        return self.num_classes

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.shape[1] != self.out_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.out_channels} output channels, model gave {logits.shape[1]}"
            )
        if target.dim() != logits.dim() - 1:
            raise ValueError(f"target must be a label map (B, H, W), got shape {tuple(target.shape)}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


LOSSES: Registry[type[SegLoss]] = Registry("loss", "loss.name", plural="losses")


@LOSSES.register("ce")
class CrossEntropy(SegLoss):
    """Pixel-wise cross-entropy over softmax outputs; ``class_weights`` optionally re-weights classes."""

    def __init__(self, num_classes: int, class_weights: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__(num_classes)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        if weight is not None and len(weight) != num_classes:
            raise ValueError(f"loss.class_weights has {len(weight)} entries but data.num_classes is {num_classes}")
        self.ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        return self.ce(logits, target.long())


@LOSSES.register("dice")
class Dice(SegLoss):
    """Soft Dice (MONAI ``DiceLoss``) over softmax outputs, foreground classes only by default."""

    def __init__(self, num_classes: int, include_background: bool = False, smooth: float = 1e-5, batch: bool = True):
        super().__init__(num_classes)
        self.dice = DiceLoss(
            include_background=include_background, to_onehot_y=True, softmax=True,
            smooth_nr=smooth, smooth_dr=smooth, batch=batch,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        return self.dice(logits, target.unsqueeze(1))


@LOSSES.register("ce_dice")
class CrossEntropyDice(SegLoss):
    """``lambda_ce * CE + lambda_dice * Dice`` (MONAI ``DiceCELoss``); the preset is 0.5 CE + 1.0 Dice."""

    def __init__(
        self, num_classes: int, lambda_ce: float = 0.5, lambda_dice: float = 1.0,
        include_background: bool = False, smooth: float = 1e-5, batch: bool = True,
    ):
        super().__init__(num_classes)
        self.loss = DiceCELoss(
            include_background=include_background, to_onehot_y=True, softmax=True, lambda_ce=lambda_ce,
            lambda_dice=lambda_dice, smooth_nr=smooth, smooth_dr=smooth, batch=batch,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        return self.loss(logits, target.unsqueeze(1))


@LOSSES.register("bce_dice")
class BinaryCrossEntropyDice(SegLoss):
    """``lambda_bce * BCE + lambda_dice * Dice`` on sigmoid outputs.

    Binary problems use one output channel (the McSweeney setup); with more classes every class gets its
    own sigmoid channel against a one-hot target (multi-label style) and prediction is the arg-max.
    """

    activation = "sigmoid"

    def __init__(self, num_classes: int, lambda_bce: float = 1.0, lambda_dice: float = 1.0,
                 smooth: float = 1e-5, batch: bool = True):
        super().__init__(num_classes)
        self.lambda_bce = lambda_bce
        self.lambda_dice = lambda_dice
        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        if self.out_channels == 1:
            onehot = (target > 0).unsqueeze(1).to(logits.dtype)
        else:
            onehot = F.one_hot(target.long(), self.num_classes).movedim(-1, 1).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, onehot)
        return self.lambda_bce * bce + self.lambda_dice * self.dice(logits, onehot)


@LOSSES.register("kawamoto")
class KawamotoLoss(SegLoss):
    """Kawamoto et al. 2024's two training modes, chosen by the number of classes (see ``data.labels``).

    * one target (wo/ESM, 2 classes): one output channel with a sigmoid, ``lambda_ce * BCE + lambda_dice *
      Dice`` (their eqs. 7-9);
    * target + partner (w/ESM or any pair, >= 3 classes): softmax over the classes, ``lambda_ce * CE +
      lambda_dice * Dice`` (their eqs. 1-3).

    Both use 0.5 / 1.0 weights and ``smooth = 1`` in the Dice numerator and denominator, pooled over the batch.
    The Dice term is MONAI's over the foreground classes: their eq. 2 literally also sums the background class,
    which with softmax makes the denominator ``2N`` and the term close to pixel accuracy.
    """

    def __init__(self, num_classes: int, lambda_ce: float = 0.5, lambda_dice: float = 1.0, smooth: float = 1.0,
                 batch: bool = True) -> None:
        super().__init__(num_classes)
        self.inner: SegLoss
        if num_classes == 2:
            self.activation = "sigmoid"
            self.inner = BinaryCrossEntropyDice(2, lambda_bce=lambda_ce, lambda_dice=lambda_dice, smooth=smooth,
                                                batch=batch)
        else:
            self.inner = CrossEntropyDice(num_classes, lambda_ce=lambda_ce, lambda_dice=lambda_dice,
                                          include_background=False, smooth=smooth, batch=batch)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits, target)


def build_loss(name: str, num_classes: int, **kwargs: Any) -> SegLoss:
    """Build the loss called ``name`` for ``num_classes`` classes (background included)."""
    cls = LOSSES.get(name)
    try:
        return cls(num_classes, **kwargs)
    except TypeError as err:
        raise TypeError(f"loss '{name}': bad parameter in config group `loss` ({err})") from err


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Predicted label map ``(B, H, W)``: sigmoid > 0.5 for one channel, else arg-max over channels."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def logits_to_probs(logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities ``(B, C, H, W)`` with C >= 2 (a binary sigmoid output is expanded)."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)
