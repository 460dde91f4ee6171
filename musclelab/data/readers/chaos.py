"""CHAOS (Combined Healthy Abdominal Organ Segmentation, Kavur et al. 2021), CT part: liver masks.

Layout: ``Train_Sets/CT/<patient>/DICOM_anon/*.dcm`` (one file per slice, e.g. ``i0000,0000b.dcm``) and
``Train_Sets/CT/<patient>/Ground/*.png`` (one liver mask per slice, ``liver_GT_000.png``, values 0/255; any
value > 0 is liver). ``root`` may also be ``Train_Sets``, ``Train_Sets/CT`` or a folder of patient folders.

Mask matching rule (why): CHAOS pairs masks with slices by *file name order*, not by DICOM position. The
organisers' evaluation code (CHAOS-evaluation, ``CHAOSmetrics.py``) reads the Ground PNGs sorted by name as
the reference volume and maps voxel index k to the k-th DICOM file sorted by name, stating that "the
orientation of the slices is determined by order of image names NOT by position tags in DICOM files". The
numbering matches the DICOM file names (``liver_GT_<k>.png`` annotates ``i<k>,0000b.dcm``). So: the k-th PNG
(natural sort by name) belongs to the k-th DICOM file (natural sort by name); the counts must agree. Each
(slice, mask) pair is then placed by its ImagePositionPatient projected on the slice normal
(row x column direction cosines), so the volume is ordered in space whatever the file names say.

PNG rows/columns are the DICOM pixel rows/columns, so the mask stack gets the series' geometry and the same
reorientation to LPS as the image (a series stored with flipped rows or columns flips its masks too). The
series is decoded by SimpleITK's ImageSeriesReader (per-slice RescaleSlope/Intercept -> HU; compressed
transfer syntaxes via GDCM); pydicom reads only the headers needed for ordering.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from musclelab.data.readers.base import READERS, CaseRef, Decoded, Reader
from musclelab.data.readers.decode import read_png, to_lps
from musclelab.data.readers.files import list_files, natural_key
from musclelab.data.readers.headers import Header, lps_permutation, read_header
from musclelab.data.readers.problems import Problem, UnreadableFileError, fmt_shape, short_reason
from musclelab.errors import ConfigError

_LUT = np.ones(65536, np.int32)
_LUT[0] = 0


def _with_path(path: Path, message: str) -> ConfigError:
    err = ConfigError(message)
    err.path = Path(path)  # type: ignore[attr-defined]
    return err


@dataclass
class SeriesInfo:
    """Slice geometry of a DICOM series from its headers. ``order``: file indices (name order) sorted by
    position along the normal; ``positions``: those positions in mm (ascending)."""

    files: tuple[Path, ...]
    rows: int
    cols: int
    order: np.ndarray
    positions: np.ndarray
    direction: np.ndarray        # 3x3, columns = row direction, column direction, normal
    pixel_spacing: tuple[float, float]   # (row spacing, column spacing) mm


def read_series_info(files: tuple[Path, ...]) -> SeriesInfo:
    """Headers of every slice file (no pixel data); ConfigError naming a file that is unreadable, lacks
    geometry tags, or disagrees with the first slice in size/orientation, or two slices at one position."""
    import pydicom

    ipp, iop0, size0, ps0 = [], None, None, None
    for f in files:
        try:
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:  # no 128-byte preamble / DICM prefix: old exports
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
                if "Rows" not in ds:
                    raise
        except Exception as e:  # pydicom raises InvalidDicomError, EOFError, OSError, ...
            reason = "no DICOM header found" if isinstance(e, pydicom.errors.InvalidDicomError) else short_reason(e)
            raise UnreadableFileError(f, "DICOM", reason) from None
        try:
            pos = [float(v) for v in ds.ImagePositionPatient]
            iop = np.array([float(v) for v in ds.ImageOrientationPatient])
            size = (int(ds.Rows), int(ds.Columns))
            ps = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        except (AttributeError, TypeError, ValueError, IndexError):
            raise _with_path(f, f"DICOM slice {f} lacks ImagePositionPatient / ImageOrientationPatient / Rows / "
                             "Columns / PixelSpacing: the slices cannot be ordered in space; re-export the "
                             "series with full geometry") from None
        if iop0 is None:
            iop0, size0, ps0 = iop, size, ps
        elif size != size0 or np.abs(iop - iop0).max() > 1e-4:
            raise _with_path(f, f"DICOM slice {f} has size {size} / orientation {iop.tolist()} but the first "
                             f"slice {files[0].name} has {size0} / {iop0.tolist()}: one series must share both; "
                             "remove slices of other series")
        ipp.append(pos)
    row_dir, col_dir = iop0[:3], iop0[3:]
    normal = np.cross(row_dir, col_dir)
    proj = np.asarray(ipp) @ normal
    order = np.argsort(proj, kind="stable")
    positions = proj[order]
    if len(positions) > 1:
        dup = np.flatnonzero(np.diff(positions) < 1e-3)
        if dup.size:
            a, b = files[order[dup[0]]], files[order[dup[0] + 1]]
            raise _with_path(b, f"DICOM slices {a.name} and {b.name} in {a.parent} are at the same position "
                             f"({positions[dup[0]]:.3f} mm along the slice normal): remove the duplicate")
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    return SeriesInfo(tuple(files), size0[0], size0[1], order, positions, direction, ps0)


@READERS.register("chaos")
class ChaosReader(Reader):
    """CHAOS CT training data: liver (binary). Case id ``chaos-ct-<patient>``, patient ``chaos-<patient>``."""

    name = "chaos"

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)

    @property
    def class_names(self) -> tuple[str, ...]:
        return ("background", "liver")

    def _base(self) -> Path:
        for cand in (self.root / "Train_Sets" / "CT", self.root / "CT", self.root):
            if cand.is_dir() and any((d / "DICOM_anon").is_dir() for d in cand.iterdir() if d.is_dir()):
                return cand
        if (self.root / "DICOM_anon").is_dir():
            return self.root.parent
        raise ConfigError(f"chaos: no <patient>/DICOM_anon folders under {self.root} (config field data.root); "
                          "expected Train_Sets/CT/<patient>/DICOM_anon/*.dcm and .../Ground/*.png")

    def scan(self) -> list[CaseRef]:
        base = self._base()
        refs, problems = [], []
        patients = sorted((d for d in base.iterdir() if d.is_dir() and (d / "DICOM_anon").is_dir()
                           and not d.name.startswith(".")), key=natural_key)
        if (self.root / "DICOM_anon").is_dir():
            patients = [self.root]
        for d in patients:
            dcm = tuple(list_files(d / "DICOM_anon", (".dcm",)))
            png = tuple(list_files(d / "Ground", (".png",)))
            if not dcm:
                problems.append(Problem.error("missing_image", "no .dcm files in this DICOM_anon folder: add the "
                                              "series or remove the patient folder", d / "DICOM_anon",
                                              f"chaos-ct-{d.name}"))
                continue
            if not png:
                problems.append(Problem.error(
                    "missing_label", f"no Ground/*.png masks for this patient (expected {len(dcm)} files "
                    "liver_GT_000.png ...): add them or move the patient out of the data folder", d / "Ground",
                    f"chaos-ct-{d.name}"))
            refs.append(CaseRef(f"chaos-ct-{d.name}", f"chaos-{d.name}", dcm, png, meta={"patient_folder": d.name}))
        if not refs and not problems:
            raise ConfigError(f"chaos: no patients found under {base}")
        self.scan_problems = problems
        return refs

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        return _LUT

    # -- series geometry -------------------------------------------------------------------------------

    def headers(self, ref: CaseRef) -> tuple[Header, Header | None]:
        info = read_series_info(ref.image)
        perm = lps_permutation(info.direction.ravel())
        size = (info.cols, info.rows, len(ref.image))
        spacing = (info.pixel_spacing[1], info.pixel_spacing[0], _slice_step(info))
        osize, osp = [0, 0, 0], [0.0, 0.0, 0.0]
        for i, j in enumerate(perm):
            osize[j], osp[j] = size[i], spacing[i]
        ih = Header(ref.image[0].parent, tuple(reversed(osize)), tuple(reversed(osp)),
                    (len(ref.image), info.rows, info.cols))
        if not ref.label:
            return ih, None
        sizes = {read_header(p).native_shape for p in ref.label}
        if len(sizes) > 1:
            raise ConfigError(f"chaos: masks in {ref.label[0].parent} have different sizes "
                              f"{sorted(fmt_shape(s) for s in sizes)}: every PNG must be {info.rows}x{info.cols}")
        (h, w), = sizes
        return ih, Header(ref.label[0].parent, (len(ref.label), h, w), None, (len(ref.label), h, w))

    def check(self, ref: CaseRef, decode: bool = True) -> list[Problem]:
        probs = super().check(ref, decode)
        if ref.label and len(ref.label) != len(ref.image) and not any(p.check == "readable" for p in probs):
            probs = [p for p in probs if p.check != "shape"] + [Problem.error(
                "shape", f"{len(ref.label)} mask PNGs for {len(ref.image)} DICOM slices: CHAOS pairs the k-th "
                "PNG with the k-th DICOM file by name, so the counts must agree; restore the missing files",
                ref.label[0].parent, ref.case_id)]
        if not any(p.severity == "error" for p in probs):
            try:
                info = read_series_info(ref.image)
            except ConfigError:
                return probs
            steps = np.diff(info.positions)
            if steps.size and steps.max() - steps.min() > 0.01 * max(float(np.median(steps)), 1e-6):
                probs.append(Problem.warning(
                    "slice_gaps", f"slice spacing varies from {steps.min():.3f} to {steps.max():.3f} mm (missing "
                    "slices?): the volume's z spacing assumes a regular step", ref.image[0].parent, ref.case_id))
        return probs

    def decode(self, ref: CaseRef, observers: bool = True) -> Decoded:
        info = read_series_info(ref.image)
        files = [str(info.files[i]) for i in info.order]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            native = reader.Execute()
        except RuntimeError as e:
            for f in files:  # name the culprit
                try:
                    sitk.ReadImage(f)
                except RuntimeError as e2:
                    raise UnreadableFileError(f, "DICOM", short_reason(e2)) from None
            raise UnreadableFileError(ref.image[0].parent, "DICOM series", short_reason(e)) from None
        image, spacing = to_lps(native)
        out = Decoded(image.astype(np.float32, copy=False), spacing, native=native)
        if ref.label:
            if len(ref.label) != len(ref.image):
                raise ConfigError(f"chaos: {len(ref.label)} mask PNGs in {ref.label[0].parent} for {len(ref.image)} "
                                  "DICOM slices: CHAOS pairs the k-th PNG with the k-th DICOM file by name, so the "
                                  "counts must agree")
            masks = [read_png(ref.label[i]) for i in info.order]
            shapes = {m.shape for m in masks}
            if shapes != {(info.rows, info.cols)}:
                raise ConfigError(f"chaos: masks in {ref.label[0].parent} are {sorted(fmt_shape(s) for s in shapes)} "
                                  f"pixels but the DICOM slices are {info.rows}x{info.cols}")
            stack = sitk.GetImageFromArray(np.stack(masks))
            stack.CopyInformation(native)
            out.raw_label, _ = to_lps(stack)
        return out


def _slice_step(info: SeriesInfo) -> float:
    steps = np.diff(info.positions)
    return float(np.median(steps)) if steps.size else 1.0
