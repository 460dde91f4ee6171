"""Every sub-command's ``--help`` works and is titled for itself; internal config files are not choices; every
registered model has a ``conf/model`` preset."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from musclelab import cli
from musclelab.compose import config_dir
from musclelab.config_validation import compose_error
from musclelab.models import MODELS, check_input_size

HYDRA_COMMANDS = ("train", "transfer", "pretrain")


def _help(command: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    try:
        cli.main([command, *extra, "--help"])
    except SystemExit as stop:  # argparse exits 0 after printing its help
        assert stop.code in (0, None), stop.code
    return capsys.readouterr().out


@pytest.mark.parametrize("command", cli.SUBCOMMANDS)
def test_every_subcommand_help_is_its_own(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(command, capsys)
    first = out.strip().splitlines()[0]
    assert f"musclelab {command}" in first, first
    others = [c for c in cli.SUBCOMMANDS if c != command]
    assert not any(f"musclelab {c}:" in first or f"musclelab {c} " in first for c in others), first


@pytest.mark.parametrize("command", HYDRA_COMMANDS)
def test_hydra_commands_list_groups_without_internal_files(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(command, capsys)
    groups = dict(line.split(": ", 1) for line in out.split("== Configuration groups")[1].split("\n\n")[0]
                  .splitlines()[1:])
    assert "phantom" in groups["data"].split(", ") and "_common" not in groups["data"]
    assert {"dynunet", "segresnet", "unet"} <= set(groups["model"].split(", "))
    assert "hydra" not in groups and "hydra/launcher" not in groups


def test_help_shows_the_config_the_overrides_compose(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help("train", capsys, "model=vnet", "seed=3")
    config = out.split("== Config ")[1]
    assert "name: vnet" in config and "seed: 3" in config
    assert "task_name: transfer" in _help("transfer", capsys)


def test_unknown_option_error_hides_internal_files() -> None:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        with pytest.raises(Exception) as info:
            compose("train", overrides=["data=nope"])
    message = compose_error(info.value, ["data=nope"], lambda ov: None)
    assert "known options: abdomen_phantom" in message and "_common" not in message


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_has_a_preset(name: str) -> None:
    preset = Path(config_dir()) / "model" / f"{name}.yaml"
    assert preset.is_file(), f"model={name} has no conf/model/{name}.yaml"
    plugin = ["model._target_=torch.nn.Identity"] if name == "custom" else []  # the plug-in entry needs a class
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", *plugin])
    assert cfg.model.name == name
    params = dict(cfg.model.get("params") or {})
    size = 224 if name == "paratranscnn" else 64
    check_input_size(name, size, **params)  # every preset parameter is one the model accepts
