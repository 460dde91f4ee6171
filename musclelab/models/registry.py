"""Segmentation network registry: ``build_model`` and ``check_input_size``.

Every entry builds a 2D network mapping a float tensor ``(B, in_channels, H, W)`` to logits
``(B, out_channels, H, W)`` (a plain tensor; dict / tuple outputs of the wrapped libraries are
unwrapped). The keyword arguments of an entry are the fields of the Hydra config group
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
import functools
import inspect
import logging
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from musclelab.registry import Registry

__all__ = [
    "MODELS",
    "PARAMS_FIELD",
    "SIZE_FIELD",
    "FCNLogits",
    "ModelSpec",
    "UnknownModelParameterError",
    "build_model",
    "check_input_size",
    "model_defaults",
    "accepted_params",
    "adapt_conv_weight",
    "read_state_dict",
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

    ``build(in_channels, out_channels, (h, w), **params)`` constructs the network; ``defaults`` are the
    entry's own parameters (the keys of ``model/<name>.yaml``); ``extra`` optionally names further
    parameters passed straight through to the wrapped constructor (given the merged params);
    ``check((h, w), params, in_channels)`` raises ``ValueError`` for inputs the network cannot take;
    ``forbidden`` maps parameters that are deliberately fixed to the reason.
    """

    name: str
    build: Callable[..., nn.Module]
    defaults: Mapping[str, Any]
    check: Callable[[tuple[int, int], dict[str, Any], int | None], None]
    extra: Callable[[dict[str, Any]], set[str] | None] | None = None
    forbidden: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""


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
    name: str, img_size: int | Sequence[int], *, in_channels: int | None = None, **kwargs: Any
) -> None:
    """Raise ``ValueError`` if model ``name`` with parameters ``kwargs`` cannot take ``img_size`` images.

    Also validates the parameter names (``UnknownModelParameterError``) and, when ``in_channels`` is
    given, channel constraints. The message names the config fields to change and a valid choice.
    """
    _prepare(name, img_size, in_channels, kwargs)


def build_model(
    name: str, in_channels: int, out_channels: int, img_size: int | Sequence[int], **kwargs: Any
) -> nn.Module:
    """Build registered model ``name``: ``(B, in_channels, H, W)`` -> logits ``(B, out_channels, H, W)``.

    ``img_size`` is ``data.img_size`` (an int for square images or ``(H, W)``); it is checked with
    :func:`check_input_size` first. ``kwargs`` are the ``model.*`` config fields (a ``name`` field is
    not needed: it is the first argument).
    """
    for field_name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model '{name}': {field_name} must be a positive int, got {value!r}")
    spec, hw, params = _prepare(name, img_size, in_channels, kwargs)
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


def _as_hw(img_size: Any) -> tuple[int, int]:
    """``data.img_size`` (int or (H, W)) -> ``(H, W)``; raises ``ValueError`` if malformed."""
    img_size = _plain(img_size)
    if isinstance(img_size, (list, tuple)):
        dims = list(img_size)
        if len(dims) == 1:
            dims = dims * 2
    else:
        dims = [img_size, img_size]
    if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(
            f"`{SIZE_FIELD}` must be a positive int or a pair [H, W] of positive ints for 2D models, "
            f"got {img_size!r}"
        )
    return int(dims[0]), int(dims[1])


def _fmt_hw(hw: tuple[int, int]) -> str:
    return str(hw[0]) if hw[0] == hw[1] else f"[{hw[0]}, {hw[1]}]"


def _prepare(
    name: str, img_size: Any, in_channels: int | None, kwargs: Mapping[str, Any]
) -> tuple[ModelSpec, tuple[int, int], dict[str, Any]]:
    """Look up ``name``, validate parameter names, merge defaults, run the size / channel check."""
    spec = MODELS.get(name)
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
    hw = _as_hw(img_size)
    spec.check(hw, params, in_channels)
    return spec, hw, params


def _suggest(size: int, multiple: int) -> str:
    lo = size // multiple * multiple
    options = [m for m in (lo, lo + multiple) if m > 0] or [multiple]
    if len(options) == 1:
        options.append(options[0] + multiple)
    return " or ".join(str(m) for m in options)


def _require_multiple(
    name: str, hw: tuple[int, int], multiple: int, why: str, alternative: str = ""
) -> None:
    """Raise ``ValueError`` unless both H and W are multiples of ``multiple``."""
    bad = [s for s in hw if s % multiple]
    if bad:
        raise ValueError(
            f"model '{name}' cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: height and width must be "
            f"multiples of {multiple} ({why}). Fix: set `{SIZE_FIELD}` to a multiple of {multiple} "
            f"such as {_suggest(bad[0], multiple)}{alternative}."
        )


def _require_min(name: str, hw: tuple[int, int], minimum: int, why: str) -> None:
    if min(hw) < minimum:
        raise ValueError(
            f"model '{name}' cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: height and width must be at "
            f"least {minimum} ({why}). Fix: set `{SIZE_FIELD}` to {minimum} or more, e.g. 128."
        )


def _is_instance_norm(norm: Any) -> bool:
    """Whether a MONAI norm spec (``"instance"``, ``("INSTANCE", {...})``, ...) is instance norm."""
    if isinstance(norm, (list, tuple)) and norm:
        norm = norm[0]
    return isinstance(norm, str) and norm.lower().startswith("instance")


def _require_bottleneck_pixels(
    name: str, hw: tuple[int, int], factor: tuple[int, int], norm_field: str, norm: Any
) -> None:
    """Instance norm cannot normalise a 1x1 map in training: the bottleneck needs >= 2 pixels."""
    if _is_instance_norm(norm) and (hw[0] // factor[0]) * (hw[1] // factor[1]) < 2:
        raise ValueError(
            f"model '{name}' cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: its deepest feature map would "
            f"be 1x1 (input / {factor[0]}x{factor[1]}) and instance norm needs more than one pixel "
            f"when training. Fix: set `{SIZE_FIELD}` to {2 * max(factor)} or more, or set "
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


# --------------------------------------------------------------------------------------------------
# MONAI VNet
# --------------------------------------------------------------------------------------------------

_MONAI_FIXED = {"spatial_dims": "all musclelab models are 2D (spatial_dims=2 is fixed)"}


def _vnet_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import VNet

    return _signature_params(VNet, ("spatial_dims", "in_channels", "out_channels", "dropout_prob"))


def _vnet_check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple("vnet", hw, 16, "VNet downsamples 4 times by 2")
    if in_channels is not None and 16 % in_channels:
        raise ValueError(
            f"model 'vnet' needs in_channels to divide 16 (its input block repeats the input "
            f"channels up to 16); got in_channels={in_channels}. Use 1, 2, 4, 8 or 16 input "
            f"channels, or another model.name."
        )
    if params.get("dropout_dim") not in (1, 2, 3):
        raise ValueError(f"model 'vnet': {_field('dropout_dim')} must be 1, 2 or 3, got {params.get('dropout_dim')!r}")


def _build_vnet(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    from monai.networks.nets import VNet

    if isinstance(params.get("act"), list):
        params["act"] = tuple(params["act"])
    if isinstance(params.get("dropout_prob_up"), list):
        params["dropout_prob_up"] = tuple(params["dropout_prob_up"])
    return VNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **params)


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
        forbidden={**_MONAI_FIXED, "dropout_prob": f"deprecated in MONAI; use {_field('dropout_prob_down')} / {_field('dropout_prob_up')}"},
        summary="MONAI VNet (fixed widths 16..256); H, W multiples of 16; in_channels must divide 16",
    )
)


# --------------------------------------------------------------------------------------------------
# MONAI UNet
# --------------------------------------------------------------------------------------------------


def _unet_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import UNet

    return _signature_params(UNet, ("spatial_dims", "in_channels", "out_channels"))


def _unet_check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
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
    per_dim = [1, 1]
    for s in used:
        pair = list(s) if isinstance(s, (list, tuple)) else [s, s]
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
            raise ValueError(f"model 'unet': {_field('strides')} entries must be positive ints or pairs, got {s!r}")
        per_dim = [per_dim[0] * pair[0], per_dim[1] * pair[1]]
    for axis, (size, mult) in enumerate(zip(hw, per_dim)):
        if size % mult:
            raise ValueError(
                f"model 'unet' cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: "
                f"{'height' if axis == 0 else 'width'} must be a multiple of {mult} (the product of "
                f"{_field('strides')}={used}). Fix: set `{SIZE_FIELD}` to a multiple of {mult} such as "
                f"{_suggest(size, mult)}, or use fewer / smaller {_field('strides')} (with matching "
                f"{_field('channels')})."
            )
    _require_bottleneck_pixels("unet", hw, (per_dim[0], per_dim[1]), "norm", params.get("norm"))


def _build_unet(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **params)


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
        forbidden=_MONAI_FIXED,
        summary="MONAI residual UNet; H, W multiples of prod(strides) (16 by default)",
    )
)


# --------------------------------------------------------------------------------------------------
# MONAI UNETR
# --------------------------------------------------------------------------------------------------

_UNETR_PATCH = 16  # fixed inside MONAI UNETR


def _unetr_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import UNETR

    return _signature_params(UNETR, ("spatial_dims", "in_channels", "out_channels", "img_size"))


def _unetr_check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple(
        "unetr", hw, _UNETR_PATCH, "the ViT encoder of MONAI UNETR cuts fixed 16x16 patches"
    )
    hidden, heads = params["hidden_size"], params["num_heads"]
    if hidden % heads:
        raise ValueError(
            f"model 'unetr': {_field('hidden_size')}={hidden} must be divisible by {_field('num_heads')}="
            f"{heads}; e.g. hidden_size=384 with num_heads=6, or hidden_size=768 with num_heads=12."
        )


def _build_unetr(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    from monai.networks.nets import UNETR

    return UNETR(
        in_channels=in_channels, out_channels=out_channels, img_size=hw, spatial_dims=2, **params
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
        forbidden={**_MONAI_FIXED, "save_attn": "not used by musclelab"},
        summary="MONAI UNETR (ViT-S-sized by default); H, W multiples of 16; only takes exactly data.img_size",
    )
)


# --------------------------------------------------------------------------------------------------
# MONAI SwinUNETR
# --------------------------------------------------------------------------------------------------

_SWIN_PATCH = 2  # SwinUNETR's decoder assumes patch 2 (MONAI rule: sizes divisible by patch_size**5)


def _swin_extra(params: dict[str, Any]) -> set[str]:
    from monai.networks.nets import SwinUNETR

    return _signature_params(
        SwinUNETR, ("spatial_dims", "in_channels", "out_channels", "img_size", "patch_size")
    )


def _swin_check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
    _require_multiple(
        "swin_unetr", hw, _SWIN_PATCH**5, "patch size 2 followed by 4 patch-merging stages"
    )
    _require_bottleneck_pixels("swin_unetr", hw, (32, 32), "norm_name", params.get("norm_name"))
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


def _build_swin(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    for key in ("depths", "num_heads", "window_size"):
        if isinstance(params.get(key), list):
            params[key] = tuple(params[key])
    # MONAI >= 1.5 dropped the img_size argument: the network takes any multiple of 32.
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        patch_size=_SWIN_PATCH,
        spatial_dims=2,
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
            **_MONAI_FIXED,
            "patch_size": "fixed at 2 (the SwinUNETR decoder assumes it)",
        },
        summary="MONAI SwinUNETR; H, W multiples of 32; feature_size multiple of 12",
    )
)


# --------------------------------------------------------------------------------------------------
# torchvision FCN
# --------------------------------------------------------------------------------------------------


def _fcn_classes(depth: int) -> tuple[Callable[..., nn.Module], type, type]:
    from torchvision.models import ResNet50_Weights, ResNet101_Weights
    from torchvision.models.segmentation import (
        FCN_ResNet50_Weights,
        FCN_ResNet101_Weights,
        fcn_resnet50,
        fcn_resnet101,
    )

    if depth == 50:
        return fcn_resnet50, FCN_ResNet50_Weights, ResNet50_Weights
    return fcn_resnet101, FCN_ResNet101_Weights, ResNet101_Weights


def _resolve_weights(value: Any, enum_cls: type, model: str, field_name: str) -> Any:
    """``None`` / enum member / string name -> a member of ``enum_cls`` (no download happens here)."""
    if value is None or isinstance(value, enum_cls):
        return value
    options = ", ".join(f"{enum_cls.__name__}.{m}" for m in enum_cls.__members__)
    if not isinstance(value, str):
        raise ValueError(f"model '{model}': {_field(field_name)} must be a string or null, got {value!r}")
    from torchvision.models import get_weight

    try:
        member = get_weight(value) if "." in value else enum_cls[value]
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError(
            f"model '{model}': unknown {_field(field_name)}={value!r}; valid: {options}, or null"
        ) from exc
    if not isinstance(member, enum_cls):
        raise ValueError(
            f"model '{model}': {_field(field_name)}={value!r} is not a {enum_cls.__name__} entry; "
            f"valid: {options}, or null"
        )
    return member


def _fcn_check_factory(model: str, depth: int) -> Callable[..., None]:
    def check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
        _require_min(
            model, hw, 16,
            "the ResNet backbone has output stride 8 and needs at least a 2x2 feature map",
        )
        _, fcn_w, backbone_w = _fcn_classes(depth)
        _resolve_weights(params.get("weights"), fcn_w, model, "weights")
        _resolve_weights(params.get("weights_backbone"), backbone_w, model, "weights_backbone")
        path = params.get("weights_path")
        if path is not None and not os.path.isfile(os.path.expanduser(str(path))):
            raise ValueError(f"model '{model}': {_field('weights_path')}={path!r} is not a file")

    return check


class FCNLogits(nn.Module):
    """torchvision FCN returning the ``"out"`` logits tensor; state-dict keys match torchvision's."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = self.classifier(self.backbone(x)["out"])
        return nn.functional.interpolate(out, size=size, mode="bilinear", align_corners=False)


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight ``(out, c, kh, kw)`` re-made for ``in_channels`` inputs: the mean over the ``c``
    input filters, repeated and scaled by ``c / in_channels``. For one channel this is the sum of the RGB
    filters, so a grey image gives the activations the original conv gives that image replicated to RGB.
    """
    mean = weight.detach().mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


def _adapted_conv1(weight: torch.Tensor | None, in_channels: int, like: nn.Conv2d) -> nn.Conv2d:
    """A stem conv for ``in_channels``; from RGB ``weight`` (:func:`adapt_conv_weight`) if given."""
    conv = nn.Conv2d(
        in_channels, like.out_channels, like.kernel_size, like.stride, like.padding, bias=False
    )
    if weight is None:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    else:
        with torch.no_grad():
            conv.weight.copy_(adapt_conv_weight(weight, in_channels))
    return conv


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


def _load_fcn_state(model: nn.Module, path: str, in_channels: int, name: str) -> None:
    """Load a local state dict into a torchvision-layout FCN, adapting the stem and head shapes.

    Accepts a full FCN state dict (torchvision file or a musclelab ``fcn_*`` model), optionally under
    ``"state_dict"`` / ``"model"`` (e.g. a musclelab Lightning checkpoint, whose network lives under
    ``net.``) and with ``module.`` / ``net.`` prefixes, or a plain ResNet
    backbone state dict (keys ``conv1.weight``, ``layer1...``).
    """
    state = read_state_dict(path, f"model '{name}': {_field('weights_path')}")
    for prefix in ("module.", "net."):  # DataParallel / musclelab Lightning task (``self.net``) layouts
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not any(k.startswith(("backbone.", "classifier.")) for k in state):  # backbone-only file
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}

    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(
            f"model '{name}': {_field('weights_path')}={path!r} has keys this network lacks, e.g. "
            f"{unexpected[:5]}; is it a {name} / ResNet state dict?"
        )
    skipped = []
    stem = "backbone.conv1.weight"
    if stem in state and state[stem].shape != own[stem].shape:
        conv = _adapted_conv1(state[stem], in_channels, model.backbone.conv1)
        state[stem] = conv.weight.detach()
    for key in list(state):
        if state[key].shape != own[key].shape:
            if key.startswith("classifier."):
                skipped.append(key)
                del state[key]
            else:
                raise ValueError(
                    f"model '{name}': {_field('weights_path')} tensor {key} has shape "
                    f"{tuple(state[key].shape)}, the network needs {tuple(own[key].shape)}"
                )
    missing = sorted(set(own) - set(state))
    model.load_state_dict(state, strict=False)
    if skipped:
        log.warning("%s: kept a fresh output head (class count differs): %s", name, skipped)
    if missing:
        log.info("%s: %d tensors not in %s kept their initialisation", name, len(missing), path)


def _fcn_builder(depth: int) -> Callable[..., nn.Module]:
    name = f"fcn_resnet{depth}"

    def build(
        in_channels: int,
        out_channels: int,
        hw: tuple[int, int],
        weights: str | None = None,
        weights_backbone: str | None = None,
        weights_path: str | None = None,
    ) -> nn.Module:
        builder, fcn_w, backbone_w = _fcn_classes(depth)
        w = _resolve_weights(weights, fcn_w, name, "weights")
        wb = _resolve_weights(weights_backbone, backbone_w, name, "weights_backbone")
        pretrained = weights_path is None and (w is not None or wb is not None)
        if weights_path is None and w is not None:
            net = builder(weights=w, weights_backbone=None)  # torchvision downloads if not cached
            net.aux_classifier = None
            head = net.classifier[4]
            if head.out_channels != out_channels:
                net.classifier[4] = nn.Conv2d(head.in_channels, out_channels, kernel_size=1)
        else:
            net = builder(
                weights=None,
                weights_backbone=wb if weights_path is None else None,
                num_classes=out_channels,
                aux_loss=False,
            )
        if in_channels != net.backbone.conv1.in_channels:
            old = net.backbone.conv1
            net.backbone.conv1 = _adapted_conv1(old.weight.detach() if pretrained else None, in_channels, old)
        model = FCNLogits(net.backbone, net.classifier)
        if weights_path is not None:
            _load_fcn_state(model, str(weights_path), in_channels, name)
        return model

    return build


for _depth in (101, 50):
    _name = f"fcn_resnet{_depth}"
    MODELS.register(_name)(
        ModelSpec(
            name=_name,
            build=_fcn_builder(_depth),
            defaults={"weights": None, "weights_backbone": None, "weights_path": None},
            check=_fcn_check_factory(_name, _depth),
            forbidden={
                "num_classes": "it is set from the number of output channels",
                "aux_loss": "only the main head's logits are returned",
            },
            summary=f"torchvision FCN-ResNet{_depth} (output stride 8, bilinear upsampling); any H, W >= 16",
        )
    )


# --------------------------------------------------------------------------------------------------
# segmentation-models-pytorch
# --------------------------------------------------------------------------------------------------

_SMP_MANAGED = ("in_channels", "classes")


def _smp_arch(arch: Any) -> type:
    import segmentation_models_pytorch as smp

    mapping = smp.MODEL_ARCHITECTURES_MAPPING
    if not isinstance(arch, str) or arch.lower() not in mapping:
        names = ", ".join(c.__name__ for c in mapping.values())
        raise ValueError(f"model 'smp': unknown {_field('arch')}={arch!r}; valid: {names}")
    return mapping[arch.lower()]


def _smp_check_encoder(encoder: Any) -> None:
    import segmentation_models_pytorch as smp

    native = list(smp.encoders.get_encoder_names())
    if not isinstance(encoder, str):
        raise ValueError(f"model 'smp': {_field('encoder_name')} must be a string, got {encoder!r}")
    if encoder in native:
        return
    equivalent = getattr(smp.encoders, "is_equivalent_to_timm_universal", lambda n: False)
    if encoder.startswith("tu-") or equivalent(encoder):
        import timm

        timm_name = encoder[3:] if encoder.startswith("tu-") else encoder.replace("timm-", "")
        if encoder.startswith("tu-") and timm.is_model(timm_name):
            return
        if not encoder.startswith("tu-"):
            return  # smp converts these deprecated "timm-" names itself
        close = difflib.get_close_matches(timm_name, timm.list_models(), n=5)
        raise ValueError(
            f"model 'smp': unknown timm encoder {_field('encoder_name')}={encoder!r}"
            + (f"; close timm names: {', '.join('tu-' + c for c in close)}" if close else "")
            + " (any timm.list_models() name prefixed with 'tu-' works)"
        )
    close = difflib.get_close_matches(encoder, native, n=5)
    raise ValueError(
        f"model 'smp': unknown {_field('encoder_name')}={encoder!r}"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
        + f"; smp encoders: {', '.join(native)}; or any timm model as 'tu-<timm name>'"
    )


def _smp_extra(params: dict[str, Any]) -> set[str] | None:
    cls = _smp_arch(params.get("arch"))
    _smp_check_encoder(params.get("encoder_name"))
    if str(params["encoder_name"]).startswith("tu-"):
        return None  # unknown keywords go on to timm.create_model, which validates them
    return _signature_params(cls, _SMP_MANAGED) | {"arch"}


def _smp_kwargs(params: dict[str, Any], hw: tuple[int, int]) -> dict[str, Any]:
    """Keyword arguments for the smp architecture class (without arch / in_channels / classes)."""
    kwargs = {k: v for k, v in params.items() if k != "arch"}
    if kwargs.get("encoder_depth") is None:
        kwargs.pop("encoder_depth", None)
    for key, value in list(kwargs.items()):
        if isinstance(value, list) and key != "aux_params":
            kwargs[key] = tuple(value)
    if str(params["arch"]).lower() == "dpt" and not ({"img_size", "dynamic_img_size"} & set(kwargs)):
        kwargs["img_size"] = hw  # timm ViT encoders are built for one input size
    return kwargs


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@functools.lru_cache(maxsize=64)
def _smp_probe(arch: str, frozen: tuple[Any, ...]) -> tuple[nn.Module, int, bool]:
    """A meta-device copy of an smp model (no memory, no download), its encoder output stride and
    whether smp requires inputs divisible by it."""
    params = {k: v for k, v in frozen if k != "aux_params"}
    params["encoder_weights"] = None  # never download for a shape check
    cls = _smp_arch(arch)

    def make() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(in_channels=3, classes=1, **params)

    try:
        with torch.device("meta"):
            model = make()
    except Exception:  # some encoders cannot initialise on the meta device: build on CPU, then move
        with torch.random.fork_rng(devices=[]):
            try:
                model = make().to("meta")
            except Exception as exc:
                raise ValueError(
                    f"model 'smp' cannot be built with {_field('arch')}={arch!r}, "
                    f"{_field('encoder_name')}={params.get('encoder_name')!r}: {exc}"
                ) from exc
    stride = int(model.encoder.output_stride)
    return model, stride, bool(getattr(model, "requires_divisible_input_shape", True))


def _smp_dry_run(model: nn.Module, hw: tuple[int, int]) -> str | None:
    """Run a shape-only forward on the meta device; the problem as text, or None if it works."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(torch.empty(2, 3, *hw, device="meta"))
    except Exception as exc:  # noqa: BLE001 - any failure means "this size does not work"
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return f"a shape-only trial forward pass fails ({type(exc).__name__}: {first_line})"
    out = out[0] if isinstance(out, (tuple, list)) else out
    if tuple(out.shape[-2:]) != hw:
        return f"a shape-only trial forward pass gives {tuple(out.shape[-2:])} outputs instead of {hw}"
    return None


def _smp_size_ok(params: dict[str, Any], hw: tuple[int, int]) -> tuple[str | None, int, bool]:
    """(problem or None, output stride, divisibility required) for ``params`` at ``hw``."""
    model, stride, divisible = _smp_probe(params["arch"], _freeze(_smp_kwargs(params, hw)))
    if divisible and (hw[0] % stride or hw[1] % stride):
        return (
            f"height and width must be multiples of the encoder output stride {stride}",
            stride,
            divisible,
        )
    return _smp_dry_run(model, hw), stride, divisible


def _smp_check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
    problem, stride, divisible = _smp_size_ok(params, hw)
    if problem is None:
        return
    desc = f"arch {params['arch']} with encoder {params['encoder_name']}"
    # suggest the nearest square sizes (multiples of the stride) for which a dry run works
    found: list[int] = []
    base = max(hw) // stride * stride
    for direction in (-1, 1):
        for step in range(0 if direction < 0 else 1, 17):
            size = base + direction * step * stride
            if size >= stride and _smp_size_ok(params, (size, size))[0] is None:
                found.append(size)
                break
    suggestion = " or ".join(str(s) for s in sorted(set(found))) or "a larger multiple of " + str(stride)
    alternatives = _field("encoder_depth")
    if params["arch"].lower() in ("deeplabv3", "deeplabv3plus", "pan"):
        alternatives += " / " + _field("encoder_output_stride")
    raise ValueError(
        f"model 'smp' ({desc}) cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: {problem}. Fix: set `{SIZE_FIELD}` to e.g. {suggestion}, or change "
        f"{alternatives} / {_field('arch')}."
    )


def _build_smp(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    cls = _smp_arch(params["arch"])
    kwargs = _smp_kwargs(params, hw)
    model = cls(in_channels=in_channels, classes=out_channels, **kwargs)
    if getattr(model, "classification_head", None) is not None:
        return _FirstOutput(model)  # forward returns (mask, label): keep the mask logits
    return model


MODELS.register("smp")(
    ModelSpec(
        name="smp",
        build=_build_smp,
        defaults={
            "arch": "Unet",
            "encoder_name": "resnet34",
            "encoder_weights": None,
            "encoder_depth": None,
        },
        check=_smp_check,
        extra=_smp_extra,
        forbidden={
            "activation": "build_model returns logits; the loss / metrics apply sigmoid or softmax",
            "in_channels": "it is set from the data",
            "classes": "it is set from the number of output channels",
        },
        summary="segmentation-models-pytorch arch x encoder; H, W multiples of the encoder output stride",
    )
)
