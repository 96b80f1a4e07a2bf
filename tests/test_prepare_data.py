"""The clip cutter and scripts/prepare_data.py: crop/resize/intrinsics, invalid depth, atomic clips, resume after
SIGKILL, bad frames skipped and reported, and the same clips whatever the worker count.

End-to-end runs use the test-only fixture format of tests/fixture_source.py, named to the script through
ONE4D_SOURCE_MODULES, as a user would run it (a subprocess)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from one4d.data.clip import read_clip
from one4d.data.cutter import CutSettings, SegmentError, crop_box, cut_segment, resize_frame, write_cut_clip
from one4d.data.prepare import RunSettings, plan
from one4d.data.sources import DatasetSource, FrameReadError, SequenceInfo, SourceFrame
from one4d.data.synthetic import render_scene
from one4d.geometry import depth_to_pointmap

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from fixture_source import write_config, write_scene  # noqa: E402


class MemorySource(DatasetSource):
    """One sequence held in memory: a rendered scene, with optional depth corruption."""

    name = "memory"

    def __init__(self, root, scene=None, depth=None):
        super().__init__(root)
        self.scene, self.depth = scene, depth if depth is not None else scene.depth.numpy()

    def sequences(self):
        return [SequenceInfo("room", len(self.depth), fps=30.0)]

    def read_frame(self, sequence, index):
        if index >= len(self.depth):
            raise FrameReadError(f"no frame {index}")
        return SourceFrame(rgb=(self.scene.rgb[index].numpy() * 255).round().astype(np.uint8), depth=self.depth[index],
                           intrinsics=self.scene.intrinsics[index].double().numpy(),
                           world_to_camera=self.scene.world_to_camera[index].double().numpy(),
                           dynamic_mask=self.scene.dynamic_mask[index].numpy())


@pytest.fixture(scope="module")
def wide_scene():
    """9 frames at 60x100: wider than the 32x48 output, so the sides are cropped (aspect 1.67 -> 1.5)."""
    return render_scene(10, num_frames=9, height=60, width=100)


def test_crop_resize_intrinsics_reproject_a_known_point(wide_scene):
    scene = wide_scene
    top, left, crop_height, crop_width = crop_box(60, 100, 32, 48)
    assert (top, left, crop_height, crop_width) == (0, 5, 60, 90)
    frame = MemorySource("/", scene).read_frame(None, 3)
    rgb, depth, intrinsics, _ = resize_frame(frame, 32, 48)
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8 and depth.shape == (32, 48)
    # A known 3D point: native pixel (u, v) at its depth. In the output it must land where the crop and the
    # resize put that pixel centre: ((u - left + 0.5) * 48/90 - 0.5, (v - top + 0.5) * 32/60 - 0.5).
    u, v = 71, 22
    point = float(scene.depth[3, v, u]) * np.linalg.inv(frame.intrinsics) @ np.array([u, v, 1.0])
    projected = intrinsics @ point
    expected = [(u - left + 0.5) * 48 / 90 - 0.5, (v - top + 0.5) * 32 / 60 - 0.5]
    np.testing.assert_allclose(projected[:2] / projected[2], expected, atol=1e-9)


def test_uneven_crop_keeps_each_axis_scale():
    """61x100 -> 32x48: the crop (61x92 from column 4) is not exactly 1.5:1, so x and y shrink by different factors;
    the intrinsics must follow each axis's own factor and the nearest depth the same pixel-centre map."""
    scene = render_scene(10, num_frames=2, height=61, width=100)
    top, left, crop_height, crop_width = crop_box(61, 100, 32, 48)
    assert (top, left, crop_height, crop_width) == (0, 4, 61, 92)
    frame = MemorySource("/", scene).read_frame(None, 1)
    _, depth, intrinsics, _ = resize_frame(frame, 32, 48)
    rows = np.floor((np.arange(32) + 0.5) * 61 / 32).astype(int)
    cols = left + np.floor((np.arange(48) + 0.5) * 92 / 48).astype(int)
    np.testing.assert_array_equal(depth, frame.depth[rows[:, None], cols[None, :]])
    u, v = 80, 47
    point = float(scene.depth[1, v, u]) * np.linalg.inv(frame.intrinsics) @ np.array([u, v, 1.0])
    projected = intrinsics @ point
    expected = [(u - left + 0.5) * 48 / 92 - 0.5, (v - top + 0.5) * 32 / 61 - 0.5]
    np.testing.assert_allclose(projected[:2] / projected[2], expected, atol=1e-9)


def test_depth_is_nearest_and_rgb_antialiased():
    """A 3x shrink: each output pixel centre sits on native pixel 3i+1, so nearest depth is exactly that pixel
    (no blending across edges), and INTER_AREA averages the 3x3 block."""
    scene = render_scene(1, num_frames=2, height=96, width=144)
    frame = MemorySource("/", scene).read_frame(None, 0)
    rgb, depth, intrinsics, mask = resize_frame(frame, 32, 48)
    np.testing.assert_array_equal(depth, frame.depth[1::3, 1::3])
    np.testing.assert_array_equal(mask, frame.dynamic_mask[1::3, 1::3])
    block_mean = frame.rgb.reshape(32, 3, 48, 3, 3).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(rgb - block_mean).max() <= 1.0
    assert np.abs(rgb.astype(float) - frame.rgb[1::3, 1::3]).mean() > 0.5  # not a point sample: a real filter
    np.testing.assert_allclose(intrinsics[0, 0], frame.intrinsics[0, 0] / 3)
    np.testing.assert_allclose(intrinsics[0, 2], (frame.intrinsics[0, 2] + 0.5) / 3 - 0.5)
    frame.dynamic_mask = np.zeros((192, 288), bool)  # a mask at another resolution than the frame: refused, not misread
    with pytest.raises(SegmentError, match="dynamic mask is 192x288 but RGB is 96x144"):
        resize_frame(frame, 32, 48)


def test_a_decoder_error_skips_the_segment_naming_it(wide_scene, tmp_path):
    """An exception type the source did not anticipate (a decoder's own, on a corrupt file) skips the segment with its
    name and message; it must not end the run, or every resume would stop at the same file."""
    class CorruptFrame(MemorySource):
        def read_frame(self, sequence, index):
            if index == 2:
                raise RuntimeError("EXR_ERR_CORRUPT_CHUNK in seq_0002.exr")
            return super().read_frame(sequence, index)

    source = CorruptFrame(tmp_path, wide_scene)
    with pytest.raises(SegmentError, match="frame 2: RuntimeError: EXR_ERR_CORRUPT_CHUNK in seq_0002.exr"):
        cut_segment(source, source.sequences()[0], list(range(5)), CutSettings(num_frames=5, height=32, width=48))


def test_invalid_and_far_depth_become_zero_and_are_counted(wide_scene, tmp_path):
    depth = wide_scene.depth.numpy().copy()
    # Native pixels nearest sampling picks (crop 60x90 from column 5, shrink 1.875x):
    # output (i, j) <- native (floor((i + .5) * 1.875), 5 + floor((j + .5) * 1.875)).
    depth[0, 0, 5] = np.nan  # output (0, 0)
    depth[2, 2, 7] = -1.0  # output (1, 1)
    depth[4, 4, 9] = np.inf  # output (2, 2)
    far = float(np.median(depth[np.isfinite(depth)]))
    source = MemorySource(tmp_path, wide_scene, depth)
    settings = CutSettings(num_frames=9, height=32, width=48, far_depth=far)
    clip = cut_segment(source, source.sequences()[0], list(range(9)), settings)
    assert clip.depth_nonfinite == 3
    assert clip.depth[0, 0, 0] == 0 and clip.depth[2, 1, 1] == 0 and clip.depth[4, 2, 2] == 0
    assert np.isfinite(clip.depth).all() and clip.depth.max() <= far
    resized = np.stack([resize_frame(source.read_frame(None, i), 32, 48)[1] for i in range(9)])
    assert clip.depth_far == int((np.isfinite(resized) & (resized > far)).sum()) > 0  # inf counts as non-finite

    written = write_cut_clip(tmp_path / "room_000000", clip, {"source": "memory", "caption": "x"}, settings)
    assert not list(tmp_path.glob(".*"))  # the partial folder was renamed
    assert written["meta"]["depth_nonfinite"] == 3 and written["meta"]["depth_far"] == clip.depth_far
    assert written["meta"]["selfcheck_error"] < 0.02 and written["meta"]["selfcheck_outliers"] < 0.03
    (tmp_path / "room_000001").mkdir()  # a folder at a clip's name that is not a finished clip: never overwritten
    (tmp_path / "room_000001" / "notes.txt").write_text("mine")
    with pytest.raises(SegmentError, match="room_000001 exists but is not a complete clip"):
        write_cut_clip(tmp_path / "room_000001", clip, {"source": "memory"}, settings)
    assert (tmp_path / "room_000001" / "notes.txt").read_text() == "mine"
    stored = read_clip(tmp_path / "room_000000")
    np.testing.assert_allclose(stored.depth.numpy(), clip.depth, rtol=1e-3)
    valid = stored.depth > 0
    expected = depth_to_pointmap(torch.from_numpy(clip.depth).double(), torch.from_numpy(clip.intrinsics),
                                 torch.from_numpy(clip.world_to_camera)).float()
    torch.testing.assert_close(stored.pointmaps[valid], expected[valid], rtol=1e-3, atol=1e-3)
    assert (stored.pointmaps[~valid] == 0).all()


def test_plan_strides_by_target_fps_skips_short_sequences_and_limits(wide_scene, tmp_path):
    class TwoSequences(MemorySource):
        def sequences(self):
            return [SequenceInfo("long", 40, fps=30.0), SequenceInfo("short", 12, fps=30.0),
                    SequenceInfo("broken", 0, problem="cannot read broken/poses.txt")]

    source = TwoSequences(tmp_path, wide_scene)
    settings = RunSettings(source="memory", root=tmp_path, out=tmp_path / "out", options={}, stride=1, fps=10.0,
                           cut=CutSettings(num_frames=5, height=32, width=48))
    segments, skipped = plan(source, settings, captions=None)
    assert [(s.sequence.name, s.first, s.stride) for s in segments] == [("long", 0, 3), ("long", 15, 3)]  # 30 fps / 10
    assert skipped == [("short", "12 frames, a clip needs 13 (num_frames=5, stride=3)"), ("broken", "cannot read broken/poses.txt")]
    settings.limit, settings.fps, settings.stride = 3, None, 2
    segments, _ = plan(source, settings, captions=None)
    assert [(s.sequence.name, s.first) for s in segments] == [("long", 0), ("long", 10), ("long", 20)]
    assert all(s.caption == "" and s.caption_from == "none" for s in segments)


# ----------------------------------------------------------------------------- scripts/prepare_data.py

SIZE = ["num_frames=5", "height=32", "width=48", "progress=false"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three fixture sequences of 11 frames at 48x80 (two 5-frame clips each), a config and a caption file."""
    base = tmp_path_factory.mktemp("prepare")
    root = base / "download"
    write_scene(root, "seq_a", render_scene(10, num_frames=11, height=48, width=80), caption="the dataset's own text")
    write_scene(root, "seq_b", render_scene(1, num_frames=11, height=48, width=80))
    write_scene(root, "seq_c", render_scene(4, num_frames=11, height=48, width=80))
    captions = base / "captions.jsonl"
    captions.write_text(json.dumps({"sequence": "seq_b", "first": 5, "caption": "from the user's file"}) + "\n"
                        + json.dumps({"sequence": "seq_typo", "first": 0, "caption": "never used"}) + "\n")
    return {"root": root, "config": write_config(base / "configs", far_depth=20.0), "captions": captions, "base": base}


def _command(dataset, out, *overrides, root=None, source="fixture_source"):
    return [sys.executable, "scripts/prepare_data.py", f"source={source}", f"root={root or dataset['root']}", f"out={out}",
            f"hydra.searchpath=[file://{dataset['config']}]", *SIZE, *overrides]


def _environment():
    return {**os.environ, "PYTHONPATH": str(REPO / "tests"), "ONE4D_SOURCE_MODULES": "fixture_source", "OMP_NUM_THREADS": "1"}


def _run(dataset, out, *overrides, **arguments):
    return subprocess.run(_command(dataset, out, *overrides, **arguments), cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=300)


def _files(out: Path) -> dict[str, bytes]:
    """Every file of a clip root but report.md (which names the out folder), by relative path."""
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and path.name != "report.md"}


@pytest.fixture(scope="module")
def reference(dataset):
    """An uninterrupted run with one worker."""
    out = dataset["base"] / "reference"
    result = _run(dataset, out, "workers=1", f"captions={dataset['captions']}")
    assert result.returncode == 0, result.stderr
    return out


def test_end_to_end_run_writes_clips_index_and_report(dataset, reference):
    names = sorted(path.name for path in reference.iterdir() if path.is_dir())
    assert names == [f"seq_{s}_{first:06d}" for s in "abc" for first in (0, 5)]
    index = [json.loads(line) for line in (reference / "index.jsonl").read_text().splitlines()]
    assert [entry["clip"] for entry in index] == names  # plan order
    assert {entry["caption"] for entry in index if entry["sequence"] == "seq_a"} == {"the dataset's own text"}
    assert [entry["caption"] for entry in index if entry["sequence"] == "seq_b"] == ["", "from the user's file"]
    for entry in index:
        assert (entry["source"], entry["stride"], entry["num_frames"], entry["height"], entry["width"]) == ("fixture_source", 1, 5, 32, 48)
        assert entry["selfcheck_error"] < 0.02 and not entry["flagged"]
        clip = read_clip(reference / entry["clip"])
        assert clip.meta["selfcheck_error"] == entry["selfcheck_error"] and clip.meta["first"] == entry["first"]
        assert clip.meta["fps"] == 30.0 and clip.rgb.shape == (5, 32, 48, 3)
    report = (reference / "report.md").read_text()
    assert "clips written (in index.jsonl): 6" in report and "sequence=seq_typo first=0" in report


def test_wrong_convention_is_flagged_in_index_and_report(dataset, tmp_path):
    out = tmp_path / "out"
    result = _run(dataset, out, "workers=1", "limit=2", "source.options.axes=opengl")
    assert result.returncode == 0, result.stderr
    assert "2 flagged by the self-check" in result.stdout
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [entry["flagged"] for entry in index] == [True, True]
    report = (out / "report.md").read_text()
    assert "| seq_a_000000 |" in report and "| seq_a_000005 |" in report  # the flagged clips are listed


def test_bad_input_is_one_line(dataset, reference, tmp_path):
    unknown = _run(dataset, tmp_path / "a", source="no_such_dataset")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "known sources:" in unknown.stderr and "fixture_source" in unknown.stderr and "tartanair" in unknown.stderr
    (tmp_path / "other").mkdir()
    layout = _run(dataset, tmp_path / "b", root=tmp_path / "other")
    assert layout.returncode == 2 and layout.stderr.startswith("error: ") and layout.stderr.count("\n") == 1
    assert "<sequence>/cameras.json" in layout.stderr and "data/sources.md" in layout.stderr
    misspelt = _run(dataset, tmp_path / "c", "+source.options.axis=ned", source="tartanair")
    assert misspelt.returncode == 2 and misspelt.stderr.count("\n") == 1 and "source.options:" in misspelt.stderr and "'axis'" in misspelt.stderr
    inside = _run(dataset, dataset["root"] / "clips")
    assert inside.returncode == 2 and "inside root" in inside.stderr and not (dataset["root"] / "clips").exists()
    (tmp_path / "a_file").write_text("")
    unwritable = _run(dataset, tmp_path / "a_file" / "clips")
    assert unwritable.returncode == 2 and unwritable.stderr.startswith("error: cannot write to out=") and unwritable.stderr.count("\n") == 1
    before = _files(reference)
    other = _run(dataset, reference, "height=16", "width=24")  # resuming into clips made at another size
    assert other.returncode == 2 and "converted with other settings: height 32 (now 16)" in other.stderr
    assert _files(reference) == before


def test_killed_run_resumes_to_identical_clips_and_index(dataset, reference):
    out = dataset["base"] / "killed"
    process = subprocess.Popen(_command(dataset, out, "workers=1", f"captions={dataset['captions']}"), cwd=REPO,
                               env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in out.iterdir())):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "index.jsonl").exists(), "the run finished before it was killed: the test proves nothing"
    (out / ".seq_c_000005.partial").mkdir(exist_ok=True)  # as a kill during a write leaves it
    (out / ".seq_c_000005.partial" / "rgb.mp4").write_bytes(b"half")
    (out / ".seq_z_000000.partial").mkdir()  # a partial of a segment no longer planned (e.g. an earlier limit=) goes too
    result = _run(dataset, out, "workers=1", f"captions={dataset['captions']}")
    assert result.returncode == 0, result.stderr
    assert "kept from an earlier run" in result.stdout and not list(out.glob(".*.partial"))
    assert _files(out) == _files(reference)


def test_bad_frame_skips_its_segment_and_is_reported(dataset, tmp_path):
    root = tmp_path / "download"
    root.mkdir()
    for name in ("seq_a", "seq_b"):
        os.symlink(dataset["root"] / name, root / name)
    broken = root / "seq_c"
    broken.mkdir()
    for path in (dataset["root"] / "seq_c").iterdir():
        if path.name != "depth_000007.npy":
            os.symlink(path, broken / path.name)
    (broken / "depth_000007.npy").write_bytes(b"not a numpy file")
    out = tmp_path / "out"
    result = _run(dataset, out, "workers=1", root=root)
    assert result.returncode == 0, result.stderr
    index = [json.loads(line)["clip"] for line in (out / "index.jsonl").read_text().splitlines()]
    assert index == ["seq_a_000000", "seq_a_000005", "seq_b_000000", "seq_b_000005", "seq_c_000000"]
    report = (out / "report.md").read_text()
    assert "segments skipped: 1" in report
    skipped = [line for line in report.splitlines() if line.startswith("| seq_c_000005 ")]
    assert len(skipped) == 1 and "frame 7" in skipped[0]


def test_two_workers_write_the_same_clips(dataset, reference):
    out = dataset["base"] / "two_workers"
    result = _run(dataset, out, "workers=2", f"captions={dataset['captions']}")
    assert result.returncode == 0, result.stderr
    assert _files(out) == _files(reference)
    assert (out / "report.md").read_text().replace(str(out), "OUT") == (reference / "report.md").read_text().replace(str(reference), "OUT")
