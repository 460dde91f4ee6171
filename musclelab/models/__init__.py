"""Segmentation networks: the ``MODELS`` registry and ``build_model`` / ``check_input_size``.

Choose a network with ``model.name`` (``vnet``, ``unet``, ``unetr``, ``swin_unetr``, ``segresnet``, ``dynunet``,
``ronneberger_unet`` (the papers' U-Net) in 2D or 3D; ``fcn_resnet101``, ``fcn_resnet50``, ``smp``,
``paratranscnn`` in 2D); its parameters are the other ``model.*`` fields. Each architecture is one module here;
adding one is that module plus one import line below.
"""
from musclelab.models.registry import (
    MODELS,
    PARAMS_FIELD,
    SIZE_FIELD,
    ModelSpec,
    UnknownModelParameterError,
    accepted_params,
    build_model,
    check_input_size,
    model_defaults,
)
# one line per architecture (importing a module registers it; the order is the order of MODELS.names())
from musclelab.models import vnet as _vnet  # noqa: F401,E402
from musclelab.models import unet as _unet  # noqa: F401,E402
from musclelab.models import unetr as _unetr  # noqa: F401,E402
from musclelab.models import swin_unetr as _swin_unetr  # noqa: F401,E402
from musclelab.models import fcn as _fcn  # noqa: F401,E402
from musclelab.models import smp as _smp  # noqa: F401,E402
from musclelab.models import paratranscnn as _paratranscnn  # noqa: F401  (registers "paratranscnn")
from musclelab.models import segresnet as _segresnet  # noqa: F401,E402
from musclelab.models import dynunet as _dynunet  # noqa: F401,E402
from musclelab.models import custom as _custom  # noqa: F401,E402  (model=custom: a plug-in by model._target_)
from musclelab.models import ronneberger as _ronneberger  # noqa: F401,E402
from musclelab.models.fcn import FCNLogits  # noqa: E402

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
