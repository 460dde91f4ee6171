"""Jigsaw-puzzle pretext task (Noroozi & Favaro 2016), used as in McSweeney et al. 2022 to pretrain a ResNet trunk
on unlabelled CT slices before fine-tuning FCN-ResNet for muscle segmentation.

No library ships jigsaw pretraining for segmentation backbones, so this module provides three pieces:

* :func:`make_jigsaw_sample` builds one puzzle from an image. It crops a square of side ``grid * (tile_size +
  jitter)``, splits it into ``grid x grid`` cells (row-major), and takes a ``tile_size`` crop at a random offset
  of ``0..jitter`` pixels inside each cell. The offset gap stops the network from solving the puzzle by matching
  edges. It then normalises each tile on its own (per-channel zero mean and unit std), which stops it from matching
  intensity statistics, and shuffles the tiles with permutation ``perms[k]``. Position ``i`` shows the original
  cell ``perms[k][i]``, and the class label is ``k``.
* :class:`JigsawDataset` wraps any dataset of dicts with an ``image``, such as ``SliceDataset``. Segmentation
  labels are ignored because the pretext task is unsupervised. With ``seed=None`` each item draws its randomness
  from torch's global RNG, as ``SliceDataset`` does (the DataLoader seeds it per worker and epoch). With an int
  ``seed`` every item is a fixed puzzle, which gives a stable validation set.
* :class:`JigsawNet` is a Siamese network. One torchvision ResNet trunk (``weights=None``, ``fc`` removed) is shared
  by the tiles, which run as one ``B * n_tiles`` batch. The pooled tile features are concatenated and passed
  through ``fc(n_tiles * feat -> hidden) -> ReLU -> dropout -> fc(hidden -> n_perms)``. The trunk lives under
  ``trunk.``, so its keys are torchvision's ResNet keys: ``trunk.conv1.weight``, ``trunk.layer1.0.conv1.weight``,
  and so on. Renamed to ``backbone.<same key>``, they load into FCN-ResNet of the same depth (resnet50 / resnet101).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "TRUNKS", "JigsawDataset", "JigsawNet", "build_trunk", "default_tile_geometry", "make_jigsaw_sample", "unpermute",
]

TRUNKS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101")


def default_tile_geometry(img_size: int, grid: int = 3) -> tuple[int, int]:
    """``(tile_size, jitter)`` in the paper's proportions for a ``img_size`` square image.

    The paper uses 75-pixel cells and 64-pixel tiles. Here each cell is ``img_size // grid`` pixels, and the tile
    takes ``64/75`` of it, so that ``img_size=225`` gives ``(64, 11)`` and ``img_size=64`` gives ``(17, 4)``.
    """
    cell = int(img_size) // grid
    if cell < 2:
        raise ValueError(f"img_size {img_size} is too small for a {grid}x{grid} jigsaw")
    tile = max(1, cell * 64 // 75)
    return tile, cell - tile


def _normalize_tiles(tiles: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-tile, per-channel zero mean and unit std for ``(N, C, t, t)``; constant tiles become 0."""
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    std = tiles.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (tiles - mean) / std.clamp_min(eps)


def make_jigsaw_sample(
    image: torch.Tensor,
    perm_index: int,
    perms: np.ndarray | torch.Tensor,
    tile_size: int,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    normalize: bool = True,
    crop: str = "random",
) -> tuple[torch.Tensor, int]:
    """One puzzle from ``image`` ``(C, H, W)`` (or ``(H, W)``): returns ``(tiles (n_tiles, C, t, t), perm_index)``.

    The square crop has side ``grid * (tile_size + jitter)``, with ``grid = sqrt(n_tiles)``. It sits at a random
    position (``crop="random"``) or in the centre (``crop="center"``). Each tile is a ``tile_size`` crop at a
    random offset in ``[0, jitter]`` inside its cell. All randomness comes from ``generator``, or from torch's
    global RNG if it is None. Output position ``i`` holds cell ``perms[perm_index][i]``, so
    ``tiles[argsort(perm)]`` gives the cells back in row-major order.
    """
    perms_t = torch.as_tensor(np.asarray(perms), dtype=torch.long)
    if perms_t.ndim != 2:
        raise ValueError(f"perms must be (n_perms, n_tiles), got shape {tuple(perms_t.shape)}")
    n_perms, n_tiles = perms_t.shape
    grid = math.isqrt(n_tiles)
    if grid * grid != n_tiles:
        raise ValueError(f"perms must permute a square grid of tiles, got {n_tiles} tiles")
    if not 0 <= int(perm_index) < n_perms:
        raise ValueError(f"perm_index {perm_index} out of range for {n_perms} permutations")
    if tile_size < 1 or jitter < 0:
        raise ValueError(f"need tile_size >= 1 and jitter >= 0, got {tile_size}, {jitter}")
    image = torch.as_tensor(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {tuple(image.shape)}")
    cell = tile_size + jitter
    side = grid * cell
    _, h, w = image.shape
    if h < side or w < side:
        raise ValueError(
            f"image {h}x{w} is smaller than the {side}x{side} jigsaw crop ({grid} cells of tile_size {tile_size} + "
            f"jitter {jitter}); lower tile_size / jitter or raise the image size"
        )

    def randint(high: int) -> int:  # uniform in [0, high]
        return int(torch.randint(0, high + 1, (), generator=generator)) if high > 0 else 0

    if crop == "random":
        top, left = randint(h - side), randint(w - side)
    elif crop == "center":
        top, left = (h - side) // 2, (w - side) // 2
    else:
        raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
    cells = []
    for r in range(grid):
        for c in range(grid):
            y = top + r * cell + randint(jitter)
            x = left + c * cell + randint(jitter)
            cells.append(image[:, y:y + tile_size, x:x + tile_size])
    tiles = torch.stack(cells).to(torch.float32)
    if normalize:
        tiles = _normalize_tiles(tiles)
    return tiles[perms_t[int(perm_index)]].contiguous(), int(perm_index)


def _item_generator(seed: int | None, index: int) -> torch.Generator:
    """A generator for item ``index``: fixed per (seed, index), or seeded from torch's global RNG if seed is None."""
    if seed is None:
        item_seed = int(torch.randint(0, 2**31 - 1, ()).item())
    else:
        item_seed = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])
    return torch.Generator().manual_seed(item_seed)


class JigsawDataset(Dataset):
    """Jigsaw puzzles from the ``image`` of each item of ``dataset``, whose other keys are ignored.

    Items: ``tiles`` ``(n_tiles, C, tile_size, tile_size)`` float32, ``label`` (the permutation index, long), and
    ``case_id`` when the wrapped item has one. ``resize`` (optional) first resamples the image bilinearly to a
    ``resize x resize`` square. With ``seed=None`` each item is random, drawn from torch's global RNG. With an int
    ``seed`` each item is a fixed puzzle.
    """

    def __init__(
        self, dataset: Dataset, perms: np.ndarray, tile_size: int, jitter: int = 0, seed: int | None = None,
        normalize: bool = True, crop: str = "random", resize: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.perms = np.asarray(perms, dtype=np.int64)
        self.tile_size = int(tile_size)
        self.jitter = int(jitter)
        self.seed = seed
        self.normalize = normalize
        self.crop = crop
        self.resize = resize

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[i]
        image = torch.as_tensor(item["image"] if isinstance(item, dict) else item, dtype=torch.float32)
        if image.ndim == 2:
            image = image[None]
        if self.resize is not None and tuple(image.shape[-2:]) != (self.resize, self.resize):
            image = nn.functional.interpolate(image[None], size=(self.resize, self.resize), mode="bilinear",
                                              align_corners=False, antialias=True)[0]
        gen = _item_generator(self.seed, i)
        k = int(torch.randint(0, len(self.perms), (), generator=gen))
        tiles, label = make_jigsaw_sample(image, k, self.perms, self.tile_size, self.jitter, gen,
                                          self.normalize, self.crop)
        out: dict[str, Any] = {"tiles": tiles, "label": torch.tensor(label, dtype=torch.long)}
        if isinstance(item, dict) and "case_id" in item:
            out["case_id"] = item["case_id"]
        return out


def build_trunk(name: str = "resnet101", in_channels: int = 3) -> tuple[nn.Module, int]:
    """A torchvision ResNet (``weights=None``), ``fc`` replaced by ``Identity``, ``conv1`` taking ``in_channels``.

    Returns ``(trunk, feature_dim)``. Its state-dict keys are torchvision's, without ``fc.*``.
    """
    import torchvision

    if name not in TRUNKS:
        raise ValueError(f"unknown jigsaw trunk {name!r}; choose one of {', '.join(TRUNKS)}")
    trunk = getattr(torchvision.models, name)(weights=None)
    if in_channels != trunk.conv1.in_channels:
        old = trunk.conv1
        trunk.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
        nn.init.kaiming_normal_(trunk.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    feat = int(trunk.fc.in_features)
    trunk.fc = nn.Identity()
    return trunk, feat


class JigsawNet(nn.Module):
    """A Siamese ResNet jigsaw classifier: tiles ``(B, n_tiles, C, t, t)`` -> permutation logits ``(B, n_perms)``.

    ``trunk`` is ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``. Its weights are shared by all tiles,
    and its state-dict keys are ``trunk.<torchvision resnet key>``. ``head`` holds the classifier over the
    concatenated tile features.
    """

    def __init__(
        self, trunk: str = "resnet101", n_perms: int = 50, in_channels: int = 1, n_tiles: int = 9,
        hidden: int = 1024, dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_tiles = int(n_tiles)
        self.trunk, self.feature_dim = build_trunk(trunk, in_channels)
        self.head = nn.Sequential(
            nn.Linear(self.n_tiles * self.feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_perms),
        )

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_perms)`` for tiles ``(B, n_tiles, C, t, t)``."""
        if tiles.ndim != 5 or tiles.shape[1] != self.n_tiles:
            raise ValueError(f"expected tiles (B, {self.n_tiles}, C, t, t), got shape {tuple(tiles.shape)}")
        b = tiles.shape[0]
        feats = self.trunk(tiles.flatten(0, 1))  # (B * n_tiles, feat)
        return self.head(feats.reshape(b, self.n_tiles * self.feature_dim))


def unpermute(tiles: torch.Tensor, perm: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Put the tiles of a puzzle made with ``perm`` back in row-major cell order (the inverse of the shuffle)."""
    perm_t = torch.as_tensor(np.asarray(perm), dtype=torch.long)
    return tiles[torch.argsort(perm_t)]
