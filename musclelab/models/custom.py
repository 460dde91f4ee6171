"""``model=custom``: any ``nn.Module`` importable from ``PYTHONPATH``, named by ``model._target_``.

``musclelab train model=custom model._target_=my_models.TinyNet +model.params.width=6`` builds
``TinyNet(in_channels=..., out_channels=..., spatial_dims=..., width=6)``: the channels come from the data and
the loss, the dimensions from ``data.spatial_dims``, everything else from ``model.params``. The module must map
``(B, in_channels, *spatial)`` to logits ``(B, out_channels, *spatial)``. The preset copies the target into
``model.params._target_``, so the task's hyperparameters and every checkpoint record it and ``musclelab predict``
rebuilds the network wherever the class is importable (a one-line error names the class where it is not).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from musclelab.models.registry import MODELS, ModelSpec
from musclelab.plugins import TARGET, locate

FIELD = "model._target_"


def _target(params: dict[str, Any]) -> str:
    target = params.get(TARGET)
    if not target:
        from musclelab.errors import ConfigError

        raise ConfigError(f"model=custom needs {FIELD}=<module.Class>, an nn.Module importable from PYTHONPATH "
                          "(e.g. model._target_=my_models.TinyNet)")
    return target


def _check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    locate(_target(params), FIELD)  # importable before any data is loaded


def _build(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    from musclelab.plugins import instantiate

    target = _target(params)
    kwargs = {k: v for k, v in params.items() if k != TARGET}
    spec = {TARGET: target, **kwargs}
    return instantiate(spec, "model", nn.Module, in_channels=in_channels, out_channels=out_channels,
                       spatial_dims=len(hw))


MODELS.register("custom")(
    ModelSpec(
        name="custom",
        build=_build,
        defaults={},
        check=_check,
        extra=lambda params: None,  # any parameter: the user's class checks its own arguments
        summary="any nn.Module importable from PYTHONPATH (model._target_), built with in_channels, "
                "out_channels, spatial_dims and model.params",
        spatial_dims=(2, 3),
    )
)
