"""SpatialVID source: a clip in the authors' layout (mp4 with only every 2nd frame annotated, per-clip zip of HALF
disparity EXRs read in place, poses.npy w2c with xyzw quaternions, normalised intrinsics.npy, CSR dyn_masks.npz,
caption.json) written from a scene of known geometry, read back exactly."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from source_fixtures_a import read_all, self_check
from source_fixtures_b import SPATIALVID_CLIP, make_scene, write_spatialvid

from one4d.data.sources import FrameReadError, SourceLayoutError, get_source

pytest.importorskip("OpenEXR")


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("spatialvid")
    scene = make_scene(seed=4, frames=6, height=32, width=48)
    write_spatialvid(root, scene)
    return root, scene


def test_reads_known_geometry(download, monkeypatch):
    import one4d.data.sources.spatialvid as spatialvid

    root, scene = download
    source = get_source("spatialvid")(root)
    sequences = source.sequences()
    opened, open_zip = [], zipfile.ZipFile
    monkeypatch.setattr(spatialvid.zipfile, "ZipFile",  # np.load opens the .npz files through ZipFile too
                        lambda file, *args, **kwargs: opened.append(str(getattr(file, "name", file))) or open_zip(file, *args, **kwargs))
    # 10 fps video annotated every 2nd frame: the sequence is the 6 annotated frames at 5 fps.
    assert [(s.name, s.num_frames, s.fps) for s in sequences] == [(SPATIALVID_CLIP, 6, 5.0)]
    read = read_all(source, sequences[0])
    # the depth zip and dyn_masks.npz opened once for the sequence, not once per frame
    assert sorted(Path(file).suffix for file in opened) == [".npz", ".zip"]
    # Depth = 1 / float16 disparity: relative error at most float16's half ulp, 2^-11 = 4.9e-4. Top row: no depth.
    assert (read["depth"][:, 0] == 0).all()
    np.testing.assert_allclose(read["depth"][:, 1:], scene.depth[:, 1:], rtol=2.0**-11, atol=0)
    # Cameras: poses.npy and intrinsics.npy are float32 (t up to ~30 m here: ~2e-6).
    np.testing.assert_allclose(read["intrinsics"], scene.intrinsics, atol=1e-4)
    np.testing.assert_allclose(read["world_to_camera"], scene.world_to_camera, atol=1e-5)
    # RGB: the even video frames (odd ones are inverted pictures), downsized 2x to the depth size; H.264 4:4:4 crf 0
    # is lossless up to RGB <-> YUV rounding.
    assert np.abs(read["rgb"].astype(int) - scene.rgb).max() <= 2
    assert (read["dynamic_mask"] == scene.dynamic_mask).all() and scene.dynamic_mask.any()
    # Frames read backwards reopen the video and still give the right picture.
    again = source.read_frame(sequences[0], 1).rgb
    assert np.abs(again.astype(int) - scene.rgb[1]).max() <= 2
    assert source.caption(sequences[0], 0, 6) == "A handheld camera walks through a bright room."


def test_wrong_pose_convention_fails_the_self_check(download):
    root, _ = download
    sequence = get_source("spatialvid")(root).sequences()[0]
    right = self_check(read_all(get_source("spatialvid")(root), sequence))
    assert right.error < 0.002 and not right.flagged()  # float16 disparity: ~5e-4
    assert self_check(read_all(get_source("spatialvid")(root, pose="camera_to_world"), sequence)).flagged()


def test_other_layout_is_one_line(tmp_path):
    (tmp_path / "videos" / "group_0001").mkdir(parents=True)  # videos only, no annotations
    with pytest.raises(SourceLayoutError, match="expected annotations/group_XXXX/<clip>/poses.npy") as error:
        get_source("spatialvid")(tmp_path).sequences()
    assert "\n" not in str(error.value)


def test_missing_depth_in_the_zip(download, tmp_path):
    root, _ = download
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    archive = copy / "depths" / f"{SPATIALVID_CLIP}.zip"
    with zipfile.ZipFile(archive) as old:
        kept = {name: old.read(name) for name in old.namelist() if name != "00003.exr"}
    with zipfile.ZipFile(archive, "w") as new:
        for name, data in kept.items():
            new.writestr(name, data)
    source = get_source("spatialvid")(copy)
    sequence = source.sequences()[0]
    source.read_frame(sequence, 2)
    with pytest.raises(FrameReadError, match=r"\.zip has no 00003\.exr"):
        source.read_frame(sequence, 3)
    archive.unlink()
    with pytest.raises(FrameReadError, match="cannot open depth archive"):
        get_source("spatialvid")(copy).read_frame(sequence, 0)
