"""Pretext pretraining as a cached first stage: ``pretrained_trunk(cfg, dm)`` returns the trunk weights file.

The autoencoder and jigsaw inits pretrain on the study's own unlabelled training slices (the whole training
pool of the split/fold, labels ignored). The result depends only on the pretext settings and on which slices
are in that pool, so it is cached under ``<paths.cache_dir>/pretext/<name>-<key16>/`` by a hash of exactly
those (never of the training-set size ``data.n_train``, the subset draw or the fine-tuning seed): every
fine-tuning run of a study grid reuses one pretraining per fold. Built under a file lock in a temporary
directory and renamed into place, so concurrent jobs train it once and a crash never leaves a cache that
looks complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from musclelab.data.datamodule import SegmentationDataModule, SliceDataset
from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json, file_lock
from musclelab.pretext import PRETEXT_TASKS, build_pretext_task

log = logging.getLogger(__name__)

TRUNK_FILE = "trunk.pt"
MANIFEST = "pretext.json"
# data settings that decide which slices the pretext task sees and how they look
DATA_KEYS = ("name", "root", "img_size", "source", "window", "channels", "split", "val_fraction",
             "test_fraction", "test_set", "test_patients", "n_folds", "fold", "split_seed")


def trunk_for(model_name: str) -> str:
    """The torchvision ResNet whose weights fit ``model_name``'s backbone (``fcn_resnet101`` -> ``resnet101``)."""
    if model_name.startswith("fcn_resnet"):
        return model_name.removeprefix("fcn_")
    raise ConfigError(f"init=jigsaw cannot infer a trunk for model '{model_name}': set init.pretext.trunk "
                      "(resnet18/34/50/101) to match the model's backbone")


def pretext_key(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """(sha256 hex, the inputs hashed): the pretext settings and the data settings in :data:`DATA_KEYS`."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    inputs = {
        "task": cfg.init.name,
        "model": cfg.model.name,  # the trunk/backbone follows the model when not set explicitly
        "pretext": OmegaConf.to_container(cfg.init.pretext, resolve=True),
        "data": {k: data.get(k) for k in DATA_KEYS},
    }
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), inputs


def pretrained_trunk(cfg: DictConfig, dm: SegmentationDataModule) -> Path:
    """The trunk weights (``backbone.<torchvision resnet key>``) of the pretext task ``cfg.init.name``,
    trained on ``dm``'s training pool, from the cache or trained now."""
    name = cfg.init.name
    PRETEXT_TASKS.get(name)
    key, inputs = pretext_key(cfg)
    root = Path(cfg.paths.cache_dir) / "pretext"
    final = root / f"{name}-{key[:16]}"
    if (final / MANIFEST).exists():
        log.info("pretext %s: reusing %s", name, final)
        return final / TRUNK_FILE
    with file_lock(root / f"{name}-{key[:16]}.lock", what=f"pretext {name}"):
        if not (final / MANIFEST).exists():
            _train(cfg, dm, final, key, inputs)
    return final / TRUNK_FILE


def _train(cfg: DictConfig, dm: SegmentationDataModule, final: Path, key: str, inputs: dict[str, Any]) -> None:
    params = OmegaConf.to_container(cfg.init.pretext, resolve=True)
    assert isinstance(params, dict)
    epochs, batch_size = int(params.pop("epochs")), int(params.pop("batch_size"))
    log.info("pretext %s: pretraining for %d epochs on %d unlabelled slices", cfg.init.name, epochs,
             len(dm.train_pool))
    if cfg.init.name == "jigsaw" and not params.get("trunk"):
        params["trunk"] = trunk_for(cfg.model.name)
    pl.seed_everything(int(params.pop("seed", 0)), workers=True)
    task = build_pretext_task(cfg.init.name, in_channels=cfg.data.channels, img_size=cfg.data.img_size, **params)
    train_ds = SliceDataset(dm.train_pool, dm.window, dm.channels)
    val_ds = dm.datasets["val"]
    if cfg.init.name == "jigsaw":
        train_ds, val_ds = task.jigsaw_dataset(train_ds), task.jigsaw_dataset(val_ds, seed=0, crop="center")
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator=cfg.trainer.get("accelerator", "auto"), devices=1,
        precision=cfg.trainer.get("precision"), deterministic=cfg.trainer.get("deterministic"), logger=False,
        enable_checkpointing=False, enable_progress_bar=bool(cfg.callbacks.progress_bar), num_sanity_val_steps=0,
    )
    trainer.fit(task, DataLoader(train_ds, batch_size=batch_size, shuffle=True),
                DataLoader(val_ds, batch_size=batch_size))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        task.save_trunk(tmp / TRUNK_FILE)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        atomic_write_json(tmp / MANIFEST, {"key": key, "inputs": inputs, "epochs": epochs,
                                           "n_slices": len(dm.train_pool), "final_metrics": metrics})
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
