"""What goes wrong with data files, as values: :class:`Problem` (one finding of a check) and the one-line
errors for missing and unreadable files; the short formatting of shapes, spacings and library error texts
that the messages share."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from musclelab.data.readers.files import file_kind
from musclelab.errors import ConfigError


def missing_file_error(path: str | Path) -> ConfigError:
    """ConfigError for a file that is not there, with ``.path`` set (for reports)."""
    err = ConfigError(f"file {path} does not exist")
    err.path = Path(path)  # type: ignore[attr-defined]
    return err


class UnreadableFileError(ConfigError):
    """A file that exists but cannot be decoded (truncated, corrupt, wrong format). ``path`` names it."""

    def __init__(self, path: str | Path, kind: str | None = None, reason: str = "") -> None:
        self.path = Path(path)
        kind = kind or file_kind(path)
        msg = f"file {self.path} could not be read as {kind} (truncated or corrupt?): re-export or remove it"
        if reason:
            msg += f" [{reason}]"
        super().__init__(msg)


def short_reason(err: BaseException) -> str:
    """One line out of an ITK/zlib exception text (ITK's are multi-line with C++ source locations)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "/"))] or lines or [type(err).__name__]
    text = useful[-1]
    text = re.sub(r"^(sitk::)?ERROR:\s*", "", text)
    text = re.sub(r"^ITK ERROR:\s*\S+:\s*", "", text)
    return text[:200]


@dataclass(frozen=True)
class Problem:
    """One finding of a data check. severity: ``error`` (the data set must not be used as is) or
    ``warning``; check: short name of the check (``missing_label``, ``shape``, ...); file: the file to look
    at; message: what is wrong and how to fix it."""

    severity: str
    check: str
    message: str
    file: str = ""
    case_id: str = ""

    @staticmethod
    def error(check: str, message: str, file: str | Path = "", case_id: str = "") -> "Problem":
        return Problem("error", check, message, str(file) if file else "", case_id)

    @staticmethod
    def warning(check: str, message: str, file: str | Path = "", case_id: str = "") -> "Problem":
        return Problem("warning", check, message, str(file) if file else "", case_id)


def fmt_shape(shape: Sequence[int]) -> str:
    """``512x512x80``."""
    return "x".join(str(int(s)) for s in shape)


def fmt_spacing(sp: Sequence[float]) -> str:
    """``(0.7, 0.7, 5) mm``."""
    return "(" + ", ".join(f"{s:.4g}" for s in sp) + ") mm"
