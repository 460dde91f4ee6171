"""Tests for the synthetic 3D abdominal CT phantom with a liver (musclelab.phantoms.abdomen)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from musclelab.phantoms import abdomen as ap
from musclelab.phantoms.abdomen import (
    LIVER_SITES, META_KEYS, TARGETS, AbdomenVolume, generate_abdomen_phantom, generate_abdomen_volume,
    get_liver_site, write_abdomen_dataset,
)
from musclelab.data.sources import load_source


def _eroded(mask: np.ndarray, it: int = 1) -> np.ndarray:
    """In-plane erosion of a (Z, H, W) mask (away from blurred boundaries)."""
    return ndimage.binary_erosion(mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool), iterations=it)


@pytest.fixture(scope="module")
def lits64() -> list[AbdomenVolume]:
    return generate_abdomen_phantom(3, size=64, site="lits", seed=0)


def test_volume_shapes_dtypes_and_meta(lits64):
    for k, vol in enumerate(lits64):
        z, h, w = vol.image.shape
        assert (h, w) == (64, 64) and 25 <= z <= 90
        assert vol.image.dtype == np.float32 and np.array_equal(vol.image, np.rint(vol.image))
        assert vol.image.min() >= -1024 and vol.image.max() <= 3071
        assert vol.label.dtype == np.uint8 and vol.label.shape == vol.image.shape
        assert set(np.unique(vol.label)) <= {0, 1, 2}
        assert set(vol.meta) == set(META_KEYS)
        m = vol.meta
        assert m["volume_id"] == m["patient_id"] == f"lits-{k:04d}" and m["site"] == "lits" and m["n_slices"] == z
        assert vol.spacing == (m["slice_thickness_mm"], m["spacing_row_mm"], m["spacing_col_mm"])
        assert m["spacing_row_mm"] == pytest.approx(m["fov_mm"] / 64, rel=1e-3)
        ml = np.count_nonzero(vol.label) * np.prod(vol.spacing) / 1000.0
        assert m["liver_volume_ml"] == pytest.approx(ml, abs=0.01)
        assert 500 < m["liver_volume_ml"] < 3500
        assert m["contrast_phase"] in ap.PHASES and m["sex"] in ("F", "M")
        # a few slices above the dome and below the inferior tip have no liver
        has = vol.label.reshape(z, -1).any(1)
        assert not has[:3].any() and not has[-3:].any()


def test_deterministic_and_seeded():
    a = generate_abdomen_volume(1, site="btcv", seed=5, size=48)
    b = generate_abdomen_volume(1, site="btcv", seed=5, size=48)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.meta == b.meta
    c = generate_abdomen_volume(1, site="btcv", seed=6, size=48)
    assert c.image.shape != a.image.shape or not np.array_equal(c.image, a.image)


def test_n_volumes_are_a_prefix_of_a_larger_set():
    small = generate_abdomen_phantom(2, size=40, site="chaos", seed=1)
    large = generate_abdomen_phantom(3, size=40, site="chaos", seed=1)
    later = generate_abdomen_phantom(1, size=40, site="chaos", seed=1, start=2)
    for s, l in zip(small + later, large):
        assert np.array_equal(s.image, l.image) and np.array_equal(s.label, l.label) and s.meta == l.meta


def test_size_changes_only_the_sampling():
    lo, hi = generate_abdomen_volume(0, size=64), generate_abdomen_volume(0, size=128)
    assert lo.image.shape[0] == hi.image.shape[0] and lo.spacing[0] == hi.spacing[0]
    assert lo.spacing[1] == pytest.approx(2 * hi.spacing[1])
    assert lo.meta["liver_volume_ml"] == pytest.approx(hi.meta["liver_volume_ml"], rel=0.08)
    assert lo.meta["contrast_phase"] == hi.meta["contrast_phase"] and lo.meta["sex"] == hi.meta["sex"]


def test_liver_grows_then_shrinks_on_the_image_left(lits64):
    for vol in lits64:
        area = (vol.label >= 1).sum((1, 2))
        zs = np.flatnonzero(area)
        assert len(zs) >= 10 and np.all(area[zs[0]:zs[-1] + 1] > 0)   # one craniocaudal extent, no gaps
        peak = int(np.argmax(area))
        assert zs[0] < peak < zs[-1]
        assert area[zs[0]] < 0.5 * area[peak] and area[zs[-1]] < 0.5 * area[peak]
        assert peak - zs[0] < zs[-1] - peak              # largest in the upper-middle slices
        cols = np.nonzero(vol.label[peak] >= 1)[1]
        assert cols.mean() < vol.image.shape[2] / 2       # subject's right = image left (radiological)


def test_superior_to_inferior_order_and_anatomy():
    vol, st = ap._generate(0, "lits", 0, 64)
    z = len(st)
    lung = (st == ap._LUNG).reshape(z, -1).sum(1)
    kidney = np.isin(st, (ap._KCORTEX, ap._KMED)).reshape(z, -1).sum(1)
    assert lung[0] > 0 and lung[-1] == 0                  # lung bases at the top (slice 0 most superior)
    assert kidney[0] == 0 and kidney[-1] > 0              # kidneys in the lower slices
    assert (st == ap._HEART).reshape(z, -1).any(1)[0]      # heart above the liver dome
    assert (st == ap._SPLEEN).any() and (st == ap._BGAS).any() and (st == ap._RIB).any()
    rows = np.nonzero((st == ap._SPLEEN).any(0))
    assert rows[1].mean() > 32                              # spleen on the subject's left (image right)
    # anterior at the top: the vertebral body lies below the liver's centroid
    bone_rows = np.nonzero(st == ap._BONE)[1]
    assert bone_rows.mean() > np.nonzero(vol.label >= 1)[1].mean()


def test_tumours_only_inside_the_liver():
    with_t, st = ap._generate(1, "lits", 0, 64, tumours=True)
    without, _ = ap._generate(1, "lits", 0, 64, tumours=False)
    tum = with_t.label == 2
    assert tum.any() and with_t.meta["n_tumours"] >= 1 and without.meta["n_tumours"] == 0
    assert not (without.label == 2).any()
    assert np.all(without.label[tum] == 1)                # every tumour voxel is liver without the tumours
    assert np.array_equal(with_t.label[~tum], without.label[~tum])
    assert with_t.meta["tumour_volume_ml"] > 0
    for i in range(3):                                      # CHAOS: healthy donors
        assert generate_abdomen_volume(i, site="chaos", size=40).meta["n_tumours"] == 0


def _mean_hu(vol: AbdomenVolume, st: np.ndarray, code: int) -> float:
    return float(vol.image[_eroded(st == code)].mean())


@pytest.mark.parametrize("index", [0, 2])
def test_contrast_phases_and_the_spleen_confounder(index):
    means = {}
    for phase in ("non_contrast", "arterial", "portal_venous"):
        vol, st = ap._generate(index, "chaos", 0, 96, contrast_phase=phase)   # chaos: no fatty livers
        assert vol.meta["contrast_phase"] == phase and vol.meta["liver_fat_hu"] == 0
        means[phase] = {c: _mean_hu(vol, st, c) for c in (ap._LIVER, ap._SPLEEN, ap._AORTA, ap._HVESSEL)}
    nc, ar, pv = means["non_contrast"], means["arterial"], means["portal_venous"]
    assert 48 <= nc[ap._LIVER] <= 72 and 90 <= pv[ap._LIVER] <= 130 and 63 <= ar[ap._LIVER] <= 87
    assert ar[ap._AORTA] > 200 and ar[ap._AORTA] > pv[ap._AORTA] > nc[ap._AORTA] + 80
    assert pv[ap._HVESSEL] > pv[ap._LIVER] + 25           # enhanced portal / hepatic veins
    assert abs(pv[ap._SPLEEN] - pv[ap._LIVER]) < 20       # the spleen looks like liver
    assert abs(nc[ap._SPLEEN] - nc[ap._LIVER]) < 25       # non-contrast: spleen ~45-50, liver ~55-65 HU


def test_sites_differ_in_spacing_and_noise():
    vols = {s: [ap._generate(i, s, 0, 64) for i in range(3)] for s in LIVER_SITES}
    assert {v.spacing[0] for v, _ in vols["btcv"]} == {3.0}
    assert {v.spacing[0] for v, _ in vols["chaos"]} <= {3.0, 3.2}
    assert {v.spacing[0] for v, _ in vols["lits"]} <= set(LIVER_SITES["lits"].thickness_mm)

    def liver_sd(vol, st):   # noise + texture inside the liver (away from the boundary)
        m = _eroded(st == ap._LIVER, 2)
        return float(vol.image[m].std())

    sd = {s: np.mean([liver_sd(v, st) for v, st in vv]) for s, vv in vols.items()}
    assert sd["btcv"] > 2.0 * sd["chaos"] and sd["lits"] > sd["chaos"]
    assert {p.name for p in LIVER_SITES.values()} == {"lits", "btcv", "chaos"}
    fov = {s: [v.meta["fov_mm"] for v, _ in vv] for s, vv in vols.items()}
    assert max(fov["chaos"]) <= LIVER_SITES["chaos"].fov_mm[1] + 60


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="known sites: lits, btcv, chaos"):
        get_liver_site("ircad")
    with pytest.raises(ValueError, match="known sites: lits, btcv, chaos"):
        generate_abdomen_volume(0, site="a")
    with pytest.raises(ValueError, match="portal_venous"):
        generate_abdomen_volume(0, size=40, contrast_phase="delayed")
    with pytest.raises(ValueError, match="size"):
        generate_abdomen_volume(0, size=16)
    with pytest.raises(ValueError, match=r"data\.source\.site 'msd'.*known sites: lits, btcv, chaos"):
        load_source("abdomen_phantom", 40, {"site": "msd"})
    with pytest.raises(ValueError, match=r"data\.source\.test_site 'x'.*known sites"):
        load_source("abdomen_phantom", 40, {"test_site": "x"})
    with pytest.raises(ValueError, match=r"data\.source\.target 'spleen'.*known targets: liver, tumour, liver_tumour"):
        load_source("abdomen_phantom", 40, {"target": "spleen"})
    with pytest.raises(ValueError, match=r"data\.source\.slices"):
        load_source("abdomen_phantom", 40, {"slices": "some"})
    with pytest.raises(ValueError, match=r"data\.source\.n_vols is not a parameter"):
        load_source("abdomen_phantom", 40, {"n_vols": 3})
    with pytest.raises(ValueError, match="no slice .* contains the target 'tumour'"):
        load_source("abdomen_phantom", 40, {"site": "chaos", "n_volumes": 2, "target": "tumour"})


def test_targets_match_the_lits_reader():
    from musclelab.data.readers.lits import TARGETS as LITS_TARGETS

    assert TARGETS == LITS_TARGETS


def test_source_serves_target_slices_with_margin_per_volume():
    data = load_source("abdomen_phantom", 48, {"n_volumes": 3, "margin": 1, "site": "lits"})
    pool = data.pool
    assert data.external_test is None and pool.class_names == ("background", "liver")
    assert pool.images.dtype == np.float32 and pool.labels.dtype == np.uint8 and pool.images.shape[1:] == (48, 48)
    assert pool.spacing.shape == (len(pool), 2) and set(np.unique(pool.labels)) == {0, 1}
    assert pool.meta["case_id"].is_unique
    assert (pool.meta["patient_id"] == pool.meta["volume_id"]).all()
    for col in ("case_id", "patient_id", "slice_index", "site", "contrast_phase", "n_tumours", "liver_volume_ml"):
        assert col in pool.meta.columns
    for pid, rows in pool.meta.groupby("patient_id"):
        vol = generate_abdomen_volume(int(pid.split("-")[1]), site="lits", size=48)
        has = np.flatnonzero(vol.label.reshape(len(vol.label), -1).any(1))
        expect = sorted(set(np.clip(np.concatenate([has - 1, has, has + 1]), 0, len(vol.label) - 1)))
        assert rows["slice_index"].tolist() == expect
        assert (rows["case_id"] == [f"{pid}_z{k:03d}" for k in expect]).all()
        k = rows.index[len(rows) // 2]
        np.testing.assert_array_equal(pool.labels[k], vol.label[rows.loc[k, "slice_index"]] >= 1)
        np.testing.assert_array_equal(pool.images[k], vol.image[rows.loc[k, "slice_index"]])
        np.testing.assert_allclose(pool.spacing[k], vol.spacing[1:])


def test_source_all_slices_three_classes_and_external_site():
    data = load_source("abdomen_phantom", 40, {"n_volumes": 2, "slices": "all", "target": "liver_tumour",
                                               "test_site": "btcv", "n_test_volumes": 1})
    pool, ext = data.pool, data.external_test
    assert pool.class_names == ("background", "liver", "tumour")
    assert len(pool) == sum(generate_abdomen_volume(i, size=40).meta["n_slices"] for i in range(2))
    assert set(np.unique(pool.labels)) <= {0, 1, 2}
    assert set(ext.meta["patient_id"]) == {"btcv-0000"} and (ext.meta["site"] == "btcv").all()
    same = load_source("abdomen_phantom", 40, {"n_volumes": 2, "test_site": "lits", "n_test_volumes": 1})
    assert set(same.external_test.meta["patient_id"]) == {"lits-0002"}   # drawn after the pool: no overlap


def test_lits_layout_round_trips_through_the_lits_reader(tmp_path: Path):
    from musclelab.data.readers import build_reader
    from musclelab.data.verify import verify_dataset

    out = write_abdomen_dataset(tmp_path / "lits_like", n=2, size=48, site="lits", seed=0)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["meta.csv", "phantom.json", "segmentation-0.nii.gz", "segmentation-1.nii.gz",
                     "volume-0.nii.gz", "volume-1.nii.gz"]
    meta = pd.read_csv(out / "meta.csv")
    assert meta["id"].tolist() == ["volume-0", "volume-1"] and meta["volume_id"].tolist() == ["lits-0000", "lits-0001"]
    reader = build_reader("lits", out, target="liver_tumour")
    assert verify_dataset(reader, decode=True).ok
    for ref in reader.scan():
        case = reader.load(ref)
        vol = generate_abdomen_volume(int(ref.case_id.split("-")[1]), site="lits", size=48)
        # LPS: z increases towards the head, so the reader's slice 0 is our most inferior slice
        np.testing.assert_array_equal(case.image, vol.image[::-1])
        np.testing.assert_array_equal(case.label, vol.label[::-1])
        np.testing.assert_allclose(case.spacing, vol.spacing, rtol=1e-5)
        assert np.count_nonzero(case.label) == np.count_nonzero(vol.label)
        peak = int(np.argmax((case.label >= 1).sum((1, 2))))
        assert np.nonzero(case.label[peak])[1].mean() < 24   # liver on the image left (subject's right)
    liver = build_reader("lits", out, target="liver").load(reader.scan()[0])
    assert set(np.unique(liver.label)) == {0, 1}


def test_writer_refuses_a_non_empty_directory(tmp_path: Path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match=str(out)):
        write_abdomen_dataset(out, n=1, size=40)
    assert (out / "mine.txt").read_text() == "user data" and len(list(out.iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data"]   # no temporary directory left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(list(write_abdomen_dataset(empty, n=1, size=40).glob("*.nii.gz"))) == 2


def test_cli_writes_the_abdomen_phantom(tmp_path: Path, capsys):
    from musclelab.cli import main

    out = tmp_path / "abd"
    main(["phantom", "--kind", "abdomen", "--out", str(out), "--n", "2", "--size", "64"])
    assert "wrote 2 abdomen phantom volumes" in capsys.readouterr().out
    assert len(list(out.glob("volume-*.nii.gz"))) == 2 and len(list(out.glob("segmentation-*.nii.gz"))) == 2
    assert (pd.read_csv(out / "meta.csv")["site"] == "lits").all()
    with pytest.raises(SystemExit, match="musclelab phantom: error: refusing"):
        main(["phantom", "--kind", "abdomen", "--out", str(out), "--n", "2", "--size", "64"])
    with pytest.raises(SystemExit, match="unknown site 'b' for --kind abdomen; known sites: lits, btcv, chaos"):
        main(["phantom", "--kind", "abdomen", "--site", "b", "--out", str(tmp_path / "x"), "--n", "1"])
    with pytest.raises(SystemExit, match="unknown site 'chaos' for --kind l3"):
        main(["phantom", "--site", "chaos", "--out", str(tmp_path / "y"), "--n", "1"])
    main(["phantom", "--kind", "abdomen", "--site", "chaos", "--out", str(tmp_path / "c"), "--n", "1", "--size", "40"])
    assert (pd.read_csv(tmp_path / "c" / "meta.csv")["site"] == "chaos").all()


def test_annotation_protocols_differ_in_intrahepatic_vessels():
    """btcv leaves intrahepatic vessels out of the liver label (lits and chaos keep them): the same structures,
    labelled differently — a label shift on top of the image shift."""
    assert not ap.LIVER_SITES["btcv"].vessels_in_liver and ap.LIVER_SITES["lits"].vessels_in_liver
    for site, inside in (("lits", True), ("chaos", True), ("btcv", False)):
        vol, st = ap._generate(2, site, 0, 64)
        vessels = st == ap._HVESSEL
        assert vessels.sum() > 20
        assert bool((vol.label[vessels] == 1).all()) is inside and bool((vol.label[vessels] == 0).all()) is not inside
        assert (vol.label[st == ap._LIVER] == 1).all()


def test_lesion_protocols_differ():
    """lits labels tumours (2) inside the liver, so the liver target (label >= 1) includes them; btcv's label set
    has no lesion class and its liver is traced around lesions (tumour voxels are background): the same kind of
    lesion is liver at one site and not at the other."""
    assert ap.LIVER_SITES["lits"].tumours_labelled and not ap.LIVER_SITES["btcv"].tumours_labelled
    for site, value in (("lits", 2), ("btcv", 0)):
        vol, st = ap._generate(1, site, 0, 64, tumours=True)
        tum = st == ap._TUMOUR
        assert tum.sum() > 10 and (vol.label[tum] == value).all()
        assert vol.meta["n_tumours"] >= 1


def test_fatty_liver_reverses_the_unenhanced_liver_spleen_order():
    """Steatosis (lits: fatty liver after chemotherapy) lowers the parenchyma's HU in every phase: unenhanced, a
    fatty liver is darker than the spleen while a normal one is brighter; btcv and chaos have none."""
    fat = {s: [ap._generate(i, s, 0, 40)[0].meta["liver_fat_hu"] for i in range(12)] for s in LIVER_SITES}
    assert not any(fat["chaos"]) and not any(fat["btcv"]) and any(fat["lits"])
    i = next(k for k, f in enumerate(fat["lits"]) if f >= 20)
    vol, st = ap._generate(i, "lits", 0, 96, contrast_phase="non_contrast")
    assert _mean_hu(vol, st, ap._LIVER) < _mean_hu(vol, st, ap._SPLEEN) - 5
    lo, hi = LIVER_SITES["lits"].steatosis_hu
    assert all(f == 0 or lo <= f <= hi for f in fat["lits"])
