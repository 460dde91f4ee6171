"""MONAI VNet (2D or 3D): ``model=vnet``."""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import (
    MODELS, MONAI_FIXED, ModelSpec, _field, _require_multiple, _signature_params,
)


def _vnet_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import VNet

    return _signature_params(VNet, ("spatial_dims", "in_channels", "out_channels", "dropout_prob"))


def _vnet_check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple("vnet", hw, 16, "VNet downsamples 4 times by 2")
    if in_channels is not None and 16 % in_channels:
        raise ValueError(
            f"model 'vnet' needs in_channels to divide 16 (its input block repeats the input "
            f"channels up to 16); got in_channels={in_channels}. Use 1, 2, 4, 8 or 16 input "
            f"channels, or another model.name."
        )
    if params.get("dropout_dim") not in (1, 2, 3):
        raise ValueError(f"model 'vnet': {_field('dropout_dim')} must be 1, 2 or 3, got {params.get('dropout_dim')!r}")


def _build_vnet(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import VNet

    if isinstance(params.get("act"), list):
        params["act"] = tuple(params["act"])
    if isinstance(params.get("dropout_prob_up"), list):
        params["dropout_prob_up"] = tuple(params["dropout_prob_up"])
    return VNet(spatial_dims=len(hw), in_channels=in_channels, out_channels=out_channels, **params)


MODELS.register("vnet")(
    ModelSpec(
        name="vnet",
        build=_build_vnet,
        defaults={
            "act": "elu",
            "dropout_prob_down": 0.5,
            "dropout_prob_up": (0.5, 0.5),
            "dropout_dim": 2,
            "bias": False,
        },
        check=_vnet_check,
        extra=_vnet_extra,
        forbidden={**MONAI_FIXED, "dropout_prob": f"deprecated in MONAI; use {_field('dropout_prob_down')} / {_field('dropout_prob_up')}"},
        summary="MONAI VNet (fixed widths 16..256); every side a multiple of 16; in_channels must divide 16",
        spatial_dims=(2, 3),
    )
)
