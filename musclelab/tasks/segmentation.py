"""``SegmentationTask``: the one segmentation LightningModule, for slices (``spatial_dims=2``) and volumes (3),
built from plain-value hyperparameters.

The model, loss and optimiser come from their registries by name, so a checkpoint's hyperparameters describe
the whole task (class names, window, spacing handling) and ``load_from_checkpoint`` needs nothing else.
Epoch-level Dice (training and validation) is :class:`musclelab.tasks.train_metrics.EpochDice`: global over the
epoch, synced across DDP ranks, from per-class bincounts (voxels, not voxels × classes²); per-case test metrics in
mm come from :mod:`musclelab.metrics` on the predicted label maps.

Volumes (``spatial_dims=3``, decided once from ``data.spatial_dims``): training on patches, validation and test on
whole volumes with a sliding window (:mod:`musclelab.inference`); test cases are scored in the source geometry
(Dice / Jaccard / HD / HD95 / ASSD per class in mm, per-class volumes in mL of the prediction, the reference and
every rater, the signed RAVD: :mod:`musclelab.metrics.volume`), with the case's metadata (sex, height, sarcopenia)
for the Kim 2024 analyses and the sliding-window seconds of the case; predicted masks are written as NIfTI.
Checkpoints of the former ``VolumeSegmentationTask`` load into this class (same hyperparameters).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from musclelab.checkpoint_meta import add_to_checkpoint
from musclelab.data.augment import build_augmentation
from musclelab.evaluation.original_grid import (NETWORK, ORIGINAL, body_composition_row, original_of,
                                                upsample_logits)
from musclelab.inference import SlidingWindow, sliding_window_logits
from musclelab.losses import build_loss, logits_to_labels
from musclelab.metrics import case_metrics
from musclelab.metrics.volume import volume_rows
from musclelab.models import build_model
from musclelab.optim import build_optimizer, build_scheduler
from musclelab.tasks.train_metrics import EpochDice

# Lightning warns whenever a LightningModule's batch hook is used together with a datamodule; the augmentation
# belongs to the task on purpose (it runs on the device and its stream is the task's), so this one is expected.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")

# case metadata copied into 3D test rows when the data has it (the thigh phantom and the Kim 2024 analyses)
META_COLUMNS = ("sex", "height_m", "smi_kg_m2", "sarcopenic", "age")


class SegmentationTask(pl.LightningModule):
    """Train, validate and test a segmentation network on batches of ``image``/``label``/``spacing``.

    Args:
        model: registry name (``model.name``); model_params: its keyword arguments.
        in_channels: image channels (1, or 3 for ImageNet-style inputs); class_names: background first.
        img_size: 2D input side length in pixels (checked against the architecture before training).
        loss / loss_params: registry name and arguments; optim: ``name``, ``lr``, ``scheduler`` and optimiser kwargs.
        max_epochs: for the learning-rate schedule; monitor: metric the plateau schedule watches.
        overlay_cases: how many test cases keep images and predictions for the overlay figure.
        meta: free-form metadata saved in the checkpoint (window, data set, ...).
        body_composition: also score each binary test case by SMA (cm²) and SMD (HU) after the McSweeney bone
            post-processing (>175 HU dilated by 2 mm removed from the prediction): columns ``sma_*``, ``smd_*``
            (and ``*_raw``: the same without post-processing), ``dice_pp`` and ``rms_dta_cm``, on the test
            slice as acquired when the test set has its original (the logits interpolated to that grid;
            :mod:`musclelab.evaluation.original_grid`), else on the network's grid; ``bc_grid`` says which.
        spatial_dims: 2 (slices) or 3 (volumes), from the data.
        patch_size: 3D training patch (D, H, W) = the sliding-window ROI; sliding_window: ``overlap``, ``mode``,
            ``sigma_scale``, ``sw_batch_size`` (``eval.sliding_window``); save_predictions: how many 3D test cases
            get their predicted mask written as NIfTI (``predictions/<case>.nii.gz``, source grid and, for files,
            the source affine).
        augment: ``data.augment`` (without ``repeats``): the training batches' augmentation, run on the device in
            :meth:`on_after_batch_transfer` (:mod:`musclelab.data.augment`); None or all-off: none.
    """

    def __init__(
        self, model: str, model_params: dict[str, Any], in_channels: int, class_names: list[str],
        img_size: Any = None, loss: str = "ce_dice", loss_params: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
        max_epochs: int = 1, monitor: str = "val/loss", overlay_cases: int = 8, meta: dict[str, Any] | None = None,
        body_composition: bool = False, spatial_dims: int = 2, augment: dict[str, Any] | None = None,
        patch_size: Sequence[int] | None = None, sliding_window: dict[str, Any] | None = None,
        save_predictions: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if int(spatial_dims) not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (slices) or 3 (volumes), got {spatial_dims}")
        self.spatial_dims = int(spatial_dims)
        self.window: SlidingWindow | None = None
        if self.spatial_dims == 3:
            if patch_size is None:
                raise ValueError("a 3D task needs patch_size (data.patch_size)")
            img_size = [int(p) for p in patch_size]
            self.window = SlidingWindow(tuple(img_size), **(sliding_window or {}))
        self.prediction_dir: Path | None = None   # 3D: where test predictions go (set by the test run)
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.loss_fn = build_loss(loss, self.num_classes, **(loss_params or {}))
        self.net = build_model(model, in_channels, self.loss_fn.out_channels, img_size, spatial_dims=self.spatial_dims,
                               **(model_params or {}))
        # the global Dice torchmetrics' DiceScore gave, from per-class bincounts (train_metrics)
        self.val_dice = EpochDice(self.num_classes, per_class=True)
        # train Dice is logged as a metric object so it is reduced before callbacks read the epoch's metrics
        self.train_dice = EpochDice(self.num_classes)
        self.augmentation = build_augmentation(
            self.spatial_dims, None if augment is None else {k: v for k, v in augment.items() if k != "repeats"},
            window=(meta or {}).get("window", "abdomen"), channels=in_channels)
        self.test_rows: list[dict[str, Any]] = []
        self.test_examples: list[dict[str, np.ndarray]] = []
        self.test_forward_s = 0.0
        # strategies against forgetting (musclelab.strategies), attached by train() for a chain stage, never
        # saved as hyperparameters or weights: batch_mixers(batch, step, rank) -> batch before augmentation;
        # stage_terms(task, batch, logits) -> extra training loss, logged as train/<name> and train/penalty
        self.batch_mixers: list[Any] = []
        self.stage_terms: list[Any] = []

    def setup(self, stage: str) -> None:
        if self.augmentation is not None:  # the run seed, one stream per rank; a resumed fit restores the state
            import os

            seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))  # set by seed_everything, also in
            self.augmentation.seed(seed + 7919 * self.global_rank)              # ddp_spawn's processes

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches where they are (the device), one sampling grid per batch."""
        trainer = self._trainer
        if self.batch_mixers and trainer is not None and trainer.training:
            step = int(trainer.fit_loop.epoch_loop.batch_progress.total.ready)  # restored on resume
            for mix in self.batch_mixers:
                batch = mix(batch, step, int(trainer.global_rank))
        if self.augmentation is not None and trainer is not None and trainer.training:
            batch["image"], batch["label"] = self.augmentation(batch["image"], batch["label"])
        return batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C_out, H, W)`` for images ``(B, C_in, H, W)``."""
        return self.net(x)

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted label maps ``(B, H, W)``."""
        return logits_to_labels(self(x))

    def _step(self, batch: dict[str, Any], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch["image"])
        loss = self.loss_fn(logits, batch["label"])
        bs = batch["image"].shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        return loss, logits_to_labels(logits.detach())

    def _log_dice(self, metric: EpochDice, stage: str) -> None:
        per_class = metric.compute().reshape(-1)
        metric.reset()
        self.log(f"{stage}/dice", per_class.mean(), prog_bar=True, sync_dist=False)
        if len(per_class) > 1:
            for name, value in zip(self.class_names[1:], per_class):
                self.log(f"{stage}/dice_{name}", value, sync_dist=False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.stage_terms:
            return self._training_step_with_terms(batch)
        loss, pred = self._step(batch, "train")
        self.train_dice.update(pred, batch["label"])  # update only: the epoch value is computed once
        self.log("train/dice", self.train_dice, on_step=False, on_epoch=True, batch_size=pred.shape[0])
        return loss

    def _training_step_with_terms(self, batch: dict[str, Any]) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss_fn(logits, batch["label"])
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        values = [term(self, batch, logits) for term in self.stage_terms]
        penalty = values[0] if len(values) == 1 else sum(values)
        for term, value in zip(self.stage_terms, values):
            if len(values) > 1:
                self.log(f"train/{term.name}", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log("train/penalty", penalty, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        pred = logits_to_labels(logits.detach())
        self.train_dice.update(pred, batch["label"])
        self.log("train/dice", self.train_dice, on_step=False, on_epoch=True, batch_size=bs)
        return loss + penalty

    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Blended logits of whole volumes ``(B, C, D, H, W)`` (3D)."""
        assert self.window is not None, "sliding windows are for 3D tasks"
        return sliding_window_logits(self, image, self.window)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.spatial_dims == 3:   # a whole volume per batch
            logits = self.sliding_window(batch["image"])
            loss = self.loss_fn(logits, batch["label"])
            self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1, sync_dist=True)
            pred = logits_to_labels(logits)
        else:
            _, pred = self._step(batch, "val")
        self.val_dice.update(pred, batch["label"])

    def on_validation_epoch_end(self) -> None:
        self._log_dice(self.val_dice, "val")

    def on_test_epoch_start(self) -> None:
        self.test_rows, self.test_examples = [], []
        self.test_forward_s = 0.0

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.spatial_dims == 3:
            return self._test_volume(batch, batch_idx)
        t0 = time.perf_counter()
        logits = self(batch["image"])
        loss = self.loss_fn(logits, batch["label"])
        self.log("test/loss", loss, on_step=False, on_epoch=True, batch_size=logits.shape[0], sync_dist=True)
        pred = logits_to_labels(logits)
        if pred.is_cuda:
            torch.cuda.synchronize(pred.device)
        self.test_forward_s += time.perf_counter() - t0  # network + loss only, not the metrics below
        preds = pred.cpu().numpy()
        labels = batch["label"].cpu().numpy()
        scored_bc = self.hparams.body_composition and self.num_classes == 2
        for i, case_id in enumerate(batch["case_id"]):
            spacing = tuple(float(s) for s in batch["spacing"][i])
            row = {"case_id": case_id, "spacing_row_mm": spacing[0], "spacing_col_mm": spacing[1]}
            row.update(case_metrics(preds[i], labels[i], spacing, self.class_names))
            if scored_bc:  # on the slice as acquired when the test set has it (McSweeney §2.3), else this grid
                orig = original_of(self._test_slices(), case_id)
                if orig is not None:
                    row.update(body_composition_row(upsample_logits(logits[i].detach(), orig.hu.shape), orig.label,
                                                    orig.hu, orig.spacing, ORIGINAL))
                else:
                    row.update(body_composition_row(preds[i], labels[i], batch["hu"][i].cpu().numpy(), spacing,
                                                    NETWORK))
            self.test_rows.append(row)
            if len(self.test_examples) < self.hparams.overlay_cases:
                self.test_examples.append({"case_id": case_id, "image": batch["image"][i].cpu().numpy(),
                                           "label": labels[i], "pred": preds[i]})

    def _test_slices(self) -> Any:
        """The test split's :class:`~musclelab.data.containers.SliceSet` (None outside a datamodule's test)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        test = getattr(dm, "datasets", {}).get("test") if dm is not None else None
        return getattr(test, "slices", None)

    def _volumes(self):
        return self.trainer.datamodule.datasets["test"].volumes

    def _test_volume(self, batch: dict[str, Any], batch_idx: int) -> None:
        """One whole test volume: sliding window, scores on the source grid, NIfTI prediction."""
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
        if self.spatial_dims == 3:
            for key in ("dice", "assd", "hd", "hd95", "ravd"):
                values = np.array([r.get(key, np.nan) for r in self.test_rows], dtype=float)
                if np.isfinite(values).any():
                    self.log(f"test/{key}", float(np.nanmean(values)), sync_dist=False)
            return
        keys = [k for k, v in self.test_rows[0].items() if isinstance(v, float) and not k.startswith("spacing")]
        for key in keys:
            values = np.array([r[key] for r in self.test_rows], dtype=float)
            if np.isfinite(values).any():
                self.log(f"test/{key}", float(np.nanmean(values)), sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make every checkpoint self-describing for inference (:mod:`musclelab.checkpoint_meta`)."""
        add_to_checkpoint(checkpoint, self.hparams)

    def configure_optimizers(self) -> Any:
        cfg = dict(self.hparams.optim or {"name": "adam", "lr": 1e-3})
        name, lr = cfg.pop("name"), cfg.pop("lr")
        scheduler = cfg.pop("scheduler", "none") or "none"
        optimizer = build_optimizer(self.parameters(), name, lr, **cfg)
        sched = build_scheduler(optimizer, scheduler, self.hparams.max_epochs, self.hparams.monitor)
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}
