"""Post-optimisation on pointmaps of analytic scenes from known cameras: accuracy, degenerate scenes, windows."""

import math

import pytest
import torch

from one4d.geometry import camera_centers, make_pose, rotation_angle_degrees
from one4d.postopt import recover_cameras, recover_cameras_windowed
from one4d.postopt.synthetic import corrupt_pointmaps, render_box_clip


def errors(clip, result):
    """Worst focal (relative), rotation (degrees), centre (relative to the mean depth) and depth Abs Rel."""
    truth = clip["world_to_camera"].double()
    rotation = result.world_to_camera[:, :3, :3].double().cpu()
    centres = result.camera_centers.double().cpu()
    mean_depth = clip["depth"].double().mean()
    return {
        "focal": float((result.intrinsics[:, 0, 0].cpu() / clip["intrinsics"][:, 0, 0] - 1).abs().max()),
        "rotation": float(rotation_angle_degrees(rotation.transpose(-1, -2) @ truth[:, :3, :3]).max()),
        "rotation_frobenius": float((rotation - truth[:, :3, :3]).flatten(1).norm(dim=-1).max()),
        "centre": float((centres - camera_centers(truth)).norm(dim=-1).max() / mean_depth),
        "abs_rel": float(((result.depth.double().cpu() - clip["depth"]).abs() / clip["depth"]).mean()),
    }


@pytest.mark.parametrize("options", [{}, {"shared_focal": False}, {"optimize_pp": True}])
def test_noise_free_pointmaps_give_cameras_and_depth_to_float_precision(options):
    clip = render_box_clip(num_frames=9, height=48, width=64)
    result = recover_cameras(clip["pointmaps"], **options)
    found = errors(clip, result)
    assert found["focal"] < 1e-9 and found["rotation_frobenius"] < 1e-9 and found["centre"] < 1e-9, found
    assert found["abs_rel"] < 1e-9, found
    assert result.world_to_camera.shape == (9, 4, 4) and result.intrinsics.shape == (9, 3, 3)
    assert result.depth.shape == (9, 48, 64) and result.num_invalid == 0 and result.warnings == []
    assert torch.allclose(result.camera_to_world @ result.world_to_camera, torch.eye(4, dtype=torch.float64).expand(9, 4, 4), atol=1e-12)


def test_float32_numpy_input_is_accurate_to_float32_precision():
    clip = render_box_clip(num_frames=5, height=48, width=64)
    result = recover_cameras(clip["pointmaps"].float().numpy())
    found = errors(clip, result)
    assert found["focal"] < 1e-5 and found["rotation_frobenius"] < 1e-5 and found["centre"] < 1e-5 and found["abs_rel"] < 1e-5, found
    assert result.depth.dtype == torch.float32


def test_noise_and_outliers_meet_the_accuracy_targets():
    clip = render_box_clip(num_frames=21, height=96, width=128, seed=1)
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.01, outliers=0.02).float()
    found = errors(clip, recover_cameras(noisy))
    assert found["focal"] < 0.03, found
    assert found["rotation"] < 1.0, found
    assert found["centre"] < 0.02, found
    assert found["abs_rel"] < 0.02, found


def test_smoothness_term_reduces_jitter_of_temporally_independent_noise():
    clip = render_box_clip(num_frames=41, height=48, width=64, seed=2)
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.02, outliers=0.0, seed=3)
    truth = camera_centers(clip["world_to_camera"])

    def jitter(result):  # RMS error of the second difference (acceleration) of the camera centres
        second = lambda c: c[2:] - 2 * c[1:-1] + c[:-2]  # noqa: E731
        return float((second(result.camera_centers) - second(truth)).norm(dim=-1).pow(2).mean().sqrt())

    without, default = jitter(recover_cameras(noisy, a2=0.0, subsample=256)), jitter(recover_cameras(noisy, subsample=256))
    assert default < 0.85 * without, (default, without)


def test_planar_wall_warns_and_gives_a_sensible_camera():
    clip = render_box_clip(num_frames=9, height=48, width=64, scene="wall")
    with pytest.warns(UserWarning, match="planar"):
        exact = recover_cameras(clip["pointmaps"])
    found = errors(clip, exact)
    assert found["focal"] < 1e-6 and found["rotation"] < 1e-3 and found["centre"] < 1e-6, found
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.01, outliers=0.02)
    with pytest.warns(UserWarning, match="planar"):
        found = errors(clip, recover_cameras(noisy))
    assert found["focal"] < 0.1 and found["rotation"] < 3.0 and found["abs_rel"] < 0.05, found


def test_wall_facing_the_camera_has_an_unobservable_focal_and_says_so():
    height, width, focal = 32, 48, 40.0
    depth = torch.full((3, height, width), 4.0, dtype=torch.float64)
    intrinsics = torch.tensor([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    poses = make_pose(torch.eye(3, dtype=torch.float64).expand(3, 3, 3), torch.tensor([[0.0, 0, 0], [-0.1, 0, 0], [-0.2, 0, 0]], dtype=torch.float64))
    from one4d.geometry import depth_to_pointmap

    pointmaps = depth_to_pointmap(depth, intrinsics.expand(3, 3, 3), poses)
    with pytest.warns(UserWarning, match="focal unobservable"):
        result = recover_cameras(pointmaps)
    # Frame 0 sits at the world origin, so the fallback finds the focal here; the refinement may then
    # slide a little along the unobservable focal-distance direction.
    assert abs(float(result.intrinsics[0, 0, 0]) / focal - 1) < 0.01


def test_pure_rotation_trajectory_keeps_the_centre_fixed():
    clip = render_box_clip(num_frames=9, height=48, width=64, motion="rotation")
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.01, outliers=0.02).float()
    result = recover_cameras(noisy)
    found = errors(clip, result)
    assert found["rotation"] < 1.0 and found["centre"] < 0.02 and found["focal"] < 0.03, found


def test_render_scene_with_moving_objects():
    render_scene = pytest.importorskip("one4d.data.synthetic").render_scene
    scene = render_scene(seed=0, num_frames=9, height=48, width=64)
    clip = {"depth": scene.depth, "intrinsics": scene.intrinsics, "world_to_camera": scene.world_to_camera}
    found = errors(clip, recover_cameras(scene.pointmaps))
    assert found["focal"] < 1e-3 and found["rotation"] < 0.05 and found["centre"] < 1e-3 and found["abs_rel"] < 1e-3, found


def test_windows_in_their_own_worlds_merge_into_one_trajectory():
    clip = render_box_clip(num_frames=21, height=48, width=64, seed=4)
    pointmaps = clip["pointmaps"]
    windows, overlap = [], 4
    generator = torch.Generator().manual_seed(0)
    for index, (start, end) in enumerate([(0, 9), (5, 14), (10, 21)]):
        # Each later window lives in another similarity frame, as separately generated windows do.
        angle = 0.0 if index == 0 else 0.3 * index
        rotation = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
        scale = 1.0 if index == 0 else 0.5 + index
        shift = torch.zeros(3, dtype=torch.float64) if index == 0 else torch.randn(3, generator=generator, dtype=torch.float64)
        windows.append(scale * pointmaps[start:end] @ rotation.T + shift)
    result = recover_cameras_windowed(windows, overlap=overlap)
    found = errors(clip, result)
    assert result.depth.shape[0] == 21
    assert found["focal"] < 1e-8 and found["rotation_frobenius"] < 1e-8 and found["centre"] < 1e-8 and found["abs_rel"] < 1e-8, found
    assert result.losses["alignment_rms"] < 1e-8


def test_window_option_on_a_long_clip_matches_the_single_solve():
    clip = render_box_clip(num_frames=25, height=32, width=48, seed=5)
    noisy = corrupt_pointmaps(clip["pointmaps"], clip["depth"], noise=0.01, outliers=0.02).float()
    windowed = recover_cameras(noisy, window=9, overlap=3)
    found = errors(clip, windowed)
    assert windowed.depth.shape == (25, 32, 48)
    assert found["rotation"] < 1.0 and found["centre"] < 0.02 and found["abs_rel"] < 0.02, found
