"""MONAI SwinUNETR (2D or 3D): ``model=swin_unetr``."""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import (
    MODELS, MONAI_FIXED, ModelSpec, _field, _require_bottleneck_pixels, _require_multiple, _seq,
    _signature_params,
)


_SWIN_PATCH = 2  # SwinUNETR's decoder assumes patch 2 (MONAI rule: sizes divisible by patch_size**5)


def _swin_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import SwinUNETR

    return _signature_params(
        SwinUNETR, ("spatial_dims", "in_channels", "out_channels", "img_size", "patch_size")
    )


def _swin_check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple(
        "swin_unetr", hw, _SWIN_PATCH**5, "patch size 2 followed by 4 patch-merging stages"
    )
    _require_bottleneck_pixels("swin_unetr", hw, (32,) * len(hw), "norm_name", params.get("norm_name"))
    fs = params["feature_size"]
    if fs % 12:
        raise ValueError(
            f"model 'swin_unetr': {_field('feature_size')}={fs} must be divisible by 12 (e.g. 12, 24, 48)"
        )
    depths = _seq(params["depths"], "depths", "swin_unetr")
    heads = _seq(params["num_heads"], "num_heads", "swin_unetr")
    if len(depths) != 4 or len(heads) != 4:
        raise ValueError(
            f"model 'swin_unetr': {_field('depths')} and {_field('num_heads')} need 4 entries (one per Swin "
            f"stage), got depths={depths}, num_heads={heads}"
        )
    for stage, h in enumerate(heads):
        dim = fs * 2**stage
        if dim % h:
            raise ValueError(
                f"model 'swin_unetr': stage {stage} has {dim} channels (feature_size * 2**{stage}) "
                f"which {_field('num_heads')}[{stage}]={h} does not divide"
            )


def _build_swin(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    for key in ("depths", "num_heads", "window_size"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    # MONAI >= 1.5 dropped the img_size argument: the network takes any multiple of 32.
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=_SWIN_PATCH,
        spatial_dims=len(hw),
        **params,
    )


MODELS.register("swin_unetr")(
    ModelSpec(
        name="swin_unetr",
        build=_build_swin,
        defaults={
            "feature_size": 24,
            "depths": (2, 2, 2, 2),
            "num_heads": (3, 6, 12, 24),
            "window_size": 7,
            "norm_name": "instance",
            "drop_rate": 0.0,
            "attn_drop_rate": 0.0,
            "dropout_path_rate": 0.0,
            "use_checkpoint": False,
            "use_v2": False,
        },
        check=_swin_check,
        extra=_swin_extra,
        forbidden={
            **MONAI_FIXED,
            "patch_size": "fixed at 2 (the SwinUNETR decoder assumes it)",
        },
        summary="MONAI SwinUNETR; sides multiples of 32; feature_size multiple of 12",
        spatial_dims=(2, 3),
    )
)
