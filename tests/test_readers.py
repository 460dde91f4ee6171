"""Data-set readers: layouts, HU (incl. rescale slope/intercept), LPS orientation, spacing, label mapping,
patient ids, CHAOS slice ordering and mask matching, phantom export round trip. All on tiny fake data."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as F  # noqa: E402

from musclelab.data.readers import READERS, build_reader, open_image, read_header, read_image  # noqa: E402
from musclelab.data.verify import verify_dataset  # noqa: E402
from musclelab.errors import ConfigError  # noqa: E402
from musclelab.registry import UnknownNameError  # noqa: E402


def assert_block_anterior_left(image: np.ndarray) -> None:
    """The fake's bright block (the only voxels at 700 HU) must sit at low rows and high columns."""
    rows, cols = np.nonzero(image[..., :, :].reshape(-1, *image.shape[-2:]).max(0) == F.HU_BLOCK)
    assert rows.size and rows.max() < image.shape[-2] // 2, "block should be anterior (rows near 0)"
    assert cols.min() > image.shape[-1] // 2, "block should be on the patient's left (high columns)"


def load_all(reader):
    return {c.case_id: c for c in reader.load_all()}


# ----------------------------------------------------------------------------------------------------------
# read_image / open_image
# ----------------------------------------------------------------------------------------------------------


def test_read_image_real_dicom_hu_matches_pydicom():
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) != 0  # a non-trivial rescale is being tested
    arr, spacing = read_image(path)
    assert arr.shape == expected.shape
    np.testing.assert_array_equal(arr.astype(np.float64), expected)
    assert spacing == pytest.approx([float(v) for v in ds.PixelSpacing])  # (row, col) mm
    hdr = read_header(path)
    assert hdr.shape == arr.shape and hdr.spacing == pytest.approx(spacing)


def test_nifti_ras_and_lps_storage_read_the_same(tmp_path):
    vol = F.expected_volume(3)
    a = F.write_nifti(tmp_path / "lps.nii.gz", vol, F.SPACING_3D, "LPS", np.int16)
    b = F.write_nifti(tmp_path / "ras.nii", vol, F.SPACING_3D, "RAS", np.int16)
    assert not np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))  # stored differently
    (xa, sa), (xb, sb) = read_image(a), read_image(b)
    np.testing.assert_array_equal(xa, vol)
    np.testing.assert_array_equal(xb, vol)
    assert sa == pytest.approx(F.SPACING_3D) and sb == pytest.approx(F.SPACING_3D)
    assert_block_anterior_left(xa)
    for p in (a, b):
        h = read_header(p)
        assert h.shape == vol.shape and h.spacing == pytest.approx(F.SPACING_3D)


def test_nifti_scl_slope_inter_applied(tmp_path):
    vol = F.expected_volume(1)
    p = F.write_nifti(tmp_path / "scaled.nii.gz", vol, F.SPACING_3D, "LPS", np.int16, slope=2.0, inter=-1024.0)
    raw = np.asarray(nib.load(p).dataobj.get_unscaled())
    assert raw.min() >= 0  # stored integers are not HU
    arr, _ = read_image(p)
    np.testing.assert_array_equal(arr, vol)


def test_float_nifti_keeps_nan_where_itk_would_zero_it(tmp_path):
    vol = F.expected_volume(0)
    vol[2, 5, 30] = np.nan       # anterior-left voxel of slice 2
    vol[4, 31, 0] = np.inf
    for orient in ("LPS", "RAS"):
        arr, _ = read_image(F.write_nifti(tmp_path / f"{orient}.nii.gz", vol, F.SPACING_3D, orient, np.float32))
        assert np.isnan(arr[2, 5, 30]) and np.isposinf(arr[4, 31, 0])
        assert np.isfinite(arr).sum() == arr.size - 2


def test_single_slice_nifti_becomes_2d_and_nrrd_flips_back(tmp_path):
    sl = F.expected_slice(0)
    arr, sp = read_image(F.write_nifti(tmp_path / "s.nii.gz", sl, F.SPACING_2D, "RAS", np.int16))
    assert arr.shape == sl.shape and sp == pytest.approx(F.SPACING_2D)
    np.testing.assert_array_equal(arr, sl)
    arr, sp = read_image(F.write_nrrd(tmp_path / "s.nrrd", sl.astype(np.int16), F.SPACING_2D))
    np.testing.assert_array_equal(arr, sl)
    assert_block_anterior_left(arr)


@pytest.mark.parametrize("name,kind", [("v.nii.gz", "NIfTI"), ("v.nii", "NIfTI"), ("v.nrrd", "NRRD"),
                                       ("m.png", "PNG"), ("s.dcm", "DICOM")])
def test_truncated_file_raises_config_error_naming_it(tmp_path, name, kind):
    p = tmp_path / name
    if kind == "NIfTI":
        F.write_nifti(p, np.random.default_rng(0).integers(-1000, 1000, (6, 32, 32)), F.SPACING_3D, dtype=np.int16)
    elif kind == "NRRD":
        F.write_nrrd(p, F.expected_volume(0).astype(np.int16), F.SPACING_3D)
    elif kind == "PNG":
        F.write_png(p, np.random.default_rng(0).integers(0, 255, (32, 32)))
    else:
        F.write_dicom_slice(p, F.expected_slice(0), ipp=(0, 0, 0), iop=(1, 0, 0, 0, 1, 0), pixel_spacing=(1, 1),
                            thickness=1, instance=1)
    F.truncate_file(p, 0.5)
    with pytest.raises(ConfigError) as exc:
        read_image(p)
    msg = str(exc.value)
    assert str(p) in msg and "re-export or remove it" in msg
    assert "Exception thrown" not in msg and "Traceback" not in msg
    if kind == "NIfTI":  # ITK alone would have returned zeros; the header check catches it cheaply too
        assert f"could not be read as NIfTI (truncated or corrupt?)" in msg
        with pytest.raises(ConfigError, match="truncated"):
            read_header(p)


def test_garbage_and_missing_files(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(b"not a nifti at all")
    with pytest.raises(ConfigError, match="junk.nii.gz"):
        open_image(p)
    with pytest.raises(ConfigError, match="does not exist"):
        read_image(tmp_path / "nope.nrrd")


# ----------------------------------------------------------------------------------------------------------
# Registry / construction
# ----------------------------------------------------------------------------------------------------------


def test_registry_and_build_reader(tmp_path):
    assert READERS.names() == ["btcv", "chaos", "l3_folder", "lits", "msd"]
    with pytest.raises(UnknownNameError, match="data.name"):
        READERS.get("kits")
    F.make_fake_lits(tmp_path, n=1)
    with pytest.raises(ConfigError, match="target_labels.*accepts: target"):
        build_reader("lits", tmp_path, target_labels=[1])
    with pytest.raises(ConfigError, match="does not exist"):
        build_reader("lits", tmp_path / "missing")


# ----------------------------------------------------------------------------------------------------------
# LiTS
# ----------------------------------------------------------------------------------------------------------


def test_lits_reads_volumes_labels_and_targets(tmp_path):
    fd = F.make_fake_lits(tmp_path, n=3)
    r = build_reader("lits", tmp_path)
    refs = r.scan()
    assert [x.case_id for x in refs] == fd.ids  # found recursively in both batch folders
    assert {x.case_id: x.patient_id for x in refs} == fd.patient_ids
    cases = load_all(r)
    for cid, c in cases.items():
        np.testing.assert_array_equal(c.image, fd.images[cid])   # incl. the scl_slope=2 case and RAS storage
        assert c.image.dtype == np.float32
        assert c.spacing == pytest.approx(F.SPACING_3D)
        np.testing.assert_array_equal(c.label, (fd.labels[cid] >= 1).astype(np.uint8))
        assert c.files[0] == fd.image_files[cid] and c.meta["source"] == "lits"
        assert_block_anterior_left(c.image)
    assert r.class_names == ("background", "liver")

    t = build_reader("lits", tmp_path, target="tumour")
    assert t.class_names == ("background", "tumour")
    for cid, c in load_all(t).items():
        np.testing.assert_array_equal(c.label, (fd.labels[cid] == 2).astype(np.uint8))
    lt = build_reader("lits", tmp_path, target="liver_tumour")
    assert lt.class_names == ("background", "liver", "tumour")
    for cid, c in load_all(lt).items():
        np.testing.assert_array_equal(c.label, fd.labels[cid])
    with pytest.raises(ConfigError, match="liver_tumour"):
        build_reader("lits", tmp_path, target="kidney")


# ----------------------------------------------------------------------------------------------------------
# BTCV
# ----------------------------------------------------------------------------------------------------------


def test_btcv_target_labels(tmp_path):
    fd = F.make_fake_btcv(tmp_path, n=2)
    r = build_reader("btcv", tmp_path)
    assert r.class_names == ("background", "liver")
    cases = load_all(r)
    assert sorted(cases) == ["img0001", "img0002"]
    assert cases["img0002"].patient_id == "btcv-0002"
    for cid, c in cases.items():
        np.testing.assert_array_equal(c.image, fd.images[cid])
        np.testing.assert_array_equal(c.label, (fd.labels[cid] == 6).astype(np.uint8))
        assert_block_anterior_left(c.image)
    r2 = build_reader("btcv", tmp_path / "RawData", target_labels=["aorta", 1, "IVC"])
    assert r2.class_names == ("background", "aorta", "spleen", "inferior_vena_cava")
    lab = fd.labels["img0001"]
    c = r2.load(r2.scan()[0])
    expected = np.select([lab == 8, lab == 1, lab == 9], [1, 2, 3], 0)
    np.testing.assert_array_equal(c.label, expected)
    for bad in (["kidney"], [0], [6, "liver"], [14]):
        with pytest.raises(ConfigError, match="target_labels"):
            build_reader("btcv", tmp_path, target_labels=bad)


# ----------------------------------------------------------------------------------------------------------
# MSD / nnU-Net
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["msd", "nnunet"])
def test_msd_both_dataset_json_styles(tmp_path, style):
    fd = F.make_fake_msd(tmp_path, n=2, style=style)
    r = build_reader("msd", tmp_path)
    names = tuple(sorted(F.THIGH_LABELS, key=F.THIGH_LABELS.get))
    assert r.class_names == names and len(names) == 30
    refs = r.scan()
    assert [x.case_id for x in refs] == fd.ids  # the ._ junk file is ignored, _0000 is stripped
    for ref in refs:
        c = r.load(ref)
        np.testing.assert_array_equal(c.image, fd.images[c.case_id])
        np.testing.assert_array_equal(c.label, fd.labels[c.case_id])
        assert c.patient_id == c.case_id
    sub = build_reader("msd", tmp_path, target_labels=["muscle_07", 3])
    assert sub.class_names == ("background", "muscle_07", "muscle_03")
    c = sub.load(sub.scan()[1])
    lab = fd.labels[c.case_id]
    np.testing.assert_array_equal(c.label, np.select([lab == 7, lab == 3], [1, 2], 0))


def test_msd_patient_regex_and_bad_json(tmp_path):
    F.make_fake_msd(tmp_path, n=2, style="msd", task="sub01")
    r = build_reader("msd", tmp_path, patient_regex=r"^(sub\d+)_")
    assert {x.patient_id for x in r.scan()} == {"sub01"}
    (tmp_path / "dataset.json").write_text('{"labels": {"background": 0, "tumour": [1, 2]}}')
    with pytest.raises(ConfigError, match="region-based"):
        build_reader("msd", tmp_path)
    (tmp_path / "dataset.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        build_reader("msd", tmp_path)


# ----------------------------------------------------------------------------------------------------------
# CHAOS
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iop", [(-1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0), (1, 0, 0, 0, 1, 0)])
def test_chaos_orders_slices_by_position_and_matches_masks(tmp_path, iop):
    import pydicom

    fd = F.make_fake_chaos(tmp_path, n_patients=2, iop=iop)
    r = build_reader("chaos", tmp_path)
    refs = r.scan()
    assert [x.case_id for x in refs] == ["chaos-ct-1", "chaos-ct-2"]
    assert [x.patient_id for x in refs] == ["chaos-1", "chaos-2"]
    for ref in refs:
        cid = ref.case_id
        perm = fd.extra["file_z"][cid]
        # file-name order (== InstanceNumber order) is not the spatial order
        assert not np.array_equal(perm, np.sort(perm))
        inst = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in ref.image]
        assert inst == sorted(inst)
        c = r.load(ref)
        assert c.image.shape == (6, 32, 32) and c.spacing == pytest.approx((2.5, 0.8, 0.7))
        np.testing.assert_array_equal(c.image, fd.images[cid])      # HU incl. slope 2 for patient 2
        np.testing.assert_array_equal(c.label, fd.labels[cid])      # each mask on its own slice, same flips
        assert_block_anterior_left(c.image)
        # the marker encodes the slice index: inferior -> superior
        assert list(c.image[:, 30, 1]) == [-500.0 + 100 * z + 10 * int(cid[-1]) for z in range(6)]
    assert r.class_names == ("background", "liver")


def test_chaos_mask_count_mismatch_raises(tmp_path):
    fd = F.make_fake_chaos(tmp_path, n_patients=1)
    F.remove_file(fd.label_files["chaos-ct-1"] / "liver_GT_003.png")
    r = build_reader("chaos", tmp_path / "Train_Sets")
    with pytest.raises(ConfigError, match="5 mask PNGs .* 6 DICOM slices"):
        r.load(r.scan()[0])


# ----------------------------------------------------------------------------------------------------------
# l3_folder
# ----------------------------------------------------------------------------------------------------------


def test_l3_folder_mixed_formats_binary(tmp_path):
    fd = F.make_fake_l3_folder(tmp_path, observers=2)
    r = build_reader("l3_folder", tmp_path, load_observers=True)
    assert r.class_names == ("background", "muscle")
    cases = load_all(r)
    assert list(cases) == fd.ids  # "007" stays a string id
    for cid, c in cases.items():
        assert c.image.ndim == 2 and c.spacing == pytest.approx(F.SPACING_2D)
        np.testing.assert_array_equal(c.image, fd.images[cid])
        np.testing.assert_array_equal(c.label, fd.labels[cid])   # PNG 0/255 -> 0/1, DICOM row flip applied
        assert c.patient_id == fd.patient_ids[cid]
        assert c.meta["site"] in ("a", "b") and isinstance(c.meta["height_m"], float)
        assert set(c.meta["observers"]) == {"obs1", "obs2"}
        for name, m in c.meta["observers"].items():
            np.testing.assert_array_equal(m, fd.extra["observers"][cid][name])
        assert_block_anterior_left(c.image)
    assert cases["007"].patient_id == cases["c1"].patient_id == "p01"
    assert cases["c2"].files[-1].parts[-2:] == ("obs2", "c2.nrrd")
    # default: observers stay out of Case.meta (scalar meta for the slice cache) and are read on demand
    plain = build_reader("l3_folder", tmp_path)
    ref = plain.scan()[0]
    c = plain.load(ref)
    assert "observers" not in c.meta and len(c.files) == 2 and set(ref.observers) == {"obs1", "obs2"}
    masks = plain.observer_masks(ref)
    np.testing.assert_array_equal(masks["obs2"], fd.extra["observers"]["007"]["obs2"])


def test_l3_folder_labels_yaml_and_param(tmp_path):
    fd = F.make_fake_l3_folder(tmp_path, labels_yaml=True, observers=1)
    r = build_reader("l3_folder", tmp_path)
    assert r.class_names == ("background", "erector_spinae", "psoas")
    for cid, c in load_all(r).items():
        np.testing.assert_array_equal(c.label, fd.labels[cid])
    # the labels parameter overrides labels.yaml; values need not be contiguous
    r2 = build_reader("l3_folder", tmp_path, labels={"background": 0, "psoas": 2, "erector_spinae": 1})
    assert r2.class_names == ("background", "erector_spinae", "psoas")
    (tmp_path / "labels.yaml").write_text("labels: {muscle: 1}\n")
    with pytest.raises(ConfigError, match="background: 0"):
        build_reader("l3_folder", tmp_path)


def test_l3_folder_reads_phantom_export_as_is(tmp_path):
    from musclelab.phantoms.l3 import MUSCLE_NAMES, generate_phantom, write_phantom_dataset

    out = write_phantom_dataset(tmp_path / "ph", n=3, size=48, site="b", seed=5)
    ph = generate_phantom(3, size=48, site="b", seed=5)
    r = build_reader("l3_folder", out)
    cases = r.load_all()
    assert [c.case_id for c in cases] == list(ph.meta["case_id"])
    for k, c in enumerate(cases):
        np.testing.assert_array_equal(c.image, ph.images[k])
        np.testing.assert_array_equal(c.label, ph.labels["muscle"][k])
        assert c.spacing == pytest.approx(tuple(ph.spacing[k]), rel=1e-6)
        assert c.patient_id == ph.meta["patient_id"][k]
        assert c.meta["site"] == "b"
    labels = {n: i for i, n in enumerate(MUSCLE_NAMES)}
    rm = build_reader("l3_folder", out, masks_dir="masks_muscles", labels=labels)
    assert rm.class_names == MUSCLE_NAMES
    np.testing.assert_array_equal(rm.load(rm.scan()[1]).label, ph.labels["muscles"][1])
    assert verify_dataset(r).ok


# ----------------------------------------------------------------------------------------------------------
# Readers never write
# ----------------------------------------------------------------------------------------------------------


def test_readers_never_write_into_root(tmp_path):
    made = {
        "lits": F.make_fake_lits(tmp_path / "lits", n=2), "btcv": F.make_fake_btcv(tmp_path / "btcv", n=1),
        "msd": F.make_fake_msd(tmp_path / "msd", n=1), "chaos": F.make_fake_chaos(tmp_path / "chaos", 1),
        "l3_folder": F.make_fake_l3_folder(tmp_path / "l3"),
    }
    for name, fd in made.items():
        before = F.tree_state(fd.root)
        r = build_reader(name, fd.root)
        r.load_all()
        verify_dataset(r)
        assert F.tree_state(fd.root) == before, name
        json.dumps(r.params)  # the slice cache keys on them
