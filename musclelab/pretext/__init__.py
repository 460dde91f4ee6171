"""Self-supervised pretext pretraining (McSweeney et al. 2022, Med Phys): autoencoder and jigsaw tasks that pretrain
ResNet trunks on unlabelled CT slices for transfer into FCN-ResNet segmentation.

``PRETEXT_TASKS`` maps a name (config field ``init.name``) to a builder
``(in_channels, img_size, **params) -> LightningModule``. Transferable weights are ``backbone.<torchvision resnet
key>`` (see :mod:`musclelab.pretext.tasks`).
"""
from __future__ import annotations

from typing import Any, Callable

import pytorch_lightning as pl

from musclelab.pretext.autoencoder import AutoencoderNet, reconstruction_loss
from musclelab.pretext.jigsaw import (
    JigsawDataset,
    JigsawNet,
    build_trunk,
    default_tile_geometry,
    make_jigsaw_sample,
    unpermute,
)
from musclelab.pretext.permutations import hamming_stats, maximal_hamming_permutations, pairwise_hamming
from musclelab.pretext.tasks import AutoencoderTask, JigsawTask, TRANSFER_PREFIX, load_trunk_state_dict
from musclelab.registry import Registry

__all__ = [
    "PRETEXT_TASKS",
    "TRANSFER_PREFIX",
    "AutoencoderNet",
    "AutoencoderTask",
    "JigsawDataset",
    "JigsawNet",
    "JigsawTask",
    "build_pretext_task",
    "build_trunk",
    "default_tile_geometry",
    "hamming_stats",
    "load_trunk_state_dict",
    "make_jigsaw_sample",
    "maximal_hamming_permutations",
    "pairwise_hamming",
    "reconstruction_loss",
    "unpermute",
]

PretextBuilder = Callable[..., pl.LightningModule]
PRETEXT_TASKS: Registry[PretextBuilder] = Registry("pretext task", "init.name")


@PRETEXT_TASKS.register("autoencoder")
def build_autoencoder(in_channels: int, img_size: int, **params: Any) -> AutoencoderTask:
    """:class:`AutoencoderTask`; ``params``: backbone, lr, weight_decay, model_params, meta."""
    return AutoencoderTask(in_channels=in_channels, img_size=img_size, **params)


@PRETEXT_TASKS.register("jigsaw")
def build_jigsaw(in_channels: int, img_size: int, **params: Any) -> JigsawTask:
    """:class:`JigsawTask`; ``params``: trunk, n_perms, tile_size, jitter, perm_seed, perm_method, hidden, dropout,
    lr, weight_decay, meta."""
    return JigsawTask(in_channels=in_channels, img_size=img_size, **params)


def build_pretext_task(name: str, in_channels: int, img_size: int, **params: Any) -> pl.LightningModule:
    """Build the pretext task ``name``; an unknown name raises listing the known ones."""
    return PRETEXT_TASKS.get(name)(in_channels, img_size, **params)
