"""Non-learning segmentation baselines, run and scored exactly like a trained model: ``model=threshold``.

Yoon et al. 2024 compare their networks with a semi-automatic threshold tool (Table 3). Selecting the baseline
as a model (``musclelab train -m experiment=yoon2024_muscle model=unet,...,threshold,threshold_boundary``) gives it
the same test split, the same per-case metrics (``test_cases.csv``), inference time per slice and report row as
every network, with nothing to train (``fit_time_s`` 0). A baseline sees the raw HU slice, not the windowed network
input, because its rules are written in Hounsfield units.

One registry (:data:`BASELINES`), name -> ``predict(image_hu (H, W), spacing_mm (row, col), case_id=...,
**model.params)``
returning a label map ``(H, W)``. The training registry (:data:`musclelab.models.MODELS`) is separate because
a baseline has no weights, optimiser or input-size constraint.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from musclelab.registry import Registry

PredictFn = Callable[..., np.ndarray]
BASELINES: Registry[PredictFn] = Registry("non-learning baseline", "model.name")


BOUNDARIES = ("none", "phantom", "masks")


def threshold_boundary_predict(image_hu: np.ndarray, spacing_mm: tuple[float, float], *, case_id: str = "",
                               boundary: str = "phantom", **params: Any) -> np.ndarray:
    """:func:`threshold_predict` with the inner abdominal boundary the tool's user draws (``phantom`` or
    ``masks``): the paper's semi-automatic tool, a row of its own in the architecture table."""
    if boundary == "none":
        raise ValueError("model=threshold_boundary needs model.params.boundary phantom or masks (none is "
                         "model=threshold)")
    return threshold_predict(image_hu, spacing_mm, case_id=case_id, boundary=boundary, **params)


@BASELINES.register("threshold")
def threshold_predict(image_hu: np.ndarray, spacing_mm: tuple[float, float], *, case_id: str = "",
                      hu_min: float = -29.0, hu_max: float = 150.0, body_threshold_hu: float = -500.0,
                      detach_mm: float = 5.0, boundary: str = "none", boundary_dir: str | None = None,
                      phantom_seed: int = 0) -> np.ndarray:
    """Skeletal muscle = ``hu_min <= HU <= hu_max`` inside the body outline (see :mod:`musclelab.models.threshold`
    for the range's source) and, with an inner abdominal ``boundary``, outside it: ``none`` (no organ
    exclusion), ``phantom`` (the built-in L3 phantom's known fascia, regenerated with ``phantom_seed``) or
    ``masks`` (the user's masks, ``<boundary_dir>/<case_id>.npy|.png|.nii.gz``). Returns a ``uint8`` map (1 muscle)."""
    from musclelab.models.threshold import phantom_inner_boundary, read_boundary_mask, threshold_muscle

    if boundary not in BOUNDARIES:
        raise ValueError(f"model.params.boundary={boundary!r} unknown; known: {', '.join(BOUNDARIES)}")
    exclude = None
    if boundary == "phantom":
        exclude = phantom_inner_boundary(case_id, image_hu, phantom_seed)
    elif boundary == "masks":
        if not boundary_dir:
            raise ValueError("model.params.boundary=masks needs model.params.boundary_dir (a folder of "
                             "<case_id>.npy/.png/.nii.gz inner abdominal boundary masks)")
        exclude = read_boundary_mask(boundary_dir, case_id, np.shape(image_hu))
    return threshold_muscle(image_hu, hu_min, hu_max, body_threshold_hu, spacing_mm=spacing_mm,
                            detach_mm=detach_mm, exclude=exclude).astype(np.uint8)


def evaluate_baseline(name: str, params: dict[str, Any], dataset: Any, class_names: list[str],
                      body_composition: bool = False, n_examples: int = 4) -> tuple[list[dict], list[dict], float]:
    """Run baseline ``name`` on every item of ``dataset`` (a test split of the datamodule: items with ``hu``,
    ``image``, ``label``, ``spacing``, ``case_id``) and score it like ``SegmentationTask.test_step``.

    Returns ``(rows, examples, seconds)``: one metrics row per case (``case_id``, spacing, the
    :func:`~musclelab.metrics.case_metrics` keys and, for binary targets with ``body_composition``, SMA/SMD), up to
    ``n_examples`` overlay examples, and the summed prediction time (the thresholding only, not the scoring).
    """
    from musclelab.evaluation.original_grid import (NETWORK, ORIGINAL, body_composition_row, original_of,
                                                    upsample_labels)
    from musclelab.metrics import case_metrics

    if len(class_names) != 2:
        raise ValueError(f"model={name} is a binary baseline, but the data has {len(class_names)} classes "
                         f"({', '.join(class_names)}): use a binary target, e.g. data.source.target=muscle")
    predict = BASELINES.get(name)
    rows, examples, seconds = [], [], 0.0
    for i in range(len(dataset)):
        item = dataset[i]
        hu = item["hu"].numpy()
        spacing = tuple(float(s) for s in item["spacing"])
        label = item["label"].numpy()
        t0 = time.perf_counter()
        pred = predict(hu, spacing, case_id=str(item["case_id"]), **params)
        seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"case_id": item["case_id"], "spacing_row_mm": spacing[0], "spacing_col_mm": spacing[1]}
        row.update(case_metrics(pred, label, spacing, class_names))
        if body_composition:  # scored as a model's prediction: on the slice as acquired when the set has it
            orig = original_of(getattr(dataset, "slices", None), str(item["case_id"]))
            if orig is not None:
                row.update(body_composition_row(upsample_labels(pred, orig.hu.shape), orig.label, orig.hu,
                                                orig.spacing, ORIGINAL))
            else:
                row.update(body_composition_row(pred, label, hu, spacing, NETWORK))
        rows.append(row)
        if len(examples) < n_examples:
            examples.append({"case_id": item["case_id"], "image": item["image"].numpy(), "label": label,
                             "pred": pred})
    return rows, examples, seconds


BASELINES.register("threshold_boundary")(threshold_boundary_predict)
