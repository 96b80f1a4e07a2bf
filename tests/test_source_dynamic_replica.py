"""Dynamic Replica source: a fixture in the authors' layout (frame_annotations_<split>.jgz with PyTorch3D cameras in
NDC, float16-in-uint16 depth PNGs, foreground masks, both stereo cameras) written from a scene of known geometry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from source_fixtures_a import check_depth, config_options, known_scene, read_all, self_check, write_dynamic_replica

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source
from one4d.data.sources.dynamic_replica import _load_split


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamic_replica")
    scene = known_scene()
    write_dynamic_replica(root, scene, split="train", sequence="fixture-3_obj")
    write_dynamic_replica(root, scene, split="valid", sequence="fixture-9_obj")
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("dynamic_replica")(root, splits=["train"])
    sequences = source.sequences()
    assert [(s.name, s.num_frames, s.split) for s in sequences] == [("train/fixture-3_obj/left", 6, "train")]
    _load_split.cache_clear()
    read = read_all(source, sequences[0])
    assert _load_split.cache_info().misses == 1  # the per-sequence file is parsed once, not once per frame
    # float16 depth: relative rounding 2^-11 (0.05 %), so <= 4 mm at the scene's 8 m; 0 stays invalid.
    check_depth(read["depth"], scene.depth, tolerance=np.abs(scene.depth).max() * 2.0**-11)
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-9)  # NDC in JSON float64
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-9)
    np.testing.assert_array_equal(read["rgb"], scene.rgb)
    np.testing.assert_array_equal(read["dynamic_mask"], scene.dynamic_mask)


def test_cameras_and_splits(download):
    root, _ = download
    names = [s.name for s in get_source("dynamic_replica")(root, splits=["train", "valid"], cameras=["left", "right"]).sequences()]
    assert names == ["train/fixture-3_obj/left", "train/fixture-3_obj/right", "valid/fixture-9_obj/left", "valid/fixture-9_obj/right"]
    names = [s.name for s in get_source("dynamic_replica")(root, splits=["train", "valid"], exclude=["fixture-3_obj"]).sequences()]
    assert names == ["valid/fixture-9_obj/left"]


def test_wrong_axes_fail_the_self_check(download):
    root, scene = download
    right = get_source("dynamic_replica")(root, splits=["train"])
    wrong = get_source("dynamic_replica")(root, splits=["train"], axes="opencv")  # no PyTorch3D axis flip (as in MonST3R's loader)
    assert not self_check(read_all(right, right.sequences()[0]), scene).flagged()
    assert self_check(read_all(wrong, wrong.sequences()[0]), scene).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "train" / "fixture-3_obj").mkdir(parents=True)
    with pytest.raises(SourceLayoutError, match=r"expected train/frame_annotations_train\.jgz") as error:
        get_source("dynamic_replica")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_file(download, tmp_path):
    root, _ = download
    shutil.copytree(root, tmp_path / "copy")
    (tmp_path / "copy/train/fixture-3_obj/left/depths/fixture-3_obj_source_left_0003.geometric.png").unlink()
    source = get_source("dynamic_replica")(tmp_path / "copy", splits=["train"])
    sequence = source.sequences()[0]
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match=r"fixture-3_obj_source_left_0003\.geometric\.png"):
        source.read_frame(sequence, 3)


def test_config_options_construct_the_source(download):
    """configs/source/dynamic_replica.yaml's options are the constructor's (a misspelt key is a TypeError, not ignored)."""
    root, _ = download
    assert get_source("dynamic_replica")(root, **config_options("dynamic_replica")).sequences()
    with pytest.raises(TypeError):
        get_source("dynamic_replica")(root, **config_options("dynamic_replica"), no_such_option=1)


def test_ndc_norm_image_bounds_intrinsics():
    """The other NDC layout scales each axis by its own half size (dynamic_stereo lines 86-102), then the half pixel."""
    from one4d.data.sources.dynamic_replica import ndc_to_pixel_intrinsics

    K = ndc_to_pixel_intrinsics(np.array([2.0, 3.0]), np.array([0.1, -0.2]), "ndc_norm_image_bounds", height=20, width=40,
                                half_pixel_shift=True)
    np.testing.assert_allclose(K, [[40.0, 0.0, 20 - 2.0 - 0.5], [0.0, 30.0, 10 + 2.0 - 0.5], [0.0, 0.0, 1.0]])
