"""Kawamoto 2024 study: the report from run directories (Table 1, pairings, Wilcoxon, merged Dice, findings),
and the study's bad-input errors before any training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import compose_cfg
from musclelab.errors import ConfigError
from musclelab.report import detect_kind, write_report
from musclelab.report.kawamoto import analyze

Q, O, E = "quadratus_lumborum", "obliques", "erector_spinae"
# Dice per (label set, muscle) for test volumes v0..v2 of each fold: w/ESM helps Q, hurts O
DICE = {
    ((Q,), Q): [0.30, 0.40, 0.50], ((Q, E), Q): [0.70, 0.80, 0.90], ((Q, E), E): [0.90, 0.90, 0.90],
    ((O,), O): [0.80, 0.80, 0.80], ((O, E), O): [0.70, 0.75, 0.70], ((O, E), E): [0.92, 0.92, 0.92],
    ((E,), E): [0.93, 0.93, 0.93], ((Q, O), Q): [0.60, 0.60, 0.60], ((Q, O), O): [0.60, 0.60, 0.60],
}


def _run(root: Path, job: int, labels: tuple[str, ...], fold: int) -> None:
    from musclelab.outputs.nifti import save_nifti

    run = root / str(job)
    run.mkdir(parents=True)
    (run / "run_status.json").write_text(json.dumps({"status": "complete"}))
    cfg = {"data": {"name": "lumbar_phantom", "labels": list(labels), "fold": fold}, "seed": 0,
           "loss": {"name": "kawamoto"}, "init": {"name": "scratch"}, "tags": ["kawamoto2024"]}
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for v in range(3):
        case = f"f{fold}-v{v}"
        row = {"case_id": case, "level": "volume"}
        for m in labels:
            d = DICE[(labels, m)][v]
            row.update({f"dice_{m}": d, f"recall_{m}": d, f"precision_{m}": 1.0})
        rows += [row, {**row, "level": "l3_slice"}, {**row, "case_id": f"{case}_z001", "level": "slice"}]
        # saved masks: the target (class 1) covers 4 of 8 slices when right, fewer when it is worse
        label = np.zeros((8, 4, 4), np.uint8)
        label[:4] = 1 if labels[0] == Q else 0
        label[4:] = 1 if labels[0] == O else 0
        pred = label.copy() if len(labels) > 1 else np.zeros_like(label)
        save_nifti(run / "test_volumes" / f"{case}_pred.nii.gz", pred, spacing=(5.0, 1.0, 1.0))
        save_nifti(run / "test_volumes" / f"{case}_label.nii.gz", label, spacing=(5.0, 1.0, 1.0))
    pd.DataFrame(rows).to_csv(run / "test_cases.csv", index=False)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    sets = sorted({k[0] for k in DICE})
    job = 0
    for labels in sets:
        for fold in range(2):
            _run(tmp_path / "study", job, labels, fold)
            job += 1
    return tmp_path / "study"


def test_report_tables_tests_and_findings(study: Path) -> None:
    assert detect_kind(study) == "kawamoto"
    res = analyze(study)
    assert res.level == "volume"
    t1 = res.table1.set_index(["method", "stat"])
    assert t1.loc[("Baseline (wo/ESM)", "Mean"), "Q DC"] == "0.400"       # mean of 0.3, 0.4, 0.5 twice
    assert t1.loc[("Proposed (w/ESM)", "Mean"), "Q DC"] == "0.800"
    assert t1.loc[("Proposed (w/ESM)", "Mean"), "O DC"] == "0.717"
    assert t1.loc[("Baseline (wo/ESM)", "Mean"), "Average DC"] == "0.600"  # Q and O volumes pooled
    wil = res.wilcoxon.set_index("muscle")
    assert wil.loc[Q, "n pairs"] == 6 and wil.loc[Q, "w/ESM better in"] == 6
    assert wil.loc[Q, "p"] == pytest.approx(0.03125)                       # all 6 pairs positive: 2 / 2**6
    assert wil.loc[O, "mean difference"] == pytest.approx(-0.25 / 3)
    verdicts = {f.claim: f.verdict for f in res.findings}
    assert verdicts["w/ESM > wo/ESM for quadratus lumborum"] == "agrees"
    assert verdicts["w/ESM > wo/ESM for obliques"] == "disagrees"
    assert verdicts["the ESM is the best partner for quadratus lumborum"] == "agrees"  # 0.8 vs Q & O 0.6
    assert verdicts["the ESM is the best partner for obliques"] == "agrees"            # 0.717 vs 0.6
    t2 = res.table2.set_index("trained together")
    assert t2.loc["Q & O", "Q DC"] == "0.600 (0.000)" and t2.loc["Q", "O DC"] == "–"
    esm = res.esm.set_index("ESM trained")
    assert esm.loc["alone", "DC mean"] == "0.930"
    merged = res.merged.groupby("mode")["dice"].mean()
    assert merged["w/ESM"] == pytest.approx(1.0) and merged["alone"] == pytest.approx(0.0)
    found = {f.claim: f for f in res.findings}
    q = found["w/ESM > wo/ESM for quadratus lumborum"]
    assert q.n == 6 and q.unit.startswith("test volume") and q.p_value == pytest.approx(0.03125)
    m = found["merged into one region, the w/ESM target muscles reach the paper's Dice (0.902)"]
    assert m.kind == "non-inferiority" and m.verdict == "agrees" and "0.882" in m.note   # 1.0 on every volume
    esm = found["the ESM's own Dice hardly changes when it is learnt with a target (±0.02)"]
    # paired 0.91 (mean of 0.90 and 0.92) vs 0.93 alone: 0.02 lower on every volume, the margin itself, so
    # equivalence is not shown and the (consistent) difference is significant
    assert esm.kind == "equivalence" and esm.verdict == "disagrees"


def test_best_partner_is_not_measurable_without_other_pairings(study: Path) -> None:
    """Without a Q & O run there is no other partner: the finding says so instead of vanishing."""
    import shutil

    for run in study.iterdir():
        if yaml.safe_load((run / "config_resolved.yaml").read_text())["data"]["labels"] == [Q, O]:
            shutil.rmtree(run)
    found = {f.claim: f for f in analyze(study).findings}
    f = found["the ESM is the best partner for quadratus lumborum"]
    assert f.verdict == "not measurable"
    assert "no run pairs quadratus_lumborum with a muscle other than the ESM" in f.note


def test_runs_without_labels_are_not_a_kawamoto_study(tmp_path: Path) -> None:
    from musclelab.report.kawamoto import detect

    run = tmp_path / "study" / "0"
    run.mkdir(parents=True)
    (run / "run_status.json").write_text(json.dumps({"status": "complete"}))
    (run / "config_resolved.yaml").write_text(yaml.safe_dump({"data": {"name": "phantom"}, "loss": {"name": "ce"}}))
    assert not detect(tmp_path / "study")


def test_report_writes_files_through_the_entry_point(study: Path, tmp_path: Path) -> None:
    md = write_report(study, tmp_path / "out")
    text = md.read_text()
    for part in ("## Findings", "## Table 1", "## Table 2", "Wilcoxon", "merged into one region", "fig2_violin.png"):
        assert part in text
    for f in ("table1.csv", "table2.csv", "wilcoxon.csv", "findings.csv", "fig2_violin.png", "table1_l3_slice.csv"):
        assert (tmp_path / "out" / f).exists()


@pytest.mark.parametrize("override, match", [
    ("data.labels=[trapezius,erector_spinae]", "data.labels: 'trapezius' is not a class.*known: erector_spinae"),
    ("data.labels=[obliques,obliques]", "data.labels: 'obliques' is listed twice"),
    ("data.n_folds=8", "6 patients cannot make data.n_folds=8 folds"),      # 6 volumes
])
def test_bad_study_settings_fail_before_training(tmp_path: Path, override: str, match: str) -> None:
    from musclelab.train import train

    run = tmp_path / "run"
    cfg = compose_cfg(run, ["experiment=kawamoto2024", "data.source.n_volumes=6", "logger=none", override])
    with pytest.raises(ConfigError, match=match):
        train(cfg)
    assert not (run / "checkpoints").exists()


def test_w_esm_run_trains_and_scores_volumes(tmp_path: Path) -> None:
    """One tiny epoch of the w/ESM mode (the wo/ESM head is checked in test_kawamoto_losses.py): a 3-class
    softmax head, every test volume scored in 3D and on its L3 slice next to the slice rows, masks as NIfTI."""
    labels, out_channels = "[obliques,erector_spinae]", 3
    from musclelab.tasks import SegmentationTask
    from musclelab.train import train

    run = tmp_path / "run"
    train(compose_cfg(run, ["experiment=kawamoto2024", "data.source.n_volumes=6", "data.img_size=32",
                            "data.source.thickness_mm=20", "data.augment.repeats=1", "trainer.max_epochs=1",
                            "model.params.channels=[8,16,32]", "model.params.strides=[2,2]", "logger=none",
                            f"data.labels={labels}"]))
    cases = pd.read_csv(run / "test_cases.csv")
    assert set(cases["level"]) == {"slice", "volume", "l3_slice"}
    assert (cases["level"] == "volume").sum() == 2 == (cases["level"] == "l3_slice").sum()   # 6 volumes / 3 folds
    assert "dice_obliques" in cases and len(list((run / "test_volumes").glob("*_pred.nii.gz"))) == 2
    task = SegmentationTask.load_from_checkpoint(str(run / "checkpoints" / "best.ckpt"), map_location="cpu")
    assert task.net(__import__("torch").zeros(1, 1, 32, 32)).shape[1] == out_channels
    summary = json.loads((run / "test_summary.json").read_text())
    assert set(summary["metrics_by_level"]) == {"slice", "volume", "l3_slice"}
