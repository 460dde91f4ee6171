"""The "findings" section every study report carries: each paper claim, what this study measured, and whether
the direction agrees.

A :class:`Finding` is computed from run outputs by a report kind (McSweeney, chains, architectures, ...) —
never written by hand — and this module only holds, judges and renders them:

* :func:`direction` — does a measured difference point the way the paper says (``True``/``False``), or can it
  not be told (``None``: nothing measured, NaN)?
* :func:`not_measurable` — a finding for a claim the study's runs cannot test, with the reason;
* :func:`findings_markdown` — the ``## Findings`` section (one bullet list, then a table);
* :func:`findings_frame` / :func:`write_findings` — the same as a table (``findings.csv``), for W&B and notebooks.

No torch import; plain dataclasses and pandas.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from musclelab.io import atomic_write_text

__all__ = ["AGREES", "DISAGREES", "NOT_MEASURABLE", "Finding", "direction", "findings_frame",
           "findings_markdown", "format_p", "not_measurable", "write_findings"]

AGREES = "agrees"
DISAGREES = "disagrees"
NOT_MEASURABLE = "not measurable"
FINDINGS_FILE = "findings.csv"
COLUMNS = ["source", "claim", "measured", "test", "statistic", "p_value", "verdict", "note"]


@dataclass(frozen=True)
class Finding:
    """One paper claim checked against a study's runs.

    Attributes:
        claim: the paper's claim in one line (e.g. "pretrained inits beat scratch at the smallest n").
        measured: what the runs measured, with numbers and units (e.g. "DSC 0.81 vs 0.74 at n=5").
        agrees: whether the measured direction is the paper's — ``True``/``False``; ``None`` when the runs
            cannot tell (missing groups, too few cases); then ``note`` says why.
        source: where the claim is in the paper (e.g. "McSweeney 2022, Fig. 3").
        test: the statistical test used, if any (e.g. "Mann–Whitney U, two-sided").
        statistic: its statistic (``None`` when no test applies).
        p_value: its p-value (``None`` when no test applies).
        note: anything a reader needs to judge the finding (margin used, why it is not measurable, ...).
    """

    claim: str
    measured: str
    agrees: bool | None
    source: str = ""
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        """``"agrees"``, ``"disagrees"`` or ``"not measurable"``."""
        if self.agrees is None:
            return NOT_MEASURABLE
        return AGREES if self.agrees else DISAGREES


def direction(estimate: float | None, expected_sign: int, margin: float = 0.0) -> bool | None:
    """Whether ``estimate`` (a measured difference) has the paper's sign, beyond ``margin``.

    Args:
        estimate: e.g. mean DSC(pretrained) − mean DSC(scratch); ``None``/NaN means nothing was measured.
        expected_sign: +1 if the paper says the difference is positive, −1 if negative, 0 if "no difference"
            (then it agrees when ``|estimate| <= margin``).
        margin: how far past zero the estimate must be (in the estimate's units) to count as agreeing.

    Returns:
        ``True`` / ``False``, or ``None`` when ``estimate`` is missing.
    """
    if expected_sign not in (-1, 0, 1):
        raise ValueError(f"expected_sign must be -1, 0 or +1, got {expected_sign}")
    if estimate is None or (isinstance(estimate, float) and math.isnan(estimate)):
        return None
    if expected_sign == 0:
        return abs(estimate) <= margin
    return expected_sign * estimate > margin


def not_measurable(claim: str, why: str, source: str = "") -> Finding:
    """A finding the runs cannot test, with the reason (e.g. "no imagenet runs in this study")."""
    return Finding(claim=claim, measured="not measured", agrees=None, source=source, note=why)


def format_p(p: float | None) -> str:
    """A p-value as text: ``–`` when absent, ``<0.001`` below 0.001, else three significant digits."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _fmt_stat(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "–"
    return f"{s:.4g}"


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """One row per finding with :data:`COLUMNS` (``verdict`` as text)."""
    rows = [{**asdict(f), "verdict": f.verdict} for f in findings]
    return pd.DataFrame(rows, columns=[*COLUMNS]) if rows else pd.DataFrame(columns=COLUMNS)


def findings_markdown(findings: Sequence[Finding], title: str = "Findings", level: int = 2,
                      intro: str = "") -> str:
    """The report's findings section as Markdown: a heading, one bullet per claim, then a summary table.

    Each bullet reads ``**agrees** — claim (source): measured; test statistic, p. note``.
    """
    from .markdown import md_table

    lines = [f"{'#' * level} {title}", ""]
    if intro:
        lines += [intro, ""]
    if not findings:
        return "\n".join([*lines, "No findings could be computed from these runs.", ""])
    counts = {v: sum(f.verdict == v for f in findings) for v in (AGREES, DISAGREES, NOT_MEASURABLE)}
    lines += [f"{counts[AGREES]} of {len(findings)} claims agree in direction, {counts[DISAGREES]} disagree, "
              f"{counts[NOT_MEASURABLE]} cannot be measured from these runs.", ""]
    for f in findings:
        src = f" ({f.source})" if f.source else ""
        test = ""
        if f.test:
            test = f"; {f.test}"
            if f.statistic is not None:
                test += f" = {_fmt_stat(f.statistic)}"
            if f.p_value is not None:
                test += f", p = {format_p(f.p_value)}"
        note = f" {f.note}" if f.note else ""
        lines.append(f"- **{f.verdict}** — {f.claim}{src}: {f.measured}{test}.{note}")
    table = pd.DataFrame({
        "claim": [f.claim for f in findings],
        "statistic": [_fmt_stat(f.statistic) for f in findings],
        "p": [format_p(f.p_value) for f in findings],
        "direction": [f.verdict for f in findings],
    })
    lines += ["", md_table(table), ""]
    return "\n".join(lines)


def write_findings(findings: Sequence[Finding], out_dir: str | Path) -> Path:
    """Write ``findings.csv`` (:func:`findings_frame`) into ``out_dir`` atomically; returns its path."""
    path = Path(out_dir) / FINDINGS_FILE
    atomic_write_text(path, findings_frame(findings).to_csv(index=False))
    return path
