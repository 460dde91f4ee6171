"""Autoencoder pretext network (McSweeney et al. 2022). FCN-ResNet reconstructs its own windowed input under an MSE
loss, and the reconstruction is learned on the study's unlabelled training slices.

:class:`AutoencoderNet` is the model registry's FCN (``fcn_resnet101`` / ``fcn_resnet50``, see
:mod:`musclelab.models.registry`) with ``out_channels = in_channels`` and a linear output. It subclasses
:class:`~musclelab.models.FCNLogits`, so its state-dict keys are the segmentation model's: ``backbone.*``
(torchvision ResNet keys) and ``classifier.*``. Only the size of the last classifier conv differs. Transfer to the
segmentation network is therefore a plain load: every ``backbone.*`` tensor has the same name and shape.
"""
from __future__ import annotations

from typing import Any

import torch

from musclelab.models import FCNLogits, build_model

__all__ = ["AUTOENCODER_BACKBONES", "AutoencoderNet", "reconstruction_loss"]

AUTOENCODER_BACKBONES: tuple[str, ...] = ("fcn_resnet101", "fcn_resnet50")


class AutoencoderNet(FCNLogits):
    """FCN-ResNet mapping images ``(B, C, H, W)`` to reconstructions ``(B, C, H, W)``.

    ``backbone`` is a registry FCN name, and ``model_params`` are its ``model.params``, e.g. ``weights_backbone``.
    """

    def __init__(self, backbone: str = "fcn_resnet101", in_channels: int = 1, img_size: int = 128,
                 **model_params: Any) -> None:
        if backbone not in AUTOENCODER_BACKBONES:
            raise ValueError(
                f"autoencoder backbone must be one of {', '.join(AUTOENCODER_BACKBONES)} (the FCNs whose backbone "
                f"transfers to segmentation), got {backbone!r}"
            )
        fcn = build_model(backbone, in_channels, in_channels, img_size, **model_params)
        super().__init__(fcn.backbone, fcn.classifier)


def reconstruction_loss(recon: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the reconstruction and the input."""
    return torch.nn.functional.mse_loss(recon, image)
