"""Plug-ins by ``_target_``: a user's own network trained and predicted, extra callbacks and loggers, and the
one-line errors where a target cannot be imported or is the wrong kind of object."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from musclelab.checkpoint_meta import load_checkpoint
from musclelab.phantoms.l3 import write_phantom_dataset
from musclelab.errors import ConfigError
from musclelab.predict import main_predict
from musclelab.train import train, validate_config
from tests.conftest import compose_cfg

PLUGIN = '''
import torch
from torch import nn

CALLS = []


class TinyNet(nn.Module):
    def __init__(self, in_channels, out_channels, spatial_dims, width=4):
        super().__init__()
        CALLS.append((in_channels, out_channels, spatial_dims, width))
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.body = nn.Sequential(conv(in_channels, width, 3, padding=1), nn.ReLU(), conv(width, out_channels, 1))

    def forward(self, x):
        return self.body(x)
'''

CUSTOM = ["model=custom", "model._target_=ml_plugin_net.TinyNet", "+model.params.width=6", "trainer=debug",
          "data.img_size=64", "data.source.n_cases=12", "data.batch_size=2", "callbacks.progress_bar=false",
          "callbacks.overlay_cases=1"]


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "ml_plugin_net.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("ml_plugin_net", None)


def test_custom_model_trains_and_predicts(tmp_path: Path, plugin_module: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    extra = ["+callbacks.extra.lr._target_=pytorch_lightning.callbacks.LearningRateMonitor",
             "+callbacks.extra.lr.logging_interval=step"]
    train(compose_cfg(run, [*CUSTOM, *extra]))
    import ml_plugin_net

    assert (1, 2, 2, 6) in ml_plugin_net.CALLS  # in_channels, out_channels (2 classes), spatial_dims, width
    meta = load_checkpoint(run).meta
    assert meta["model"] == {"name": "custom", "params": {"_target_": "ml_plugin_net.TinyNet", "width": 6}}
    # Lightning's LearningRateMonitor (the extra callback) puts lr-Adam into the epoch metrics: metrics.csv has it
    assert "lr-Adam" in pd.read_csv(run / "metrics.csv").columns

    scans = write_phantom_dataset(tmp_path / "scans", n=2, size=64, site="a", seed=1)
    main_predict([str(run), str(scans / "images"), "--out", str(tmp_path / "pred"), "--no-overlays"])
    assert len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 2

    # where the class cannot be imported, predict says so in one line
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(plugin_module)])
    sys.modules.pop("ml_plugin_net", None)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main_predict([str(run), str(scans / "images"), "--out", str(tmp_path / "pred2")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1, err
    assert "ml_plugin_net.TinyNet" in err and "PYTHONPATH" in err


@pytest.mark.parametrize("override, message", [
    ("model._target_=no_such_module.Net", r"model\._target_=no_such_module\.Net: cannot be imported \(No module"),
    ("model._target_=null", r"model=custom needs model\._target_"),
])
def test_custom_model_errors_before_data(tmp_path: Path, override: str, message: str) -> None:
    cfg = compose_cfg(tmp_path, [*CUSTOM, override])
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)


def test_plugin_of_the_wrong_kind_is_one_line(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path / "run", ["trainer=debug", "logger=none",
                                         "+callbacks.extra.conv._target_=torch.nn.Identity"])
    with pytest.raises(ConfigError, match=r"callbacks\.extra\.conv\._target_=torch\.nn\.Identity is a Identity, "
                                          r"not a Callback"):
        train(cfg)


def test_unknown_logger_entry_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path, ["+logger.comet.project=x"])
    with pytest.raises(ConfigError, match=r"logger\.comet: unknown logger; known loggers: csv, mlflow, "
                                          r"tensorboard, wandb"):
        validate_config(cfg)


def test_plugin_logger_by_target(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = compose_cfg(run, ["trainer=debug", "logger=none", "+logger.mine._target_=pytorch_lightning.loggers.CSVLogger",
                            f"+logger.mine.save_dir={tmp_path / 'mine'}", "data.img_size=64",
                            "data.source.n_cases=12", "test=false"])
    train(cfg)
    logged = list((tmp_path / "mine").rglob("metrics.csv"))
    assert logged and "train/loss_step" in pd.read_csv(logged[0]).columns
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["musclelab"]["model"]["name"] == "unet"
