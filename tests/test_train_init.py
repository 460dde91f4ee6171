"""Initialisation inside a training run: ImageNet weights from a local file, a previous run's checkpoint,
and the channel check — the same code paths a user takes offline."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision

from conftest import compose_cfg
from musclelab.outputs.status import read_status
from musclelab.train import train

FCN = ["model=fcn_resnet50", "data.img_size=32", "data.channels=3", "trainer.limit_train_batches=2",
       "trainer.limit_val_batches=1", "logger=none", "test=false"]


def test_imagenet_from_local_file_then_checkpoint_init(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    first = tmp_path / "imagenet_run"
    train(compose_cfg(first, [*FCN, "init=imagenet", "init.weights=ResNet50_Weights.IMAGENET1K_V1",
                              f"init.weights_path={weights}"]))
    assert read_status(first) == "complete"
    report = json.loads((first / "transfer_report.json").read_text())
    assert report["counts"]["transferred"] > 300 and report["init"] == "imagenet"
    assert all(name.startswith("backbone.") for name in report["transferred"])

    second = tmp_path / "checkpoint_run"
    train(compose_cfg(second, [*FCN, "init=checkpoint", f"init.checkpoint={first}"]))
    report = json.loads((second / "transfer_report.json").read_text())
    assert report["counts"]["new"] == 0  # same architecture: every tensor comes from the earlier run


def test_imagenet_init_needs_three_channels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.channels=3"):
        train(compose_cfg(tmp_path / "run", ["model=fcn_resnet50", "data.img_size=32", "init=imagenet",
                                             "logger=none"]))


@pytest.mark.parametrize("pretext, extra", [("autoencoder", []),
                                            ("jigsaw", ["init.pretext.n_perms=8"])])
def test_pretext_pretraining_runs_once_and_is_reused(tmp_path: Path, pretext: str, extra: list[str]) -> None:
    cache = tmp_path / "cache"
    common = [*FCN, f"init={pretext}", "init.pretext.epochs=2", "init.pretext.patience=1", "init.pretext.batch_size=4",
              f"paths.cache_dir={cache}", "data.source.n_cases=16", *extra]
    train(compose_cfg(tmp_path / "n4", [*common, "data.n_train=4"]))
    built = list((cache / "pretext").glob(f"{pretext}-*/trunk.pt"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    train(compose_cfg(tmp_path / "n8", [*common, "data.n_train=8", "seed=1"]))  # other n and seed: same pretext
    assert list((cache / "pretext").glob(f"{pretext}-*/trunk.pt")) == built and built[0].stat().st_mtime_ns == stamp
    report = json.loads((tmp_path / "n8" / "transfer_report.json").read_text())
    assert report["counts"]["transferred"] > 100
    if pretext == "jigsaw":  # the trunk only
        assert all(n.startswith("backbone.") for n in report["transferred"])
    else:  # encoder and decoder: every tensor whose name and shape match, all but the last conv
        assert "classifier.0.weight" in report["transferred"] and "classifier.1.running_var" in report["transferred"]
        assert "classifier.4.weight" not in report["transferred"]
    # the stage's curve (Appendix A) is in the cache and in every run that used it
    manifest = json.loads((built[0].parent / "pretext.json").read_text())
    assert manifest["max_epochs"] == 2 and manifest["best_epoch"] in (0, 1) and manifest["patience"] == 1
    for run in ("n4", "n8"):
        curve = pd.read_csv(tmp_path / run / "pretext_curve.csv")
        assert list(curve["epoch"]) == list(range(len(curve))) and {"train_loss", "val_loss"} <= set(curve)
        assert (tmp_path / run / "pretext_curve.png").stat().st_size > 0
