"""MONAI DynUNet (2D or 3D; the nnU-Net architecture with configurable kernels and strides): ``model=dynunet``.

Deep supervision is off (the task trains on the main output only).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import MODELS, MONAI_FIXED, ModelSpec, _field, _fld, _fmt_hw, _seq, _suggest


def _per_dim(value: Any, nd: int, name: str) -> list[int]:
    v = list(value) if isinstance(value, (list, tuple)) else [value] * nd
    if len(v) != nd or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
        raise ValueError(f"model 'dynunet': {_field(name)} entries must be positive ints or lists of {nd}, got {value!r}")
    return v


def _check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    kernels = _seq(params["kernel_size"], "kernel_size", "dynunet")
    strides = _seq(params["strides"], "strides", "dynunet")
    filters = params.get("filters")
    if len(kernels) != len(strides) or len(strides) < 2:
        raise ValueError(f"model 'dynunet': {_field('kernel_size')} and {_field('strides')} need the same length "
                         f"(>= 2, one per level), got {kernels} and {strides}")
    if filters is not None and len(filters) != len(strides):
        raise ValueError(f"model 'dynunet': {_field('filters')} needs one entry per level ({len(strides)}), got {filters}")
    nd = len(hw)
    total = [1] * nd
    for s in strides:
        total = [t * x for t, x in zip(total, _per_dim(s, nd, "strides"))]
    for size, mult in zip(hw, total):
        if size % mult:
            raise ValueError(f"model 'dynunet' cannot take `{_fld(hw)}`={_fmt_hw(hw)}: every side must be a multiple "
                             f"of {mult} (the product of {_field('strides')}). Fix: set `{_fld(hw)}` to a multiple of "
                             f"{mult} such as {_suggest(size, mult)}, or use fewer stride-2 levels.")


def _build(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from monai.networks.nets import DynUNet

    nd = len(hw)
    strides = [_per_dim(s, nd, "strides") for s in params.pop("strides")]
    kernels = [_per_dim(k, nd, "kernel_size") for k in params.pop("kernel_size")]
    filters = params.pop("filters", None)
    return DynUNet(spatial_dims=nd, in_channels=in_channels, out_channels=out_channels, kernel_size=kernels,
                   strides=strides, upsample_kernel_size=strides[1:], filters=list(filters) if filters else None,
                   deep_supervision=False, **params)


MODELS.register("dynunet")(
    ModelSpec(
        name="dynunet",
        build=_build,
        defaults={"kernel_size": (3, 3, 3, 3, 3), "strides": (1, 2, 2, 2, 2), "filters": None,
                  "norm_name": "instance", "act_name": ["leakyrelu", {"negative_slope": 0.01, "inplace": True}],
                  "res_block": True, "dropout": None},
        check=_check,
        forbidden={**MONAI_FIXED, "deep_supervision": "the task trains on the main output only",
                   "upsample_kernel_size": "it follows the strides"},
        summary="MONAI DynUNet (nnU-Net); sides multiples of prod(strides) (16 by default)",
        spatial_dims=(2, 3),
    )
)
