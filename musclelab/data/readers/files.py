"""File types of the data-set readers: compound extensions, the format's human name, natural sorting and
folder listings (hidden files skipped)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

_KINDS: dict[str, str] = {
    ".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage",
    ".mhd": "MetaImage", ".dcm": "DICOM", ".png": "PNG",
}
#: extensions readers accept for volumes/slices with geometry (PNG is accepted for masks only)
IMAGE_EXTS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
LABEL_EXTS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png")


def split_ext(path: str | Path) -> tuple[str, str]:
    """``(stem, extension)`` with compound extensions kept whole: ``img01.nii.gz`` -> ``("img01", ".nii.gz")``.
    The extension is lower-cased; an unknown one is returned as Python's last suffix."""
    name = Path(path).name
    low = name.lower()
    for ext in sorted(_KINDS, key=len, reverse=True):
        if low.endswith(ext):
            return name[: -len(ext)], ext
    suffix = Path(name).suffix
    return (name[: -len(suffix)] if suffix else name), suffix.lower()


def file_kind(path: str | Path) -> str:
    """Human name of a file's format from its extension (``NIfTI``, ``DICOM``, ``PNG``, ...)."""
    return _KINDS.get(split_ext(path)[1], "DICOM" if not split_ext(path)[1] else "image")


def natural_key(path: str | Path) -> tuple:
    """Sort key that orders embedded numbers numerically (``img2`` before ``img10``)."""
    parts = re.split(r"(\d+)", Path(path).name)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts)


def list_files(folder: Path, exts: Sequence[str] | None = None, recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (optionally recursive) with one of ``exts``, naturally sorted. Hidden files and
    folders (``.name``, e.g. macOS ``._x.nii.gz`` resource forks shipped in some MSD tarballs) are skipped."""
    if not folder.is_dir():
        return []
    it = folder.rglob("*") if recursive else folder.iterdir()
    out = []
    for p in it:
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not p.is_file():
            continue
        if exts is not None and split_ext(p)[1] not in exts:
            continue
        out.append(p)
    return sorted(out, key=lambda p: (natural_key(p.parent), natural_key(p)))
