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


def test_checkpoint_policy_keeps_a_weights_only_best_after_completion(tmp_path, monkeypatch):
    """Default policy: best.ckpt holds weights + description (no optimiser state); last.ckpt (full state for
    resume=) stays while the run is unfinished and is gone once it is complete; keep_last=true keeps it."""
    from conftest import compose_cfg

    import musclelab.callbacks as cbs
    from musclelab.outputs.status import read_status
    from musclelab.train import train

    def stop_in_epoch_1(self, trainer, pl_module):  # a run interrupted during its second epoch
        if trainer.current_epoch == 1:
            raise RuntimeError("interrupted")

    tiny = ["logger=none", "cpu_threads=1"]
    with monkeypatch.context() as m:
        m.setattr(cbs.EpochMetricsCSV, "on_train_epoch_start", stop_in_epoch_1)
        with pytest.raises(RuntimeError, match="interrupted"):
            train(compose_cfg(tmp_path / "cut", ["trainer.max_epochs=2", *tiny]))
    assert read_status(tmp_path / "cut") == "failed"
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").exists()  # unfinished: resume needs it
    train(compose_cfg(tmp_path / "a", ["trainer.max_epochs=1", *tiny]))
    train(compose_cfg(tmp_path / "b", ["trainer.max_epochs=1", "callbacks.checkpoint.keep_last=true", *tiny]))
    ckpts = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt"]
    best = torch.load(ckpts / "best.ckpt", weights_only=True)
    assert "optimizer_states" not in best and META_KEY in best
    last = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["optimizer_states"] and META_KEY in last
    assert (ckpts / "best.ckpt").stat().st_size < 0.6 * (tmp_path / "b" / "checkpoints" / "last.ckpt").stat().st_size


def test_checkpoints_of_the_former_volume_task_load_into_the_one_task(tmp_path):
    """A 3D checkpoint saved by the former ``VolumeSegmentationTask`` (its hyperparameters exactly: ``img_size``
    None, ``patch_size``, ``sliding_window``, ``save_predictions``, no ``augment``) loads into SegmentationTask."""
    params = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    old = {"model": "unet", "model_params": params, "in_channels": 1, "class_names": ["background", "a", "b"],
           "patch_size": [8, 16, 16], "sliding_window": {"overlap": 0.25}, "save_predictions": 1, "loss": "dice",
           "loss_params": {}, "optim": {"name": "adamw", "lr": 0.003}, "max_epochs": 2, "monitor": "val/loss",
           "overlay_cases": 1, "meta": {"data": "thigh_phantom", "window": "thigh", "channels": 1,
                                        "spatial_dims": 3, "patch_size": [8, 16, 16]},
           "img_size": None, "spatial_dims": 3, "body_composition": False}
    torch.manual_seed(0)
    ref = SegmentationTask(**old).eval()
    path = tmp_path / "old3d.ckpt"
    torch.save({"state_dict": ref.state_dict(), "hyper_parameters": old, "pytorch-lightning_version": "2.5.0"}, path)
    task = SegmentationTask.load_from_checkpoint(str(path), map_location="cpu", weights_only=True).eval()
    assert task.spatial_dims == 3 and task.window is not None and task.window.roi_size == (8, 16, 16)
    assert task.augmentation is None
    x = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(task(x), ref(x))
