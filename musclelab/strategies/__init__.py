"""Strategies against forgetting for the transfer chains (issue 21; beyond Yoon 2024, which only measures it).

``study.strategy`` chooses one by name (:data:`STRATEGIES`); its settings are ``study.<name>``:

* ``naive``  -- sequential fine-tuning, today's chain (its stage keys and configs are unchanged);
* ``replay`` -- a memory of earlier sites' training items mixed into every later batch (:mod:`.replay`);
* ``ewc``    -- elastic weight consolidation, Kirkpatrick et al. 2017, PNAS (:mod:`.ewc`);
* ``lwf``    -- learning without forgetting, Li & Hoiem 2017, TPAMI (:mod:`.lwf`);
* ``joint``  -- cumulative training on every site seen so far, the upper bound (:mod:`.joint`).

Why our own and not Avalanche: Avalanche (not installed, heavy) has these strategies for classification
loops of its own, but no Lightning/Hydra segmentation pipeline, no site chains and no stage cache; each
strategy here is a few dozen lines on top of :class:`~musclelab.tasks.segmentation.SegmentationTask`'s two
plug points (``batch_mixers``: change a training batch before augmentation; ``stage_terms``: extra training
losses, logged as ``train/<name>`` and their sum ``train/penalty``).

A stage ``i >= 1`` of a non-naive strategy carries ``chain_stage`` in its config (strategy, settings, the earlier
stages' data configs and directories); :func:`attach_stage` (called by ``train()``) builds the strategy's parts
from it. Stage 0 is the same training for every strategy (no ``chain_stage``): one shared stage.
"""
from __future__ import annotations

from typing import Any

from musclelab.strategies.base import STRATEGIES, Strategy, StageContext

from musclelab.strategies import naive, replay, ewc, lwf, joint  # noqa: E402,F401  (register)

__all__ = ["STRATEGIES", "Strategy", "StageContext", "attach_stage", "strategy_of", "check_strategy"]


def check_strategy(name: str) -> type[Strategy]:
    """The strategy class called ``name``; an unknown name is a one-line ConfigError listing the known ones."""
    from musclelab.errors import ConfigError
    from musclelab.registry import UnknownNameError

    try:
        return STRATEGIES.get(str(name))
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None


def strategy_of(study: Any) -> tuple[str, dict[str, Any]]:
    """(name, plain settings) of ``study.strategy`` (naive when absent)."""
    from omegaconf import OmegaConf

    name = str((study.get("strategy") if study is not None else None) or "naive")
    cls = check_strategy(name)
    raw = study.get(name) if (study is not None and cls.has_settings) else None
    settings = OmegaConf.to_container(raw, resolve=True) if OmegaConf.is_config(raw) else dict(raw or {})
    return name, settings


def attach_stage(cfg: Any, task: Any, dm: Any, build_datamodule: Any) -> dict[str, Any]:
    """Build the strategy of a chain stage (``cfg.chain_stage``) into ``task`` / ``dm``; returns what
    ``strategy_cost.json`` records: ``extra_seconds`` (the wall seconds of the strategy's own work in this
    attempt; 0 for a stage without one) and the strategy's notes (e.g. EWC's ``fisher_reused``)."""
    spec = cfg.get("chain_stage")
    if not spec:
        return {"extra_seconds": 0.0}
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(spec, resolve=True)
    ctx = StageContext(cfg=cfg, index=int(plain["index"]), settings=dict(plain.get("settings") or {}),
                       earlier=list(plain["earlier"]), build_datamodule=build_datamodule)
    seconds = float(check_strategy(plain["strategy"])().attach(ctx, task, dm))
    return {"extra_seconds": round(seconds, 3), **ctx.notes}
