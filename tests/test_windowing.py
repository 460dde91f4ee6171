"""HU windows are fixed maps: the same HU gives the same value on every slice and volume."""
from __future__ import annotations

import numpy as np
import pytest

from musclelab.data.windowing import WINDOWS, apply_window


def test_thigh_gamma_window_is_a_fixed_map():
    # a slice with nothing above 164 HU used to be rescaled by its own min/max (100 HU -> 0.630)
    low = np.array([[[-57.0, 0.0, 100.0, 120.0]]], np.float32)
    full = np.array([[[-1000.0, 100.0, 164.0, 1000.0]]], np.float32)
    a, b = apply_window(low, "thigh"), apply_window(full, "thigh")
    assert a[0, 0, 0, 2] == pytest.approx(((100 + 57) / 221) ** 2, abs=1e-6)   # 0.505
    assert b[0, 0, 0, 1] == pytest.approx(a[0, 0, 0, 2])
    np.testing.assert_allclose(b[0, 0, 0], [0.0, ((157) / 221) ** 2, 1.0, 1.0], atol=1e-6)
    assert a[0, 0, 0, 0] == 0.0


def test_linear_windows_and_volumes():
    hu = np.linspace(-300, 400, 2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)   # (N, D, H, W)
    out = apply_window(hu, "abdomen")
    assert out.shape == (2, 1, 3, 4, 5)
    w = WINDOWS.get("abdomen")
    np.testing.assert_allclose(out[:, 0], np.clip((hu - w.hu_min) / w.width, 0, 1), atol=1e-6)
    assert apply_window(hu, "abdomen", channels=3).shape == (2, 3, 3, 4, 5)


def test_window_is_monais_scale_intensity_range_to_the_bit():
    from monai.transforms import ScaleIntensityRange

    from musclelab.data.windowing import WINDOWS

    hu = np.random.default_rng(0).integers(-1100, 1500, (2, 17, 19)).astype(np.int16)
    for name in ("abdomen", "wl400_50", "thigh"):
        w = WINDOWS.get(name)
        ref = np.asarray(ScaleIntensityRange(w.hu_min, w.hu_max, 0.0, 1.0, clip=True, dtype=np.float32)(
            hu.astype(np.float32)), np.float32)
        if w.gamma != 1.0:
            ref = np.power(ref, np.float32(w.gamma), dtype=np.float32)
        assert np.array_equal(apply_window(hu, name)[:, 0], ref), name
