"""Kim 2024 report on fabricated 3D runs: every seed kept, failed classes scored and counted, the sarcopenia
finding on the model's predicted volumes, and the volume-correlation claim as a test specific to UNETR."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from musclelab.report import detect_kind, write_report
from musclelab.report.findings import AGREES
from musclelab.report.kim import figure5, findings, load

MUSCLES = ["sartorius", "rectus_femoris", "adductor_longus", "gracilis", "biceps_femoris", "gluteus_maximus"]
N = 16  # scanned volumes: 8 men, 8 women


def _subjects() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    sex = np.array(["M", "F"] * (N // 2))
    sarcopenic = np.array([1, 1, 0, 0] * (N // 4))
    height = 1.6 + 0.2 * rng.random(N)
    return pd.DataFrame({"case_id": [f"s{i}" for i in range(N)], "sex": sex, "height_m": height,
                         "sarcopenic": sarcopenic})


def _rows(model: str, seed: int, dice: float, tracks_reference: bool) -> pd.DataFrame:
    """Reference volumes: sarcopenic subjects have 30 % less muscle (per height²). Predictions track the
    reference (a good model) or are unrelated to it (a model that learnt nothing of the subject)."""
    rng = np.random.default_rng(100 * seed + len(model))
    subj = _subjects()
    out = subj.copy()
    size = subj["height_m"] ** 2 * (1 - 0.3 * subj["sarcopenic"]) * 50
    for k, m in enumerate(MUSCLES):
        ref = size * (1 + 0.1 * k) * (1 + 0.02 * rng.normal(size=N))
        pred = ref * (1 + 0.01 * rng.normal(size=N)) if tracks_reference else \
            float(ref.mean()) * (1 + 0.3 * rng.normal(size=N))
        out[f"vol_ref_{m}_ml"], out[f"vol_pred_{m}_ml"] = ref, pred
        out[f"dice_{m}"] = np.clip(dice + 0.01 * rng.normal(size=N), 0, 1)
        for d, scale in (("assd", 1.0), ("hd", 8.0), ("hd95", 4.0)):
            out[f"{d}_{m}"] = scale * (1 - out[f"dice_{m}"]) * 10
        out[f"ravd_{m}"] = 100 * (pred - ref) / ref
    return out


def _run(root: Path, job: int, model: str, seed: int, rows: pd.DataFrame) -> None:
    run = root / str(job)
    run.mkdir(parents=True)
    (run / "config_resolved.yaml").write_text(yaml.safe_dump(
        {"model": {"name": model}, "seed": seed, "data": {"name": "thigh_phantom", "spatial_dims": 3}}))
    rows.to_csv(run / "test_cases.csv", index=False)
    pd.DataFrame({"class": MUSCLES}).to_csv(run / "volume_agreement.csv", index=False)
    (run / "test_summary.json").write_text(json.dumps({"inference_s_per_scan": 1.0 + seed, "n_cases": N}))
    (run / "run_status.json").write_text(json.dumps({"status": "complete"}))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "kim"
    _run(root, 0, "unetr", 0, _rows("unetr", 0, 0.84, tracks_reference=True))
    _run(root, 1, "unetr", 1, _rows("unetr", 1, 0.80, tracks_reference=True))
    bad = _rows("unet", 0, 0.69, tracks_reference=False)
    bad.loc[0, "dice_sartorius"] = 0.0          # nothing predicted: distances undefined
    bad.loc[0, ["assd_sartorius", "hd_sartorius", "hd95_sartorius"]] = np.nan
    _run(root, 2, "unet", 0, bad)
    return root


def test_every_seed_is_kept_and_failures_are_scored(study: Path) -> None:
    assert detect_kind(study) == "kim"
    models = load(study)
    assert len(models["unetr"]["runs"]) == 2
    fig5 = figure5(models).set_index(["class", "model"])
    both = [_rows("unetr", s, d, True) for s, d in ((0, 0.84), (1, 0.80))]
    assert fig5.loc[("gracilis", "unetr"), "DC"] == pytest.approx(
        np.mean([(a + b) / 2 for a, b in zip(both[0]["dice_gracilis"], both[1]["dice_gracilis"])]))
    assert fig5.loc[("gracilis", "unetr"), "runs"] == 2
    assert fig5.loc[("sartorius", "unet"), "failed"] == f"1/{N}"
    worst = max(r[f"assd_{m}"].max() for r in both for m in MUSCLES)
    worst = max(worst, _rows("unet", 0, 0.69, False)[[f"assd_{m}" for m in MUSCLES]].to_numpy().max())
    assert models["unet"]["rows"].loc[0, "assd_sartorius"] == pytest.approx(worst)   # the study's worst ASSD


def test_sarcopenia_uses_predicted_volumes_and_vc_is_tested_for_unetr(study: Path) -> None:
    models = load(study)
    fnd = {f.claim: f for f in findings(figure5(models), pd.DataFrame(), pd.DataFrame(), models)}
    good = fnd["in men, predicted muscle volume / height² correlates negatively with sarcopenia (unetr)"]
    assert good.verdict == AGREES and good.n == N // 2 and "reference volumes r =" in good.note
    # the U-Net's predictions ignore the subject: with the reference volumes the claim would hold by construction
    blind = fnd["in men, predicted muscle volume / height² correlates negatively with sarcopenia (unet)"]
    assert blind.verdict != AGREES
    vc = fnd["UNETR's predicted muscle volumes correlate highly with the reference (VC 0.968)"]
    assert vc.kind == "non-inferiority" and vc.verdict == AGREES and vc.n == len(MUSCLES)
    assert vc.unit.startswith("muscle class")
    dice = fnd["UNETR segments the individual muscles better than the 3D U-Net (mean DC 0.84 vs 0.69)"]
    assert dice.verdict == AGREES and dice.n == N and "paired" in dice.test


def test_vc_far_below_the_paper_does_not_agree(study: Path, tmp_path: Path) -> None:
    root = tmp_path / "noisy"
    noisy = _rows("unetr", 0, 0.84, tracks_reference=False)
    _run(root, 0, "unetr", 0, noisy)
    models = load(root)
    fnd = {f.claim: f for f in findings(figure5(models), pd.DataFrame(), pd.DataFrame(), models)}
    vc = fnd["UNETR's predicted muscle volumes correlate highly with the reference (VC 0.968)"]
    assert vc.verdict in ("disagrees", "inconclusive")
    md = write_report(study, tmp_path / "out").read_text()
    assert "## Findings" in md and "runs (seeds) per model: unetr 2, unet 1" in md
    assert {"p_holm", "unit", "paper"} <= set(pd.read_csv(tmp_path / "out" / "findings.csv").columns)
