"""ParaTransCNN: a CNN and a vision transformer encoding the same image in parallel, fused by channel attention.

Architecture (after Sun, Xu & Duan 2024, "ParaTransCNN: Parallelized TransCNN Encoder for Medical Image
Segmentation", as used by Yoon et al. 2024 for CT muscle segmentation at 224 x 224):

* **CNN branch**: a torchvision ResNet-34 (``weights=None``; stem conv adapted to ``in_channels``) gives
  feature maps at 1/2 (stem, 64 ch), 1/4 (``layer1``, 64), 1/8 (``layer2``, 128), 1/16 (``layer3``, 256)
  and 1/32 (``layer4``, 512) of the input.
* **Transformer branch**, on the same input: ViT patch embedding (``patch_size`` x ``patch_size`` patches,
  a learned position embedding for the 224 x 224 grid) and ``depth`` pre-norm transformer blocks (timm's
  ViT ``Block``). The blocks are split into four consecutive groups; the tokens after each group are
  reshaped into a map (``embed_dim`` channels on the patch grid) and resized to the matching CNN scale,
  shallower groups feeding the finer scales (as in UNETR).
* **Fusion** at each of the four scales 1/4 .. 1/32: the CNN map and the transformer map are
  concatenated, re-weighted per channel by a squeeze-and-excitation block over the concatenated channels
  (global average pool -> bottleneck MLP -> sigmoid), and projected back to the CNN width by a 1 x 1 conv
  (+ BN + ReLU).
* **Decoder**: UNet-like; starting from the fused 1/32 map, each stage upsamples by 2 (bilinear),
  concatenates the skip (fused 1/16, 1/8, 1/4 maps, then the CNN stem at 1/2) and applies two 3 x 3
  conv-BN-ReLU; a last stage upsamples to full resolution and a 1 x 1 conv gives the logits
  ``(B, out_channels, H, W)``.

Why our own: no library (timm, MONAI, segmentation-models-pytorch, torchvision) ships ParaTransCNN, and the
authors' code is a research repository tied to Synapse / AVT data loaders. Widths and depths here are
configurable and the defaults are modest (a ResNet-34 plus a 4-block, 192-wide ViT), so a training step fits
on a laptop CPU. The CNN is a plain torchvision ResNet under ``cnn.`` (its ``conv1`` is the network's first
conv), so ImageNet / pretext ResNet-34 weights transfer onto it by name with :mod:`musclelab.transfer`:
``init=imagenet init.weights=ResNet34_Weights.IMAGENET1K_V1`` (:data:`IMAGENET_WEIGHTS`; downloaded once by
torchvision, or ``init.weights_path=<resnet34 .pth>`` offline; ``init.adapt_first_conv=true`` for 1-channel
input). The paper's ParaTransCNN starts from these weights; ``experiment=yoon2024_muscle`` does so.

Input size: exactly 224 x 224 (the paper's size). The position embedding is learned for that patch grid
and the CNN needs multiples of 32; other sizes are rejected before building with the fix spelled out.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from musclelab.models.registry import (
    MODELS,
    SIZE_FIELD,
    ModelSpec,
    _field,
    _fmt_hw,
)

__all__ = ["IMAGENET_WEIGHTS", "IMG_SIZE", "ParaTransCNN", "ChannelAttentionFusion"]

IMAGENET_WEIGHTS = "ResNet34_Weights.IMAGENET1K_V1"
"""The torchvision weights of the CNN branch's ImageNet initialisation (``init.weights`` with ``init=imagenet``)."""

IMG_SIZE = 224
"""The only input height / width ParaTransCNN takes (the paper's 224 x 224)."""

_CNN_WIDTHS = (64, 128, 256, 512)  # ResNet-34 layer1..layer4 channels (1/4 .. 1/32)
_STEM_WIDTH = 64
_N_DECODER = 5  # decoder stages: 1/16, 1/8, 1/4, 1/2, 1/1

DEFAULTS: dict[str, Any] = {
    "embed_dim": 192,
    "depth": 4,
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "patch_size": 16,
    "decoder_channels": (128, 64, 32, 32, 16),
    "se_reduction": 16,
    "dropout": 0.0,
}


class ChannelAttentionFusion(nn.Module):
    """Concatenate a CNN and a transformer map, squeeze-and-excitation over all channels, 1 x 1 conv out."""

    def __init__(self, cnn_channels: int, trans_channels: int, out_channels: int, reduction: int = 16) -> None:
        super().__init__()
        total = cnn_channels + trans_channels
        hidden = max(total // reduction, 8)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(total, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, total, 1),
            nn.Sigmoid(),
        )
        self.proj = nn.Sequential(
            nn.Conv2d(total, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, cnn: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
        x = torch.cat([cnn, trans], dim=1)
        return self.proj(x * self.se(x))


class _ConvBlock(nn.Sequential):
    """Two 3 x 3 conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class _DecoderStage(nn.Module):
    """Upsample x2 (bilinear), concatenate the skip (if any), two conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.block = _ConvBlock(cin + skip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(x)


class ParaTransCNN(nn.Module):
    """Parallel ResNet-34 + ViT encoder, channel-attention fusion at 1/4..1/32, UNet-like decoder.

    Maps ``(B, in_channels, 224, 224)`` to logits ``(B, out_channels, 224, 224)``; see the module docstring.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        img_size: int | tuple[int, int] = IMG_SIZE,
        embed_dim: int = 192,
        depth: int = 4,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        patch_size: int = 16,
        decoder_channels: Sequence[int] = (128, 64, 32, 32, 16),
        se_reduction: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block
        from torchvision.models import resnet34

        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h % patch_size or w % patch_size:
            raise ValueError(f"img_size {(h, w)} is not a multiple of patch_size={patch_size}")
        if len(decoder_channels) != _N_DECODER:
            raise ValueError(f"decoder_channels needs {_N_DECODER} entries, got {list(decoder_channels)}")
        self.img_size = (h, w)
        self.grid = (h // patch_size, w // patch_size)

        # CNN branch first, so that ``cnn.conv1.weight`` is the network's first conv (transfer adapts it).
        cnn = resnet34(weights=None)
        if in_channels != 3:
            cnn.conv1 = nn.Conv2d(in_channels, _STEM_WIDTH, kernel_size=7, stride=2, padding=3, bias=False)
        cnn.fc = nn.Identity()  # classification head unused (keeps ResNet key names for weight transfer)
        cnn.avgpool = nn.Identity()
        self.cnn = cnn

        # Transformer branch.
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, proj_drop=dropout, attn_drop=dropout)
            for _ in range(depth)
        )
        # tokens after block taps[i] feed scale i (1/4, 1/8, 1/16, 1/32): shallow -> fine
        self.taps = [max(-(-(i + 1) * depth // len(_CNN_WIDTHS)) - 1, 0) for i in range(len(_CNN_WIDTHS))]
        self.tap_norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in _CNN_WIDTHS)

        self.fusions = nn.ModuleList(
            ChannelAttentionFusion(c, embed_dim, c, se_reduction) for c in _CNN_WIDTHS
        )

        # Decoder: 1/32 -> 1/16 (+fused l3) -> 1/8 (+fused l2) -> 1/4 (+fused l1) -> 1/2 (+stem) -> 1/1.
        skips = (_CNN_WIDTHS[2], _CNN_WIDTHS[1], _CNN_WIDTHS[0], _STEM_WIDTH, 0)
        stages, cin = [], _CNN_WIDTHS[3]
        for skip, cout in zip(skips, decoder_channels):
            stages.append(_DecoderStage(cin, skip, int(cout)))
            cin = int(cout)
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, out_channels, kernel_size=1)

    def _transformer_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token maps ``(B, embed_dim, gh, gw)`` after each tapped block (one per fusion scale)."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = self.pos_drop(tokens + self.pos_embed)
        b, gh, gw = x.shape[0], *self.grid
        by_block: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in self.taps:
                by_block[i] = tokens
        maps = []
        for scale, tap in enumerate(self.taps):
            t = self.tap_norms[scale](by_block[tap])
            maps.append(t.transpose(1, 2).reshape(b, -1, gh, gw))
        return maps

    @staticmethod
    def _resize(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if tuple(t.shape[-2:]) == tuple(size):
            return t
        if t.shape[-2] >= size[0] and t.shape[-1] >= size[1]:
            return F.adaptive_avg_pool2d(t, size)
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"ParaTransCNN was built for {self.img_size[0]}x{self.img_size[1]} inputs, got "
                f"{tuple(x.shape[-2:])}; set `{SIZE_FIELD}` to {IMG_SIZE}"
            )
        c = self.cnn
        stem = c.relu(c.bn1(c.conv1(x)))  # 1/2
        f1 = c.layer1(c.maxpool(stem))    # 1/4
        f2 = c.layer2(f1)                 # 1/8
        f3 = c.layer3(f2)                 # 1/16
        f4 = c.layer4(f3)                 # 1/32
        tmaps = self._transformer_maps(x)
        fused = [
            fuse(f, self._resize(t, f.shape[-2:]))
            for fuse, f, t in zip(self.fusions, (f1, f2, f3, f4), tmaps)
        ]
        y = fused[3]
        for stage, skip in zip(self.decoder, (fused[2], fused[1], fused[0], stem, None)):
            y = stage(y, skip)
        return self.head(y)


# --------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------


def _positive_int(params: dict[str, Any], key: str) -> int:
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model 'paratranscnn': {_field(key)} must be a positive int, got {value!r}")
    return value


def _check(hw: tuple[int, int], params: dict[str, Any], in_channels: int | None) -> None:
    """Exactly 224 x 224; patch size dividing 224; heads dividing embed_dim; 5 decoder widths."""
    if hw != (IMG_SIZE, IMG_SIZE):
        raise ValueError(
            f"model 'paratranscnn' cannot take `{SIZE_FIELD}`={_fmt_hw(hw)}: it is built for "
            f"{IMG_SIZE}x{IMG_SIZE} inputs only (the paper's size; its transformer branch learns a position "
            f"embedding for that patch grid). Fix: set `{SIZE_FIELD}` to {IMG_SIZE} (slices are resampled "
            f"to it), or choose another `model.name`."
        )
    patch = _positive_int(params, "patch_size")
    if IMG_SIZE % patch or patch < 2:
        divisors = [d for d in (4, 8, 14, 16, 28, 32) if IMG_SIZE % d == 0]
        raise ValueError(
            f"model 'paratranscnn': {_field('patch_size')}={patch} must divide {IMG_SIZE} "
            f"(e.g. {', '.join(map(str, divisors))}; 16 as in the paper)"
        )
    dim, heads = _positive_int(params, "embed_dim"), _positive_int(params, "num_heads")
    _positive_int(params, "depth")
    _positive_int(params, "se_reduction")
    if dim % heads:
        raise ValueError(
            f"model 'paratranscnn': {_field('embed_dim')}={dim} must be divisible by {_field('num_heads')}="
            f"{heads}; e.g. embed_dim=192 with num_heads=3, or embed_dim=384 with num_heads=6."
        )
    dec = params["decoder_channels"]
    if (
        not isinstance(dec, (list, tuple))
        or len(dec) != _N_DECODER
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in dec)
    ):
        raise ValueError(
            f"model 'paratranscnn': {_field('decoder_channels')} must be {_N_DECODER} positive ints "
            f"(widths at 1/16, 1/8, 1/4, 1/2, 1/1 of the input), got {dec!r}"
        )
    mlp, drop = params["mlp_ratio"], params["dropout"]
    if isinstance(mlp, bool) or not isinstance(mlp, (int, float)) or mlp <= 0:
        raise ValueError(f"model 'paratranscnn': {_field('mlp_ratio')} must be a positive number, got {mlp!r}")
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= drop < 1:
        raise ValueError(f"model 'paratranscnn': {_field('dropout')} must be in [0, 1), got {drop!r}")


def _build(in_channels: int, out_channels: int, hw: tuple[int, int], **params: Any) -> nn.Module:
    params = dict(params)
    params["decoder_channels"] = tuple(params["decoder_channels"])
    return ParaTransCNN(in_channels, out_channels, hw, **params)


if "paratranscnn" not in MODELS:  # module re-import (e.g. importlib.reload) must not register twice
    MODELS.register("paratranscnn")(
        ModelSpec(
            name="paratranscnn",
            build=_build,
            defaults=dict(DEFAULTS),
            check=_check,
            summary="ParaTransCNN (parallel ResNet-34 + ViT, channel-attention fusion, UNet decoder); 224x224 only",
        )
    )
