"""Experiment loggers: ``csv``, ``tensorboard``, ``wandb``, ``mlflow``, any number of them in one run.

The ``logger`` config section maps a logger name to its settings (the layout lightning-hydra-template users
know): ``logger=wandb`` gives ``{wandb: {project: ..., ...}}``, ``logger=[csv,mlflow]`` composes both presets
(Hydra's list of options of one group), ``logger=none`` gives ``{}``. An entry with a ``_target_`` is a
plug-in (:mod:`musclelab.plugins`): ``+logger.comet._target_=pytorch_lightning.loggers.CometLogger``.

W&B never needs an account for tests or default runs: ``logger=wandb`` works with ``WANDB_MODE=offline``.
All jobs of one Hydra multirun share a W&B group; a resumed run reuses its W&B run id, which is stored
in ``<run dir>/wandb_run_id.txt`` when the run starts. MLflow writes to a local tracking store under the
outputs folder by default (``sqlite:///<paths.log_dir>/mlflow.db``, artifacts in ``<paths.log_dir>/mlartifacts``;
MLflow 3 refuses plain-folder stores), or to ``logger.mlflow.tracking_uri`` / ``$MLFLOW_TRACKING_URI``.
What the trackers get beyond Lightning's own metric logging is in :mod:`musclelab.tracking`.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Mapping

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from musclelab.errors import ConfigError
from musclelab.io import atomic_write_text
from musclelab.plugins import TARGET, instantiate
from musclelab.registry import Registry

LOGGERS: Registry[str] = Registry("logger", "logger.<name>")
for _name in ("csv", "tensorboard", "wandb", "mlflow"):
    LOGGERS.register(_name)(_name)

WANDB_ID_FILE = "wandb_run_id.txt"
MLFLOW_ID_FILE = "mlflow_run_id.txt"


def logger_entries(section: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The ``logger`` section as ``{name: settings}`` (plain dicts); the old one-logger layout
    (``{name: wandb, project: ...}``, in configs saved by earlier versions) is read as ``{wandb: {...}}``."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section or {})
    if isinstance(plain.get("name"), str):  # the layout before several loggers per run
        name = plain.pop("name")
        return {} if name == "none" else {name: plain}
    return {str(k): dict(v or {}) for k, v in plain.items()}


def check_loggers(section: Mapping[str, Any] | None) -> None:
    """Every entry a known logger or a ``_target_`` plug-in (one-line error listing the known ones)."""
    for name, settings in logger_entries(section).items():
        if name not in LOGGERS and TARGET not in settings:
            raise ConfigError(f"logger.{name}: unknown logger; known loggers: {', '.join(LOGGERS.names())} "
                              f"(choose them with logger=[csv,mlflow]), or a plug-in: +logger.{name}._target_=<class>")


def build_loggers(section: Mapping[str, Any] | None, run_dir: Path, run_name: str, group: str | None,
                  config: dict[str, Any], tags: list[str] | None = None, log_dir: Path | None = None,
                  experiment: str = "musclelab") -> list[Logger]:
    """One Lightning logger per entry of ``section``, each writing under ``run_dir`` (MLflow: its tracking
    store, by default under ``log_dir``); ``tags`` go to W&B and MLflow, ``group`` to W&B (MLflow: a tag)."""
    check_loggers(section)
    out: list[Logger] = []
    for name, settings in logger_entries(section).items():
        if TARGET in settings:
            out.append(instantiate(settings, f"logger.{name}", Logger))
        elif name == "csv":
            out.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
        elif name == "tensorboard":
            out.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                                         default_hp_metric=False))
        elif name == "wandb":
            settings["group"] = settings.get("group") or group  # logger.wandb.group, else the sweep's
            out.append(_wandb_logger(run_dir, run_name, config, tags or [], **settings))
        elif name == "mlflow":
            out.append(_mlflow_logger(run_dir, run_name, group, config, tags or [], log_dir or run_dir.parent,
                                      experiment, **settings))
    return out


def _wandb_logger(run_dir: Path, run_name: str, config: dict[str, Any], tags: list[str], group: str | None = None,
                  project: str = "musclelab", entity: str | None = None, mode: str | None = None,
                  log_model: bool = False, **extra: Any) -> Logger:
    from pytorch_lightning.loggers import WandbLogger

    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    if not id_file.exists():
        atomic_write_text(id_file, run_id + "\n")
    mode = mode or os.environ.get("WANDB_MODE")
    kwargs: dict[str, Any] = dict(project=project, entity=entity, group=group, name=run_name, id=run_id,
                                  resume="allow", save_dir=str(run_dir), log_model=log_model, config=config,
                                  tags=list(tags))
    if mode:
        kwargs["mode"] = mode
    kwargs.update(extra)
    return WandbLogger(**kwargs)


def mlflow_uri(tracking_uri: str | None, log_dir: Path) -> str:
    """The MLflow tracking URI: the configured one, else ``$MLFLOW_TRACKING_URI``, else a local SQLite store
    ``<log_dir>/mlflow.db`` (absolute, so every job of a sweep writes to the same store)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    log_dir = Path(log_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{log_dir / 'mlflow.db'}"


def _mlflow_logger(run_dir: Path, run_name: str, group: str | None, config: dict[str, Any], tags: list[str],
                   log_dir: Path, default_experiment: str, experiment_name: str | None = None,
                   tracking_uri: str | None = None, artifact_location: str | None = None,
                   log_model: bool = False, **extra: Any) -> Logger:
    from pytorch_lightning.loggers import MLFlowLogger

    uri = mlflow_uri(tracking_uri, log_dir)
    local = uri.startswith("sqlite:") and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    if artifact_location is None and local:  # next to the store, not in the current folder
        artifact_location = str(Path(log_dir).resolve() / "mlartifacts")
    id_file = run_dir / MLFLOW_ID_FILE  # a resumed run continues its MLflow run
    run_id = id_file.read_text().strip() if id_file.exists() else None
    mlflow_tags = {"musclelab.run_dir": str(run_dir), **({"group": group} if group else {}),
                   **{f"tag.{t}": "true" for t in tags}, **({"tags": ",".join(tags)} if tags else {})}
    logger = MLFlowLogger(experiment_name=experiment_name or default_experiment, run_name=run_name,
                          tracking_uri=uri, tags=mlflow_tags, artifact_location=artifact_location,
                          log_model=log_model, run_id=run_id, **extra)
    if run_id is None:
        atomic_write_text(id_file, logger.run_id + "\n")  # creates the run now, so the id is known
        logger.log_hyperparams(config)
    return logger


def finish_wandb() -> None:
    """Close the active W&B run (if any) so the next job of a multirun starts its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
