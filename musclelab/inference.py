"""Sliding-window inference over whole volumes (MONAI ``sliding_window_inference``), shared by validation,
testing and ``musclelab predict``.

A 3D network is trained on patches of ``roi_size`` voxels; a whole volume is predicted by tiling it with windows of
that size that overlap by ``overlap`` (fraction of the window) and blending the window logits with a Gaussian
(``mode="gaussian"``, sigma = ``sigma_scale`` x window, which down-weights window borders) or a plain average
(``mode="constant"``). Volumes smaller than the window are padded by MONAI and cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["SlidingWindow", "sliding_window_logits", "sliding_window_labels"]

BLEND_MODES = ("gaussian", "constant")


@dataclass(frozen=True)
class SlidingWindow:
    """Settings of one sliding-window pass (``eval.sliding_window`` in config; ``roi_size`` = ``data.patch_size``).

    roi_size: window size in voxels (z, row, col); overlap: fraction in [0, 1) that neighbouring windows share;
    mode: ``gaussian`` or ``constant`` blending; sigma_scale: Gaussian sigma as a fraction of the window;
    sw_batch_size: windows per forward pass (memory vs speed).
    """

    roi_size: tuple[int, ...]
    overlap: float = 0.5
    mode: str = "gaussian"
    sigma_scale: float = 0.125
    sw_batch_size: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"eval.sliding_window.overlap must be in [0, 1), got {self.overlap}")
        if self.mode not in BLEND_MODES:
            raise ValueError(f"eval.sliding_window.mode must be one of {', '.join(BLEND_MODES)}, got '{self.mode}'")
        if any(int(s) < 1 for s in self.roi_size):
            raise ValueError(f"sliding-window roi_size must be positive voxel counts, got {self.roi_size}")
        if int(self.sw_batch_size) < 1:
            raise ValueError(f"eval.sliding_window.sw_batch_size must be >= 1, got {self.sw_batch_size}")


@torch.no_grad()
def sliding_window_logits(net: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          window: SlidingWindow) -> torch.Tensor:
    """Blended logits ``(B, C_out, *spatial)`` of ``net`` over whole images ``(B, C_in, *spatial)``.

    The result stays on the device of ``image``; windows run on the same device.
    """
    from monai.inferers import sliding_window_inference

    out = sliding_window_inference(
        image, roi_size=tuple(int(s) for s in window.roi_size), sw_batch_size=int(window.sw_batch_size),
        predictor=net, overlap=float(window.overlap), mode=window.mode, sigma_scale=float(window.sigma_scale),
        padding_mode="constant", cval=0.0, progress=False,
    )
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.as_tensor() if hasattr(out, "as_tensor") else out


def sliding_window_labels(net: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                          window: SlidingWindow) -> torch.Tensor:
    """Predicted label maps ``(B, *spatial)`` (sigmoid > 0.5 for one output channel, else arg-max)."""
    from musclelab.losses import logits_to_labels

    return logits_to_labels(sliding_window_logits(net, image, window))


def window_from_config(roi_size: Sequence[int], params: dict | None) -> SlidingWindow:
    """A :class:`SlidingWindow` from ``data.patch_size`` and the ``eval.sliding_window`` section."""
    return SlidingWindow(roi_size=tuple(int(s) for s in roi_size), **(params or {}))
