"""MONAI UNETR (2D or 3D; the Kim 2024 model): ``model=unetr``."""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import (
    MODELS, MONAI_FIXED, ModelSpec, _field, _require_multiple, _signature_params,
)


_UNETR_PATCH = 16  # fixed inside MONAI UNETR


def _unetr_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import UNETR

    return _signature_params(UNETR, ("spatial_dims", "in_channels", "out_channels", "img_size"))


def _unetr_check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple(
        "unetr", hw, _UNETR_PATCH,
        f"the ViT encoder of MONAI UNETR cuts fixed {'x'.join(['16'] * len(hw))} patches"
    )
    hidden, heads = params["hidden_size"], params["num_heads"]
    if hidden % heads:
        raise ValueError(
            f"model 'unetr': {_field('hidden_size')}={hidden} must be divisible by {_field('num_heads')}="
            f"{heads}; e.g. hidden_size=384 with num_heads=6, or hidden_size=768 with num_heads=12."
        )


def _build_unetr(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import UNETR

    return UNETR(
        in_channels=in_channels, out_channels=out_channels, img_size=tuple(hw), spatial_dims=len(hw), **params
    )


MODELS.register("unetr")(
    ModelSpec(
        name="unetr",
        build=_build_unetr,
        defaults={
            "feature_size": 16,
            "hidden_size": 384,
            "mlp_dim": 1536,
            "num_heads": 6,
            "proj_type": "conv",
            "norm_name": "instance",
            "conv_block": True,
            "res_block": True,
            "dropout_rate": 0.0,
            "qkv_bias": False,
        },
        check=_unetr_check,
        extra=_unetr_extra,
        forbidden={**MONAI_FIXED, "save_attn": "not used by musclelab"},
        summary="MONAI UNETR (ViT-S-sized by default; Kim 2024: hidden 768, 12 heads, 3D); sides multiples of 16; "
                "only takes exactly data.img_size / data.patch_size",
        spatial_dims=(2, 3),
    )
)
