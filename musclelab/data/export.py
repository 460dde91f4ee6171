"""Write HU images in the formats scanners and tools exchange: DICOM (single slices and series) and NRRD.

Used to put the built-in phantom on disk in every format ``musclelab predict`` reads (``musclelab phantom
--format nifti,dicom,nrrd``), so predict is tested end to end on real files. Arrays follow the project
convention (:mod:`musclelab.data.case`): ``(row, col)`` or ``(z, row, col)`` in LPS (rows towards posterior,
columns towards the patient's left, z towards the head), spacing in mm per array axis.

DICOM is written with pydicom (CT Image Storage, little-endian explicit VR, signed 16-bit stored values with
``RescaleSlope``/``RescaleIntercept`` so the stored values decode to the given HU); NRRD with SimpleITK.
Why our own DICOM writer: SimpleITK writes DICOM but not the CT module's patient tags (``PatientSize``) a
clinic's export carries and predict reads; pydicom does, in a few lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
FORMATS = ("nifti", "dicom", "nrrd")


def _uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def write_dicom_slice(path: str | Path, hu: np.ndarray, spacing: Sequence[float], *, patient_id: str,
                      series_uid: str | None = None, study_uid: str | None = None, z_mm: float = 0.0,
                      instance: int = 1, thickness_mm: float = 3.0, height_m: float | None = None,
                      modality: str = "CT", slope: float = 1.0, intercept: float = -1024.0,
                      rescale: bool = True) -> Path:
    """One axial CT slice ``(row, col)`` in HU as a DICOM file (rows posterior, columns to the patient's left,
    at ``z_mm`` superior). ``rescale=False`` leaves out RescaleSlope/Intercept (a broken export, for tests)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"write_dicom_slice needs a 2D slice, got shape {hu.shape}")
    stored = np.rint((hu - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError(f"{path}: HU range {hu.min()}..{hu.max()} does not fit int16 with slope {slope} and "
                         f"intercept {intercept}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = ds.PatientName = str(patient_id)
    if height_m is not None and np.isfinite(height_m):
        ds.PatientSize = f"{float(height_m):.3f}"
    ds.StudyInstanceUID = study_uid or _uid()
    ds.SeriesInstanceUID = series_uid or _uid()
    ds.FrameOfReferenceUID = ds.StudyInstanceUID
    ds.InstanceNumber = int(instance)
    ds.ImagePositionPatient = [0.0, 0.0, float(z_mm)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = float(thickness_mm)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = float(slope), float(intercept), "HU"
    ds.PixelData = np.ascontiguousarray(stored.astype("<i2")).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return Path(path)


def write_dicom_series(folder: str | Path, hu: np.ndarray, spacing: Sequence[float], *, patient_id: str,
                       height_m: float | None = None, z_positions_mm: Sequence[float] | None = None) -> Path:
    """A ``(z, row, col)`` HU volume as a DICOM series, one file per slice (``IM0001.dcm`` ...) in ``folder``.
    ``z_positions_mm`` overrides the regular positions ``z * spacing[0]`` (irregular series, for tests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series, study = _uid(), _uid()
    zs = [k * float(spacing[0]) for k in range(len(hu))] if z_positions_mm is None else list(z_positions_mm)
    for k in range(len(hu)):
        write_dicom_slice(folder / f"IM{k + 1:04d}.dcm", hu[k], spacing[1:], patient_id=patient_id,
                          series_uid=series, study_uid=study, z_mm=zs[k], instance=k + 1,
                          thickness_mm=float(spacing[0]), height_m=height_m)
    return folder


def write_nrrd(path: str | Path, hu: np.ndarray, spacing: Sequence[float]) -> Path:
    """An HU slice ``(row, col)`` or volume ``(z, row, col)`` as NRRD (int16, LPS, identity direction)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.rint(np.asarray(hu)).astype(np.int16))
    img.SetSpacing([float(s) for s in reversed(tuple(spacing))])
    sitk.WriteImage(img, str(path), useCompression=True)
    return Path(path)


def check_formats(spec: str | Sequence[str]) -> list[str]:
    """The formats of a ``--format`` value (``"nifti,dicom"`` or a list); ValueError naming the known ones."""
    formats = [f.strip().lower() for f in (spec.split(",") if isinstance(spec, str) else spec) if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"unknown format '{unknown[0] if unknown else spec}'; known formats: {', '.join(FORMATS)}")
    return formats


def export_phantom_formats(root: str | Path, formats: Sequence[str]) -> list[Path]:
    """Add ``dicom/<case_id>.dcm`` and/or ``nrrd/<case_id>.nrrd`` copies of the images of a phantom data set
    written by :func:`musclelab.phantoms.l3.write_phantom_dataset` (``images/*.nii.gz`` + ``meta.csv``); DICOM
    files carry the subject's height as ``PatientSize``. Returns the folders written."""
    import pandas as pd

    from musclelab.phantoms.l3 import load_nifti_slice

    formats = check_formats(formats)
    root = Path(root)
    meta = pd.read_csv(root / "meta.csv")
    out = []
    for fmt in formats:
        if fmt == "nifti":
            continue
        folder = root / fmt
        folder.mkdir(exist_ok=True)
        for _, row in meta.iterrows():
            hu, spacing = load_nifti_slice(root / "images" / f"{row['case_id']}.nii.gz")
            if fmt == "dicom":
                write_dicom_slice(folder / f"{row['case_id']}.dcm", hu, spacing, patient_id=str(row["patient_id"]),
                                  height_m=float(row["height_m"]))
            else:
                write_nrrd(folder / f"{row['case_id']}.nrrd", hu, spacing)
        out.append(folder)
    return out
