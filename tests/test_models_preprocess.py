import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from ddcs_core.errors import DDCSInputError
from ddcs_core.models.preprocess import PRESETS, build_preprocess


def test_crop_resize_normalize_matches_a_hand_computation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 10, 10) * 2 - 1
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    pre = build_preprocess([{"center_crop": 8}, {"resize": 4}, {"to_unit_range": True},
                            {"normalize": {"mean": mean, "std": std}}])
    window = x[..., 1:9, 1:9]  # (10 - 8) / 2 = 1 on each side
    # halving with bilinear, align_corners=False and no antialias averages each 2x2 block
    halved = window.reshape(2, 3, 4, 2, 4, 2).mean(dim=(3, 5))
    expected = ((halved + 1) / 2 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(pre(x), expected, rtol=0, atol=1e-6)
    assert pre.out_size((10, 10)) == (4, 4)


@pytest.mark.parametrize("hw, size", [((9, 9), (4, 4)), ((10, 7), (3, 6)), ((256, 256), (200, 200))])
def test_center_crop_offsets_are_torchvisions(hw, size):
    x = torch.arange(3 * hw[0] * hw[1], dtype=torch.float32).view(1, 3, *hw)
    assert torch.equal(build_preprocess([{"center_crop": list(size)}])(x), TF.center_crop(x, list(size)))


def test_fixed_crop_and_resize_options():
    x = torch.rand(1, 3, 12, 12)
    pre = build_preprocess([{"crop": {"top": 2, "left": 3, "height": 6, "width": 8}},
                            {"resize": {"size": [3, 4], "antialias": True}}])
    expected = F.interpolate(x[..., 2:8, 3:11], size=(3, 4), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(pre(x), expected)


def test_grey_input_is_repeated_to_rgb():
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(build_preprocess("unit")(x), ((x + 1) * 0.5).expand(-1, 3, -1, -1))


def test_paper_faces_preset_on_a_256_px_image_gives_112():
    pre = build_preprocess("paper-faces-112")
    assert pre.out_size((256, 256)) == (112, 112)
    assert pre.describe()[0] == {"center_crop": [200, 200]}
    assert pre(torch.zeros(1, 3, 256, 256)).shape == (1, 3, 112, 112)
    with pytest.raises(DDCSInputError, match="200x200 does not fit a 64x64"):
        pre.out_size((64, 64))


def test_gradient_reaches_only_the_cropped_window():
    x = torch.rand(1, 3, 10, 10, requires_grad=True)
    build_preprocess([{"center_crop": 6}, {"resize": 3}, {"to_unit_range": True},
                      {"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}])(x).sum().backward()
    inside = torch.zeros_like(x, dtype=torch.bool)
    inside[..., 2:8, 2:8] = True
    assert bool((x.grad[inside] != 0).all()) and bool((x.grad[~inside] == 0).all())


@pytest.mark.parametrize("steps, message", [
    ([{"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}}], "put `to_unit_range: true` before it"),
    ([{"to_unit_range": True}, {"normalize": {"mean": [0.5] * 3, "std": [0, 1, 1]}}], "std values must be > 0"),
    ([{"to_unit_range": True}, {"to_unit_range": True}], "appears twice"),
    ([{"flip": True}], "unknown step 'flip'"),
    ([{"resize": 0}], "positive int"),
    ([{"resize": 4, "center_crop": 2}], "one key"),
    ([{"crop": {"top": 0, "left": 0, "height": 2}}], "expected the keys"),
    ("imagenet-1k", "unknown preset 'imagenet-1k'"),
])
def test_bad_declarations_are_refused(steps, message):
    with pytest.raises(DDCSInputError, match=message):
        build_preprocess(steps)


def test_every_preset_builds():
    for name in PRESETS:
        assert build_preprocess(name).source == f"preset {name}"
