"""Training-time augmentation as one batch operation on the device: flips, in-plane 90° rotations, rotation,
scaling, shear and elastic deformation composed into ONE sampling grid per batch (``affine_grid``-style coordinates,
``torch.nn.functional.grid_sample``): images bilinear, labels nearest, in 2D ``(B, C, H, W)`` and 3D
``(B, C, D, H, W)``; plus the 3D intensity shift.

Why our own: MONAI's ``RandFlipd``/``RandAffined``/``Rand2DElasticd`` (used here before) augment one item at a time
on the CPU in the loader, resampling once per transform, so the network waited for them (issue 16: a default 2D
epoch 1.71× a bare loop) and a GPU would idle. MONAI's ``AffineTransform`` layer and kornia batch an affine, but
neither composes flips, affine and an elastic field into one grid, and their randomness comes from the global
stream. Here every random number is drawn on the CPU from a ``torch.Generator`` this object owns (so the same seed
gives the same augmentation on any device, and the generator's state is part of the exact-resume state:
:mod:`musclelab.resume`), then the grid is built and sampled where the batch is.

The parameter distributions are MONAI's, from the same ``data.augment`` keys:

* ``flip_prob``: left-right flip (the last axis: columns) with that probability;
* ``rot90_prob`` (3D): in-plane rotation by k·90°, k uniform in {1, 2, 3} (exact for square in-plane patches);
* ``affine_prob``: with that probability, rotation uniform in ±``rotate_deg`` (3D: about each axis), zoom factor
  ``1 + U(-scale, scale)`` per axis, shear coefficients ``U(-tan(shear_deg), tan(shear_deg))`` for each axis pair
  (Kawamoto 2024: ±22.5°); the output pixel p samples the input at ``A p`` about the centre (MONAI's convention:
  A = rotate · shear · scale, rotations about axes 0, 1, 2 in turn, shears composed with determinant 1; tested
  against MONAI's ``Affine``);
* ``elastic_prob``: a displacement field of N(0, 1)·U(0, ``elastic_magnitude``) pixels on control points every
  ``elastic_spacing`` pixels, interpolated bicubically (2D) or trilinearly (3D) to every pixel (Rand2DElastic);
* ``intensity_shift`` (3D): with probability 0.5, ``U(-shift, shift)`` added to the windowed image.

The composed map of one item is ``input(F · R90 · A · (p + d(p)))``: elastic after the affine after the flip, as the
MONAI chain was. Padding: labels with background (0); images with the windowed value of air (-1000 HU):
0 for the one-channel windows (every preset clips air to its lower bound, which maps to 0), and
``-mean / std`` per channel for ImageNet-normalised 3-channel inputs (MONAI's zero padding meant mid-grey, i.e.
soft tissue, there). Items drawn to get no spatial transform are returned untouched (bit-identical).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

AIR_HU = -1000.0


def split_repeats(params: dict) -> tuple[dict, int]:
    """``(augmentation parameters, repeats)``: ``data.augment.repeats`` enlarges the training set that many
    times per epoch with differently augmented copies (Kawamoto et al. 2024: 8); 1 = each slice once."""
    params = dict(params)
    repeats = params.pop("repeats", 1)
    if repeats is None or int(repeats) != repeats or int(repeats) < 1:
        raise ValueError(f"data.augment.repeats must be an integer >= 1, got {repeats}")
    return params, int(repeats)


def air_value(window: str, channels: int) -> list[float]:
    """The network input of air (-1000 HU) per channel after ``window`` and ``channels``: the image padding."""
    from musclelab.data.windowing import apply_window

    return [float(v) for v in apply_window(np.full((1, 1, 1), AIR_HU, np.float32), window, channels)[0, :, 0, 0]]


@dataclass(frozen=True)
class AugmentSettings:
    """The ``data.augment`` keys (MONAI's distributions; see the module docstring). Unknown keys are an error."""

    flip_prob: float = 0.5
    rotate_deg: float = 15.0
    scale: float = 0.1
    affine_prob: float = 0.5
    shear_deg: float = 0.0
    elastic_prob: float = 0.0
    elastic_spacing: float = 20.0
    elastic_magnitude: float = 2.0
    rot90_prob: float = 0.0
    intensity_shift: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "AugmentSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known - {"repeats"})
        if unknown:
            raise ValueError(f"data.augment.{unknown[0]}: unknown key; known keys: {', '.join(sorted(known))}, repeats")
        return cls(**{k: float(v) for k, v in params.items() if k in known and v is not None})

    @property
    def affine_on(self) -> bool:
        return self.affine_prob > 0 and (self.rotate_deg > 0 or self.scale > 0 or self.shear_deg > 0)

    @property
    def elastic_on(self) -> bool:
        return self.elastic_prob > 0 and self.elastic_magnitude > 0

    @property
    def any_on(self) -> bool:
        return (self.flip_prob > 0 or self.rot90_prob > 0 or self.affine_on or self.elastic_on
                or self.intensity_shift > 0)


def _rotation(angles: torch.Tensor, nd: int) -> torch.Tensor:
    """``(B, nd, nd)`` rotations in array-axis order: 2D one angle; 3D about axes 0, 1, 2 in turn (MONAI "XYZ")."""
    b = angles.shape[0]
    if nd == 2:
        c, s = angles[:, 0].cos(), angles[:, 0].sin()
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    out = torch.eye(3, dtype=angles.dtype).expand(b, 3, 3)
    for axis in range(3):
        i, j = [a for a in range(3) if a != axis]
        c, s = angles[:, axis].cos(), angles[:, axis].sin()
        s = -s if axis == 1 else s   # MONAI's sign about the middle axis
        r = torch.eye(3, dtype=angles.dtype).repeat(b, 1, 1)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out


class BatchAugment:
    """The random spatial (and 3D intensity) augmentation of a training batch, one grid per batch.

    ``__call__(image (B, C, *S) float, label (B, *S) int)`` returns both augmented on their device. ``pad_value``:
    the image value outside the field of view, per channel (:func:`air_value`). ``seed`` seeds the own generator;
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it (exact resume)."""

    def __init__(self, spatial_dims: int, settings: AugmentSettings, pad_value: Sequence[float] | float = 0.0,
                 seed: int = 0) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.nd = int(spatial_dims)
        self.s = settings
        self.pad_value = [float(pad_value)] if isinstance(pad_value, (int, float)) else [float(v) for v in pad_value]
        self.generator = torch.Generator().manual_seed(int(seed))

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(int(seed))

    def state_dict(self) -> torch.Tensor:
        return self.generator.get_state()

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def __getstate__(self) -> dict[str, Any]:
        # a torch.Generator does not survive the shared-memory pickling of ddp_spawn: carry its state as bytes
        state = dict(self.__dict__)
        state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        raw = state.pop("generator")
        self.__dict__.update(state)
        self.generator = torch.Generator()
        self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))

    # ---------------------------------------------------------------------------------------------------------
    def _uniform(self, shape: Sequence[int], low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(tuple(shape), generator=self.generator, dtype=torch.float64)

    def draw(self, b: int, size: Sequence[int]) -> dict[str, torch.Tensor]:
        """Every random number of one batch of ``b`` items of spatial ``size`` (CPU, float64), in a fixed order."""
        s, nd = self.s, self.nd
        out: dict[str, torch.Tensor] = {
            "flip": self._uniform([b]) < s.flip_prob,
            "rot90": (self._uniform([b]) < s.rot90_prob) if nd == 3 else torch.zeros(b, dtype=torch.bool),
            "k": torch.randint(1, 4, (b,), generator=self.generator),
            "affine": self._uniform([b]) < s.affine_prob if s.affine_on else torch.zeros(b, dtype=torch.bool),
            "angles": self._uniform([b, 1 if nd == 2 else 3], -1, 1) * math.radians(s.rotate_deg),
            "zoom": 1.0 + self._uniform([b, nd], -1, 1) * s.scale,
            "shear": self._uniform([b, nd * (nd - 1)], -1, 1) * math.tan(math.radians(s.shear_deg)),
        }
        if s.elastic_on:
            grid = [max(2, math.ceil((n - 1) / s.elastic_spacing) + 1) for n in size]
            out["elastic"] = self._uniform([b]) < s.elastic_prob
            out["magnitude"] = self._uniform([b], 0.0, s.elastic_magnitude)
            out["offsets"] = torch.randn((b, nd, *grid), generator=self.generator, dtype=torch.float64)
        if s.intensity_shift > 0:
            out["shift_on"] = self._uniform([b]) < 0.5
            out["shift"] = self._uniform([b], -1, 1) * s.intensity_shift
        return out

    def matrices(self, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, nd, nd)`` F · R90 · A of each item, in array-axis order and pixel units about the centre."""
        nd = self.nd
        b = p["flip"].shape[0]
        eye = torch.eye(nd, dtype=torch.float64).repeat(b, 1, 1)
        flip = eye.clone()
        flip[:, -1, -1] = torch.where(p["flip"], -1.0, 1.0)
        r90 = eye.clone()
        if nd == 3:   # in-plane (rows, cols) by k * 90 degrees
            k = torch.where(p["rot90"], p["k"], 0).double() * (math.pi / 2)
            c, s = k.cos().round(), k.sin().round()
            r90[:, 1, 1], r90[:, 1, 2], r90[:, 2, 1], r90[:, 2, 2] = c, -s, s, c
        shear = eye.clone()   # elementary shears pre-multiplied in coefficient order (determinant 1, as MONAI)
        pairs = [(i, j) for i in range(nd) for j in range(nd) if i != j]
        for n, (i, j) in enumerate(pairs):
            e = eye.clone()
            e[:, i, j] = p["shear"][:, n]
            shear = e @ shear
        affine = _rotation(p["angles"], nd) @ shear @ torch.diag_embed(p["zoom"])
        affine = torch.where(p["affine"][:, None, None], affine, eye)
        return flip @ r90 @ affine

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nd, b = self.nd, image.shape[0]
        size = tuple(image.shape[2:])
        if len(size) != nd or tuple(label.shape[1:]) != size:
            raise ValueError(f"expected image (B, C, *S) and label (B, *S) with {nd} spatial axes, got "
                             f"{tuple(image.shape)} and {tuple(label.shape)}")
        p = self.draw(b, size)
        spatial = p["flip"] | p["rot90"] | p["affine"]
        if "elastic" in p:
            spatial = spatial | p["elastic"]
        if bool(spatial.any()):
            image, label = self._resample(image, label, p, spatial)
        if "shift" in p:
            shift = torch.where(p["shift_on"], p["shift"], 0.0).to(image.device, image.dtype)
            image = image + shift.view(b, *([1] * (image.ndim - 1)))
        return image, label

    def _resample(self, image: torch.Tensor, label: torch.Tensor, p: dict[str, torch.Tensor],
                  spatial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nd, dev = self.nd, image.device
        size = image.shape[2:]
        dtype = image.dtype if image.is_floating_point() else torch.float32
        half = torch.tensor([(n - 1) / 2 for n in size], dtype=dtype, device=dev)
        axes = [torch.arange(n, dtype=dtype, device=dev) - (n - 1) / 2 for n in size]
        pts = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]            # (1, nd, *S) pixels
        pts = pts.expand(image.shape[0], *pts.shape[1:])
        if "elastic" in p and bool(p["elastic"].any()):   # the field of the items drawn for it, at full size
            on = p["elastic"].nonzero()[:, 0]
            coarse = p["offsets"][on] * p["magnitude"][on].view(-1, *([1] * (nd + 1)))
            disp = F.interpolate(coarse.to(dev, dtype), size=tuple(size), mode="bicubic" if nd == 2 else "trilinear",
                                 align_corners=True)
            pts = pts.clone()
            pts[on.to(dev)] += disp                                              # (B, nd, *S)
        m = self.matrices(p).to(dev, dtype)
        q = torch.einsum("bij,bj...->bi...", m, pts)
        q = q / half.view(1, nd, *([1] * nd)).clamp(min=0.5)                    # align_corners=True units
        grid = q.flip(1).movedim(1, -1)                                          # (B, *S, nd) as (x, y[, z])
        pad = torch.tensor(self.pad_value, dtype=dtype, device=dev).view(1, -1, *([1] * nd))
        img = F.grid_sample(image.to(dtype) - pad, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True) + pad
        lab = F.grid_sample(label[:, None].to(dtype), grid, mode="nearest", padding_mode="zeros",
                            align_corners=True)[:, 0].round().to(label.dtype)
        keep = ~spatial.to(dev)
        img = torch.where(keep.view(-1, *([1] * (nd + 1))), image.to(dtype), img)
        lab = torch.where(keep.view(-1, *([1] * nd)), label, lab)
        return img.to(image.dtype), lab


def build_augmentation(spatial_dims: int, params: dict[str, Any] | None, window: str = "abdomen",
                       channels: int = 1, seed: int = 0) -> BatchAugment | None:
    """The batch augmentation of ``data.augment`` (``repeats`` excluded; missing keys take the defaults of
    ``conf/data/_common.yaml``), or ``None`` when ``params`` is None or everything is off."""
    if params is None:
        return None
    settings = AugmentSettings.from_params(dict(params))
    if not settings.any_on:
        return None
    return BatchAugment(spatial_dims, settings, air_value(window, channels), seed)
