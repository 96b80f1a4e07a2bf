"""Outputs that must not lie (issue 15): trajectory timestamps, depth behind the camera, a diverged window,
partial benchmarks, the model recorded as loaded, the viewer's first view, and inputs that run but warrant a word."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from one4d.eval import driver
from one4d.eval.datasets import bonn_sequences, sintel_sequences
from one4d.eval.tables import render_report
from one4d.geometry import read_tum_trajectory
from one4d.models import build_model, save_trainable_state
from one4d.pipeline import cli
from one4d.pipeline.inputs import InputFrames, prepare_conditions
from one4d.pipeline.outputs import write_outputs
from one4d.postopt import recover_cameras, recover_cameras_windowed
from one4d.postopt.synthetic import render_box_clip
from one4d.viewer import view
from test_eval_datasets import make_fake_bonn, make_fake_sintel
from test_postopt import errors

REPO = Path(__file__).resolve().parents[1]
FAST = ["steps=2", "num_frames=5", "height=32", "width=32", "progress=false", "postopt.iterations=3", "ply_stride=0"]


def sample_config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def eval_config(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


@pytest.fixture(scope="module")
def clip():
    return render_box_clip(num_frames=5, height=32, width=48)


def fake_output(pointmaps: torch.Tensor, result) -> SimpleNamespace:
    """What the pipeline returns for B = 1 (output_type "np"), from given pointmaps and their recovered cameras."""
    frames = pointmaps.shape[0]
    points = pointmaps.float().numpy()[None]
    return SimpleNamespace(rgb=np.full((1, *pointmaps.shape), 0.5, np.float32), pointmaps=points, normalized_pointmaps=points / 10,
                           observed=np.ones((1, frames), bool), cameras=[result], depth=result.depth.float().numpy()[None])


def written(tmp_path, clip, task: str, frames: int, fps: float | None, pointmaps=None) -> tuple[Path, dict]:
    """A sampler output folder for ``clip``'s pointmaps, as sample.py writes it for an input of ``frames`` frames."""
    source = InputFrames(np.zeros((frames, 32, 48, 3), np.uint8), Path("input"), fps)
    conditions = prepare_conditions(task, source, num_frames=5, height=32, width=48)
    pointmaps = clip["pointmaps"] if pointmaps is None else pointmaps
    folder = tmp_path / task
    folder.mkdir()
    summary = write_outputs(folder, fake_output(pointmaps, recover_cameras(pointmaps)), conditions, {}, ply_stride=0)
    return folder, summary


# ----------------------------------------------------------------------------- trajectories


def test_every_trajectory_follows_one_timestamp_rule(tmp_path, clip):
    """Frame j at j / frame_rate seconds: a single image's generated frames at its fps (16 by default), a video's
    resampled frames at the input times they show; postopt.py reads the rate back, or takes fps=."""
    single, summary = written(tmp_path, clip, "single", frames=1, fps=None)
    stamps, _ = read_tum_trajectory(single / "trajectory.txt")
    np.testing.assert_allclose(stamps, np.arange(5) / 16.0, atol=1e-6)  # not all 0.000000
    assert summary["frame_rate"] == 16.0

    video, summary = written(tmp_path, clip, "full", frames=9, fps=12.0)  # 9 frames at 12 fps -> 5 model frames
    stamps, _ = read_tum_trajectory(video / "trajectory.txt")
    np.testing.assert_allclose(stamps, np.array(summary["source_frames"]) / 12.0, atol=1e-6)  # the input time each shows

    from one4d.postopt.io import recorded_frame_rate, recover_folder

    for folder in (single, video):  # post-optimising a sampler folder again writes the same stamps
        sampler_stamps, _ = read_tum_trajectory(folder / "trajectory.txt")
        recover_folder(folder, output_dir=tmp_path / "again" / folder.name, frame_rate=recorded_frame_rate(folder))
        np.testing.assert_allclose(read_tum_trajectory(tmp_path / "again" / folder.name / "trajectory.txt")[0], sampler_stamps)
    assert "j / 16 frames per second" in (single / "trajectory.txt").read_text().splitlines()[0]


def test_postopt_script_takes_fps_or_says_the_stamps_are_frame_indices(tmp_path, clip):
    np.savez(tmp_path / "pointmaps.npz", pointmaps=clip["pointmaps"].numpy().astype(np.float32))
    script = [sys.executable, str(REPO / "scripts" / "postopt.py"), f"input={tmp_path}", "subsample=512"]
    done = subprocess.run([*script, "fps=10"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(read_tum_trajectory(tmp_path / "trajectory.txt")[0], np.arange(5) / 10.0)
    done = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and "frame indices" in done.stdout, done.stderr[-2000:]
    np.testing.assert_allclose(read_tum_trajectory(tmp_path / "trajectory.txt")[0], np.arange(5))
    assert "frame indices" in (tmp_path / "trajectory.txt").read_text().splitlines()[0]
    done = subprocess.run([*script, "fps=-3"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == ["error: fps must be a positive number of frames per second, got -3"]


# ----------------------------------------------------------------------------- depth behind the camera


def behind(clip, frame: int, rows: slice, cols: slice) -> tuple[torch.Tensor, int]:
    """The clip's pointmaps with a block of ``frame`` mirrored through its camera centre: points behind the camera."""
    pointmaps = clip["pointmaps"].clone()
    centre = torch.linalg.inv(clip["world_to_camera"][frame])[:3, 3]
    pointmaps[frame, rows, cols] = 2 * centre - pointmaps[frame, rows, cols]
    return pointmaps, int(pointmaps[frame, rows, cols].shape[0] * pointmaps[frame, rows, cols].shape[1])


def test_points_behind_the_camera_get_depth_0_are_counted_and_warned_about_above_the_threshold(tmp_path, clip):
    pointmaps, count = behind(clip, 2, slice(4, 12), slice(8, 20))  # 96 of 7680 points, 1.25 %
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recover_cameras(pointmaps)
    assert result.num_behind == count and float(result.depth.min()) == 0.0
    assert (result.depth[2, 4:12, 8:20] == 0).all() and (result.depth[2, 12:] > 0).all()
    assert not [w for w in caught if "behind their camera" in str(w.message)]  # below the default 5 %
    with pytest.warns(UserWarning, match=r"96 of 7680 points \(1\.2%\) are behind their camera.*max_behind=0\.01"):
        recover_cameras(pointmaps, max_behind=0.01)
    with pytest.raises(ValueError, match="max_behind"):
        recover_cameras(pointmaps, max_behind=2)
    folder, summary = written(tmp_path, clip, "full", frames=9, fps=12.0, pointmaps=pointmaps)
    with np.load(folder / "depth.npz") as archive:
        assert float(archive["depth"].min()) == 0.0  # no negative depth in the clip format
    assert summary["cameras"]["points_behind_camera"] == count
    assert summary["cameras"]["points_behind_fraction"] == pytest.approx(count / 7680)
    assert json.loads((folder / "cameras.json").read_text())["num_behind"] == count
    assert sample_config().postopt.max_behind == 0.05  # the sampler's setting, passed on by cli.sample_into


# ----------------------------------------------------------------------------- a diverged window


def rotated_windows(pointmaps):
    """Windows (0, 9), (5, 14), (10, 21) of a 21-frame clip, each later one in another similarity frame."""
    windows, generator = [], torch.Generator().manual_seed(0)
    for index, (start, end) in enumerate([(0, 9), (5, 14), (10, 21)]):
        angle = 0.3 * index
        rotation = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
        shift = torch.randn(3, generator=generator, dtype=torch.float64) if index else torch.zeros(3, dtype=torch.float64)
        windows.append((1.0 + index) * pointmaps[start:end] @ rotation.T + shift)
    return windows


def test_a_diverged_window_is_reported_and_its_frames_marked_unreliable_not_a_crash(monkeypatch):
    from one4d.postopt import windows as windowed
    from one4d.postopt.recover import PostoptDiverged

    clip = render_box_clip(num_frames=21, height=48, width=64, seed=4)
    solve = windowed.recover_cameras

    def diverge(*_, **__):
        raise PostoptDiverged("post-optimisation diverged (non-positive focal); check that the pointmaps are a camera's view")

    def second_diverges(points, **options):
        return diverge() if torch.equal(points, second) else solve(points, **options)

    parts = rotated_windows(clip["pointmaps"])
    second = parts[1]
    monkeypatch.setattr(windowed, "recover_cameras", second_diverges)
    with pytest.warns(UserWarning, match=r"window 1 \(frames 5-13\) diverged \(non-positive focal\); unreliable: frame 9, which only it"):
        result = recover_cameras_windowed(parts, overlap=[4, 4])
    assert result.unreliable == [9] and result.depth.shape[0] == 21
    assert (result.depth[9] == 0).all() and not result.valid[9].any()
    assert torch.equal(result.world_to_camera[9], result.world_to_camera[8])  # holds the nearest recovered camera
    keep = [f for f in range(21) if f != 9]  # the neighbours' frames are exact, in the first window's world
    found = errors({k: v[keep] for k, v in clip.items() if torch.is_tensor(v) and v.shape[:1] == (21,)},
                   SimpleNamespace(**{k: getattr(result, k)[keep] for k in ("intrinsics", "world_to_camera", "camera_centers", "depth")}))
    assert found["focal"] < 1e-8 and found["centre"] < 1e-8 and found["abs_rel"] < 1e-8, found
    monkeypatch.setattr(windowed, "recover_cameras", diverge)
    with pytest.raises(PostoptDiverged, match="every one of the 3 windows"):
        recover_cameras_windowed(parts, overlap=4)


def test_a_diverged_single_solve_keeps_the_sample_and_marks_every_camera(monkeypatch, tmp_path, capfd):
    """The sampler asks post-optimisation to mark, not raise: the model already ran, its RGB and pointmaps are kept."""
    from one4d.postopt import recover
    from one4d.postopt.recover import PostoptDiverged

    def diverge(*_, **__):
        raise PostoptDiverged("post-optimisation diverged (non-positive focal); check that the pointmaps are a camera's view")

    monkeypatch.setattr(recover, "_recover_checked", diverge)
    clip = render_box_clip(num_frames=5, height=32, width=48)
    with pytest.raises(PostoptDiverged):
        recover_cameras(clip["pointmaps"])  # the default (postopt.py, evaluation): one clear error
    with pytest.warns(UserWarning, match="diverged .* every frame's camera is a stand-in"):
        result = recover_cameras(clip["pointmaps"], on_divergence="mark")
    assert result.unreliable == list(range(5)) and (result.depth == 0).all()

    state = tmp_path / "state"
    save_trainable_state(build_model("dlc", "tiny", lora_rank=4, link_layers=[1]), state)
    imageio.imwrite(tmp_path / "photo.png", np.full((32, 32, 3), 128, np.uint8))
    out = tmp_path / "out"
    code = cli.sample(sample_config("task=single", f"input={tmp_path / 'photo.png'}", f"out={out}", f"checkpoint={state}", *FAST))
    assert code == 0 and (out / "rgb.mp4").exists() and (out / "pointmaps.npz").exists()
    cameras = json.loads((out / "cameras.json").read_text())
    assert cameras["unreliable_frames"] == list(range(5)) and "stand-in" in " ".join(cameras["warnings"])


def test_noise_windows_that_diverge_do_not_crash_the_windowed_run():
    """Found on this project's machines: random frames that the single solve absorbs made window=9 raise."""
    clip = render_box_clip(num_frames=25, height=32, width=48, seed=5)
    pointmaps = clip["pointmaps"].clone()
    pointmaps[9:18] = torch.randn(9, 32, 48, 3, generator=torch.Generator().manual_seed(21), dtype=pointmaps.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recover_cameras(pointmaps)  # the single solve accepts them
        result = recover_cameras(pointmaps, window=9, overlap=3)
    assert result.depth.shape == (25, 32, 48) and torch.isfinite(result.world_to_camera).all()
    assert set(result.unreliable) <= set(range(9, 18))  # only the noise frames may be stand-ins
    reported = [str(w.message) for w in caught if "diverged" in str(w.message)]
    assert reported and len(reported) == len({m.split(")")[0] for m in reported})  # each diverged window, once
    assert result.unreliable and all((result.depth[frame] == 0).all() for frame in result.unreliable)


# ----------------------------------------------------------------------------- partial benchmarks


def test_strict_refuses_a_partial_benchmark_and_the_tables_count_every_number(tmp_path):
    make_fake_sintel(tmp_path / "sintel")  # alley_2 (a pose sequence), bamboo_1: 2 of Sintel's 23
    with pytest.raises(ValueError, match=r"Sintel root .* lacks 21 of its 23 sequences \(alley_1, ambush_2, .*strict=false"):
        sintel_sequences(tmp_path / "sintel", strict=True)
    assert [s.name for s in sintel_sequences(tmp_path / "sintel", strict=False)] == ["alley_2", "bamboo_1"]
    make_fake_bonn(tmp_path / "bonn", name="balloon2")
    with pytest.raises(ValueError, match=r"Bonn root .* lacks 4 of its 5 sequences \(crowd2, crowd3, person_tracking2, synchronous\)"):
        bonn_sequences(tmp_path / "bonn", strict=True)

    out = tmp_path / "out"
    with pytest.raises(ValueError, match="lacks 21 of its 23 sequences"):  # the script's default: strict=true
        driver.run(eval_config("benchmark=sintel", f"root={tmp_path / 'sintel'}", "mode=oracle", f"output_dir={out}"))
    assert not out.exists()  # refused before anything ran
    record = driver.run(eval_config("benchmark=sintel", f"root={tmp_path / 'sintel'}", "mode=oracle", "strict=false", f"output_dir={out}"))
    tables = (out / "tables.md").read_text()
    row = next(line for line in tables.split("## Table 3")[1].splitlines() if line.startswith("| oracle (GT + noise)"))
    assert row.count("(partial 2/23)") == 2  # Abs Rel and delta, beside the paper's 23-sequence numbers
    pose = next(line for line in tables.split("## Table 4")[1].splitlines() if line.startswith("| oracle (GT + noise)"))
    assert pose.count("(partial 1/14)") == 3  # ATE, RPE-T, RPE-R over 1 of the 14 pose sequences
    assert "averages n of the benchmark's N sequences" in tables
    assert "(partial: depth 2 of 23 sequences, pose 1 of 14 sequences)" in (out / "oracle_GT_noise" / "sintel" / "table.md").read_text()
    whole = dict(record, result=dict(record["result"], average={
        "depth": dict(record["result"]["average"]["depth"], sequences=23), "pose": dict(record["result"]["average"]["pose"], sequences=14)}))
    assert "partial" not in render_report([whole])  # a complete run's numbers carry no mark


# ----------------------------------------------------------------------------- the model as loaded, the inputs


def test_summary_records_the_loaded_model_and_questionable_inputs_are_warned_once(tmp_path, capfd):
    state = tmp_path / "state"
    save_trainable_state(build_model("dlc", "tiny", lora_rank=4, link_layers=[1]), state)
    imageio.imwrite(tmp_path / "tiny.png", np.full((3, 3, 3), 128, np.uint8))
    out = tmp_path / "out"
    code = cli.sample(sample_config("task=single", f"input={tmp_path / 'tiny.png'}", f"out={out}", f"checkpoint={state}",
                                    "prompt=' '", *FAST))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["lora_rank"] == 4 and summary["model"]["link_layers"] == [1] and summary["model"]["num_links"] == 1
    assert summary["settings"]["model"]["lora_rank"] == 4 and summary["settings"]["model"]["num_links"] == 1  # not the config's 8 and 5
    stderr = capfd.readouterr().err.splitlines()
    enlarged = [line for line in stderr if "enlarged" in line]
    blank = [line for line in stderr if "prompt is blank" in line]
    assert len(enlarged) == 1 and "3x3 pixels, enlarged 10.7x to the model's 32x32" in enlarged[0], stderr
    assert len(blank) == 1 and blank[0].startswith("warning: "), stderr
    assert summary["warnings"] == [enlarged[0].removeprefix("warning: "), blank[0].removeprefix("warning: ")]
    assert "points_behind_camera" in summary["cameras"]


def test_more_frames_than_the_clip_is_one_warning_with_the_count(capsys):
    from one4d.pipeline.inputs import print_warnings

    source = InputFrames(np.zeros((3, 32, 32, 3), np.uint8), Path("clip.mp4"), 10.0)
    conditions = prepare_conditions("full", source, num_frames=9)
    print_warnings(conditions)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: num_frames=9 but clip.mp4 has 3 frames: 6 of the 9 model frames repeat an input frame "
                     "(a slowed-down clip); a longer video avoids it"]
    assert conditions.warnings == [lines[0].removeprefix("warning: ")]
    assert prepare_conditions("full", InputFrames(np.zeros((9, 32, 32, 3), np.uint8), Path("clip.mp4"), 10.0), num_frames=9,
                              prompt="a room").warnings == []  # a fitting input, a prompt: not a word


def test_per_frame_postopt_warnings_are_one_line_with_the_count():
    clip = render_box_clip(num_frames=9, height=32, width=48, seed=1)
    pointmaps = clip["pointmaps"].clone()
    generator = torch.Generator().manual_seed(0)
    for frame in (2, 3, 4):
        pointmaps[frame] = pointmaps[frame].reshape(-1, 3)[torch.randperm(32 * 48, generator=generator)].reshape(32, 48, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = recover_cameras(pointmaps)
    poor = [str(w.message) for w in caught if "fits no pinhole camera" in str(w.message)]
    assert poor == ["post-optimisation: 3 frames (2, 3, 4): its pointmap fits no pinhole camera well "
                    "(far worse than the other frames); its camera is unreliable"]
    assert sum("fits no pinhole camera" in m for m in result.warnings) == 3  # each frame still recorded


# ----------------------------------------------------------------------------- the viewer's first view


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_view(first_view: dict, points: np.ndarray) -> np.ndarray:
    """Whether points are in front of the first view and within its vertical field of view (the narrower one)."""
    axis = first_view["look_at"] - first_view["position"]
    axis = axis / np.linalg.norm(axis)
    rays = points - first_view["position"]
    cosine = rays @ axis / np.linalg.norm(rays, axis=-1)
    return cosine > math.cos(first_view["fov"] / 2)


@pytest.mark.parametrize("with_cameras", [True, False])
def test_first_view_frames_the_point_cloud_and_shows_the_first_camera(tmp_path, with_cameras):
    from one4d.geometry import look_at

    rng = np.random.default_rng(0)  # a room in front of the first camera, as the sampler's pointmaps are
    pointmaps = rng.normal(size=(6, 8, 8, 3)).astype(np.float32) + np.array([1.0, 0.5, 4.0], dtype=np.float32)
    np.savez(tmp_path / "pointmaps.npz", pointmaps=pointmaps, rgb=np.zeros((6, 8, 8, 3), np.uint8))
    if with_cameras:
        eyes = torch.tensor([[0.2 * i, 0.0, 0.0] for i in range(6)], dtype=torch.float64)
        world_to_camera = look_at(eyes, torch.tensor([1.0, 0.5, 4.0], dtype=torch.float64).expand(6, 3))
        intrinsics = torch.tensor([[10.0, 0, 3.5], [0, 10.0, 3.5], [0, 0, 1]], dtype=torch.float64).expand(6, 3, 3)
        (tmp_path / "cameras.json").write_text(json.dumps({"intrinsics": intrinsics.tolist(), "world_to_camera": world_to_camera.tolist()}))
    viewer = view(tmp_path, port=free_port())
    try:
        initial = viewer.server.initial_camera
        first = {"position": initial.position, "look_at": initial.look_at, "fov": initial.fov}
        points = pointmaps.reshape(-1, 3)
        assert in_view(first, points).mean() >= 0.95  # the cloud is in the picture
        axis = (first["look_at"] - first["position"]) / np.linalg.norm(first["look_at"] - first["position"])
        rays = points - first["position"]
        angles = np.degrees(np.arccos(np.clip(rays @ axis / np.linalg.norm(rays, axis=-1), -1, 1)))
        assert np.percentile(angles, 95) > math.degrees(first["fov"]) / 4  # and fills it, not a speck in the middle
        assert in_view(first, viewer.scene.camera_to_world[:1, :3, 3] if with_cameras else np.zeros((1, 3))).all()  # the first camera
        if with_cameras:
            assert viewer._frustums[0].color == (255, 60, 60)  # drawn, and marked as the current one
    finally:
        viewer.stop()
