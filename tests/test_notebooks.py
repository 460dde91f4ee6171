"""The notebooks stay true: every code cell runs top to bottom against a fresh tiny run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def run_cells(path: Path) -> dict:
    """Execute every code cell of the notebook at ``path`` in order; returns the final namespace."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    namespace: dict = {}
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102
    return namespace


def test_every_notebook_is_tested() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_run_walkthrough.ipynb", "02_study_walkthrough.ipynb"]


def test_run_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUN_DIR", raising=False)
    run_cells(NOTEBOOK_DIR / "01_run_walkthrough.ipynb")
    assert (tmp_path / "outputs" / "notebook_demo_run" / "run_status.json").exists()


def test_study_walkthrough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against a fabricated McSweeney study (the slow McSweeney test runs it on the real smoke study)."""
    from test_report import make_study

    study = make_study(tmp_path / "study")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDY_DIR", str(study))
    ns = run_cells(NOTEBOOK_DIR / "02_study_walkthrough.ipynb")
    assert (study / "notebook_fig_dsc.png").stat().st_size > 0
    paired = ns["pd"].DataFrame(ns["paired"])
    assert list(paired["init"]) == ["imagenet"] and paired.loc[0, "mean_dsc_diff_vs_scratch"] > 0.2
    assert len(ns["findings"]) > 0
