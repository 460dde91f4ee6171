"""MONAI residual UNet (2D or 3D): ``model=unet``."""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import (
    MODELS, MONAI_FIXED, ModelSpec, _field, _fld, _fmt_hw, _require_bottleneck_pixels, _seq, _signature_params,
    _suggest,
)


def _unet_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import UNet

    return _signature_params(UNet, ("spatial_dims", "in_channels", "out_channels"))


def _unet_check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    channels = _seq(params["channels"], "channels", "unet")
    strides = _seq(params["strides"], "strides", "unet")
    if len(channels) < 2:
        raise ValueError(f"model 'unet': {_field('channels')} needs at least 2 entries, got {channels}")
    if len(strides) < len(channels) - 1:
        raise ValueError(
            f"model 'unet': {_field('strides')} needs len(channels) - 1 = {len(channels) - 1} "
            f"entries, got {strides}"
        )
    used = strides[: len(channels) - 1]
    nd = len(hw)
    per_dim = [1] * nd
    for s in used:
        step = list(s) if isinstance(s, (list, tuple)) else [s] * nd
        if len(step) != nd or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in step):
            raise ValueError(f"model 'unet': {_field('strides')} entries must be positive ints or lists of {nd}, "
                             f"got {s!r}")
        per_dim = [p * v for p, v in zip(per_dim, step)]
    axes = ("height", "width") if nd == 2 else ("depth", "height", "width")
    fld = _fld(hw)
    for axis, (size, mult) in enumerate(zip(hw, per_dim)):
        if size % mult:
            raise ValueError(
                f"model 'unet' cannot take `{fld}`={_fmt_hw(hw)}: "
                f"{axes[axis]} must be a multiple of {mult} (the product of "
                f"{_field('strides')}={used}). Fix: set `{fld}` to a multiple of {mult} such as "
                f"{_suggest(size, mult)}, or use fewer / smaller {_field('strides')} (with matching "
                f"{_field('channels')})."
            )
    _require_bottleneck_pixels("unet", hw, per_dim, "norm", params.get("norm"))


def _build_unet(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=len(hw), in_channels=in_channels, out_channels=out_channels, **params)


MODELS.register("unet")(
    ModelSpec(
        name="unet",
        build=_build_unet,
        defaults={
            "channels": (16, 32, 64, 128, 256),
            "strides": (2, 2, 2, 2),
            "num_res_units": 2,
            "kernel_size": 3,
            "up_kernel_size": 3,
            "act": "PRELU",
            "norm": "INSTANCE",
            "dropout": 0.0,
            "bias": True,
        },
        check=_unet_check,
        extra=_unet_extra,
        forbidden=MONAI_FIXED,
        summary="MONAI residual UNet (2D, or 3D: the Kim 2024 3D U-Net baseline); sides multiples of prod(strides)",
        spatial_dims=(2, 3),
    )
)
