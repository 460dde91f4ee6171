"""musclelab report sends the report to W&B in the study's group when the runs used logger=wandb (offline)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from musclelab.report import write_report
from musclelab.report.wandb_upload import upload_report, wandb_target
from test_report import make_study


def _use_wandb(study: Path, group: str | None = None) -> None:
    for cfg_path in study.glob("*/config_resolved.yaml"):
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["logger"] = {"name": "wandb", "project": "musclelab-test", "entity": None, "group": group,
                         "mode": None}
        cfg_path.write_text(yaml.safe_dump(cfg))


def test_report_goes_to_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = make_study(tmp_path / "2024-01-01_00-00-00")
    assert wandb_target(study) is None  # csv-logged runs: nothing is sent
    assert upload_report(tmp_path / "report.md", study, "mcsweeney") is None
    _use_wandb(study)
    target = wandb_target(study)
    assert target == {"project": "musclelab-test", "entity": None, "group": "2024-01-01_00-00-00",
                      "mode": "offline"}
    out = tmp_path / "report"
    write_report(study, out, kind="mcsweeney")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    media = runs[0] / "files" / "media"
    tables = {p.name.split("_")[0] for p in (media / "table" / "tables").glob("*.table.json")}
    assert {"summary", "findings", "dunnett"} <= tables
    assert {p.name.split("_")[0] for p in (media / "images" / "figures").glob("*.png")} >= {"fig"}
    assert list((media / "html").glob("findings_*.html")) and list((media / "html").glob("report_*.html"))
    # --no-wandb: nothing more is sent
    write_report(study, tmp_path / "again", kind="mcsweeney", wandb=False)
    assert not (tmp_path / "again" / "wandb").exists()
