"""Spring source: a fixture in the authors' layout (1-based PNG frames, HDF5 disparity at twice the resolution with NaN
where there is no ground truth, cam_data/intrinsics.txt and extrinsics.txt) written from a scene of known geometry."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("h5py")  # the [data] extra

from source_fixtures_a import check_depth, config_options, known_scene, read_all, self_check, write_spring  # noqa: E402

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source  # noqa: E402
from one4d.data.sources.spring import _load_cameras  # noqa: E402


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("spring")
    scene = known_scene()
    write_spring(root, scene, sequence="0001")
    return root, scene


def test_reads_known_geometry(download):
    root, scene = download
    source = get_source("spring")(root)
    sequences = source.sequences()
    assert [(s.name, s.num_frames, s.split) for s in sequences] == [("train/0001/left", 6, "train")]
    _load_cameras.cache_clear()
    read = read_all(source, sequences[0])
    assert _load_cameras.cache_info().misses == 1  # the per-sequence file is parsed once, not once per frame
    # float32 disparity -> depth within float32 rounding (1e-6 relative); the other three 2x samples differ on
    # purpose, so anything but [::2, ::2] fails. NaN disparity reads as non-finite depth (invalid).
    check_depth(read["depth"], scene.depth, tolerance=1e-5)
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-9)  # cx + 0.5 in the file -> cx
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-9)
    np.testing.assert_array_equal(read["rgb"], scene.rgb)
    assert read["dynamic_mask"] is None


def test_wrong_axes_fail_the_self_check(download):
    root, scene = download
    right, wrong = get_source("spring")(root), get_source("spring")(root, axes="opengl")
    assert not self_check(read_all(right, right.sequences()[0]), scene).flagged()
    assert self_check(read_all(wrong, wrong.sequences()[0]), scene).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "test" / "0001" / "frame_left").mkdir(parents=True)  # the test split alone has no ground truth
    with pytest.raises(SourceLayoutError, match=r"expected train/<sequence>/frame_left/frame_left_0001\.png") as error:
        get_source("spring")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_disparity_file(download, tmp_path):
    root, _ = download
    shutil.copytree(root, tmp_path / "copy")
    (tmp_path / "copy/train/0001/disp1_left/disp1_left_0004.dsp5").unlink()  # 1-based: frame index 3
    source = get_source("spring")(tmp_path / "copy")
    sequence = source.sequences()[0]
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match=r"disp1_left_0004\.dsp5"):
        source.read_frame(sequence, 3)


def test_config_options_construct_the_source(download):
    """configs/source/spring.yaml's options are the constructor's (a misspelt key is a TypeError, not ignored)."""
    root, _ = download
    assert get_source("spring")(root, **config_options("spring")).sequences()
    with pytest.raises(TypeError):
        get_source("spring")(root, **config_options("spring"), no_such_option=1)
