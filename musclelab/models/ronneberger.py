"""The U-Net of Ronneberger et al. 2015 as Kawamoto et al. 2024 and Yoon et al. 2024 use it: ``model=ronneberger_unet``.

Ours because no library has this network as the papers describe it: MONAI's ``UNet`` downsamples with strided
convolutions (one stride-1 3x3 convolution in the whole network with ``num_res_units=0``), uses PReLU and ends in a
3x3 convolution; MONAI's ``BasicUNet`` has five levels of fixed widths and up-samples by a transposed convolution
into a channel count of its own; segmentation-models-pytorch's ``Unet`` has a pretrained-encoder layout.

The network (2D or 3D: ``spatial_dims`` comes from the data, ``data.spatial_dims``):

* encoder: per level two 3x3 convolutions, each followed by batch normalisation and ReLU (Kawamoto 2024,
  Methods: "3×3 convolution is applied twice and max pooling once, and this process is repeated four times"),
  then a 2x2 max pooling; ``depth`` (4) levels;
* bottleneck: two 3x3 convolutions (+ BN + ReLU) ("followed by a 3×3 convolution twice");
* decoder: per level a 2x2 transposed convolution (stride 2, halving the channels: the "up-convolution"),
  concatenation with the encoder's feature map of that level, two 3x3 convolutions (+ BN + ReLU);
* a final 1x1 convolution to ``out_channels`` logits. The softmax (or sigmoid) the papers apply is the loss's job
  (``loss.name``), as for every network of the registry: the network returns logits.

Widths double per level from ``features`` (64: 64 -> 128 -> 256 -> 512 -> 1024 at the bottleneck, the original).
Deliberate differences from Ronneberger 2015: 3x3 convolutions are padded (output size = input size, as the Keras
implementations Kawamoto used; the original's unpadded convolutions shrink 572 -> 388 and need tiling), batch
normalisation after every 3x3 convolution (Kawamoto's "batch normalization ... and ReLU"; ``norm=none`` gives the
original), so those convolutions have no bias (BN's shift replaces it), and no dropout at the end of the encoder
(neither paper mentions it).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from musclelab.models.registry import MODELS, MONAI_FIXED, ModelSpec, _field, _require_multiple

NORMS = ("batch", "instance", "none")

_LAYERS = {2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.InstanceNorm2d),
           3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.InstanceNorm3d)}


def _double_conv(dims: int, cin: int, cout: int, norm: str) -> nn.Sequential:
    """Two padded 3x3 convolutions, each followed by the normalisation (unless ``none``) and ReLU."""
    conv, _, _, bn, inorm = _LAYERS[dims]
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(conv(c_in, cout, kernel_size=3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(bn(cout))
        elif norm == "instance":
            layers.append(inorm(cout, affine=True))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RonnebergerUNet(nn.Module):
    """Ronneberger's U-Net: ``(B, in_channels, *spatial)`` -> logits ``(B, out_channels, *spatial)``.

    Every spatial side must be a multiple of ``2 ** depth`` (the max poolings).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features: int = 64, depth: int = 4,
                 norm: str = "batch") -> None:
        super().__init__()
        if spatial_dims not in _LAYERS:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv, up, pool, _, _ = _LAYERS[spatial_dims]
        widths = [features * 2 ** i for i in range(depth + 1)]   # 64, 128, 256, 512, 1024
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.encoder.append(_double_conv(spatial_dims, cin, w, norm))
            cin = w
        self.pools = nn.ModuleList(pool(kernel_size=2, stride=2) for _ in widths[:-1])   # one per level
        self.bottleneck = _double_conv(spatial_dims, widths[-2], widths[-1], norm)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w_low, w in zip(widths[:0:-1], widths[-2::-1]):           # (1024, 512), (512, 256), ...
            self.up.append(up(w_low, w, kernel_size=2, stride=2))
            self.decoder.append(_double_conv(spatial_dims, 2 * w, w, norm))
        self.head = conv(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block, pool in zip(self.encoder, self.pools):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def _check(hw: tuple[int, ...], params: dict[str, Any], in_channels: int | None) -> None:
    for key in ("features", "depth"):
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model 'ronneberger_unet': {_field(key)} must be a positive int, got {value!r}")
    if str(params.get("norm")).lower() not in NORMS:
        raise ValueError(f"model 'ronneberger_unet': {_field('norm')} must be one of {', '.join(NORMS)}, "
                         f"got {params.get('norm')!r}")
    depth = params["depth"]
    _require_multiple("ronneberger_unet", hw, 2 ** depth, f"{depth} 2x2 max poolings",
                      f", or lower {_field('depth')}")


def _build(in_channels: int, out_channels: int, hw: tuple[int, ...], **params: Any) -> nn.Module:
    return RonnebergerUNet(len(hw), in_channels, out_channels, features=int(params["features"]),
                           depth=int(params["depth"]), norm=str(params["norm"]).lower())


MODELS.register("ronneberger_unet")(
    ModelSpec(
        name="ronneberger_unet",
        build=_build,
        defaults={"features": 64, "depth": 4, "norm": "batch"},
        check=_check,
        forbidden=MONAI_FIXED,
        summary="Ronneberger's U-Net (2D or 3D): 2x[3x3 conv+BN+ReLU] + 2x2 max pool per level, transposed-conv "
                "up-sampling, 1x1 output; 64..1024 channels; sides multiples of 2**depth",
        spatial_dims=(2, 3),
    )
)
