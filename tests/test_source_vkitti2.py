"""Virtual KITTI 2 source: a fixture in the dataset's own layout (JPEG, centimetre PNG depth, intrinsic/extrinsic
txt with both cameras) written from a scene of known geometry, read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from source_fixtures_a import read_all, self_check
from source_fixtures_b import make_scene, write_vkitti2

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.vkitti2 import _read_table


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("vkitti2")
    scene = make_scene(seed=5, frames=6, height=36, width=64)
    write_vkitti2(root, scene)
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("vkitti2")(root)
    sequences = source.sequences()
    assert [s.name for s in sequences] == ["Scene01/clone/Camera_0"] and sequences[0].num_frames == 6
    _read_table.cache_clear()
    read = read_all(source, sequences[0])
    assert _read_table.cache_info().misses == 2  # intrinsic.txt and extrinsic.txt parsed once, not once per frame
    # Depth: centimetre codes, so |error| <= 0.5 cm; the top two rows are sky (65535) and must read 0.
    assert (read["depth"][:, :2] == 0).all()
    np.testing.assert_allclose(read["depth"][:, 2:], scene.depth[:, 2:], atol=0.005 + 1e-6, rtol=0)
    # Cameras: written with 9 decimals, camera 1's rows (0.53 m to the right) must not be picked up.
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-5)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-8)
    # RGB went through JPEG (quality 95, 4:4:4): close on average, not bitwise.
    assert np.abs(read["rgb"].astype(float) - scene.rgb).mean() < 4.0
    assert read["dynamic_mask"] is None


def test_wrong_pose_convention_fails_the_self_check(download):
    root, _ = download
    sequence = get_source("vkitti2")(root).sequences()[0]
    right = read_all(get_source("vkitti2")(root), sequence)
    wrong = read_all(get_source("vkitti2")(root, extrinsic="camera_to_world"), sequence)
    check = self_check(right)
    assert check.error < 0.01 and not check.flagged()  # centimetre quantisation at a few metres: well under 1 %
    assert self_check(wrong).flagged()


def test_renamed_or_merged_archive_folders(download, tmp_path):
    """vidar's rgb/ depth/ textgt/ names, or all three archives extracted into one folder, read the same."""
    import shutil

    root, scene = download
    renamed, merged = tmp_path / "renamed", tmp_path / "merged"
    for modality in ("rgb", "depth", "textgt"):
        shutil.copytree(root / f"vkitti_2.0.3_{modality}", renamed / modality)
        shutil.copytree(root / f"vkitti_2.0.3_{modality}", merged, dirs_exist_ok=True)
    for layout in (renamed, merged):
        source = get_source("vkitti2")(layout)
        read = read_all(source, source.sequences()[0])
        np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-8)


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "Scene01").mkdir()
    with pytest.raises(SourceLayoutError, match=r"expected vkitti_2\.0\.3_rgb/SceneXX/<variation>/frames/rgb") as error:
        get_source("vkitti2")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_file(download, tmp_path):
    import shutil

    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    missing = copy / "vkitti_2.0.3_depth/Scene01/clone/frames/depth/Camera_0/depth_00003.png"
    missing.unlink()
    source = get_source("vkitti2")(copy)
    sequence = source.sequences()[0]
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match="depth_00003.png"):
        source.read_frame(sequence, 3)
