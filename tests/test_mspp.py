"""MSPP geometry: the 37 boxes, where each box samples the feature map, and the pooling head."""
import math

import pytest
import torch

from brivl.model.mspp import box_thetas, grid_boxes, make_patch_pool, pool_patches, sample_boxes


def test_boxes_follow_the_release_order():
    boxes = grid_boxes(456, 6)
    s = 456 / 6
    assert boxes.shape == (37, 4)
    # The outer loop runs over x: consecutive boxes move down (y) first.
    assert boxes[0].tolist() == pytest.approx([0, 0, s, s])
    assert boxes[1].tolist() == pytest.approx([0, s, s, 2 * s])
    assert boxes[6].tolist() == pytest.approx([s, 0, 2 * s, s])
    assert boxes[35].tolist() == pytest.approx([5 * s, 5 * s, 456, 456])
    assert boxes[36].tolist() == [0, 0, 456, 456]


def _cell_map(cell: int, grid: int = 6, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A feature map that is constant on each cell of a grid x grid layout; returns map and cell values."""
    torch.manual_seed(0)
    values = torch.randn(channels, grid, grid)  # values[:, row, col]
    fmap = values.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[None]
    return fmap, values


@pytest.mark.parametrize("grid_size", [4, 6])
def test_constant_cells_give_cell_values(grid_size):
    # The release's sampling drifts by up to one map pixel towards the far edge (it normalises with
    # size - 1 but samples with align_corners=False), so cells are made wide enough to contain it.
    fmap, values = _cell_map(cell=24)
    patches = sample_boxes(fmap, grid_boxes(480, 6), 480, grid_size).mean(dim=(-1, -2))[0]  # [37, C]
    for i in range(6):  # x, column
        for j in range(6):  # y, row
            assert torch.allclose(patches[i * 6 + j], values[:, j, i], atol=1e-5), (i, j)


def test_whole_image_patch_is_global_mean_when_samples_cover_every_cell():
    fmap, values = _cell_map(cell=24)
    whole = sample_boxes(fmap, grid_boxes(480, 6), 480, 6).mean(dim=(-1, -2))[0, 36]
    assert torch.allclose(whole, values.mean(dim=(1, 2)), atol=1e-5)
    assert not torch.allclose(whole, values[:, 0, 0], atol=1e-3)


def _reference_samples(fmap: torch.Tensor, box, image_size: int, g: int) -> torch.Tensor:
    """Loop-by-loop sampling of one box, written from the release's description (theta over size-1,
    sample centres of a g x g grid, bilinear with zero padding, align_corners=False)."""
    _, c, h, w = fmap.shape
    x0, y0, x1, y1 = (box[0] * w / image_size, box[1] * h / image_size, box[2] * w / image_size, box[3] * h / image_size)
    out = torch.zeros(c, g, g)
    for a in range(g):
        for b in range(g):
            u, v = (2 * b + 1) / g - 1, (2 * a + 1) / g - 1  # normalised output coords (x, y)
            xn = (x1 - x0) / (w - 1) * u + (x0 + x1 - w + 1) / (w - 1)
            yn = (y1 - y0) / (h - 1) * v + (y0 + y1 - h + 1) / (h - 1)
            px, py = ((xn + 1) * w - 1) / 2, ((yn + 1) * h - 1) / 2
            fx, fy = math.floor(px), math.floor(py)
            acc = torch.zeros(c)
            for yy, wy in ((fy, 1 - (py - fy)), (fy + 1, py - fy)):
                for xx, wx in ((fx, 1 - (px - fx)), (fx + 1, px - fx)):
                    if 0 <= xx < w and 0 <= yy < h:
                        acc += wx * wy * fmap[0, :, yy, xx]
            out[:, a, b] = acc
    return out


def test_sampling_matches_a_loop_reference_on_a_random_map():
    torch.manual_seed(1)
    fmap = torch.randn(1, 5, 15, 15)  # B5's 15x15 map at 456 px
    boxes = grid_boxes(456, 6)
    got = sample_boxes(fmap, boxes, 456, 4)[0]
    for k in [0, 1, 7, 20, 35, 36]:
        assert torch.allclose(got[k], _reference_samples(fmap, boxes[k].tolist(), 456, 4), atol=1e-5), k


def test_release_whole_image_patch_subsamples_the_map():
    # With the release's 4x4 sampling grid the whole-image patch reads 4 of the 6 cell rows/columns,
    # not the full average: we keep that, for parity, and check it against the reference.
    fmap, values = _cell_map(cell=8)
    whole = sample_boxes(fmap, grid_boxes(480, 6), 480, 4)[0, 36]
    assert torch.allclose(whole, _reference_samples(fmap, [0, 0, 480, 480], 480, 4), atol=1e-5)
    assert (whole.mean(dim=(-1, -2)) - values.mean(dim=(1, 2))).abs().max() > 1e-3


def test_theta_of_whole_map_box():
    theta = box_thetas(torch.tensor([[0.0, 0.0, 15.0, 15.0]]), 15, 15)[0]
    assert torch.allclose(theta, torch.tensor([[15 / 14, 0, 1 / 14], [0, 15 / 14, 1 / 14]]))


def test_average_then_conv_equals_the_release_conv_then_avgpool():
    torch.manual_seed(2)
    pool = make_patch_pool(16, 8, 4)
    samples = torch.randn(2, 37, 16, 4, 4)
    literal = pool(samples.flatten(0, 1)).view(2, 37, 8)
    assert torch.allclose(pool_patches(samples.mean(dim=(-1, -2)), pool), literal, atol=1e-5)
