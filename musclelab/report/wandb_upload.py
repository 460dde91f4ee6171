"""Send a written study report to Weights & Biases, next to the study's training runs.

Our users review studies on W&B. When a study's runs were logged with ``logger=wandb``, ``musclelab report``
calls :func:`upload_report` once, for every report kind: it opens one W&B run (``job_type="report"``) in the
same project and **group** as the training runs (the group the runs used: ``logger.group``, else the multirun
directory's name, as :func:`musclelab.train._sweep_group` sets it) and logs what the report directory holds:

* every ``*.csv`` as a ``wandb.Table`` under ``tables/<file stem>`` (summary, Dunnett tables, forgetting
  matrices, per-model tables, findings, ...);
* every ``*.png`` as a ``wandb.Image`` under ``figures/<file stem>``;
* the findings section as text (``findings`` as HTML, one line per claim, and in the run summary) and the whole
  ``report.md`` as ``report`` (HTML ``<pre>``).

Offline-safe like every W&B use here: the mode is the runs' ``logger.mode``, else ``WANDB_MODE``; with
``WANDB_MODE=offline`` everything is written under ``<report dir>/wandb/`` for a later ``wandb sync``.
Reading files only, no torch import; ``wandb`` is imported only when a report is sent.
"""
from __future__ import annotations

import html
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .findings import FINDINGS_FILE
from .runs import MISSING, config_value, find_run_dirs, load_config

__all__ = ["WandbTarget", "upload_report", "wandb_target"]


WandbTarget = dict  # where a report goes: {"project", "entity", "group", "mode"}


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = config_value(cfg, key)
    return default if value is MISSING or value is None else value


def wandb_target(study_dir: str | Path) -> WandbTarget | None:
    """The W&B project, entity, group and mode of the study's runs, or None when no run used ``logger=wandb``."""
    study_dir = Path(study_dir)
    for run_dir in find_run_dirs(study_dir):
        cfg = load_config(run_dir)
        # logger.wandb.* (one entry per logger), or logger.name=wandb in runs made before several loggers per run
        key = "logger.wandb" if isinstance(_get(cfg, "logger.wandb"), Mapping) else "logger"
        if key == "logger" and _get(cfg, "logger.name") != "wandb":
            continue
        group = _get(cfg, f"{key}.group") or run_dir.parent.name
        return WandbTarget(project=_get(cfg, f"{key}.project", "musclelab"), entity=_get(cfg, f"{key}.entity"),
                           group=group, mode=_get(cfg, f"{key}.mode") or os.environ.get("WANDB_MODE"))
    return None


def _findings_text(report_dir: Path) -> str:
    path = report_dir / FINDINGS_FILE
    if not path.exists():
        return ""
    df = pd.read_csv(path)
    return "\n".join(f"[{r.verdict}] {r.claim}: {r.measured}" for r in df.itertuples(index=False))


def upload_report(report_md: str | Path, study_dir: str | Path, kind: str,
                  target: WandbTarget | None = None) -> Path | None:
    """Log the report next to ``report_md`` to W&B when the study's runs used W&B (or ``target`` is given).

    Returns the local W&B run directory (offline: the one to ``wandb sync``), or None when nothing was sent.
    """
    target = target or wandb_target(study_dir)
    if target is None:
        return None
    import wandb

    report_md = Path(report_md)
    out = report_md.parent
    kwargs: dict[str, Any] = dict(project=target["project"], entity=target.get("entity"), group=target["group"],
                                  name=f"report-{kind}-{target['group']}", job_type="report", dir=str(out),
                                  config={"report_kind": kind, "study_dir": str(Path(study_dir).resolve())},
                                  reinit="finish_previous")
    if target.get("mode"):
        kwargs["mode"] = target["mode"]
    run = wandb.init(**kwargs)
    try:
        data: dict[str, Any] = {}
        for csv in sorted(out.glob("*.csv")):
            df = pd.read_csv(csv)
            if len(df.columns):
                data[f"tables/{csv.stem}"] = wandb.Table(dataframe=df.astype(object).where(df.notna(), None))
        for png in sorted(out.glob("*.png")):
            data[f"figures/{png.stem}"] = wandb.Image(str(png))
        findings = _findings_text(out)
        if findings:
            data["findings"] = wandb.Html(f"<pre>{html.escape(findings)}</pre>")
            run.summary["findings"] = findings
        data["report"] = wandb.Html(f"<pre>{html.escape(report_md.read_text())}</pre>")
        run.log(data)
        run_dir = Path(run.dir).parent  # <dir>/wandb/<offline-|>run-<time>-<id>/files -> the run directory
    finally:
        run.finish()
    return run_dir
