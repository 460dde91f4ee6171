"""The epoch Dice of training and validation (tasks/train_metrics.py) against torchmetrics, the path it replaced."""
from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.segmentation import DiceScore

from musclelab.tasks.train_metrics import EpochDice, class_counts


def _batches(num_classes: int, shape: tuple[int, ...], n: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        target = torch.randint(0, num_classes, shape, generator=g)
        # predictions agree with the reference on about half of the voxels
        pred = torch.where(torch.rand(shape, generator=g) < 0.5, target,
                           torch.randint(0, num_classes, shape, generator=g))
        out.append((pred, target))
    return out


def _old_train_dice(batches, num_classes: int) -> float:
    """The previous EpochDice: torchmetrics' confusion matrix, Dice averaged over the present foreground classes."""
    cm = MulticlassConfusionMatrix(num_classes=num_classes, validate_args=False)
    for pred, target in batches:
        cm.update(pred.reshape(-1), target.reshape(-1))
    m = cm.compute().double()
    denom = m.sum(0)[1:] + m.sum(1)[1:]
    present = denom > 0
    return float((2 * m.diagonal()[1:][present] / denom[present]).mean())


CASES = [(2, (4, 32, 32)), (30, (4, 32, 32)), (2, (2, 12, 16, 16)), (30, (2, 12, 16, 16))]


@pytest.mark.parametrize("num_classes,shape", CASES)
def test_epoch_dice_matches_torchmetrics(num_classes, shape):
    batches = _batches(num_classes, shape)
    val = DiceScore(num_classes=num_classes, include_background=False, average="none",
                    aggregation_level="global", input_format="index")
    new_val, new_train = EpochDice(num_classes, per_class=True), EpochDice(num_classes)
    for pred, target in batches:
        val.update(pred, target)
        new_val.update(pred, target)
        new_train.update(pred, target)
    ref = val.compute().reshape(-1)
    got = new_val.compute().reshape(-1)  # torchmetrics squeezes one-element results
    assert got.shape == ref.shape == (num_classes - 1,)
    torch.testing.assert_close(got, ref.float(), rtol=0, atol=1e-6)
    assert abs(float(new_train.compute()) - _old_train_dice(batches, num_classes)) < 1e-6


def test_absent_classes_are_nan_per_class_and_left_out_of_the_mean():
    pred = torch.tensor([[0, 1, 1], [0, 0, 1]])
    target = torch.tensor([[0, 1, 0], [0, 0, 1]])
    per_class = EpochDice(4, per_class=True)
    per_class.update(pred, target)
    ref = DiceScore(num_classes=4, include_background=False, average="none", aggregation_level="global",
                    input_format="index")
    ref.update(pred[None], target[None])
    torch.testing.assert_close(per_class.compute().reshape(-1), ref.compute().reshape(-1).float(), equal_nan=True)
    assert per_class.compute()[1:].isnan().all()
    mean = EpochDice(4)
    mean.update(pred, target)
    assert float(mean.compute()) == pytest.approx(0.8)   # class 1: 2*2 / (3 + 2)
    assert EpochDice(3).compute().isnan()                # nothing seen yet


def test_counts_are_plain_bincounts_under_deterministic_algorithms():
    pred, target = _batches(30, (2, 8, 8, 8), n=1)[0]
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        counts = class_counts(pred, target, 30)
    finally:
        torch.use_deterministic_algorithms(before)
    assert counts.dtype == torch.long and counts.shape == (3, 30)
    assert int(counts[1].sum()) == int(counts[2].sum()) == pred.numel()
    assert int(counts[0, 7]) == int(((pred == 7) & (target == 7)).sum())
