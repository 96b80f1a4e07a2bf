"""PointOdyssey source: a fixture in the authors' layout (JPEG frames, 16-bit PNG depth scaled to 1000 m, anno.npz
with OpenCV world-to-camera) written from a scene of known geometry (tests/source_fixtures_a.py), read back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from source_fixtures_a import check_depth, config_options, known_scene, read_all, self_check, write_pointodyssey

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.pointodyssey import _load_cameras, nearest_rotation


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("pointodyssey")
    scene = known_scene()
    write_pointodyssey(root, scene, split="train", sequence="ani_fixture")
    write_pointodyssey(root, scene, split="val", sequence="ani_val")
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("pointodyssey")(root, splits=["train"])
    sequences = source.sequences()
    assert [(s.name, s.num_frames, s.split) for s in sequences] == [("train/ani_fixture", 6, "train")]  # val not crossed
    _load_cameras.cache_clear()
    read = read_all(source, sequences[0])
    assert _load_cameras.cache_info().misses == 1  # the per-sequence file is parsed once, not once per frame
    # Depth codes are z * 65535 / 1000 truncated: at most one step, 1000 / 65535 m = 1.5 cm, low. Code 65535 is sky -> 0.
    check_depth(read["depth"], scene.depth, tolerance=1000 / 65535 + 1e-6)
    assert (read["depth"][:, 0, :3] == 0).all()
    # anno.npz holds float32 K and RT: equal up to float32 rounding.
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-4)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-5)
    assert np.abs(read["rgb"].astype(float) - scene.rgb).mean() < 6.0  # JPEG quality 95
    assert read["dynamic_mask"] is None


def test_splits_listed_separately(download):
    root, _ = download
    names = [s.name for s in get_source("pointodyssey")(root, splits=["train", "val"]).sequences()]
    assert names == ["train/ani_fixture", "val/ani_val"]


def test_nearest_rotation_repairs_float16_poses():
    """The generator stores RT as float16 (unverified for v1.2): the read rotation is rigid again and within rounding."""
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", [30.0, -50.0, 80.0], degrees=True).as_matrix()
    rounded = rotation.astype(np.float16).astype(np.float64)
    assert np.abs(rounded @ rounded.T - np.eye(3)).max() > 1e-4  # float16 breaks orthonormality
    repaired = nearest_rotation(rounded)
    np.testing.assert_allclose(repaired @ repaired.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(repaired) == pytest.approx(1.0)
    np.testing.assert_allclose(repaired, rotation, atol=1e-3)


def test_wrong_depth_scale_fails_the_self_check(download):
    root, scene = download
    right = get_source("pointodyssey")(root, splits=["train"])
    wrong = get_source("pointodyssey")(root, splits=["train"], depth_max=100.0)  # a scale of 100 m, not 1000 m
    assert not self_check(read_all(right, right.sequences()[0]), scene).flagged()
    assert self_check(read_all(wrong, wrong.sequences()[0]), scene).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "train" / "ani_fixture" / "images").mkdir(parents=True)
    with pytest.raises(SourceLayoutError, match=r"expected train/<sequence>/rgbs/rgb_00000\.jpg") as error:
        get_source("pointodyssey")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_or_annotations(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root / "train", copy / "train")
    (copy / "train/ani_fixture/depths/depth_00003.png").unlink()
    source = get_source("pointodyssey")(copy)
    sequence = source.sequences()[0]
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match="depth_00003.png"):
        source.read_frame(sequence, 3)
    _load_cameras.cache_clear()
    (copy / "train/ani_fixture/anno.npz").rename(copy / "train/ani_fixture/annotations.npz")  # the older name is read too
    source.read_frame(sequence, 2)
    _load_cameras.cache_clear()
    data = (copy / "train/ani_fixture/annotations.npz").read_bytes()
    (copy / "train/ani_fixture/annotations.npz").write_bytes(data[: len(data) // 2])  # a truncated download: BadZipFile
    with pytest.raises(FrameReadError, match=r"ani_fixture/annotations\.npz"):
        source.read_frame(sequence, 2)
    _load_cameras.cache_clear()
    (copy / "train/ani_fixture/annotations.npz").unlink()
    with pytest.raises(FrameReadError, match=r"ani_fixture/anno\.npz"):
        source.read_frame(sequence, 2)


def test_config_options_construct_the_source(download):
    """configs/source/pointodyssey.yaml's options are the constructor's (a misspelt key is a TypeError, not ignored)."""
    root, _ = download
    assert get_source("pointodyssey")(root, **config_options("pointodyssey")).sequences()
    with pytest.raises(TypeError):
        get_source("pointodyssey")(root, **config_options("pointodyssey"), no_such_option=1)
