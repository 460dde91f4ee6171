"""3D runs through musclelab's train(): outputs, DDP on two CPU processes, and one-line config errors."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from musclelab.compose import config_dir
from musclelab.errors import ConfigError
from musclelab.train import train, validate_config

TINY3D = [
    "data=thigh_phantom", "data.source.n_volumes=5", "data.source.size=48", "data.source.n_slices=16",
    "data.spacing=[20.0,10.0,10.0]", "data.patch_size=[16,16,16]", "data.patches_per_volume=2", "data.batch_size=2",
    "data.val_fraction=0.2", "data.test_fraction=0.2",
    "model=kim2024_unet_smoke", "loss=dice", "trainer.max_epochs=1", "callbacks.progress_bar=false", "cpu_threads=1",
]


def _cfg(tmp_path: Path, extra: list[str] | None = None):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*TINY3D, f"paths.output_dir={tmp_path / 'run'}",
                                           f"paths.cache_dir={tmp_path / 'cache'}", *(extra or [])])


def _check_outputs(run: Path) -> None:
    assert json.loads((run / "run_status.json").read_text())["status"] == "complete"
    rows = pd.read_csv(run / "test_cases.csv")
    assert len(rows) == 1 and {"dice", "hd95", "assd", "ravd", "vol_pred_femur_ml", "vol_rater_2_psoas_ml",
                               "sex", "height_m", "sarcopenic"} <= set(rows.columns)
    assert (run / "volume_agreement.csv").exists() and (run / "test_overlay.png").exists()
    assert json.loads((run / "test_summary.json").read_text())["inference_s_per_scan"] > 0
    [pred] = list((run / "predictions").glob("*.nii.gz"))
    from musclelab.outputs.nifti import load_nifti

    arr, spacing = load_nifti(pred)
    assert arr.shape == (16, 48, 48) and spacing[1] == pytest.approx(rows["spacing_row_mm"].item(), rel=1e-4)
    manifest = pd.read_csv(run / "split_manifest.csv")
    assert set(manifest["split"]) >= {"train", "val", "test"}
    # Kim 2024 Figs. 7-8: the test case's predicted volumes per muscle and group, raw and per height²
    vols = pd.read_csv(run / "predicted_volumes.csv")
    assert set(vols["case_id"]) == set(rows["case_id"]) and {"muscle", "group", "structure"} == set(vols["level"])
    psoas = vols[vols["structure"] == "psoas"].iloc[0]
    assert psoas["volume_ml"] == pytest.approx(rows["vol_pred_psoas_ml"].item())
    assert psoas["volume_per_height2"] == pytest.approx(psoas["volume_ml"] / rows["height_m"].item() ** 2)


def test_3d_run_writes_source_geometry_outputs(tmp_path):
    train(_cfg(tmp_path))
    _check_outputs(tmp_path / "run")


def test_3d_ddp_cpu_two_processes(tmp_path):
    train(_cfg(tmp_path, ["trainer=ddp_cpu", "trainer.max_epochs=1"]))
    _check_outputs(tmp_path / "run")


@pytest.mark.parametrize("extra, message", [
    (["model=smp"], r"model 'smp' is 2D only .* data.spatial_dims=2"),
    (["model=unetr", "data.patch_size=[24,32,32]"], r"data.patch_size.*multiples of 16"),
    (["data.patch_size=null"], r"data.patch_size is not set"),
    (["eval.sliding_window.overlap=1.5"], r"overlap"),
])
def test_3d_config_errors_are_one_line(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(_cfg(tmp_path, extra))
    assert "\n" not in str(info.value)
