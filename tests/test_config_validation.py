"""No traceback for a user mistake: every config field has a rule, every invalid value is one line (exit 2)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as F  # noqa: E402
from conftest import TINY, run_cli  # noqa: E402

from musclelab import cli  # noqa: E402
from musclelab.compose import compose_train_config, config_dir  # noqa: E402
from musclelab.config_validation import RULES, Rule, problems, validate  # noqa: E402
from musclelab.errors import ConfigError  # noqa: E402

CONF = config_dir()
# every option of every config group a user picks (the data sets through their own rules)
GROUP_OPTIONS = [[f"{g}={p.stem}"] for g in ("data", "optim", "trainer", "logger", "loss", "init")
                 for p in sorted((CONF / g).glob("*.yaml")) if not p.stem.startswith("_")]
GROUP_OPTIONS = [o if o != ["init=jigsaw"] else ["init=jigsaw", "model=fcn_resnet50"] for o in GROUP_OPTIONS]
GROUP_OPTIONS = [o if o[0] not in ("init=imagenet", "init=coco") else [*o, "model=fcn_resnet50", "data.channels=3"]
                 for o in GROUP_OPTIONS]
# every study's experiment config must pass too (a rule stricter than a shipped study would break it)
GROUP_OPTIONS += [[f"experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]
# sections whose every leaf must have a rule (model.params: the model registry checks them per architecture)
CHECKED = ("seed", "cpu_threads", "resume", "test", "task_name", "tags", "eval", "data", "init", "loss", "optim",
           "trainer", "callbacks", "logger")


@pytest.fixture(scope="module")
def configs() -> dict[str, DictConfig]:
    return {" ".join(o): compose_train_config(o) for o in [[], *GROUP_OPTIONS]}


def _leaves(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix


def _rule_for(path: str) -> Rule | None:
    for r in RULES:
        if path == r.field or (r.kind == "any" and path.startswith(r.field + ".")):
            return r
    return None


def test_every_field_of_every_group_has_a_rule(configs):
    missing = set()
    for name, cfg in configs.items():
        found = problems(cfg)
        if found and "unknown dataset" in found[0]:
            continue  # a data config whose source is still being written
        assert found == [], name  # the shipped configs are valid
        plain = OmegaConf.to_container(cfg, resolve=False)
        for leaf in _leaves({k: plain[k] for k in CHECKED if k in plain}):
            if leaf.startswith(("init.pretext.backbone", "init.pretext.trunk")):
                continue  # interpolated from model.name / checked by the pretext registry
            if _rule_for(leaf) is None:
                missing.add(leaf)
    assert not missing, f"config fields without a rule in musclelab/config_validation.py RULES: {sorted(missing)}"


def _bad_values(rule: Rule) -> list:
    """Zero / negative / out-of-range, wrong type and unknown name for one rule."""
    if rule.kind == "any":
        return []
    if rule.kind in ("name", "choice"):
        return ["nonsense", 2.5]
    if rule.kind == "bool":
        return ["maybe", 3]
    if rule.kind == "str":
        return [[1, 2]] if not rule.nullable else [[1, 2], 7.5]
    if rule.kind.endswith("_list"):
        bad = [["a"], 5] if rule.kind != "str_list" else [[1.5], 5]
        if rule.ge is not None:
            bad.append([rule.ge - 1])
        return bad
    if rule.kind == "count_or_fraction":
        return [-1, 1.5, "all"]
    out: list = ["abc", True]
    if rule.kind == "int":
        out.append(1.5)
    for bound in (rule.ge, rule.gt):
        if bound is not None:
            out += [bound - 1 if rule.ge is not None else bound, -1e9]
    for bound in (rule.le, rule.lt):
        if bound is not None:
            out.append(bound + 1 if rule.le is not None else bound)
    if rule.gt == 0 or rule.ge == 1:
        out.append(0)
    return out


def test_every_invalid_value_is_one_line_naming_the_field(configs):
    """Walks every config group's fields with zero, negative, wrong-type and unknown values."""
    checked, default = 0, configs[""]
    for name, cfg in configs.items():
        for rule in RULES:
            absent = "__absent__"
            if OmegaConf.select(cfg, rule.field, default=absent) == absent or not rule.applies(cfg):
                continue
            if name and not rule.when and OmegaConf.select(default, rule.field, default=absent) != absent:
                continue  # the same rule as in the default config: walked there
            original = OmegaConf.select(cfg, rule.field)
            for bad in _bad_values(rule):
                with open_dict(cfg):
                    OmegaConf.update(cfg, rule.field, bad, merge=False)
                try:
                    with pytest.raises(ConfigError) as err:
                        validate(cfg)
                finally:
                    with open_dict(cfg):
                        OmegaConf.update(cfg, rule.field, original, merge=False)
                msg = str(err.value)
                assert "\n" not in msg and msg.startswith(rule.field), (name, rule.field, bad, msg)
                checked += 1
    assert checked > 300


@pytest.mark.parametrize("override,expect", [
    ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
    ("optim.lr=-1", "optim.lr=-1: must be a number > 0"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
    ("data.channels=2", "data.channels=2: must be one of 1, 3"),
    ("seed=abc", "seed='abc': must be an integer >= 0"),
    ("trainer.max_epochs=-2", "trainer.max_epochs=-2: must be an integer >= 1"),
    ("data.window=nonsense", "data.window='nonsense': unknown window; known windows: abdomen, thigh, wl400_50"),
    ("model=nope", "Could not find 'model/nope'; known options: "),
    ("data.batchsize=4", "data.batchsize: unknown field; known fields: augment, batch_size"),
    ("+data.source.foo=1", "data.source.foo is not a parameter of dataset 'phantom'; known parameters: "),
    ("+optim.foo=1", "optim.foo is not a parameter of optimizer 'adam'; known parameters: "),
    ("data.source.site=z", "data.source.site='z': unknown site; known sites: a, b, c, d"),
    ("data.val_fraction=0.5", "must sum to < 1"),
])
def test_cli_train_mistakes_exit_2_with_one_line(tmp_path, capsys, override, expect):
    extra = ["data.test_fraction=0.5"] if override.startswith("data.val_fraction") else []
    with pytest.raises(SystemExit) as ex:  # tiny settings: a mistake that slipped through would train quickly
        cli.main(["train", *TINY, "trainer.limit_train_batches=1", f"paths.log_dir={tmp_path}", *extra, override])
    assert ex.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("musclelab train: error: ") and expect in err, err
    assert "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing ran: no run directory


def test_cli_sweep_with_one_bad_value_fails_before_any_job(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "-m", "optim.lr=0.01,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert ex.value.code == 2
    assert "optim.lr=-1: must be a number > 0" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_validation_error_is_before_data_loading(tmp_path, monkeypatch):
    """train() called directly (studies, tests): the run is marked failed with the one-line error, and the
    datamodule is never built."""
    from conftest import compose_cfg

    from musclelab import train as T
    from musclelab.outputs.status import read_status

    monkeypatch.setattr(T, "build_datamodule", lambda cfg: pytest.fail("data loaded before validation"))
    cfg = compose_cfg(tmp_path, ["data.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^data.batch_size=0: must be an integer >= 1$"):
        T.train(cfg)
    assert read_status(tmp_path) == "failed"


def test_console_script_no_traceback(tmp_path):
    proc = run_cli(["train", "seed=abc", f"paths.log_dir={tmp_path}"], cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("musclelab train: error: seed='abc': must be an integer >= 0 and <= 4294967295")


# -------------------------------------------------------------------------------------------------------------
# musclelab data verify: every reader through the CLI (the chaos crash: an empty reader config)
# -------------------------------------------------------------------------------------------------------------

READERS = {
    "lits": lambda r: F.make_fake_lits(r, n=2), "btcv": lambda r: F.make_fake_btcv(r, n=2),
    "msd": lambda r: F.make_fake_msd(r, n=2, style="nnunet"), "chaos": lambda r: F.make_fake_chaos(r, 1),
    "l3_folder": lambda r: F.make_fake_l3_folder(r),
}


@pytest.mark.parametrize("name", sorted(READERS))
def test_data_verify_cli_every_reader(tmp_path, capsys, name):
    fd = READERS[name](tmp_path / "data")
    cli.main(["data", "verify", name, "--root", str(fd.root)])
    out = capsys.readouterr().out
    assert f"{len(fd.ids)} cases, 0 errors" in out and "no problems" in out, out


@pytest.mark.parametrize("name", sorted(READERS))
def test_data_verify_cli_empty_folder(tmp_path, capsys, name):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as ex:
        cli.main(["data", "verify", name, "--root", str(tmp_path / "empty")])
    out = capsys.readouterr()
    if ex.value.code == 1:  # the report: one scan error naming the folder
        assert "0 cases, 1 errors" in out.out and "Traceback" not in out.err
    else:  # a reader that needs an index file says so in one line
        msg = str(ex.value.code)
        assert msg.startswith("musclelab data verify: error: ") and "data.root" in msg and "\n" not in msg


def test_data_verify_cli_refuses_nan_voxels(tmp_path, capsys):
    fd = F.make_fake_btcv(tmp_path / "data", n=2)
    F.make_nan_image(fd.image_files[fd.ids[0]])
    with pytest.raises(SystemExit) as ex:
        cli.main(["data", "verify", "btcv", "--root", str(fd.root)])
    assert ex.value.code == 1
    out = capsys.readouterr().out
    assert "finite" in out and "NaN/inf" in out


def test_data_verify_cli_bad_override_and_missing_root(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        cli.main(["data", "verify", "chaos", "--root", str(tmp_path), "data.batch_size=0"])
    assert "data.batch_size=0: must be an integer >= 1" in str(ex.value.code)
    with pytest.raises(SystemExit) as ex:
        cli.main(["data", "verify", "nope", "--root", str(tmp_path)])
    assert "Could not find 'data/nope'; known options:" in str(ex.value.code)
    with pytest.raises(SystemExit) as ex:
        cli.main(["data", "verify", "lits", "--root", str(tmp_path / "missing")])
    assert "does not exist or is not a folder (config field data.root)" in str(ex.value.code)


def test_data_verify_console_script_chaos(tmp_path):
    fd = F.make_fake_chaos(tmp_path / "data", 1)
    proc = run_cli(["data", "verify", "chaos", "--root", str(fd.root)], cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "no problems" in proc.stdout
