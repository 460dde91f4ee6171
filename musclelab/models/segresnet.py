"""MONAI SegResNet (2D or 3D; the encoder-decoder of Myronenko 2018, nnU-Net-like residual blocks):
``model=segresnet``."""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import MODELS, MONAI_FIXED, ModelSpec, _field, _require_multiple, _seq


def _check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    down = _seq(params["blocks_down"], "blocks_down", "segresnet")
    up = _seq(params["blocks_up"], "blocks_up", "segresnet")
    if len(up) != len(down) - 1:
        raise ValueError(f"model 'segresnet': {_field('blocks_up')} needs len(blocks_down) - 1 = {len(down) - 1} "
                         f"entries, got {up}")
    _require_multiple("segresnet", hw, 2 ** (len(down) - 1), f"{len(down) - 1} stride-2 downsamplings")
    if int(params["init_filters"]) % 8:
        raise ValueError(f"model 'segresnet': {_field('init_filters')} must be a multiple of 8 (group norm of 8 "
                         f"groups), got {params['init_filters']}")


def _build(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import SegResNet

    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return SegResNet(spatial_dims=len(hw), in_channels=in_channels, out_channels=out_channels, **params)


MODELS.register("segresnet")(
    ModelSpec(
        name="segresnet",
        build=_build,
        defaults={"init_filters": 8, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1), "dropout_prob": None,
                  "upsample_mode": "nontrainable"},
        check=_check,
        forbidden=MONAI_FIXED,
        summary="MONAI SegResNet; sides multiples of 2**(len(blocks_down) - 1) (8 by default)",
        spatial_dims=(2, 3),
    )
)
