"""Segmentation network registry: ``MODELS``, ``build_model`` and ``check_input_size``.

Every entry builds a network mapping a float tensor ``(B, in_channels, *spatial)`` to logits
``(B, out_channels, *spatial)`` (a plain tensor; dict / tuple outputs of the wrapped libraries are
unwrapped), in 2D (``(H, W)``) or, for entries whose :attr:`ModelSpec.spatial_dims` include 3, in 3D
(``(D, H, W)``). The spatial dimensions come from the data (``data.spatial_dims``), passed as
``spatial_dims=`` by the one caller that builds models (the task); the input size is ``data.img_size`` in 2D and
``data.patch_size`` in 3D. A model asked for dimensions it does not support fails with a message naming
``data.spatial_dims`` and the models that do.

Each architecture lives in its own module (``models/<name>.py``: its builder, size check and ``MODELS.register``
call); ``models/__init__.py`` imports them (one line per architecture). This module holds only the registry,
the public API and the helpers the architectures share. The keyword arguments of an entry are the fields of the Hydra config group
``model/<name>.yaml`` (config path ``model.params.<param>``); unknown ones are rejected with a message that
lists the accepted parameters. Size rules are checked before any network is built, so a bad
``data.img_size`` fails at start-up with the fix spelled out rather than in the middle of a forward
pass.

Heavy libraries (MONAI, torchvision, segmentation-models-pytorch) are imported lazily inside the
builders so that importing this module stays cheap. Nothing here downloads weights unless a config
explicitly names a pretrained set (``weights``, ``weights_backbone``, ``encoder_weights``) and
gives no local ``weights_path``. Error messages name parameters as ``model.params.<param>``
(:data:`PARAMS_FIELD`), the layout of ``conf/model/<name>.yaml``.
"""
from __future__ import annotations

import difflib
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from musclelab.registry import Registry

__all__ = [
    "MODELS",
    "Size",
    "dims_error",
    "size_field",
    "PARAMS_FIELD",
    "SIZE_FIELD",
    "ModelSpec",
    "UnknownModelParameterError",
    "build_model",
    "check_input_size",
    "model_defaults",
    "accepted_params",
    "adapt_conv_weight",
    "read_state_dict",
    "hub_state_dict",
    "PRETRAINED_PARAMS",
]

log = logging.getLogger(__name__)

SIZE_FIELD = "data.img_size"
"""Config field holding the training image size; named in size errors."""

PARAMS_FIELD = "model.params"
"""Config section holding a model's parameters (``model/<name>.yaml`` ``params:``); named in errors."""


def _field(param: str) -> str:
    """A model parameter as users write it in config, e.g. ```model.params.strides``` (backquoted)."""
    return f"`{PARAMS_FIELD}.{param}`"


class UnknownModelParameterError(TypeError, ValueError):
    """A ``model.<param>`` that the chosen model does not accept (catchable as TypeError or ValueError)."""


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    ``build(in_channels, out_channels, size, **params)`` constructs the network (``size`` = ``(h, w)`` or
    ``(d, h, w)``, a :class:`Size`; its length is the spatial dimensions); ``spatial_dims`` lists the
    dimensions the entry supports; ``defaults`` are the
    entry's own parameters (the keys of ``model/<name>.yaml``); ``extra`` optionally names further
    parameters passed straight through to the wrapped constructor (given the merged params);
    ``check(size, params, in_channels)`` raises ``ValueError`` for inputs the network cannot take;
    ``forbidden`` maps parameters that are deliberately fixed to the reason.
    """

    name: str
    build: Callable[..., nn.Module]
    defaults: Mapping[str, Any]
    check: Callable[[tuple[int, int], dict[str, Any], int | None], None]
    extra: Callable[[dict[str, Any]], set[str] | None] | None = None
    forbidden: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    spatial_dims: tuple[int, ...] = (2,)


class Size(tuple):
    """Spatial input size ``(h, w)`` or ``(d, h, w)`` that knows the config field it came from (for messages)."""

    field: str = "data.img_size"

    def __new__(cls, dims: Sequence[int], field_name: str) -> "Size":
        obj = super().__new__(cls, (int(d) for d in dims))
        obj.field = field_name
        return obj


def size_field(spatial_dims: int) -> str:
    """The config field holding the network input size: ``data.img_size`` (2D) or ``data.patch_size`` (3D)."""
    return "data.patch_size" if spatial_dims == 3 else SIZE_FIELD


def dims_error(name: str, spatial_dims: int) -> str | None:
    """Why model ``name`` cannot run in ``spatial_dims`` dimensions (the fix included), or None if it can."""
    spec = MODELS.get(name)
    if spatial_dims in spec.spatial_dims:
        return None
    able = [n for n in MODELS.names() if spatial_dims in MODELS.get(n).spatial_dims]
    what = "volumes (data.spatial_dims=3)" if spatial_dims == 3 else "2D slices (data.spatial_dims=2)"
    return (f"model '{name}' is {'/'.join(f'{d}D' for d in spec.spatial_dims)} only and cannot train on {what}: "
            f"choose model={'|'.join(able)} or set data.spatial_dims={spec.spatial_dims[0]}")


MODELS: Registry[ModelSpec] = Registry("model", "model.name")


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def model_defaults(name: str) -> dict[str, Any]:
    """The default parameters of model ``name`` (what ``model/<name>.yaml`` should contain)."""
    return dict(MODELS.get(name).defaults)


def accepted_params(name: str, **kwargs: Any) -> list[str]:
    """Sorted parameter names model ``name`` accepts (may depend on ``kwargs``, e.g. ``smp`` ``arch``)."""
    spec = MODELS.get(name)
    merged = {**spec.defaults, **_plain(kwargs)}
    extra = spec.extra(merged) if spec.extra else set()
    return sorted((set(spec.defaults) | (extra or set())) - set(spec.forbidden))


def check_input_size(
    name: str, img_size: int | Sequence[int], *, in_channels: int | None = None, spatial_dims: int = 2,
    **kwargs: Any
) -> None:
    """Raise ``ValueError`` if model ``name`` with parameters ``kwargs`` cannot take ``img_size`` inputs
    (``data.img_size`` in 2D, ``data.patch_size`` in 3D) in ``spatial_dims`` dimensions.

    Also validates the parameter names (``UnknownModelParameterError``) and, when ``in_channels`` is
    given, channel constraints. The message names the config fields to change and a valid choice.
    """
    _prepare(name, img_size, in_channels, kwargs, spatial_dims)


def build_model(
    name: str, in_channels: int, out_channels: int, img_size: int | Sequence[int], spatial_dims: int = 2,
    **kwargs: Any
) -> nn.Module:
    """Build registered model ``name``: ``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``.

    ``img_size`` is ``data.img_size`` (an int for square images or ``(H, W)``) in 2D, ``data.patch_size`` (an int
    or ``(D, H, W)``) with ``spatial_dims=3``; it is checked with
    :func:`check_input_size` first. ``kwargs`` are the ``model.*`` config fields (a ``name`` field is
    not needed: it is the first argument).
    """
    for field_name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model '{name}': {field_name} must be a positive int, got {value!r}")
    spec, hw, params = _prepare(name, img_size, in_channels, kwargs, spatial_dims)
    return spec.build(in_channels, out_channels, hw, **params)


# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dict / list (recursively); other values unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _as_hw(img_size: Any, spatial_dims: int = 2) -> Size:
    """``data.img_size`` (int or (H, W)) -> ``(H, W)``, or in 3D ``data.patch_size`` (int or (D, H, W)) ->
    ``(D, H, W)``; raises ``ValueError`` naming the field if malformed."""
    img_size = _plain(img_size)
    nd = int(spatial_dims)
    fld = size_field(nd)
    if isinstance(img_size, (list, tuple)):
        dims = list(img_size)
        if len(dims) == 1:
            dims = dims * nd
    else:
        dims = [img_size] * nd
    if len(dims) != nd or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        shape = "a pair [H, W]" if nd == 2 else "a triple [D, H, W]"
        raise ValueError(
            f"`{fld}` must be a positive int or {shape} of positive ints for {nd}D models, got {img_size!r}"
        )
    return Size(dims, fld)


def _fmt_hw(hw: Sequence[int]) -> str:
    return str(hw[0]) if len(set(hw)) == 1 else "[" + ", ".join(str(d) for d in hw) + "]"


def _fld(hw: Sequence[int]) -> str:
    return getattr(hw, "field", SIZE_FIELD)


def _prepare(
    name: str, img_size: Any, in_channels: int | None, kwargs: Mapping[str, Any], spatial_dims: int = 2
) -> tuple[ModelSpec, Size, dict[str, Any]]:
    """Look up ``name``, check its dimensions, validate parameter names, merge defaults, run the size /
    channel check."""
    spec = MODELS.get(name)
    problem = dims_error(name, int(spatial_dims))
    if problem:
        raise ValueError(problem)
    kwargs = _plain(dict(kwargs))
    for key in kwargs:
        if key in spec.forbidden:
            raise UnknownModelParameterError(
                f"model '{name}' does not accept {_field(key)}: {spec.forbidden[key]}"
            )
    params = {**spec.defaults, **kwargs}
    extra = spec.extra(params) if spec.extra else set()
    if extra is not None:  # None means "anything else is passed through" (validated downstream)
        accepted = (set(spec.defaults) | extra) - set(spec.forbidden)
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, accepted, n=1)
                hints.append(f"{_field(key)}" + (f" (did you mean {_field(close[0])}?)" if close else ""))
            raise UnknownModelParameterError(
                f"model '{name}' got unknown parameter(s) {', '.join(hints)}; "
                f"accepted parameters: {', '.join(sorted(accepted))}"
            )
    hw = _as_hw(img_size, spatial_dims)
    spec.check(hw, params, in_channels)
    return spec, hw, params


def _suggest(size: int, multiple: int) -> str:
    lo = size // multiple * multiple
    options = [m for m in (lo, lo + multiple) if m > 0] or [multiple]
    if len(options) == 1:
        options.append(options[0] + multiple)
    return " or ".join(str(m) for m in options)


def _sides(hw: Sequence[int]) -> str:
    return "height and width" if len(hw) == 2 else "every side (depth, height, width)"


def _require_multiple(
    name: str, hw: Sequence[int], multiple: int, why: str, alternative: str = ""
) -> None:
    """Raise ``ValueError`` unless every side of ``hw`` is a multiple of ``multiple``."""
    bad = [s for s in hw if s % multiple]
    fld = _fld(hw)
    if bad:
        raise ValueError(
            f"model '{name}' cannot take `{fld}`={_fmt_hw(hw)}: {_sides(hw)} must be "
            f"multiples of {multiple} ({why}). Fix: set `{fld}` to a multiple of {multiple} "
            f"such as {_suggest(bad[0], multiple)}{alternative}."
        )


def _require_min(name: str, hw: Sequence[int], minimum: int, why: str) -> None:
    fld = _fld(hw)
    if min(hw) < minimum:
        raise ValueError(
            f"model '{name}' cannot take `{fld}`={_fmt_hw(hw)}: {_sides(hw)} must be at "
            f"least {minimum} ({why}). Fix: set `{fld}` to {minimum} or more, e.g. 128."
        )


def _is_instance_norm(norm: Any) -> bool:
    """Whether a MONAI norm spec (``"instance"``, ``("INSTANCE", {...})``, ...) is instance norm."""
    if isinstance(norm, (list, tuple)) and norm:
        norm = norm[0]
    return isinstance(norm, str) and norm.lower().startswith("instance")


def _require_bottleneck_pixels(
    name: str, hw: Sequence[int], factor: Sequence[int], norm_field: str, norm: Any
) -> None:
    """Instance norm cannot normalise a 1x1 map in training: the bottleneck needs >= 2 pixels."""
    fld = _fld(hw)
    n = 1
    for s, f in zip(hw, factor):
        n *= s // f
    if _is_instance_norm(norm) and n < 2:
        raise ValueError(
            f"model '{name}' cannot take `{fld}`={_fmt_hw(hw)}: its deepest feature map would "
            f"be 1x1 (input / {'x'.join(str(f) for f in factor)}) and instance norm needs more than one pixel "
            f"when training. Fix: set `{fld}` to {2 * max(factor)} or more, or set "
            f"{_field(norm_field)} to batch."
        )


def _signature_params(cls: Callable[..., Any], managed: Iterable[str]) -> set[str]:
    """Named parameters of ``cls.__init__`` (or a function) minus ``managed`` and ``self``/``**kw``."""
    target = cls.__init__ if inspect.isclass(cls) else cls
    params = inspect.signature(target).parameters.values()
    skip = {"self", *managed}
    return {
        p.name
        for p in params
        if p.name not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _seq(value: Any, field_name: str, model: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"model '{model}': {_field(field_name)} must be a list, got {value!r}")


class _FirstOutput(nn.Module):
    """Wraps a network whose forward returns a tuple/list (e.g. mask + aux head) and keeps item 0."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight ``(out, c, kh, kw)`` re-made for ``in_channels`` inputs: the mean over the ``c``
    input filters, repeated and scaled by ``c / in_channels``. For one channel this is the sum of the RGB
    filters, so a grey image gives the activations the original conv gives that image replicated to RGB.
    """
    mean = weight.detach().mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


def read_state_dict(path: str | os.PathLike[str], what: str = "weights file") -> dict[str, torch.Tensor]:
    """The tensors of a local weights file, loaded on CPU with ``weights_only=True`` (no code runs).

    Accepts a plain state dict or one nested under ``"state_dict"`` (Lightning checkpoint) / ``"model"``;
    keys are returned unchanged (prefixes such as ``net.`` are the caller's business). ``what`` names
    the file in the ``ValueError`` raised when it does not hold a state dict.
    """
    obj = torch.load(os.path.expanduser(str(path)), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{what}={str(path)!r} does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def hub_state_dict(weights: Any) -> dict[str, torch.Tensor]:
    """The tensors of a torchvision weights enum member (downloaded into the torch hub cache once), loaded with
    ``weights_only=True``: a hub file is never unpickled as code (torchvision's builders load them with
    ``weights_only=False``)."""
    return dict(weights.get_state_dict(progress=True, check_hash=True, weights_only=True))


#: model parameters that fetch pretrained weights when a network is built (a file or a download); a checkpoint
#: holds the trained weights, so building its network again must not read or download them
PRETRAINED_PARAMS = ("weights", "weights_backbone", "weights_path", "encoder_weights")


# the spatial dimensions are set from the data (``data.spatial_dims``), never as a model parameter
MONAI_FIXED = {"spatial_dims": "it is set from the data: data.spatial_dims (2 = slices, 3 = volumes)"}
