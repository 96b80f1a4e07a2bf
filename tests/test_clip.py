"""The clip folder format: write/read round trips and a ClipError for every kind of bad clip."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from one4d.data.clip import ClipError, read_clip, read_meta, write_clip
from one4d.data.synthetic import render_scene

# Codec tolerance: rgb.mp4 is H.264 YUV 4:4:4 at crf 0 (lossless); the only error is the
# RGB <-> YUV rounding of ffmpeg's colour conversion: at most 3/255 per channel, 1/255 on average.
VIDEO_MAX_ERROR, VIDEO_MEAN_ERROR = 3 / 255, 1 / 255


@pytest.fixture(scope="module")
def scene():
    return render_scene(5, num_frames=9, height=32, width=48)


@pytest.fixture()
def clip_folder(tmp_path, scene):
    return write_clip(tmp_path / "clip", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics,
                      scene.world_to_camera, {"caption": scene.caption, "source": "synthetic"})


def assert_geometry_round_trip(clip, scene, frames=slice(None)):
    # float16 storage: relative error <= 2^-11 plus the smallest normal step.
    torch.testing.assert_close(clip.pointmaps, scene.pointmaps[frames], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(clip.depth, scene.depth[frames], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(clip.intrinsics, scene.intrinsics[frames].double(), rtol=0, atol=0)
    torch.testing.assert_close(clip.world_to_camera, scene.world_to_camera[frames].double(), rtol=0, atol=0)


def test_mp4_round_trip_within_codec_tolerance(clip_folder, scene):
    clip = read_clip(clip_folder)
    assert clip.rgb.shape == scene.rgb.shape and clip.name == "clip"
    error = (clip.rgb - scene.rgb).abs()
    assert error.max() <= VIDEO_MAX_ERROR + 1e-6 and error.mean() <= VIDEO_MEAN_ERROR
    assert_geometry_round_trip(clip, scene)
    assert clip.meta["caption"] == scene.caption and clip.meta["num_frames"] == 9 and clip.meta["fps"] == 16.0
    assert len(clip.meta["norm_centre"]) == 3 and clip.meta["norm_scale"] > 0


def test_png_frames_are_lossless_and_frame_subsets_read(tmp_path, scene):
    folder = write_clip(tmp_path / "png", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics,
                        scene.world_to_camera, {}, rgb_format="png")
    clip = read_clip(folder, frames=[1, 4, 8])
    expected = (scene.rgb[[1, 4, 8]] * 255).round() / 255
    torch.testing.assert_close(clip.rgb, expected, rtol=0, atol=1e-6)
    assert clip.frames == [1, 4, 8]
    assert_geometry_round_trip(clip, scene, [1, 4, 8])
    torch.testing.assert_close(clip.reference_world_to_camera, scene.world_to_camera[0].double())


def test_imageio_fallback_reads_the_same_video(clip_folder, monkeypatch):
    with_decord = read_clip(clip_folder, frames=[0, 3, 7])
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    without = read_clip(clip_folder, frames=[0, 3, 7])
    torch.testing.assert_close(without.rgb, with_decord.rgb, rtol=0, atol=VIDEO_MAX_ERROR)


def test_writer_refuses_bad_arrays(tmp_path, scene):
    bad = scene.pointmaps.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ClipError, match="NaN"):
        write_clip(tmp_path / "nan", scene.rgb, bad, scene.depth, scene.intrinsics, scene.world_to_camera, {})
    with pytest.raises(ClipError, match="frame counts"):
        write_clip(tmp_path / "count", scene.rgb, scene.pointmaps[:5], scene.depth, scene.intrinsics, scene.world_to_camera, {})
    with pytest.raises(ValueError, match="rgb_format"):
        write_clip(tmp_path / "fmt", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics, scene.world_to_camera, {}, rgb_format="gif")


def _remove(folder, name):
    (folder / name).unlink()


def _fewer_pointmap_frames(folder):
    with np.load(folder / "pointmaps.npz") as archive:
        np.savez(folder / "pointmaps.npz", pointmaps=archive["pointmaps"][:5])


def _nan_pointmaps(folder):
    with np.load(folder / "pointmaps.npz") as archive:
        pointmaps = archive["pointmaps"].copy()
    pointmaps[2, 3, 4] = np.inf
    np.savez(folder / "pointmaps.npz", pointmaps=pointmaps)


def _write(name, data):
    return lambda folder: (folder / name).write_bytes(data)


def _meta_says(**changes):
    def change(folder):
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(changes)
        (folder / "meta.json").write_text(json.dumps(meta))
    return change


@pytest.mark.parametrize("damage, message", [
    (lambda f: _remove(f, "depth.npz"), "missing depth.npz"),
    (lambda f: _remove(f, "pointmaps.npz"), "missing pointmaps.npz"),
    (lambda f: _remove(f, "cameras.json"), "missing cameras.json"),
    (lambda f: _remove(f, "meta.json"), "missing meta.json"),
    (lambda f: _remove(f, "rgb.mp4"), "missing rgb.mp4"),
    (_fewer_pointmap_frames, "frame counts differ"),
    (_nan_pointmaps, "NaN or infinite"),
    (_write("rgb.mp4", b""), "empty"),
    (_write("rgb.mp4", b"\x00not a video" * 64), "cannot be decoded"),
    (_write("meta.json", b"{not json"), "not valid JSON"),
    (_write("cameras.json", b'{"intrinsics": 3}'), "cameras.json is malformed"),
    (_meta_says(height=64), "frame sizes differ"),
])
def test_bad_clip_raises_clip_error_naming_clip_and_problem(clip_folder, damage, message):
    damage(clip_folder)
    with pytest.raises(ClipError, match=message) as error:
        read_clip(clip_folder)
    assert str(clip_folder) in str(error.value) and isinstance(error.value, ValueError)


def test_truncated_video_and_out_of_range_frames(clip_folder, tmp_path, scene):
    short = write_clip(tmp_path / "short", scene.rgb[:4], scene.pointmaps[:4], scene.depth[:4], scene.intrinsics[:4],
                       scene.world_to_camera[:4], {})
    shutil.copy(short / "rgb.mp4", clip_folder / "rgb.mp4")  # 4 video frames, 9 everywhere else
    with pytest.raises(ClipError, match="rgb.mp4 has 4 frames|frame counts differ"):
        read_clip(clip_folder)
    with pytest.raises(ClipError, match="requested"):
        read_clip(short, frames=[0, 9])
    with pytest.raises(ClipError, match="is not a folder"):
        read_meta(tmp_path / "nowhere")
