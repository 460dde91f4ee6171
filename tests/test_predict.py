"""``musclelab predict`` end to end: a tiny trained run, phantom cases on disk in every format, masks compared with
the run's own test predictions; bad input gets rows with reasons and never stops the batch."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl

from musclelab.data.export import export_phantom_formats, write_dicom_series, write_dicom_slice
from musclelab.phantoms.l3 import generate_phantom, write_phantom_dataset
from musclelab.predict import Predictor, find_cases, predict
from musclelab.tasks import SegmentationTask
from musclelab.train import build_datamodule, train

from conftest import compose_cfg, run_cli_here

N_CASES, SIZE = 24, 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained phantom run (body composition scored) and its own test predictions per case."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_cfg(run_dir, ["eval.body_composition=true", "cpu_threads=1"])
    train(cfg)
    dm = build_datamodule(cfg)
    dm.setup("test")
    task = SegmentationTask.load_from_checkpoint(str(run_dir / "checkpoints" / "best.ckpt"), map_location="cpu")
    task.hparams.overlay_cases = 1000  # keep every test case's prediction
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
               enable_model_summary=False).test(task, datamodule=dm, verbose=False)
    preds = {ex["case_id"]: ex["pred"] for ex in task.test_examples}
    assert len(preds) >= 4
    return run_dir, preds


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs") / "phantom"
    write_phantom_dataset(out, n=N_CASES, size=SIZE, site="a", seed=0)
    export_phantom_formats(out, ["dicom", "nrrd"])
    return out


def _mask(path) -> np.ndarray:
    """A predicted slice mask as written (NIfTI (W, H, 1) on the source grid) back to (row, col)."""
    return np.asarray(nib.load(str(path)).dataobj)[..., 0].T


@pytest.mark.parametrize("fmt", ["images", "dicom", "nrrd"])
def test_predict_reproduces_the_runs_test_predictions(run, phantom_dir, tmp_path, fmt):
    run_dir, preds = run
    out = tmp_path / "out"
    result = predict(run_dir, phantom_dir / fmt, out, progress=False)
    assert result.n_failed == 0 and len(result.rows) == N_CASES
    table = pd.read_csv(out / "predictions.csv")
    tested = pd.read_csv(run_dir / "test_cases.csv").merge(table, on="case_id")
    assert len(tested) == len(preds)
    for case_id, pred in preds.items():
        mask = _mask(out / "masks" / f"{case_id}.nii.gz")
        assert mask.shape == pred.shape
        assert (mask != pred).mean() < 1e-3, case_id  # identical up to float ties
    # the same numbers the run reported for its test cases (SMA/SMD after the bone post-processing)
    np.testing.assert_allclose(tested["sma_cm2"], tested["sma_pred"], rtol=1e-4)
    np.testing.assert_allclose(tested["smd_hu"], tested["smd_pred"], rtol=1e-4, atol=1e-3)
    # masks sit on the source grid; PNG masks and overlays for single slices; class names in the sidecar
    src = nib.load(str(next((phantom_dir / "images").glob("*.nii.gz"))))
    if fmt == "images":
        written = nib.load(str(out / "masks" / f"{table.case_id[0]}.nii.gz"))
        np.testing.assert_allclose(written.affine, nib.load(str(phantom_dir / "images" /
                                                                f"{table.case_id[0]}.nii.gz")).affine, atol=1e-4)
    assert src.shape == (SIZE, SIZE, 1)
    assert (out / "masks" / f"{table.case_id[0]}.png").exists()
    assert (out / "overlays" / f"{table.case_id[0]}.png").exists()
    assert json.loads((out / "masks" / "labels.json").read_text())["labels"] == {"0": "background", "1": "muscle"}
    meta = pd.read_csv(phantom_dir / "meta.csv").set_index("case_id")
    if fmt == "dicom":  # PatientSize -> SMI
        h = meta.loc[table.case_id, "height_m"].to_numpy()
        np.testing.assert_allclose(table["smi_cm2_m2"], table["sma_cm2"] / h ** 2, rtol=1e-3)
    else:
        assert table["smi_cm2_m2"].isna().all()


def test_series_bad_input_and_heights(run, phantom_dir, tmp_path):
    run_dir, preds = run
    ids = sorted(preds)[:3]
    ph = generate_phantom(N_CASES, size=SIZE, site="a", seed=0)
    index = [int(np.flatnonzero(ph.meta["case_id"] == i)[0]) for i in ids]
    inp = tmp_path / "clinic"
    spacing = (3.0, *ph.spacing[index[0]])
    write_dicom_series(inp / "series_ok", ph.images[index], spacing, patient_id="p1", height_m=1.7)
    write_dicom_series(inp / "series_gap", ph.images[index + index[:1]], spacing, patient_id="p2",
                       z_positions_mm=[0.0, 3.0, 6.0, 12.0])
    write_dicom_slice(inp / "slices" / "mr.dcm", ph.images[0], ph.spacing[0], patient_id="p3", modality="MR")
    write_dicom_slice(inp / "slices" / "raw.dcm", ph.images[0], ph.spacing[0], patient_id="p4", rescale=False)
    (inp / "slices" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really a NIfTI file")
    (inp / "slices" / "notes.txt").write_text("not an image")
    nifti = phantom_dir / "images" / f"{ids[0]}.nii.gz"
    (inp / "slices" / "good.nii.gz").write_bytes(nifti.read_bytes())
    heights = tmp_path / "heights.csv"
    pd.DataFrame({"id": ["good"], "height_cm": [180.0]}).to_csv(heights, index=False)
    before = sorted((p, p.stat().st_mtime_ns) for p in inp.rglob("*"))

    cases, skipped = find_cases(inp)
    assert {c.kind for c in cases} == {"dicom_series", "dicom_slice", "nifti"}
    assert [p.name for p in skipped] == ["notes.txt"]

    out = tmp_path / "out"
    proc = run_cli_here(["predict", str(run_dir), str(inp), "--out", str(out), "--heights", str(heights)],
                        tmp_path, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "4 failed" in proc.stdout
    table = pd.read_csv(out / "predictions.csv").set_index("case_id")
    reasons = table["reason"].fillna("")
    assert table.loc["series_ok", "status"] == "ok" and table.loc["slices/good", "status"] == "ok"
    assert "inconsistent slice spacing" in reasons["series_gap"]
    assert "not CT" in reasons["slices/mr"]
    assert "RescaleSlope" in reasons["slices/raw"]
    assert "could not be read" in reasons["slices/broken"]
    # a series: one mask volume, its slices the run's predictions; volumes in mL
    vol = np.asarray(nib.load(str(out / "masks" / "series_ok.nii.gz")).dataobj)
    assert vol.shape == (SIZE, SIZE, 3)
    for k, case_id in enumerate(ids):
        assert (vol[..., k].T != preds[case_id]).mean() < 1e-3
    assert table.loc["series_ok", "volume_muscle_ml"] > 0 and np.isfinite(table.loc["series_ok", "muscle_volume_ml"])
    assert table.loc["slices/good", "smi_cm2_m2"] == pytest.approx(table.loc["slices/good", "sma_cm2"] / 1.8 ** 2)
    # nothing written inside the input folder; an output folder inside it is refused (exit 2)
    assert sorted((p, p.stat().st_mtime_ns) for p in inp.rglob("*")) == before
    proc = run_cli_here(["predict", str(run_dir), str(inp), "--out", str(inp / "out")], tmp_path, check=False)
    assert proc.returncode == 2 and "inside the input folder" in proc.stderr
    assert not (inp / "out").exists()


def test_predictor_resizes_back_to_the_native_grid(run, tmp_path):
    """A scan at twice the model's resolution: preprocessing resizes it like training, the mask comes back on the
    scan's own grid and agrees with the prediction at the model's size."""
    run_dir, preds = run
    case_id = sorted(preds)[0]
    ph = generate_phantom(N_CASES, size=SIZE, site="a", seed=0)
    i = int(np.flatnonzero(ph.meta["case_id"] == case_id)[0])
    big = np.kron(ph.images[i], np.ones((2, 2), np.float32))  # the same field of view at half the spacing
    write_dicom_slice(tmp_path / "in" / "big.dcm", big, ph.spacing[i] / 2, patient_id="p")
    out = tmp_path / "out"
    predict(run_dir, tmp_path / "in" / "big.dcm", out, progress=False)
    mask = _mask(out / "masks" / "big.nii.gz")
    assert mask.shape == (2 * SIZE, 2 * SIZE)
    expected = np.kron(preds[case_id], np.ones((2, 2), preds[case_id].dtype))
    agree = 2 * np.logical_and(mask, expected).sum() / max(1, mask.sum() + expected.sum())
    assert agree > 0.9
    assert Predictor(run_dir).meta["img_size"] == SIZE


def test_predict_3d_model_matches_the_runs_own_volume_predictions(tmp_path):
    """A tiny 3D run on the thigh phantom: predict on the same volumes written as NIfTI (resample + body crop +
    sliding window from the checkpoint alone) gives the masks the run's test step wrote under predictions/."""
    from musclelab.phantoms.thigh import write_thigh_dataset

    run_dir = tmp_path / "run3d"
    src = ["data.source.n_volumes=5", "data.source.size=32", "data.source.n_slices=16", "data.source.n_raters=0"]
    from musclelab.compose import compose_train_config

    train(compose_train_config([f"paths.output_dir={run_dir}", "data=thigh_phantom", *src, "trainer.max_epochs=1",
                                "callbacks.progress_bar=false", "model.params.num_res_units=0", "data.spacing=[16.0,10.0,10.0]",
                                "data.patch_size=[16,16,16]", "data.patches_per_volume=2", "data.batch_size=2",
                                "model.params.channels=[4,8]", "model.params.strides=[2]", "logger=none",
                                "cpu_threads=1", "eval.sliding_window.overlap=0.25"]))
    written = sorted((run_dir / "predictions").glob("*.nii.gz"))
    assert written, "the 3D run wrote no test prediction"
    phantom = write_thigh_dataset(tmp_path / "thigh", n=5, size=32, n_slices=16, n_raters=0)
    case_id = written[0].name[: -len(".nii.gz")]
    out = tmp_path / "out3d"
    result = predict(run_dir, phantom / "imagesTr" / f"{case_id}.nii.gz", out, progress=False)
    assert result.n_failed == 0, result.rows
    ours = np.asarray(nib.load(str(out / "masks" / f"{case_id}.nii.gz")).dataobj)
    theirs = np.asarray(nib.load(str(written[0])).dataobj)
    assert ours.shape == theirs.shape
    assert (ours == theirs).mean() > 0.99  # the files hold int16 HU, the run saw the generator's floats
    row = pd.read_csv(out / "predictions.csv").iloc[0]
    assert row["kind"] == "nifti" and any(c.startswith("volume_") and c.endswith("_ml") for c in row.index)
