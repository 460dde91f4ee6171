"""Pretext pretraining as a cached first stage: ``pretrained_trunk(cfg, dm)`` returns the transferable weights file.

A stage trains until its validation loss stops improving (Lightning ``EarlyStopping`` on ``val/loss`` with
``init.pretext.patience`` epochs, at most ``init.pretext.epochs``) and keeps the weights of its best epoch, as the
paper's pretext models were "trained to convergence" (McSweeney 2022, Appendix A). Its per-epoch curve is saved
next to the weights (``curve.csv``, ``curve.png``: the Appendix A figures) and copied into every fine-tuning run
that uses it (``pretext_curve.csv`` / ``pretext_curve.png``).

The autoencoder and jigsaw inits pretrain on every unlabelled slice outside the test set (McSweeney 2022, §2.2:
"the training data (N = 167)": all folds, labels ignored), once for the whole study: a fixed, seeded
:data:`PRETEXT_VAL_FRACTION` of those patients (``data.split_seed``) validates the pretext stage's own stopping
rule, the rest trains it. The result depends only on the pretext settings and on which slices those are, so it is
cached under ``<paths.cache_dir>/pretext/<name>-<key16>/`` by a hash of exactly those, including the identity of
the data's files (never of the training-set size ``data.n_train``, the subset draw, the fine-tuning seed or, with
``data.split=kfold_val``, the validation fold): every fine-tuning run of a study grid reuses one pretraining. Built under a file lock in a temporary
directory and renamed into place, so concurrent jobs train it once and a crash never leaves a cache that
looks complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from torch.utils.data import DataLoader

from musclelab.data.datamodule import SegmentationDataModule
from musclelab.data.datasets import SliceDataset
from musclelab.errors import ConfigError
from musclelab.io import atomic_write_json, file_lock, make_temp_dir
from musclelab.pretext import PRETEXT_TASKS, build_pretext_task
from musclelab.slurm import cluster_plugins

log = logging.getLogger(__name__)

TRUNK_FILE = "trunk.pt"
MANIFEST = "pretext.json"
CURVE_CSV, CURVE_PNG = "curve.csv", "curve.png"  # in the cache entry; copied to runs as pretext_curve.*
DEFAULT_PATIENCE = 5
# data settings that decide which slices the pretext task sees and how they look
DATA_KEYS = ("name", "root", "img_size", "source", "window", "channels", "split", "val_fraction",
             "test_fraction", "test_set", "test_patients", "n_folds", "fold", "split_seed")
# with kfold_val the test set is fixed and the folds only share out the rest: the pretext data do not depend on them
FOLD_KEYS = ("n_folds", "fold", "val_fraction")
PRETEXT_VAL_FRACTION = 0.1  # of the non-test patients: the pretext stage's validation set (its stopping rule)


def trunk_for(model_name: str) -> str:
    """The torchvision ResNet whose weights fit ``model_name``'s backbone (``fcn_resnet101`` -> ``resnet101``)."""
    if model_name.startswith("fcn_resnet"):
        return model_name.removeprefix("fcn_")
    raise ConfigError(f"init=jigsaw cannot infer a trunk for model '{model_name}': set init.pretext.trunk "
                      "(resnet18/34/50/101) to match the model's backbone")


def pretext_key(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """(sha256 hex, the inputs hashed): the pretext settings, the data settings in :data:`DATA_KEYS` and, for
    data read from disk, the identity of its files (:func:`musclelab.data.identity.data_identity`)."""
    from musclelab.data.identity import data_identity

    data = OmegaConf.to_container(cfg.data, resolve=True)
    inputs = {
        "task": cfg.init.name,
        "model": cfg.model.name,  # the trunk/backbone follows the model when not set explicitly
        "pretext": OmegaConf.to_container(cfg.init.pretext, resolve=True),
        "data": {k: data.get(k) for k in DATA_KEYS
                 if not (data.get("split") == "kfold_val" and k in FOLD_KEYS)},
        "pool": "non-test",  # every patient outside the test set (not one fold's training pool)
    }
    files = data_identity(data)  # an edited or added file trains a new trunk
    if files is not None:
        inputs["files"] = files
    blob = json.dumps(inputs, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest(), inputs


def pretrained_trunk(cfg: DictConfig, dm: SegmentationDataModule, run_dir: str | Path | None = None) -> Path:
    """The transferable weights of the pretext task ``cfg.init.name`` (jigsaw: the trunk as
    ``backbone.<torchvision resnet key>``; autoencoder: the whole FCN, encoder and decoder), trained on ``dm``'s
    slices outside the test set, from the cache or trained now. With ``run_dir`` the stage's curve is copied there."""
    name = cfg.init.name
    PRETEXT_TASKS.get(name)
    key, inputs = pretext_key(cfg)
    root = Path(cfg.paths.cache_dir) / "pretext"
    final = root / f"{name}-{key[:16]}"
    if (final / MANIFEST).exists():
        log.info("pretext %s: reusing %s", name, final)
    else:
        with file_lock(root / f"{name}-{key[:16]}.lock", what=f"pretext {name}"):
            if not (final / MANIFEST).exists():
                _drop_partial(final)  # left by a process killed mid-build (we hold the lock)
                _train(cfg, dm, final, key, inputs)
    if run_dir is not None:
        for src in (CURVE_CSV, CURVE_PNG):
            if (final / src).exists():
                shutil.copyfile(final / src, Path(run_dir) / f"pretext_{src}")
    return final / TRUNK_FILE


def pretext_split(pool: Any, seed: int) -> tuple[Any, Any]:
    """(train, val) slices of the pretext pool: a seeded :data:`PRETEXT_VAL_FRACTION` of its patients validate."""
    import numpy as np

    patients = sorted(set(pool.meta["patient_id"]))
    if len(patients) < 2:
        raise ConfigError(f"pretext pretraining needs at least 2 patients outside the test set, got {len(patients)}: "
                          "add cases or lower data.test_fraction")
    order = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    n_val = max(1, int(round(PRETEXT_VAL_FRACTION * len(patients))))
    select = SegmentationDataModule._select
    return select(pool, sorted(order[n_val:])), select(pool, sorted(order[:n_val]))


class _BestWeights(pl.Callback):
    """Keeps a CPU copy of the module's weights at the lowest ``val/loss`` and one row of metrics per epoch."""

    def __init__(self) -> None:
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self.rows: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics.get("val/loss", float("nan")))
        if loss < self.best:
            self.best, self.best_epoch = loss, trainer.current_epoch
            self.state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": trainer.current_epoch}
        row.update({k.replace("/", "_"): float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})
        self.rows.append(row)


def plot_pretext_curve(curve: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Training and validation loss per epoch of a pretext stage (McSweeney 2022, Figs. A1/A2), the best epoch
    marked; jigsaw accuracy on a second axis when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from musclelab.outputs.figures import save_figure

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for col, style in (("train_loss", "-"), ("val_loss", "--")):
        if col in curve:
            ax.plot(curve["epoch"], curve[col], style, marker="o", ms=3, label=col.replace("_", " "))
    if "val_loss" in curve and curve["val_loss"].notna().any():
        best = curve.loc[curve["val_loss"].idxmin()]
        ax.axvline(best["epoch"], color="0.5", lw=0.8, ls=":", label=f"best epoch {int(best['epoch'])}")
    ax.set(xlabel="epoch", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _drop_partial(final: Path) -> None:
    """Remove what a killed build of ``final`` left: its temporary directories and a directory without the
    manifest (a complete build renames a directory that already holds it)."""
    for stale in final.parent.glob(f".{final.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)


def _train(cfg: DictConfig, dm: SegmentationDataModule, final: Path, key: str, inputs: dict[str, Any]) -> None:
    params = OmegaConf.to_container(cfg.init.pretext, resolve=True)
    assert isinstance(params, dict)
    epochs, batch_size = int(params.pop("epochs")), int(params.pop("batch_size"))
    patience = int(params.pop("patience", DEFAULT_PATIENCE) or DEFAULT_PATIENCE)
    log.info("pretext %s: pretraining until val/loss stops improving for %d epochs (at most %d) on %d "
             "unlabelled slices outside the test set", cfg.init.name, patience, epochs, len(dm.pretext_pool))
    if cfg.init.name == "jigsaw" and not params.get("trunk"):
        params["trunk"] = trunk_for(cfg.model.name)
    pl.seed_everything(int(params.pop("seed", 0)), workers=True)
    task = build_pretext_task(cfg.init.name, in_channels=cfg.data.channels, img_size=cfg.data.img_size, **params)
    train_slices, val_slices = pretext_split(dm.pretext_pool, int(cfg.data.split_seed))
    train_ds = SliceDataset(train_slices, dm.window, dm.channels)
    val_ds = SliceDataset(val_slices, dm.window, dm.channels)
    if cfg.init.name == "jigsaw":
        train_ds, val_ds = task.jigsaw_dataset(train_ds), task.jigsaw_dataset(val_ds, seed=0, crop="center")
    best = _BestWeights()
    stop = EarlyStopping(monitor="val/loss", mode="min", patience=patience, check_finite=True)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator=cfg.trainer.get("accelerator", "auto"), devices=1,
        precision=cfg.trainer.get("precision"), deterministic=cfg.trainer.get("deterministic"), logger=False,
        enable_checkpointing=False, enable_progress_bar=bool(cfg.callbacks.progress_bar), num_sanity_val_steps=0,
        callbacks=[best, stop], plugins=cluster_plugins(),  # no Lightning hpc checkpoint (musclelab.slurm)
    )
    trainer.fit(task, DataLoader(train_ds, batch_size=batch_size, shuffle=True),
                DataLoader(val_ds, batch_size=batch_size))
    if best.state is not None:  # transfer the best epoch's weights, not the last
        task.load_state_dict(best.state)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(f".{final.name}.", final.parent)
    try:
        task.save_trunk(tmp / TRUNK_FILE)
        curve = pd.DataFrame(best.rows)
        curve.to_csv(tmp / CURVE_CSV, index=False)
        plot_pretext_curve(curve, tmp / CURVE_PNG, f"{cfg.init.name} pretext ({len(train_slices)} slices)")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        atomic_write_json(tmp / MANIFEST, {
            "key": key, "inputs": inputs, "max_epochs": epochs, "patience": patience,
            "epochs_run": trainer.current_epoch, "best_epoch": best.best_epoch, "best_val_loss": best.best,
            "stopped_early": bool(stop.stopped_epoch), "n_slices": len(train_slices), "n_val_slices": len(val_slices),
            "final_metrics": metrics})
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
