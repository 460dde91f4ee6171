"""Study reports: tables, figures and a Markdown write-up computed from finished run directories.

The report layer reads run outputs from disk only (``run_status.json``, ``config_resolved.yaml``,
``test_cases.csv``, ``observers.csv``, ``multirun.yaml``), so a study trained on another machine can be
reported anywhere; it never imports torch or Lightning.

* :data:`REPORTS` — kind name → :class:`ReportKind` (how to recognise a study of that kind, how to write
  its report): ``"mcsweeney"`` (init × training-set size vs human observers, McSweeney et al. 2022),
  ``"architectures"`` (Yoon et al. 2024 Table 3) and ``"chains"`` (Yoon et al. 2024 sequential transfer);
* :func:`write_report` — write the report of a study directory, the kind given or auto-detected;
* :func:`main_report` — ``musclelab report <dir> [--out DIR] [--kind KIND]``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from musclelab.errors import ConfigError

from . import architectures, chains, kawamoto, kim, mcsweeney
from .runs import find_run_dirs

__all__ = ["REPORTS", "ReportKind", "detect_kind", "main_report", "write_report"]


@dataclass(frozen=True)
class ReportKind:
    """One kind of study report."""

    name: str
    description: str
    detect: Callable[[Path], bool]  # study dir -> whether its runs have this kind's layout
    write: Callable[[Path, Path | None], Path]  # (study dir, out dir or None) -> report.md


REPORTS: dict[str, ReportKind] = {
    mcsweeney.KIND: ReportKind(
        name=mcsweeney.KIND,
        description="init × training-set size vs human observers (configs with init.name and data.n_train)",
        # real configs always carry init.name (scratch) and data.n_train (null), so a plain multirun over
        # model would look like McSweeney; architectures.detect requires no init / n_train sweep
        detect=lambda study: mcsweeney.detect(study) and not architectures.detect(study),
        write=lambda study, out: architectures.add_site_transfer_findings(study, mcsweeney.write(study, out)),
    ),
    architectures.KIND: ReportKind(
        name=architectures.KIND,
        description="architectures compared, Yoon et al. 2024 Table 3 (complete runs differing in model.name, "
                    "no init / data.n_train sweep)",
        detect=architectures.detect,
        write=lambda study, out: architectures.write(study, out),
    ),
    chains.KIND: ReportKind(
        name=chains.KIND,
        description="sequential transfer chains, Yoon et al. 2024 (forgetting_matrix.csv from musclelab transfer)",
        detect=chains.detect,
        write=lambda study, out: chains.write(study, out),
    ),
}

# Kawamoto runs also carry init.name and data.n_train, so this kind is tried first
REPORTS = {
    kim.KIND: ReportKind(
        name=kim.KIND,
        description="3D thigh-muscle volumes, Kim et al. 2024 (complete runs with data.spatial_dims=3 and "
                    "volume_agreement.csv)",
        detect=kim.detect,
        write=lambda study, out: kim.write(study, out),
    ),
    kawamoto.KIND: ReportKind(
        name=kawamoto.KIND,
        description="label subsets trained alone vs with the erector spinae, Kawamoto et al. 2024 (runs with "
                    "loss.name=kawamoto and at least two data.labels subsets)",
        detect=kawamoto.detect,
        write=lambda study, out: kawamoto.write(study, out),
    ),
    **REPORTS,
}


def _check_study_dir(study_dir: Path) -> None:
    if not study_dir.is_dir():
        raise ConfigError(f"study directory {study_dir} does not exist: give the multirun directory of a study")
    if not find_run_dirs(study_dir) and not chains.detect(study_dir):  # chain outputs have no run_status.json
        raise ConfigError(f"no run_status.json under {study_dir}: give the multirun directory of a study")


def detect_kind(study_dir: str | Path) -> str:
    """The first kind in :data:`REPORTS` whose layout the study's runs match.

    Raises:
        ConfigError: no runs under ``study_dir``, or no report kind recognises them.
    """
    study_dir = Path(study_dir)
    _check_study_dir(study_dir)
    for name, kind in REPORTS.items():
        if kind.detect(study_dir):
            return name
    known = "; ".join(f"{k.name}: {k.description}" for k in REPORTS.values())
    raise ConfigError(f"the runs under {study_dir} match no report kind ({known})")


def write_report(study_dir: str | Path, out_dir: str | Path | None = None, kind: str = "auto",
                 wandb: bool = True) -> Path:
    """Write the report of the study in ``study_dir`` to ``out_dir`` (default ``<study_dir>/report``).

    Args:
        study_dir: the multirun directory of a study (run directories are found recursively).
        out_dir: where to write; created if needed.
        kind: a key of :data:`REPORTS`, or ``"auto"`` to detect it from the runs' configs.
        wandb: when the study's runs used ``logger=wandb``, also send the report to W&B in their group
            (:mod:`musclelab.report.wandb_upload`; offline-safe).

    Returns:
        The path of the written ``report.md``.

    Raises:
        ConfigError: no runs, an unknown ``kind``, or a study no kind recognises.
    """
    study_dir = Path(study_dir)
    if kind == "auto":
        kind = detect_kind(study_dir)
    elif kind not in REPORTS:
        raise ConfigError(f"unknown report kind {kind!r}; known: auto, {', '.join(REPORTS)}")
    else:
        _check_study_dir(study_dir)
    path = REPORTS[kind].write(study_dir, Path(out_dir) if out_dir is not None else None)
    if wandb:
        from .wandb_upload import upload_report

        upload_report(path, study_dir, kind)
    return path


def _print_summary(report_md: Path) -> None:
    """A short rich table of ``summary.csv`` next to ``report_md`` (McSweeney layout)."""
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    path = report_md.parent / "summary.csv"
    if not path.exists():
        return
    s = pd.read_csv(path)
    if not {"init", "n_train", "dsc_mean"} <= set(s.columns):
        return
    table = Table(title="mean [95% CI] per group; runs = complete/expected")
    for col in ("init", "n", "runs", "cases", "DSC", "RMS-DTA (cm)"):
        table.add_column(col, justify="left" if col == "init" else "right", no_wrap=col in ("init", "n"))

    def ci(r: pd.Series, m: str) -> str:
        return mcsweeney._mean_ci_text(r[f"{m}_mean"], r[f"{m}_ci_low"], r[f"{m}_ci_high"], 3)

    for _, r in s.iterrows():
        runs = f"{r['n_runs']}/{r['n_runs'] + r.get('n_missing', 0)}"
        table.add_row(str(r["init"]), str(r["n_train"]), runs, str(r["n_cases"]), ci(r, "dsc"),
                      ci(r, "rms_dta_cm"))
    Console().print(table)


def main_report(args: list[str]) -> None:
    """``musclelab report <dir> [--out DIR] [--kind KIND]``: write a study's report and print where it is."""
    p = argparse.ArgumentParser(
        prog="musclelab report",
        description="Tables, figures and report.md from the finished runs of a study (a multirun directory).")
    p.add_argument("study_dir", type=Path, help="the study's multirun directory (searched recursively for runs)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <study_dir>/report)")
    p.add_argument("--kind", default="auto", choices=["auto", *REPORTS], help="report kind (default: detect)")
    p.add_argument("--no-wandb", action="store_true",
                   help="do not send the report to W&B even when the runs used logger=wandb")
    ns = p.parse_args(args)
    try:
        path = write_report(ns.study_dir, ns.out, kind=ns.kind, wandb=not ns.no_wandb)
    except ConfigError as err:
        print(f"musclelab report: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path)
    _print_summary(path)
