"""Batched augmentation on the device (data/augment.py): one grid per batch, MONAI's conventions and distributions,
air padding, its own resumable random stream, and only in training steps."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musclelab.data.augment import AugmentSettings, BatchAugment, air_value, build_augmentation

OFF = dict(flip_prob=0.0, affine_prob=0.0)


def _smooth(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((shape[0], shape[1], *[max(2, n // 4) for n in shape[2:]]), generator=g)
    mode = "bilinear" if len(shape) == 4 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape[2:], mode=mode, align_corners=True)


def test_flip_and_rot90_are_exact_and_untouched_items_bit_identical():
    x, y = _smooth((3, 1, 8, 10)), torch.randint(0, 5, (3, 8, 10))
    xi, yi = BatchAugment(2, AugmentSettings(flip_prob=1.0, affine_prob=0.0))(x, y)
    torch.testing.assert_close(xi, x.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(yi, y.flip(-1))
    x3, y3 = _smooth((4, 1, 4, 6, 6)), torch.randint(0, 30, (4, 4, 6, 6))
    aug = BatchAugment(3, AugmentSettings(flip_prob=0.0, affine_prob=0.0, rot90_prob=1.0))
    xi, yi = aug(x3, y3)
    for b in range(4):
        assert any(torch.equal(yi[b], torch.rot90(y3[b], k, dims=(1, 2))) for k in (1, 2, 3))
    xi, yi = BatchAugment(2, AugmentSettings(**OFF, elastic_prob=1e-9))(x, y)   # drawn off: returned as given
    assert torch.equal(xi, x) and torch.equal(yi, y)


@pytest.mark.parametrize("nd", [2, 3])
def test_affine_follows_monai(nd):
    """One item through our grid and through MONAI's Affine with the same rotation, shear and zoom: same maps."""
    from monai.transforms import Affine

    shape = (1, 1, *((40, 40) if nd == 2 else (24, 24, 24)))
    x = _smooth(shape, 1)
    y = (x[:, 0] > 0.5).long()
    aug = BatchAugment(nd, AugmentSettings(flip_prob=0.0, affine_prob=1.0, rotate_deg=30, scale=0.2, shear_deg=10))
    p = aug.draw(1, shape[2:])
    p["flip"][:] = False
    angles, zoom, shear = p["angles"][0].tolist(), p["zoom"][0].tolist(), p["shear"][0].tolist()

    xi, yi = aug._resample(x, y, p, torch.ones(1, dtype=torch.bool))
    ref = dict(rotate_params=angles, scale_params=zoom, shear_params=shear, padding_mode="zeros", image_only=True)
    x_ref = Affine(**ref, mode="bilinear")(x[0])
    y_ref = Affine(**ref, mode="nearest")(y[0:1].float())[0]
    inner = tuple(slice(4, -4) for _ in range(nd))
    assert float((xi[0, 0][inner] - torch.as_tensor(x_ref[0])[inner]).abs().mean()) < 0.01
    assert float((yi[0][inner] == torch.as_tensor(y_ref)[inner].long()).float().mean()) > 0.97


def test_parameters_follow_the_configured_distributions():
    s = AugmentSettings(flip_prob=0.3, affine_prob=0.6, rotate_deg=15, scale=0.1, shear_deg=22.5)
    p = BatchAugment(2, s, seed=1).draw(4000, (16, 16))
    assert abs(float(p["flip"].double().mean()) - 0.3) < 0.03
    assert abs(float(p["affine"].double().mean()) - 0.6) < 0.03
    assert float(p["angles"].abs().max()) <= math.radians(15) and float(p["angles"].abs().max()) > math.radians(14)
    assert 0.9 <= float(p["zoom"].min()) and float(p["zoom"].max()) <= 1.1
    assert float(p["shear"].abs().max()) <= math.tan(math.radians(22.5)) + 1e-9
    assert abs(float(p["zoom"][:, 0].mean()) - 1.0) < 0.01   # each axis zoomed independently, centred on 1


def test_images_pad_with_air_labels_with_background():
    pad = air_value("abdomen", 3)
    assert pad == pytest.approx([(0 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))],
                                abs=1e-5)
    assert air_value("thigh", 1) == [0.0]
    aug = BatchAugment(2, AugmentSettings(flip_prob=0.0, affine_prob=1.0, rotate_deg=45, scale=0.0), pad)
    x = torch.full((2, 3, 32, 32), 5.0)
    y = torch.ones(2, 32, 32, dtype=torch.long)
    p = aug.draw(2, (32, 32))
    p["angles"][:] = math.radians(45)
    xi, yi = aug._resample(x, y, p, torch.ones(2, dtype=torch.bool))
    torch.testing.assert_close(xi[:, :, 0, 0], torch.tensor([pad, pad]), atol=1e-5, rtol=0)
    assert int(yi[0, 0, 0]) == 0 and int(yi[0, 16, 16]) == 1
    assert torch.allclose(xi[:, :, 16, 16], torch.tensor(5.0))


def test_elastic_moves_pixels_by_about_the_magnitude():
    aug = build_augmentation(2, dict(**OFF, elastic_prob=1.0, elastic_spacing=8, elastic_magnitude=3.0))
    x = torch.linspace(0, 63, 64).repeat(4, 1, 64, 1)   # value = column index
    xi, _ = aug(x, torch.zeros(4, 64, 64, dtype=torch.long))
    shift = (xi - x)[:, :, 8:-8, 8:-8].abs()
    assert 0.05 < float(shift.mean()) < 3.0


def test_same_seed_same_batch_and_state_restores_the_stream():
    params = dict(flip_prob=0.5, affine_prob=0.5, rotate_deg=15, scale=0.1, elastic_prob=0.5, elastic_magnitude=2)
    x, y = _smooth((4, 1, 24, 24)), torch.randint(0, 2, (4, 24, 24))
    a, b = build_augmentation(2, params, seed=3), build_augmentation(2, params, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a(x, y), b(x, y)))
    state = a.state_dict()
    first = a(x, y)
    a.load_state_dict(state)
    assert all(torch.equal(u, v) for u, v in zip(first, a(x, y)))
    assert not torch.equal(first[0], a(x, y)[0])
    assert build_augmentation(2, dict(flip_prob=0.0, affine_prob=0.0, elastic_prob=0.0)) is None
    with pytest.raises(ValueError, match="data.augment.flip: unknown key"):
        build_augmentation(2, dict(flip=0.5))


def test_task_augments_training_batches_only():
    from musclelab.tasks import SegmentationTask

    task = SegmentationTask(model="unet", model_params=dict(channels=[4, 8], strides=[2], num_res_units=0),
                            in_channels=1, class_names=["background", "muscle"], img_size=16,
                            augment=dict(flip_prob=1.0, affine_prob=0.0), meta={"window": "abdomen"})
    batch = {"image": _smooth((2, 1, 16, 16)), "label": torch.randint(0, 2, (2, 16, 16))}
    task._trainer = SimpleNamespace(training=False)
    out = task.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(out["image"], batch["image"])
    task._trainer = SimpleNamespace(training=True)
    out = task.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(out["label"], batch["label"].flip(-1))
    task._trainer = None
