"""Tests for the model registry: every entry builds, runs forward + backward, and rejects bad configs."""
from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from musclelab.models import (
    MODELS,
    PARAMS_FIELD,
    UnknownModelParameterError,
    accepted_params,
    build_model,
    check_input_size,
    model_defaults,
)
from musclelab.registry import UnknownNameError

P = PARAMS_FIELD  # config section of model parameters, e.g. "model.params"

ALL_MODELS = ["dynunet", "fcn_resnet101", "fcn_resnet50", "paratranscnn", "ronneberger_unet", "segresnet", "smp",
              "swin_unetr", "unet", "unetr", "vnet"]

# Small widths so the whole table runs in seconds on a 2-core CPU.
SMALL: dict[str, dict[str, Any]] = {
    "vnet": {},
    "unet": {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
    "unetr": {"feature_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_heads": 2},
    "swin_unetr": {"feature_size": 12, "depths": (1, 1, 1, 1)},
    "fcn_resnet50": {},
    "fcn_resnet101": {},
    "smp": {"encoder_name": "resnet18", "decoder_channels": (32, 16, 16, 8, 8)},
    "ronneberger_unet": {"features": 4},
}

# (model, kwargs, in_channels, out_channels, img_size)
CASES = [
    ("vnet", SMALL["vnet"], 1, 1, 32),
    ("vnet", SMALL["vnet"], 2, 6, 32),
    ("unet", SMALL["unet"], 1, 1, 32),
    ("unet", SMALL["unet"], 3, 6, (32, 48)),
    ("ronneberger_unet", SMALL["ronneberger_unet"], 1, 1, 32),
    ("ronneberger_unet", SMALL["ronneberger_unet"], 3, 6, (32, 48)),
    ("unetr", SMALL["unetr"], 1, 1, 32),
    ("unetr", SMALL["unetr"], 3, 6, (32, 48)),
    ("swin_unetr", SMALL["swin_unetr"], 1, 1, 64),
    ("swin_unetr", SMALL["swin_unetr"], 3, 6, (32, 64)),
    ("fcn_resnet50", SMALL["fcn_resnet50"], 1, 1, 32),
    ("fcn_resnet50", SMALL["fcn_resnet50"], 3, 6, 40),
    ("fcn_resnet101", SMALL["fcn_resnet101"], 1, 6, 32),
    ("smp", SMALL["smp"], 1, 1, 64),
    ("smp", SMALL["smp"], 3, 6, (32, 64)),
    ("smp", {"arch": "FPN", "encoder_name": "resnet18", "decoder_pyramid_channels": 32,
             "decoder_segmentation_channels": 32}, 1, 6, 64),
    ("smp", {"arch": "DeepLabV3Plus", "encoder_name": "resnet18", "decoder_channels": 32}, 3, 1, 48),
    ("smp", {**SMALL["smp"], "aux_params": {"classes": 2}}, 1, 6, 64),
]

# (model, kwargs, a size the architecture cannot take, a config field the message must name)
BAD_SIZES = [
    ("vnet", {}, 40, "data.img_size"),
    ("unet", {}, 40, f"{P}.strides"),
    ("unetr", SMALL["unetr"], 40, "data.img_size"),
    ("swin_unetr", SMALL["swin_unetr"], 48, "data.img_size"),
    ("swin_unetr", SMALL["swin_unetr"], 32, f"{P}.norm_name"),  # 1x1 bottleneck + instance norm
    ("unet", {}, 16, f"{P}.norm"),
    ("ronneberger_unet", {}, 40, f"{P}.depth"),
    ("fcn_resnet50", {}, 8, "data.img_size"),
    ("fcn_resnet101", {}, (64, 8), "data.img_size"),
    ("smp", {"arch": "FPN", "encoder_name": "resnet18"}, 48, "data.img_size"),
    ("smp", {"arch": "PAN", "encoder_name": "resnet18"}, 64, "data.img_size"),
]


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights fails the test (there is no network at test time)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model tried to download weights")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)


def _hw(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else img_size


def test_registered_names() -> None:
    # "custom" is the plug-in entry (model._target_; tests/test_plugins.py), not an architecture of its own
    assert MODELS.names() == sorted([*ALL_MODELS, "custom"])


@pytest.mark.parametrize(
    "name, kwargs, cin, cout, img_size",
    CASES,
    ids=[f"{c[0]}-{c[2]}to{c[3]}-{i}" for i, c in enumerate(CASES)],
)
def test_forward_backward(name: str, kwargs: dict, cin: int, cout: int, img_size: Any) -> None:
    torch.manual_seed(0)
    model = build_model(name, cin, cout, img_size, **kwargs)
    h, w = _hw(img_size)
    x = torch.randn(2, cin, h, w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert not isinstance(y, (dict, tuple, list))
    assert tuple(y.shape) == (2, cout, h, w)
    assert y.dtype == torch.float32
    y.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_vnet_rejects_in_channels_not_dividing_16() -> None:
    with pytest.raises(ValueError, match="divide 16"):
        check_input_size("vnet", 32, in_channels=3)
    with pytest.raises(ValueError, match="divide 16"):
        build_model("vnet", 3, 1, 32)


def test_unknown_model_lists_all_names() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("not_a_model", 1, 1, 64)
    message = str(info.value)
    assert "model.name" in message
    for name in ALL_MODELS:
        assert name in message


@pytest.mark.parametrize("name, kwargs, img_size, field", BAD_SIZES, ids=[b[0] for b in BAD_SIZES])
def test_bad_size_rejected_before_building(
    name: str, kwargs: dict, img_size: Any, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")) as info:
        check_input_size(name, img_size, **kwargs)
    assert name in str(info.value) and "Fix:" in str(info.value)

    def must_not_build(*args: Any, **kw: Any) -> None:
        raise AssertionError("build_model built the network before checking the size")

    spec = MODELS.get(name)
    monkeypatch.setitem(MODELS._entries, name, dataclasses.replace(spec, build=must_not_build))
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build_model(name, 1, 1, img_size, **kwargs)


def test_batch_norm_allows_1x1_bottleneck() -> None:
    check_input_size("swin_unetr", 32, norm_name="batch")
    check_input_size("unet", 16, norm="BATCH")


def test_size_suggestions_are_valid() -> None:
    with pytest.raises(ValueError, match=r"multiple of 32 such as 96 or 128"):
        check_input_size("swin_unetr", 100)
    check_input_size("swin_unetr", 96)
    check_input_size("swin_unetr", 128)


@pytest.mark.parametrize(
    "name, field",
    [
        ("unetr", f"{P}.num_heads"),
        ("swin_unetr", f"{P}.feature_size"),
    ],
)
def test_bad_width_rejected(name: str, field: str) -> None:
    bad = {"unetr": {"hidden_size": 100, "num_heads": 6}, "swin_unetr": {"feature_size": 16}}[name]
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        check_input_size(name, 64, **bad)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_unknown_kwarg_rejected(name: str) -> None:
    with pytest.raises(UnknownModelParameterError) as info:
        build_model(name, 1, 1, 64, definitely_not_a_param=1)
    message = str(info.value)
    assert f"model '{name}'" in message and f"{P}.definitely_not_a_param" in message
    for param in model_defaults(name):
        assert param in message  # the accepted parameters are listed
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_typo_gets_a_suggestion() -> None:
    with pytest.raises(TypeError, match=rf"did you mean `{re.escape(P)}\.channels`"):
        check_input_size("unet", 64, chanels=(8, 16))


def test_fixed_params_explained() -> None:
    # the spatial dimensions come from the data (a keyword, not a model parameter); 2D-only models say so
    with pytest.raises(ValueError, match="data.spatial_dims=2"):
        check_input_size("smp", 64, spatial_dims=3)
    with pytest.raises(TypeError, match="logits"):
        check_input_size("smp", 64, activation="sigmoid")


def test_defaults_are_accepted_params() -> None:
    for name in ALL_MODELS:
        assert set(model_defaults(name)) <= set(accepted_params(name))


def test_smp_unknown_encoder_and_arch() -> None:
    with pytest.raises(ValueError, match=r"resnet33.*resnet34"):
        check_input_size("smp", 64, encoder_name="resnet33")
    with pytest.raises(ValueError, match=r"tu-not_a_timm_model"):
        check_input_size("smp", 64, encoder_name="tu-not_a_timm_model")
    with pytest.raises(ValueError, match=rf"{re.escape(P)}\.arch.*UnetPlusPlus"):
        check_input_size("smp", 64, arch="NotAnArch")


def test_smp_unet_takes_any_size_deeplab_needs_stride() -> None:
    check_input_size("smp", 100, encoder_name="resnet18")  # smp Unet interpolates to the skips
    with pytest.raises(ValueError, match=r"output stride 16"):
        check_input_size("smp", 100, arch="DeepLabV3Plus", encoder_name="resnet18")


def test_hydra_containers_accepted() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"channels": [4, 8, 16], "strides": [2, 2]}, "img_size": [32, 32]})
    model = build_model("unet", 1, 2, cfg.img_size, **cfg.model)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["unet", "swin_unetr", "smp", "fcn_resnet50"])
def test_deterministic_build(name: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        states.append(_params(build_model(name, 1, 3, 64, **SMALL[name])))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_fcn_weights_path_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("fcn_resnet101", 1, 6, 64)
    with torch.no_grad():
        for i, p in enumerate(source.parameters()):
            p.add_(0.01 * (i % 7))  # deterministic change so a fresh init cannot match by chance
    expected = _params(source)
    path = tmp_path / "fcn.pt"
    torch.save(source.state_dict(), path)

    torch.manual_seed(1)
    loaded = build_model("fcn_resnet101", 1, 6, 64, weights_path=str(path))
    got = _params(loaded)
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_fcn_weights_path_torchvision_checkpoint(tmp_path: Path) -> None:
    """A torchvision COCO-layout file (21 classes, RGB stem, aux head) adapts to 1 channel, 2 classes."""
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    reference = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    path = tmp_path / "fcn_resnet50_coco.pth"
    torch.save(reference.state_dict(), path)
    ref = _params(reference)

    model = build_model(
        "fcn_resnet50", 1, 2, 64,
        weights="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1", weights_path=str(path),
    )
    got = _params(model)
    assert torch.allclose(got["backbone.conv1.weight"], ref["backbone.conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(got["backbone.layer4.2.conv3.weight"], ref["backbone.layer4.2.conv3.weight"])
    assert torch.equal(got["classifier.0.weight"], ref["classifier.0.weight"])
    assert got["classifier.4.weight"].shape[0] == 2  # fresh head for the new class count
    assert not any(k.startswith("aux_classifier") for k in got)


def test_fcn_pretrained_download_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.weights`` without a path goes through torchvision's loader (faked here: no network)."""
    import torchvision.models._api as tv_api
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    reference = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    ref = _params(reference)
    urls: list[str] = []

    def fake_loader(url: str, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        urls.append(url)
        return reference.state_dict()

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake_loader)
    model = build_model("fcn_resnet50", 1, 2, 64, weights="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1")
    got = _params(model)
    assert len(urls) == 1 and "fcn_resnet50" in urls[0]
    assert torch.allclose(got["backbone.conv1.weight"], ref["backbone.conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(got["classifier.0.weight"], ref["classifier.0.weight"])
    assert got["classifier.4.weight"].shape[0] == 2
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 2, 64, 64)


def test_fcn_weights_path_backbone_only(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(0)
    backbone = resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(backbone.state_dict(), path)
    model = build_model(
        "fcn_resnet50", 3, 2, 64, weights_backbone="ResNet50_Weights.IMAGENET1K_V1", weights_path=str(path)
    )
    assert torch.equal(model.state_dict()["backbone.layer1.0.conv1.weight"], backbone.layer1[0].conv1.weight)


def test_fcn_bad_weights_names() -> None:
    with pytest.raises(ValueError, match=rf"{re.escape(P)}\.weights.*COCO_WITH_VOC_LABELS_V1"):
        check_input_size("fcn_resnet101", 64, weights="NOT_A_WEIGHT")
    with pytest.raises(ValueError, match=rf"{re.escape(P)}\.weights_backbone"):
        check_input_size("fcn_resnet101", 64, weights_backbone="ResNet50_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match=rf"{re.escape(P)}\.weights_path"):
        check_input_size("fcn_resnet50", 64, weights_path="/no/such/file.pth")
