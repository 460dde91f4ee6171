"""Tests for the pretext tasks: permutation sets, jigsaw puzzles, networks, weight transfer and Lightning fits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from musclelab.models import build_model
from musclelab.pretext import (
    PRETEXT_TASKS,
    AutoencoderNet,
    AutoencoderTask,
    JigsawDataset,
    JigsawNet,
    JigsawTask,
    build_pretext_task,
    hamming_stats,
    load_trunk_state_dict,
    make_jigsaw_sample,
    maximal_hamming_permutations,
    pairwise_hamming,
    reconstruction_loss,
    unpermute,
)
from musclelab.registry import UnknownNameError

# measured guarantees for 50 permutations of 9 tiles (documented in musclelab.pretext.permutations)
GUARANTEED_MIN = {"greedy": 7, "noroozi": 2, "affine": 8}


class ImageDataset(Dataset):
    """Random ``image`` dicts with a (to be ignored) segmentation ``label``, like SliceDataset items."""

    def __init__(self, n: int = 4, channels: int = 1, size: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, channels, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": torch.zeros(self.images.shape[-2:], dtype=torch.long),
                "case_id": f"case{i}"}


# ------------------------------------------------------------------------------------------------- permutations


@pytest.mark.parametrize("method", ["greedy", "noroozi", "affine"])
def test_permutation_set_distinct_and_far_apart(method: str) -> None:
    perms = maximal_hamming_permutations(50, 9, seed=0, method=method)
    assert perms.shape == (50, 9)
    assert all(sorted(row) == list(range(9)) for row in perms.tolist())
    assert len({tuple(row) for row in perms.tolist()}) == 50
    lo, mean = hamming_stats(perms)
    assert lo >= GUARANTEED_MIN[method]
    assert mean == pytest.approx(8.155, abs=0.01)
    dist = pairwise_hamming(perms)
    assert (np.diag(dist) == 0).all() and dist[np.triu_indices(50, 1)].min() == lo


def test_permutations_deterministic_and_seeded() -> None:
    a = maximal_hamming_permutations(50, 9, seed=0)
    b = maximal_hamming_permutations(50, 9, seed=0)
    assert np.array_equal(a, b)
    a[0, 0] = 99  # callers get copies: the cache is not corrupted
    assert maximal_hamming_permutations(50, 9, seed=0)[0, 0] != 99
    c = maximal_hamming_permutations(50, 9, seed=1)
    assert not np.array_equal(b, c)
    assert hamming_stats(c)[0] >= GUARANTEED_MIN["greedy"]
    for seed in (0, 3):
        aff = maximal_hamming_permutations(50, 9, seed=seed, method="affine")
        assert np.array_equal(aff, maximal_hamming_permutations(50, 9, seed=seed, method="affine"))
        assert hamming_stats(aff)[0] >= 8
    # the affine construction on 4 tiles: 12 permutations, every pair differs in >= 3 positions
    assert hamming_stats(maximal_hamming_permutations(12, 4, method="affine"))[0] == 3


def test_permutation_errors() -> None:
    with pytest.raises(ValueError, match="method"):
        maximal_hamming_permutations(10, 9, method="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most 72"):
        maximal_hamming_permutations(73, 9, method="affine")
    with pytest.raises(ValueError, match="prime power"):
        maximal_hamming_permutations(10, 6, method="affine")


# ------------------------------------------------------------------------------------------------------ jigsaw


def test_tiles_reassemble_to_crop_without_jitter() -> None:
    perms = maximal_hamming_permutations(50, 9)
    image = torch.arange(2 * 40 * 50, dtype=torch.float32).reshape(2, 40, 50)
    for k in (0, 17, 49):
        tiles, label = make_jigsaw_sample(image, k, perms, tile_size=12, jitter=0, normalize=False, crop="center")
        assert label == k and tiles.shape == (9, 2, 12, 12)
        cells = unpermute(tiles, perms[k])
        grid = cells.reshape(3, 3, 2, 12, 12).permute(2, 0, 3, 1, 4).reshape(2, 36, 36)
        assert torch.equal(grid, image[:, 2:38, 7:43])  # centred 36x36 crop
        for i in range(9):  # position i shows original cell perm[i]
            assert torch.equal(tiles[i], cells[perms[k][i]])


def test_jitter_normalisation_and_size_check() -> None:
    perms = maximal_hamming_permutations(50, 9)
    image = torch.rand(1, 64, 64) * 5 + 3
    g = torch.Generator().manual_seed(1)
    tiles, _ = make_jigsaw_sample(image, 3, perms, tile_size=17, jitter=4, generator=g)
    assert tiles.shape == (9, 1, 17, 17)
    flat = tiles.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(9), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(9), atol=1e-4)
    zero, _ = make_jigsaw_sample(torch.zeros(1, 64, 64), 0, perms, 17, 4)  # constant tiles: 0, not NaN
    assert torch.equal(zero, torch.zeros_like(zero))
    with pytest.raises(ValueError, match="smaller than"):
        make_jigsaw_sample(image, 0, perms, tile_size=20, jitter=2)


def test_jigsaw_dataset_labels_and_determinism() -> None:
    perms = maximal_hamming_permutations(50, 9)
    base = ImageDataset(n=6)
    fixed = JigsawDataset(base, perms, tile_size=17, jitter=4, seed=5)
    items = [fixed[i] for i in range(len(fixed))]
    assert all(torch.equal(a["tiles"], fixed[i]["tiles"]) for i, a in enumerate(items))  # fixed per (seed, index)
    assert {int(a["label"]) for a in items} <= set(range(50)) and items[0]["case_id"] == "case0"
    assert "image" not in items[0]
    assert items[0]["tiles"].shape == (9, 1, 17, 17) and items[0]["label"].dtype == torch.long
    # the label is the permutation that was applied: undoing it gives back the centred crop
    plain = JigsawDataset(base, perms, tile_size=12, jitter=0, seed=0, normalize=False, crop="center")
    for i in range(len(plain)):
        item = plain[i]
        k = int(item["label"])
        cells = unpermute(item["tiles"], perms[k])
        grid = cells.reshape(3, 3, 1, 12, 12).permute(2, 0, 3, 1, 4).reshape(1, 36, 36)
        assert torch.equal(grid, base[i]["image"][:, 14:50, 14:50])
    torch.manual_seed(0)
    first = JigsawDataset(base, perms, 17, 4)[0]
    torch.manual_seed(0)
    again = JigsawDataset(base, perms, 17, 4)[0]
    assert torch.equal(first["tiles"], again["tiles"]) and first["label"] == again["label"]  # global-RNG driven


def test_jigsaw_net_forward_and_overfit() -> None:
    torch.manual_seed(0)
    net = JigsawNet("resnet18", n_perms=50, in_channels=1, hidden=64, dropout=0.0)
    assert list(net.state_dict())[0] == "trunk.conv1.weight"
    tiles = torch.randn(2, 9, 1, 16, 16)
    labels = torch.tensor([7, 49])
    assert net(tiles).shape == (2, 50)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(tiles), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="tiles"):
        net(torch.randn(2, 4, 1, 17, 17))


def test_jigsaw_resnet101_forward() -> None:
    torch.manual_seed(0)
    task = build_pretext_task("jigsaw", in_channels=1, img_size=48)
    assert task.hparams.trunk == "resnet101" and task.net.head[0].in_features == 9 * 2048
    assert task.net.head[0].out_features == 1024 and task.perms.shape == (50, 9)
    task.eval()
    with torch.no_grad():
        assert task(torch.randn(1, 9, 1, 16, 16)).shape == (1, 50)


# ------------------------------------------------------------------------------------------------- autoencoder


def test_autoencoder_overfits() -> None:
    torch.manual_seed(0)
    task = AutoencoderTask("fcn_resnet50", in_channels=1, img_size=32, lr=1e-3)
    net = task.net
    assert isinstance(net, AutoencoderNet)
    fcn = build_model("fcn_resnet50", 1, 3, 32)
    own, seg = net.state_dict(), fcn.state_dict()
    assert set(own) == set(seg)  # identical names; only the last classifier conv differs in shape
    assert [k for k in own if own[k].shape != seg[k].shape] == ["classifier.4.weight", "classifier.4.bias"]
    image = torch.rand(2, 1, 32, 32)
    assert task(image).shape == image.shape
    opt = task.configure_optimizers()
    losses = []
    for _ in range(8):  # Adam's first steps overshoot on a fresh BN network; by step 8 it is well below the start
        opt.zero_grad()
        loss = reconstruction_loss(task(image), image)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError, match="autoencoder backbone"):
        AutoencoderNet("unet", 1, 32)


# -------------------------------------------------------------------------------------------- weight transfer


def _check_transfer(trunk_sd: dict[str, torch.Tensor], depth: int) -> None:
    """Every trunk tensor is a backbone.* key of torchvision's FCN of this depth with the same shape."""
    assert trunk_sd and all(k.startswith("backbone.") for k in trunk_sd)
    assert not any(k.startswith("backbone.fc.") for k in trunk_sd)
    fcn = getattr(torchvision.models.segmentation, f"fcn_resnet{depth}")(weights=None, weights_backbone=None)
    target = fcn.backbone.state_dict()
    stripped = {k[len("backbone."):]: v for k, v in trunk_sd.items()}
    assert set(stripped) == set(target)
    assert all(stripped[k].shape == target[k].shape for k in stripped)
    fcn.backbone.load_state_dict(stripped, strict=True)
    assert torch.equal(fcn.backbone.layer4[0].conv2.weight, stripped["layer4.0.conv2.weight"])


def test_trunk_state_dicts_transfer_into_fcn(tmp_path) -> None:
    jig = JigsawTask(trunk="resnet50", in_channels=3, img_size=48, hidden=32)
    _check_transfer(jig.trunk_state_dict(), 50)
    ae = AutoencoderTask(backbone="fcn_resnet50", in_channels=3, img_size=32)
    _check_transfer(ae.trunk_state_dict(), 50)

    # 1-channel trunks load into the registry's 1-channel FCN through model.params.weights_path
    jig1 = JigsawTask(trunk="resnet50", in_channels=1, img_size=48, hidden=32)
    path = jig1.save_trunk(tmp_path / "jigsaw_trunk.pt")
    seg = build_model("fcn_resnet50", 1, 3, 32, weights_path=path)
    assert torch.equal(seg.state_dict()["backbone.conv1.weight"], jig1.net.trunk.conv1.weight)
    assert torch.equal(seg.state_dict()["backbone.layer3.5.bn3.running_var"],
                       jig1.net.trunk.layer3[5].bn3.running_var)
    ckpt = tmp_path / "jig.ckpt"
    torch.save({"state_dict": jig1.state_dict()}, ckpt)  # Lightning checkpoint layout: net.trunk.*
    loaded = load_trunk_state_dict(ckpt)
    assert set(loaded) == set(jig1.trunk_state_dict())
    assert torch.equal(loaded["backbone.conv1.weight"], jig1.net.trunk.conv1.weight)


# ---------------------------------------------------------------------------------------------- registry / fit


def test_registry() -> None:
    assert PRETEXT_TASKS.names() == ["autoencoder", "jigsaw"]
    with pytest.raises(UnknownNameError, match="init.name"):
        build_pretext_task("rotation", 1, 64)


def _fit(task: pl.LightningModule, train: Dataset, val: Dataset, batch_size: int, ckpt) -> dict[str, float]:
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(task, DataLoader(train, batch_size=batch_size, shuffle=True),
                DataLoader(val, batch_size=batch_size))
    trainer.save_checkpoint(ckpt)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_lightning_fit_jigsaw(tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    task = build_pretext_task("jigsaw", in_channels=1, img_size=64, trunk="resnet18", hidden=64, lr=1e-3)
    assert (task.hparams.tile_size, task.hparams.jitter) == (17, 4)
    base = ImageDataset(n=4)
    ckpt = tmp_path / "jigsaw.ckpt"
    metrics = _fit(task, task.jigsaw_dataset(base), task.jigsaw_dataset(base, seed=0), 2, ckpt)
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    trunk = task.trunk_state_dict()
    assert set(trunk) == {f"backbone.{k}" for k in task.net.trunk.state_dict()}
    restored = JigsawTask.load_from_checkpoint(ckpt)  # plain hparams suffice; perms travel as a buffer
    assert torch.equal(restored.perms, task.perms) and restored.hparams.tile_size == 17
    for other in (restored.trunk_state_dict(), load_trunk_state_dict(ckpt)):
        assert set(other) == set(trunk) and all(torch.equal(v, other[k]) for k, v in trunk.items())


def test_lightning_fit_autoencoder(tmp_path) -> None:
    pl.seed_everything(0, verbose=False)
    task = build_pretext_task("autoencoder", in_channels=1, img_size=32, backbone="fcn_resnet50")
    ckpt = tmp_path / "ae.ckpt"
    metrics = _fit(task, ImageDataset(n=4, size=32), ImageDataset(n=2, size=32), 2, ckpt)
    assert {"train/loss", "val/loss"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    # the Lightning checkpoint itself loads into the segmentation FCN via model.params.weights_path
    seg = build_model("fcn_resnet50", 1, 3, 32, weights_path=str(ckpt)).state_dict()
    trunk = task.trunk_state_dict()
    assert all(torch.equal(v, seg[k]) for k, v in trunk.items())
    assert set(load_trunk_state_dict(ckpt)) == set(trunk)


def test_autoencoder_transfers_encoder_and_decoder(tmp_path) -> None:
    """McSweeney 2022: every layer present in the target gets the pretext weights, not only the backbone."""
    from musclelab.transfer import apply_init

    ae = AutoencoderTask(backbone="fcn_resnet50", in_channels=3, img_size=32)
    full = ae.transfer_state_dict()
    assert set(full) == set(ae.net.state_dict()) and any(k.startswith("classifier.") for k in full)
    path = ae.save_trunk(tmp_path / "ae.pt")
    seg = build_model("fcn_resnet50", 3, 1, 32)
    report = apply_init(seg, {"name": "autoencoder", "weights_path": path}, tmp_path, "fcn_resnet50")
    assert "classifier.0.weight" in report.transferred and "backbone.layer4.2.conv3.weight" in report.transferred
    assert torch.equal(seg.state_dict()["classifier.0.weight"], full["classifier.0.weight"])
    assert {s.name for s in report.skipped} >= {"classifier.4.weight"}  # 3 reconstruction vs 1 class channel
    # a Lightning checkpoint of the task (net.*) transfers the same tensors
    ckpt = tmp_path / "ae.ckpt"
    torch.save({"state_dict": ae.state_dict()}, ckpt)
    seg2 = build_model("fcn_resnet50", 3, 1, 32)
    report2 = apply_init(seg2, {"name": "autoencoder", "checkpoint": str(ckpt)}, None, "fcn_resnet50")
    assert set(report2.transferred) == set(report.transferred)
