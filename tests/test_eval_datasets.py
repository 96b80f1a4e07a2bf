"""Benchmark readers on tiny fake datasets written in the official layouts and binary/text formats."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from one4d.eval.datasets import (
    bonn_sequences, read_sintel_camera, read_sintel_depth, sintel_sequences, tum_sequences,
    write_sintel_camera, write_sintel_depth,
)
from one4d.geometry import invert_pose, make_pose, quaternion_to_rotation, write_tum_trajectory

HEIGHT, WIDTH = 12, 16


def random_camera_to_world(count: int, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    quaternions = torch.randn(count, 4, generator=generator, dtype=torch.float64)
    quaternions[:, 3] += 3.0
    positions = torch.cumsum(torch.randn(count, 3, generator=generator, dtype=torch.float64) * 0.1, 0)
    return make_pose(quaternion_to_rotation(quaternions), positions).numpy()


def random_depth(count: int, seed: int, high: float = 8.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, high, (count, HEIGHT, WIDTH)).astype(np.float32)


def write_rgb(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def write_png_depth(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.round(depth * 5000).astype(np.uint16))


def make_fake_sintel(root: Path, sequences=("alley_2", "bamboo_1"), frames: int = 5) -> dict:
    """Sintel training layout; alley_2 is a pose sequence, bamboo_1 is depth-only. Returns the GT written."""
    truth = {}
    for s, name in enumerate(sequences):
        depth, camera_to_world = random_depth(frames, s), random_camera_to_world(frames, s)
        world_to_camera = invert_pose(torch.from_numpy(camera_to_world)).numpy()
        intrinsics = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
        for i in range(frames):
            stem = f"frame_{i + 1:04d}"
            write_rgb(root / "training" / "final" / name / f"{stem}.png", seed=i)
            (root / "training" / "depth" / name).mkdir(parents=True, exist_ok=True)
            (root / "training" / "camdata_left" / name).mkdir(parents=True, exist_ok=True)
            write_sintel_depth(root / "training" / "depth" / name / f"{stem}.dpt", depth[i])
            write_sintel_camera(root / "training" / "camdata_left" / name / f"{stem}.cam", intrinsics, world_to_camera[i])
        truth[name] = (depth, camera_to_world)
    return truth


def make_fake_tum(root: Path, name: str = "rgbd_dataset_freiburg3_walking_xyz", frames: int = 12) -> np.ndarray:
    """TUM layout with rgb.txt at 30 Hz and groundtruth.txt at 100 Hz, offset by 3 ms. Returns the GT of each rgb frame."""
    folder = root / name
    rgb_stamps = 1000.0 + np.arange(frames) / 30.0
    gt_stamps = np.arange(1000.0 - 0.05, rgb_stamps[-1] + 0.05, 0.01)
    poses = random_camera_to_world(len(gt_stamps), seed=7)
    folder.mkdir(parents=True, exist_ok=True)
    write_tum_trajectory(folder / "groundtruth.txt", gt_stamps, torch.from_numpy(poses))
    lines = ["# color images", "# timestamp filename"]
    for i, stamp in enumerate(rgb_stamps):
        write_rgb(folder / "rgb" / f"{stamp:.6f}.png", seed=i)
        lines.append(f"{stamp + 0.003:.6f} rgb/{stamp:.6f}.png")
    (folder / "rgb.txt").write_text("\n".join(lines) + "\n")
    nearest = [int(np.argmin(np.abs(gt_stamps - (s + 0.003)))) for s in rgb_stamps]
    return poses[nearest]


def make_fake_bonn(root: Path, name: str = "balloon2", frames: int = 8) -> np.ndarray:
    folder = root / f"rgbd_bonn_{name}"
    depth = random_depth(frames, seed=3, high=6.0)
    for i in range(frames):
        write_rgb(folder / "rgb" / f"{1548266469 + i / 30:.6f}.png", seed=i)
        write_png_depth(folder / "depth" / f"{1548266469 + i / 30 + 0.001:.6f}.png", depth[i])
    return np.round(depth * 5000) / 5000


# ----------------------------------------------------------------------------- formats


def test_sintel_binary_formats_round_trip(tmp_path):
    depth = random_depth(1, 0)[0]
    write_sintel_depth(tmp_path / "a.dpt", depth)
    header = np.fromfile(tmp_path / "a.dpt", np.float32, count=1)[0], np.fromfile(tmp_path / "a.dpt", np.int32, count=3)[1:]
    assert header[0] == np.float32(202021.25) and list(header[1]) == [WIDTH, HEIGHT]
    np.testing.assert_array_equal(read_sintel_depth(tmp_path / "a.dpt"), depth)
    intrinsics, world_to_camera = np.arange(9.0).reshape(3, 3), random_camera_to_world(1, 1)[0]
    write_sintel_camera(tmp_path / "a.cam", intrinsics, world_to_camera)
    k, w = read_sintel_camera(tmp_path / "a.cam")
    np.testing.assert_array_equal(k, intrinsics)
    np.testing.assert_array_equal(w, world_to_camera)
    (tmp_path / "bad.dpt").write_bytes(np.array([1.0, 2.0], np.float32).tobytes())
    with pytest.raises(ValueError, match="tag"):
        read_sintel_depth(tmp_path / "bad.dpt")
    (tmp_path / "short.dpt").write_bytes((tmp_path / "a.dpt").read_bytes()[:-8])
    with pytest.raises(ValueError, match="bytes"):
        read_sintel_depth(tmp_path / "short.dpt")


# ----------------------------------------------------------------------------- readers


def test_sintel_reader_recovers_depth_and_camera_to_world(tmp_path):
    truth = make_fake_sintel(tmp_path)
    sources = sintel_sequences(tmp_path)
    assert [s.name for s in sources] == ["alley_2", "bamboo_1"]
    alley, bamboo = (s.load() for s in sources)
    assert alley.frames.shape == (5, HEIGHT, WIDTH, 3) and alley.frames.dtype == np.uint8
    np.testing.assert_array_equal(alley.depth, truth["alley_2"][0])
    np.testing.assert_allclose(alley.camera_to_world, truth["alley_2"][1], atol=1e-12)
    assert alley.evaluate_pose and not bamboo.evaluate_pose and bamboo.evaluate_depth
    assert [s.name for s in sintel_sequences(tmp_path, pose_only=True)] == ["alley_2"]


def test_sintel_reader_names_the_missing_file(tmp_path):
    make_fake_sintel(tmp_path)
    (tmp_path / "training" / "depth" / "alley_2" / "frame_0003.dpt").unlink()
    with pytest.raises(ValueError, match=r"alley_2.*frame_0003\.dpt"):
        sintel_sequences(tmp_path)[0].load()
    with pytest.raises(ValueError, match="training/final"):
        sintel_sequences(tmp_path / "training")
    with pytest.raises(ValueError, match="none of the expected sequences"):
        sintel_sequences(tmp_path, sequences=["cave_9"])


def test_unreadable_png_is_named(tmp_path):
    make_fake_sintel(tmp_path, sequences=("alley_2",))
    (tmp_path / "training" / "final" / "alley_2" / "frame_0002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"frame_0002\.png: unreadable"):
        sintel_sequences(tmp_path)[0].load()


def test_bonn_reader_cuts_by_index_and_scales_png_depth(tmp_path):
    depth = make_fake_bonn(tmp_path, frames=8)
    sequence = bonn_sequences(tmp_path, sequences=["balloon2"], start=2, stop=6)[0].load()
    assert sequence.num_frames == 4 and not sequence.evaluate_pose
    np.testing.assert_allclose(sequence.depth, depth[2:6], atol=1e-6)
    (tmp_path / "rgbd_bonn_balloon2" / "depth" / sorted((tmp_path / "rgbd_bonn_balloon2" / "depth").iterdir())[-1].name).unlink()
    with pytest.raises(ValueError, match="balloon2: 8 images but 7 depth files"):
        bonn_sequences(tmp_path, sequences=["balloon2"], start=0, stop=140)[0].load()
    missing = bonn_sequences(tmp_path, sequences=["balloon2", "crowd2"])[1]
    with pytest.raises(ValueError, match="crowd2: missing folder"):
        missing.load()


def test_tum_reader_associates_timestamps_and_subsamples(tmp_path):
    expected = make_fake_tum(tmp_path, frames=12)
    name = "rgbd_dataset_freiburg3_walking_xyz"
    sequence = tum_sequences(tmp_path, sequences=[name], stride=3, num_frames=3)[0].load()
    assert sequence.num_frames == 3 and sequence.frames.shape[1:] == (HEIGHT, WIDTH, 3)
    np.testing.assert_allclose(sequence.camera_to_world, expected[::3][:3], atol=1e-7)
    assert sequence.evaluate_pose and not sequence.evaluate_depth


def test_tum_reader_reports_timestamps_that_never_associate(tmp_path):
    make_fake_tum(tmp_path, frames=4)
    name = "rgbd_dataset_freiburg3_walking_xyz"
    rgb_txt = tmp_path / name / "rgb.txt"
    rgb_txt.write_text(rgb_txt.read_text().replace("1000.", "2000."))
    with pytest.raises(ValueError, match=f"{name}: no timestamp"):
        tum_sequences(tmp_path, sequences=[name])[0].load()
