"""3D networks: spatial dimensions from the data, size checks with the 3D field name."""
from __future__ import annotations

import pytest
import torch

from musclelab.models import MODELS, build_model, check_input_size
from musclelab.models.registry import dims_error

SMALL = {
    "unet": dict(channels=[4, 8, 16], strides=[2, 2], num_res_units=1),
    "unetr": dict(hidden_size=48, mlp_dim=96, num_heads=4, feature_size=4),
    "vnet": {},
    "segresnet": dict(init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1]),
    "dynunet": dict(kernel_size=[3, 3, 3], strides=[1, 2, 2], filters=[4, 8, 16]),
    "swin_unetr": dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4, norm_name="batch"),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_3d_models_build_and_run(name):
    size = (32, 32, 32)
    net = build_model(name, 1, 4, list(size), spatial_dims=3, **SMALL[name]).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, *size))
    assert out.shape == (1, 4, *size)
    assert 3 in MODELS.get(name).spatial_dims


def test_dimension_mismatch_and_patch_errors():
    assert dims_error("unet", 3) is None
    with pytest.raises(ValueError, match=r"model 'fcn_resnet50' is 2D only.*data.spatial_dims=2"):
        check_input_size("fcn_resnet50", 64, spatial_dims=3)
    with pytest.raises(ValueError, match=r"`data.patch_size`=\[40, 96, 96\].*multiples of 16.*16x16x16"):
        check_input_size("unetr", [40, 96, 96], spatial_dims=3)
    with pytest.raises(ValueError, match=r"`data.patch_size` must be .* \[D, H, W\]"):
        check_input_size("unet", [96, 96], spatial_dims=3)
    with pytest.raises(ValueError, match=r"`data.img_size`"):   # the 2D field in 2D
        check_input_size("unetr", 40)
