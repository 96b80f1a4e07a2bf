"""The geometric self-check: small on exact geometry, large (flagged) for each convention error a converter can make."""

import math

import numpy as np
import pytest
import torch

from one4d.data.selfcheck import check_clip, reprojection_error
from one4d.data.synthetic import render_scene
from one4d.geometry import invert_pose

OPENGL = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))  # OpenGL <-> OpenCV camera axes


@pytest.fixture(scope="module")
def scene():
    """A camera that moves forward (seed 10), so depth scale is observable; 9 frames at 32x48."""
    scene = render_scene(10, num_frames=9, height=32, width=48)
    return scene.depth, scene.intrinsics.double(), scene.world_to_camera.double(), scene.dynamic_mask


def test_exact_geometry_is_consistent(scene):
    depth, intrinsics, poses, dynamic = scene
    check = check_clip(depth, intrinsics, poses, dynamic)
    assert check.error < 1e-5 and check.outliers == 0.0 and not check.flagged()
    assert reprojection_error(depth, intrinsics, poses, dynamic) == check.error
    # numpy input and PointOdyssey-like 16-bit quantisation (1000/65535 m) stay unflagged
    quantised = np.round(depth.numpy() * 65535 / 1000) * 1000 / 65535
    check = check_clip(quantised, intrinsics.numpy(), poses.numpy(), dynamic.numpy())
    assert check.error < 0.005 and not check.flagged()


def _inverted_one(poses):
    wrong = poses.clone()
    wrong[4] = invert_pose(poses[4])
    return wrong


def _transposed(poses):
    wrong = poses.clone()
    wrong[:, :3, :3] = poses[:, :3, :3].transpose(-1, -2)
    return wrong


@pytest.mark.parametrize("mistake", ["invert one pose", "transpose rotations", "OpenGL axes", "depth x2"])
def test_convention_errors_are_flagged(scene, mistake):
    depth, intrinsics, poses, dynamic = scene
    if mistake == "invert one pose":
        poses = _inverted_one(poses)
    elif mistake == "transpose rotations":
        poses = _transposed(poses)
    elif mistake == "OpenGL axes":
        poses = OPENGL @ poses  # camera axes flipped, as when an OpenGL camera-to-world is read as OpenCV
    else:
        depth = depth * 2
    check = check_clip(depth, intrinsics, poses, dynamic)
    assert check.flagged(), (check.error, check.outliers)
    assert check.outliers > 0.05 or check.error > 0.02


def test_one_wrong_pose_is_found_in_its_frame(scene):
    depth, intrinsics, poses, dynamic = scene
    check = check_clip(depth, intrinsics, _inverted_one(poses), dynamic)
    assert int(np.nanargmax(check.frame_outliers)) == 4


def test_dynamic_pixels_are_excluded(scene):
    depth, intrinsics, poses, dynamic = scene
    assert dynamic.any()
    moved = torch.where(dynamic, depth * 1.5, depth)  # moving things: their depth need not agree across frames
    assert not check_clip(moved, intrinsics, poses, dynamic).flagged()
    assert check_clip(moved, intrinsics, poses, None).outliers > check_clip(moved, intrinsics, poses, dynamic).outliers


def test_nothing_co_visible_is_nan(scene):
    depth, intrinsics, poses, dynamic = scene
    assert math.isnan(reprojection_error(depth[:1], intrinsics[:1], poses[:1]))
    assert math.isnan(reprojection_error(torch.zeros_like(depth), intrinsics, poses))
    assert not check_clip(torch.zeros_like(depth), intrinsics, poses).flagged()


def test_depth_edges_are_not_compared():
    """A reprojected point landing between a near (1 m) and a far (10 m) pixel is not compared: interpolating across
    the edge would give a depth of neither surface and count a correct clip's edge points as errors."""
    from one4d.data.selfcheck import _sample_inverse_depth

    depth = torch.full((4, 6), 10.0)
    depth[:, :3] = 1.0  # near surface on the left three columns
    inverse = 1.0 / depth
    pixels = torch.tensor([[2.5, 1.5], [0.5, 1.5], [4.5, 1.5], [5.5, 1.5]])  # across the edge, near, far, outside
    values, comparable = _sample_inverse_depth(inverse, pixels)
    assert comparable.tolist() == [False, True, True, False]
    torch.testing.assert_close(values[1:3], torch.tensor([1.0, 0.1]))
