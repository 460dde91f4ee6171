"""``train(cfg)``: one training run from a resolved Hydra config to a complete run directory.

The Hydra entry point (``musclelab train``) only calls :func:`train`; tests and studies call it directly.
Order matters: everything a user can get wrong (names, image size, ``data.n_train``) is checked before
any training, and ``run_status.json`` says ``complete`` only after every output file has been written.
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
from musclelab.evaluation.volume_from_slices import check_level, level_rows, summarize_levels
from musclelab.io import atomic_write_json, atomic_write_text
from musclelab.loggers import build_loggers, check_loggers, finish_wandb
from musclelab.losses import LOSSES
from musclelab.metrics import observer_agreement, summarize
from musclelab.models import MODELS, check_input_size
from musclelab.optim import OPTIMIZERS, SCHEDULERS
from musclelab.outputs.plots import plot_learning_curve, plot_overlays
from musclelab.outputs.status import write_status
from musclelab.outputs.summary import print_summary
from musclelab.resume import before_run, mark_stopped, trainer_callbacks, trainer_plugins
from musclelab.slurm import cluster_plugins
from musclelab.plugins import check_targets, instantiate
from musclelab.pretext import PRETEXT_TASKS
from musclelab.pretext.pretrain import pretrained_trunk
from musclelab.tasks import SegmentationTask
from musclelab.tracking import log_run_end, tracking_callbacks
from musclelab.train_volume import (VOLUME_KEYS, build_volume_datamodule, check_volume_config, is_volume,
                                    test_volume, volume_task)
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


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, before any data is loaded, on unknown names and impossible image sizes."""
    validate_fields(cfg)  # every field's type and range (musclelab.config_validation)
    if is_volume(cfg):  # data.spatial_dims=3: volume source, settings, 3D model and patch size (train_volume.py)
        check_volume_config(cfg)
    else:
        source_form(cfg.data.name, 2)
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
    if not is_volume(cfg):
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
    if is_volume(cfg):
        return build_volume_datamodule(cfg)
    return SegmentationDataModule(**_params(cfg.data, VOLUME_KEYS))


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
    write_status(run_dir, "running")
    try:
        result = _train(cfg, run_dir)
    except BaseException as err:
        mark_stopped(run_dir, err)  # failed, or interrupted (SIGTERM/preemption: resumable)
        raise
    finally:
        finish_wandb()
    write_status(run_dir, "complete", metrics=result)
    finalize_checkpoints(run_dir / CHECKPOINT_DIR, keep_last=bool(cfg.callbacks.checkpoint.get("keep_last", True)))
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
    monitor = cfg.callbacks.checkpoint.monitor
    task = (volume_task(cfg) if is_volume(cfg) else SegmentationTask)(
        model=cfg.model.name, model_params=_params(cfg.model.get("params"), ()),
        in_channels=cfg.data.channels, class_names=list(dm.class_names), img_size=cfg.data.get("img_size"),
        loss=cfg.loss.name, loss_params=_params(cfg.loss.get("params"), ()),
        optim=_params(cfg.optim, ()), max_epochs=cfg.trainer.max_epochs, monitor=monitor,
        overlay_cases=cfg.callbacks.overlay_cases, body_composition=bool(cfg.eval.body_composition),
        meta=data_fields(cfg.data),  # what inference needs (musclelab.checkpoint_meta)
    )
    if not cfg.resume:  # a resumed run restores its (already transferred) weights from the checkpoint
        init = init_settings(cfg)
        if init["name"] in PRETEXT_TASKS and not (init.get("checkpoint") or init.get("weights_path")):
            init["weights_path"] = str(pretrained_trunk(cfg, dm, run_dir))
        apply_init(task.net, init, run_dir, cfg.model.name)
    run_name, group = _sweep_group(run_dir)
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
        result[cfg.optimized_metric] = metric_value(run_dir, result, cfg.optimized_metric, monitor,
                                                    cfg.callbacks.checkpoint.mode)
    print_summary(run_dir, result)
    return result


def write_observer_agreement(test_set: SliceSet, run_dir: Path) -> Path | None:
    """``observers.csv``: every extra annotator of each binary test slice scored against the reference
    (Dice, RMS-DTA in cm, SMA/SMD differences) — the human-observer band of the McSweeney comparison."""
    if not test_set.observers or len(test_set.class_names) != 2:
        return None
    frames = []
    marked = test_set.meta["has_observers"] if "has_observers" in test_set.meta else None
    for i, case_id in enumerate(test_set.meta["case_id"]):
        if marked is not None and not bool(marked.iloc[i]):  # a case no observer contoured
            continue
        masks = {name: obs[i] for name, obs in test_set.observers.items()}
        df = observer_agreement(masks, test_set.labels[i], np.asarray(test_set.images[i], np.float32),
                                tuple(test_set.spacing[i]))
        frames.append(df.assign(case_id=case_id))
    if not frames:
        return None
    table = pd.concat(frames, ignore_index=True)
    table = table[["case_id", *[c for c in table.columns if c != "case_id"]]]
    return atomic_write_text(run_dir / "observers.csv", table.to_csv(index=False))


def _test(cfg: DictConfig, run_dir: Path, best: Path, dm: SegmentationDataModule, logger: Any) -> dict[str, float]:
    """Evaluate ``best`` on the test split on one device (each case exactly once) and write its outputs."""
    if is_volume(cfg):
        return test_volume(cfg, run_dir, best, dm, logger)
    tester = pl.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, precision=cfg.trainer.get("precision"),
        logger=logger if logger else False, enable_progress_bar=bool(cfg.callbacks.progress_bar),
        enable_checkpointing=False, default_root_dir=str(run_dir), deterministic=cfg.trainer.get("deterministic"),
        limit_test_batches=cfg.trainer.get("limit_test_batches", 1.0), plugins=cluster_plugins(),
    )
    model = SegmentationTask.load_from_checkpoint(str(best), map_location="cpu", weights_only=True)
    tester.test(model, datamodule=dm, verbose=False)
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
