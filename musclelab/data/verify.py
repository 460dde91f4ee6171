"""Integrity checks of a data set before any training touches it.

Why: a mis-paired, truncated or mislabelled case does not crash training, it silently teaches the model the
wrong thing (a truncated NIfTI reads as zeros, a mask of another patient still has the right shape most of
the time, a label value 3 in a 2-class set becomes a third class or is clipped). ``verify_dataset`` lists
every such problem at once, with the file and the fix, instead of failing on the first.

Checks: image/label pairs exist (missing mask: error; orphan mask: warning), duplicate case ids, readable
files (corrupt/truncated: error naming the file), image vs label shape and spacing (from headers; tolerance
1e-3 mm), and with ``decode=True`` (default) the pixel content: NaN/inf HU, label values within the declared
classes, empty masks (warning). Header checks read no pixels (SimpleITK ``ReadImageInformation``, PNG
headers, the gzip size trailer for NIfTI truncation); only the content checks decode.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from musclelab.data.readers.base import Reader
from musclelab.data.readers.problems import Problem
from musclelab.errors import ConfigError

__all__ = ["Problem", "VerifyReport", "verify_dataset"]


@dataclass
class VerifyReport:
    """Problems found in a data set (see :class:`~musclelab.data.readers.problems.Problem`).

    ok: no error (warnings allowed). n_cases: cases scanned. root: data root (file paths are shown
    relative to it)."""

    problems: list[Problem] = field(default_factory=list)
    n_cases: int = 0
    root: Path | None = None
    reader: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_check(self, check: str) -> list[Problem]:
        """Problems of one check (``missing_label``, ``shape``, ...)."""
        return [p for p in self.problems if p.check == check]

    def _rel(self, file: str) -> str:
        if not file or self.root is None:
            return file
        try:
            return str(Path(file).relative_to(self.root))
        except ValueError:
            return file

    def summary(self) -> str:
        return (f"{self.reader or 'dataset'} at {self.root}: {self.n_cases} cases, {len(self.errors)} errors, "
                f"{len(self.warnings)} warnings")

    def table(self, width: int = 140) -> str:
        """A plain-text table (severity, check, case, file, message), errors first, then a summary line."""
        head = ("severity", "check", "case", "file", "message")
        rows = [(p.severity, p.check, p.case_id, self._rel(p.file), p.message)
                for p in sorted(self.problems, key=lambda p: (p.severity != "error", p.check, p.case_id, p.file))]
        if not rows:
            return self.summary() + ": no problems"
        w = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(4)]
        w = [min(x, cap) for x, cap in zip(w, (8, 16, 24, 48))]
        msg_w = max(30, width - sum(w) - 8)

        def fmt(r: Sequence[str]) -> list[str]:
            cells = [textwrap.wrap(c, w[i]) or [""] if i < 4 else textwrap.wrap(c, msg_w) or [""]
                     for i, c in enumerate(r)]
            n = max(len(c) for c in cells)
            out = []
            for k in range(n):
                parts = [(cells[i][k] if k < len(cells[i]) else "").ljust(w[i]) for i in range(4)]
                parts.append(cells[4][k] if k < len(cells[4]) else "")
                out.append("  ".join(parts).rstrip())
            return out

        lines = fmt(head)
        lines.append("  ".join("-" * x for x in w) + "  " + "-" * min(msg_w, 40))
        for r in rows:
            lines += fmt(r)
        lines.append(self.summary())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def raise_if_errors(self) -> None:
        """Raise :class:`ConfigError` with the table if there is any error."""
        if not self.ok:
            raise ConfigError(f"data set check failed:\n{self.table()}")


def verify_dataset(reader: Reader, decode: bool = True,
                   progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Check every case ``reader`` finds and return a :class:`VerifyReport` (never raises for bad data).

    decode: also decode pixels (NaN/inf HU, label values, empty masks, truncated NIfTI/DICOM pixel data);
    ``False`` reads headers only. progress: optional ``callback(done, total)``.
    """
    report = VerifyReport(root=reader.root, reader=reader.name)
    try:
        refs = reader.scan()
    except ConfigError as e:
        report.problems.append(Problem.error("scan", str(e), str(reader.root)))
        return report
    report.n_cases = len(refs)
    report.problems += reader.layout_problems(refs)
    for i, ref in enumerate(refs):
        try:
            report.problems += reader.check(ref, decode=decode)
        except ConfigError as e:  # a reader-specific check that raised instead of reporting
            report.problems.append(Problem.error("readable", str(e), getattr(e, "path", "") or
                                                 (str(ref.image[0]) if ref.image else ""), ref.case_id))
        if progress is not None:
            progress(i + 1, len(refs))
    return report
