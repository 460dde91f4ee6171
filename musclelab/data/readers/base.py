"""The reader base class and the reader registry (``READERS``, ``data.name``): a data set's layout (which files
make a case) on top of the shared decoding (:mod:`.decode`), headers (:mod:`.headers`), label tables
(:mod:`.label_maps`) and problems (:mod:`.problems`).

A reader is built with ``READERS.get(name)(root, **params)`` (or :func:`build_reader`). ``scan()`` lists the
cases cheaply (file names only, no pixel decoding, never raising for a bad pair: problems found while
pairing are kept in ``reader.scan_problems`` for :func:`musclelab.data.verify.verify_dataset`), ``load(ref)``
decodes one case into a :class:`~musclelab.data.case.Case` and raises :class:`ConfigError` for anything that
would silently corrupt training (shape/spacing mismatch, label values that are not classes, NaN/inf HU).
Readers never write into ``root``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from musclelab.data.case import Case
from musclelab.data.readers.decode import open_image, read_image, to_lps
from musclelab.data.readers.files import file_kind, natural_key
from musclelab.data.readers.headers import Header, read_header
from musclelab.data.readers.label_maps import map_labels
from musclelab.data.readers.problems import Problem, fmt_shape, fmt_spacing
from musclelab.errors import ConfigError
from musclelab.registry import Registry


@dataclass
class CaseRef:
    """A case found by :meth:`Reader.scan`, before decoding.

    image: the image file(s): one file, or every slice file of a DICOM series (in the reader's pairing order);
    label: the label file(s) paired with it (one file, or one PNG per DICOM slice); empty if none was found.
    observers: extra annotations of the same image, observer name -> file (checked by verify, decoded only
    on request: :meth:`Reader.observer_masks`). meta: metadata known without decoding (e.g. the ``meta.csv``
    row)."""

    case_id: str
    patient_id: str
    image: tuple[Path, ...]
    label: tuple[Path, ...] = ()
    observers: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        """The files :meth:`Reader.load` reads by default (image first, then label; not the observers)."""
        return (*self.image, *self.label)


@dataclass
class Decoded:
    """One decoded case before label mapping: LPS arrays and spacings (label_spacing None = not its own)."""

    image: np.ndarray
    spacing: tuple[float, ...]
    raw_label: np.ndarray | None = None
    label_spacing: tuple[float, ...] | None = None
    native: sitk.Image | None = None
    observers: dict[str, tuple[np.ndarray, tuple[float, ...] | None]] = field(default_factory=dict)
    observer_labels: dict[str, np.ndarray] = field(default_factory=dict)


READERS: Registry[type["Reader"]] = Registry("dataset reader", "data.name")

SPACING_TOL_MM = 1e-3


def pair_files(images: Mapping[Any, list[Path]], labels: Mapping[Any, list[Path]],
               expected_label: Callable[[Any, Path], str], case_id: Callable[[Any], str] = str,
               ) -> tuple[list[tuple[Any, Path, Path | None]], list[Problem]]:
    """Pair image files with label files by key. Returns ``[(key, image, label or None)]`` (one entry per
    image file, so two images with the same key give a duplicate id) and the pairing problems: missing label
    (error), several labels for one key (error), label without image (warning). ``case_id(key)`` names the
    case in the problems."""
    pairs: list[tuple[Any, Path, Path | None]] = []
    problems: list[Problem] = []
    for key in sorted(images, key=lambda k: natural_key(str(k))):
        labs = labels.get(key, [])
        if len(labs) > 1:
            problems.append(Problem.error(
                "duplicate_label", f"{len(labs)} label files for one case ({', '.join(p.name for p in labs)}): "
                "keep one and remove the others", labs[1], case_id(key)))
        for img in images[key]:
            if not labs:
                problems.append(Problem.error(
                    "missing_label", f"no label file for this image (expected {expected_label(key, img)}): add "
                    "the mask or move the image out of the data folder", img, case_id(key)))
            pairs.append((key, img, labs[0] if labs else None))
    for key in sorted(set(labels) - set(images), key=lambda k: natural_key(str(k))):
        for lab in labels[key]:
            problems.append(Problem.warning(
                "orphan_label", "label file without an image (renamed or missing image?): add the image or "
                "remove the label", lab, case_id(key)))
    return pairs, problems


class Reader:
    """Base of the data-set readers: ``Reader(root, **params)``, :meth:`scan`, :meth:`load`,
    :attr:`class_names`. Subclasses implement :meth:`scan`, :attr:`class_names` and :meth:`label_lut`; the
    defaults of :meth:`headers` / :meth:`decode` handle one image file with one label file (NIfTI, NRRD,
    MetaImage, DICOM, PNG masks)."""

    name: ClassVar[str] = ""
    #: dimensionality of the images this source holds (3 volumes, 2 single slices)
    ndim: ClassVar[int] = 3
    #: put the observers' masks into ``Case.meta["observers"]`` on every load (arrays: keep off for caching)
    observers_in_meta: bool = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ConfigError(f"data root {self.root} does not exist or is not a folder (config field data.root)")
        self.scan_problems: list[Problem] = []
        self._params: dict[str, Any] = {}

    @property
    def params(self) -> dict[str, Any]:
        """The effective parameters that define what ``load`` returns (not the root), JSON-able: the slice cache
        keys on them. Includes label definitions read from the data folder (labels.yaml, dataset.json)."""
        return dict(self._params)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}(root={str(self.root)!r}{extra})"

    # -- to implement ------------------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names by class index for the configured target, background first."""
        raise NotImplementedError

    def scan(self) -> list[CaseRef]:
        """All cases under ``root`` (file names only, no pixel decoding). Pairing problems (missing or orphan
        labels, ...) go to ``self.scan_problems`` instead of raising."""
        raise NotImplementedError

    def label_lut(self, ref: CaseRef, path: Path) -> np.ndarray:
        """Raw value -> class index table for the label file ``path`` of ``ref`` (-1 = undeclared value)."""
        raise NotImplementedError

    # -- shared pipeline -------------------------------------------------------------------------------

    def headers(self, ref: CaseRef) -> tuple[Header, Header | None]:
        """Image and label headers (no pixel decoding). Raises :class:`ConfigError` naming an unreadable file."""
        ih = read_header(ref.image[0])
        lh = read_header(ref.label[0]) if ref.label else None
        return ih, lh

    def decode(self, ref: CaseRef, observers: bool = True) -> Decoded:
        """Decode image (float32 HU), raw label and (``observers``) the observers' raw masks into LPS arrays."""
        native = open_image(ref.image[0])
        image, spacing = to_lps(native)
        out = Decoded(image.astype(np.float32, copy=False), spacing, native=native)
        if ref.label:
            out.raw_label, out.label_spacing = self._read_label(ref.label[0], native)
        for name, path in (ref.observers.items() if observers else ()):
            out.observers[name] = self._read_label(path, native)
        return out

    def _read_label(self, path: Path, native: sitk.Image) -> tuple[np.ndarray, tuple[float, ...] | None]:
        if file_kind(path) == "PNG":
            arr, _ = read_image(path, like=native)
            return arr, None
        return read_image(path)

    def dimension_problems(self, ref: CaseRef, img_shape: tuple[int, ...]) -> list[Problem]:
        """The image has the dimensionality this source holds (single slices for 2D sources)."""
        if self.ndim == 2 and len(img_shape) != 2:
            what = ("a single coronal/sagittal slice" if 1 in img_shape else "a volume") + \
                f" of {fmt_shape(img_shape)} voxels"
            return [Problem.error(
                "dimensions", f"image is {what}: this source expects single axial slices; export the one axial "
                "slice (e.g. L3) or use a volume reader", ref.image[0], ref.case_id)]
        return []

    def geometry_problems(self, ref: CaseRef, img_shape: tuple[int, ...], img_spacing: Sequence[float] | None,
                          lab_shape: tuple[int, ...], lab_spacing: Sequence[float] | None,
                          lab_file: Path | str, what: str = "label") -> list[Problem]:
        """Shape/spacing agreement of the image and one label map (spacing None: a PNG, no own spacing)."""
        if tuple(lab_shape) != tuple(img_shape):
            return [Problem.error(
                "shape", f"{what} is {fmt_shape(lab_shape)} voxels but the image is {fmt_shape(img_shape)}: "
                f"the {what} must be drawn on this image's grid (wrong pairing, cropped or resampled {what}?)",
                lab_file, ref.case_id)]
        if lab_spacing is not None and img_spacing is not None and len(lab_spacing) == len(img_spacing):
            diff = max(abs(a - b) for a, b in zip(lab_spacing, img_spacing))
            if diff > SPACING_TOL_MM:
                return [Problem.error(
                    "spacing", f"{what} spacing {fmt_spacing(lab_spacing)} differs from the image's "
                    f"{fmt_spacing(img_spacing)}: fix the {what} header (copy the image geometry) or re-export",
                    lab_file, ref.case_id)]
        return []

    def _header_geometry(self, ref: CaseRef, ih: Header, lh: Header, what: str = "label") -> list[Problem]:
        if lh.spacing is None:  # PNG: compare with the image's stored grid
            if lh.native_shape != ih.native_shape:
                return [Problem.error(
                    "shape", f"{what} PNG is {fmt_shape(lh.native_shape)} pixels but the image is "
                    f"{fmt_shape(ih.native_shape)}: the PNG must have the image's rows and columns",
                    lh.path, ref.case_id)]
            return []
        return self.geometry_problems(ref, ih.shape, ih.spacing, lh.shape, lh.spacing, lh.path, what)

    def _map(self, ref: CaseRef, raw: np.ndarray, path: Path | str, lut_path: Path
             ) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
        return map_labels(raw, self.label_lut(ref, lut_path), path, self.class_names, ref.case_id)

    def content_problems(self, ref: CaseRef, d: Decoded) -> tuple[np.ndarray | None, list[Problem]]:
        """Finite HU, label values within the declared classes, empty masks (and observers' values).
        Returns the mapped label too (observers' mapped masks go to ``d.observer_labels``)."""
        probs: list[Problem] = []
        if d.image.dtype.kind == "f":
            bad = int(d.image.size - np.count_nonzero(np.isfinite(d.image)))
            if bad:
                probs.append(Problem.error(
                    "finite", f"image has {bad} NaN/inf voxels: re-export it (NaN usually marks outside the "
                    "reconstruction field of view; replace with -1024 HU)", ref.image[0], ref.case_id))
        label = None
        if d.raw_label is not None:
            lab_file = ref.label[0] if len(ref.label) == 1 else ref.label[0].parent
            label, per_class, lp = self._map(ref, d.raw_label, lab_file, ref.label[0])
            probs += lp
            if per_class is not None and per_class[1:].sum() == 0:
                probs.append(Problem.warning(
                    "empty_mask", f"label has no voxel of any foreground class ({', '.join(self.class_names[1:])})"
                    ": fine for a negative case, otherwise the mask is missing its drawing", lab_file, ref.case_id))
        for name, (raw, _sp) in d.observers.items():
            path = ref.observers[name]
            mapped, _, op = self._map(ref, raw, path, path)
            probs += op
            if mapped is not None:
                d.observer_labels[name] = mapped
        return label, probs

    def check(self, ref: CaseRef, decode: bool = True) -> list[Problem]:
        """All per-case checks: readable files, geometry from headers, then (``decode``) content."""
        try:
            ih, lh = self.headers(ref)
        except ConfigError as e:
            return [Problem.error("readable", str(e), getattr(e, "path", ""), ref.case_id)]
        probs = self.dimension_problems(ref, ih.shape)
        if lh is not None:
            probs += self._header_geometry(ref, ih, lh)
        for name, path in ref.observers.items():
            try:
                probs += self._header_geometry(ref, ih, read_header(path), f"observer '{name}' mask")
            except ConfigError as e:
                probs.append(Problem.error("readable", str(e), getattr(e, "path", path), ref.case_id))
        if not decode or any(p.severity == "error" for p in probs):
            return probs
        try:
            d = self.decode(ref)
        except ConfigError as e:
            return probs + [Problem.error("readable", str(e), getattr(e, "path", ""), ref.case_id)]
        _, cp = self.content_problems(ref, d)
        return probs + cp

    def load(self, ref: CaseRef) -> Case:
        """Decode one case into a :class:`Case` (LPS arrays, float32 HU, mapped label, spacing in mm; with
        ``observers_in_meta`` also the observers' masks in ``meta["observers"]``). Raises :class:`ConfigError`
        for geometry mismatches, undeclared label values or NaN/inf HU."""
        return self._load(ref, self.observers_in_meta)

    def observer_masks(self, ref: CaseRef) -> dict[str, np.ndarray]:
        """The other annotators' masks of ``ref`` (observer name -> label map in LPS, mapped like the label)."""
        if not ref.observers:
            return {}
        return self._load(ref, True).meta["observers"]

    def _load(self, ref: CaseRef, observers: bool) -> Case:
        d = self.decode(ref, observers=observers)
        probs = self.dimension_problems(ref, d.image.shape)
        if d.raw_label is not None:
            lab_file = ref.label[0] if len(ref.label) == 1 else ref.label[0].parent
            probs += self.geometry_problems(ref, d.image.shape, d.spacing, d.raw_label.shape, d.label_spacing,
                                            lab_file)
        for name, (raw, sp) in d.observers.items():
            probs += self.geometry_problems(ref, d.image.shape, d.spacing, raw.shape, sp, ref.observers[name],
                                            f"observer '{name}' mask")
        label = None
        if not probs:
            label, cp = self.content_problems(ref, d)
            probs += cp
        errors = [p for p in probs if p.severity == "error"]
        if errors:
            raise ConfigError(f"case {ref.case_id} ({self.name}): " + "; ".join(
                f"{p.file + ': ' if p.file else ''}{p.message}" for p in errors)
                + " (run verify_dataset for a report over the whole data set)")
        meta = {"source": self.name, **ref.meta}
        files = ref.files
        if observers and ref.observers:
            meta["observers"] = dict(d.observer_labels)
            files = (*files, *ref.observers.values())
        return Case(ref.case_id, ref.patient_id, d.image, label, d.spacing, meta, files)

    def layout_problems(self, refs: Sequence[CaseRef]) -> list[Problem]:
        """Data-set level problems: duplicate case ids plus what :meth:`scan` found while pairing."""
        probs = list(self.scan_problems)
        seen: dict[str, CaseRef] = {}
        for ref in refs:
            if ref.case_id in seen:
                probs.append(Problem.error(
                    "duplicate_id", f"case id {ref.case_id!r} is used twice ({seen[ref.case_id].image[0].name} and "
                    f"{ref.image[0].name}): keep one file per case", ref.image[0], ref.case_id))
            else:
                seen[ref.case_id] = ref
        return probs

    def load_all(self) -> list[Case]:
        """Every case :meth:`scan` finds, decoded (convenience for small data sets)."""
        return [self.load(ref) for ref in self.scan()]


def build_reader(name: str, root: str | Path, **params: Any) -> Reader:
    """The reader called ``name`` for data under ``root``; unknown parameters raise :class:`ConfigError`
    listing the accepted ones."""
    cls = READERS.get(name)
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p not in ("self", "root")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset reader '{name}' does not take parameter(s) {', '.join(unknown)}; it accepts: "
                          f"{', '.join(accepted) or '(none)'}")
    return cls(root, **params)
