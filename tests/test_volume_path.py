"""The 3D volume path: cache, label-class patches, padding, config errors, and a tiny 3D model that learns."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from musclelab.data.case import Case
from musclelab.data.volume_cache import GeneratedVolumes, build_or_load
from musclelab.data.datamodule import SegmentationDataModule
from musclelab.data.datasets import VolumePatchDataset
from musclelab.data.volumes import VolumePreprocess, to_source_geometry
from musclelab.data.phantom_sources import thigh_volumes as thigh_phantom_items

SMALL = dict(n_volumes=3, size=48, n_slices=16)


def test_volume_cache_is_built_once_and_keyed_by_preprocessing(tmp_path):
    items = thigh_phantom_items(**SMALL)
    pre = VolumePreprocess(spacing=(20.0, 10.0, 10.0))
    a = build_or_load(items, pre, tmp_path)
    manifest = Path(a.meta.attrs["cache_dir"]) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    b = build_or_load(thigh_phantom_items(**SMALL), pre, tmp_path)
    assert b.meta.attrs["cache_dir"] == a.meta.attrs["cache_dir"] and manifest.stat().st_mtime_ns == stamp
    c = build_or_load(items, VolumePreprocess(spacing=(15.0, 10.0, 10.0)), tmp_path)
    assert c.meta.attrs["cache_dir"] != a.meta.attrs["cache_dir"]
    img = a.image(0)
    assert isinstance(img, np.memmap) and img.dtype == np.int16 and len(a) == 3
    assert a.spacing(0) == pytest.approx((20.0, 10.0, 10.0))
    assert a.raters == ("rater_1", "rater_2") and a.rater("rater_1", 0).shape == a.source_label(0).shape
    # body crop: the cached grid is smaller than the resampled one; back to source geometry restores the shape
    geo = a.geometry(0)
    assert img.shape[1] < geo["resampled_shape"][1]
    back = to_source_geometry(np.asarray(a.label(0)), **geo)
    assert back.shape == a.source_label(0).shape
    agree = (back == a.source_label(0)).mean()
    assert agree > 0.9


def test_label_beyond_classes_is_one_clear_error(tmp_path):
    def make(i):
        lab = np.zeros((8, 8, 8), np.uint8)
        lab[2:4, 2:4, 2:4] = 7
        return Case(f"c{i}", f"c{i}", np.zeros((8, 8, 8), np.float32), lab, (1.0, 1.0, 1.0)), {}

    bad = GeneratedVolumes("bad", ("background", "a", "b"), 1, {}, make)
    with pytest.raises(ValueError, match=r"label value 7 beyond the 3 configured classes"):
        build_or_load(bad, VolumePreprocess(), tmp_path)

    def zero(i):
        return Case("z", "z", np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8), (0.0, 1.0, 1.0)), {}

    with pytest.raises(ValueError, match=r"missing or zero voxel spacing"):
        build_or_load(GeneratedVolumes("zero", ("background", "a"), 1, {}, zero), VolumePreprocess(), tmp_path)


def _dm(tmp_path, **kw) -> SegmentationDataModule:
    args = dict(name="thigh_phantom", spatial_dims=3, source=dict(n_volumes=6, size=48, n_slices=24), cache_dir=str(tmp_path),
                window="thigh", spacing=[12.0, 8.0, 8.0], patch_size=[16, 32, 32], patches_per_volume=4,
                batch_size=2, val_fraction=0.2, test_fraction=0.2, augment=dict(flip_prob=0.5, affine_prob=0.0))
    args.update(kw)
    dm = SegmentationDataModule(**args)
    dm.setup()
    return dm


def test_splits_patches_every_class_and_padding(tmp_path):
    dm = _dm(tmp_path)
    assert {len(dm.datasets[k].volumes) for k in ("val", "test")} == {1} and len(dm.datasets["train"].volumes) == 4
    assert set(dm.manifest["split"]) >= {"train", "val", "test"}
    train = dm.datasets["train"]
    seen = set()
    torch.manual_seed(0)
    for i in range(len(train)):
        item = train[i]
        assert item["image"].shape == (1, 16, 32, 32) and item["label"].shape == (16, 32, 32)
        seen |= set(item["label"].unique().tolist())
    assert seen == set(range(30))   # every class, small muscles included, in one epoch of 16 patches
    # a patch larger than the volume is padded (air, background), never an error
    big = VolumePatchDataset(train.volumes, "thigh", 1, (64, 96, 96), 1)
    hu, lab = big.sample(0, seed=1)
    assert hu.shape == (64, 96, 96) and hu[0, 0, 0] == -1024 and lab[0, 0, 0] == 0
    ev = dm.datasets["test"][0]
    assert ev["image"].shape[1:] == ev["label"].shape


def test_tiny_3d_model_learns(tmp_path):
    """A tiny 3D UNet trained for 8 short epochs on the tiny thigh phantom beats the untrained network by far
    (test Dice 0.010 -> 0.341 measured; 98 s on the 2 shared cores under a load of ~8, about 20 s unloaded)."""
    import pytorch_lightning as pl

    from musclelab.metrics import case_metrics
    from musclelab.tasks import SegmentationTask

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny convolutions: one thread is fastest (and fair on a shared 2-core machine)
    pl.seed_everything(0, workers=True)
    dm = _dm(tmp_path, patches_per_volume=8, batch_size=4)
    task = SegmentationTask("unet", dict(channels=[16, 32, 64], strides=[2, 2], num_res_units=1, norm="batch"),
                            1, list(dm.class_names), spatial_dims=3, patch_size=[16, 32, 32],
                            sliding_window=dict(overlap=0.25), loss="ce_dice", optim=dict(name="adamw", lr=3e-3),
                            max_epochs=8, augment=dict(flip_prob=0.5, affine_prob=0.0))

    def test_dice() -> float:
        task.eval()
        item = dm.datasets["test"][0]
        pred = task.sliding_window(item["image"][None]).argmax(1)[0].numpy()
        return case_metrics(pred, item["label"].numpy(), (12.0, 8.0, 8.0), dm.class_names, surface=False)["dice"]

    before = test_dice()
    task.train()
    trainer = pl.Trainer(max_epochs=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0, deterministic=True)
    trainer.fit(task, train_dataloaders=dm.train_dataloader())
    after = test_dice()
    torch.set_num_threads(threads)
    print(f"tiny 3D UNet: test Dice {before:.3f} untrained -> {after:.3f} trained in {time.perf_counter() - t0:.1f} s")
    assert after > before + 0.15 and after > 3 * before


def test_verify_reports_slices_for_volume_data(tmp_path):
    """``musclelab data verify`` with data.spatial_dims=3: a single-slice image is reported, volumes are not."""
    import json as _json

    from musclelab.data.readers import build_reader
    from musclelab.data.volumes import volume_problems
    from musclelab.outputs.nifti import save_nifti

    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(_json.dumps({"labels": {"0": "background", "1": "muscle"}}))
    for cid, shape in (("vol", (6, 8, 8)), ("slice", (1, 8, 8))):
        lab = np.zeros(shape, np.uint8)
        lab[..., 2:4, 2:4] = 1
        save_nifti(root / "imagesTr" / f"{cid}.nii.gz", np.zeros(shape, np.int16), spacing=(2.0, 1.0, 1.0),
                   dtype=np.int16)
        save_nifti(root / "labelsTr" / f"{cid}.nii.gz", lab, spacing=(2.0, 1.0, 1.0))
    problems = volume_problems(build_reader("msd", root))
    assert [(p.case_id, p.check) for p in problems] == [("slice", "volume")]
    assert "data.spatial_dims=2" in problems[0].message


def test_patch_centres_are_monais_label_class_rule(tmp_path):
    """The precomputed-index sampler draws the centres MONAI's generate_label_classes_crop_centers draws for
    the same seed (class among those present, a voxel of it, moved so the patch fits)."""
    from monai.transforms.utils import generate_label_classes_crop_centers

    train = _dm(tmp_path).datasets["train"]
    for v in range(len(train.volumes)):
        indices = train.volumes.class_indices(v)
        shape = train.shapes[v]
        for seed in range(40):
            ref = generate_label_classes_crop_centers(
                tuple(min(p, n) for p, n in zip(train.patch_size, shape)), 1, shape, indices,
                [1.0 if len(ix) else 0.0 for ix in indices], np.random.RandomState(seed), warn=False)[0]
            assert train.centre(v, seed) == [int(c) for c in ref]
