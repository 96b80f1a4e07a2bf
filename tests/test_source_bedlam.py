"""BEDLAM source: a scene in the authors' layout (PNG, centimetre "Depth" EXR with sky, env masks, Unreal camera csv,
be_seq.csv) written from a scene of known geometry with Unreal's own rotator axes, read back exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from source_fixtures_a import read_all, self_check
from source_fixtures_b import BEDLAM_SCENE, make_scene, write_bedlam

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.bedlam import _camera_rows

pytest.importorskip("OpenEXR")


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("bedlam")
    scene = make_scene(seed=10, frames=6, height=36, width=64)  # 16:9, as BEDLAM's 36 x 20.25 mm sensor
    write_bedlam(root, scene)
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("bedlam")(root)
    sequences = source.sequences()
    assert [(s.name, s.num_frames, s.fps) for s in sequences] == [(f"{BEDLAM_SCENE}/seq_000000", 6, 30.0)]
    _camera_rows.cache_clear()
    read = read_all(source, sequences[0])
    assert _camera_rows.cache_info().misses == 1  # the camera csv parsed once, not once per frame
    # Depth: float32 centimetres / 100, so float32 rounding only (1e-7 relative); the top row is sky, > 200 m,
    # which the config's far cut zeroes.
    np.testing.assert_allclose(read["depth"][:, 1:], scene.depth[:, 1:], rtol=1e-6, atol=0)
    assert (read["depth"][:, 0] > 200).all()
    # Cameras: the csv holds 10 decimals of cm and degrees; yaw, pitch and roll are all non-zero in this fixture.
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-8)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-8)
    assert (read["rgb"] == scene.rgb).all()
    assert (read["dynamic_mask"] == scene.dynamic_mask).all()


def test_wrong_depth_unit_fails_the_self_check(download):
    root, _ = download
    sequence = get_source("bedlam")(root).sequences()[0]
    right = read_all(get_source("bedlam")(root), sequence)
    wrong = read_all(get_source("bedlam")(root, depth_unit_m=1.0), sequence)  # centimetres read as metres
    for read in (right, wrong):
        read["depth"][:, 0] = 0  # the sky row, as the far cut leaves it
    check = self_check(right)
    assert check.error < 1e-4 and not check.flagged()
    assert self_check(wrong).flagged()


def test_skipped_scenes(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root / BEDLAM_SCENE, copy / "20221024_10_100_batch01handhair_closeup_suburb_a")
    shutil.copytree(root / BEDLAM_SCENE, copy / "20221010_3_1000_batch01hand")
    assert get_source("bedlam")(copy).sequences() == []
    assert len(get_source("bedlam")(copy, skip_scenes=[], skip_scenes_containing=[]).sequences()) == 2


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "png" / "seq_000000").mkdir(parents=True)  # a scene's insides without its be_seq.csv
    with pytest.raises(SourceLayoutError, match="expected <scene>/be_seq.csv") as error:
        get_source("bedlam")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_file(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / BEDLAM_SCENE / "depth" / "seq_000000" / "seq_000000_0004_depth.exr").unlink()
    source = get_source("bedlam")(copy)
    with pytest.raises(FrameReadError, match="seq_000000_0004_depth.exr"):
        source.read_frame(source.sequences()[0], 4)


def test_sequence_without_camera_file_is_listed_with_its_problem(download, tmp_path):
    """A sequence be_seq.csv names whose camera csv is missing is reported as skipped (named, with the file), not dropped."""
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / BEDLAM_SCENE / "ground_truth" / "camera" / "seq_000000_camera.csv").unlink()
    sequences = get_source("bedlam")(copy).sequences()
    assert [(s.name, s.num_frames) for s in sequences] == [(f"{BEDLAM_SCENE}/seq_000000", 0)]
    assert sequences[0].problem.startswith("missing camera file") and "seq_000000_camera.csv" in sequences[0].problem
