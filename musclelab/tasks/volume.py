"""``VolumeSegmentationTask``: the 3D task — trains on patches, validates and tests whole volumes with a sliding
window (:mod:`musclelab.inference`), scores test cases in the source geometry and writes NIfTI predictions.

Per test case: Dice / Jaccard / HD / HD95 / ASSD per class in mm (:func:`musclelab.metrics.case_metrics` on the
source grid), per-class volumes in mL of the prediction, the reference and every rater, and the signed RAVD
(:mod:`musclelab.metrics.volume`), plus the case's metadata (sex, height, sarcopenia) for the Kim 2024 analyses
and the sliding-window seconds of the case.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from musclelab.inference import SlidingWindow, sliding_window_logits
from musclelab.losses import logits_to_labels
from musclelab.metrics import case_metrics
from musclelab.metrics.volume import volume_rows
from musclelab.tasks.segmentation import SegmentationTask

# case metadata copied into test rows when the data has it (the thigh phantom and the Kim 2024 analyses)
META_COLUMNS = ("sex", "height_m", "smi_kg_m2", "sarcopenic", "age")


class VolumeSegmentationTask(SegmentationTask):
    """:class:`SegmentationTask` for volumes (``spatial_dims=3``).

    Args (beyond the base task): patch_size: training patch (D, H, W) = sliding-window ROI; sliding_window:
    ``overlap``, ``mode``, ``sigma_scale``, ``sw_batch_size`` (``eval.sliding_window``); save_predictions: how
    many test cases get their predicted mask written as NIfTI (``predictions/<case>.nii.gz``, source grid and,
    for files, the source affine).
    """

    is_volume = True

    def __init__(self, model: str, model_params: dict[str, Any], in_channels: int, class_names: list[str],
                 patch_size: Sequence[int], sliding_window: dict[str, Any] | None = None, save_predictions: int = 1,
                 loss: str = "dice", loss_params: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
                 max_epochs: int = 1, monitor: str = "val/loss", overlay_cases: int = 1,
                 meta: dict[str, Any] | None = None, img_size: Any = None, spatial_dims: int = 3,
                 body_composition: bool = False, augment: dict[str, Any] | None = None) -> None:
        super().__init__(model=model, model_params=model_params, in_channels=in_channels, class_names=class_names,
                         img_size=list(patch_size), loss=loss, loss_params=loss_params, optim=optim,
                         max_epochs=max_epochs, monitor=monitor, overlay_cases=overlay_cases, meta=meta,
                         body_composition=False, spatial_dims=3, augment=augment)
        self.save_hyperparameters()
        self.window = SlidingWindow(tuple(int(p) for p in patch_size), **(sliding_window or {}))
        self.prediction_dir: Path | None = None

    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Blended logits of whole volumes ``(B, C, D, H, W)``."""
        return sliding_window_logits(self, image, self.window)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.sliding_window(batch["image"])
        loss = self.loss_fn(logits, batch["label"])
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1, sync_dist=True)
        self.val_dice.update(logits_to_labels(logits), batch["label"])

    def _volumes(self):
        return self.trainer.datamodule.datasets["test"].volumes

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from musclelab.data.volumes import to_source_geometry

        t0 = time.perf_counter()
        logits = self.sliding_window(batch["image"])
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        seconds = time.perf_counter() - t0
        self.test_forward_s += seconds
        loss = self.loss_fn(logits, batch["label"])
        self.log("test/loss", loss, on_step=False, on_epoch=True, batch_size=1)
        pred = logits_to_labels(logits)[0].cpu().numpy().astype(np.uint8)
        vs = self._volumes()
        i = int(batch["index"][0])
        case_id = str(batch["case_id"][0])
        geo = vs.geometry(i)
        pred_src = to_source_geometry(pred, geo["resampled_shape"], geo["crop_start"], geo["source_shape"])
        ref_src = np.asarray(vs.source_label(i))
        spacing = vs.source_spacing(i)
        row: dict[str, Any] = {"case_id": case_id, "spacing_z_mm": spacing[0], "spacing_row_mm": spacing[1],
                               "spacing_col_mm": spacing[2], "inference_s": round(seconds, 4)}
        row.update(case_metrics(pred_src, ref_src, spacing, self.class_names))
        raters = {r: np.asarray(vs.rater(r, i)) for r in vs.raters}
        row.update(volume_rows(pred_src, ref_src, spacing, self.class_names, raters))
        for r, lab in raters.items():   # each rater against the reference: the inter-rater band
            row[f"dice_{r}"] = case_metrics(lab, ref_src, spacing, self.class_names, surface=False)["dice"]
        for col in META_COLUMNS:
            if col in vs.meta.columns:
                v = vs.meta.at[i, col]
                row[col] = v.item() if hasattr(v, "item") else v
        self.test_rows.append(row)
        if self.prediction_dir is not None and batch_idx < int(self.hparams.save_predictions):
            from musclelab.outputs.nifti import save_nifti

            src = str(vs.meta.at[i, "source_file"] or "")
            ref = src if src and Path(src).exists() else None
            save_nifti(self.prediction_dir / f"{case_id}.nii.gz", pred_src, spacing=None if ref else spacing,
                       reference=ref)
        if len(self.test_examples) < int(self.hparams.overlay_cases):
            self.test_examples.append({"case_id": case_id, "image": batch["image"][0, 0].cpu().numpy(),
                                       "label": batch["label"][0].cpu().numpy(), "pred": pred,
                                       "spacing": vs.spacing(i)})

    def on_test_epoch_end(self) -> None:
        if not self.test_rows:
            return
        for key in ("dice", "assd", "hd", "hd95", "ravd"):
            values = np.array([r.get(key, np.nan) for r in self.test_rows], dtype=float)
            if np.isfinite(values).any():
                self.log(f"test/{key}", float(np.nanmean(values)), sync_dist=False)
