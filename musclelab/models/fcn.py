"""torchvision FCN-ResNet101 / FCN-ResNet50 (2D only): ``model=fcn_resnet101`` / ``fcn_resnet50``."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch
from torch import nn

from musclelab.models.registry import (
    MODELS, ModelSpec, _field, _require_min, adapt_conv_weight, hub_state_dict, read_state_dict,
)

log = logging.getLogger(__name__)


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
    def check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
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
        hw: tuple[int, ...],
        weights: str | None = None,
        weights_backbone: str | None = None,
        weights_path: str | None = None,
    ) -> nn.Module:
        builder, fcn_w, backbone_w = _fcn_classes(depth)
        w = _resolve_weights(weights, fcn_w, name, "weights")
        wb = _resolve_weights(weights_backbone, backbone_w, name, "weights_backbone")
        pretrained = weights_path is None and (w is not None or wb is not None)
        # pretrained sets are built empty and filled from hub_state_dict (weights_only=True): torchvision's own
        # builders would unpickle the downloaded file with weights_only=False
        if weights_path is None and w is not None:
            net = builder(weights=None, weights_backbone=None, num_classes=len(w.meta["categories"]), aux_loss=True)
            net.load_state_dict(hub_state_dict(w))
            net.aux_classifier = None
            head = net.classifier[4]
            if head.out_channels != out_channels:
                net.classifier[4] = nn.Conv2d(head.in_channels, out_channels, kernel_size=1)
        else:
            net = builder(weights=None, weights_backbone=None, num_classes=out_channels, aux_loss=False)
            if weights_path is None and wb is not None:
                own = net.backbone.state_dict()
                state = hub_state_dict(wb)
                net.backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
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
