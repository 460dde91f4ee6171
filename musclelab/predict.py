"""``musclelab predict <run dir or checkpoint> <input> --out DIR``: a trained model on new scans.

Input: one file or a folder searched recursively for NIfTI, NRRD, MetaImage and DICOM. DICOM files are grouped
by folder and ``SeriesInstanceUID``: a group of one file is a single slice (an L3 slice), a larger group is a
series (a volume, one folder per series). Each case goes through

1. reading (SimpleITK decoding of :mod:`musclelab.data.readers.decode`; DICOM headers with pydicom, series ordered
   and checked by :func:`musclelab.data.readers.chaos.read_series_info`) into the project's LPS arrays in HU;
2. the training run's preprocessing, the same functions the data pipeline uses: for 2D models
   :func:`~musclelab.data.preprocess.case_to_slice_arrays` (resize to ``img_size`` keeping the field of view) and
   :func:`~musclelab.data.windowing.apply_window` with the checkpoint's window, channels and normalisation; for
   3D models :func:`~musclelab.data.preprocess.resample_volume` to the training spacing and the sliding window
   of :mod:`musclelab.inference`;
3. the network (weights and description from the checkpoint alone, :mod:`musclelab.checkpoint_meta`);
4. back to the input's geometry: class probabilities resampled to the native grid (bilinear) before the arg-max,
   the mask written as NIfTI on the source scan's grid (:func:`musclelab.outputs.nifti.save_nifti`), plus a PNG
   for single slices;
5. numbers (:mod:`musclelab.metrics.body_composition`): per class area (cm², slices) or volume (mL, volumes) and
   mean HU; for muscle the SMA/SMD (or volume) after the McSweeney bone post-processing (> 175 HU dilated by
   2 mm removed) and the SMI (cm²/m²) when a height is known (``--heights`` CSV or DICOM ``PatientSize``).

Outputs under ``--out``: ``predictions.csv`` (one row per case, failed cases with their reason; rewritten
atomically as each case finishes, so a kill keeps every finished row), ``masks/<case>.nii.gz`` (+ ``.png`` for
slices), ``masks/labels.json`` (class names), ``overlays/<case>.png``, ``summary.json`` and
``.musclelab_predict`` (every file predict wrote there). A case that cannot be read, is not CT, or whose
values are not plausible CT HU (NaN/inf voxels; no air below :data:`AIR_MAX_HU`, e.g. stored values without
the -1024 intercept) never stops the batch; the exit status is 1 when any case failed, 2 for a bad checkpoint
or output folder.

User data is never touched: ``--out`` must not overlap an input in either direction (inside it, containing it,
or the same folder: ``--out ds`` for ``ds/images`` would reach ``ds/masks``), must be new, empty or an earlier
predict output, and a file predict did not write itself is never replaced. Case ids are unique (``x.nii.gz`` and
``x.nrrd`` become ``x_nii_gz`` and ``x_nrrd``) and every path component is sanitised
(:func:`safe_case_id`: a DICOM UID holding ``../`` cannot leave ``--out``).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from musclelab.errors import ConfigError

#: file extensions read as images (besides DICOM, recognised by extension or the DICM preamble)
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: class names counted as skeletal muscle (when no class is called ``muscle``, individual muscles are joined)
MUSCLE_CLASSES = ("muscle", "skeletal_muscle")
MUSCLE_PARTS = ("erector_spinae", "quadratus_lumborum", "psoas_major", "psoas", "obliques", "rectus_abdominis",
                "multifidus", "iliopsoas")
#: relative tolerance on the gaps between slice positions of a series (beyond it: missing or uneven slices)
SPACING_RTOL = 0.01
SPACING_ATOL_MM = 0.01
#: a CT scan has air (about -1000 HU) somewhere; a scan whose lowest value is above this was not rescaled to HU
AIR_MAX_HU = -500.0
#: the file in ``--out`` that lists what predict wrote there (it only ever replaces those)
WRITTEN_FILE = ".musclelab_predict"
_SAFE_PART = re.compile(r"[^A-Za-z0-9._+-]")


class CaseError(Exception):
    """A problem with one input case (its row in ``predictions.csv`` says why); the batch goes on."""


# --------------------------------------------------------------------------------------------------------------
# Finding cases
# --------------------------------------------------------------------------------------------------------------


@dataclass
class InputCase:
    """One case to predict: ``kind`` is ``dicom_slice``, ``dicom_series`` or the file format (``nifti``, ...);
    ``error`` is set when already finding it failed (e.g. an unreadable DICOM header)."""

    case_id: str
    kind: str
    files: tuple[Path, ...]
    error: str | None = None
    headers: list[Any] = field(default_factory=list, repr=False)


def _is_dicom(path: Path) -> bool:
    from musclelab.data.readers.files import split_ext

    ext = split_ext(path)[1]
    if ext == ".dcm":
        return True
    if ext and ext not in (".ima",):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def safe_case_id(case_id: str) -> str:
    """``case_id`` as a relative path that stays inside its folder: each ``/``-separated part keeps letters,
    digits and ``._+-`` (others become ``_``), and empty, ``.`` and ``..`` parts become ``_``."""
    parts = [_SAFE_PART.sub("_", part) for part in str(case_id).replace("\\", "/").split("/")]
    parts = ["_" if p in ("", ".", "..") else p for p in parts]
    return "/".join(parts)


def _case_id(path: Path, root: Path) -> str:
    from musclelab.data.readers.files import split_ext

    rel = path.relative_to(root) if path != root else Path(path.name)
    return (rel.parent / split_ext(rel.name)[0]).as_posix()


def _unique_ids(cases: list["InputCase"]) -> None:
    """Make case ids unique in place: ids shared by several cases get their file extension (``x_nii_gz``,
    ``x_nrrd``; ``_dcm`` for DICOM), then a counter if still shared."""
    from musclelab.data.readers.files import split_ext

    def count(ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in ids:
            out[i.lower()] = out.get(i.lower(), 0) + 1  # case-insensitive file systems collide too
        return out

    seen = count([c.case_id for c in cases])
    for c in cases:
        if seen[c.case_id.lower()] > 1:
            ext = split_ext(c.files[0])[1] if c.kind != "dicom_series" else ".series"
            c.case_id = f"{c.case_id}_{(ext or '.dcm').lstrip('.').replace('.', '_')}"
    taken: dict[str, int] = {}
    for c in cases:
        key = c.case_id.lower()
        taken[key] = taken.get(key, 0) + 1
        if taken[key] > 1:
            c.case_id = f"{c.case_id}_{taken[key]}"


def find_cases(input_path: str | Path) -> tuple[list[InputCase], list[Path]]:
    """The cases under ``input_path`` (a file or a folder searched recursively) and the files skipped as not
    images. Ids are paths relative to the input folder without the extension (a series: its folder)."""
    import pydicom

    from musclelab.data.readers.files import file_kind, list_files, split_ext

    src = Path(input_path).expanduser()
    if not src.exists():
        raise ConfigError(f"input {src} does not exist: give a scan file or a folder of scans")
    root = src.parent if src.is_file() else src
    files = [src] if src.is_file() else list_files(src, recursive=True)
    cases: list[InputCase] = []
    skipped: list[Path] = []
    dicom_groups: dict[tuple[Path, str], list[tuple[Path, Any]]] = {}
    for f in files:
        if split_ext(f)[1] in VOLUME_EXTS:
            cases.append(InputCase(_case_id(f, root), file_kind(f).lower(), (f,)))
        elif _is_dicom(f):
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
                if "Rows" not in ds:
                    raise ValueError("no image rows/columns: not a DICOM image")
            except Exception as e:  # pydicom raises many kinds for broken files
                reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                cases.append(InputCase(_case_id(f, root), "dicom_slice", (f,),
                                       f"file {f} could not be read as DICOM ({reason}): re-export or remove it"))
                continue
            uid = str(ds.get("SeriesInstanceUID", "")) or f"file:{f.name}"
            dicom_groups.setdefault((f.parent, uid), []).append((f, ds))
        else:
            skipped.append(f)
    per_folder: dict[Path, int] = {}
    for folder, _ in dicom_groups:
        per_folder[folder] = per_folder.get(folder, 0) + 1
    for (folder, uid), members in dicom_groups.items():
        paths = tuple(m[0] for m in members)
        if len(members) == 1:
            cases.append(InputCase(_case_id(paths[0], root), "dicom_slice", paths, headers=[members[0][1]]))
            continue
        rel = folder.relative_to(root).as_posix() if folder != root else folder.name
        cid = rel if per_folder[folder] == 1 else f"{rel}/{uid[-12:]}"
        cases.append(InputCase(cid, "dicom_series", paths, headers=[m[1] for m in members]))
    for c in cases:
        c.case_id = safe_case_id(c.case_id)
    cases.sort(key=lambda c: (c.case_id, str(c.files[0])))
    _unique_ids(cases)
    cases.sort(key=lambda c: c.case_id)
    return cases, skipped


# --------------------------------------------------------------------------------------------------------------
# Reading one case
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Scan:
    """A case read into the project convention: ``hu`` float32 LPS ``(row, col)`` or ``(z, row, col)``,
    ``spacing`` mm per axis, ``reference`` the file whose grid masks are written on (None for a DICOM series:
    then ``origin_lps`` places the grid), ``height_m`` from DICOM ``PatientSize`` when present."""

    hu: np.ndarray
    spacing: tuple[float, ...]
    reference: Path | None
    origin_lps: tuple[float, ...] | None = None
    height_m: float | None = None


def _check_dicom_headers(case: InputCase) -> float | None:
    """Modality CT and a HU rescale in every file; returns PatientSize (m) when given."""
    height = None
    for f, ds in zip(case.files, case.headers):
        modality = str(ds.get("Modality", "")).upper()
        if modality and modality != "CT":
            raise CaseError(f"{f} is modality {modality}, not CT: only CT scans (in HU) can be segmented")
        if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
            raise CaseError(f"{f} has no RescaleSlope/RescaleIntercept: its stored values cannot be turned into HU; "
                            "re-export the scan with the CT rescale tags")
        size = ds.get("PatientSize", None)
        try:
            if size not in (None, "") and float(size) > 0:
                height = float(size)
        except (TypeError, ValueError):
            pass
    return height


def check_hu(scan: "Scan", case: InputCase) -> "Scan":
    """Refuse values that are not plausible CT Hounsfield units: NaN/inf voxels, or no voxel below
    :data:`AIR_MAX_HU` (every CT has air near -1000 HU; stored values without the -1024 intercept have none)."""
    bad = int(np.size(scan.hu) - np.count_nonzero(np.isfinite(scan.hu)))
    where = case.files[0].parent if case.kind == "dicom_series" else case.files[0]
    if bad:
        raise CaseError(f"not CT HU: {bad} NaN/inf voxels; re-export {where}")
    low = float(np.min(scan.hu)) if np.size(scan.hu) else math.nan
    if not low <= AIR_MAX_HU:
        raise CaseError(f"not CT HU: no value below {AIR_MAX_HU:.0f} (min {low:.0f}; air is -1000): stored values "
                        f"without the -1024 intercept? re-export {where} in HU")
    return scan


def read_case(case: InputCase) -> Scan:
    """Decode one case and check its values are CT HU (raises :class:`CaseError` with the reason when it cannot
    be used)."""
    return check_hu(_read_case(case), case)


def _read_case(case: InputCase) -> Scan:
    import SimpleITK as sitk

    from musclelab.data.readers.decode import open_image, to_lps

    if case.error:
        raise CaseError(case.error)
    try:
        if case.kind == "dicom_series":
            from musclelab.data.readers.chaos import read_series_info

            height = _check_dicom_headers(case)
            info = read_series_info(case.files)
            gaps = np.diff(info.positions)
            med = float(np.median(gaps))
            if np.abs(gaps - med).max() > max(SPACING_RTOL * med, SPACING_ATOL_MM):
                raise CaseError(f"series {case.files[0].parent} has inconsistent slice spacing "
                                f"({gaps.min():.2f}-{gaps.max():.2f} mm between slices): missing or duplicated "
                                "slices? export the complete series")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(case.files[i]) for i in info.order])
            img = reader.Execute()
            lps = sitk.DICOMOrient(img, "LPS")
            hu, spacing = to_lps(img)
            return Scan(np.asarray(hu, np.float32), spacing, None, tuple(lps.GetOrigin()), height)
        height = _check_dicom_headers(case) if case.kind == "dicom_slice" else None
        img = open_image(case.files[0])
        hu, spacing = to_lps(img)
        if img.GetDimension() == 2:  # a 2D file (e.g. NRRD slice): masks go on its grid by spacing and origin
            lps = sitk.DICOMOrient(sitk.JoinSeries(img), "LPS")
            return Scan(np.asarray(hu, np.float32), spacing, None, tuple(lps.GetOrigin()), height)
        return Scan(np.asarray(hu, np.float32), spacing, case.files[0], None, height)
    except CaseError:
        raise
    except ConfigError as err:
        raise CaseError(str(err)) from None
    except RuntimeError as err:  # ITK
        from musclelab.data.readers.problems import short_reason

        raise CaseError(f"{case.files[0]} could not be read ({short_reason(err)})") from None


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


class Predictor:
    """A trained model ready for new scans: ``Predictor(checkpoint).labels(scan)`` -> LPS label map."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        import torch

        from musclelab.checkpoint_meta import build_network, load_checkpoint
        from musclelab.data.windowing import Window

        self.loaded = load_checkpoint(checkpoint)
        self.meta = self.loaded.meta
        self.class_names: list[str] = list(self.meta["class_names"])
        self.spatial_dims = int(self.meta["spatial_dims"])
        w = self.meta["window"]
        self.window = Window(float(w["hu_min"]), float(w["hu_max"]), float(w.get("gamma", 1.0)))
        self.channels = int(self.meta["channels"])
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.net = build_network(self.loaded).to(self.device)
        self.muscle_classes = muscle_class_indices(self.class_names)

    @property
    def checkpoint(self) -> Path:
        return self.loaded.path

    def labels(self, scan: Scan) -> np.ndarray:
        """The label map of ``scan`` on its own grid (same shape as ``scan.hu``), uint8."""
        if self.spatial_dims == 3:
            return self._labels_3d(scan)
        return self._labels_2d(scan)

    def _labels_2d(self, scan: Scan) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from musclelab.data.case import Case
        from musclelab.data.preprocess import SlicePreprocess, case_to_slice_arrays
        from musclelab.data.windowing import apply_window
        from musclelab.losses import logits_to_labels, logits_to_probs

        case = Case("predict", "predict", scan.hu, None, scan.spacing)
        images, _, _, _ = case_to_slice_arrays(case, SlicePreprocess(img_size=self.meta["img_size"], slices="all"))
        native = scan.hu.shape[-2:]
        out = np.empty((len(images), *native), np.uint8)
        with torch.inference_mode():
            for s in range(0, len(images), self.batch_size):
                x = torch.from_numpy(apply_window(images[s:s + self.batch_size], self.window, self.channels))
                logits = self.net(x.to(self.device)).float()
                if tuple(logits.shape[-2:]) == tuple(native):
                    lab = logits_to_labels(logits)  # exactly what the test step does
                else:  # back to the native grid: probabilities resampled, then the arg-max
                    probs = F.interpolate(logits_to_probs(logits), size=tuple(native), mode="bilinear",
                                          align_corners=False)
                    lab = _argmax_classes(probs)
                out[s:s + len(x)] = lab.cpu().numpy().astype(np.uint8)
        return out[0] if scan.hu.ndim == 2 else out

    def _labels_3d(self, scan: Scan) -> np.ndarray:
        """The 3D path of the training run: resample to its spacing and crop to the body
        (:func:`musclelab.data.volumes.preprocess_volume`), window, sliding window, back to the source grid
        (:func:`musclelab.data.volumes.to_source_geometry`) — what its test step does."""
        import torch

        from musclelab.data.case import Case
        from musclelab.data.volumes import VolumePreprocess, preprocess_volume, to_source_geometry
        from musclelab.data.windowing import apply_window
        from musclelab.inference import sliding_window_labels, window_from_config

        if scan.hu.ndim != 3:
            raise CaseError(f"the model is 3D (spatial_dims=3) and needs a volume; this case is one slice "
                            f"{scan.hu.shape}")
        spacing = self.meta.get("spacing")
        pre = VolumePreprocess(tuple(float(s) for s in spacing) if spacing else None,
                               bool(self.meta.get("crop_foreground", True)))
        pp = preprocess_volume(Case("predict", "predict", scan.hu, None, scan.spacing), pre)
        x = torch.from_numpy(apply_window(pp.case.image[None], self.window, self.channels))  # (1, C, D, H, W)
        window = window_from_config(self.meta["patch_size"], self.meta.get("sliding_window"))
        with torch.inference_mode():
            pred = sliding_window_labels(self.net, x.to(self.device), window)[0].cpu().numpy().astype(np.uint8)
        return to_source_geometry(pred, pp.resampled_shape, pp.crop_start, pp.source_shape)


def _argmax_classes(probs: "torch.Tensor") -> "torch.Tensor":
    """``probs.argmax(dim=1)`` (first maximum wins) as one comparison per class: a reduction over the channel
    axis of a ``(B, C, 512, 512)`` tensor is ~40x slower on a CPU thread than C elementwise passes."""
    import torch

    best, labels = probs[:, 0], torch.zeros(probs.shape[:1] + probs.shape[2:], dtype=torch.long)
    for c in range(1, probs.shape[1]):
        better = probs[:, c] > best
        labels[better] = c
        best = torch.maximum(best, probs[:, c])
    return labels


def muscle_class_indices(class_names: Sequence[str]) -> list[int]:
    """Label values that make up skeletal muscle: the ``muscle`` class, else every individual muscle class."""
    named = [i for i, n in enumerate(class_names) if i > 0 and n.lower() in MUSCLE_CLASSES]
    if named:
        return named
    return [i for i, n in enumerate(class_names) if i > 0 and (n.lower() in MUSCLE_PARTS or "muscle" in n.lower())]


# --------------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------------


def case_numbers(labels: np.ndarray, scan: Scan, class_names: Sequence[str], muscle: Sequence[int],
                 height_m: float | None) -> dict[str, Any]:
    """Per class area (cm², slices) or volume (mL, volumes) and mean HU; muscle SMA/SMD (or volume and
    density) after the bone post-processing, and the SMI (cm²/m², slices) when ``height_m`` is known."""
    from musclelab.metrics.body_composition import remove_bone, sma_cm2, smd_hu, smi_cm2_m2, volume_ml

    is_slice = labels.ndim == 2
    row: dict[str, Any] = {}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        m = labels == c
        row[f"area_{name}_cm2" if is_slice else f"volume_{name}_ml"] = (
            sma_cm2(m, scan.spacing) if is_slice else volume_ml(m, scan.spacing))
        row[f"hu_{name}"] = smd_hu(m, scan.hu)
    if muscle:
        m = remove_bone(np.isin(labels, list(muscle)), scan.hu, scan.spacing)
        if is_slice:
            row["sma_cm2"] = sma_cm2(m, scan.spacing)
            row["smd_hu"] = smd_hu(m, scan.hu)
            row["smi_cm2_m2"] = smi_cm2_m2(row["sma_cm2"], height_m) if height_m else math.nan
        else:
            row["muscle_volume_ml"] = volume_ml(m, scan.spacing)
            row["muscle_hu"] = smd_hu(m, scan.hu)
    return row


# --------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------

_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 120, 240], [240, 200, 40], [200, 80, 220],
                     [40, 210, 220], [250, 140, 40], [150, 150, 150]], np.uint8)


def overlay_png(path: Path, hu: np.ndarray, labels: np.ndarray, window: Any) -> Path:
    """A quick-look PNG: the slice (the volume's slice with the most foreground) in the model's HU window, with
    the classes coloured at 45% opacity."""
    from PIL import Image

    if hu.ndim == 3:
        k = int(np.argmax((labels > 0).reshape(len(labels), -1).sum(1)))
        hu, labels = hu[k], labels[k]
    scale = 255.0 / (window.hu_max - window.hu_min)
    grey = Image.fromarray(np.clip((hu - window.hu_min) * scale, 0, 255).astype(np.uint8)).convert("RGB")
    classes = Image.fromarray(np.minimum(labels, len(_COLOURS) - 1).astype(np.uint8), mode="P")
    classes.putpalette(_COLOURS.ravel().tolist())
    blended = Image.blend(grey, classes.convert("RGB"), 0.45)  # PIL does the per-pixel work in C
    out = Image.composite(blended, grey, Image.fromarray(((labels > 0) * 255).astype(np.uint8)))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, compress_level=1)  # fast zlib: a quick look, not an archive
    return path


def write_mask(out: Path, case_id: str, labels: np.ndarray, scan: Scan) -> Path:
    """``masks/<case_id>.nii.gz`` on the source grid (and ``.png`` with the class values for a single slice)."""
    from musclelab.outputs.nifti import save_nifti

    path = out / "masks" / f"{case_id}.nii.gz"
    arr = labels[None] if labels.ndim == 2 else labels
    if scan.reference is not None:
        save_nifti(path, arr, reference=scan.reference)
    else:
        spacing = scan.spacing if labels.ndim == 3 else (1.0, *scan.spacing)
        save_nifti(path, arr, spacing=spacing, origin_lps=scan.origin_lps)
    if labels.ndim == 2:
        from PIL import Image

        Image.fromarray(labels.astype(np.uint8)).save(path.with_name(f"{Path(case_id).name}.png"), compress_level=1)
    return path


# --------------------------------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------------------------------


def read_heights(path: str | Path | None) -> dict[str, float]:
    """``id -> height (m)`` from a CSV with an ``id`` (or ``case_id``) column and ``height_m`` (or ``height_cm``)."""
    if path is None:
        return {}
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--heights {p} does not exist: give a CSV with columns id,height_m")
    df = pd.read_csv(p)
    key = next((c for c in ("id", "case_id", "patient_id") if c in df.columns), None)
    if key is None or not ({"height_m", "height_cm"} & set(df.columns)):
        raise ConfigError(f"--heights {p} needs an id column (id, case_id or patient_id) and height_m or height_cm; "
                          f"it has {', '.join(map(str, df.columns))}")
    h = df["height_m"] if "height_m" in df.columns else df["height_cm"] / 100.0
    return {str(k): float(v) for k, v in zip(df[key], h) if np.isfinite(v) and v > 0}


def _height_for(case: InputCase, heights: dict[str, float], scan_height: float | None) -> float | None:
    for key in (case.case_id, Path(case.case_id).name):
        if key in heights:
            return heights[key]
    return scan_height


def check_output_dir(input_path: Path, out: Path) -> None:
    """Refuse an output folder that overlaps the input in either direction — inside an input folder, containing
    the input (``--out ds`` for ``ds/images``: predict would write next to ``ds/masks``), or the same path — and
    one that holds files predict did not write (it must be new, empty, or an earlier predict output)."""
    src, dst = input_path.expanduser().resolve(), out.expanduser().resolve()
    if dst == src:
        raise ConfigError(f"--out {out} is the input {'file' if src.is_file() else 'folder'}: choose a new folder "
                          "outside it (predict never writes into the input)")
    if src.is_dir() and src in dst.parents:
        raise ConfigError(f"--out {out} is inside the input folder {src}: choose a folder outside it "
                          "(predict never writes into the input)")
    if dst in src.parents:
        raise ConfigError(f"--out {out} contains the input {src}: choose a new folder outside it (predict never "
                          "writes next to the input, e.g. over a data set's reference masks)")
    if dst.exists() and not dst.is_dir():
        raise ConfigError(f"--out {out} is a file: give a new or empty folder")
    if dst.is_dir() and not (dst / WRITTEN_FILE).exists():
        content = sorted(q.name for q in dst.iterdir())
        if content:
            shown = ", ".join(content[:5]) + (", ..." if len(content) > 5 else "")
            raise ConfigError(f"--out {out} holds files predict did not write ({shown}): choose a new or empty "
                              "folder (predict never replaces a file it did not write)")


class OutputFiles:
    """What predict wrote under ``out`` (``.musclelab_predict``, one relative path a line, appended before each
    file is written): a file there is replaced only when predict claimed it; anything else is refused (the case
    fails with the reason)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / WRITTEN_FILE
        self.files: set[str] = set()
        if self.path.exists():
            self.files = {line for line in self.path.read_text().splitlines() if line}

    def _rel(self, path: Path) -> str:
        return path.resolve().relative_to(self.out.resolve()).as_posix()  # ValueError when it would escape

    def check(self, path: Path) -> Path:
        """``path`` may be written: it is inside ``out`` and absent or predict's own (else :class:`CaseError`)."""
        rel = self._rel(path)
        if path.exists() and rel not in self.files:
            raise CaseError(f"{path} exists and was not written by predict: it is never replaced; move it or "
                            "choose a new --out")
        return path

    def claim(self, path: Path) -> Path:
        """:meth:`check`, then recorded as predict's own before it is written."""
        self.check(path)
        rel = self._rel(path)
        if rel not in self.files:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(rel + "\n")
                f.flush()
            self.files.add(rel)
        return path


def predict_case(predictor: Predictor, case: InputCase, out: Path, heights: dict[str, float],
                 overlays: bool = True, written: OutputFiles | None = None) -> dict[str, Any]:
    """Predict, measure and write one case; returns its CSV row (``status`` ok)."""
    t0 = time.perf_counter()
    written = written or OutputFiles(out)
    mask_path, png_path = out / "masks" / f"{case.case_id}.nii.gz", out / "masks" / f"{case.case_id}.png"
    overlay_path = out / "overlays" / f"{case.case_id}.png"
    for t in (mask_path, png_path, overlay_path):  # before any work: nothing of the user's is replaced
        written.check(t)
    scan = read_case(case)
    labels = predictor.labels(scan)
    height = _height_for(case, heights, scan.height_m)
    row: dict[str, Any] = {"case_id": case.case_id, "status": "ok", "reason": "", "kind": case.kind,
                           "source": str(case.files[0].parent if case.kind == "dicom_series" else case.files[0]),
                           "shape": "x".join(map(str, scan.hu.shape)),
                           "spacing_mm": "x".join(f"{s:.4g}" for s in scan.spacing),
                           "height_m": height if height else math.nan}
    row.update(case_numbers(labels, scan, predictor.class_names, predictor.muscle_classes, height))
    for t in [mask_path] + ([png_path] if labels.ndim == 2 else []) + ([overlay_path] if overlays else []):
        written.claim(t)
    mask = write_mask(out, case.case_id, labels, scan)
    row["mask"] = str(mask.relative_to(out))
    if overlays:
        overlay_png(overlay_path, scan.hu, labels, predictor.window)
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """``predictions.csv`` atomically: the lead columns, then every other column in order of appearance."""
    import csv
    import io

    from musclelab.io import atomic_write_text

    lead = ["case_id", "status", "reason", "kind", "source"]
    columns = lead + [c for c in dict.fromkeys(k for r in rows for k in r) if c not in lead]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, (float, np.floating)) and np.isnan(v) else v) for k, v in r.items()}
                     for r in rows)
    atomic_write_text(path, buf.getvalue())


@dataclass
class PredictResult:
    rows: list[dict[str, Any]]
    skipped: list[Path]
    seconds: float

    @property
    def n_failed(self) -> int:
        return sum(r["status"] != "ok" for r in self.rows)


def predict(checkpoint: str | Path, input_path: str | Path, out: str | Path, heights_csv: str | Path | None = None,
            device: str = "cpu", batch_size: int = 16, overlays: bool = True, progress: bool | None = None,
            predictor: Predictor | None = None) -> PredictResult:
    """Run a trained model on every case under ``input_path`` and write the outputs into ``out``."""
    from tqdm import tqdm

    from musclelab.io import atomic_write_json

    t0 = time.perf_counter()
    input_path, out = Path(input_path), Path(out)
    check_output_dir(input_path, out)
    heights = read_heights(heights_csv)
    predictor = predictor or Predictor(checkpoint, device, batch_size)
    cases, skipped = find_cases(input_path)
    if not cases:
        raise ConfigError(f"no CT images (NIfTI, NRRD, MetaImage, DICOM) under {input_path}")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    written = OutputFiles(out)
    for own in ("masks/labels.json", "predictions.csv", "summary.json"):
        try:
            written.claim(out / own)
        except CaseError as err:
            raise ConfigError(str(err)) from None
    atomic_write_json(out / "masks" / "labels.json",
                      {"labels": {str(i): n for i, n in enumerate(predictor.class_names)},
                       "checkpoint": str(predictor.checkpoint), "model": predictor.meta["model"]["name"],
                       "musclelab_version": predictor.meta.get("musclelab_version")})
    rows = []
    for case in tqdm(cases, desc="musclelab predict", unit="case", disable=(not progress) if progress is not None
                     else None, file=sys.stderr):
        try:
            rows.append(predict_case(predictor, case, out, heights, overlays, written))
        except (CaseError, ValueError, RuntimeError, OSError) as err:
            from musclelab.data.readers.problems import short_reason

            reason = short_reason(err)
            rows.append({"case_id": case.case_id, "status": "failed", "reason": reason, "kind": case.kind,
                         "source": str(case.files[0])})
        write_rows(out / "predictions.csv", rows)  # every finished case on disk: a kill loses the one in progress
    seconds = time.perf_counter() - t0
    result = PredictResult(rows, skipped, seconds)
    ok = [r for r in rows if r["status"] == "ok"]
    atomic_write_json(out / "summary.json", {
        "checkpoint": str(predictor.checkpoint), "input": str(input_path), "n_cases": len(rows),
        "n_ok": len(ok), "n_failed": result.n_failed, "n_skipped_files": len(skipped), "seconds": seconds,
        "ms_per_case": 1000.0 * float(np.mean([r["seconds"] for r in ok])) if ok else None,
        "failed": {r["case_id"]: r["reason"] for r in rows if r["status"] != "ok"}})
    return result


def print_summary(result: PredictResult, out: Path) -> None:
    """The end-of-run summary: counts, time per case, failures with their reasons, where the outputs are."""
    ok = [r for r in result.rows if r["status"] == "ok"]
    per_case = 1000.0 * float(np.mean([r["seconds"] for r in ok])) if ok else float("nan")
    print(f"musclelab predict: {len(ok)} of {len(result.rows)} cases predicted in {result.seconds:.1f} s "
          f"({per_case:.0f} ms per case); {result.n_failed} failed; {len(result.skipped)} non-image files skipped")
    for r in result.rows:
        if r["status"] != "ok":
            print(f"  failed {r['case_id']}: {r['reason']}")
    if ok and "sma_cm2" in ok[0]:
        sma = np.array([r["sma_cm2"] for r in ok], float)
        print(f"  SMA {np.nanmean(sma):.1f} cm² on average (range {np.nanmin(sma):.1f}-{np.nanmax(sma):.1f})")
    print(f"outputs: {out}/predictions.csv, masks/, overlays/")


def main_predict(args: list[str]) -> None:
    """``musclelab predict <run dir or checkpoint> <input> --out DIR [--heights CSV]``."""
    p = argparse.ArgumentParser(prog="musclelab predict", description="Segment new CT scans with a trained model: "
                                "masks in each scan's geometry (NIfTI; PNG for slices), predictions.csv with areas, "
                                "volumes, mean HU, SMA/SMD/SMI, and overlay PNGs.")
    p.add_argument("checkpoint", type=Path, help="a run directory (uses checkpoints/best.ckpt) or a .ckpt file")
    p.add_argument("input", type=Path, help="a scan file or a folder (searched recursively): DICOM series "
                   "(one folder per series), single DICOM slices, NIfTI, NRRD")
    p.add_argument("--out", required=True, type=Path, help="a new or empty output folder (or an earlier predict "
                   "output), not overlapping the input")
    p.add_argument("--heights", type=Path, default=None, help="CSV with id,height_m (or height_cm) for the SMI; "
                   "DICOM PatientSize is used when absent")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    ns = p.parse_args(args)
    if ns.threads:
        import torch

        torch.set_num_threads(ns.threads)
    try:
        result = predict(ns.checkpoint, ns.input, ns.out, ns.heights, ns.device, ns.batch_size,
                         overlays=not ns.no_overlays)
    except ConfigError as err:
        print(f"musclelab predict: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_summary(result, ns.out)
    if result.n_failed:
        raise SystemExit(1)
