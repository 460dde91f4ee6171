"""Transfer-learning initialisations: name/shape matching, the report, every init's source, and no downloads."""
from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from musclelab.errors import ConfigError
from musclelab.models import build_model
from musclelab.registry import UnknownNameError
from musclelab.transfer import (
    INIT_KEYS,
    INITS,
    PAPER_LR,
    REPORT_FILE,
    TransferReport,
    apply_init,
    check_init_config,
    expects_imagenet_norm,
    init_defaults,
    paper_lr,
    transfer_weights,
)

SUMMARY = re.compile(r"^transfer (\w+): (\d+) transferred, (\d+) skipped, (\d+) new( \(\d+ adapted\))?$")


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch weights fails the test (there is no network at test time)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tried to download weights")

    import torchvision.models._api as tv_api

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)


@torch.no_grad()
def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """``state`` changed deterministically, IN PLACE (cheap on ResNet-101's 44M weights; pass the state dict of
    a throw-away model): float tensors are scaled and shifted by a per-tensor amount, counters become 7 + seed."""
    for i, v in enumerate(state.values()):
        if v.is_floating_point():
            v.mul_(1.5).add_(0.25 + 1e-3 * i + 0.1 * seed)
        else:
            v.fill_(7 + seed)
    return dict(state)


def snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class Tiny(nn.Module):
    """A torchvision-FCN-like layout: ``backbone`` (conv1, bn1, layer1) + ``classifier``."""

    def __init__(self, in_channels: int = 3, classes: int = 2) -> None:
        super().__init__()
        self.backbone = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 8, 3, bias=False),
            bn1=nn.BatchNorm2d(8),
            layer1=nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)),
        ))
        self.classifier = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Conv2d(8, classes, 1))


def tiny_trunk_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """What a classification-style trunk holds: the backbone's tensors without the ``backbone.`` prefix."""
    torch.manual_seed(seed)
    return perturbed(Tiny().backbone.state_dict(), seed)


# --------------------------------------------------------------------------------------------------
# (1) ImageNet classification ResNet-101 -> FCN-ResNet101 backbone
# --------------------------------------------------------------------------------------------------


def assert_backbone_from(net: nn.Module, head: dict[str, torch.Tensor], src: dict[str, torch.Tensor]) -> None:
    """Every ``backbone.*`` tensor equals its source tensor; every other one equals ``head`` (its snapshot)."""
    after = net.state_dict()
    assert set(after) == {k for k in after if k.startswith("backbone.")} | set(head)
    for k, v in after.items():
        if k.startswith("backbone."):
            assert torch.equal(v, src[k[len("backbone."):]]), k
        else:
            assert torch.equal(v, head[k]), f"{k} changed but has no source counterpart"


def test_imagenet_resnet101_fills_exactly_the_fcn_backbone(tmp_path: Path) -> None:
    """A classification ResNet-101 file through init=imagenet + init.weights_path (the offline path users
    take): every backbone tensor equals the source, nothing else changes, fc.* skipped, classifier.* new."""
    torch.manual_seed(123)
    src = perturbed(torchvision.models.resnet101(weights=None).state_dict(), 0)
    path = tmp_path / "resnet101-imagenet.pth"
    torch.save(src, path)
    torch.manual_seed(0)
    net = build_model("fcn_resnet101", 3, 2, 64)
    before = net.state_dict()  # views: only the head is copied (its random init must survive)
    head = {k: v.clone() for k, v in before.items() if not k.startswith("backbone.")}
    backbone = [k for k in before if k.startswith("backbone.")]
    numels = {k: v.numel() for k, v in before.items()}
    float_backbone = [k for k in backbone if before[k].is_floating_point()]
    assert not any(torch.equal(before[k], src[k[9:]]) for k in float_backbone[::7])  # really different before

    report = apply_init(net, {"name": "imagenet", "weights_path": str(path)}, tmp_path / "run", "fcn_resnet101")

    assert report is not None
    assert_backbone_from(net, head, src)
    assert (report.source_prefix, report.target_prefix) == ("", "backbone.")
    assert report.transferred == backbone  # in the network's order
    assert len(report.transferred) == len(src) - 2
    assert {(s.name, s.reason) for s in report.skipped} == {("fc.weight", "missing"), ("fc.bias", "missing")}
    assert report.new == list(head) and all(k.startswith("classifier.") for k in head) and len(head) == 8
    assert report.adapted == []
    assert report.counts["source_tensors"] == len(src) and report.counts["target_tensors"] == len(numels)
    assert report.summary_line() == f"transfer imagenet: {len(src) - 2} transferred, 2 skipped, 8 new"
    assert report.transferred_numel == sum(numels[k] for k in backbone)
    numel = report.transferred_numel / sum(numels.values())
    assert report.to_dict()["transferred_fraction_of_target_elements"] == pytest.approx(numel)

    saved = json.loads((tmp_path / "run" / REPORT_FILE).read_text())
    assert saved["init"] == "imagenet" and saved["model"] == "fcn_resnet101"
    assert saved["source"] == f"ResNet101_Weights.IMAGENET1K_V1 from {path}"
    assert saved == json.loads(json.dumps(report.to_dict()))

    # the in-memory API gives the same mapping (a second, idempotent transfer)
    direct = transfer_weights(net, src, init="imagenet", source_name=report.source, model_name="fcn_resnet101")
    assert direct.to_dict() == report.to_dict()
    assert_backbone_from(net, head, src)


# --------------------------------------------------------------------------------------------------
# (2) COCO-layout FCN -> our FCN: backbone + head but the class layer; aux head skipped
# --------------------------------------------------------------------------------------------------


def test_coco_fcn_transfers_all_but_class_layer_and_aux(tmp_path: Path) -> None:
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(5)
    coco = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    src = perturbed(coco.state_dict(), 1)
    path = tmp_path / "fcn_coco.pth"
    torch.save(src, path)
    torch.manual_seed(0)
    net = build_model("fcn_resnet50", 3, 2, 64)
    before = snapshot(net)

    cfg = {"name": "coco", "weights": "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1", "weights_path": str(path)}
    report = apply_init(net, cfg, tmp_path, "fcn_resnet50")
    assert report is not None

    head = ["classifier.4.weight", "classifier.4.bias"]
    after = net.state_dict()
    for k, v in after.items():
        assert torch.equal(v, before[k] if k in head else src[k]), k
    assert (report.source_prefix, report.target_prefix) == ("", "")
    assert report.new == head
    by_name = {s.name: s for s in report.skipped}
    assert by_name["classifier.4.weight"].reason == "shape"
    assert by_name["classifier.4.weight"].source_shape == (21, 512, 1, 1)
    assert by_name["classifier.4.weight"].target_shape == (2, 512, 1, 1)
    aux = [k for k in src if k.startswith("aux_classifier.")]
    assert aux and all(by_name[k].reason == "missing" for k in aux)
    assert set(by_name) == set(head) | set(aux)
    assert report.transferred == [k for k in after if k not in head]
    assert any(k.startswith("classifier.0") for k in report.transferred)


# --------------------------------------------------------------------------------------------------
# prefix matching
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "trunk.", "encoder.", "model.", "module.", "net.backbone.", "module.net."])
def test_source_prefix_found_automatically(prefix: str) -> None:
    trunk = tiny_trunk_state()
    src = {prefix + k: v for k, v in trunk.items()}
    src.update({"decoder.0.weight": torch.ones(3, 3), "decoder.0.bias": torch.ones(3)})  # e.g. an AE decoder
    net = Tiny()
    report = transfer_weights(net, src)
    # equivalent pairs tie, e.g. ("net.backbone.", "backbone.") and ("net.", ""): the shorter one is reported
    assert report.target_prefix + (prefix + "conv1.weight")[len(report.source_prefix):] == "backbone.conv1.weight"
    assert len(report.transferred) == len(trunk)
    for k, v in trunk.items():
        assert torch.equal(net.state_dict()[f"backbone.{k}"], v)
    assert {s.name for s in report.skipped} == {"decoder.0.weight", "decoder.0.bias"}


def test_explicit_source_prefix_and_exclude() -> None:
    trunk = tiny_trunk_state()
    src = {**{f"trunk.{k}": v for k, v in trunk.items()}, **{f"other.{k}": v + 1 for k, v in trunk.items()}}
    net = Tiny()
    report = transfer_weights(net, src, source_prefix="other", exclude=["backbone.layer1.1.", "*.running_*"])
    assert report.source_prefix == "other."
    sd = net.state_dict()
    assert torch.equal(sd["backbone.conv1.weight"], trunk["conv1.weight"] + 1)
    reasons = {s.name: s.reason for s in report.skipped}
    assert reasons["trunk.conv1.weight"] == "outside_prefix"
    assert reasons["other.layer1.1.weight"] == "excluded"
    assert reasons["other.bn1.running_mean"] == "excluded"
    assert "backbone.bn1.running_mean" in report.new and "backbone.layer1.1.bias" in report.new


def test_explicit_index_prefix() -> None:
    trunk = tiny_trunk_state()
    report = transfer_weights(Tiny(), {f"0.{k}": v for k, v in trunk.items()}, source_prefix="0.")
    assert (report.source_prefix, report.target_prefix, len(report.transferred)) == ("0.", "backbone.", 13)


def test_unrelated_layers_do_not_match_through_leaf_names_or_list_elements() -> None:
    """Two batch norms with equal shapes but different module names are no match (no leaf prefixes), nor is
    one block of another network that happens to have the shapes of our ``backbone.layer1`` (no index prefixes)."""
    src = {"encoder.1.bn.weight": torch.ones(8), "encoder.1.bn.bias": torch.zeros(8)}
    with pytest.raises(ConfigError, match="no tensor of"):
        transfer_weights(Tiny(), src)
    block = {f"blocks.3.{k}": v for k, v in Tiny().backbone.layer1.state_dict().items()}
    with pytest.raises(ConfigError, match="no tensor of"):
        transfer_weights(Tiny(), block)


def test_classification_resnet_into_smp_encoder() -> None:
    """Any registry model: a torchvision ResNet lands in an smp encoder (``encoder.`` prefix)."""
    torch.manual_seed(0)
    src = perturbed(torchvision.models.resnet18(weights=None).state_dict(), 3)
    net = build_model("smp", 3, 2, 64, encoder_name="resnet18", decoder_channels=(16, 8, 8, 8, 8))
    report = transfer_weights(net, src, init="imagenet")
    assert (report.source_prefix, report.target_prefix) == ("", "encoder.")
    assert len(report.transferred) == len(src) - 2
    assert torch.equal(net.state_dict()["encoder.layer4.1.bn2.running_var"], src["layer4.1.bn2.running_var"])
    assert all(not k.startswith("encoder.") for k in report.new)


# --------------------------------------------------------------------------------------------------
# first conv: 3 -> 1 channels
# --------------------------------------------------------------------------------------------------


def test_first_conv_mismatch_is_skipped_by_default(caplog: pytest.LogCaptureFixture) -> None:
    trunk = tiny_trunk_state()
    net = Tiny(in_channels=1)
    before = snapshot(net)
    with caplog.at_level(logging.WARNING, logger="musclelab.transfer"):
        report = transfer_weights(net, trunk)
    (skip,) = report.skipped
    assert (skip.name, skip.reason, skip.source_shape, skip.target_shape) == (
        "conv1.weight", "shape", (8, 3, 3, 3), (8, 1, 3, 3))
    assert torch.equal(net.state_dict()["backbone.conv1.weight"], before["backbone.conv1.weight"])
    assert "adapt_first_conv" in caplog.text


def test_adapt_first_conv_sums_rgb_filters() -> None:
    trunk = tiny_trunk_state()
    net = Tiny(in_channels=1)
    report = transfer_weights(net, trunk, adapt_first_conv=True)
    assert report.adapted == ["backbone.conv1.weight"] and report.skipped == []
    assert report.summary_line().endswith("(1 adapted)")
    w = net.state_dict()["backbone.conv1.weight"]
    assert torch.allclose(w, trunk["conv1.weight"].sum(dim=1, keepdim=True), atol=1e-6)
    grey = torch.randn(1, 1, 6, 6)  # grey image == the RGB net on the image replicated to 3 channels
    rgb = nn.functional.conv2d(grey.repeat(1, 3, 1, 1), trunk["conv1.weight"])
    assert torch.allclose(nn.functional.conv2d(grey, w), rgb, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# (3) nothing matches -> ConfigError
# --------------------------------------------------------------------------------------------------


def test_zero_matches_raise_naming_init_and_source(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # weights of another network
    net = Tiny()
    before = snapshot(net)
    with pytest.raises(ConfigError, match=r"init 'imagenet': no tensor of .*other\.pth matches tiny: wrong init"):
        apply_init(net, {"name": "imagenet", "weights_path": str(path)}, tmp_path, "tiny")
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not (tmp_path / REPORT_FILE).exists()
    with pytest.raises(ConfigError, match="source_prefix"):
        transfer_weights(Tiny(), tiny_trunk_state(), source_prefix="trunk.")
    with pytest.raises(ConfigError, match="holds no tensors"):
        transfer_weights(Tiny(), {})


# --------------------------------------------------------------------------------------------------
# (4) checkpoint init: Lightning-style .ckpt and run directory; pretext checkpoints
# --------------------------------------------------------------------------------------------------


def fake_lightning_ckpt(path: Path, net: nn.Module) -> dict[str, torch.Tensor]:
    state = perturbed(net.state_dict(), 9)
    ckpt = {
        "epoch": 3, "global_step": 30, "pytorch-lightning_version": "2.5.0",
        "state_dict": {**{f"net.{k}": v for k, v in state.items()}, "loss_fn.class_weight": torch.ones(2)},
        "hyper_parameters": {"model": "tiny", "in_channels": 3},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return state


@pytest.mark.parametrize("layout", ["run_dir", "ckpt_file"])
def test_checkpoint_init_from_lightning_ckpt(tmp_path: Path, layout: str) -> None:
    run = tmp_path / "earlier_run"
    torch.manual_seed(1)
    src = fake_lightning_ckpt(run / "checkpoints" / "best.ckpt", Tiny())
    torch.manual_seed(2)
    net = Tiny()
    where = run if layout == "run_dir" else run / "checkpoints" / "best.ckpt"
    out = tmp_path / "new_run"
    report = apply_init(net, {"name": "checkpoint", "checkpoint": str(where)}, out, "tiny")
    assert report is not None
    assert report.source_prefix == "net." and report.target_prefix == ""
    assert all(torch.equal(v, src[k]) for k, v in net.state_dict().items())
    assert report.new == [] and [(s.name, s.reason) for s in report.skipped] == [("loss_fn.class_weight", "missing")]
    assert report.source == str(run / "checkpoints" / "best.ckpt")
    assert json.loads((out / REPORT_FILE).read_text())["counts"]["transferred"] == len(src)


def test_checkpoint_init_bad_paths(tmp_path: Path) -> None:
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ConfigError, match="checkpoints/best.ckpt"):
        apply_init(Tiny(), {"name": "checkpoint", "checkpoint": str(tmp_path / "empty_run")}, None, "tiny")
    with pytest.raises(ConfigError, match="does not exist"):
        apply_init(Tiny(), {"name": "checkpoint", "checkpoint": str(tmp_path / "nope.ckpt")}, None, "tiny")
    with pytest.raises(ConfigError, match="needs `init.checkpoint`"):
        check_init_config({"name": "jigsaw"})
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        apply_init(Tiny(), {"name": "autoencoder", "weights_path": str(junk)}, None, "tiny")


@pytest.mark.parametrize("init", ["autoencoder", "jigsaw"])
def test_pretext_trunk_from_lightning_ckpt(tmp_path: Path, init: str) -> None:
    trunk = tiny_trunk_state()
    path = tmp_path / f"{init}.ckpt"
    state = {**{f"trunk.{k}": v for k, v in trunk.items()}, "head.weight": torch.ones(4, 8)}
    torch.save({"state_dict": state, "epoch": 1}, path)
    net = Tiny()
    report = apply_init(net, {"name": init, "weights_path": str(path)}, tmp_path, "tiny")
    assert report is not None and report.source_prefix == "trunk." and report.target_prefix == "backbone."
    assert len(report.transferred) == len(trunk)
    assert torch.equal(net.state_dict()["backbone.layer1.1.running_mean"], trunk["layer1.1.running_mean"])


def test_autoencoder_takes_encoder_and_decoder_by_default(tmp_path: Path) -> None:
    """An autoencoder checkpoint (musclelab.pretext layout: ``net.backbone.*`` + an FCN head ``net.classifier.*``)
    transfers every tensor whose name and shape fit, encoder and decoder (McSweeney 2022);
    ``init.source_prefix: net.backbone.`` takes the trunk only."""
    torch.manual_seed(3)
    src = perturbed(Tiny().state_dict(), 2)
    path = tmp_path / "ae.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.items()}}, path)
    net = Tiny()
    report = apply_init(net, {"name": "autoencoder", "checkpoint": str(path)}, None, "tiny")
    assert report is not None and report.source_prefix == "net." and report.new == []
    assert all(torch.equal(v, src[k]) for k, v in net.state_dict().items())
    net = Tiny()
    head = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("classifier.")}
    report = apply_init(net, {"name": "autoencoder", "checkpoint": str(path), "source_prefix": "net.backbone."},
                        None, "tiny")
    assert report is not None and report.source_prefix == "net.backbone."
    assert_backbone_from(net, head, {k[9:]: v for k, v in src.items() if k.startswith("backbone.")})
    assert {s.reason for s in report.skipped} == {"outside_prefix"} and len(report.skipped) == len(head)


# --------------------------------------------------------------------------------------------------
# (5) torchvision weight names: get_weight(name).get_state_dict(progress=True, weights_only=True), no real download
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"name": "imagenet"}, "ResNet101_Weights.IMAGENET1K_V1"),
        ({"name": "imagenet", "weights": "ResNet50_Weights.IMAGENET1K_V2"}, "ResNet50_Weights.IMAGENET1K_V2"),
        ({"name": "coco"}, "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"),
    ],
)
def test_weight_name_path_calls_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cfg: dict[str, Any], expected: str
) -> None:
    calls: list[Any] = []
    trunk = tiny_trunk_state()

    class FakeWeights:
        url = "https://download.invalid/weights.pth"

        def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            calls.append(("get_state_dict", args, kwargs))
            return dict(trunk)

    def fake_get_weight(name: str) -> FakeWeights:
        calls.append(("get_weight", name))
        return FakeWeights()

    monkeypatch.setattr(torchvision.models, "get_weight", fake_get_weight)
    net = Tiny()
    report = apply_init(net, cfg, tmp_path, "tiny")
    assert ("get_weight", expected) in calls
    assert [c for c in calls if c[0] == "get_state_dict"] == [  # weights_only: a hub file never runs code
        ("get_state_dict", (), {"progress": True, "check_hash": True, "weights_only": True})]
    assert report is not None and report.source == expected and len(report.transferred) == len(trunk)


def test_failed_download_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        url = "https://download.pytorch.org/models/resnet101-63fe2227.pth"

        def get_state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_weight", lambda name: Offline())
    with pytest.raises(ConfigError, match=r"resnet101-63fe2227\.pth.*init\.weights_path"):
        apply_init(Tiny(), {"name": "imagenet"}, None, "tiny")


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "imagenet", "weights": "ResNet101_Weights.NOPE"}, "unknown `init.weights`"),
        ({"name": "imagenet", "weights": "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"}, "use init=coco"),
        ({"name": "coco", "weights": "ResNet101_Weights.IMAGENET1K_V1"}, "not a torchvision segmentation"),
        ({"name": "scratch", "weights_path": "/x.pth"}, "does not use `init.weights_path`"),
        ({"name": "imagenet", "checkpoint": "/x"}, "does not use `init.checkpoint`"),
        ({"name": "imagenet", "weigths": "x"}, "unknown init key"),
        ({"name": "imagenet", "weights_path": "/no/such.pth"}, "does not exist"),
        ({"name": "imagenet", "adapt_first_conv": "yes"}, "true or false"),
    ],
)
def test_bad_init_configs_fail_before_loading(cfg: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_init_config(cfg)


def test_unknown_init_name_lists_known() -> None:
    with pytest.raises(UnknownNameError, match=r"init\.name.*autoencoder, checkpoint, coco, imagenet, jigsaw"):
        check_init_config({"name": "simclr"})


# --------------------------------------------------------------------------------------------------
# (6) report file and summary line; scratch; paper defaults
# --------------------------------------------------------------------------------------------------


def test_report_json_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = Tiny()
    report = transfer_weights(net, tiny_trunk_state(), init="jigsaw", source_name="trunk.pth", model_name="tiny")
    m = SUMMARY.match(report.summary_line())
    assert m and m.groups()[:4] == ("jigsaw", "13", "0", "4")
    path = report.write(tmp_path / REPORT_FILE)
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(report.to_dict()))
    assert data["summary"] == report.summary_line()
    assert data["counts"] == {"transferred": 13, "skipped": 0, "new": 4, "adapted": 0,
                              "source_tensors": 13, "target_tensors": 17}
    assert data["new"] == ["classifier.0.weight", "classifier.0.bias", "classifier.1.weight", "classifier.1.bias"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_FILE]  # no temporary file left

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    changed = TransferReport(init="x", source="y", model="z")
    with pytest.raises(OSError):
        changed.write(path)
    assert json.loads(path.read_text()) == data  # the old report is intact, not half-overwritten
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_FILE]


@pytest.mark.parametrize("cfg", [{"name": "scratch"}, None])
def test_scratch_transfers_nothing_and_says_so(tmp_path: Path, cfg: Any, caplog: pytest.LogCaptureFixture) -> None:
    net = Tiny()
    before = snapshot(net)
    with caplog.at_level(logging.INFO, logger="musclelab.transfer"):
        assert apply_init(net, cfg, tmp_path, "tiny") is None
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    data = json.loads((tmp_path / REPORT_FILE).read_text())
    assert data["init"] == "scratch" and data["source"] is None and data["transferred"] == []
    assert data["counts"]["new"] == len(before)
    assert "transfer scratch: no transfer" in caplog.text


def test_omegaconf_config_and_summary_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from omegaconf import OmegaConf

    path = tmp_path / "trunk.pth"
    torch.save({f"encoder.{k}": v for k, v in tiny_trunk_state().items()}, path)
    cfg = OmegaConf.create({**init_defaults("autoencoder"), "weights_path": str(path)})
    with caplog.at_level(logging.INFO, logger="musclelab.transfer"):
        report = apply_init(Tiny(), cfg, tmp_path, "tiny")
    assert report is not None
    assert report.summary_line() in caplog.text
    assert report.summary_line() == "transfer autoencoder: 13 transferred, 0 skipped, 4 new"


def test_registry_and_paper_defaults() -> None:
    assert INITS.names() == ["autoencoder", "checkpoint", "coco", "imagenet", "jigsaw", "scratch"]
    assert PAPER_LR == {"scratch": 3e-3, "transfer": 3e-4}
    assert paper_lr("scratch") == 3e-3
    assert all(paper_lr(n) == 3e-4 for n in INITS.names() if n != "scratch")
    assert [n for n in INITS.names() if expects_imagenet_norm(n)] == ["coco", "imagenet"]
    for name in INITS.names():
        defaults = init_defaults(name)
        assert defaults["name"] == name and set(defaults) <= set(INIT_KEYS)
        if name in ("autoencoder", "jigsaw", "checkpoint"):  # these need a file
            with pytest.raises(ConfigError, match="needs `init.checkpoint`"):
                check_init_config(defaults)
        else:
            assert check_init_config(defaults) == defaults
    assert init_defaults("imagenet")["weights"] == "ResNet101_Weights.IMAGENET1K_V1"
    assert init_defaults("coco")["weights"] == "FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1"
