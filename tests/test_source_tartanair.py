"""TartanAir source: a fixture in the authors' layout (<env>/<env>/Easy/P000, PNG frames, float32 .npy depth with a
10 km sky, pose_left.txt NED camera-to-world tx ty tz qx qy qz qw) written from a scene of known geometry, read back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from source_fixtures_a import check_depth, config_options, known_scene, read_all, self_check, tartanair_options, write_tartanair

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.tartanair import _load_poses


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("tartanair")
    scene = known_scene()
    write_tartanair(root, scene, difficulty="Easy", trajectory="P000")
    write_tartanair(root, scene, env="otherenv", difficulty="Hard", trajectory="P001", doubled=False)
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("tartanair")(root, **tartanair_options(scene))
    sequences = source.sequences()
    assert [(s.name, s.num_frames) for s in sequences] == [("fixtureenv/fixtureenv/Easy/P000/left", 6), ("otherenv/Hard/P001/left", 6)]
    assert [s.name for s in get_source("tartanair")(root, difficulties=["Hard"]).sequences()] == ["otherenv/Hard/P001/left"]
    _load_poses.cache_clear()
    read = read_all(source, sequences[0])
    assert _load_poses.cache_info().misses == 1  # the per-sequence file is parsed once, not once per frame
    check_depth(read["depth"], scene.depth, tolerance=1e-6)  # float32 metres; the 10 km sky reads 0
    # cx = W/2, cy = H/2 from the corner in the file -> (W-1)/2, (H-1)/2 with integer pixel centres.
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-9)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-9)  # float64 text, exact quaternions
    np.testing.assert_array_equal(read["rgb"], scene.rgb)
    assert read["dynamic_mask"] is None


def test_wrong_axes_fail_the_self_check(download):
    root, scene = download
    right = get_source("tartanair")(root, **tartanair_options(scene))
    wrong = get_source("tartanair")(root, axes="opencv", **tartanair_options(scene))  # NED read as OpenCV
    assert not self_check(read_all(right, right.sequences()[0]), scene).flagged()
    assert self_check(read_all(wrong, wrong.sequences()[0]), scene).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "fixtureenv" / "Easy" / "P000" / "image_left").mkdir(parents=True)  # no pose_left.txt
    with pytest.raises(SourceLayoutError, match=r"expected <env>/<env>/Easy\|Hard/P000/pose_left\.txt") as error:
        get_source("tartanair")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_or_short_pose_file(download, tmp_path):
    root, scene = download
    shutil.copytree(root, tmp_path / "copy")
    folder = tmp_path / "copy/fixtureenv/fixtureenv/Easy/P000"
    (folder / "depth_left/000003_left_depth.npy").unlink()
    lines = (folder / "pose_left.txt").read_text().splitlines()
    (folder / "pose_left.txt").write_text("\n".join(lines[:5]) + "\n")  # a truncated pose file: frame 5 has none
    (tmp_path / "copy/otherenv/Hard/P001/pose_left.txt").unlink()  # a trajectory without its pose file: named, not dropped
    source = get_source("tartanair")(tmp_path / "copy", **tartanair_options(scene))
    sequence, unposed = source.sequences()
    assert unposed.name == "otherenv/Hard/P001/left" and unposed.problem.startswith("missing pose file")
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match="000003_left_depth.npy"):
        source.read_frame(sequence, 3)
    with pytest.raises(FrameReadError, match=r"pose_left\.txt has 5 frames"):
        source.read_frame(sequence, 5)


def test_config_options_construct_the_source(download):
    """configs/source/tartanair.yaml's options are the constructor's (a misspelt key is a TypeError, not ignored)."""
    root, _ = download
    assert get_source("tartanair")(root, **config_options("tartanair")).sequences()
    with pytest.raises(TypeError):
        get_source("tartanair")(root, **config_options("tartanair"), no_such_option=1)
