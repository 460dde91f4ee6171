"""Plug-ins: a user's own network, Lightning callback or logger, named by ``_target_`` (an importable
``module.Class``), as lightning-hydra-template users write them. Built-in names stay in their registries;
``_target_`` is the way out for anything else:

* ``model=custom model._target_=my_models.TinyNet +model.params.width=6`` (:mod:`musclelab.models.custom`);
* ``+callbacks.extra.<key>._target_=pytorch_lightning.callbacks.LearningRateMonitor`` (+ its arguments);
* ``+logger.<key>._target_=pytorch_lightning.loggers.CometLogger`` (+ its arguments).

Importing and constructing go through Hydra's own ``get_object`` and ``instantiate``; this module adds only what
they lack for us: a one-line :class:`~musclelab.errors.ConfigError` naming the config field and the fix, and a
check of the constructed type. :func:`check_targets` imports every target of a config before any data is loaded.
"""
from __future__ import annotations

from typing import Any, Mapping

from musclelab.errors import ConfigError

TARGET = "_target_"


def locate(target: Any, field: str) -> Any:
    """The object ``target`` names (``module.Class``), or a one-line error naming ``field`` and the fix."""
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{field}={target!r}: give an importable module.Class, e.g. my_models.TinyNet")
    import logging

    from hydra.utils import get_object

    hydra_log = logging.getLogger("hydra.utils")  # it logs the failure as an error before raising it
    level, hydra_log.disabled = hydra_log.disabled, True
    try:
        return get_object(target)
    except Exception as err:  # ImportError, AttributeError, or an error raised while importing the module
        root = err.__cause__ or err
        cause = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        raise ConfigError(f"{field}={target}: cannot be imported ({cause}); put the module that defines it on "
                          "PYTHONPATH (or fix the name)") from None
    finally:
        hydra_log.disabled = level


def instantiate(spec: Mapping[str, Any], field: str, kind: type | tuple[type, ...], **kwargs: Any) -> Any:
    """Construct ``spec`` (a mapping with ``_target_`` and keyword arguments) with Hydra's ``instantiate``,
    ``kwargs`` added; the result must be a ``kind``. Errors name ``field`` (e.g. ``callbacks.extra.lr``)."""
    from hydra.utils import instantiate as hydra_instantiate
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    plain.setdefault("_convert_", "all")  # plain dicts and lists for the user's class, not DictConfig
    locate(plain.get(TARGET), f"{field}.{TARGET}")
    try:
        obj = hydra_instantiate(plain, **kwargs)
    except Exception as err:
        cause = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{field}: {plain[TARGET]}(...) failed: {cause}; check the arguments under {field}") from None
    if not isinstance(obj, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ConfigError(f"{field}.{TARGET}={plain[TARGET]} is a {type(obj).__name__}, not a {names}")
    return obj


def targets(cfg: Any) -> dict[str, str]:
    """Every plug-in of a training config: config field -> ``_target_`` (model, extra callbacks, loggers)."""
    from omegaconf import OmegaConf

    found: dict[str, str] = {}

    def add(section: Any, field: str) -> None:
        if OmegaConf.is_dict(section) or isinstance(section, dict):
            for key, value in section.items():
                if (OmegaConf.is_dict(value) or isinstance(value, dict)) and value.get(TARGET) is not None:
                    found[f"{field}.{key}.{TARGET}"] = value[TARGET]

    model = cfg.get("model") or {}
    if model.get(TARGET) is not None:
        found[f"model.{TARGET}"] = model[TARGET]
    add((cfg.get("callbacks") or {}).get("extra"), "callbacks.extra")
    add(cfg.get("logger"), "logger")
    return found


def check_targets(cfg: Any) -> None:
    """Import every plug-in target of ``cfg`` (one-line error for the first that cannot be imported)."""
    for field, target in targets(cfg).items():
        locate(target, field)
