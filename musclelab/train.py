"""``train(cfg)``: one training run from a resolved Hydra config to a complete run directory.

The Hydra entry point (``musclelab train``) only calls :func:`train`; tests and studies call it directly.
Slices and volumes take one path: ``data.spatial_dims`` (2 or 3) is read once (:func:`spatial_dims`) and
chooses the source's form, the datamodule (:func:`build_datamodule`), the task (:func:`build_task`, which hands
``spatial_dims`` to the model builders) and the test outputs; the test itself is the one test path
(:mod:`musclelab.evaluation.tester`). Order matters: everything a user can get wrong (names, image size,
``data.n_train``) is checked before any training, and ``run_status.json`` says ``complete`` only after every
output file has been written.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar

from musclelab.baselines import BASELINES, evaluate_baseline
from musclelab.callbacks import EpochMetricsCSV
from musclelab.checkpoint_meta import data_fields
from musclelab.checkpoint_policy import finalize_checkpoints, last_checkpoint_callback
from musclelab.config_validation import validate as validate_fields
from musclelab.data.datamodule import SegmentationDataModule
from musclelab.data.containers import SliceSet
from musclelab.data.sources import check_labels_early, source_form
from musclelab.errors import ConfigError
from musclelab.hparams_search import metric_value
from musclelab.evaluation.original_grid import NETWORK, ORIGINAL, original_of
from musclelab.evaluation.volume_from_slices import check_level, level_rows, summarize_levels
from musclelab.io import atomic_write_json, atomic_write_text
from musclelab.loggers import WANDB_ID_FILE, build_loggers, check_loggers, finish_wandb
from musclelab.losses import LOSSES
from musclelab.metrics import observer_agreement
from musclelab.models import MODELS, check_input_size
from musclelab.optim import OPTIMIZERS, SCHEDULERS
from musclelab.outputs.plots import plot_learning_curve, plot_overlays
from musclelab.outputs.status import write_status
from musclelab.outputs.summary import print_summary
from musclelab.resume import before_run, is_rank_zero, mark_stopped, trainer_callbacks, trainer_plugins
from musclelab.plugins import check_targets, instantiate
from musclelab.stopping import SaturationStop
from musclelab.pretext import PRETEXT_TASKS
from musclelab.pretext.pretrain import pretrained_trunk
from musclelab.tracking import log_run_end, tracking_callbacks
from musclelab.evaluation.tester import load_for_test, run_test, task_class
from musclelab.transfer import apply_init, check_init_config, expects_imagenet_norm

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"



def _params(section: DictConfig | None, drop: tuple[str, ...] = ("name",)) -> dict[str, Any]:
    """A config section as a plain dict without the ``drop`` keys (``{}`` for a missing section)."""
    out = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    assert isinstance(out, dict)
    return {k: v for k, v in out.items() if k not in drop}


def spatial_dims(cfg: DictConfig) -> int:
    """``data.spatial_dims`` (2 when absent); anything but 2 or 3 is a one-line error."""
    nd = cfg.data.get("spatial_dims", 2)
    if nd not in (2, 3):
        raise ConfigError(f"data.spatial_dims must be 2 (slices) or 3 (volumes), got {nd}")
    return int(nd)


def _plain(section: Any) -> Any:
    return OmegaConf.to_container(section, resolve=True) if section is not None else None


def _patch_size(cfg: DictConfig) -> list[int]:
    patch = _plain(cfg.data.get("patch_size"))
    return [patch] * 3 if isinstance(patch, int) else patch


def check_volume_config(cfg: DictConfig) -> None:
    """Volume settings and the model's 3D support and patch size, before any data is loaded (one-line
    :class:`ConfigError` naming the field)."""
    from musclelab.models.registry import dims_error

    patch = _plain(cfg.data.get("patch_size"))
    if patch is None:
        raise ConfigError("data.patch_size is not set: volumes train on patches, e.g. data.patch_size=[96,96,96]")
    spacing = _plain(cfg.data.get("spacing"))
    if spacing is not None and (not isinstance(spacing, list) or len(spacing) != 3
                                or any(not isinstance(s, (int, float)) or s <= 0 for s in spacing)):
        raise ConfigError(f"data.spacing must be three positive numbers (z, row, col) in mm or null, got {spacing}")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model={cfg.model.name} is a 2D baseline; volumes (data.spatial_dims=3) need a 3D network: "
                          f"model={'|'.join(n for n in MODELS.names() if 3 in MODELS.get(n).spatial_dims)}")
    problem = dims_error(cfg.model.name, 3)
    if problem:
        raise ConfigError(problem)
    params = _plain(cfg.model.get("params")) or {}
    if "spatial_dims" in params:
        raise ConfigError("model.params.spatial_dims is set from the data: remove it and use data.spatial_dims")
    try:
        check_input_size(cfg.model.name, patch, spatial_dims=3, **params)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from None
    sw = _plain(cfg.get("eval", {}).get("sliding_window")) or {}
    try:
        from musclelab.inference import window_from_config

        window_from_config(patch if isinstance(patch, list) else [patch] * 3, sw)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"eval.sliding_window: {err}") from None


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, before any data is loaded, on unknown names and impossible image sizes."""
    validate_fields(cfg)  # every field's type and range (musclelab.config_validation)
    dims = spatial_dims(cfg)
    source_form(cfg.data.name, dims)  # a known data set that serves this form (slices or volumes)
    if dims == 3:  # volume settings, 3D model and patch size
        check_volume_config(cfg)
    check_labels_early(cfg.data)
    if cfg.model.name in BASELINES:  # nothing to train: only the data and the test matter
        return
    MODELS.get(cfg.model.name)
    LOSSES.get(cfg.loss.name)
    OPTIMIZERS.get(cfg.optim.name)
    SCHEDULERS.get(cfg.optim.get("scheduler") or "none")
    check_loggers(cfg.logger)
    check_targets(cfg)  # plug-ins (model._target_, callbacks.extra, logger.<name>._target_) import
    check_init_config(init_settings(cfg), source_pending=cfg.init.name in PRETEXT_TASKS)
    if expects_imagenet_norm(cfg.init.name) and cfg.data.channels != 3 and not cfg.init.get("adapt_first_conv"):
        raise ConfigError(f"init={cfg.init.name} expects 3-channel ImageNet-normalised input: set data.channels=3 "
                          "(or init.adapt_first_conv=true to fold the RGB filters into one channel)")
    if dims == 2:
        check_input_size(cfg.model.name, cfg.data.img_size, **_params(cfg.model.get("params"), ()))


def set_cpu_threads(n: int | None) -> None:
    """Fix torch's intra-op CPU threads (``cpu_threads``): CPU results depend on the thread count."""
    if n is None:
        return
    if int(n) < 1:
        raise ConfigError(f"cpu_threads must be a positive number of threads or null, got {n}")
    import torch

    torch.set_num_threads(int(n))


def init_settings(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.init`` as a plain dict without the keys the transfer does not read: ``pretext`` (the pretext
    stage's training settings) and ``lr`` (the paper's learning rate for this init, read by experiments)."""
    init = _params(cfg.init, ("pretext", "lr"))
    init["name"] = cfg.init.name
    return init


def build_datamodule(cfg: DictConfig) -> SegmentationDataModule:
    """The datamodule described by ``cfg.data`` (volumes when ``data.spatial_dims`` is 3)."""
    return SegmentationDataModule(**_params(cfg.data, ()))


def build_task(cfg: DictConfig, class_names: list[str]) -> pl.LightningModule:
    """The task of ``cfg`` for the classes ``class_names``, with plain-value hyperparameters (checkpoints describe
    themselves): 2D with the image size and body composition, 3D with the patch size, sliding window and NIfTI
    predictions (``eval``); the batch augmentation from ``data.augment``."""
    common = dict(
        model=cfg.model.name, model_params=_params(cfg.model.get("params"), ()), in_channels=cfg.data.channels,
        class_names=list(class_names), loss=cfg.loss.name, loss_params=_params(cfg.loss.get("params"), ()),
        optim=_params(cfg.optim, ()), max_epochs=cfg.trainer.max_epochs, monitor=cfg.callbacks.checkpoint.monitor,
        overlay_cases=cfg.callbacks.overlay_cases,
        meta=data_fields(cfg.data),  # what inference needs (musclelab.checkpoint_meta)
        augment=_params(cfg.data.get("augment"), ("repeats",)),  # batched, on the device (data/augment.py)
        spatial_dims=spatial_dims(cfg),
    )
    if spatial_dims(cfg) == 3:
        ev = cfg.get("eval", {})
        return task_class(3)(patch_size=_patch_size(cfg), sliding_window=_plain(ev.get("sliding_window")),
                             save_predictions=int(ev.get("save_predictions", 1) or 0), **common)
    return task_class(2)(img_size=cfg.data.get("img_size"), body_composition=bool(cfg.eval.body_composition),
                         **common)


def _sweep_group(run_dir: Path) -> tuple[str, str | None]:
    """(run name, multirun group) for loggers: jobs of one sweep share the sweep directory's name."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return f"{Path(hc.sweep.dir).name}-{hc.job.num}", Path(hc.sweep.dir).name
    except ValueError:  # Hydra not initialised: train() called directly
        pass
    return run_dir.name, None


def build_callbacks(cfg: DictConfig, run_dir: Path) -> tuple[list[Callback], ModelCheckpoint]:
    """Checkpointing (best by ``callbacks.checkpoint.monitor`` + last), metrics.csv, progress, early stop."""
    cb = cfg.callbacks
    ckpt = ModelCheckpoint(
        dirpath=str(run_dir / CHECKPOINT_DIR), filename=Path(BEST_CKPT).stem, monitor=cb.checkpoint.monitor,
        mode=cb.checkpoint.mode, save_top_k=1, save_last=False, auto_insert_metric_name=False,
        enable_version_counter=False, save_weights_only=bool(cb.checkpoint.get("save_weights_only", False)),
    )  # last.ckpt (full state, for resume) comes from its own callback: musclelab.checkpoint_policy
    callbacks: list[Callback] = [ckpt, last_checkpoint_callback(run_dir / CHECKPOINT_DIR),
                                 EpochMetricsCSV(run_dir / "metrics.csv")]
    if cb.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    if cb.early_stopping.enabled:
        es = _params(cb.early_stopping, ("enabled",))
        callbacks.append(EarlyStopping(**es))
    if cb.get("saturation") and cb.saturation.enabled:   # McSweeney 2022: until every monitored loss saturates
        callbacks.append(SaturationStop(list(cb.saturation.monitors), cb.saturation.patience,
                                        cb.saturation.min_delta))
    for key, spec in (cb.get("extra") or {}).items():  # plug-ins: +callbacks.extra.<key>._target_=<class>
        callbacks.append(instantiate(spec, f"callbacks.extra.{key}", Callback))
    return callbacks, ckpt


def find_resume_checkpoint(run_dir: Path) -> Path:
    """The last checkpoint of an interrupted run, or a clear error naming what is missing."""
    last = run_dir / CHECKPOINT_DIR / LAST_CKPT
    if not last.exists():
        raise ConfigError(
            f"resume={run_dir}: no {CHECKPOINT_DIR}/{LAST_CKPT} there (the run stopped before its first epoch "
            "ended); start it again without resume="
        )
    return last


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, test and write every output of one run; returns the final metrics (for sweepers)."""
    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if (done := before_run(cfg, run_dir)) is not None:  # complete already (resume=, re-launched sweep)
        return done
    rank_zero = is_rank_zero()  # a DDP rank started as a process of its own writes no status, deletes nothing
    if rank_zero:
        write_status(run_dir, "running")
    try:
        result = _train(cfg, run_dir)
    except BaseException as err:
        if rank_zero:
            mark_stopped(run_dir, err)  # failed, or interrupted (SIGTERM, Ctrl-C, preemption: resumable)
        raise
    finally:
        finish_wandb()
    if rank_zero:
        write_status(run_dir, "complete", metrics=result)
        finalize_checkpoints(run_dir / CHECKPOINT_DIR,
                             keep_last=bool(cfg.callbacks.checkpoint.get("keep_last", True)))
    return result


def _prepare(cfg: DictConfig, run_dir: Path) -> SegmentationDataModule:
    """Everything that can fail because of what the user asked for, before any training: names, sizes,
    data parameters, splits. Such failures become :class:`ConfigError` (a clean message, no traceback)."""
    try:
        validate_config(cfg)
        if cfg.resume:
            find_resume_checkpoint(run_dir)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
        dm = build_datamodule(cfg)
        dm.setup("fit")
        check_level(cfg.eval.get("level", "slice"), dm.volumes is not None, cfg.data.name)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from err
    dm.save_manifest(run_dir)
    return dm


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    validate_fields(cfg)  # before the seed and threads are set from the config
    set_cpu_threads(cfg.get("cpu_threads"))
    pl.seed_everything(cfg.seed, workers=True)
    dm = _prepare(cfg, run_dir)
    if cfg.model.name in BASELINES:
        return _baseline(cfg, run_dir, dm)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    task = build_task(cfg, list(dm.class_names))
    if not cfg.resume:  # a resumed run restores its (already transferred) weights from the checkpoint
        init = init_settings(cfg)
        if init["name"] in PRETEXT_TASKS and not (init.get("checkpoint") or init.get("weights_path")):
            init["weights_path"] = str(pretrained_trunk(cfg, dm, run_dir))
        apply_init(task.net, init, run_dir, cfg.model.name)
    if cfg.get("chain_stage"):  # a chain stage's strategy against forgetting (musclelab.strategies)
        from musclelab.strategies import attach_stage

        cost = attach_stage(cfg, task, dm, build_datamodule)
        if is_rank_zero():
            atomic_write_json(run_dir / "strategy_cost.json", cost)
    run_name, group = _sweep_group(run_dir)
    if not cfg.resume:  # trained from the start: a new W&B run, never the id of an earlier attempt in this dir
        (run_dir / WANDB_ID_FILE).unlink(missing_ok=True)
    logger = build_loggers(cfg.logger, run_dir, run_name, group, resolved, tags=list(cfg.get("tags") or []),
                           log_dir=Path(cfg.paths.log_dir), experiment=cfg.task_name)  # [] without a logger
    callbacks, ckpt_cb = build_callbacks(cfg, run_dir)
    # step loss, learning rate; validation overlays for loggers that show images (musclelab.tracking)
    callbacks += tracking_callbacks(logger, run_dir, _params(cfg.callbacks.get("val_overlays"), ()))
    callbacks += trainer_callbacks()  # random states in checkpoints, NaN/inf stop, preemption signals
    trainer_kwargs = _params(cfg.trainer, ())
    trainer = pl.Trainer(default_root_dir=str(run_dir), logger=logger if logger else False, callbacks=callbacks,
                         enable_progress_bar=bool(cfg.callbacks.progress_bar), plugins=trainer_plugins(),
                         **trainer_kwargs)
    ckpt_path = str(find_resume_checkpoint(run_dir)) if cfg.resume else None
    t_fit = time.perf_counter()
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt_path)
    fit_time_s = time.perf_counter() - t_fit
    if trainer.global_rank != 0:  # subprocess-launched DDP ranks stop here; rank 0 tests and writes
        return {}

    best = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else run_dir / CHECKPOINT_DIR / LAST_CKPT
    result: dict[str, float] = {"best_score": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None
                                else float("nan"), "fit_time_s": round(fit_time_s, 3)}
    metrics_csv = run_dir / "metrics.csv"
    if metrics_csv.exists():
        plot_learning_curve(pd.read_csv(metrics_csv), run_dir / "learning_curve.png")
    if cfg.test and len(dm.datasets["test"]) > 0:
        result.update(_test(cfg, run_dir, best, dm, logger))
        log_run_end(logger, run_dir)  # test overlay, learning curve, test_cases table for the trackers
    if cfg.get("optimized_metric"):  # what a sweeper optimises (hparams_search): in the result and run_status.json
        ck = cfg.callbacks.checkpoint
        result[cfg.optimized_metric] = metric_value(run_dir, result, cfg.optimized_metric, ck.monitor, ck.mode)
    print_summary(run_dir, result)
    return result


def write_observer_agreement(test_set: SliceSet, run_dir: Path) -> Path | None:
    """``observers.csv``: every extra annotator of each binary test slice scored against the reference
    (Dice, RMS-DTA in cm, SMA/SMD differences) — the human-observer band of the McSweeney comparison. Each slice
    is scored for the observers who annotated it (``meta["observer_names"]`` when the source lists them), raw
    (the plain columns) and after the models' bone post-processing (``*_pp``), so both compare like with like:
    on the slice as acquired when the test set has its original (``bc_grid``: original | network, as the models'
    rows in ``test_cases.csv``)."""
    if not test_set.observers or len(test_set.class_names) != 2:
        return None
    frames = []
    marked = test_set.meta["has_observers"] if "has_observers" in test_set.meta else None
    for i, case_id in enumerate(test_set.meta["case_id"]):
        if marked is not None and not bool(marked.iloc[i]):  # a case no observer contoured
            continue
        listed = test_set.meta["observer_names"].iloc[i] if "observer_names" in test_set.meta else None
        mine = set(str(listed).split(";")) if isinstance(listed, str) else set(test_set.observers)
        masks = {name: obs[i] for name, obs in test_set.observers.items() if name in mine}
        if not masks:
            continue
        orig = original_of(test_set, case_id)  # the contours as drawn, on the slice as acquired (as the models)
        if orig is not None and orig.observers:
            masks = {name: m for name, m in orig.observers.items() if name in masks}
            image, reference, spacing, grid = orig.hu, orig.label, orig.spacing, ORIGINAL
        else:
            image, spacing = np.asarray(test_set.images[i], np.float32), tuple(test_set.spacing[i])
            reference, grid = test_set.labels[i], NETWORK
        df = observer_agreement(masks, reference, image, spacing)
        # also post-processed exactly like a model's prediction (>175 HU dilated by 2 mm removed): columns *_pp
        pp = observer_agreement(masks, reference, image, spacing, postprocess=True)
        df = df.merge(pp.add_suffix("_pp").rename(columns={"observer_pp": "observer"}), on="observer")
        frames.append(df.assign(case_id=case_id, bc_grid=grid))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    table = table[["case_id", *[c for c in table.columns if c != "case_id"]]]
    return atomic_write_text(run_dir / "observers.csv", table.to_csv(index=False))


def _test(cfg: DictConfig, run_dir: Path, best: Path, dm: SegmentationDataModule, logger: Any) -> dict[str, float]:
    """Evaluate ``best`` on the test split on one device (each case exactly once) and write its outputs: 3D
    metrics in the source geometry, ``predicted_volumes.csv`` and NIfTI predictions under ``predictions/``, or the 2D slice rows (and
    ``eval.level`` volume rows)."""
    dims = spatial_dims(cfg)
    model = load_for_test(best, dims)
    if dims == 3:
        from musclelab.outputs.predicted_volumes import write_predicted_volumes
        from musclelab.outputs.volume import write_volume_test_outputs

        model.prediction_dir = run_dir / "predictions"
        run_test(model, dm, cfg, run_dir, logger)
        out = write_volume_test_outputs(run_dir, model.test_rows, model.test_examples, model.class_names,
                                        model.test_forward_s, str(best))
        # Kim 2024 Figs. 7-8: every scored participant's predicted volumes, raw and per height²
        write_predicted_volumes(run_dir, pd.DataFrame(model.test_rows), model.class_names,
                                {"model": str(cfg.model.name), "seed": int(cfg.seed), "fold": int(cfg.data.fold)})
        return out
    run_test(model, dm, cfg, run_dir, logger)
    rows = level_rows(cfg.eval.get("level", "slice"), model.test_rows, model, dm, run_dir,
                      bool(cfg.eval.get("save_volumes", False)))  # eval.level: slice rows and/or 3D volume rows
    return _write_test_outputs(run_dir, dm, rows, model.test_examples, model.class_names,
                               model.test_forward_s, str(best), logger)


def _baseline(cfg: DictConfig, run_dir: Path, dm: SegmentationDataModule) -> dict[str, float]:
    """A non-learning baseline (:mod:`musclelab.baselines`): no training, the test split scored like a model."""
    dm.setup("test")
    try:
        rows, examples, seconds = evaluate_baseline(
            cfg.model.name, _params(cfg.model.get("params"), ()), dm.datasets["test"], list(dm.class_names),
            body_composition=bool(cfg.eval.body_composition), n_examples=cfg.callbacks.overlay_cases)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    result: dict[str, float] = {"fit_time_s": 0.0}
    if rows:
        result.update(_write_test_outputs(run_dir, dm, rows, examples, list(dm.class_names), seconds, None, None))
    name = cfg.get("optimized_metric")
    if name and str(name).startswith("val/") and len(dm.datasets["val"]) > 0:  # a sweeper's value: scored on val
        val_rows, _, _ = evaluate_baseline(cfg.model.name, _params(cfg.model.get("params"), ()), dm.datasets["val"],
                                           list(dm.class_names), body_composition=False, n_examples=0)
        column = str(name).split("/", 1)[1]
        values = [r[column] for r in val_rows if column in r]
        result[name] = float(np.nanmean(values)) if values else float("nan")
    print_summary(run_dir, result)
    return result


def _write_test_outputs(run_dir: Path, dm: SegmentationDataModule, case_rows: list[dict], examples: list[dict],
                        class_names: list[str], forward_s: float, checkpoint: str | None,
                        logger: Any) -> dict[str, float]:
    """``test_cases.csv``, ``test_summary.json`` (with inference ms per slice), ``observers.csv`` and
    ``test_overlay.png``; returns the mean test metrics for ``run_status.json``."""
    rows = pd.DataFrame(case_rows)
    atomic_write_text(run_dir / "test_cases.csv", rows.to_csv(index=False))
    summary, by_level = summarize_levels(rows)
    n_slices = int((rows["level"] == "slice").sum()) if "level" in rows else len(rows)
    ms_per_slice = 1000.0 * forward_s / max(1, n_slices or len(dm.datasets["test"]))
    atomic_write_json(run_dir / "test_summary.json", {"checkpoint": checkpoint, "n_cases": len(rows),
                                                      "inference_ms_per_slice": ms_per_slice, "metrics": summary,
                                                      **({"metrics_by_level": by_level} if by_level else {})})
    write_observer_agreement(dm.datasets["test"].slices, run_dir)
    scores = dict(zip(rows["case_id"], rows["dice"])) if "dice" in rows else None
    plot_overlays(examples, class_names, run_dir / "test_overlay.png", scores)
    out = {f"test/{k}": v["mean"] for k, v in summary.items() if not k.startswith("spacing")}
    return {**out, "inference_ms_per_slice": ms_per_slice}
