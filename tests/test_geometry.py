"""Camera and pointmap geometry: exact round trips on random float64 cameras."""

import math

import pytest
import torch

from one4d.geometry import (
    camera_centers,
    camera_points_to_pixels,
    crop_intrinsics,
    default_intrinsics,
    denormalize_pointmaps,
    depth_to_camera_points,
    depth_to_pointmap,
    invert_pose,
    look_at,
    make_pose,
    normalize_pointmaps,
    pixel_grid,
    pointmap_normalization,
    pointmap_to_depth,
    pose_to_tum,
    quaternion_to_rotation,
    read_tum_trajectory,
    relative_to_first,
    resize_intrinsics,
    rotation_to_quaternion,
    transform_points,
    tum_to_pose,
    umeyama_alignment,
    write_tum_trajectory,
)


def random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    return quaternion_to_rotation(torch.randn(count, 4, generator=generator, dtype=torch.float64))


def random_cameras(frames: int, seed: int = 0):
    """Random float64 intrinsics, world-to-camera poses and positive depth."""
    g = torch.Generator().manual_seed(seed)
    intrinsics = torch.zeros(frames, 3, 3, dtype=torch.float64)
    intrinsics[:, 0, 0] = 40 + 40 * torch.rand(frames, generator=g, dtype=torch.float64)
    intrinsics[:, 1, 1] = 40 + 40 * torch.rand(frames, generator=g, dtype=torch.float64)
    intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = 15.5, 11.5, 1
    poses = make_pose(random_rotations(frames, g), torch.randn(frames, 3, generator=g, dtype=torch.float64))
    depth = 0.5 + 5 * torch.rand(frames, 24, 32, generator=g, dtype=torch.float64)
    return intrinsics, poses, depth


def test_depth_pointmap_depth_round_trip_is_exact():
    intrinsics, poses, depth = random_cameras(5)
    pointmaps = depth_to_pointmap(depth, intrinsics, poses)  # (F, H, W, 3) in frame 0's camera
    torch.testing.assert_close(pointmaps[0], depth_to_camera_points(depth, intrinsics)[0], atol=1e-12, rtol=0)
    in_first = relative_to_first(poses)
    torch.testing.assert_close(pointmap_to_depth(pointmaps, in_first), depth, atol=1e-10, rtol=0)
    pixels = camera_points_to_pixels(transform_points(pointmaps, in_first), intrinsics)
    torch.testing.assert_close(pixels, pixel_grid(24, 32, torch.float64)[..., :2].expand_as(pixels), atol=1e-9, rtol=0)


def test_pose_conversions_are_exact():
    _, poses, _ = random_cameras(6, seed=1)
    torch.testing.assert_close(invert_pose(poses), torch.linalg.inv(poses), atol=1e-12, rtol=0)
    torch.testing.assert_close(invert_pose(invert_pose(poses)), poses, atol=1e-12, rtol=0)
    torch.testing.assert_close(camera_centers(poses), invert_pose(poses)[:, :3, 3], atol=1e-12, rtol=0)
    torch.testing.assert_close(relative_to_first(poses)[0], torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    camera_to_world = invert_pose(poses)
    fields = pose_to_tum(camera_to_world)  # (F, 7)
    assert (fields[:, 6] >= 0).all()
    torch.testing.assert_close(tum_to_pose(fields), camera_to_world, atol=1e-12, rtol=0)


def test_quaternions_near_180_degrees_and_tum_file_round_trip(tmp_path):
    half_turns = torch.stack([quaternion_to_rotation(torch.tensor([1.0, 1e-9, 0, 1e-8], dtype=torch.float64)),
                              torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))])
    torch.testing.assert_close(quaternion_to_rotation(rotation_to_quaternion(half_turns)), half_turns, atol=1e-12, rtol=0)
    _, poses, _ = random_cameras(4, seed=2)
    stamps = [0.0, 0.033, 0.066, 0.1]
    write_tum_trajectory(tmp_path / "traj.txt", stamps, invert_pose(poses))
    read_stamps, read_poses = read_tum_trajectory(tmp_path / "traj.txt")
    assert read_stamps.tolist() == pytest.approx(stamps)
    torch.testing.assert_close(read_poses, invert_pose(poses), atol=1e-8, rtol=0)  # 9 printed decimals


def test_normalisation_is_one_similarity_and_inverts_exactly():
    g = torch.Generator().manual_seed(3)
    pointmaps = torch.randn(4, 8, 8, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64) + 7
    centre, scale = pointmap_normalization(pointmaps, quantile=0.0)
    normalised = normalize_pointmaps(pointmaps, centre, scale)
    assert normalised.abs().max() <= 1 and math.isclose(normalised[..., 0].max() - normalised[..., 0].min(), 2.0, rel_tol=1e-12)
    torch.testing.assert_close(denormalize_pointmaps(normalised, centre, scale), pointmaps, atol=1e-12, rtol=0)
    valid = torch.zeros(4, 8, 8, dtype=torch.bool)
    valid[:, :4] = True  # invalid pixels do not move the bounds
    far = pointmaps.clone()
    far[:, 4:] = 1e6
    (centre_far, scale_far), (centre_near, scale_near) = pointmap_normalization(far, valid), pointmap_normalization(pointmaps, valid)
    assert torch.equal(centre_far, centre_near) and torch.equal(scale_far, scale_near)


def test_resize_and_crop_intrinsics_follow_pixel_centres():
    g = torch.Generator().manual_seed(4)
    intrinsics = default_intrinsics(30, 40, 35.0, dtype=torch.float64)
    points = torch.randn(1, 50, 3, generator=g, dtype=torch.float64) + torch.tensor([0, 0, 6.0], dtype=torch.float64)
    pixels = camera_points_to_pixels(points, intrinsics[None])  # (1, 50, 2)
    resized = camera_points_to_pixels(points, resize_intrinsics(intrinsics, 0.5, 2.0)[None])
    torch.testing.assert_close(resized[..., 0], (pixels[..., 0] + 0.5) * 0.5 - 0.5)
    torch.testing.assert_close(resized[..., 1], (pixels[..., 1] + 0.5) * 2.0 - 0.5)
    cropped = camera_points_to_pixels(points, crop_intrinsics(intrinsics, top=3, left=7)[None])
    torch.testing.assert_close(cropped, pixels - torch.tensor([7.0, 3.0], dtype=torch.float64))


def test_look_at_puts_the_target_on_the_optical_axis():
    eye = torch.tensor([[1.0, -0.5, -2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.5, 1.0], [3.0, 0.2, 0.1]], dtype=torch.float64)
    poses = look_at(eye, target)
    rotation = poses[:, :3, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    torch.testing.assert_close(camera_centers(poses), eye)
    in_camera = transform_points(target[:, None], poses)[:, 0]
    torch.testing.assert_close(in_camera[:, :2], torch.zeros(2, 2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (in_camera[:, 2] > 0).all() and (rotation[:, 1, 1] > 0).all()  # world down is image down


def test_umeyama_recovers_a_similarity():
    g = torch.Generator().manual_seed(5)
    source = torch.randn(20, 3, generator=g, dtype=torch.float64)
    rotation = random_rotations(1, g)[0]
    target = 2.5 * source @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    scale, found_rotation, translation = umeyama_alignment(source, target)
    assert float(scale) == pytest.approx(2.5)
    torch.testing.assert_close(found_rotation, rotation)
    with pytest.raises(ValueError):
        umeyama_alignment(source[:2], target[:2])
