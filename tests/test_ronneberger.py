"""The Ronneberger U-Net (models/ronneberger.py) against the structure the papers describe (Kawamoto 2024, Methods;
Ronneberger 2015): layer kinds and counts, channels per level, the parameter count computed by hand, 2D/3D shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from musclelab.models import build_model, check_input_size


def _count(model: nn.Module, kind: type, kernel: int | None = None) -> int:
    return sum(1 for m in model.modules() if isinstance(m, kind)
               and (kernel is None or m.kernel_size[0] == kernel))


@pytest.fixture(scope="module")
def unet64() -> nn.Module:
    return build_model("ronneberger_unet", in_channels=1, out_channels=2, img_size=512)


def test_layer_kinds_and_counts_follow_the_paper(unet64: nn.Module) -> None:
    assert _count(unet64, nn.MaxPool2d) == 4                        # "max pooling once ... repeated four times"
    assert _count(unet64, nn.ConvTranspose2d) == 4                  # one up-convolution per decoder level
    assert all(m.kernel_size == (2, 2) and m.stride == (2, 2) for m in unet64.modules()
               if isinstance(m, nn.ConvTranspose2d))
    # 2 per encoder level (4) + 2 in the bottleneck + 2 per decoder level (4) = 18
    assert _count(unet64, nn.Conv2d, kernel=3) == 18
    ones = [m for m in unet64.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(ones) == 1 and ones[0] is unet64.head and ones[0].out_channels == 2
    assert _count(unet64, nn.BatchNorm2d) == 18 and _count(unet64, nn.ReLU) == 18
    assert not any(isinstance(m, (nn.PReLU, nn.Softmax, nn.Sigmoid)) for m in unet64.modules())  # logits out


def test_channels_per_level(unet64: nn.Module) -> None:
    enc = [[m.out_channels for m in b if isinstance(m, nn.Conv2d)] for b in unet64.encoder]
    assert enc == [[64, 64], [128, 128], [256, 256], [512, 512]]
    assert [m.out_channels for m in unet64.bottleneck if isinstance(m, nn.Conv2d)] == [1024, 1024]
    assert [(u.in_channels, u.out_channels) for u in unet64.up] == [(1024, 512), (512, 256), (256, 128), (128, 64)]
    # each decoder level takes the concatenation (skip + up-convolution = 2w channels) down to w
    dec = [[(m.in_channels, m.out_channels) for m in b if isinstance(m, nn.Conv2d)] for b in unet64.decoder]
    assert dec == [[(1024, 512), (512, 512)], [(512, 256), (256, 256)], [(256, 128), (128, 128)],
                   [(128, 64), (64, 64)]]


def test_parameter_count_matches_the_hand_count(unet64: nn.Module) -> None:
    def conv3(cin: int, cout: int) -> int:      # 3x3 conv without bias (BN follows) + BN scale and shift
        return 9 * cin * cout + 2 * cout

    def level(cin: int, cout: int) -> int:      # two 3x3 convolutions
        return conv3(cin, cout) + conv3(cout, cout)

    def upconv(cin: int, cout: int) -> int:     # 2x2 transposed convolution with bias
        return 4 * cin * cout + cout

    encoder = level(1, 64) + level(64, 128) + level(128, 256) + level(256, 512)
    bottleneck = level(512, 1024)
    decoder = sum(upconv(2 * w, w) + level(2 * w, w) for w in (512, 256, 128, 64))
    head = 64 * 2 + 2                           # 1x1 conv to 2 classes, with bias
    by_hand = encoder + bottleneck + decoder + head
    # written out (9·cin·cout + 2·cout per 3x3 conv + BN):
    #   encoder  (576+128 + 36,864+128) + (73,728+256 + 147,456+256) + (294,912+512 + 589,824+512)
    #            + (1,179,648+1,024 + 2,359,296+1,024)                                     =  4,686,144
    #   bottleneck 4,718,592+2,048 + 9,437,184+2,048                                       = 14,159,872
    #   decoder  up 2,097,664 + 4,718,592+1,024 + 2,359,296+1,024  (w=512)  = 9,177,600
    #            up   524,544 + 1,179,648+512   +   589,824+512    (w=256)  = 2,295,040
    #            up   131,200 +   294,912+256   +   147,456+256    (w=128)  =   574,080
    #            up    32,832 +    73,728+128   +    36,864+128    (w=64)   =   143,680    = 12,190,400
    #   head     130                                                   total = 31,036,546
    assert (encoder, bottleneck, decoder, head) == (4_686_144, 14_159_872, 12_190_400, 130)
    assert sum(p.numel() for p in unet64.parameters()) == by_hand == 31_036_546


@pytest.mark.parametrize("dims,size", [(2, [32, 48]), (3, [16, 16, 32])])
def test_forward_shapes_2d_and_3d(dims: int, size: list[int]) -> None:
    net = build_model("ronneberger_unet", in_channels=1, out_channels=3, img_size=size, spatial_dims=dims,
                      features=4)
    assert _count(net, nn.MaxPool3d if dims == 3 else nn.MaxPool2d) == 4
    out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_sides_must_be_multiples_of_two_to_the_depth() -> None:
    with pytest.raises(ValueError, match="multiples of 16"):
        check_input_size("ronneberger_unet", 40)
    check_input_size("ronneberger_unet", 40, depth=3)
    with pytest.raises(ValueError, match="norm"):
        check_input_size("ronneberger_unet", 64, norm="group")
