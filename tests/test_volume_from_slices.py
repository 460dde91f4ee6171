"""Volume-level scoring of 2D models: stacking slice predictions, 3D scores with the true slice thickness,
the L3 slice alone, relabelled volumes, and the lumbar phantom that provides them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from musclelab.data.case import Case
from musclelab.data.containers import SliceSet, SourceData
from musclelab.data.labels import apply_to_source
from musclelab.errors import ConfigError
from musclelab.evaluation.volume_from_slices import (
    check_level,
    evaluate_volumes,
    score_volume,
    stack_slices,
)

NAMES = ("background", "muscle")


def _box(shift: int = 0) -> np.ndarray:
    vol = np.zeros((10, 12, 12), np.uint8)
    vol[2 + shift:6 + shift, 3:7, 4:8] = 1          # a 4 x 4 x 4 voxel box
    return vol


def test_stack_puts_slices_back_at_their_index() -> None:
    vol = np.random.default_rng(0).integers(0, 3, (5, 4, 4)).astype(np.uint8)
    order = [3, 0, 4, 1, 2]
    np.testing.assert_array_equal(stack_slices([vol[k] for k in order], order, 5), vol)
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        stack_slices([vol[k] for k in (0, 1, 3, 4)], [0, 1, 3, 4], 5)
    with pytest.raises(ValueError, match="repeated"):
        stack_slices([vol[k] for k in (0, 1, 1, 3, 4)], [0, 1, 1, 3, 4], 5)


def test_known_volume_scores_one_against_itself() -> None:
    rows = score_volume(_box(), _box(), (3.0, 0.8, 0.8), NAMES, l3_index=3)
    vol, l3 = rows
    assert vol["level"] == "volume" and l3["level"] == "l3_slice"
    for r in rows:
        assert r["dice"] == r["recall"] == r["precision"] == 1.0
        assert r["hd"] == r["hd95"] == r["assd"] == 0.0


def test_shifted_copy_scores_the_hand_computed_value_with_the_slice_thickness() -> None:
    # shifted one slice along z: overlap 3 x 4 x 4 = 48 of 64 voxels each -> Dice = recall = precision = 0.75
    vol, l3 = score_volume(_box(1), _box(), (3.0, 0.8, 0.8), NAMES, l3_index=2)
    assert vol["dice"] == pytest.approx(0.75) and vol["recall"] == pytest.approx(0.75)
    assert vol["precision"] == pytest.approx(0.75)
    assert vol["hd"] == pytest.approx(3.0)          # one slice = the 3 mm slice thickness, not one voxel
    # slice 2 holds the target's first slice but no prediction: 0 on the L3 slice alone
    assert l3["dice"] == 0.0 and l3["spacing_z_mm"] == 3.0
    assert score_volume(_box(1), _box(), (1.0, 0.8, 0.8), NAMES)[0]["hd"] == pytest.approx(1.0)


def _three_class_volume() -> Case:
    label = np.zeros((6, 16, 16), np.uint8)
    label[1:5, 2:6, 2:6] = 1
    label[0:6, 9:13, 9:13] = 2
    image = np.where(label > 0, 100.0, -1000.0).astype(np.float32)
    return Case("v0", "p0", image, label, (5.0, 1.0, 1.0), {"l3_index": 2})


def test_every_slice_is_predicted_stacked_and_scored_after_relabelling() -> None:
    calls = []

    def predict(x: np.ndarray) -> np.ndarray:   # "segments" anything bright as class 1
        calls.append(len(x))
        return (x[:, 0] > 0.5).astype(np.uint8)

    v = _three_class_volume()
    pool = SliceSet(v.image, v.label, np.ones((6, 2)), pd.DataFrame({"case_id": range(6), "patient_id": "p0"}),
                    ("background", "a", "b"))
    data = apply_to_source(SourceData(pool, volumes=lambda pid: [_three_class_volume()]), ["b"])  # b only, as 1
    assert data.pool.class_names == ("background", "b")
    rows = evaluate_volumes(predict, data.volumes, ["p0"], "abdomen", 1, data.pool.class_names, batch_size=4)
    assert sum(calls) == 6 and calls == [4, 2]           # all 6 slices, in batches of 4
    vol, l3 = rows
    # prediction = a and b; truth = b only: b has 6*16 voxels, a 4*16 -> precision 96/160, Dice 192/256
    assert vol["case_id"] == "v0" and vol["precision"] == pytest.approx(96 / 160)
    assert vol["recall"] == 1.0 and vol["dice"] == pytest.approx(2 * 96 / (160 + 96))
    assert l3["precision"] == pytest.approx(16 / 32)


def test_level_errors() -> None:
    assert check_level("both", True) == "both"
    with pytest.raises(ConfigError, match="eval.level must be one of slice, volume, both"):
        check_level("3d")
    with pytest.raises(ConfigError, match="serves slices only"):
        check_level("volume", False, "phantom")


def test_lumbar_phantom_volumes_and_shape_changes() -> None:
    from musclelab.phantoms.lumbar import CLASS_NAMES, generate_lumbar_volume

    a, b = generate_lumbar_volume(3, size=48), generate_lumbar_volume(3, size=48)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.label.shape == a.image.shape and a.spacing[0] == 7.5 and 0 < a.l3_index < len(a.label) - 1
    area = np.stack([(a.label == k).sum(axis=(1, 2)) for k in range(1, len(CLASS_NAMES))], axis=1)
    esm, ql, psoas, obl, rect = area.T
    assert (esm > 0).all() and (rect > 0).all()                   # ESM and rectus on every slice
    assert ql[0] == 0 and ql[-1] == 0 and ql[a.l3_index] > 0       # QL absent at both ends
    assert psoas[-1] == 0 and psoas[0] > psoas[a.l3_index] > 0     # psoas grows caudally
    assert (obl == 0).any() and (obl > 0).any()                    # obliques absent on some slices
    assert ql.max() < esm.max() / 2                                # QL thin next to the ESM


def test_lumbar_source_serves_slices_and_relabelled_volumes() -> None:
    from musclelab.data.sources import load_source

    data = load_source("lumbar_phantom", 32, {"n_volumes": 2, "thickness_mm": 15.0},
                       labels=["quadratus_lumborum", "erector_spinae"])
    meta = data.pool.meta
    assert meta["is_l3"].sum() == 2 and set(meta["patient_id"]) == {"lumbar-a-0000", "lumbar-a-0001"}
    vol = data.volumes("lumbar-a-0001")[0]
    rows = meta[meta["patient_id"] == "lumbar-a-0001"]
    np.testing.assert_array_equal(vol.label[rows["slice_index"].to_numpy()],
                                  data.pool.labels[rows.index.to_numpy()])
    assert data.pool.class_names == ("background", "quadratus_lumborum", "erector_spinae")
    assert vol.spacing[0] == 15.0 and set(np.unique(vol.label)) == {0, 1, 2}


def test_predicted_volumes_are_written_as_nifti_with_the_slice_thickness(tmp_path) -> None:
    from musclelab.outputs.nifti import load_nifti

    evaluate_volumes(lambda x: (x[:, 0] > 0.5).astype(np.uint8), lambda pid: [_three_class_volume()], ["p0"],
                     "abdomen", 1, ("background", "a", "b"), nifti_dir=tmp_path)
    pred, spacing = load_nifti(tmp_path / "v0_pred.nii.gz")
    label, _ = load_nifti(tmp_path / "v0_label.nii.gz")
    assert pred.shape == (6, 16, 16) and np.allclose(spacing, (5.0, 1.0, 1.0))
    np.testing.assert_array_equal(pred, _three_class_volume().label > 0)
    np.testing.assert_array_equal(label, _three_class_volume().label)


def test_reader_sources_hand_over_their_volumes_on_the_slice_grid(tmp_path) -> None:
    import fake_datasets as fake

    from musclelab.data.sources import load_source

    data = fake.make_fake_lits(tmp_path / "lits", n=2)
    src = load_source("lits", 16, {"slices": "all"}, root=str(data.root), cache_dir=str(tmp_path / "cache"))
    pid = str(src.pool.meta["patient_id"].iloc[0])
    (vol,) = src.volumes(pid)
    rows = src.pool.meta[src.pool.meta["patient_id"] == pid]
    assert vol.image.shape == (len(rows), 16, 16) and vol.spacing[1:] == tuple(src.pool.spacing[rows.index[0]])
    np.testing.assert_array_equal(vol.label[rows["slice_index"].to_numpy()], src.pool.labels[rows.index.to_numpy()])
    np.testing.assert_allclose(vol.image[rows["slice_index"].to_numpy()], src.pool.images[rows.index.to_numpy()],
                               atol=0.5)
