"""Strategies against forgetting (musclelab.strategies): cache keys, each strategy's mechanism on a tiny chain,
the chain outputs (strategy, seconds, forward transfer) and exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

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


def _spy_batches(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The case ids of every training batch a stage sees (``on_train_batch_start``: after replay's mixing), by the
    stage's site."""
    import pytorch_lightning as pl

    import musclelab.train as train_mod

    seen: dict[str, list[str]] = {}
    original = train_mod.build_callbacks

    class Spy(pl.Callback):
        def __init__(self, site: str) -> None:
            self.site = site

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            seen.setdefault(self.site, []).extend(batch["case_id"])

    def spying(cfg, run_dir):  # type: ignore[no-untyped-def]
        callbacks, ckpt = original(cfg, run_dir)
        return [*callbacks, Spy(str(cfg.data.source.site))], ckpt

    monkeypatch.setattr(train_mod, "build_callbacks", spying)
    return seen


def _train_dm(tmp_path: Path, data: DictConfig, overrides: list[str] = FAST):  # type: ignore[no-untyped-def]
    """The set-up datamodule of ``data`` (a site's data config)."""
    from musclelab.train import build_datamodule

    cfg = compose_cfg(tmp_path / "unused", overrides)
    with open_dict(cfg):
        cfg.data = data
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return dm


def _train_ids(tmp_path: Path, data: DictConfig) -> set[str]:
    dm = _train_dm(tmp_path, data)
    return {str(dm.datasets["train"][i]["case_id"]) for i in range(len(dm.datasets["train"]))}


@pytest.mark.parametrize("strategy", ["replay", "ewc", "lwf", "joint"])
def test_strategy_trains_a_tiny_chain(tmp_path: Path, strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sites, root = _sites(tmp_path), tmp_path / "stages"
    base = _base(tmp_path, strategy, ["study.replay.per_site=4", "study.ewc.fisher_batches=2"])
    seen = _spy_batches(monkeypatch)
    result = run_chain(base, ["a", "b"], sites, root, tmp_path / "out")
    stage = result.stages[1].run_dir
    chain = json.loads((tmp_path / "out" / "chain.json").read_text())
    assert chain["strategy"]["name"] == strategy and chain["stages"][1]["train_seconds"] > 0
    assert "extra_seconds" in chain["stages"][1] and chain["stages"][1]["attempts"] == 1
    metrics = pd.read_csv(stage / "metrics.csv")
    if strategy in ("ewc", "lwf"):
        assert "train_penalty" in metrics.columns or "train/penalty" in metrics.columns
    if strategy == "ewc":
        assert list(result.stages[0].run_dir.glob("ewc_fisher-*.pt"))  # cached in the finished stage's dir
        assert chain["stages"][1]["strategy_notes"] == {"fisher_computed": ["a"], "fisher_reused": []}
    # the stage's loader: joint's sees every training item of both sites (1 epoch, all batches), the others the
    # new site's only (replay's memory is appended to the batch, not in the loader)
    ids_a, ids_b = _train_ids(tmp_path, sites["a"]), _train_ids(tmp_path, sites["b"])
    got = set(seen["b"])
    if strategy == "joint":
        assert got == ids_a | ids_b
    elif strategy == "replay":
        assert ids_b <= got and got - ids_b and got <= ids_a | ids_b
    else:
        assert got == ids_b
    # a second run reuses everything, stage 0 is the naive stage 0
    again = run_chain(base, ["a", "b"], sites, root)
    assert again.n_trained == 0
    assert plan_chain(_base(tmp_path), ["a"], sites, root)[0].run_dir == result.stages[0].run_dir


@pytest.mark.slow  # 7 stage trainings + 14 evaluations: ~40 s at load 4 (the keys' sharing: the fast test above)
def test_stages_shared_across_strategies_and_fisher_counted_once(tmp_path: Path) -> None:
    """Every strategy's stage 0 is one training (trained by the first chain, reused by the four others, in the
    naive stage's directory); a Fisher another ordering computed is reused and costs that stage nothing."""
    from musclelab.train import train

    sites, root = _sites(tmp_path, ("a", "b", "c")), tmp_path / "stages"
    trained: list[tuple[str, int]] = []

    def counting(cfg):  # type: ignore[no-untyped-def]
        trained.append((str(cfg.data.source.site), int((cfg.get("chain_stage") or {}).get("index", 0))))
        return train(cfg)

    extra = ["study.replay.per_site=4", "study.ewc.fisher_batches=2", "trainer.limit_train_batches=2"]
    for strategy in ("naive", "replay", "ewc", "lwf", "joint"):
        run_chain(_base(tmp_path, strategy, extra), ["a", "b"], {k: sites[k] for k in "ab"}, root, train_fn=counting)
    assert [t for t in trained if t[0] == "a"] == [("a", 0)]            # one stage 0 for the five strategies
    assert len(trained) == 1 + 5
    naive0 = plan_chain(compose_cfg(tmp_path / "unused", ["~study", *FAST, extra[-1]]), ["a"], sites, root)[0].run_dir
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("a-")) == [naive0.name]
    # ewc on another ordering with the same first stage: a's Fisher is read from the cache, not recomputed
    other = run_chain(_base(tmp_path, "ewc", extra), ["a", "c"], {k: sites[k] for k in "ac"}, root, train_fn=counting)
    cost = json.loads((other.stages[1].run_dir / "stage_time.json").read_text())
    assert cost["extra_seconds"] == 0.0
    assert cost["strategy_notes"] == {"fisher_computed": [], "fisher_reused": ["a"]}


def test_stage_seconds_keep_only_the_resumed_attempts_epochs(tmp_path: Path) -> None:
    """An interrupted attempt counts up to its last checkpoint (where the resume continues), not its whole wall
    time: a 0.6 s attempt that wrote last.ckpt right away and died, then a 0.2 s attempt that finished, cost ~0.2 s."""
    import time

    from musclelab.outputs.status import write_status
    from musclelab.studies.chain import ensure_stage

    plan = plan_chain(_base(tmp_path), ["a"], _sites(tmp_path), tmp_path / "stages")[0]
    ckpts = plan.run_dir / "checkpoints"

    def dies(cfg):  # type: ignore[no-untyped-def]
        ckpts.mkdir(parents=True, exist_ok=True)
        (ckpts / "last.ckpt").write_bytes(b"x")
        time.sleep(0.6)   # lost work after the checkpoint (or a machine under load)
        raise RuntimeError("interrupted")

    def finishes(cfg):  # type: ignore[no-untyped-def]
        assert cfg.resume == str(plan.run_dir)
        time.sleep(0.2)
        (ckpts / "best.ckpt").write_bytes(b"x")
        write_status(plan.run_dir, "complete", metrics={})

    with pytest.raises(RuntimeError, match="interrupted"):
        ensure_stage(plan, dies)
    first = json.loads((plan.run_dir / "stage_time.json").read_text())
    assert first["train_seconds"] < 0.3 and first["attempt_seconds"][0] >= 0.6
    assert ensure_stage(plan, finishes).resumed
    rec = json.loads((plan.run_dir / "stage_time.json").read_text())
    assert rec["attempts"] == 2 and len(rec["attempt_seconds"]) == 2
    assert 0.2 <= rec["train_seconds"] < 0.5 < sum(rec["attempt_seconds"])


def test_site_datamodule_built_once_per_data(tmp_path: Path) -> None:
    from musclelab.strategies.base import SITE_CACHE, StageContext

    built: list[str] = []

    class FakeDM:
        def __init__(self, cfg):  # type: ignore[no-untyped-def]
            built.append(str(cfg.data.source.site))
            self.batch_size = int(cfg.data.batch_size)

        def setup(self, stage: str) -> None:
            self.stage = stage

    SITE_CACHE.clear()
    sites = _sites(tmp_path, ("a", "b"))
    earlier = [{"dataset": s, "data": OmegaConf.to_container(sites[s]), "run_dir": "x"} for s in ("a", "b")]
    ctx = StageContext(_base(tmp_path), 2, {}, earlier, FakeDM)
    first = ctx.site_datamodule(0)
    assert ctx.site_datamodule(0) is first and first.stage == "fit"
    assert ctx.site_datamodule(1) is not first and built == ["a", "b"]
    # another stage (its own batch size) gets its own
    big = _base(tmp_path, extra=["data.batch_size=8"])
    assert StageContext(big, 1, {}, earlier, FakeDM).site_datamodule(0).batch_size == 8 and built[-1] == "a"
    SITE_CACHE.clear()


def test_forward_transfer_baseline(tmp_path: Path) -> None:
    sites, root = _sites(tmp_path), tmp_path / "stages"
    b = random_baseline(_base(tmp_path), "a", sites, root)
    assert set(b) == {"a", "b"} and all(0 <= v <= 1 for v in b.values())
    assert random_baseline(_base(tmp_path, "ewc"), "a", sites, root) == b   # once per study, reused


# replay ~5 s on a quiet machine (14 s at load 5); ewc / lwf resume the same way (~20 s each at load 5): slow
@pytest.mark.parametrize("strategy", ["replay", pytest.param("ewc", marks=pytest.mark.slow),
                                      pytest.param("lwf", marks=pytest.mark.slow)])
def test_strategy_stage_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """A strategy's stage killed in its second epoch and resumed gives the uninterrupted stage's numbers: replay's
    memory draws are derived from seed + batches fetched (restored with the loop's progress), EWC's Fisher is read
    back from the finished stage's cache, LwF's teacher is the parent's best checkpoint again."""
    import pytorch_lightning as pl

    import musclelab.train as train_mod

    sites = _sites(tmp_path)
    base = _base(tmp_path, strategy, ["trainer.max_epochs=2", "study.replay.per_site=4", "study.replay.fraction=0.5",
                                      "study.ewc.fisher_batches=2", "study.lwf.alpha=2.0"])
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
    if strategy != "replay":
        assert "train_penalty" in cols or "train/penalty" in cols   # the strategy's term is in what is compared
    assert resumed.stages[1].score("b") == pytest.approx(whole.stages[1].score("b"), abs=0)
    assert json.loads((resumed.stages[1].run_dir / "stage_time.json").read_text())["attempts"] == 2


# a tiny 3D chain: the abdominal phantom's liver sites as volumes (32 px in-plane, 12 mm voxels: ~20-30 voxels a
# side), 16^3 patches, the 8..32-channel 3D U-Net
TINY3D = ["logger=none", "data=abdomen_phantom", "data.spatial_dims=3", "data.source.n_volumes=5",
          "data.spacing=[12.0,12.0,12.0]", "data.patch_size=[16,16,16]", "data.patches_per_volume=2",
          "data.batch_size=2", "data.val_fraction=0.2", "data.test_fraction=0.2", "model=kim2024_unet_smoke",
          "cpu_threads=1"]


def _site3d(tmp_path: Path, site: str) -> DictConfig:
    data = compose_cfg(tmp_path / "unused", TINY3D).data
    with open_dict(data):
        for key in ("slices", "margin", "test_site", "n_test_volumes"):   # the 2D slice form's settings
            data.source.pop(key)
        data.source.site, data.source.size = site, 32
    return data


def test_3d_chain_replay_and_ewc(tmp_path: Path) -> None:
    """Replay's memory holds 3D patches and EWC's Fisher is taken on patches: both strategies run a 3D chain through
    the stage mechanism (stage 0 shared)."""
    sites, root = {s: _site3d(tmp_path, s) for s in ("lits", "btcv")}, tmp_path / "stages"
    for strategy in ("replay", "ewc"):
        base = compose_cfg(tmp_path / "unused", [*TINY3D, f"study.strategy={strategy}", "study.replay.per_site=2",
                                                 "study.ewc.fisher_batches=2"])
        result = run_chain(base, ["lits", "btcv"], sites, root)
        assert result.n_trained == (2 if strategy == "replay" else 1)
        assert all(0 <= v <= 1 for v in result.matrix().to_numpy().ravel())
        cost = json.loads((result.stages[1].run_dir / "strategy_cost.json").read_text())
        assert cost["extra_seconds"] > 0
    assert list(result.stages[0].run_dir.glob("ewc_fisher-*.pt"))
    from musclelab.strategies.replay import build_memory

    dm = _train_dm(tmp_path, sites["lits"], TINY3D)
    memory = build_memory([dm.datasets["train"]], per_site=2, seed=0)
    assert tuple(memory["image"].shape) == (2, 1, 16, 16, 16)


@pytest.mark.slow  # ~2 min on 2 shared cores (two spawned processes per stage)
def test_replay_and_lwf_stage_under_two_process_ddp(tmp_path: Path) -> None:
    """trainer=ddp_cpu (2 gloo processes, ddp_spawn): the memory and the teacher travel to both ranks, each rank
    mixes into its own batches, and the stage completes."""
    sites = _sites(tmp_path)
    for strategy in ("replay", "lwf"):
        base = _base(tmp_path, strategy, ["trainer=ddp_cpu", "trainer.max_epochs=1", "study.replay.per_site=4"])
        result = run_chain(base, ["a", "b"], sites, tmp_path / "stages")
        assert result.n_trained >= 1 and 0 <= result.stages[1].score("b") <= 1
