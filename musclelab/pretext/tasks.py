"""LightningModules for self-supervised pretext pretraining (McSweeney et al. 2022): :class:`AutoencoderTask` and
:class:`JigsawTask`.

Both tasks train on unlabelled slices and take plain-value hyperparameters, so ``load_from_checkpoint`` needs
nothing else. They log ``train/loss`` and ``val/loss``; the jigsaw task also logs ``train/acc`` and ``val/acc``.

What transfers: the jigsaw task's trunk (its head classifies permutations, nothing in a segmentation network
matches it); the autoencoder's whole FCN, encoder and decoder (:meth:`AutoencoderTask.transfer_state_dict`), so
the fine-tuned FCN starts with the pretext decoder too, as in the paper ("weights from layers of the pre-trained
models were directly transferred to the target network if they were also present in the latter").
Batches:

* autoencoder: any dict batch with ``image`` ``(B, C, H, W)``, e.g. from ``SliceDataset``; labels are ignored.
* jigsaw: batches of :class:`~musclelab.pretext.jigsaw.JigsawDataset`, with ``tiles`` ``(B, 9, C, t, t)`` and
  ``label`` ``(B,)``. Use :meth:`JigsawTask.jigsaw_dataset` to wrap a slice dataset with the task's permutations
  and tile geometry. Give it ``seed=None`` for training and an int seed for a fixed validation set.

Weight-transfer contract
------------------------
**A pretext checkpoint's transferable weights are ``backbone.<torchvision resnet key>``.** Examples are
``backbone.conv1.weight``, ``backbone.bn1.running_mean`` and ``backbone.layer3.22.conv2.weight``. There are no
``fc.*`` keys. :meth:`~AutoencoderTask.trunk_state_dict` returns exactly these keys as detached CPU tensors, and
:func:`load_trunk_state_dict` extracts them from a saved Lightning checkpoint of either task. Their names and
shapes equal those in the ``state_dict()`` of ``FCNLogits`` / torchvision ``fcn_resnet{50,101}`` with the same
ResNet depth and ``in_channels``, so they load into the segmentation model by name. For example, save them with
:meth:`~AutoencoderTask.save_trunk` and set ``model.params.weights_path`` to that file. Only resnet50 / resnet101
trunks transfer into the FCNs, because resnet18 / resnet34 have a different block type. Inside the Lightning
checkpoints the networks live under ``net.``: the autoencoder as ``net.backbone.*`` / ``net.classifier.*``, which
the registry's ``weights_path`` loader also accepts directly, and the jigsaw network as ``net.trunk.*`` /
``net.head.*``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from musclelab.pretext.autoencoder import AutoencoderNet, reconstruction_loss
from musclelab.pretext.jigsaw import JigsawDataset, JigsawNet, default_tile_geometry
from musclelab.pretext.permutations import maximal_hamming_permutations

__all__ = ["AutoencoderTask", "JigsawTask", "TRANSFER_PREFIX", "load_trunk_state_dict", "trunk_keys"]

TRANSFER_PREFIX = "backbone."
"""Prefix of transferable trunk weights; what follows it is a torchvision ResNet state-dict key."""


def trunk_keys(state: Mapping[str, torch.Tensor], source_prefix: str) -> dict[str, torch.Tensor]:
    """Keys under ``source_prefix`` renamed to ``backbone.<rest>`` (``fc.*`` dropped), as detached CPU tensors."""
    out = {}
    for key, value in state.items():
        if key.startswith(source_prefix):
            rest = key[len(source_prefix):]
            if not rest.startswith("fc."):
                out[TRANSFER_PREFIX + rest] = value.detach().cpu().clone()
    return out


def load_trunk_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The transferable ``backbone.*`` weights of a saved pretext checkpoint: a Lightning ``.ckpt`` of either task,
    or a file written by ``save_trunk``."""
    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    for prefix in ("net.trunk.", "net.backbone.", TRANSFER_PREFIX):
        found = trunk_keys(state, prefix)
        if found:
            return found
    raise ValueError(f"{path} has no pretext trunk weights (keys net.trunk.*, net.backbone.* or backbone.*)")


class _PretextTask(pl.LightningModule):
    """Shared parts: Adam, trunk export, and train/val steps around the subclass's ``_step(batch, stage)``."""

    net: torch.nn.Module
    _trunk_prefix: str

    def trunk_state_dict(self) -> dict[str, torch.Tensor]:
        """Pretrained trunk weights as ``backbone.<torchvision resnet key>`` (detached CPU copies)."""
        return trunk_keys(self.net.state_dict(), self._trunk_prefix)

    def transfer_state_dict(self) -> dict[str, torch.Tensor]:
        """What a fine-tuning run receives: :meth:`trunk_state_dict` (tasks whose head has no counterpart in
        the segmentation network); the autoencoder overrides it with its whole network."""
        return self.trunk_state_dict()

    def save_trunk(self, path: str | os.PathLike[str]) -> str:
        """Write :meth:`transfer_state_dict` with ``torch.save``; usable as ``init.weights_path`` (name- and
        shape-matched transfer) or, for trunk-only tasks, as ``model.params.weights_path`` of an FCN."""
        path = os.fspath(path)
        torch.save(self.transfer_state_dict(), path)
        return path

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")


class AutoencoderTask(_PretextTask):
    """FCN-ResNet autoencoder: reconstruct the windowed input ``image`` under an MSE loss.

    Args:
        backbone: ``fcn_resnet101`` (paper) or ``fcn_resnet50``; in_channels: image channels; img_size: input side.
        lr, weight_decay: Adam settings; model_params: extra ``model.params`` of the FCN; meta: free-form metadata.
    """

    _trunk_prefix = "backbone."

    def __init__(
        self, backbone: str = "fcn_resnet101", in_channels: int = 1, img_size: int = 128, lr: float = 1e-3,
        weight_decay: float = 0.0, model_params: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = AutoencoderNet(backbone, in_channels, img_size, **(model_params or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, C, H, W)`` of images ``(B, C, H, W)``."""
        return self.net(x)

    def transfer_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole autoencoder, encoder (``backbone.*``) and decoder (``classifier.*``), as detached CPU
        tensors: McSweeney 2022 transfer every layer present in the target network, so every tensor whose name
        and shape match the segmentation FCN is copied (all but the last conv, whose channels differ)."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        image = batch["image"]
        loss = reconstruction_loss(self(image), image)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=image.shape[0],
                 sync_dist=True)
        return loss


class JigsawTask(_PretextTask):
    """Jigsaw-puzzle classification with a Siamese ResNet trunk (Noroozi & Favaro 2016).

    Args:
        trunk: ``resnet101`` (paper), ``resnet50``, ``resnet34`` or ``resnet18``; in_channels: image channels.
        img_size: slice side length. It sets the default tile geometry (see ``default_tile_geometry``:
            ``tile_size`` is 64/75 of a third of the image, and ``jitter`` is the rest of the cell).
        n_perms, perm_seed, perm_method: the permutation set (``maximal_hamming_permutations``), kept in the
            ``perms`` buffer so that checkpoints carry it.
        hidden, dropout: classifier head; lr, weight_decay: Adam settings; meta: free-form metadata.
    """

    _trunk_prefix = "trunk."

    def __init__(
        self, trunk: str = "resnet101", in_channels: int = 1, img_size: int = 225, n_perms: int = 50,
        tile_size: int | None = None, jitter: int | None = None, perm_seed: int = 0, perm_method: str = "affine",
        hidden: int = 1024, dropout: float = 0.5, lr: float = 1e-3, weight_decay: float = 0.0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        default_tile, default_jitter = default_tile_geometry(img_size)
        tile_size = default_tile if tile_size is None else int(tile_size)
        jitter = default_jitter if jitter is None else int(jitter)
        if 3 * (tile_size + jitter) > img_size:
            raise ValueError(f"jigsaw crop 3 x (tile_size {tile_size} + jitter {jitter}) exceeds img_size {img_size}")
        self.save_hyperparameters()
        self.hparams.tile_size, self.hparams.jitter = tile_size, jitter  # resolved values go into the checkpoint
        perms = maximal_hamming_permutations(n_perms, 9, perm_seed, perm_method)  # type: ignore[arg-type]
        self.register_buffer("perms", torch.as_tensor(perms, dtype=torch.long))
        self.net = JigsawNet(trunk, n_perms, in_channels, 9, hidden, dropout)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Permutation logits ``(B, n_perms)`` for tiles ``(B, 9, C, t, t)``."""
        return self.net(tiles)

    def jigsaw_dataset(self, dataset: Dataset, seed: int | None = None, crop: str = "random",
                       resize: int | None = None) -> JigsawDataset:
        """Wrap a dataset of ``image`` dicts as puzzles with this task's permutations and tile geometry
        (``seed=None``: fresh puzzles each epoch for training; an int: a fixed validation set)."""
        return JigsawDataset(dataset, self.perms.cpu().numpy(), self.hparams.tile_size, self.hparams.jitter,
                             seed=seed, crop=crop, resize=resize)

    def _step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        logits = self(batch["tiles"])
        label = batch["label"]
        loss = torch.nn.functional.cross_entropy(logits, label)
        acc = (logits.argmax(dim=1) == label).float().mean()
        bs = label.shape[0]
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=bs,
                 sync_dist=True)
        return loss

