"""The one LightningDataModule, for slices and volumes (``spatial_dims`` decided once, from ``data.spatial_dims``):
any registered source, patient-level splits, subsets and manifests, then 2D slice datasets or 3D patch datasets
(training) and whole volumes (validation, test; one per batch) from :mod:`musclelab.data.datasets`, and the loaders.
Augmentation is not here: it runs on whole batches on the device in the task (:mod:`musclelab.data.augment`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from musclelab.data.augment import split_repeats
from musclelab.data.datasets import SliceDataset, VolumeEvalDataset, VolumePatchDataset
from musclelab.data.loaders import loader_settings
from musclelab.data.containers import SliceSet, SourceData
from musclelab.data.sources import load_source
from musclelab.data.splits import (SPLITS, check_split_name, first_n, make_splits, observer_patients,  # noqa: F401
                                    split_manifest)



class SegmentationDataModule(pl.LightningDataModule):
    """Builds train/val/test slice datasets from one source with patient-level splits.

    ``split`` (:data:`musclelab.data.splits.SPLITS`): ``holdout`` (val/test fractions of patients),
    ``kfold_val`` (a fixed test set chosen by ``test_set``; fold ``fold`` of ``n_folds`` validates) or
    ``kfold_test`` (fold ``fold`` is the test set, ``val_fraction`` of the rest validates). ``n_train`` keeps the first n patients of the
    ``subset_draw``-th seeded ordering of the training pool (nested across n).
    Volumes (``spatial_dims=3``): ``spacing`` (mm, z/row/col; None keeps each volume's own), ``patch_size``
    (voxels; the sliding-window ROI too), ``patches_per_volume``, ``crop_foreground``; ``img_size`` is unused.
    Call :meth:`setup` before reading ``class_names``.
    """

    def __init__(
        self, name: str, img_size: int = 128, source: dict | None = None, root: str | None = None,
        cache_dir: str | None = None, window: str = "abdomen",
        channels: int = 1, split: str = "holdout", val_fraction: float = 0.15, test_fraction: float = 0.2,
        n_folds: int = 4, fold: int = 0, test_set: str = "fraction", test_patients: list[str] | None = None,
        n_train: int | None = None, subset_draw: int = 0,
        split_seed: int = 0, batch_size: int = 8, eval_batch_size: int | None = None, num_workers: int | None = 0,
        augment: dict | None = None, labels: list[str] | None = None, pin_memory: bool | None = None,
        spatial_dims: int = 2, spacing: Sequence[float] | None = None, patch_size: Sequence[int] | int | None = None,
        patches_per_volume: int = 4, crop_foreground: bool = True,
    ) -> None:
        super().__init__()
        if int(spatial_dims) not in (2, 3):
            raise ValueError(f"data.spatial_dims must be 2 (slices) or 3 (volumes), got {spatial_dims}")
        self.spatial_dims = int(spatial_dims)
        self.name = name
        self.img_size = img_size
        self.source_params = dict(source or {})
        self.root = root
        self.cache_dir = cache_dir
        self.window = window
        self.channels = channels
        self.split = check_split_name(split)
        self.test_set = test_set
        self.test_patients = [str(p) for p in test_patients] if test_patients else None
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.n_folds = n_folds
        self.fold = fold
        self.n_train = n_train
        self.subset_draw = subset_draw
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = loader_settings(num_workers, pin_memory)  # None: measured defaults
        self.augment_params = dict(augment or {})
        self.labels = None if labels is None else [labels] if isinstance(labels, str) else list(labels)
        self.datasets: dict[str, Dataset] = {}
        self.manifest: pd.DataFrame | None = None
        self.class_names: tuple[str, ...] = ()
        self.train_pool: SliceSet | None = None
        self.pretext_pool: SliceSet | None = None
        self.volumes = None
        if self.spatial_dims == 3:
            self._volume_settings(spacing, patch_size, patches_per_volume, crop_foreground)

    def _volume_settings(self, spacing: Sequence[float] | None, patch_size: Sequence[int] | int | None,
                         patches_per_volume: int, crop_foreground: bool) -> None:
        from musclelab.data.volumes import VolumePreprocess

        self.preprocess = VolumePreprocess(tuple(spacing) if spacing else None, bool(crop_foreground))
        patch_size = (96, 96, 96) if patch_size is None else patch_size
        ps = [int(patch_size)] * 3 if isinstance(patch_size, int) else [int(p) for p in patch_size]
        if len(ps) != 3 or min(ps) < 1:
            raise ValueError(f"data.patch_size must be three positive voxel counts (D, H, W), got {patch_size}")
        if int(patches_per_volume) < 1:
            raise ValueError(f"data.patches_per_volume must be >= 1, got {patches_per_volume}")
        self.patch_size = tuple(ps)
        self.patches_per_volume = int(patches_per_volume)
        if self.labels:
            raise ValueError("data.labels (label subsets) is not supported for volumes yet; use data.labels=null")

    def setup(self, stage: str | None = None) -> None:
        """Load the source and split it (idempotent: later calls reuse the first)."""
        if self.datasets:
            return
        data = self._load_source()
        pool = data.pool
        self.volumes = data.volumes  # whole volumes for volume-level scoring (None for slice-only sources)
        patients = pool.meta["patient_id"].tolist()
        splits = make_splits(
            patients, split=self.split, seed=self.split_seed, val_fraction=self.val_fraction,
            test_fraction=self.test_fraction, n_folds=self.n_folds, fold=self.fold, test_set=self.test_set,
            test_patients=self.test_patients, observer_patients=observer_patients(pool.meta, pool.observers),
            external_test=data.external_test is not None)
        # the whole training pool, before n_train subsetting
        self.train_pool = self._select(pool, sorted(splits["train"]))
        # every patient outside the test set (all folds): the unlabelled data of pretext pretraining
        self.pretext_pool = self._select(pool, sorted(set(splits["train"]) | set(splits["val"])))
        order = first_n(splits["train"], None, self.split_seed, self.subset_draw)  # nested: subsets are prefixes
        splits["train"] = first_n(splits["train"], self.n_train, self.split_seed, self.subset_draw)
        unused = order[len(splits["train"]):]
        parts = {k: self._select(pool, v) for k, v in splits.items()}
        if data.external_test is not None:
            parts["test"] = data.external_test
            splits["test"] = sorted(set(data.external_test.meta["patient_id"]))
        self.manifest = pd.concat(
            [split_manifest({k: splits[k]}, parts[k].meta, order) for k in ("train", "val", "test")]
            + [split_manifest({"unused": unused}, pool.meta, order)], ignore_index=True
        )
        self.class_names = pool.class_names
        self.datasets = self._make_datasets(parts)

    def _load_source(self) -> SourceData:
        """The pool (and optional external test set) to split: slices, or cached volumes (which split alike)."""
        if self.spatial_dims == 3:
            from musclelab.data.sources import load_volume_source

            vs = load_volume_source(self.name, self.source_params, self.preprocess, self.root, self.cache_dir)
            return SourceData(vs)  # type: ignore[arg-type]  (a VolumeSet splits like a SliceSet)
        return load_source(self.name, self.img_size, self.source_params, self.root, self.cache_dir, self.labels)

    def _make_datasets(self, parts: dict[str, Any]) -> dict[str, Dataset]:
        """train/val/test datasets of the split parts: slices, or patches and whole volumes."""
        if self.spatial_dims == 3:
            return {
                "train": VolumePatchDataset(parts["train"], self.window, self.channels, self.patch_size,
                                            self.patches_per_volume),
                "val": VolumeEvalDataset(parts["val"], self.window, self.channels),
                "test": VolumeEvalDataset(parts["test"], self.window, self.channels),
            }
        _, repeats = split_repeats(self.augment_params)   # the augmentation itself runs in the task, per batch
        return {
            "train": SliceDataset(parts["train"], self.window, self.channels, repeats, with_hu=False),
            "val": SliceDataset(parts["val"], self.window, self.channels),
            "test": SliceDataset(parts["test"], self.window, self.channels),
        }

    @staticmethod
    def _select(slices: SliceSet, patients: list[str]) -> SliceSet:
        """Slices of ``patients``, in the order the patients are listed."""
        rank = {p: i for i, p in enumerate(patients)}
        pid = slices.meta["patient_id"].map(rank)
        index = np.flatnonzero(pid.notna().to_numpy())
        index = index[np.argsort(pid.to_numpy()[index], kind="stable")]
        return slices.subset(index)

    def save_manifest(self, run_dir: Path) -> Path:
        """Write ``split_manifest.csv`` (case_id, patient_id, split) into the run directory."""
        from musclelab.io import atomic_write_text

        assert self.manifest is not None, "call setup() first"
        path = Path(run_dir) / "split_manifest.csv"
        atomic_write_text(path, self.manifest.to_csv(index=False))
        return path

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if self.spatial_dims == 3 and split != "train":
            batch_size = 1   # whole volumes differ in shape
        return DataLoader(
            self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0, drop_last=False, pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)
