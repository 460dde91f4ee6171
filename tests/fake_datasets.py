"""Tiny fake copies of the public CT data sets' layouts, for reader and verify tests (a helper module, not a
test file).

Every generator writes real files (NIfTI via nibabel, DICOM via pydicom, NRRD via SimpleITK, PNG via pillow)
from *expected* arrays given in the project convention (LPS: ``(z, row, col)`` = superior, posterior,
patient's left) and returns them in a :class:`FakeData`, so tests compare what a reader returns with what
was meant, whatever orientation the file was stored in. The images carry a known asymmetric structure: a
bright block (:data:`HU_BLOCK`) in the patient's anterior-left (rows near 0, high column indices) and a
per-slice marker in the posterior-right corner (value encodes slice index and case), so flips, transposes and
slice-order errors all show.
"""
from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import nibabel as nib
import numpy as np
import SimpleITK as sitk

SPACING_3D = (2.5, 0.8, 0.7)      # mm (z, row, col)
SHAPE_3D = (6, 32, 32)
SPACING_2D = (0.8, 0.7)           # mm (row, col)
SHAPE_2D = (32, 32)
HU_BODY, HU_BLOCK, HU_AIR = 40.0, 700.0, -1000.0
BLOCK = (slice(2, 10), slice(22, 30))          # anterior-left
MARKER = (slice(28, 32), slice(0, 4))          # posterior-right


@dataclass
class FakeData:
    """What a generator wrote. images / labels: expected LPS arrays per case id (labels in the source's raw
    values); spacing: mm per array axis; image_files / label_files: paths per case id; extra: generator-
    specific (observers, dataset.json labels, ...)."""

    root: Path
    ids: list[str]
    patient_ids: dict[str, str]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    spacing: tuple[float, ...]
    image_files: dict[str, Path] = field(default_factory=dict)
    label_files: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# Expected content
# ----------------------------------------------------------------------------------------------------------


def expected_volume(case: int, shape: Sequence[int] = SHAPE_3D) -> np.ndarray:
    """HU volume (z, row, col): body 40 HU, block 700 HU anterior-left, marker -500 + 100 z + 10 case HU."""
    v = np.full(tuple(shape), HU_BODY, np.float32)
    v[:, BLOCK[0], BLOCK[1]] = HU_BLOCK
    v[:, 0, :] = HU_AIR                                   # a row of air at the anterior edge
    for z in range(shape[0]):
        v[z, MARKER[0], MARKER[1]] = -500.0 + 100.0 * z + 10.0 * case
    return v


def expected_slice(case: int) -> np.ndarray:
    """HU slice (row, col) with the same structure as :func:`expected_volume` (one slice)."""
    return expected_volume(case, (1, *SHAPE_2D))[0]


def liver_labels(case: int, shape: Sequence[int] = SHAPE_3D, tumour: bool = True) -> np.ndarray:
    """LiTS-style raw labels: 1 liver (anterior-right block growing with z), 2 tumour inside it."""
    lab = np.zeros(tuple(shape), np.uint8)
    for z in range(1, shape[0]):
        lab[z, 12:14 + 2 * z, 4:14] = 1
    if tumour:
        lab[2:4, 15:18, 7:10] = 2
    return lab


# ----------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------


def write_nifti(path: Path, arr: np.ndarray, spacing: Sequence[float], orientation: str = "LPS",
                dtype: Any = None, slope: float | None = None, inter: float | None = None,
                thickness: float = 3.0) -> Path:
    """Write an LPS array ``(z,row,col)`` or ``(row,col)`` as NIfTI stored in ``orientation``: ``LPS``
    (voxel axes towards left, posterior, superior; like the phantom export) or ``RAS`` (towards right,
    anterior, superior). With ``slope``/``inter`` the stored integers are (value - inter) / slope."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr)
    sp = tuple(float(s) for s in spacing)
    if a.ndim == 2:
        a, sp = a[None], (thickness, *sp)
    sz, sr, sc = sp
    d = a.transpose(2, 1, 0)                 # (col, row, z): i -> left, j -> posterior, k -> superior
    if orientation == "LPS":
        affine = np.diag([-sc, -sr, sz, 1.0])
    elif orientation == "RAS":
        d = d[::-1, ::-1, :]
        affine = np.diag([sc, sr, sz, 1.0])
        affine[0, 3] = -sc * (a.shape[2] - 1)
        affine[1, 3] = -sr * (a.shape[1] - 1)
    else:
        raise ValueError(orientation)
    if slope is not None:
        d = np.round((d - (inter or 0.0)) / slope)
    d = np.ascontiguousarray(d).astype(dtype or a.dtype)
    img = nib.Nifti1Image(d, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter or 0.0)
    nib.save(img, str(path))
    return path


def write_nrrd(path: Path, arr: np.ndarray, spacing: Sequence[float], flip_rows_cols: bool = True,
               compress: bool = True) -> Path:
    """Write an LPS 2D/3D array as NRRD; ``flip_rows_cols`` stores it with rows and columns reversed
    (direction cosines -1) so the reader has to flip it back."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a, sp = a[None], (3.0, *spacing)
    else:
        sp = tuple(spacing)
    direction = np.eye(3)
    if flip_rows_cols:
        a = a[:, ::-1, ::-1]
        direction = np.diag([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(np.ascontiguousarray(a))
    img.SetSpacing((float(sp[2]), float(sp[1]), float(sp[0])))
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin((10.0, 20.0, 30.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=compress)
    return path


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write a 2D integer array as grey PNG (8-bit, or 16-bit beyond 255)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(arr)
    Image.fromarray(a.astype(np.uint8) if a.max(initial=0) <= 255 else a.astype(np.uint16)).save(path)
    return path


def write_dicom_slice(path: Path, stored_hu: np.ndarray, *, ipp: Sequence[float], iop: Sequence[float],
                      pixel_spacing: Sequence[float], thickness: float, instance: int, slope: float = 1.0,
                      intercept: float = -1024.0, series_uid: str = "1.2.826.0.1.3680043.8.498.1",
                      study_uid: str = "1.2.826.0.1.3680043.8.498.2", patient_id: str = "anon") -> Path:
    """Write one CT slice (``stored_hu`` in the DICOM pixel layout: rows, columns) with unsigned 16-bit
    stored values = (HU - intercept) / slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    stored = np.round((np.asarray(stored_hu, np.float64) - intercept) / slope)
    assert stored.min() >= 0 and stored.max() < 65536
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study_uid + ".1"
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = float(thickness)
    ds.InstanceNumber = int(instance)
    ds.Rows, ds.Columns = (int(s) for s in stored.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
    ds.PixelData = stored.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------------------------
# Data sets
# ----------------------------------------------------------------------------------------------------------


def make_fake_lits(root: Path, n: int = 3, orientations: Sequence[str] = ("LPS", "RAS"),
                   gz: Sequence[bool] = (False, True), slope_inter_case: int | None = 1) -> FakeData:
    """LiTS layout: ``Training Batch 1/volume-<i>.nii[.gz]`` + ``segmentation-<i>...`` (the last case in
    ``Training Batch 2``). Case i is stored in ``orientations[i % len]``, compressed per ``gz[i % len]``;
    case ``slope_inter_case`` stores HU as int16 with scl_slope 2, scl_inter -1024. Case 0 has no tumour."""
    root = Path(root)
    fd = FakeData(root, [], {}, {}, {}, SPACING_3D)
    for i in range(n):
        batch = root / ("Training Batch 2" if i == n - 1 and n > 1 else "Training Batch 1")
        ext = ".nii.gz" if gz[i % len(gz)] else ".nii"
        orient = orientations[i % len(orientations)]
        img, lab = expected_volume(i), liver_labels(i, tumour=i != 0)
        cid = f"volume-{i}"
        si = dict(slope=2.0, inter=-1024.0) if i == slope_inter_case else {}
        fd.image_files[cid] = write_nifti(batch / f"volume-{i}{ext}", img, SPACING_3D, orient, np.int16, **si)
        fd.label_files[cid] = write_nifti(batch / f"segmentation-{i}{ext}", lab, SPACING_3D, orient, np.uint8)
        fd.ids.append(cid)
        fd.patient_ids[cid] = f"lits-{i}"
        fd.images[cid], fd.labels[cid] = img, lab
    return fd


def btcv_labels(case: int, shape: Sequence[int] = SHAPE_3D) -> np.ndarray:
    """BTCV raw labels: 6 liver (anterior-right), 1 spleen (posterior-left), 8 aorta, 11 pancreas (case>0)."""
    lab = np.zeros(tuple(shape), np.uint8)
    lab[:, 12:22, 3:13] = 6
    lab[:, 18:26, 22:30] = 1
    lab[:, 20:23, 15:18] = 8
    if case > 0:
        lab[1:3, 12:15, 16:21] = 11
    return lab


def make_fake_btcv(root: Path, n: int = 3, orientations: Sequence[str] = ("LPS", "RAS")) -> FakeData:
    """BTCV layout: ``RawData/Training/img/img000<i+1>.nii.gz`` + ``label/label000<i+1>.nii.gz``."""
    root = Path(root)
    base = root / "RawData" / "Training"
    fd = FakeData(root, [], {}, {}, {}, SPACING_3D)
    for i in range(n):
        k = f"{i + 1:04d}"
        cid = f"img{k}"
        img, lab = expected_volume(i), btcv_labels(i)
        orient = orientations[i % len(orientations)]
        fd.image_files[cid] = write_nifti(base / "img" / f"img{k}.nii.gz", img, SPACING_3D, orient, np.int16)
        fd.label_files[cid] = write_nifti(base / "label" / f"label{k}.nii.gz", lab, SPACING_3D, orient, np.uint8)
        fd.ids.append(cid)
        fd.patient_ids[cid] = f"btcv-{k}"
        fd.images[cid], fd.labels[cid] = img, lab
    return fd


THIGH_LABELS = {"background": 0, **{f"muscle_{j:02d}": j for j in range(1, 30)}}   # 30 classes


def thigh_labels(case: int, shape: Sequence[int] = SHAPE_3D) -> np.ndarray:
    """30-class raw labels: a grid of small blocks with values 1..29."""
    lab = np.zeros(tuple(shape), np.uint8)
    j = 1
    for r in range(6):
        for c in range(5):
            if j < 30:
                lab[:, 2 + 5 * r:5 + 5 * r, 2 + 6 * c:6 + 6 * c] = j
                j += 1
    return lab


def make_fake_msd(root: Path, n: int = 3, style: str = "msd", labels: dict[str, int] | None = None,
                  task: str = "thigh") -> FakeData:
    """MSD (``imagesTr/<case>.nii.gz``, dataset.json ``{"0": "background"}``) or nnU-Net v2
    (``imagesTr/<case>_0000.nii.gz``, dataset.json ``{"background": 0}`` + ``file_ending``) layout, with
    :data:`THIGH_LABELS` (30 classes) by default. MSD style also gets a macOS ``._`` junk file."""
    root = Path(root)
    labels = dict(THIGH_LABELS if labels is None else labels)
    fd = FakeData(root, [], {}, {}, {}, SPACING_3D, extra={"labels": labels})
    for i in range(n):
        cid = f"{task}_{i:03d}"
        img = expected_volume(i)
        lab = thigh_labels(i) if labels is THIGH_LABELS or len(labels) == 30 else liver_labels(i)
        stem = f"{cid}_0000" if style == "nnunet" else cid
        fd.image_files[cid] = write_nifti(root / "imagesTr" / f"{stem}.nii.gz", img, SPACING_3D,
                                          "RAS" if i % 2 else "LPS", np.int16)
        fd.label_files[cid] = write_nifti(root / "labelsTr" / f"{cid}.nii.gz", lab, SPACING_3D,
                                          "RAS" if i % 2 else "LPS", np.uint8)
        fd.ids.append(cid)
        fd.patient_ids[cid] = cid
        fd.images[cid], fd.labels[cid] = img, lab
    if style == "nnunet":
        js = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz"}
    elif style == "msd":
        js = {"name": task, "modality": {"0": "CT"}, "labels": {str(v): k for k, v in labels.items()},
              "numTraining": n, "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                                             for c in fd.ids]}
        (root / "imagesTr" / f"._{fd.ids[0]}.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    else:
        raise ValueError(style)
    (root / "dataset.json").write_text(json.dumps(js, indent=2))
    return fd


def chaos_mask(z: int, shape: Sequence[int] = SHAPE_2D) -> np.ndarray:
    """Liver mask (0/1) of LPS slice ``z``: anterior-right block whose height grows with z (0 on z=0)."""
    m = np.zeros(tuple(shape), np.uint8)
    if z > 0:
        m[12:13 + 2 * z, 4:14] = 1
    return m


def make_fake_chaos(root: Path, n_patients: int = 2, n_slices: int = 6, seed: int = 0,
                    iop: Sequence[float] = (-1, 0, 0, 0, 1, 0)) -> FakeData:
    """CHAOS CT layout: ``Train_Sets/CT/<p>/DICOM_anon/i<kkkk>,0000b.dcm`` + ``Ground/liver_GT_<kkk>.png``.

    The file number k is *shuffled* against the slice position (ordering by name would be wrong); the PNG
    ``liver_GT_<k>`` annotates DICOM file k (CHAOS's pairing) and InstanceNumber = k + 1. The default
    orientation stores columns towards the patient's right (row cosine -x), so the reader has to flip
    columns of image and masks. HU stored as uint16 with RescaleIntercept -1024 (patient 2: slope 2).
    ``extra["file_z"][pid]``: LPS slice index of each DICOM file."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    fd = FakeData(root, [], {}, {}, {}, (2.5, 0.8, 0.7), extra={"file_z": {}})
    sz, sr, sc = fd.spacing
    iop = np.asarray(iop, float)
    row_dir, col_dir = iop[:3], iop[3:]
    assert abs(row_dir[0]) == 1 and abs(col_dir[1]) == 1, "fake CHAOS supports axial (+-x, +-y) cosines only"
    h, w = SHAPE_2D
    # LPS voxel (z, r, c) sits at corner + (c*sc, r*sr, z*sz). Stored pixel (i, j) (row i, column j) sits at
    # ipp + j*sc*row_dir + i*sr*col_dir, so it shows LPS column c0 + j*sign(row_dir.x), row r0 + i*sign(col_dir.y)
    c0 = 0 if row_dir[0] > 0 else w - 1
    r0 = 0 if col_dir[1] > 0 else h - 1
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rr, cc = r0 + ii * int(col_dir[1]), c0 + jj * int(row_dir[0])
    corner = np.array([5.0, -7.0, 100.0])
    for p in range(1, n_patients + 1):
        pdir = root / "Train_Sets" / "CT" / str(p)
        cid = f"chaos-ct-{p}"
        vol = expected_volume(p, (n_slices, h, w))
        lab = np.stack([chaos_mask(z) for z in range(n_slices)])
        perm = rng.permutation(n_slices)
        while n_slices > 2 and (np.all(perm == np.arange(n_slices)) or np.all(perm == np.arange(n_slices)[::-1])):
            perm = rng.permutation(n_slices)
        slope = 2.0 if p == 2 else 1.0
        for k in range(n_slices):
            z = int(perm[k])                          # DICOM file k holds LPS slice z
            ipp = corner + np.array([c0 * sc, r0 * sr, z * sz])
            write_dicom_slice(pdir / "DICOM_anon" / f"i{k:04d},0000b.dcm", vol[z][rr, cc], ipp=ipp, iop=iop,
                              pixel_spacing=(sr, sc), thickness=sz, instance=k + 1, slope=slope,
                              series_uid=f"1.2.826.0.1.3680043.8.498.{p}", patient_id=str(p))
            write_png(pdir / "Ground" / f"liver_GT_{k:03d}.png", lab[z][rr, cc] * 255)
        fd.ids.append(cid)
        fd.patient_ids[cid] = f"chaos-{p}"
        fd.images[cid], fd.labels[cid] = vol, lab
        fd.image_files[cid] = pdir / "DICOM_anon"
        fd.label_files[cid] = pdir / "Ground"
        fd.extra["file_z"][cid] = perm
    return fd


def l3_mask(case: int, multiclass: bool = False) -> np.ndarray:
    """L3 muscle mask (row, col): posterior band; multi-class: left half 1 (erector_spinae), right 2 (psoas)."""
    m = np.zeros(SHAPE_2D, np.uint8)
    m[16:26, 6:27] = 1
    m[16 + case % 3, 6] = 0
    if multiclass:
        m[16:26, 6:16] = np.where(m[16:26, 6:16] > 0, 2, 0)
    return m


L3_LABELS = {"background": 0, "erector_spinae": 1, "psoas": 2}


def make_fake_l3_folder(root: Path, labels_yaml: bool = False, observers: int = 2) -> FakeData:
    """Clinical single-slice layout with mixed formats (case ids ``007``, ``c1``, ``c2``, ``c3``):

    * ``007``: image DICOM stored with rows reversed (column cosine -y; slope 1, intercept -1024), PNG mask in
      the DICOM pixel layout (0/255 when binary);
    * ``c1``: image NIfTI (W,H,1) in LPS like the phantom, PNG mask;
    * ``c2``: image and mask NRRD stored with rows and columns reversed;
    * ``c3``: image NIfTI stored RAS, mask NIfTI stored LPS (same physical grid).

    ``observers/obs<j>/`` get masks (PNG for 007, NIfTI otherwise) shifted by j columns; ``meta.csv`` has
    id, patient_id (007 and c1 share patient ``p01``), site, height_m, sex. ``labels_yaml`` writes
    ``labels.yaml`` with :data:`L3_LABELS` and 3-class masks (raw values 0/1/2 everywhere)."""
    root = Path(root)
    fd = FakeData(root, ["007", "c1", "c2", "c3"], {}, {}, {}, SPACING_2D, extra={"observers": {}})
    sr, sc = SPACING_2D
    binary = not labels_yaml
    pids = {"007": "p01", "c1": "p01", "c2": "p02", "c3": "p03"}
    for i, cid in enumerate(fd.ids):
        img, lab = expected_slice(i), l3_mask(i, multiclass=labels_yaml)
        fd.images[cid], fd.labels[cid], fd.patient_ids[cid] = img, lab, pids[cid]
        png_val = 255 if binary else 1
        obs = {f"obs{j}": np.roll(lab, j, axis=1) for j in range(1, observers + 1)}
        fd.extra["observers"][cid] = obs
        if cid == "007":
            stored = img[::-1, :]
            fd.image_files[cid] = write_dicom_slice(
                root / "images" / "007.dcm", stored, ipp=(-50.0, 60.0 + (SHAPE_2D[0] - 1) * sr, -120.0),
                iop=(1, 0, 0, 0, -1, 0), pixel_spacing=(sr, sc), thickness=3.0, instance=1, patient_id="p01")
            fd.label_files[cid] = write_png(root / "masks" / "007.png", lab[::-1, :] * png_val)
            for name, m in obs.items():
                write_png(root / "observers" / name / "007.png", m[::-1, :] * png_val)
        elif cid == "c1":
            fd.image_files[cid] = write_nifti(root / "images" / "c1.nii.gz", img, SPACING_2D, "LPS", np.int16)
            fd.label_files[cid] = write_png(root / "masks" / "c1.png", lab * png_val)
            for name, m in obs.items():
                write_nifti(root / "observers" / name / "c1.nii.gz", m, SPACING_2D, "RAS", np.uint8)
        elif cid == "c2":
            fd.image_files[cid] = write_nrrd(root / "images" / "c2.nrrd", img.astype(np.int16), SPACING_2D)
            fd.label_files[cid] = write_nrrd(root / "masks" / "c2.nrrd", lab, SPACING_2D)
            for name, m in obs.items():
                write_nrrd(root / "observers" / name / "c2.nrrd", m, SPACING_2D)
        else:
            fd.image_files[cid] = write_nifti(root / "images" / "c3.nii.gz", img, SPACING_2D, "RAS", np.int16)
            fd.label_files[cid] = write_nifti(root / "masks" / "c3.nii.gz", lab, SPACING_2D, "LPS", np.uint8)
            for name, m in obs.items():
                write_nifti(root / "observers" / name / "c3.nii.gz", m, SPACING_2D, "LPS", np.uint8)
    import pandas as pd

    pd.DataFrame({"id": fd.ids, "patient_id": [pids[c] for c in fd.ids], "site": ["a", "a", "b", "b"],
                  "height_m": [1.70, 1.70, 1.82, 1.65], "sex": ["F", "F", "M", "F"]}).to_csv(root / "meta.csv",
                                                                                          index=False)
    if labels_yaml:
        (root / "labels.yaml").write_text("labels:\n" + "".join(f"  {k}: {v}\n" for k, v in L3_LABELS.items()))
    return fd


# ----------------------------------------------------------------------------------------------------------
# Corruptions
# ----------------------------------------------------------------------------------------------------------


def truncate_file(path: Path, keep: float = 0.6) -> Path:
    """Cut a file to ``keep`` of its bytes (an interrupted download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def _rewrite_nifti(path: Path, fn) -> Path:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    affine = img.affine.copy()
    data, affine = fn(np.array(data), affine)
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, str(path))
    return Path(path)


def make_nan_image(path: Path, n: int = 5) -> Path:
    """Rewrite a NIfTI image as float32 with ``n`` NaN voxels."""
    def fn(d, a):
        d = d.astype(np.float32)
        d.flat[:n] = np.nan
        return d, a
    return _rewrite_nifti(path, fn)


def set_label_value(path: Path, value: int, n: int = 3) -> Path:
    """Put an undeclared raw ``value`` into ``n`` voxels of a label file (NIfTI or PNG)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        from PIL import Image

        a = np.array(Image.open(path))
        a.flat[:n] = value
        return write_png(path, a)

    def fn(d, a):
        d = d.astype(np.int16 if value > 255 or value < 0 else d.dtype)
        d.flat[:n] = value
        return d, a
    return _rewrite_nifti(path, fn)


def remove_file(path: Path) -> Path:
    """Delete a file (a missing mask)."""
    Path(path).unlink()
    return Path(path)


def make_shape_mismatch(path: Path) -> Path:
    """Rewrite a NIfTI label one voxel shorter along its second axis (a cropped mask)."""
    return _rewrite_nifti(path, lambda d, a: (np.ascontiguousarray(d[:, :-1]), a))


def make_spacing_mismatch(path: Path, factor: float = 1.01) -> Path:
    """Rewrite a NIfTI label with its in-plane voxel size scaled by ``factor`` (a mask from a resampled
    image)."""
    def fn(d, a):
        a = a.copy()
        a[:3, :2] *= factor
        return d, a
    return _rewrite_nifti(path, fn)


def make_duplicate_id(path: Path) -> Path:
    """Put an uncompressed ``.nii`` copy next to a ``.nii.gz`` (same stem -> same case id twice)."""
    path = Path(path)
    assert path.name.endswith(".nii.gz")
    out = path.with_name(path.name[:-3])
    with gzip.open(path, "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root`` (to show readers write nothing)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file()}
