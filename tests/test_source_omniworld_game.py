"""OmniWorld-Game source: an extracted scene in the authors' layout (non-linear 16-bit depth buffer, per-split camera
json with w,x,y,z quaternions and +0.5 pixel centres, split_info with global indices, masks, captions), written from a
scene of known geometry and read back exactly."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from source_fixtures_a import read_all, self_check
from source_fixtures_b import OMNIWORLD_UID, make_scene, omniworld_codes, relative, write_omniworld

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.omniworld_game import _load_split

OPTIONS = {"far_percentile": None}  # the fixture's depth is exact everywhere: keep every pixel to compare


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniworld")
    scene = make_scene(seed=4, frames=6, height=32, width=48)
    write_omniworld(root, scene)
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("omniworld_game")(root, **OPTIONS)
    sequences = source.sequences()
    assert [(s.name, s.num_frames, s.fps) for s in sequences] == [
        (f"{OMNIWORLD_UID}/split_0", 6, 24.0), (f"{OMNIWORLD_UID}/split_1", 3, 24.0)]
    _load_split.cache_clear()
    read = read_all(source, sequences[0])
    assert _load_split.cache_info().misses == 1  # split_info and the split's camera json parsed once, not per frame
    # Depth: z = d / (1000 - 999 d) / 0.004 has dz/dd = 4 z^2 / d^2, so a code rounded to 1/65535 is off by at
    # most 4 z^2 / d^2 * 0.5 / 65535 (0.06 % at 5 m, growing linearly with z).
    d = omniworld_codes(scene.depth) / 65535
    bound = 4 * scene.depth**2 / d**2 * 0.5 / 65535
    assert (np.abs(read["depth"] - scene.depth) <= bound * 1.01 + 1e-6).all()
    # Intrinsics: the +0.5 pixel-centre shift undone (cx stored as (W-1)/2 + 0.5).
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-9)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-9)
    assert (read["rgb"] == scene.rgb).all()
    assert (read["dynamic_mask"] == scene.dynamic_mask).all()
    # Split 1: its own camera file and world; its cameras relative to its first frame are the scene's.
    second = read_all(source, sequences[1])
    np.testing.assert_allclose(relative(second["world_to_camera"]), relative(scene.world_to_camera[:3]), atol=1e-9)
    assert not np.allclose(second["world_to_camera"], scene.world_to_camera[:3], atol=1e-3)


def test_captions_per_segment(download):
    root, _ = download
    source = get_source("omniworld_game")(root)
    first, second = source.sequences()
    assert source.caption(first, 0, 6) == "a red ball rolls across a tiled floor"
    assert source.caption(second, 0, 3) is None
    assert get_source("omniworld_game")(root, caption_pattern=None).caption(first, 0, 6) is None
    (root / OMNIWORLD_UID / "text" / "split_1_0.txt").write_bytes(b"\xff\xfe broken")  # unreadable text: no caption, no crash
    assert source.caption(second, 0, 3) is None
    (root / OMNIWORLD_UID / "text" / "split_1_0.txt").unlink()


def test_sky_and_far_percentile(download, tmp_path):
    from source_fixtures_a import save_image

    root, scene = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    codes = np.full(scene.depth[0].shape, 65535, dtype=np.uint16)  # sky everywhere, near in one pixel
    codes[0, 0] = 50
    save_image(copy / OMNIWORLD_UID / "depth" / "000010.png", codes)
    source = get_source("omniworld_game")(copy, far_percentile=None)
    assert (source.read_frame(source.sequences()[0], 0).depth == 0).all()
    cut = get_source("omniworld_game")(copy, far_percentile=90).read_frame(source.sequences()[0], 1).depth
    kept = scene.depth[1] <= np.percentile(scene.depth[1], 90) * 1.0001
    assert (cut[~kept] == 0).all() and (cut[kept] > 0).mean() > 0.99


def test_wrong_quaternion_order_fails_the_self_check(download):
    root, _ = download
    right_source = get_source("omniworld_game")(root, **OPTIONS)
    wrong_source = get_source("omniworld_game")(root, quaternion_order="xyzw", **OPTIONS)
    right = self_check(read_all(right_source, right_source.sequences()[0]))
    assert right.error < 0.005 and not right.flagged()
    assert self_check(read_all(wrong_source, wrong_source.sequences()[0])).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "videos" / "OmniWorld-Game" / OMNIWORLD_UID).mkdir(parents=True)  # the archives, not extracted
    with pytest.raises(SourceLayoutError, match="expected <uid>/split_info.json") as error:
        get_source("omniworld_game")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_file(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    (copy / OMNIWORLD_UID / "depth" / "000012.png").unlink()
    source = get_source("omniworld_game")(copy)
    with pytest.raises(FrameReadError, match="000012.png"):
        source.read_frame(source.sequences()[0], 2)


def test_broken_split_info_is_a_skipped_sequence(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root / OMNIWORLD_UID, copy / "0b3caf48b79d")
    shutil.copytree(root / OMNIWORLD_UID, copy / OMNIWORLD_UID)
    (copy / "0b3caf48b79d" / "split_info.json").write_text("{not json")
    sequences = get_source("omniworld_game")(copy).sequences()
    assert [(s.name, s.num_frames) for s in sequences] == [
        ("0b3caf48b79d/split_info.json", 0), (f"{OMNIWORLD_UID}/split_0", 6), (f"{OMNIWORLD_UID}/split_1", 3)]
    assert "cannot read" in sequences[0].problem and "0b3caf48b79d/split_info.json" in sequences[0].problem
    assert sequences[1].problem is None
