"""Clip layouts: the depth-only layout stores no pointmaps and gives bitwise the samples of the full layout."""

import json

import numpy as np
import pytest
import torch

from one4d.data.clip import ClipError, read_clip, write_clip
from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import render_scene
from one4d.geometry import look_at


@pytest.fixture(scope="module")
def scene():
    scene = render_scene(3, num_frames=9, height=32, width=48)
    # Move the world away from frame 0's camera so "frame 0's camera" is not the identity.
    world_to_frame0 = look_at(torch.tensor([1.5, -0.4, 2.0], dtype=torch.float64), torch.tensor([0.0, 0.3, -1.0], dtype=torch.float64))
    scene.world_to_camera = scene.world_to_camera.double() @ world_to_frame0
    scene.depth[:, :3, :5] = 0  # some invalid pixels
    return scene


@pytest.fixture(scope="module")
def folders(tmp_path_factory, scene):
    root = tmp_path_factory.mktemp("layouts")
    written = {}
    for layout in ("full", "depth"):
        written[layout] = write_clip(root / layout / "clip", scene.rgb, None, scene.depth, scene.intrinsics,
                                     scene.world_to_camera, {"caption": "c", "source": "synthetic"}, layout=layout)
    return written


def _bits(tensor):
    """The raw bytes of a tensor (torch.equal treats -0.0 and 0.0 as equal; bits do not)."""
    return tensor.contiguous().numpy().tobytes()


def test_depth_layout_stores_no_pointmaps_and_records_the_layout(folders):
    assert not (folders["depth"] / "pointmaps.npz").exists()
    assert (folders["full"] / "pointmaps.npz").is_file()
    for layout, folder in folders.items():
        assert json.loads((folder / "meta.json").read_text())["layout"] == layout
    full_meta = json.loads((folders["full"] / "meta.json").read_text())
    depth_meta = json.loads((folders["depth"] / "meta.json").read_text())
    assert {k: v for k, v in full_meta.items() if k != "layout"} == {k: v for k, v in depth_meta.items() if k != "layout"}


@pytest.mark.parametrize("frames", [None, [2, 5, 8]])
def test_both_layouts_read_back_bitwise_identical_and_correct(folders, scene, frames):
    full, depth = read_clip(folders["full"], frames), read_clip(folders["depth"], frames)
    for name in ("pointmaps", "depth", "intrinsics", "world_to_camera", "reference_world_to_camera"):
        assert _bits(getattr(full, name)) == _bits(getattr(depth, name)), name
    # The computed pointmaps are the true ones (frame 0's camera) up to float16 storage.
    index = slice(None) if frames is None else frames
    truth = scene.pointmaps[index]  # render_scene's pointmaps are in frame 0's camera: the clip's frame 0
    valid = scene.depth[index] > 0
    torch.testing.assert_close(depth.pointmaps[valid], truth[valid], rtol=2e-3, atol=2e-3)
    assert (depth.pointmaps[~valid] == 0).all()


def test_dataset_samples_are_bitwise_identical(folders):
    # 5 of 9 frames so starts vary, a random crop and a resize: every step of the loader is covered.
    kwargs = dict(num_frames=5, height=32, width=32, crop="random", seed=7)
    full = ClipDataset(folders["full"].parent, **kwargs)
    depth = ClipDataset(folders["depth"].parent, **kwargs)
    starts = set()
    for index in range(4):
        full.set_epoch(index), depth.set_epoch(index)
        a, b = full[index], depth[index]
        starts.add(int(a["frames"][0]))
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == b[key].dtype and _bits(value) == _bits(b[key]), key
            else:
                assert value == b[key], key
    assert len(starts) > 1  # samples starting after frame 0 re-express the pointmaps: covered too


def test_layout_errors(tmp_path, scene):
    args = (scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics, scene.world_to_camera)
    with pytest.raises(ValueError, match="pass pointmaps=None"):
        write_clip(tmp_path / "a", *args, layout="depth")
    with pytest.raises(ValueError, match="layout must be one of full, depth"):
        write_clip(tmp_path / "b", *args, layout="points")
    folder = write_clip(tmp_path / "c", scene.rgb, None, scene.depth, scene.intrinsics, scene.world_to_camera, layout="depth")
    meta = json.loads((folder / "meta.json").read_text())
    meta["layout"] = "sparse"
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ClipError, match="layout 'sparse'"):
        read_clip(folder)


def test_clips_without_a_layout_key_read_as_full(tmp_path, scene):
    folder = write_clip(tmp_path / "old", scene.rgb, scene.pointmaps, scene.depth, scene.intrinsics, scene.world_to_camera)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["layout"]
    (folder / "meta.json").write_text(json.dumps(meta))
    stored = np.load(folder / "pointmaps.npz")["pointmaps"]
    assert np.array_equal(read_clip(folder).pointmaps.numpy(), stored.astype(np.float32))


def test_conversion_writes_either_layout_with_the_same_samples(tmp_path, scene):
    """The cutter (scripts/prepare_data.py layout=...) writes both layouts; the loader cannot tell them apart."""
    from one4d.data.cutter import CutClip, CutSettings, write_cut_clip

    clip = CutClip(rgb=(scene.rgb.numpy() * 255).round().astype(np.uint8), depth=scene.depth.numpy(),
                   intrinsics=scene.intrinsics.double().numpy(), world_to_camera=scene.world_to_camera.numpy(), dynamic_mask=None)
    for layout in ("full", "depth"):
        write_cut_clip(tmp_path / layout / "clip", clip, {"source": "test"}, CutSettings(num_frames=9, height=32, width=48, layout=layout))
    assert not (tmp_path / "depth" / "clip" / "pointmaps.npz").exists()
    full, depth = (ClipDataset(tmp_path / layout, num_frames=5, height=32, width=48, seed=1) for layout in ("full", "depth"))
    a, b = full[0], depth[0]
    assert all(_bits(a[key]) == _bits(b[key]) for key in ("rgb", "xyz", "depth", "valid", "intrinsics", "world_to_camera"))
