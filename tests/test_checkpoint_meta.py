"""Self-describing checkpoints: what a SegmentationTask checkpoint carries, and safe loading."""
from __future__ import annotations

import pickle

import pytest
import torch

from musclelab.checkpoint_meta import META_KEY, build_network, data_fields, load_checkpoint
from musclelab.errors import ConfigError
from musclelab.tasks import SegmentationTask

PARAMS = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def _task(channels: int = 1) -> SegmentationTask:
    meta = data_fields({"name": "phantom", "window": "wl400_50", "channels": channels, "img_size": 32,
                        "source": {"target": "muscle"}})
    return SegmentationTask(model="unet", model_params=PARAMS, in_channels=channels,
                            class_names=["background", "muscle"], img_size=32, meta=meta)


def _save(task: SegmentationTask, path) -> None:
    ckpt = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)


@pytest.mark.parametrize("channels", [1, 3])
def test_checkpoint_describes_itself_and_rebuilds_the_network(tmp_path, channels):
    torch.manual_seed(0)
    task = _task(channels).eval()
    path = tmp_path / "best.ckpt"
    _save(task, path)
    loaded = load_checkpoint(path)
    meta = loaded.meta
    assert meta["model"] == {"name": "unet", "params": PARAMS}
    assert meta["class_names"] == ["background", "muscle"]
    assert meta["window"] == {"name": "wl400_50", "hu_min": -150.0, "hu_max": 250.0, "gamma": 1.0}
    assert meta["channels"] == channels and meta["in_channels"] == channels
    assert meta["normalisation"]["name"] == ("imagenet" if channels == 3 else "none")
    assert meta["spatial_dims"] == 2 and meta["img_size"] == 32
    assert meta["musclelab_version"] and meta["data"]["name"] == "phantom"
    net = build_network(loaded)
    x = torch.randn(2, channels, 32, 32)
    torch.testing.assert_close(net(x), task(x))
    # only tensors and plain containers: loadable without unpickling any class
    assert META_KEY in torch.load(path, weights_only=True)


def test_run_directory_resolves_to_best_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "csv").mkdir()
    _save(_task(), tmp_path / "checkpoints" / "best.ckpt")
    assert load_checkpoint(tmp_path).path == tmp_path / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigError, match="no checkpoints/best.ckpt"):
        load_checkpoint(tmp_path / "checkpoints" / ".." / "csv")


class _Foreign:  # any class: safe loading must refuse it, not run its unpickling
    pass


def test_foreign_files_get_one_line_errors(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "obj": _Foreign()}, foreign)
    with pytest.raises(ConfigError, match="not a musclelab checkpoint") as err:
        load_checkpoint(foreign)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ConfigError, match="not a musclelab one"):
        load_checkpoint(other)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="not a PyTorch checkpoint"):
        load_checkpoint(text)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"a": _Foreign()}))
    with pytest.raises(ConfigError):
        load_checkpoint(raw)
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
