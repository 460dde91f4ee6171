"""Strategies against forgetting (musclelab.strategies): cache keys, each strategy's mechanism on a tiny chain,
the chain outputs (strategy, seconds, forward transfer) and exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, open_dict

from conftest import compose_cfg
from musclelab.errors import ConfigError
from musclelab.studies.chain import plan_chain, random_baseline, run_chain

FAST = ["logger=none", "data.source.n_cases=16"]


def _base(tmp_path: Path, strategy: str = "naive", extra: list[str] | None = None) -> DictConfig:
    return compose_cfg(tmp_path / "unused", [*FAST, f"study.strategy={strategy}", *(extra or [])])


def _sites(tmp_path: Path, names: tuple[str, ...] = ("a", "b")) -> dict[str, DictConfig]:
    return {s: compose_cfg(tmp_path / "unused", [*FAST, f"data.source.site={s}"]).data for s in names}


def test_keys_stage0_shared_naive_unchanged_strategies_differ(tmp_path: Path) -> None:
    sites, root = _sites(tmp_path, ("a", "b", "c")), tmp_path / "stages"
    plans = {s: plan_chain(_base(tmp_path, s), ["a", "b", "c"], sites, root)
             for s in ("naive", "replay", "ewc", "lwf", "joint")}
    assert len({p[0].key for p in plans.values()}) == 1           # stage 0: one training for every strategy
    assert len({p[1].key for p in plans.values()}) == 5           # stage 1: one per strategy
    assert "chain_stage" not in plans["naive"][1].cfg and "chain_stage" not in plans["ewc"][0].cfg
    assert plans["ewc"][2].cfg.chain_stage.earlier[1]["run_dir"] == str(plans["ewc"][1].run_dir)
    # naive: the keys of the chains before strategies existed (no study section at all)
    old = plan_chain(compose_cfg(tmp_path / "unused", ["~study", *FAST]), ["a", "b", "c"], sites, root)
    assert [p.key for p in old] == [p.key for p in plans["naive"]]
    assert "strategy" not in plans["naive"][1].inputs
    # a changed setting changes the stage-1 key of that strategy only
    other = plan_chain(_base(tmp_path, "replay", ["study.replay.fraction=0.5"]), ["a", "b"], sites, root)
    assert other[0].key == plans["replay"][0].key and other[1].key != plans["replay"][1].key


def test_unknown_strategy_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown strategy 'nope'.*known strategies: ewc, joint, lwf, naive, "
                                          r"replay") as err:
        plan_chain(_base(tmp_path, "nope"), ["a", "b"], _sites(tmp_path), tmp_path / "stages")
    assert "\n" not in str(err.value)


def test_replay_mixes_memory_in_the_configured_fraction() -> None:
    from musclelab.strategies.replay import ReplayMixer, build_memory

    class Items(torch.utils.data.Dataset):
        def __init__(self, tag: str, n: int) -> None:
            self.tag, self.n = tag, n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            return {"image": torch.full((1, 4, 4), float(i)), "label": torch.zeros(4, 4, dtype=torch.long),
                    "case_id": f"{self.tag}{i}"}

    memory = build_memory([Items("a", 20), Items("b", 20)], per_site=5, seed=0)
    assert len(memory["case_id"]) == 10 and sum(c.startswith("a") for c in memory["case_id"]) == 5
    assert memory["case_id"] == build_memory([Items("a", 20), Items("b", 20)], 5, 0)["case_id"]  # seeded
    mix = ReplayMixer(memory, fraction=0.5, seed=0)
    batch = {"image": torch.zeros(4, 1, 4, 4), "label": torch.zeros(4, 4, 4, dtype=torch.long),
             "case_id": ["new"] * 4}
    out = mix(batch, step=3)
    assert out["image"].shape[0] == 8 and out["replayed"].float().mean() == 0.5
    assert all(c in memory["case_id"] for c in out["case_id"][4:])
    assert out["case_id"] == mix(batch, step=3)["case_id"]                # derived from the step: resumable
    assert ReplayMixer(memory, 0.25, 0).n_memory(6) == 2


def test_ewc_penalty_zero_at_optimum_and_grows() -> None:
    from musclelab.strategies.ewc import EWCPenalty, diagonal_fisher

    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    loader = [{"image": torch.randn(2, 1, 8, 8), "label": torch.randint(0, 2, (2, 8, 8))} for _ in range(3)]
    fisher = diagonal_fisher(net, torch.nn.CrossEntropyLoss(), loader, 2)
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
    term = EWCPenalty([(fisher, anchor)], lam=10.0)
    assert float(term.penalty(net)) == 0.0
    values = []
    for step in (0.01, 0.1):
        with torch.no_grad():
            for n, p in net.named_parameters():
                p.copy_(anchor[n] + step)
        values.append(float(term.penalty(net)))
    assert 0 < values[0] < values[1]


def test_lwf_target_is_the_parent_models_output() -> None:
    from musclelab.strategies.lwf import LwFTerm, distillation

    teacher = torch.nn.Conv2d(1, 3, 3, padding=1)
    x = torch.randn(2, 1, 8, 8)
    term = LwFTerm(teacher, alpha=1.0, temperature=2.0)
    assert torch.allclose(term.target(x), torch.softmax(teacher(x) / 2.0, dim=1))
    assert float(distillation(teacher(x), term.target(x), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(torch.zeros(2, 3, 8, 8), term.target(x), 2.0)) > 0


@pytest.mark.parametrize("strategy", ["replay", "ewc", "lwf", "joint"])
def test_strategy_trains_a_tiny_chain(tmp_path: Path, strategy: str) -> None:
    sites, root = _sites(tmp_path), tmp_path / "stages"
    base = _base(tmp_path, strategy, ["study.replay.per_site=4", "study.ewc.fisher_batches=2"])
    result = run_chain(base, ["a", "b"], sites, root, tmp_path / "out")
    stage = result.stages[1].run_dir
    chain = json.loads((tmp_path / "out" / "chain.json").read_text())
    assert chain["strategy"]["name"] == strategy and chain["stages"][1]["train_seconds"] > 0
    assert "extra_seconds" in chain["stages"][1]
    metrics = pd.read_csv(stage / "metrics.csv")
    if strategy in ("ewc", "lwf"):
        assert "train_penalty" in metrics.columns or "train/penalty" in metrics.columns
    if strategy == "ewc":
        assert list(result.stages[0].run_dir.glob("ewc_fisher-*.pt"))  # cached in the finished stage's dir
    if strategy == "joint":
        from musclelab.strategies.base import StageContext

        plan = plan_chain(base, ["a", "b"], sites, root)[1]
        from musclelab.train import build_datamodule

        ctx = StageContext(plan.cfg, 1, {}, list(plan.cfg.chain_stage.earlier), build_datamodule)
        assert len(ctx.site_datamodule(0).datasets["train"]) > 0
    # a second run reuses everything, stage 0 is the naive stage 0
    again = run_chain(base, ["a", "b"], sites, root)
    assert again.n_trained == 0
    assert plan_chain(_base(tmp_path), ["a"], sites, root)[0].run_dir == result.stages[0].run_dir


def test_forward_transfer_baseline(tmp_path: Path) -> None:
    sites, root = _sites(tmp_path), tmp_path / "stages"
    b = random_baseline(_base(tmp_path), "a", sites, root)
    assert set(b) == {"a", "b"} and all(0 <= v <= 1 for v in b.values())
    assert random_baseline(_base(tmp_path, "ewc"), "a", sites, root) == b   # once per study, reused


def test_replay_stage_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay stage killed in its second epoch and resumed gives the uninterrupted stage's numbers (the memory
    draws are derived from seed + batches fetched, restored with the loop's progress)."""
    import pytorch_lightning as pl

    import musclelab.train as train_mod

    sites = _sites(tmp_path)
    base = _base(tmp_path, "replay", ["trainer.max_epochs=2", "study.replay.per_site=4", "study.replay.fraction=0.5"])
    whole = run_chain(base, ["a", "b"], sites, tmp_path / "whole")
    original = train_mod.build_callbacks

    class Crash(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1:
                raise RuntimeError("simulated crash in epoch 1")

    def crashing(cfg, run_dir):  # type: ignore[no-untyped-def]
        callbacks, ckpt = original(cfg, run_dir)
        return ([*callbacks, Crash()] if cfg.data.source.site == "b" else callbacks), ckpt

    monkeypatch.setattr(train_mod, "build_callbacks", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_chain(base, ["a", "b"], sites, tmp_path / "cut")
    monkeypatch.setattr(train_mod, "build_callbacks", original)
    # resumed by another chain of the study (its study.sequence differs): the same stage, continued
    with open_dict(base):
        base.study.sequence = [["a", "b"], ["a", "b", "c"]]
    resumed = run_chain(base, ["a", "b"], sites, tmp_path / "cut")
    assert resumed.stages[1].resumed
    a = pd.read_csv(whole.stages[1].run_dir / "metrics.csv")
    b = pd.read_csv(resumed.stages[1].run_dir / "metrics.csv")
    cols = [c for c in a.columns if c.startswith(("train", "val"))]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert resumed.stages[1].score("b") == pytest.approx(whole.stages[1].score("b"), abs=0)


@pytest.mark.slow  # ~2 min on 2 shared cores (two spawned processes per stage)
def test_replay_and_lwf_stage_under_two_process_ddp(tmp_path: Path) -> None:
    """trainer=ddp_cpu (2 gloo processes, ddp_spawn): the memory and the teacher travel to both ranks, each rank
    mixes into its own batches, and the stage completes."""
    sites = _sites(tmp_path)
    for strategy in ("replay", "lwf"):
        base = _base(tmp_path, strategy, ["trainer=ddp_cpu", "trainer.max_epochs=1", "study.replay.per_site=4"])
        result = run_chain(base, ["a", "b"], sites, tmp_path / "stages")
        assert result.n_trained >= 1 and 0 <= result.stages[1].score("b") <= 1
