"""Packaging: where the config tree is found (checkout, wheel copy, MUSCLELAB_CONF) and ``musclelab --version``.
The wheel itself is built, installed outside the checkout and run by ``.ci/wheel`` (CI)."""
from __future__ import annotations

from pathlib import Path

import pytest

import musclelab
from musclelab import cli
from musclelab import compose as config_paths


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "train.yaml").write_text("seed: 0\n")
    return root


def test_config_dir_checkout_then_wheel_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSCLELAB_CONF", raising=False)
    site = tmp_path / "site-packages"
    package = site / "musclelab"
    monkeypatch.setattr(config_paths, "PACKAGE", package)
    packaged = _tree(package / "conf")
    assert config_paths.config_dir() == packaged  # installed from a wheel: the copy it carries
    (site / "conf").mkdir()  # a stray conf/ next to site-packages' packages is not a checkout
    _tree(site / "conf" / "x")
    assert config_paths.config_dir() == packaged
    (site / "pyproject.toml").write_text("")
    (site / "conf" / "train.yaml").write_text("seed: 0\n")
    assert config_paths.config_dir() == site / "conf"  # a checkout: its own conf/ (with its conf/local/)
    mine = _tree(tmp_path / "mine")
    monkeypatch.setenv("MUSCLELAB_CONF", str(mine))
    assert config_paths.config_dir() == mine  # MUSCLELAB_CONF wins


def test_config_dir_missing_tree_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSCLELAB_CONF", str(tmp_path))
    with pytest.raises(SystemExit, match="no train.yaml in config dir .*MUSCLELAB_CONF"):
        config_paths.config_dir()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"musclelab {musclelab.__version__}"
