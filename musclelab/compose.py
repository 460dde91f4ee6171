"""Hydra composition in one module, used by the CLI (:mod:`musclelab.cli`) and the study runner
(:mod:`musclelab.studies`): where the config tree is, the training config composed exactly as ``musclelab train``
composes it, the check of a command line before Hydra runs it, and the Hydra app every sub-command runs.

Nothing here knows what a sub-command does with its config; the callers pass their function in.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIG_NAME = "train"
VERSION_BASE = "1.3"

# Hydra's own options: a command line with one of them is left to Hydra
_HYDRA_FLAGS_WITH_VALUES = ("-c", "--cfg", "-i", "--info", "-cn", "--config-name", "-cp", "--config-path", "-cd",
                            "--config-dir", "--experimental-rerun", "--package", "-p", "--resolve")
_HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--version", "--shell-completion", "-sc", *_HYDRA_FLAGS_WITH_VALUES)


#: the installed package; a wheel carries the config tree as ``musclelab/conf/`` (setup.py)
PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The Hydra config tree (with the resolvers it uses registered: ``${run_stamp:}``): ``$MUSCLELAB_CONF`` when
    set; else the ``conf/`` folder of the checkout this package runs from (``pip install -e .`` or ``PYTHONPATH``,
    with its git-ignored ``conf/local/``); else the copy a wheel installs (``musclelab/conf``)."""
    from musclelab.slurm import register_resolvers

    register_resolvers()
    env = os.environ.get("MUSCLELAB_CONF")
    checkout = PACKAGE.parent / "conf"
    if env:
        path = Path(env).expanduser()
    elif (PACKAGE.parent / "pyproject.toml").is_file() and (checkout / f"{CONFIG_NAME}.yaml").is_file():
        path = checkout
    else:
        path = PACKAGE / "conf"
    if not (path / f"{CONFIG_NAME}.yaml").exists():
        where = "MUSCLELAB_CONF" if env else "the installed package"
        raise SystemExit(f"musclelab: no {CONFIG_NAME}.yaml in config dir {path} (from {where}); set MUSCLELAB_CONF "
                         "to the conf/ folder of a musclelab checkout, or reinstall musclelab (its wheel carries conf/)")
    return path


def compose_raw(overrides: Sequence[str]) -> "DictConfig":
    """The training config with ``overrides``, outside a Hydra app (Hydra's errors pass through)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base=VERSION_BASE):
        return compose(CONFIG_NAME, overrides=list(overrides))


def compose_train_config(overrides: Sequence[str]) -> "DictConfig":
    """The training config composed exactly as ``musclelab train`` would, without running Hydra's app; a
    composition error (unknown option or key) is a one-line :class:`~musclelab.errors.ConfigError`."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from musclelab.config_validation import compose_error
    from musclelab.errors import ConfigError

    try:
        return compose_raw(overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(compose_error(err, list(overrides), compose_raw)) from None


def compose_in_app(overrides: Sequence[str]) -> "DictConfig":
    """The training config with ``overrides`` from inside a running Hydra app (the study runner composes one
    config per data set of a study this way)."""
    from hydra import compose

    return compose(config_name=CONFIG_NAME, overrides=list(overrides))


def precheck(command: str, args: Sequence[str]) -> None:
    """Compose and validate the command line before Hydra runs it: a mistake is one line, exit 2."""
    from musclelab.config_validation import precheck_overrides
    from musclelab.errors import ConfigError

    if any(a in _HYDRA_FLAGS or a.startswith(tuple(f + "=" for f in _HYDRA_FLAGS_WITH_VALUES)) for a in args):
        return  # Hydra's own options: let Hydra handle the command line
    args = list(args)
    try:
        if command == "train" and ("-m" in args or "--multirun" in args):
            args = [*_config_sweep(args), *args]  # the experiment's own grid: every job is checked, not job 1
        precheck_overrides(args, compose_raw, check=_job_inputs if command == "train" else None)
    except ConfigError as err:
        print(f"musclelab {command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _config_sweep(args: list[str]) -> list[str]:
    """The ``hydra.sweeper.params`` of the composed config (an experiment's grid) as overrides, without the keys
    the command line sets itself (those win, as in Hydra's sweeper)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if not a.startswith("-")]
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=VERSION_BASE):
            cfg = compose(CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException):
        return []  # precheck_overrides reports the composition error itself
    node = cfg.hydra.sweeper.get("params") or {}
    params = OmegaConf.to_container(node, resolve=False) or {}
    for key in params:  # as Hydra's sweeper reads them: interpolations (``${table2.smoke}``) resolved
        try:
            params[key] = node[key]
        except OmegaConfBaseException:  # resolves only inside Hydra's app (``${hydra:...}``): checked as written
            pass
    given = {a.split("=", 1)[0].lstrip("+~") for a in overrides if "=" in a}
    return [f"{k}={v}" for k, v in params.items() if k not in given]


def _job_inputs(cfg: "DictConfig") -> None:
    """What one training job needs before it starts (registry names, sizes, init files such as
    ``init.checkpoint``): :func:`musclelab.train.validate_config`."""
    from musclelab.train import validate_config

    validate_config(cfg)


def run_app(command: str, args: Sequence[str], main: Callable[["DictConfig"], Any]) -> None:
    """Run ``main(cfg)`` as the Hydra app of ``musclelab <command>`` with ``args`` as its command line (overrides,
    ``-m`` for a multirun): checked first (:func:`precheck`); a :class:`~musclelab.errors.ConfigError` that
    ``main`` raises is one line on stderr and exit 2, never a traceback."""
    import hydra

    from musclelab.errors import ConfigError

    def app(cfg: "DictConfig") -> Any:
        try:
            return main(cfg)
        except ConfigError as err:  # the user's to fix: say what and where, no traceback
            print(f"musclelab {command}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    from musclelab.cli_help import hydra_command_help, wants_help

    if wants_help(list(args)):  # our own help, titled for the command (musclelab.cli_help)
        print(hydra_command_help(command, list(args), str(config_dir()), compose_raw))
        return
    sys.argv = [f"musclelab {command}", *args]
    precheck(command, sys.argv[1:])
    hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base=VERSION_BASE)(app)()
