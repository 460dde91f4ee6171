"""Kawamoto et al. 2024's two training modes (loss=kawamoto) against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from musclelab.losses import build_loss, logits_to_labels


def test_wo_esm_is_one_sigmoid_output_with_half_bce_plus_dice() -> None:
    loss = build_loss("kawamoto", 2)
    assert loss.activation == "sigmoid" and loss.out_channels == 1
    # 2 pixels, target [1, 0]; logits [0, ln 3] -> probabilities [0.5, 0.75]
    logits = torch.tensor([[[[0.0, math.log(3.0)]]]])
    target = torch.tensor([[[1, 0]]])
    bce = (-math.log(0.5) - math.log(0.25)) / 2
    dice = 1 - (2 * 0.5 + 1) / (1 + 1.25 + 1)          # smooth = 1 in numerator and denominator
    assert loss(logits, target).item() == pytest.approx(0.5 * bce + dice, rel=1e-6)
    assert logits_to_labels(logits).tolist() == [[[0, 1]]]


def test_w_esm_is_softmax_over_three_classes_with_half_ce_plus_dice() -> None:
    loss = build_loss("kawamoto", 3)
    assert loss.activation == "softmax" and loss.out_channels == 3
    # 2 pixels: target [1 (target muscle), 2 (ESM)]; equal logits except pixel 0 favours class 1 by ln 2
    logits = torch.zeros(1, 3, 1, 2)
    logits[0, 1, 0, 0] = math.log(2.0)                  # pixel 0: p = [1/4, 1/2, 1/4]; pixel 1: p = 1/3 each
    target = torch.tensor([[[1, 2]]])
    ce = (-math.log(0.5) - math.log(1 / 3)) / 2
    # foreground Dice per class, pooled over pixels, smooth 1, averaged over classes 1 and 2
    d1 = (2 * 0.5 + 1) / (1 + (0.5 + 1 / 3) + 1)
    d2 = (2 * (1 / 3) + 1) / (1 + (0.25 + 1 / 3) + 1)
    expected = 0.5 * ce + (1 - (d1 + d2) / 2)
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_weights_are_configurable_and_batch_pooled() -> None:
    loss = build_loss("kawamoto", 2, lambda_ce=0.0, lambda_dice=1.0, smooth=0.0)
    logits = torch.tensor([[[[10.0]]], [[[-10.0]]]])    # two images, one pixel each: exact predictions
    target = torch.tensor([[[1]], [[0]]])
    assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-4)
