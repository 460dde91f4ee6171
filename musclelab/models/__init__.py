"""Segmentation networks: the ``MODELS`` registry and ``build_model`` / ``check_input_size``.

Choose a network with ``model.name`` (``vnet``, ``unet``, ``unetr``, ``swin_unetr``, ``fcn_resnet101``,
``fcn_resnet50``, ``smp``, ``paratranscnn``); its parameters are the other ``model.*`` fields.
"""
from musclelab.models.registry import (
    MODELS,
    PARAMS_FIELD,
    SIZE_FIELD,
    FCNLogits,
    ModelSpec,
    UnknownModelParameterError,
    accepted_params,
    build_model,
    check_input_size,
    model_defaults,
)
from musclelab.models import paratranscnn as _paratranscnn  # noqa: F401  (registers "paratranscnn")

__all__ = [
    "MODELS",
    "PARAMS_FIELD",
    "SIZE_FIELD",
    "FCNLogits",
    "ModelSpec",
    "UnknownModelParameterError",
    "accepted_params",
    "build_model",
    "check_input_size",
    "model_defaults",
]
