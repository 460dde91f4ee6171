"""segmentation-models-pytorch architectures x encoders (2D only): ``model=smp``."""
from __future__ import annotations

import difflib
import functools
import warnings
from typing import Any

import torch
from torch import nn

from musclelab.models.registry import (
    MODELS, SIZE_FIELD, ModelSpec, _field, _FirstOutput, _fmt_hw, _signature_params,
)


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


def _smp_kwargs(params: dict[str, Any], hw: tuple[int, ...]) -> dict[str, Any]:
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


def _smp_dry_run(model: nn.Module, hw: tuple[int, ...]) -> str | None:
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


def _smp_size_ok(params: dict[str, Any], hw: tuple[int, ...]) -> tuple[str | None, int, bool]:
    """(problem or None, output stride, divisibility required) for ``params`` at ``hw``."""
    model, stride, divisible = _smp_probe(params["arch"], _freeze(_smp_kwargs(params, hw)))
    if divisible and (hw[0] % stride or hw[1] % stride):
        return (
            f"height and width must be multiples of the encoder output stride {stride}",
            stride,
            divisible,
        )
    return _smp_dry_run(model, hw), stride, divisible


def _smp_check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
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


def _build_smp(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
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
