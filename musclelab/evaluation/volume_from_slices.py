"""Score a 2D model on whole volumes: predict every slice, stack the slices back, score in 3D and on L3.

``eval.level`` chooses what a run's ``test_cases.csv`` holds (its ``level`` column says which row is which):

* ``slice`` — one row per test slice, as the 2D test loop scores it (the default);
* ``volume`` — per test volume one ``volume`` row (Dice, Jaccard, precision, recall, HD, HD95, ASSD, RMS-DTA in
  mm with the true slice thickness as the z spacing) and, where the source knows the L3 slice, one ``l3_slice``
  row (the same volume's prediction scored on that slice alone, in-plane spacing);
* ``both`` — all of the above.

Every slice of a test volume is predicted, also those without any label, because a 2D model's false positives
above and below the muscle count against it in 3D. Volumes come from the source (the loader
``SourceData.volumes``, :class:`~musclelab.data.containers.SourceData`); scoring uses
:func:`musclelab.metrics.case_metrics`; predicted masks (and their references) are written as NIfTI through :func:`musclelab.outputs.nifti.save_nifti`
into ``test_volumes/`` when ``eval.save_volumes`` is true.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from musclelab.errors import ConfigError
from musclelab.metrics import case_metrics, summarize

LEVELS = ("slice", "volume", "both")
VOLUME_DIR = "test_volumes"
PRED_SUFFIX, LABEL_SUFFIX = "_pred.nii.gz", "_label.nii.gz"


def check_level(level: str, has_volumes: bool | None = None, data_name: str = "") -> str:
    """``eval.level`` validated: one of :data:`LEVELS`; ``volume``/``both`` need a source with volumes."""
    if level not in LEVELS:
        raise ConfigError(f"eval.level must be one of {', '.join(LEVELS)}, got '{level}'")
    if level != "slice" and has_volumes is False:
        raise ConfigError(f"eval.level={level} needs whole test volumes, but data={data_name} serves slices only; "
                          "use eval.level=slice or a volume source (e.g. data=lumbar_phantom)")
    return level


def stack_slices(preds: Sequence[np.ndarray], slice_index: Sequence[int], depth: int) -> np.ndarray:
    """2D label maps put back at their z index into a ``(depth, H, W)`` volume.

    Raises:
        ValueError: an index outside ``0..depth-1``, given twice, or a slice missing (every slice must have been
            predicted: a gap would silently count as background).
    """
    index = [int(k) for k in slice_index]
    if len(index) != len(preds):
        raise ValueError(f"{len(preds)} predictions but {len(index)} slice indices")
    if sorted(index) != list(range(depth)):
        missing = sorted(set(range(depth)) - set(index))
        extra = sorted({k for k in index if not 0 <= k < depth} | {k for k in index if index.count(k) > 1})
        raise ValueError(f"slices do not fill a volume of depth {depth}: missing {missing[:10]}, "
                         f"out of range or repeated {extra[:10]}")
    first = np.asarray(preds[0])
    out = np.empty((depth, *first.shape), dtype=first.dtype)
    for k, p in zip(index, preds):
        out[k] = p
    return out


def predict_slices(predict: Callable[[np.ndarray], np.ndarray], image_hu: np.ndarray, window: str,
                   channels: int, batch_size: int = 16) -> list[np.ndarray]:
    """``predict`` (windowed batch ``(B, C, H, W)`` -> labels ``(B, H, W)``) on every slice of ``image_hu``
    ``(Z, H, W)``, in batches; returns one uint8 label map per slice, in z order."""
    from musclelab.data.windowing import apply_window

    out: list[np.ndarray] = []
    for start in range(0, len(image_hu), max(int(batch_size), 1)):
        x = apply_window(np.asarray(image_hu[start:start + batch_size], np.float32), window, channels)
        out.extend(np.asarray(predict(x), dtype=np.uint8))
    return out


def score_volume(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], class_names: Sequence[str],
                 l3_index: int | None = None) -> list[dict[str, Any]]:
    """Rows for one volume: ``level=volume`` (3D metrics, spacing ``(z, row, col)`` mm) and, with ``l3_index``,
    ``level=l3_slice`` (that slice alone, in-plane spacing)."""
    sp = tuple(float(s) for s in spacing)
    rows = [{"level": "volume", "n_slices": int(len(pred)), "spacing_z_mm": sp[0],
             **case_metrics(pred, target, sp, class_names)}]
    if l3_index is not None:
        rows.append({"level": "l3_slice", "slice_index": int(l3_index), "spacing_z_mm": sp[0],
                     **case_metrics(pred[l3_index], target[l3_index], sp[1:], class_names)})
    return rows


def evaluate_volumes(predict: Callable[[np.ndarray], np.ndarray], volumes: Callable[[str], list[Any]],
                     patient_ids: Sequence[str],
                     window: str, channels: int, class_names: Sequence[str], batch_size: int = 16,
                     nifti_dir: Path | None = None) -> list[dict[str, Any]]:
    """Predict, stack and score every volume of ``patient_ids``; with ``nifti_dir`` write each predicted mask and
    its reference as ``<case_id>_pred.nii.gz`` / ``<case_id>_label.nii.gz`` there (so a report can merge the
    masks of several runs). Returns ``volume`` and ``l3_slice`` rows with ``case_id`` first."""
    rows: list[dict[str, Any]] = []
    for pid in patient_ids:
        for vol in volumes(pid):
            slices = predict_slices(predict, vol.image, window, channels, batch_size)
            pred = stack_slices(slices, range(len(slices)), len(vol.image))
            for row in score_volume(pred, vol.label, vol.spacing, class_names, vol.meta.get("l3_index")):
                rows.append({"case_id": vol.case_id, "patient_id": vol.patient_id, **row})
            if nifti_dir is not None:
                from musclelab.outputs.nifti import save_nifti

                save_nifti(Path(nifti_dir) / f"{vol.case_id}{PRED_SUFFIX}", pred, spacing=vol.spacing)
                save_nifti(Path(nifti_dir) / f"{vol.case_id}{LABEL_SUFFIX}", vol.label, spacing=vol.spacing)
    return rows


def level_rows(level: str, slice_rows: list[dict], model: Any, dm: Any, run_dir: Path,
               save_volumes: bool = False) -> list[dict]:
    """The rows of ``test_cases.csv`` for ``eval.level`` = ``level``: the test loop's slice rows and/or the
    volume-level rows of the test split's patients, each with its ``level``."""
    check_level(level, dm.volumes is not None, dm.name)
    out = [{"case_id": r["case_id"], "level": "slice", **{k: v for k, v in r.items() if k != "case_id"}}
           for r in slice_rows] if level in ("slice", "both") else []
    if level in ("volume", "both"):
        import torch

        patients = list(dict.fromkeys(dm.datasets["test"].slices.meta["patient_id"]))
        model.eval()

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model.predict_labels(torch.from_numpy(x).to(model.device)).cpu().numpy()

        out += evaluate_volumes(predict, dm.volumes, patients, dm.window, dm.channels, list(dm.class_names),
                                dm.eval_batch_size, Path(run_dir) / VOLUME_DIR if save_volumes else None)
    return out


def summarize_levels(rows: pd.DataFrame) -> tuple[dict, dict]:
    """``(summary of the first level present, {level: summary})`` of ``test_cases.csv`` rows (the second is
    empty when the rows have no ``level`` column)."""
    drop = [c for c in ("case_id", "patient_id", "level") if c in rows.columns]
    if "level" not in rows.columns:
        return summarize(rows.drop(columns=drop)), {}
    by_level = {str(lv): summarize(g.drop(columns=drop)) for lv, g in rows.groupby("level", sort=False)}
    return next(iter(by_level.values())), by_level
