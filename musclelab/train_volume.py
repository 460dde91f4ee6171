"""The 3D branch of :mod:`musclelab.train` (``data.spatial_dims: 3``): config checks, data module, task and test
outputs for volumes. ``train.py`` calls these through one-line hooks, so the run lifecycle (status, config,
manifests, checkpoints, loggers, DDP) is the same as for slices.

The spatial dimensions are decided here once, from the data config (:func:`spatial_dims`), and reach the model
builders through the task (``spatial_dims=3``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from musclelab.errors import ConfigError

# data fields of the volume path (ignored by the slice data module)
VOLUME_KEYS = ("spatial_dims", "spacing", "patch_size", "patches_per_volume", "crop_foreground")


def spatial_dims(cfg: DictConfig) -> int:
    """``data.spatial_dims`` (2 when absent); anything but 2 or 3 is a one-line error."""
    nd = cfg.data.get("spatial_dims", 2)
    if nd not in (2, 3):
        raise ConfigError(f"data.spatial_dims must be 2 (slices) or 3 (volumes), got {nd}")
    return int(nd)


def is_volume(cfg: DictConfig) -> bool:
    return spatial_dims(cfg) == 3


def _plain(section: Any) -> Any:
    return OmegaConf.to_container(section, resolve=True) if section is not None else None


def check_volume_config(cfg: DictConfig) -> None:
    """Volume settings and the model's 3D support and patch size, before any data is loaded (one-line
    :class:`ConfigError` naming the field)."""
    from musclelab.data.sources import source_form
    from musclelab.models import check_input_size
    from musclelab.models.registry import dims_error

    source_form(cfg.data.name, 3)
    patch = _plain(cfg.data.get("patch_size"))
    if patch is None:
        raise ConfigError("data.patch_size is not set: volumes train on patches, e.g. data.patch_size=[96,96,96]")
    spacing = _plain(cfg.data.get("spacing"))
    if spacing is not None and (not isinstance(spacing, list) or len(spacing) != 3
                                or any(not isinstance(s, (int, float)) or s <= 0 for s in spacing)):
        raise ConfigError(f"data.spacing must be three positive numbers (z, row, col) in mm or null, got {spacing}")
    from musclelab.models import MODELS

    if cfg.model.name not in MODELS:
        raise ConfigError(f"model={cfg.model.name} is a 2D baseline; volumes (data.spatial_dims=3) need a 3D network: "
                          f"model={'|'.join(n for n in MODELS.names() if 3 in MODELS.get(n).spatial_dims)}")
    problem = dims_error(cfg.model.name, 3)
    if problem:
        raise ConfigError(problem)
    params = _plain(cfg.model.get("params")) or {}
    if "spatial_dims" in params:
        raise ConfigError("model.params.spatial_dims is set from the data: remove it and use data.spatial_dims")
    try:
        check_input_size(cfg.model.name, patch, spatial_dims=3, **params)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    sw = _plain(cfg.get("eval", {}).get("sliding_window")) or {}
    try:
        from musclelab.inference import window_from_config

        window_from_config(patch if isinstance(patch, list) else [patch] * 3, sw)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"eval.sliding_window: {err}") from None


def build_volume_datamodule(cfg: DictConfig):
    from musclelab.data.volume_datamodule import VolumeDataModule

    data = _plain(cfg.data)
    data.pop("img_size", None)
    return VolumeDataModule(**data)


def volume_task(cfg: DictConfig):
    """A constructor with the base task's arguments that builds the 3D task (``img_size`` and body composition
    do not apply; the patch size, sliding window and prediction output come from the config)."""
    from musclelab.tasks.volume import VolumeSegmentationTask

    patch = _plain(cfg.data.patch_size)
    patch = [patch] * 3 if isinstance(patch, int) else patch
    ev = cfg.get("eval", {})

    def make(**kw: Any) -> VolumeSegmentationTask:
        kw.pop("img_size", None)
        kw.pop("body_composition", None)
        return VolumeSegmentationTask(patch_size=patch, sliding_window=_plain(ev.get("sliding_window")),
                                      save_predictions=int(ev.get("save_predictions", 1) or 0), **kw)

    return make


def test_volume(cfg: DictConfig, run_dir: Path, best: Path, dm: Any, logger: Any) -> dict[str, float]:
    """Sliding-window test of ``best`` on one device; metrics in the source geometry; outputs
    (:func:`musclelab.outputs.volume.write_volume_test_outputs`) and NIfTI predictions under ``predictions/``."""
    import pytorch_lightning as pl

    from musclelab.outputs.volume import write_volume_test_outputs
    from musclelab.slurm import cluster_plugins
    from musclelab.tasks.volume import VolumeSegmentationTask

    tester = pl.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, precision=cfg.trainer.get("precision"),
        logger=logger if logger else False, enable_progress_bar=bool(cfg.callbacks.progress_bar),
        enable_checkpointing=False, default_root_dir=str(run_dir), deterministic=cfg.trainer.get("deterministic"),
        limit_test_batches=cfg.trainer.get("limit_test_batches", 1.0), plugins=cluster_plugins(),
    )
    model = VolumeSegmentationTask.load_from_checkpoint(str(best), map_location="cpu")
    model.prediction_dir = run_dir / "predictions"
    tester.test(model, datamodule=dm, verbose=False)
    return write_volume_test_outputs(run_dir, model.test_rows, model.test_examples, model.class_names,
                                     model.test_forward_s, str(best))
