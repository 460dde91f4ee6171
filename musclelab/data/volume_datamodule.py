"""The 3D data module (``data.spatial_dims: 3``): cached volumes, patient-level splits exactly as for slices, random
label-class patches for training and whole volumes for sliding-window validation and testing.

Patch sampling: MONAI's label-class crop-centre rule (``generate_label_classes_crop_centers``, the sampler behind
``RandCropByLabelClassesd``) picks a class with equal probability among the classes present in the volume (so small
muscles are seen as often as large ones), then a voxel of that class (from the cache's per-class index sample) as
the patch centre. Only the patch is read from the memory-mapped volume. A patch larger than the volume along an
axis is centred and padded (air HU, background label). The patch centre is drawn per item from torch's RNG (the
DataLoader seeds it per worker and epoch from the run seed, so runs repeat); 3D augmentation runs on whole batches
on the device (:mod:`musclelab.data.augment`, in the task's ``on_after_batch_transfer``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from musclelab.data.datamodule import SegmentationDataModule
from musclelab.data.containers import SourceData, VolumeSet
from musclelab.data.volumes import BACKGROUND_HU, VolumePreprocess
from musclelab.data.windowing import apply_window

def read_patch(arr: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float) -> np.ndarray:
    """``arr[start : start + size]`` with ``fill`` where the window leaves the array (only the window is read)."""
    src, dst = [], []
    for s, p, n in zip(start, size, arr.shape):
        a, b = max(s, 0), min(s + p, n)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out = np.full(tuple(size), fill, dtype=arr.dtype)
    out[tuple(dst)] = arr[tuple(src)]
    return out


def patch_start(centre: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> list[int]:
    """Window start for a patch around ``centre``: inside the volume where it fits, centred (padded) where not."""
    out = []
    for c, p, n in zip(centre, size, shape):
        out.append((n - p) // 2 if p >= n else int(np.clip(int(c) - p // 2, 0, n - p)))
    return out


class VolumePatchDataset(Dataset):
    """Random label-class patches: ``patches_per_volume`` items per volume per epoch; items are ``image``
    (C, D, H, W) float, ``label`` (D, H, W) long, ``spacing`` (3,) mm, ``case_id``."""

    def __init__(self, volumes: VolumeSet, window: str, channels: int, patch_size: Sequence[int],
                 patches_per_volume: int) -> None:
        self.volumes = volumes
        self.window, self.channels = window, channels
        self.patch_size = tuple(int(p) for p in patch_size)
        self.ppv = int(patches_per_volume)
        self.shapes = volumes.meta[[f"shape_{a}" for a in "zyx"]].to_numpy(int)
        self._indices: dict[int, list[np.ndarray]] = {}   # a few volumes' class-index samples (bounded)

    def class_indices(self, v: int) -> list[np.ndarray]:
        if v not in self._indices:
            if len(self._indices) >= 16:
                self._indices.pop(next(iter(self._indices)))
            self._indices[v] = self.volumes.class_indices(v)
        return self._indices[v]

    def __len__(self) -> int:
        return len(self.volumes) * self.ppv

    def sample(self, v: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """HU and label patches of volume ``v`` around a label-class centre drawn with ``seed``."""
        from monai.transforms.utils import generate_label_classes_crop_centers

        shape = tuple(int(n) for n in self.shapes[v])
        indices = self.class_indices(v)
        ratios = [1.0 if len(ix) else 0.0 for ix in indices]
        rs = np.random.RandomState(seed)
        centre = generate_label_classes_crop_centers(
            tuple(min(p, n) for p, n in zip(self.patch_size, shape)), 1, shape, indices, ratios, rs, warn=False)[0]
        start = patch_start([int(c) for c in centre], self.patch_size, shape)
        hu = read_patch(self.volumes.image(v), start, self.patch_size, BACKGROUND_HU)
        lab = read_patch(self.volumes.label(v), start, self.patch_size, 0)
        return hu, lab

    def __getitem__(self, i: int) -> dict[str, Any]:
        v = i // self.ppv
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        hu, lab = self.sample(v, seed)
        image = torch.from_numpy(apply_window(hu[None], self.window, self.channels)[0])
        label = torch.from_numpy(lab.astype(np.int64))
        return {"image": image, "label": label,
                "spacing": torch.as_tensor(self.volumes.spacing(v), dtype=torch.float64),
                "case_id": str(self.volumes.meta.at[v, "case_id"])}


class VolumeEvalDataset(Dataset):
    """Whole cached volumes for sliding-window evaluation: ``image`` (C, D, H, W), ``label`` (D, H, W),
    ``spacing`` (3,) mm, ``case_id``, ``index`` (row of the volume set, to find its source geometry)."""

    def __init__(self, volumes: VolumeSet, window: str, channels: int) -> None:
        self.volumes, self.window, self.channels = volumes, window, channels

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        hu = np.asarray(self.volumes.image(i))
        return {"image": torch.from_numpy(apply_window(hu[None], self.window, self.channels)[0]),
                "label": torch.from_numpy(np.asarray(self.volumes.label(i), dtype=np.int64)),
                "spacing": torch.as_tensor(self.volumes.spacing(i), dtype=torch.float64),
                "case_id": str(self.volumes.meta.at[i, "case_id"]), "index": i}


class VolumeDataModule(SegmentationDataModule):
    """``SegmentationDataModule`` for volumes: the same patient-level splits, subsets and manifests, over a
    cached :class:`VolumeSet` instead of slices. Volume settings: ``spacing`` (mm, z/row/col; None keeps each
    volume's own), ``patch_size`` (voxels; the sliding-window ROI too), ``patches_per_volume``,
    ``crop_foreground``. Validation and test loaders give one whole volume per batch."""

    def __init__(self, *, spatial_dims: int = 3, spacing: Sequence[float] | None = None,
                 patch_size: Sequence[int] | int = (96, 96, 96), patches_per_volume: int = 4,
                 crop_foreground: bool = True, **kwargs: Any) -> None:
        if int(spatial_dims) != 3:
            raise ValueError(f"VolumeDataModule is for data.spatial_dims=3, got {spatial_dims}")
        super().__init__(**kwargs)
        self.preprocess = VolumePreprocess(tuple(spacing) if spacing else None, bool(crop_foreground))
        ps = [int(patch_size)] * 3 if isinstance(patch_size, int) else [int(p) for p in patch_size]
        if len(ps) != 3 or min(ps) < 1:
            raise ValueError(f"data.patch_size must be three positive voxel counts (D, H, W), got {patch_size}")
        if int(patches_per_volume) < 1:
            raise ValueError(f"data.patches_per_volume must be >= 1, got {patches_per_volume}")
        self.patch_size = tuple(ps)
        self.patches_per_volume = int(patches_per_volume)
        if self.labels:
            raise ValueError("data.labels (label subsets) is not supported for volumes yet; use data.labels=null")

    def _load_source(self) -> SourceData:
        from musclelab.data.sources import load_volume_source

        vs = load_volume_source(self.name, self.source_params, self.preprocess, self.root, self.cache_dir)
        return SourceData(vs)  # type: ignore[arg-type]  (a VolumeSet splits like a SliceSet)

    def _make_datasets(self, parts: dict[str, Any]) -> dict[str, Dataset]:
        return {
            "train": VolumePatchDataset(parts["train"], self.window, self.channels, self.patch_size,
                                        self.patches_per_volume),
            "val": VolumeEvalDataset(parts["val"], self.window, self.channels),
            "test": VolumeEvalDataset(parts["test"], self.window, self.channels),
        }

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if split != "train":
            batch_size = 1   # whole volumes differ in shape
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False,
                          pin_memory=bool(getattr(self, "pin_memory", False)))
