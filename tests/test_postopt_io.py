"""Post-optimisation inputs and outputs: bad pointmaps, NaN masking, save_cameras and the script."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from one4d.geometry import read_tum_trajectory
from one4d.postopt import load_cameras, recover_cameras, save_cameras
from one4d.postopt.recover import PostoptDiverged
from one4d.postopt.synthetic import render_box_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip():
    return render_box_clip(num_frames=5, height=32, width=48)


def test_nan_and_inf_points_are_masked_counted_and_zero_in_depth(clip):
    pointmaps = clip["pointmaps"].clone()
    pointmaps[1, 3:6, 4:9] = float("nan")
    pointmaps[2, 0, 0, 1] = float("inf")
    with pytest.warns(UserWarning, match="16 NaN/inf points masked"):
        result = recover_cameras(pointmaps)
    assert result.num_invalid == 16
    assert (result.depth[1, 3:6, 4:9] == 0).all() and result.depth[2, 0, 0] == 0
    assert not result.valid[1, 3:6, 4:9].any() and result.valid.sum() == result.valid.numel() - 16
    assert torch.allclose(result.depth[result.valid], clip["depth"][result.valid], rtol=1e-9)


def test_all_invalid_frame_is_an_error_naming_it(clip):
    pointmaps = clip["pointmaps"].clone()
    pointmaps[3] = float("nan")
    with pytest.raises(ValueError, match="frame 3 has 0 valid points"):
        recover_cameras(pointmaps)


@pytest.mark.parametrize(
    "shape, message",
    [((5, 32, 48), r"shape \(F, H, W, 3\)"), ((5, 32, 48, 2), r"shape \(F, H, W, 3\)"), ((1, 32, 48, 3), "at least 2 frames")],
)
def test_wrong_shapes_and_single_frames_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        recover_cameras(torch.rand(shape))


def test_degenerate_frame_with_one_repeated_point_is_an_error(clip):
    pointmaps = clip["pointmaps"].clone()
    pointmaps[2] = torch.tensor([0.5, 0.2, 3.0], dtype=pointmaps.dtype)
    with pytest.raises(ValueError, match=r"frames \[2\]: all points coincide"):
        recover_cameras(pointmaps)


def test_mask_and_confidence_shapes_are_checked(clip):
    with pytest.raises(ValueError, match="valid must have shape"):
        recover_cameras(clip["pointmaps"], valid=torch.ones(5, 32, 47, dtype=torch.bool))
    with pytest.raises(ValueError, match="confidence must be finite and non-negative"):
        recover_cameras(clip["pointmaps"], confidence=-torch.ones(5, 32, 48))


def test_confidence_downweights_corrupted_pixels(clip):
    pointmaps = clip["pointmaps"].clone()
    corrupted = torch.rand(5, 32, 48, generator=torch.Generator().manual_seed(0)) < 0.4
    pointmaps[corrupted] += 0.5 * torch.randn(int(corrupted.sum()), 3, dtype=pointmaps.dtype)
    confidence = (~corrupted).double()
    result = recover_cameras(pointmaps, confidence=confidence)
    assert torch.allclose(result.intrinsics, clip["intrinsics"], rtol=1e-8)
    assert torch.allclose(result.world_to_camera, clip["world_to_camera"], atol=1e-8)


def test_save_cameras_round_trips(clip, tmp_path):
    result = recover_cameras(clip["pointmaps"].float())
    paths = save_cameras(result, tmp_path / "out", timestamps=np.arange(5) / 10.0)
    intrinsics, world_to_camera = load_cameras(tmp_path / "out")
    assert torch.allclose(intrinsics, result.intrinsics) and torch.allclose(world_to_camera, result.world_to_camera)
    timestamps, camera_to_world = read_tum_trajectory(paths["trajectory"])
    assert np.allclose(timestamps, np.arange(5) / 10.0)
    assert torch.allclose(camera_to_world, result.camera_to_world, atol=1e-7)
    with np.load(paths["depth"]) as archive:
        assert archive["depth"].dtype == np.float16
        assert np.allclose(archive["depth"], result.depth.numpy(), rtol=1e-3)
    data = json.loads(paths["cameras"].read_text())
    assert set(data) >= {"intrinsics", "world_to_camera", "losses", "num_invalid", "warnings"}


def test_script_writes_cameras_trajectory_and_depth_for_a_folder(clip, tmp_path):
    np.savez(tmp_path / "pointmaps.npz", pointmaps=clip["pointmaps"].numpy().astype(np.float32))
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "postopt.py"), f"input={tmp_path}", "depth_dtype=float32", "subsample=512"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    intrinsics, world_to_camera = load_cameras(tmp_path)
    assert torch.allclose(intrinsics, clip["intrinsics"], rtol=1e-5)
    assert torch.allclose(world_to_camera, clip["world_to_camera"], atol=1e-5)
    assert (tmp_path / "trajectory.txt").is_file()
    with np.load(tmp_path / "depth.npz") as archive:
        assert np.allclose(archive["depth"], clip["depth"].numpy(), rtol=1e-5)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists() and not (tmp_path / "postopt.log").exists()


def test_script_refuses_a_missing_input(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "postopt.py"), f"input={tmp_path / 'nothing.npz'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert completed.returncode != 0 and "no such file" in completed.stderr


def test_a_scrambled_frame_is_flagged_not_silently_returned(clip):
    pointmaps = clip["pointmaps"].clone()
    generator = torch.Generator().manual_seed(0)
    pointmaps[2] = pointmaps[2][torch.randperm(32, generator=generator)][:, torch.randperm(48, generator=generator)]
    with pytest.warns(UserWarning, match="frame 2: its pointmap fits no pinhole camera well"):
        result = recover_cameras(pointmaps)
    assert any("frame 2" in message for message in result.warnings)


def test_a_mirrored_clip_is_refused(clip):
    """PostoptDiverged (a ValueError), which the demo, the benches and windowed post-optimisation count as a failed scene."""
    pointmaps = clip["pointmaps"].clone()
    pointmaps[..., 0] *= -1  # a left-handed world: no rotation maps it into an OpenCV camera
    with pytest.raises(PostoptDiverged, match="consistent with a pinhole camera"):
        recover_cameras(pointmaps)
