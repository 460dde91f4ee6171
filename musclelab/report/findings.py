"""The "findings" section every study report carries: each paper claim, the test that checks it, and the verdict.

A :class:`Finding` is computed from run outputs by a report kind (McSweeney, chains, architectures, Kawamoto,
Kim) — never written by hand — through :func:`judge`, which applies one rule to every claim: the measured
**direction** × its **significance** × the paper's **kind of claim**:

* ``difference`` (the paper claims A is better than B, or a significant change): **agrees** needs the paper's
  direction *and* p < α; the right direction with p ≥ α is *same direction, not significant*; the opposite
  direction is *disagrees* when p < α, else *opposite direction, not significant*;
* ``equivalence`` (a plateau, "similar Dice", "hardly changes"): a TOST with a stated margin; **agrees** when
  equivalence is shown (p < α), *disagrees* when the difference itself is significant, else *inconclusive*;
* ``non-inferiority`` ("similar or better", "reaches at least the paper's value"): a one-sided test with a
  stated margin; **agrees** when shown, *disagrees* when the estimate is past the margin, else *inconclusive*;
* ``descriptive`` (no test applies, e.g. one number per model): *same* / *opposite direction, untested* —
  never "agrees".

α is :data:`ALPHA` (stated in every findings section). :func:`findings_frame` adds Holm's step-down adjustment
over all tests of a report (``p_holm``), and the section states how many tests there are; verdicts use the
unadjusted p of each claim (each claim is its own question), the Holm column shows which survive the family.

No torch import; plain dataclasses and pandas.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from musclelab.io import atomic_write_text
from musclelab.metrics.statistics import ClaimTest, holm

__all__ = ["AGREES", "ALPHA", "DISAGREES", "INCONCLUSIVE", "NOT_MEASURABLE", "OPPOSITE_NS", "SAME_NS",
           "UNTESTED_OPPOSITE", "UNTESTED_SAME", "VERDICTS", "Finding", "findings_frame", "findings_markdown",
           "format_p", "judge", "not_measurable", "rule_text", "judged", "untested", "with_holm",
           "write_findings", "agree_rate"]

ALPHA = 0.05  # the significance level of every verdict (two-sided tests; equivalence: 1 − 2α CI inside ±margin)
AGREES = "agrees"
SAME_NS = "same direction, not significant"
OPPOSITE_NS = "opposite direction, not significant"
DISAGREES = "disagrees"
INCONCLUSIVE = "inconclusive"
UNTESTED_SAME = "same direction, untested"
UNTESTED_OPPOSITE = "opposite direction, untested"
NOT_MEASURABLE = "not measurable"
VERDICTS = (AGREES, SAME_NS, OPPOSITE_NS, DISAGREES, INCONCLUSIVE, UNTESTED_SAME, UNTESTED_OPPOSITE, NOT_MEASURABLE)
KINDS = ("difference", "equivalence", "non-inferiority", "descriptive")
FINDINGS_FILE = "findings.csv"
COLUMNS = ["source", "paper", "claim", "kind", "test", "unit", "n", "n_failed", "statistic", "p_value", "p_holm",
           "alpha", "verdict", "measured", "note"]


@dataclass(frozen=True)
class Finding:
    """One paper claim checked against a study's runs.

    Attributes:
        claim: the claim as this study tests it, in one line (e.g. "at the smallest n, coco beats scratch in DSC").
        measured: what the runs measured, with numbers and units (e.g. "DSC 0.81 vs 0.74 at n=5").
        verdict: one of :data:`VERDICTS` (from :func:`judge`).
        source: where the claim is in the paper (e.g. "McSweeney 2022, Fig. 3").
        paper: the paper's own wording of the claim (short quote), where it has one.
        kind: ``difference``, ``equivalence``, ``non-inferiority`` or ``descriptive``.
        test: the statistical test used, if any; ``unit``: its unit of analysis; ``n``: number of units;
        n_failed: units that were failures, scored as such (never dropped).
        statistic, p_value: the test's statistic and p-value (``None`` when no test applies).
        note: anything a reader needs to judge the finding (margin used, why it is not measurable, ...).
    """

    claim: str
    measured: str
    verdict: str
    source: str = ""
    paper: str = ""
    kind: str = "difference"
    test: str | None = None
    unit: str = ""
    n: int | None = None
    n_failed: int | None = None
    statistic: float | None = None
    p_value: float | None = None
    alpha: float = ALPHA
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def agrees(self) -> bool | None:
        """``True`` when the verdict is "agrees", ``None`` when not measurable, else ``False``."""
        if self.verdict == NOT_MEASURABLE:
            return None
        return self.verdict == AGREES


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def judge(kind: str, estimate: float | None, expected_sign: int = +1, p: float | None = None,
          alpha: float = ALPHA, margin: float | None = None, p_difference: float | None = None) -> str:
    """The verdict of a claim (see the module docstring).

    Args:
        kind: ``difference``, ``equivalence``, ``non-inferiority`` or ``descriptive``.
        estimate: the measured difference, signed so that ``expected_sign`` is the paper's direction
            (NaN/None: nothing measured → "not measurable").
        expected_sign: +1 if the paper says the difference is positive, −1 if negative.
        p: the claim's p-value (difference: two-sided; equivalence: TOST; non-inferiority: one-sided).
            ``None`` for a difference claim → judged descriptively ("untested").
        margin: the equivalence / non-inferiority margin (in the estimate's units).
        p_difference: for equivalence, the two-sided p of the difference itself (a significant difference
            disagrees with a claim of no difference).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if expected_sign not in (-1, 1):
        raise ValueError(f"expected_sign must be -1 or +1, got {expected_sign}")
    if _missing(estimate):
        return NOT_MEASURABLE
    right = expected_sign * float(estimate) > 0
    if kind == "descriptive" or (kind == "difference" and _missing(p)):
        return UNTESTED_SAME if right else UNTESTED_OPPOSITE
    if _missing(p):
        return NOT_MEASURABLE
    if kind == "difference":
        if p < alpha:
            return AGREES if right else DISAGREES
        return SAME_NS if right else OPPOSITE_NS
    if p < alpha:
        return AGREES
    if kind == "equivalence":
        return DISAGREES if not _missing(p_difference) and p_difference < alpha else INCONCLUSIVE
    # non-inferiority: past the margin in the wrong direction disagrees
    return DISAGREES if margin is not None and expected_sign * float(estimate) < -margin else INCONCLUSIVE


def judged(claim: str, measured: str, result: ClaimTest, kind: str = "difference", expected_sign: int = +1,
           source: str = "", paper: str = "", note: str = "", alpha: float = ALPHA,
           p_difference: float | None = None) -> Finding:
    """A finding judged by :func:`judge` from a :class:`~musclelab.metrics.statistics.ClaimTest`
    (``result.estimate`` signed as the paper's difference)."""
    p = None if _missing(result.p_value) else float(result.p_value)
    verdict = judge(kind, result.estimate, expected_sign, p, alpha, result.margin, p_difference)
    if kind == "difference" and p is None and not _missing(result.estimate):
        note = (note + " " if note else "") + f"Too few units for a test (n = {result.n})."
    return Finding(claim=claim, measured=measured, verdict=verdict, source=source, paper=paper, kind=kind,
                   test=result.test, unit=result.unit, n=int(result.n), n_failed=int(result.n_failed),
                   statistic=None if _missing(result.statistic) else float(result.statistic), p_value=p,
                   alpha=alpha, note=note)


def untested(claim: str, measured: str, estimate: float | None, expected_sign: int = +1, source: str = "",
             paper: str = "", note: str = "", unit: str = "", n: int | None = None) -> Finding:
    """A descriptive finding (no test applies): "same/opposite direction, untested", never "agrees"."""
    return Finding(claim=claim, measured=measured, verdict=judge("descriptive", estimate, expected_sign),
                   source=source, paper=paper, kind="descriptive", unit=unit, n=n, note=note)


def not_measurable(claim: str, why: str, source: str = "", paper: str = "") -> Finding:
    """A finding the runs cannot test, with the reason (e.g. "no imagenet runs in this study")."""
    return Finding(claim=claim, measured="not measured", verdict=NOT_MEASURABLE, source=source, paper=paper,
                   note=why)


def format_p(p: float | None) -> str:
    """A p-value as text: ``–`` when absent, ``<0.001`` below 0.001, else three significant digits."""
    if _missing(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _fmt_stat(s: float | None) -> str:
    if _missing(s):
        return "–"
    return f"{s:.4g}"


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """One row per finding with :data:`COLUMNS`; ``p_holm`` = Holm's adjustment over the findings' p-values."""
    rows = [asdict(f) for f in findings]
    frame = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "p_holm"]) if rows \
        else pd.DataFrame(columns=[c for c in COLUMNS if c != "p_holm"])
    frame.insert(frame.columns.get_loc("p_value") + 1, "p_holm",
                 holm(pd.to_numeric(frame["p_value"], errors="coerce").to_numpy(float)) if rows else [])
    return frame[COLUMNS]


def with_holm(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a findings table, possibly two reports' rows together) with ``p_holm`` recomputed over all."""
    out = frame.copy()
    out["p_holm"] = holm(pd.to_numeric(out.get("p_value"), errors="coerce").to_numpy(float))
    return out


def rule_text(n_tests: int, alpha: float = ALPHA) -> str:
    """The verdict rule in one paragraph, as every findings section states it."""
    return (f"Verdicts at α = {alpha:g}: a claimed difference **agrees** only with the paper's direction and "
            f"p < {alpha:g} (two-sided); the right direction with p ≥ {alpha:g} is *{SAME_NS}*. A claimed absence "
            f"of difference (plateau, \"similar\") agrees only when an equivalence test (TOST) with the stated "
            f"margin shows it; a claimed \"similar or better\" / \"at least\" only when a one-sided "
            f"non-inferiority test with the stated margin shows it; otherwise *{INCONCLUSIVE}* (or *{DISAGREES}* "
            f"when the data contradict it). Claims no test applies to are *untested*, never \"agrees\". Failed "
            f"cases are scored, not dropped (column n failed). {n_tests} test(s) in this section; the Holm column "
            f"adjusts their p-values for the family.")


def findings_markdown(findings: Sequence[Finding], title: str = "Findings", level: int = 2,
                      intro: str = "") -> str:
    """The report's findings section as Markdown: a heading, the verdict rule, one bullet per claim, then a table
    (paper's wording, test, unit, n, statistic, p, Holm p, verdict)."""
    from .markdown import md_table

    lines = [f"{'#' * level} {title}", ""]
    if intro:
        lines += [intro, ""]
    if not findings:
        return "\n".join([*lines, "No findings could be computed from these runs.", ""])
    frame = findings_frame(findings)
    n_tests = int(pd.to_numeric(frame["p_value"], errors="coerce").notna().sum())
    lines += [rule_text(n_tests), ""]
    counts = {v: sum(f.verdict == v for f in findings) for v in VERDICTS}
    lines += [f"{len(findings)} claims: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) + ".", ""]
    for f, holm_p in zip(findings, frame["p_holm"]):
        src = f" ({f.source})" if f.source else ""
        paper = f" Paper: “{f.paper}”." if f.paper else ""
        test = ""
        if f.test:
            test = f"; {f.test}"
            if f.unit:
                test += f", unit: {f.unit}"
            if f.n is not None:
                test += f", n = {f.n}"
            if f.n_failed:
                test += f" ({f.n_failed} failed, scored)"
            if f.statistic is not None:
                test += f", statistic = {_fmt_stat(f.statistic)}"
            if f.p_value is not None:
                test += f", p = {format_p(f.p_value)} (Holm {format_p(holm_p)})"
        note = f" {f.note}" if f.note else ""
        lines.append(f"- **{f.verdict}** — {f.claim}{src}: {f.measured}{test}.{paper}{note}")
    table = pd.DataFrame({
        "claim": [f.claim for f in findings],
        "paper": [f.paper or "–" for f in findings],
        "test": [f.test or "–" for f in findings],
        "unit": [f.unit or "–" for f in findings],
        "n": ["–" if f.n is None else str(f.n) for f in findings],
        "n failed": ["–" if f.n_failed is None else str(f.n_failed) for f in findings],
        "statistic": [_fmt_stat(f.statistic) for f in findings],
        "p": [format_p(f.p_value) for f in findings],
        "Holm p": [format_p(p) for p in frame["p_holm"]],
        "verdict": [f.verdict for f in findings],
    })
    lines += ["", md_table(table), ""]
    return "\n".join(lines)


def write_findings(findings: Sequence[Finding], out_dir: str | Path) -> Path:
    """Write ``findings.csv`` (:func:`findings_frame`) into ``out_dir`` atomically; returns its path."""
    path = Path(out_dir) / FINDINGS_FILE
    atomic_write_text(path, findings_frame(findings).to_csv(index=False))
    return path


def agree_rate(findings_per_study: Sequence[Sequence[Finding]]) -> dict[str, tuple[int, int]]:
    """Claim → (studies where it agrees, studies where it was judged): the calibration count over simulations."""
    out: dict[str, list[int]] = {}
    for fs in findings_per_study:
        for f in fs:
            c = out.setdefault(f.claim, [0, 0])
            c[0] += f.verdict == AGREES
            c[1] += f.verdict != NOT_MEASURABLE
    return {k: (v[0], v[1]) for k, v in out.items()}

