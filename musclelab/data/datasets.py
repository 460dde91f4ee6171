"""The datasets of the one data module: windowed slices (2D), random label-class patches and whole volumes (3D).

Per item only what must happen per item: reading from the memory-mapped cache (a slice, or a patch-sized window of
a volume) and windowing it. Nothing random happens here except the 3D patch centre; augmentation runs on whole
batches on the device (:mod:`musclelab.data.augment`, in the task's ``on_after_batch_transfer``).

Patch sampling: MONAI's label-class crop-centre rule (``generate_label_classes_crop_centers``, the sampler behind
``RandCropByLabelClassesd``, re-stated here on the cache's precomputed class-index sample) picks a class with equal probability among the classes present in the volume (so small
muscles are seen as often as large ones), then a voxel of that class (from the cache's per-class index sample) as
the patch centre. Only the patch is read from the memory-mapped volume. A patch larger than the volume along an
axis is centred and padded (air HU, background label). The centre's seed is drawn per item from torch's RNG (the
DataLoader seeds it per worker and epoch from the run seed, so runs repeat).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from musclelab.data.containers import SliceSet, VolumeSet
from musclelab.data.volumes import BACKGROUND_HU
from musclelab.data.windowing import apply_window


class SliceDataset(Dataset):
    """Windowed slices as tensors: ``image`` (C,H,W) float, ``label`` (H,W) long, ``spacing`` (2,) mm,
    ``case_id`` str, and for evaluation sets (``with_hu``) ``hu`` (H,W) float HU. Nothing random happens per item:
    training augmentation runs on whole batches on the device (:mod:`musclelab.data.augment`, in the task's
    ``on_after_batch_transfer``); ``repeats`` serves each slice that many times per epoch."""

    def __init__(self, slices: SliceSet, window: str, channels: int, repeats: int = 1, with_hu: bool = True) -> None:
        self.slices = slices
        self.repeats = repeats  # each slice served this many times per epoch (differently augmented)
        self.window = window
        self.channels = channels
        self.with_hu = with_hu

    def __len__(self) -> int:
        return len(self.slices) * self.repeats

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = i % len(self.slices)
        # windowed per item: cached images are memory-mapped and may not fit in memory as float32
        image = torch.from_numpy(apply_window(self.slices.images[i:i + 1], self.window, self.channels)[0])
        item = {
            "image": image,
            "label": torch.from_numpy(self.slices.labels[i].astype(np.int64)),
            "spacing": torch.as_tensor(self.slices.spacing[i], dtype=torch.float64),
            "case_id": str(self.slices.meta.at[i, "case_id"]),
        }
        if self.with_hu:  # evaluation items also carry the raw HU slice (for SMA/SMD)
            item["hu"] = torch.from_numpy(np.asarray(self.slices.images[i], dtype=np.float32))
        return item


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
    (C, D, H, W) float, ``label`` (D, H, W) long, ``spacing`` (3,) mm, ``case_id``.

    Per item only the draw and the patch read: case ids, shapes and spacings are read from the volume table once,
    each volume's memory maps (image, label, class-index sample) are opened once per process, and the number of
    sampled voxels per class once per volume, so no pandas look-up, file open or index scan happens per item. The
    centre is MONAI's ``generate_label_classes_crop_centers`` rule with the same random stream (tested equal)."""

    def __init__(self, volumes: VolumeSet, window: str, channels: int, patch_size: Sequence[int],
                 patches_per_volume: int) -> None:
        self.volumes = volumes
        self.window, self.channels = window, channels
        self.patch_size = tuple(int(p) for p in patch_size)
        self.ppv = int(patches_per_volume)
        meta = volumes.meta
        self.shapes = [tuple(int(n) for n in row) for row in meta[[f"shape_{a}" for a in "zyx"]].to_numpy(int)]
        self.case_ids = [str(c) for c in meta["case_id"]]
        self.spacings = [volumes.spacing(v) for v in range(len(volumes))]
        self._maps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:   # loader workers open their own memory maps
        return {**self.__dict__, "_maps": {}}

    def _open(self, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image, label and class-index memory maps of volume ``v`` and its sampled voxels per class."""
        if v not in self._maps:
            root, cid = self.volumes.root, self.case_ids[v]
            idx = np.load(root / "indices" / f"{cid}.npy", mmap_mode="r")   # -1 padded after each class's sample
            counts = (np.asarray(idx) >= 0).sum(axis=1)
            self._maps[v] = (np.load(root / "images" / f"{cid}.npy", mmap_mode="r"),
                             np.load(root / "labels" / f"{cid}.npy", mmap_mode="r"), idx, counts)
        return self._maps[v]

    def __len__(self) -> int:
        return len(self.volumes) * self.ppv

    def centre(self, v: int, seed: int) -> list[int]:
        """The label-class patch centre of volume ``v`` for ``seed``: a class present in the volume with equal
        probability, then one of its sampled voxels, moved so the patch fits (MONAI's rule and random stream)."""
        shape = self.shapes[v]
        _, _, idx, counts = self._open(v)
        ratios = (counts > 0).astype(np.float64)
        rs = np.random.RandomState(seed)
        cls = int(rs.choice(len(ratios), size=1, p=ratios / ratios.sum())[0])
        flat = int(idx[cls, rs.randint(int(counts[cls]))])
        centre = np.unravel_index(flat, shape)
        size = np.array([min(p, n) for p, n in zip(self.patch_size, shape)])
        lo = size // 2
        hi = np.subtract(np.array(shape) + 1, size / 2).astype(np.uint16).astype(np.int64)
        hi[hi == lo] += 1
        return [int(min(max(int(c), a), b - 1)) for c, a, b in zip(centre, lo, hi)]

    def sample(self, v: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """HU and label patches of volume ``v`` around a label-class centre drawn with ``seed``."""
        shape = self.shapes[v]
        image, label, _, _ = self._open(v)
        start = patch_start(self.centre(v, seed), self.patch_size, shape)
        return read_patch(image, start, self.patch_size, BACKGROUND_HU), read_patch(label, start, self.patch_size, 0)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v = i // self.ppv
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        hu, lab = self.sample(v, seed)
        image = torch.from_numpy(apply_window(hu[None], self.window, self.channels)[0])
        label = torch.from_numpy(lab.astype(np.int64))
        return {"image": image, "label": label, "spacing": torch.tensor(self.spacings[v], dtype=torch.float64),
                "case_id": self.case_ids[v]}


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
