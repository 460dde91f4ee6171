"""HU windowing presets from the papers, chosen by name (``data.window``): MONAI's ``ScaleIntensityRange`` map.

A preset maps Hounsfield units to network input values: clip to [hu_min, hu_max], scale to [0, 1] and
optionally apply a gamma. ``channels=3`` repeats the result over three channels and applies the ImageNet
mean/std, which is what ImageNet- or COCO-pretrained backbones expect.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from musclelab.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Window:
    """Clip [hu_min, hu_max] HU, scale to [0, 1], then raise to ``gamma`` (1 = linear)."""

    hu_min: float
    hu_max: float
    gamma: float = 1.0

    @property
    def width(self) -> float:
        return self.hu_max - self.hu_min

    @property
    def level(self) -> float:
        return (self.hu_max + self.hu_min) / 2


WINDOWS: Registry[Window] = Registry("window", "data.window")
WINDOWS.register("abdomen")(Window(-175.0, 250.0))  # Yoon 2024: clip [-175, 250] HU -> [0, 1]
WINDOWS.register("wl400_50")(Window(-150.0, 250.0))  # McSweeney 2022: window 400 / level 50
WINDOWS.register("thigh")(Window(-57.0, 164.0, gamma=2.0))  # Kim 2024: clip [-57, 164], gamma 2


def apply_window(hu: np.ndarray, window: str | Window, channels: int = 1) -> np.ndarray:
    """Window HU images ``(N, H, W)`` (or volumes ``(N, D, H, W)``) into float32 network inputs
    ``(N, channels, ...)``. The map is fixed: a HU value gives the same number on every slice and volume
    (``thigh``: ``((clip(HU, -57, 164) + 57) / 221) ** 2``).

    ``channels`` is 1 (plain [0, 1]) or 3 (repeated, ImageNet-normalised).
    """
    win = WINDOWS.get(window) if isinstance(window, str) else window
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3 (3 = repeated with ImageNet normalisation), got {channels}")
    hu = np.asarray(hu, dtype=np.float32)  # also copies int16 / read-only memory-mapped caches
    # MONAI's ScaleIntensityRange(hu_min, hu_max, 0, 1, clip=True) in plain NumPy (the same float32 numbers,
    # tested): a MetaTensor round trip per item cost more than the arithmetic
    lo, width = np.float32(win.hu_min), np.float32(win.hu_max) - np.float32(win.hu_min)
    scaled = np.clip((hu - lo) / width, np.float32(0.0), np.float32(1.0)).astype(np.float32, copy=False)
    if win.gamma != 1.0:  # a fixed map (not MONAI's AdjustContrast, which rescales by each image's min/max)
        scaled = np.power(scaled, np.float32(win.gamma), dtype=np.float32)
    out = scaled[:, None]
    if channels == 3:
        tail = (None,) * (out.ndim - 2)
        mean = np.asarray(IMAGENET_MEAN, np.float32)[(None, slice(None), *tail)]
        std = np.asarray(IMAGENET_STD, np.float32)[(None, slice(None), *tail)]
        out = (np.repeat(out, 3, axis=1) - mean) / std
    return np.ascontiguousarray(out, dtype=np.float32)


def display_image(x: np.ndarray) -> np.ndarray:
    """Undo ImageNet normalisation of a ``(C, H, W)`` network input for display; returns ``(H, W)`` in [0, 1]."""
    if x.shape[0] == 3:
        x = x * np.asarray(IMAGENET_STD)[:, None, None] + np.asarray(IMAGENET_MEAN)[:, None, None]
    return np.clip(x[0], 0.0, 1.0)
