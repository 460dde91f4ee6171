"""Sequential transfer chains: orderings, the prefix-keyed stage cache, resume, the forgetting matrix and its
metrics, and the ``musclelab transfer`` app (multirun + a concurrent job sharing stages)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig

from conftest import TINY, compose_cfg
from musclelab.compose import compose_train_config
from musclelab.errors import ConfigError
from musclelab.outputs.status import read_status
from musclelab.studies import (all_orderings, backward_transfer, chain_metrics, forgetting, forward_transfer,
                               run_study, study_datasets, transfer_overrides)
from musclelab.studies.chain import plan_chain, run_chain
from musclelab.studies.forgetting import average_accuracy, average_forgetting, scratch_gain, zero_shot
from musclelab.studies.orderings import count_stage_slots

FAST = ["logger=none", "data.source.n_cases=16"]
SITES = ("a", "b", "c")


def _base(tmp_path: Path, extra: list[str] | None = None) -> DictConfig:
    return compose_cfg(tmp_path / "unused", [*FAST, *(extra or [])])


def _sites(tmp_path: Path, names: tuple[str, ...] = SITES) -> dict[str, DictConfig]:
    """Phantom acquisition sites standing in for the data sets of a study."""
    return {s: compose_cfg(tmp_path / "unused", [*FAST, f"data.source.site={s}"]).data for s in names}


def test_all_orderings() -> None:
    orders = all_orderings(["a", "b", "c"])
    assert len(orders) == 15 and len(set(orders)) == 15
    assert orders[:3] == [("a",), ("b",), ("c",)]
    assert [len(o) for o in orders] == [1] * 3 + [2] * 6 + [3] * 6
    assert orders == all_orderings(("a", "b", "c"))  # deterministic
    assert count_stage_slots(orders) == 33
    assert len(all_orderings("abcd")) == 64
    with pytest.raises(ConfigError):
        all_orderings(["a", "a"])


def test_stage_keys_are_shared_by_prefix(tmp_path: Path) -> None:
    """No training: 33 stage slots of the 15 orderings map onto 15 distinct stages (one per prefix)."""
    base, sites = _base(tmp_path), _sites(tmp_path)
    plans = {seq: plan_chain(base, seq, sites, tmp_path / "stages") for seq in all_orderings(SITES)}
    slots = [p for ps in plans.values() for p in ps]
    assert len(slots) == 33
    keys = {p.key for p in slots}
    assert len(keys) == 15 and len({p.run_dir for p in slots}) == 15
    assert plans[("a", "b")][0].key == plans[("a",)][0].key != plans[("b", "a")][1].key
    assert plans[("a", "b", "c")][1].key == plans[("a", "b")][1].key != plans[("b", "a", "c")][1].key
    stage = plans[("a", "b")][1]
    assert stage.run_dir == (tmp_path / "stages").resolve() / f"b-{stage.key[:16]}"
    assert stage.cfg.init.name == "checkpoint" and stage.cfg.init.checkpoint == str(plans[("a",)][0].run_dir)
    assert stage.cfg.data.source.site == "b" and stage.cfg.paths.output_dir == str(stage.run_dir)
    assert plans[("a",)][0].cfg.init.name == "scratch"
    # the cache location and settings that do not change training leave keys alone ...
    same = _base(tmp_path, ["trainer.limit_test_batches=0.5", "callbacks.progress_bar=true", "data.num_workers=1"])
    assert plan_chain(same, ["a", "b"], sites, tmp_path / "elsewhere")[1].key == stage.key
    # ... anything that does change it gives new keys for the whole chain
    for changed in (["seed=1"], ["trainer.max_epochs=2"], ["optim.lr=0.01"], ["model.params.channels=[4,8,16]"]):
        other = plan_chain(_base(tmp_path, changed), ["a", "b"], sites, tmp_path / "stages")
        assert {p.key for p in other}.isdisjoint(keys), changed
    moved = {**sites, "a": compose_cfg(tmp_path, [*FAST, "data.source.site=a", "data.source.phantom_seed=1"]).data}
    other = plan_chain(base, ["a", "b"], moved, tmp_path / "stages")
    assert {p.key for p in other}.isdisjoint(keys)  # a different first data set changes every later stage too


def test_a_changed_phantom_site_retrains_its_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The phantom's site settings are part of a stage's key: after an upgrade that changes what site "b" draws,
    the stages on "b" (and every later one) are trained again, while "a" alone is reused."""
    import dataclasses

    from musclelab.phantoms import l3

    base, sites = _base(tmp_path), _sites(tmp_path)
    before = plan_chain(base, ["a", "b"], sites, tmp_path / "stages")
    monkeypatch.setitem(l3.SITES, "b", dataclasses.replace(l3.SITES["b"], noise_sd=l3.SITES["b"].noise_sd + 1.0))
    after = plan_chain(base, ["a", "b"], sites, tmp_path / "stages")
    assert after[0].key == before[0].key and after[1].key != before[1].key
    assert plan_chain(base, ["b"], sites, tmp_path / "stages")[0].key not in {p.key for p in before}


def test_bad_sequences(tmp_path: Path) -> None:
    base, sites = _base(tmp_path), _sites(tmp_path, ("a", "b"))
    for seq, msg in (([], "empty"), (["a", "x"], "unknown"), (["a", "b", "a"], "repeat")):
        with pytest.raises(ConfigError, match=msg):
            plan_chain(base, seq, sites, tmp_path / "stages")


def test_transfer_trains_stages_like_the_paper_unless_told_otherwise() -> None:
    """``musclelab transfer``: Adam 5e-4, cross-entropy, constant rate; a key given, another optimiser or an
    experiment keeps its own settings."""
    def settings(args: list[str]) -> tuple:
        c = compose_train_config(transfer_overrides(args))
        return c.loss.name, c.optim.name, c.optim.lr, c.optim.scheduler

    assert settings(["study=phantom_sites"]) == ("ce", "adam", 0.0005, "none")
    assert settings(["study=phantom_sites", "optim.lr=0.01", "loss=dice"]) == ("dice", "adam", 0.01, "none")
    sgd = compose_train_config(["optim=sgd"]).optim
    assert settings(["study=phantom_sites", "optim=sgd"]) == ("ce", "sgd", sgd.lr, sgd.scheduler)
    mc = compose_train_config(["experiment=mcsweeney2022_smoke"])
    assert settings(["experiment=mcsweeney2022_smoke"]) == (mc.loss.name, mc.optim.name, mc.optim.lr,
                                                            mc.optim.scheduler)
    assert compose_train_config(transfer_overrides(["study=phantom_sites"])).task_name == "transfer"
    # an experiment keeps its output folder; a study chosen on the command line replaces the experiment's
    liver = compose_train_config(transfer_overrides(["experiment=yoon2024_liver", "study=liver"]))
    assert liver.task_name == "yoon2024_liver" and liver.study.datasets.btcv.config == "btcv"
    assert compose_train_config(transfer_overrides(["experiment=yoon2024_liver"])).study.datasets.btcv.config == \
        "abdomen_phantom"


def test_a_baseline_cannot_be_a_chain(tmp_path: Path) -> None:
    overrides = transfer_overrides(["study=phantom_sites", "model=threshold", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="model=threshold is a non-learning baseline"):
        run_study(compose_train_config(overrides), overrides, tmp_path / "out", compose_train_config)


def test_real_liver_study_without_folders_fails_before_training(tmp_path: Path) -> None:
    """study=liver names the real LiTS/BTCV/CHAOS; a missing folder is reported with the field to set."""
    overrides = transfer_overrides(["study=liver", f"study.datasets.lits.root={tmp_path}",
                                    f"paths.output_dir={tmp_path / 'out'}"])
    cfg = compose_train_config(overrides)
    with pytest.raises(ConfigError, match=r"'btcv' \(data=btcv\).*study.datasets.btcv.root="):
        study_datasets(cfg, overrides, compose_train_config)


def test_all_orderings_train_each_prefix_once(tmp_path: Path) -> None:
    """All 15 orderings of 3 sites in one process: 15 stage trainings (not 33), every matrix row complete."""
    root = tmp_path / "stages"
    overrides = transfer_overrides(["study=phantom_sites", "study.sequence=all", *TINY, *FAST,
                                    f"study.stage_root={root}", f"paths.output_dir={tmp_path / 'unused'}"])
    cfg = compose_train_config(overrides)
    base, sites = cfg, study_datasets(cfg, overrides, compose_train_config)
    assert list(sites) == list(SITES) and sites["b"].source.site == "b" and sites["b"].img_size == 64
    study = run_study(cfg, overrides, tmp_path / "out", compose_train_config)
    results = {tuple(r.sequence): r for r in study}
    assert list(results) == all_orderings(SITES)
    assert sum(r.n_trained for r in results.values()) == 15
    # 15 trained stages plus the untrained random-initialisation model of forward transfer (scored, not trained)
    dirs = [d for d in root.iterdir() if d.is_dir()]
    assert len([d for d in dirs if not d.name.startswith("random_init-")]) == 15
    assert len([d for d in dirs if d.name.startswith("random_init-")]) == 1
    r = results[("b", "c", "a")]
    assert [s.trained for s in r.stages] == [False, False, True]  # b and b->c were trained by earlier chains
    assert r.stages[0].run_dir == results[("b",)].stages[0].run_dir
    out = tmp_path / "out" / "b-c-a"
    matrix = pd.read_csv(out / "forgetting_matrix.csv")
    assert (out / "forgetting_heatmap.png").stat().st_size > 0
    assert matrix.shape == (3, 3 + 3) and list(matrix.columns) == ["stage", "trained", "final", "a", "b", "c"]
    assert matrix["trained"].tolist() == ["b", "c", "a"] and matrix["final"].tolist() == [False, False, True]
    values = matrix[list(SITES)].to_numpy()
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert np.allclose(r.accuracy_matrix(), matrix[["b", "c", "a"]].to_numpy())
    # the same stage gives the same row in every chain that contains it
    assert np.allclose(results[("b", "c")].matrix().to_numpy(), r.matrix().to_numpy()[:2])
    metrics = json.loads((out / "chain_metrics.json").read_text())
    R = r.accuracy_matrix()
    assert metrics["bwt"] == pytest.approx(np.mean([R[2, 0] - R[0, 0], R[2, 1] - R[1, 1]]))
    assert set(metrics["forgetting"]) == {"b", "c"} and "definitions" in metrics and metrics["held_out"] == {}
    assert results[("a", "b")].metrics["held_out"].keys() == {"c"}
    chain = json.loads((out / "chain.json").read_text())
    assert [s["trained"] for s in chain["stages"]] == [False, False, True] and chain["n_trained"] == 1
    curves = pd.read_csv(out / "learning_curves.csv")
    assert {"stage", "dataset", "epoch", "val_dice", "val_loss"} <= set(curves.columns)
    assert curves["stage"].tolist() == [0, 1, 2] and curves["dataset"].tolist() == ["b", "c", "a"]
    long = pd.read_csv(out / "stage_eval.csv")
    assert {"dice", "hd95"} <= set(long["metric"]) and len(long[long.metric == "dice"]) == 9
    summary = pd.read_csv(tmp_path / "out" / "study_summary.csv")
    assert len(summary) == 15 and summary["n_trained"].sum() == 15
    assert summary.loc[summary.length > 1, "avg_scratch_gain"].notna().all()
    assert metrics["scratch"] == pytest.approx({d: results[(d,)].stages[0].score(d) for d in SITES})
    # running a chain again reuses stages and their cached evaluations
    evals = sorted(root.glob("*/eval_*.json"))
    assert len(evals) == 15 * 3 + 3  # every stage, and the random-init model, on each of the 3 sites
    stamps = [p.stat().st_mtime_ns for p in evals]
    again = run_chain(base, ["a", "b", "c"], sites, root)
    assert again.n_trained == 0 and [p.stat().st_mtime_ns for p in evals] == stamps
    assert np.allclose(again.matrix().to_numpy(), results[("a", "b", "c")].matrix().to_numpy())


def test_interrupted_stage_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage killed during its second epoch continues from last.ckpt (epoch 0 kept, not re-run)."""
    import pytorch_lightning as pl

    import musclelab.train as train_mod

    base, sites, root = _base(tmp_path, ["trainer.max_epochs=2"]), _sites(tmp_path, ("a", "b")), tmp_path / "stages"
    original = train_mod.build_callbacks

    class Crash(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1:  # epoch 0 finished and checkpointed: die in the middle of the run
                raise RuntimeError("simulated crash in epoch 1")

    def crashing(cfg, run_dir):  # type: ignore[no-untyped-def]
        callbacks, ckpt = original(cfg, run_dir)
        return ([*callbacks, Crash()] if cfg.data.source.site == "b" else callbacks), ckpt

    monkeypatch.setattr(train_mod, "build_callbacks", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_chain(base, ["a", "b"], sites, root)
    stage_b = plan_chain(base, ["a", "b"], sites, root)[1].run_dir
    assert read_status(stage_b) == "failed" and (stage_b / "checkpoints" / "last.ckpt").exists()
    first = pd.read_csv(stage_b / "metrics.csv")
    assert first["epoch"].tolist() == [0]

    monkeypatch.setattr(train_mod, "build_callbacks", original)
    result = run_chain(base, ["a", "b"], sites, root, tmp_path / "out")
    assert [(s.trained, s.resumed) for s in result.stages] == [(False, False), (True, True)]
    assert read_status(stage_b) == "complete"
    # a complete stage keeps only its best checkpoint (last.ckpt was there to resume it)
    assert (stage_b / "checkpoints" / "best.ckpt").exists() and not (stage_b / "checkpoints" / "last.ckpt").exists()
    resumed = pd.read_csv(stage_b / "metrics.csv")
    assert resumed["epoch"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(resumed.iloc[:1], first)  # epoch 0 is the interrupted run's, not re-trained
    assert pd.read_csv(tmp_path / "out" / "learning_curves.csv")["epoch"].tolist() == [0, 1, 0, 1]


def test_forgetting_metrics_hand_made() -> None:
    R = np.array([[0.80, 0.30, 0.20],
                  [0.60, 0.90, 0.40],
                  [0.70, 0.50, 0.85]])
    assert average_accuracy(R) == pytest.approx((0.70 + 0.50 + 0.85) / 3)
    assert backward_transfer(R) == pytest.approx(((0.70 - 0.80) + (0.50 - 0.90)) / 2)
    assert forgetting(R) == pytest.approx([0.80 - 0.70, 0.90 - 0.50])
    assert average_forgetting(R) == pytest.approx(0.25)
    assert zero_shot(R) == pytest.approx([0.30, 0.40])
    assert forward_transfer(R, [0.1, 0.2, 0.1]) == pytest.approx(((0.30 - 0.2) + (0.40 - 0.1)) / 2)
    # forgetting uses the best earlier score, not the score just after training: here task 0 peaked later
    R2 = np.array([[0.5, 0.0], [0.6, 0.9]])
    assert forgetting(np.array([[0.5, 0.0, 0.0], [0.9, 0.8, 0.0], [0.6, 0.7, 0.9]])) == pytest.approx([0.3, 0.1])
    assert backward_transfer(R2) == pytest.approx(0.1)
    # a data set cannot be forgotten before it is learnt: its zero-shot score (0.9 on y before stage 1) is not counted
    assert forgetting(np.array([[0.8, 0.9, 0.1], [0.7, 0.6, 0.2], [0.6, 0.5, 0.9]])) == pytest.approx([0.2, 0.1])
    one = np.array([[0.7]])
    assert np.isnan(backward_transfer(one)) and forgetting(one).size == 0 and np.isnan(average_forgetting(one))
    m = chain_metrics(R, ["x", "y", "z"], baseline={"x": 0.1, "y": 0.2, "z": 0.1},
                      scratch={"x": 0.8, "y": 0.7, "z": 0.9})
    assert m["forgetting"] == pytest.approx({"x": 0.1, "y": 0.4}) and m["zero_shot"].keys() == {"y", "z"}
    assert m["fwt"] == pytest.approx(0.2)
    assert m["scratch_gain"] == pytest.approx({"y": 0.2, "z": -0.05}) and m["avg_scratch_gain"] == pytest.approx(0.075)
    assert "fwt" not in chain_metrics(R, ["x", "y", "z"]) and "scratch_gain" not in chain_metrics(R, ["x", "y", "z"])
    assert scratch_gain(R, [0.8, 0.7, 0.9]) == pytest.approx([0.2, -0.05])
    with pytest.raises(ValueError):
        backward_transfer(np.zeros((2, 3)))


def _transfer(args: list[str], cwd: Path) -> subprocess.Popen:
    code = "import sys; from musclelab.studies import main_transfer; main_transfer(sys.argv[1:])"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_transfer_app_multirun_and_concurrent_job(tmp_path: Path) -> None:
    """``musclelab transfer``: a multirun over two orderings and a concurrent single job sharing one stage
    cache train each of the 2 distinct stages once."""
    common = ["study=phantom_sites", *TINY, *FAST, f"study.stage_root={tmp_path / 'stages'}"]
    sweep, single = tmp_path / "sweep", tmp_path / "single"
    jobs = [_transfer(["-m", *common, "study.sequence=[a],[a,b]", f"hydra.sweep.dir={sweep}"], tmp_path),
            _transfer([*common, "study.sequence=[a,b]", f"hydra.run.dir={single}"], tmp_path)]
    for job in jobs:
        out, _ = job.communicate(timeout=300)
        assert job.returncode == 0, out
    chains = [json.loads((d / "chain.json").read_text()) for d in (sweep / "0", sweep / "1", single)]
    assert [c["sequence"] for c in chains] == [["a"], ["a", "b"], ["a", "b"]]
    assert sum(s["trained"] for c in chains for s in c["stages"]) == 2
    assert chains[1]["stages"][1]["run_dir"] == chains[2]["stages"][1]["run_dir"]
    matrix = pd.read_csv(single / "forgetting_matrix.csv")
    assert list(matrix.columns) == ["stage", "trained", "final", "a", "b", "c"] and len(matrix) == 2
