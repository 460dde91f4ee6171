"""ParaTransCNN (parallel ResNet-34 + ViT, channel-attention fusion): shapes, gradients, size rules, configs."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from musclelab.models import (
    MODELS,
    PARAMS_FIELD,
    UnknownModelParameterError,
    build_model,
    check_input_size,
    model_defaults,
)
from musclelab.models.paratranscnn import IMG_SIZE, ParaTransCNN

P = re.escape(PARAMS_FIELD)
CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "paratranscnn.yaml"
# A narrower transformer for the cases that only need the wiring (the ResNet-34 dominates the cost anyway).
SMALL: dict[str, Any] = {"embed_dim": 64, "depth": 2, "num_heads": 2, "decoder_channels": [32, 16, 16, 8, 8]}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights fails the test (there is no network at test time)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model tried to download weights")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)


def test_registered_with_yaml_defaults() -> None:
    from omegaconf import OmegaConf

    assert "paratranscnn" in MODELS
    cfg = OmegaConf.to_container(OmegaConf.load(CONF), resolve=True)
    assert cfg["name"] == "paratranscnn"
    defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in model_defaults("paratranscnn").items()}
    assert cfg["params"] == defaults
    assert "224" in CONF.read_text()


@pytest.mark.parametrize(
    "batch, cin, cout, kwargs",
    [(1, 1, 1, {}), (2, 3, 6, SMALL)],
    ids=["b1-1to1-defaults", "b2-3to6-small"],
)
def test_forward_backward(batch: int, cin: int, cout: int, kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build_model("paratranscnn", cin, cout, IMG_SIZE, **kwargs)
    assert isinstance(model, ParaTransCNN)
    x = torch.randn(batch, cin, IMG_SIZE, IMG_SIZE)
    y = model(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert tuple(y.shape) == (batch, cout, IMG_SIZE, IMG_SIZE)
    y.square().mean().backward()
    # every branch gets a gradient: CNN stem, patch embedding / position embedding, last transformer block,
    # each fusion's channel attention, decoder and head
    named = dict(model.named_parameters())
    for key in ("cnn.conv1.weight", "cnn.layer4.2.conv2.weight", "patch_embed.weight", "pos_embed",
                f"blocks.{len(model.blocks) - 1}.attn.qkv.weight", "fusions.0.se.1.weight",
                "fusions.3.proj.0.weight", "decoder.4.block.0.weight", "head.weight"):
        grad = named[key].grad
        assert grad is not None and grad.abs().sum() > 0, key
    assert named["cnn.conv1.weight"].shape[1] == cin


@pytest.mark.parametrize("img_size", [128, 256, 192, (224, 256), (256, 224)])
def test_other_sizes_rejected_before_building(img_size: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"data\.img_size") as info:
        check_input_size("paratranscnn", img_size)
    message = str(info.value)
    assert "paratranscnn" in message and "Fix:" in message and "224" in message

    def must_not_build(*args: Any, **kw: Any) -> None:
        raise AssertionError("build_model built the network before checking the size")

    spec = MODELS.get("paratranscnn")
    monkeypatch.setitem(MODELS._entries, "paratranscnn", dataclasses.replace(spec, build=must_not_build))
    with pytest.raises(ValueError, match=r"data\.img_size"):
        build_model("paratranscnn", 1, 1, img_size)


def test_accepts_224_in_any_spelling() -> None:
    for size in (224, [224], (224, 224)):
        check_input_size("paratranscnn", size, in_channels=1)


def test_forward_at_wrong_size_says_what_to_set() -> None:
    model = build_model("paratranscnn", 1, 1, 224, **SMALL)
    with pytest.raises(ValueError, match=r"data\.img_size"):
        model(torch.randn(1, 1, 128, 128))


def test_unknown_param_rejected() -> None:
    with pytest.raises(UnknownModelParameterError) as info:
        build_model("paratranscnn", 1, 1, 224, definitely_not_a_param=1)
    message = str(info.value)
    assert f"{PARAMS_FIELD}.definitely_not_a_param" in message
    for param in model_defaults("paratranscnn"):
        assert param in message
    with pytest.raises(TypeError, match=rf"did you mean `{P}\.embed_dim`"):
        check_input_size("paratranscnn", 224, embed_dims=128)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"embed_dim": 100, "num_heads": 3}, "num_heads"),
        ({"patch_size": 15}, "patch_size"),
        ({"decoder_channels": [64, 32, 16]}, "decoder_channels"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_params_named(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"{P}\.{field}"):
        check_input_size("paratranscnn", 224, **kwargs)


def test_taps_and_other_patch_sizes() -> None:
    """Any depth feeds all four fusion scales (shallow blocks -> fine scales); other patch sizes work."""
    torch.manual_seed(0)
    model = build_model("paratranscnn", 1, 2, 224, **{**SMALL, "depth": 6, "patch_size": 32})
    assert model.taps == sorted(model.taps) and model.taps[-1] == 5 and len(model.taps) == 4
    assert model.grid == (7, 7)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 2, 224, 224)
    assert build_model("paratranscnn", 1, 2, 224, **{**SMALL, "depth": 1}).taps == [0, 0, 0, 0]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_deterministic_build() -> None:
    states = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        states.append(_state(build_model("paratranscnn", 1, 3, 224, **SMALL)))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert not torch.equal(states[0]["pos_embed"], states[2]["pos_embed"])


def test_resnet34_weights_transfer_onto_cnn_branch() -> None:
    """The CNN branch keeps torchvision's ResNet key names under ``cnn.`` and holds the first conv."""
    from torchvision.models import resnet34

    from musclelab.transfer import transfer_weights

    torch.manual_seed(0)
    model = build_model("paratranscnn", 3, 2, 224, **SMALL)
    first_conv = next(k for k, v in model.state_dict().items() if v.ndim == 4)
    assert first_conv == "cnn.conv1.weight"
    source = resnet34(weights=None).state_dict()
    report = transfer_weights(model, source, source_name="resnet34")
    assert report.source_prefix == "" and report.target_prefix == "cnn."
    non_fc = [k for k in source if not k.startswith("fc.") and source[k].ndim > 0]
    assert {f"cnn.{k}" for k in non_fc} <= set(report.transferred)
    assert torch.equal(model.state_dict()["cnn.layer3.1.conv1.weight"], source["layer3.1.conv1.weight"])


def test_param_count_reported(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = build_model("paratranscnn", 1, 1, 224)
    total = sum(p.numel() for p in model.parameters())
    cnn = sum(p.numel() for p in model.cnn.parameters())
    with capsys.disabled():
        print(f"\nparatranscnn defaults: {total / 1e6:.2f} M parameters ({cnn / 1e6:.2f} M in the ResNet-34)")
    assert 20e6 < total < 40e6 and cnn > 20e6


def test_init_imagenet_loads_resnet34_by_name_from_a_local_file(tmp_path: Path) -> None:
    """init=imagenet with the torchvision ResNet-34 weight name and a local file (the offline path): the CNN
    branch gets the file's tensors by name; a 1-channel input sums the RGB stem filters (adapt_first_conv)."""
    from torchvision.models import resnet34

    from musclelab.transfer import apply_init

    torch.manual_seed(1)
    keep = ("conv1.", "bn1.", "layer1.")
    source = {k: v for k, v in resnet34(weights=None).state_dict().items() if k.startswith(keep)}
    path = tmp_path / "resnet34-small.pth"
    torch.save(source, path)   # the stem and first stage only: a small file with the torchvision names
    model = build_model("paratranscnn", 1, 2, 224, **SMALL)
    init = {"name": "imagenet", "weights": "ResNet34_Weights.IMAGENET1K_V1", "weights_path": str(path),
            "adapt_first_conv": True}
    report = apply_init(model, init, tmp_path, "paratranscnn")
    state = model.state_dict()
    assert torch.equal(state["cnn.layer1.2.conv2.weight"], source["layer1.2.conv2.weight"])
    assert torch.allclose(state["cnn.conv1.weight"], source["conv1.weight"].sum(1, keepdim=True))
    assert report.target_prefix == "cnn." and (tmp_path / "transfer_report.json").exists()


def test_yoon2024_muscle_gives_paratranscnn_imagenet_and_224_px() -> None:
    """The experiment: ParaTransCNN from ImageNet ResNet-34 at 224 px, the other architectures from scratch at
    512 px (the paper); the smoke keeps 224 px for all and scratch (no download here)."""
    from hydra import compose, initialize_config_dir

    from musclelab.compose import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        para = compose("train", overrides=["experiment=yoon2024_muscle", "model=paratranscnn"])
        vnet = compose("train", overrides=["experiment=yoon2024_muscle", "model=vnet"])
        smoke = compose("train", overrides=["experiment=yoon2024_muscle_smoke", "model=paratranscnn"])
    assert para.data.img_size == 224 and para.init.name == "imagenet" and para.init.adapt_first_conv
    assert para.init.weights == "ResNet34_Weights.IMAGENET1K_V1"
    assert vnet.data.img_size == 512 and vnet.init.name == "scratch" and not vnet.init.weights
    assert smoke.data.img_size == 224 and smoke.init.name == "scratch"
