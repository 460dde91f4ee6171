"""Slice extraction presets and the on-disk slice cache: reuse, invalidation, atomicity, concurrency, memmap.

A tiny fake reader (volumes as .npy files in tmp_path) stands in for the real readers; it appends a line to a
counter file on every ``load`` so tests can count decodes across processes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from musclelab.data.cache import SliceCache, load_cache_dir
from musclelab.data.case import Case
from musclelab.data.preprocess import SlicePreprocess, case_to_slices, resample_volume, target_slice_indices
from musclelab.errors import ConfigError

CLASSES = ("background", "muscle")


@dataclass(frozen=True)
class FakeRef:
    case_id: str
    patient_id: str
    files: tuple[Path, ...]


class FakeReader:
    """Cases ``<root>/<id>_img.npy`` (HU, int16) with ``<id>_seg.npy`` labels; 3D at (5, 0.7, 0.7) mm, 2D at
    (0.7, 0.7) mm. ``fail_on``: raise on the n-th load; ``crash_on``: kill the process on the n-th load."""

    class_names = CLASSES

    def __init__(self, root: Path, counter: Path, *, fail_on: int | None = None, crash_on: int | None = None,
                 delay: float = 0.0, flavour: str = "v1") -> None:
        self.root, self.counter, self.flavour = Path(root), Path(counter), flavour
        self.fail_on, self.crash_on, self.delay = fail_on, crash_on, delay
        self._loads = 0

    @property
    def params(self) -> dict:
        return {"flavour": self.flavour}

    def scan(self) -> list[FakeRef]:
        out = []
        for img in sorted(self.root.glob("*_img.npy")):
            cid = img.name[: -len("_img.npy")]
            out.append(FakeRef(cid, cid.split("-")[0], (img, img.with_name(f"{cid}_seg.npy"))))
        return out

    def load(self, ref: FakeRef) -> Case:
        self._loads += 1
        with open(self.counter, "a") as f:
            f.write(f"{os.getpid()} {ref.case_id}\n")
        if self.delay:
            import time
            time.sleep(self.delay)
        if self.crash_on == self._loads:
            os._exit(3)
        if self.fail_on == self._loads:
            raise RuntimeError("simulated crash mid-build")
        image = np.load(ref.files[0]).astype(np.float32)
        label = np.load(ref.files[1])
        spacing = (5.0, 0.7, 0.7) if image.ndim == 3 else (0.7, 0.7)
        return Case(ref.case_id, ref.patient_id, image, label, spacing, {"site": "x", "height_m": 1.7}, ref.files)


def write_case(root: Path, cid: str, shape=(6, 32, 32), fg=(2, 3), seed=0) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    lab = np.zeros(shape, np.uint8)
    if len(shape) == 3:
        for z in fg:
            lab[z, 8:20, 10:24] = 1
    else:
        lab[8:20, 10:24] = 1
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{cid}_img.npy", img)
    np.save(root / f"{cid}_seg.npy", lab)


def loads(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.stat()
        h.update(f"{p.relative_to(root)} {st.st_size} {st.st_mtime_ns}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path, Path]:
    root, cache, counter = tmp_path / "data", tmp_path / "cache", tmp_path / "loads.txt"
    for i, cid in enumerate(["p1-a", "p1-b", "p2-a"]):
        write_case(root, cid, seed=i)
    return root, cache, counter


def cache_dirs(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


# --- preprocessing ----------------------------------------------------------------------------------------------


def test_case_to_slices_volume_and_2d() -> None:
    vol = np.arange(4 * 8 * 6, dtype=np.float32).reshape(4, 8, 6)
    lab = (vol % 3).astype(np.uint8)
    out = case_to_slices(Case("v", "p", vol, lab, (5.0, 0.7, 0.8)), SlicePreprocess())
    assert [o[3] for o in out] == [0, 1, 2, 3]
    for z, (im, lb, sp, idx) in enumerate(out):
        assert im.shape == (8, 6) and im.dtype == np.float32 and sp == (0.7, 0.8)
        np.testing.assert_array_equal(im, vol[z])
        np.testing.assert_array_equal(lb, lab[z])
    (im, lb, sp, idx), = case_to_slices(Case("s", "p", vol[0], lab[0], (0.6, 0.9)), SlicePreprocess())
    assert idx == 0 and sp == (0.6, 0.9) and im.shape == (8, 6)
    np.testing.assert_array_equal(lb, lab[0])


def test_target_slices_with_margin() -> None:
    lab = np.zeros((10, 4, 4), np.uint8)
    lab[[3, 4], 1, 1] = 2
    assert target_slice_indices(lab).tolist() == [3, 4]
    assert target_slice_indices(lab, 2).tolist() == [1, 2, 3, 4, 5, 6]
    lab[:] = 0
    lab[0, 0, 0] = lab[9, 0, 0] = 1
    assert target_slice_indices(lab, 2).tolist() == [0, 1, 2, 7, 8, 9]  # clipped at both ends
    vol = Case("v", "p", np.zeros((10, 4, 4), np.float32), lab, (3.0, 1.0, 1.0))
    out = case_to_slices(vol, SlicePreprocess(slices="target", margin=1))
    assert [o[3] for o in out] == [0, 1, 8, 9]
    empty2d = Case("s", "p", np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), (1.0, 1.0))
    assert case_to_slices(empty2d, SlicePreprocess(slices="target")) == []
    with pytest.raises(ValueError, match="needs a label"):
        case_to_slices(Case("u", "p", np.zeros((2, 4, 4), np.float32), None, (1.0, 1.0, 1.0)),
                       SlicePreprocess(slices="target"))
    with pytest.raises(ValueError):
        SlicePreprocess(slices="middle")


def test_resize_keeps_physical_size_and_labels_nearest() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(40, 30, size=(3, 64, 48)).astype(np.float32)
    lab = np.zeros((3, 64, 48), np.uint8)
    lab[:, 16:48, 12:36] = 1
    lab[:, 24:40, 18:30] = 2
    case = Case("v", "p", img, lab, (5.0, 0.7, 0.8))
    out = case_to_slices(case, SlicePreprocess(img_size=16))
    im, lb, sp, _ = out[0]
    assert im.shape == lb.shape == (16, 16)
    assert sp == pytest.approx((0.7 * 64 / 16, 0.8 * 48 / 16))  # 64 px at 0.7 mm -> 16 px at 2.8 mm
    assert 16 * sp[0] == pytest.approx(64 * 0.7) and 16 * sp[1] == pytest.approx(48 * 0.8)  # same field of view
    assert lb.dtype == np.uint8 and set(np.unique(lb)) <= {0, 1, 2}
    # nearest-exact keeps the label's area in mm² (the boxes are a whole number of output pixels here)
    for v in (1, 2):
        assert (lb == v).sum() * sp[0] * sp[1] == pytest.approx((lab[0] == v).sum() * 0.7 * 0.8)
    # anti-aliased downsampling averages the noise: mean kept, spread shrinks
    assert abs(float(im.mean()) - float(img[0].mean())) < 3 and im.std() < img[0].std() / 2
    # upsampling works as well (bilinear, no anti-aliasing)
    (up, ulb, usp, _), = case_to_slices(Case("s", "p", img[0], lab[0], (0.7, 0.8)), SlicePreprocess(img_size=96))
    assert up.shape == (96, 96) and usp == pytest.approx((0.7 * 64 / 96, 0.8 * 48 / 96))
    assert set(np.unique(ulb)) == {0, 1, 2}


def test_resample_volume_to_target_spacing() -> None:
    img = np.random.default_rng(1).normal(0, 1, (10, 20, 30)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[2:8, 5:15, 5:25] = 3
    out = resample_volume(Case("v", "p", img, lab, (5.0, 0.7, 0.8)), (2.5, 1.4, 1.6))
    assert out.spacing == pytest.approx((2.5, 1.4, 1.6))
    assert out.image.dtype == np.float32 and out.label.dtype == np.uint8 and out.label.shape == out.image.shape
    assert set(np.unique(out.label)) == {0, 3}
    extent_in = np.array(img.shape) * (5.0, 0.7, 0.8)
    extent_out = np.array(out.image.shape) * np.array(out.spacing)
    assert np.all(np.abs(extent_out - extent_in) <= np.array(out.spacing) + 1e-6)  # within one output voxel
    # through the preset: volumes are resampled before slicing
    sl = case_to_slices(Case("v", "p", img, lab, (5.0, 0.7, 0.8)), SlicePreprocess(spacing_3d=(2.5, 1.4, 1.6)))
    assert len(sl) == out.image.shape[0] and sl[0][2] == pytest.approx((1.4, 1.6))
    assert SlicePreprocess(spacing_3d=[2.5, 1.4, 1.6]).to_dict()["spacing_3d"] == [2.5, 1.4, 1.6]


# --- cache ------------------------------------------------------------------------------------------------------


def test_build_reuse_and_memmap(data) -> None:
    root, cache, counter = data
    reader = FakeReader(root, counter)
    before = tree_hash(root)
    ss = SliceCache.build_or_load(reader, SlicePreprocess(), cache, "fake")
    assert loads(counter) == 3 and len(ss) == 18
    # memory-mapped, read-only, int16 HU for integral native-size slices
    assert isinstance(ss.images, np.memmap) and isinstance(ss.labels, np.memmap)
    assert not ss.images.flags.writeable and ss.images.dtype == np.int16 and ss.labels.dtype == np.uint8
    assert ss.class_names == CLASSES and ss.spacing.shape == (18, 2) and np.allclose(ss.spacing, 0.7)
    # contents equal the direct extraction, slice by slice
    for cid in ("p1-a", "p1-b", "p2-a"):
        case = reader.load(next(r for r in reader.scan() if r.case_id == cid))
        rows = np.flatnonzero(ss.meta["source_case_id"] == cid)
        for r, (im, lb, sp, z) in zip(rows, case_to_slices(case, SlicePreprocess())):
            np.testing.assert_array_equal(ss.images[r], im)
            np.testing.assert_array_equal(ss.labels[r], lb)
            assert ss.meta.at[r, "slice_index"] == z and ss.meta.at[r, "case_id"] == f"{cid}_z{z:03d}"
    assert set(ss.meta["patient_id"]) == {"p1", "p2"} and ss.meta["case_id"].is_unique
    assert {"site", "height_m", "has_label"} <= set(ss.meta.columns)
    d = Path(ss.meta.attrs["cache_dir"])
    assert d.parent == cache.resolve() and d.name.startswith("fake-") and len(d.name) == len("fake-") + 16
    m = json.loads((d / "manifest.json").read_text())
    assert m["images_dtype"] == "int16" and m["n_slices"] == 18 and m["class_names"] == list(CLASSES)
    assert {f["path"] for c in m["key_inputs"]["cases"] for f in c["files"]} >= {"p1-a_img.npy", "p1-a_seg.npy"}

    n = loads(counter)
    again = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake")
    assert loads(counter) == n  # reused: nothing decoded
    assert again.meta.attrs["cache_dir"] == str(d) and len(cache_dirs(cache)) == 1
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(ss.images))
    assert tree_hash(root) == before  # the data root is never written to
    assert list(SliceCache.info(cache)["n_slices"]) == [18]


def test_rebuild_on_changes(data) -> None:
    root, cache, counter = data
    pre = SlicePreprocess()

    def build(p: SlicePreprocess = pre, r: FakeReader | None = None):
        return SliceCache.build_or_load(r or FakeReader(root, counter), p, cache, "fake")
    d0 = build().meta.attrs["cache_dir"]
    n = loads(counter)

    # touching a file (same size, new mtime) rebuilds
    f = root / "p1-b_img.npy"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    d1 = build().meta.attrs["cache_dir"]
    assert d1 != d0 and loads(counter) == n + 3
    # rewriting a label with a different size rebuilds
    np.save(root / "p2-a_seg.npy", np.zeros((6, 32, 32), np.int32))
    d2 = build().meta.attrs["cache_dir"]
    assert d2 not in (d0, d1) and loads(counter) == n + 6
    # an added case rebuilds, with its slices
    write_case(root, "p3-a", seed=9)
    ss = build()
    assert ss.meta.attrs["cache_dir"] not in (d0, d1, d2) and len(ss) == 24 and loads(counter) == n + 10
    # a removed case rebuilds (from what is there now: p1-b, p2-a, p3-a)
    (root / "p1-a_img.npy").rename(root.parent / "p1-a_img.npy")
    assert len(build()) == 18 and loads(counter) == n + 13
    # ... and restoring the files exactly (same size and mtime) finds the earlier cache again
    (root.parent / "p1-a_img.npy").rename(root / "p1-a_img.npy")
    assert build().meta.attrs["cache_dir"] == ss.meta.attrs["cache_dir"] and loads(counter) == n + 13
    (root / "p3-a_img.npy").unlink()
    (root / "p3-a_seg.npy").unlink()
    # a different preset rebuilds; reader params too
    k = loads(counter)
    tgt = build(SlicePreprocess(slices="target", margin=1))
    assert len(tgt) == 2 * 4 + 0 and loads(counter) == k + 3  # p2-a's label was zeroed above
    assert tgt.meta["slice_index"].tolist()[:4] == [1, 2, 3, 4]
    build(r=FakeReader(root, counter, flavour="v2"))
    assert loads(counter) == k + 6
    # going back to a preset already built reuses its cache
    build(SlicePreprocess(slices="target", margin=1))
    assert loads(counter) == k + 6


def test_crash_mid_build_leaves_no_cache(data) -> None:
    root, cache, counter = data
    with pytest.raises(RuntimeError, match="simulated"):
        SliceCache.build_or_load(FakeReader(root, counter, fail_on=2), SlicePreprocess(), cache, "fake")
    assert cache_dirs(cache) == []  # neither a final dir nor a temp dir
    ss = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake")
    assert len(ss) == 18 and len(cache_dirs(cache)) == 1


def _build_in_child(root: str, cache: str, counter: str, crash_on: int | None, barrier, out: str) -> None:
    reader = FakeReader(Path(root), Path(counter), crash_on=crash_on, delay=0.15)
    if barrier is not None:
        barrier.wait(timeout=60)
    ss = SliceCache.build_or_load(reader, SlicePreprocess(), Path(cache), "fake")
    Path(out).write_text(json.dumps({"n": len(ss), "dir": ss.meta.attrs["cache_dir"],
                                     "sum": int(np.asarray(ss.images, np.int64).sum())}))


def test_hard_crash_then_clean_rebuild(data, tmp_path: Path) -> None:
    root, cache, counter = data
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_build_in_child, args=(str(root), str(cache), str(counter), 2, None, str(tmp_path / "o")))
    p.start()
    p.join(60)
    assert p.exitcode == 3  # killed mid-build (os._exit: no cleanup ran)
    left = cache_dirs(cache)
    assert len(left) == 1 and left[0].name.startswith(".fake-") and ".tmp-" in left[0].name
    assert not (left[0] / "manifest.json").exists()
    ss = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake")
    assert len(ss) == 18
    assert [d.name for d in cache_dirs(cache)] == [Path(ss.meta.attrs["cache_dir"]).name]  # stale temp removed


def test_two_processes_build_once(data, tmp_path: Path) -> None:
    root, cache, counter = data
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_build_in_child, args=(str(root), str(cache), str(counter), None, barrier, str(o)))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    lines = counter.read_text().splitlines()
    assert len(lines) == 3 and len({ln.split()[0] for ln in lines}) == 1  # one build, by one process
    res = [json.loads(o.read_text()) for o in outs]
    assert res[0] == res[1] and res[0]["n"] == 18
    assert len(cache_dirs(cache)) == 1


def test_2d_cases_and_guards(tmp_path: Path) -> None:
    root, cache, counter = tmp_path / "data", tmp_path / "cache", tmp_path / "n.txt"
    for i in range(3):
        write_case(root, f"p{i}-s", shape=(32, 32), seed=i)
    ss = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake2d")
    assert len(ss) == 3 and ss.meta["case_id"].tolist() == ["p0-s", "p1-s", "p2-s"]
    assert ss.meta["slice_index"].tolist() == [0, 0, 0] and ss.meta["patient_id"].tolist() == ["p0", "p1", "p2"]
    load_cache_dir(ss.meta.attrs["cache_dir"])
    with pytest.raises(ConfigError, match="inside the data directory"):
        SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), root / "cache", "fake2d")
    assert not (root / "cache").exists()
    write_case(root, "p9-s", shape=(16, 32), seed=5)
    with pytest.raises(ConfigError, match="img_size"):
        SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake2d")
    with pytest.raises(ConfigError, match="dataset name"):
        SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "../x")


def test_resized_cache_is_float32(data) -> None:
    root, cache, counter = data
    ss = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(img_size=16), cache, "fake")
    assert ss.images.dtype == np.float32 and ss.images.shape == (18, 16, 16)
    assert np.allclose(ss.spacing, 0.7 * 32 / 16)
    assert set(np.unique(np.asarray(ss.labels))) <= {0, 1}


def test_key_uses_relative_paths(data, tmp_path: Path) -> None:
    """A byte-identical copy of the data root (same names, sizes, mtimes: rsync -a / cp -p) maps to the same
    cache; the key is built from stat alone."""
    import shutil

    root, cache, counter = data
    a = SliceCache.resolve(FakeReader(root, counter), SlicePreprocess(), cache, "fake")
    ss = SliceCache.build_or_load(FakeReader(root, counter), SlicePreprocess(), cache, "fake")
    copy = tmp_path / "moved" / "data"
    shutil.copytree(root, copy, copy_function=shutil.copy2)
    b = SliceCache.resolve(FakeReader(copy, counter), SlicePreprocess(), cache, "fake")
    assert a.key == b.key and a.dir == Path(ss.meta.attrs["cache_dir"])
    n = loads(counter)
    SliceCache.build_or_load(FakeReader(copy, counter), SlicePreprocess(), cache, "fake")
    assert loads(counter) == n


# --- caches written by earlier code are still read ------------------------------------------------------------------

LEGACY = Path(__file__).parent / "data" / "legacy_cache"
LEGACY_MTIME_NS = 1_700_000_000_000_000_000  # the source files' mtime when the stored caches were built


def _legacy_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The stored MSD data set and the slice + volume caches the code of 2026-12-03 built from it (made by
    tests/data/legacy_cache/README.md's recipe), copied to ``tmp_path`` with the source files' recorded mtimes."""
    import shutil

    shutil.copytree(LEGACY, tmp_path / "legacy")
    src, caches = tmp_path / "legacy" / "msd", tmp_path / "legacy" / "caches"
    for p in src.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(LEGACY_MTIME_NS, LEGACY_MTIME_NS))
    return src, caches


def _no_decoding(reader):
    def load(ref):
        raise AssertionError(f"the stored cache was not reused: {ref.case_id} decoded again")

    reader.load = load
    return reader


def test_slice_cache_written_by_earlier_code_is_reused(tmp_path):
    from musclelab.data.readers import build_reader

    src, caches = _legacy_copy(tmp_path)
    stored = sorted(p for p in caches.glob("msd-*") if p.is_dir())
    ss = SliceCache.build_or_load(_no_decoding(build_reader("msd", src)), SlicePreprocess(img_size=8, slices="all"),
                                  caches, "msd")
    assert [Path(ss.meta.attrs["cache_dir"])] == stored
    assert ss.images.shape == (8, 8, 8) and ss.meta["source_case_id"].tolist() == ["case0"] * 4 + ["case1"] * 4
    assert np.asarray(ss.labels).sum() > 0


def test_volume_cache_written_by_earlier_code_is_reused(tmp_path):
    from musclelab.data.readers import build_reader
    from musclelab.data.volume_cache import ReaderVolumes, build_or_load
    from musclelab.data.volumes import VolumePreprocess

    src, caches = _legacy_copy(tmp_path)
    stored = sorted(p for p in (caches / "volumes").glob("msd-*") if p.is_dir())
    vs = build_or_load(ReaderVolumes(_no_decoding(build_reader("msd", src)), "msd", caches),
                       VolumePreprocess(None, True), caches)
    assert [Path(vs.meta.attrs["cache_dir"])] == stored
    assert vs.meta["case_id"].tolist() == ["case0", "case1"] and vs.image(0).dtype == np.int16


# --- one build protocol under both stores ---------------------------------------------------------------------------


def _tiny_volumes(fail_on: int | None = None):
    from musclelab.data.volume_cache import GeneratedVolumes

    def make(i):
        if i == fail_on:
            raise RuntimeError("simulated crash mid-build")
        img = np.full((4, 8, 8), -1000.0, np.float32)
        img[1:3, 2:6, 2:6] = 40.0
        lab = (img > 0).astype(np.uint8)
        return Case(f"v{i}", f"p{i}", img, lab, (2.0, 1.0, 1.0)), {}

    return GeneratedVolumes("tiny", CLASSES, 2, {"fail_on": fail_on}, make)


@pytest.mark.parametrize("store", ["slices", "volumes"])
def test_both_stores_build_through_the_core_fsyncing_folders(store, data, monkeypatch) -> None:
    """Both stores fsync the finished folder (and its sub-folders) and the parent after the rename; a build
    that fails midway leaves neither a final directory nor a temp dir."""
    from musclelab.data import cache_core
    from musclelab.data.volume_cache import build_or_load
    from musclelab.data.volumes import VolumePreprocess

    root, cache, counter = data
    synced: list[Path] = []
    real = cache_core.fsync_dir
    monkeypatch.setattr(cache_core, "fsync_dir", lambda p: (synced.append(Path(p)), real(p)))

    def build(fail_on=None):
        if store == "slices":
            return SliceCache.build_or_load(FakeReader(root, counter, fail_on=fail_on), SlicePreprocess(), cache, "f")
        return build_or_load(_tiny_volumes(fail_on=None if fail_on is None else fail_on - 1), VolumePreprocess(),
                             cache)

    with pytest.raises(RuntimeError, match="simulated crash"):
        build(fail_on=2)
    parent = cache if store == "slices" else cache / "volumes"
    assert [p.name for p in parent.iterdir() if p.is_dir()] == []   # no final dir, no temp dir left
    done = Path(build().meta.attrs["cache_dir"])
    assert done.parent in synced, "the parent directory was not fsynced after the rename"
    assert any(p.name.startswith(f".{done.name}.tmp-") for p in synced)
    if store == "volumes":
        assert {p.name for p in synced} >= {"images", "labels", "indices"}
