"""verify_dataset: every bad-input category is reported with its file and a fix; clean data passes."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as F  # noqa: E402

from musclelab.data.readers import build_reader  # noqa: E402
from musclelab.data.verify import VerifyReport, verify_dataset  # noqa: E402
from musclelab.errors import ConfigError  # noqa: E402


def only(report: VerifyReport, check: str, severity: str = "error"):
    found = [p for p in report.problems if p.check == check and p.severity == severity]
    assert found, f"no {severity} '{check}' in:\n{report.table()}"
    return found


@pytest.mark.parametrize("name,make", [
    ("lits", lambda r: F.make_fake_lits(r, n=2)), ("btcv", lambda r: F.make_fake_btcv(r, n=2)),
    ("msd", lambda r: F.make_fake_msd(r, n=2, style="nnunet")), ("chaos", lambda r: F.make_fake_chaos(r, 1)),
    ("l3_folder", lambda r: F.make_fake_l3_folder(r)),
])
def test_clean_datasets_pass(tmp_path, name, make):
    fd = make(tmp_path)
    report = verify_dataset(build_reader(name, fd.root))
    assert report.ok and not report.problems, report.table()
    assert report.n_cases == len(fd.ids)
    report.raise_if_errors()
    assert "no problems" in report.table()


def test_missing_orphan_and_duplicate(tmp_path):
    fd = F.make_fake_lits(tmp_path, n=3, gz=(True,))
    F.remove_file(fd.label_files["volume-0"])          # missing mask
    F.remove_file(fd.image_files["volume-1"])          # orphan mask
    dup = F.make_duplicate_id(fd.image_files["volume-2"])
    report = verify_dataset(build_reader("lits", tmp_path))
    assert not report.ok
    (p,) = only(report, "missing_label")
    assert p.file == str(fd.image_files["volume-0"]) and "segmentation-0" in p.message
    assert p.case_id == "volume-0"
    (p,) = only(report, "orphan_label", "warning")
    assert p.file == str(fd.label_files["volume-1"]) and p.case_id == "volume-1"
    (p,) = only(report, "duplicate_id")
    assert p.case_id == "volume-2" and dup.name in p.message and fd.image_files["volume-2"].name in p.message


@pytest.mark.parametrize("decode", [True, False])
def test_truncated_gz_is_an_error_naming_the_file(tmp_path, decode):
    fd = F.make_fake_lits(tmp_path, n=2, gz=(True,))
    F.truncate_file(fd.image_files["volume-1"], 0.7)
    report = verify_dataset(build_reader("lits", tmp_path), decode=decode)
    (p,) = only(report, "readable")
    assert p.file == str(fd.image_files["volume-1"]) and "truncated or corrupt" in p.message
    assert "re-export or remove it" in p.message
    with pytest.raises(ConfigError, match="volume-1.nii.gz"):
        report.raise_if_errors()


def test_nan_image_and_undeclared_label_value(tmp_path):
    fd = F.make_fake_btcv(tmp_path, n=3)
    F.make_nan_image(fd.image_files["img0001"])
    F.set_label_value(fd.label_files["img0002"], 20)
    r = build_reader("btcv", tmp_path)
    report = verify_dataset(r)
    (p,) = only(report, "finite")
    assert p.file == str(fd.image_files["img0001"]) and "5 NaN/inf" in p.message
    (p,) = only(report, "label_values")
    assert p.file == str(fd.label_files["img0002"]) and "20 (3 voxels)" in p.message
    refs = {x.case_id: x for x in r.scan()}
    with pytest.raises(ConfigError, match="NaN"):
        r.load(refs["img0001"])
    with pytest.raises(ConfigError, match="not classes of this data set"):
        r.load(refs["img0002"])
    r.load(refs["img0003"])  # the clean case still loads


def test_shape_and_spacing_mismatch(tmp_path):
    fd = F.make_fake_msd(tmp_path, n=3, style="msd")
    F.make_shape_mismatch(fd.label_files["thigh_000"])
    F.make_spacing_mismatch(fd.label_files["thigh_001"], 1.01)
    r = build_reader("msd", tmp_path)
    report = verify_dataset(r, decode=False)   # header checks alone find both
    (p,) = only(report, "shape")
    assert p.file == str(fd.label_files["thigh_000"]) and "label is 6x31x32 voxels" in p.message
    (p,) = only(report, "spacing")
    assert p.file == str(fd.label_files["thigh_001"])
    assert [q.case_id for q in report.errors] == ["thigh_000", "thigh_001"]
    with pytest.raises(ConfigError, match="voxels but the image is"):
        r.load(r.scan()[0])


def test_spacing_within_tolerance_passes(tmp_path):
    fd = F.make_fake_msd(tmp_path, n=1, style="nnunet")
    F.make_spacing_mismatch(fd.label_files["thigh_000"], 1.0 + 2e-4)   # 0.14 um: header rounding noise
    assert verify_dataset(build_reader("msd", tmp_path)).ok


def test_empty_mask_is_a_warning(tmp_path):
    F.make_fake_lits(tmp_path, n=2)              # case 0 has no tumour
    report = verify_dataset(build_reader("lits", tmp_path, target="tumour"))
    assert report.ok
    (p,) = only(report, "empty_mask", "warning")
    assert p.case_id == "volume-0" and "segmentation-0" in p.file


def test_chaos_missing_slice_mask_and_corrupt_dicom(tmp_path):
    fd = F.make_fake_chaos(tmp_path, n_patients=3)
    shutil.rmtree(fd.label_files["chaos-ct-3"])                         # a patient without Ground/
    F.remove_file(fd.label_files["chaos-ct-1"] / "liver_GT_002.png")
    bad = fd.image_files["chaos-ct-2"] / "i0004,0000b.dcm"
    bad.write_bytes(b"garbage")
    report = verify_dataset(build_reader("chaos", tmp_path))
    shape = only(report, "shape")
    assert shape[0].case_id == "chaos-ct-1" and "5 mask PNGs for 6 DICOM slices" in shape[0].message
    (p,) = only(report, "readable")
    assert p.case_id == "chaos-ct-2" and p.file == str(bad) and "DICOM" in p.message
    (p,) = only(report, "missing_label")
    assert p.case_id == "chaos-ct-3" and p.file.endswith("Ground")


def test_l3_folder_png_values_meta_and_observers(tmp_path):
    fd = F.make_fake_l3_folder(tmp_path, observers=1)
    F.set_label_value(fd.label_files["c1"], 7)          # PNG masks are 0/1/255 when binary
    (tmp_path / "observers" / "obs1" / "c9.nii.gz").write_bytes((tmp_path / "observers" / "obs1" / "c3.nii.gz")
                                                                .read_bytes())
    meta = (tmp_path / "meta.csv").read_text().splitlines()
    (tmp_path / "meta.csv").write_text("\n".join(meta[:-1] + ["zz,p9,a,1.8,M"]) + "\n")  # drop c3, add zz
    report = verify_dataset(build_reader("l3_folder", tmp_path))
    (p,) = only(report, "label_values")
    assert p.file == str(fd.label_files["c1"]) and "7 (3 voxels)" in p.message
    orphan = only(report, "orphan_label", "warning")
    assert orphan[0].file.endswith("c9.nii.gz")
    msgs = {p.case_id for p in only(report, "meta", "warning")}
    assert msgs == {"c3", "zz"}
    # an undeclared value in an observer's mask is caught too, naming the observer's file
    obs = tmp_path / "observers" / "obs1" / "c3.nii.gz"
    F.set_label_value(obs, 9)
    probs = verify_dataset(build_reader("l3_folder", tmp_path)).by_check("label_values")
    assert [(q.case_id, q.file) for q in probs if q.case_id == "c3"] == [("c3", str(obs))]


def test_l3_volume_instead_of_slice_and_bad_meta(tmp_path):
    F.make_fake_l3_folder(tmp_path, observers=0)
    F.write_nifti(tmp_path / "images" / "vol.nii.gz", F.expected_volume(0), F.SPACING_3D, dtype=np.int16)
    F.write_nifti(tmp_path / "masks" / "vol.nii.gz", np.zeros(F.SHAPE_3D, np.uint8), F.SPACING_3D)
    report = verify_dataset(build_reader("l3_folder", tmp_path), decode=False)
    (p,) = only(report, "dimensions")
    assert p.case_id == "vol" and "single axial slices" in p.message
    (tmp_path / "meta.csv").write_text("case,patient_id\nc1,p1\n")
    report = verify_dataset(build_reader("l3_folder", tmp_path))
    (p,) = only(report, "scan")
    assert "no 'id' column" in p.message


def test_report_table_and_raise(tmp_path):
    fd = F.make_fake_lits(tmp_path, n=2)
    F.set_label_value(fd.label_files["volume-1"], 3)
    report = verify_dataset(build_reader("lits", tmp_path))
    text = report.table()
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["severity", "check", "case", "file", "message"]
    assert "Training Batch 2/segmentation-1.nii" in text          # paths relative to the root
    assert lines[-1].endswith("2 cases, 1 errors, 0 warnings")
    with pytest.raises(ConfigError) as exc:
        report.raise_if_errors()
    assert "label_values" in str(exc.value) and "segmentation-1" in str(exc.value)


def test_map_labels_in_chunks_matches_direct(monkeypatch):
    from musclelab.data.readers import label_maps as base

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4, (5, 7, 9)).astype(np.int16)
    lut = base.make_lut({0: 0, 1: 1, 2: 1, 3: 2})
    monkeypatch.setattr(base, "_CHUNK", 17)
    label, per_class, probs = base.map_labels(raw, lut, "x.nii", ("bg", "a", "b"))
    assert not probs
    np.testing.assert_array_equal(label, lut[raw])
    assert per_class.tolist() == [int((lut[raw] == k).sum()) for k in range(3)]
    raw.flat[[3, 100, 200]] = [-2, 7, 7]
    label, _, probs = base.map_labels(raw, lut, "x.nii", ("bg", "a", "b"))
    assert label is None and "-2 (1 voxels), 7 (2 voxels)" in probs[0].message
    _, _, probs = base.map_labels(raw.astype(np.float32) + 0.5, lut, "x.nii", ("bg", "a", "b"))
    assert "non-integer" in probs[0].message
