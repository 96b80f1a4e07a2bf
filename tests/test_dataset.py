"""The training dataset: sample contract, geometry after crop/resize, determinism with workers, mixing, bad clips."""

import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from one4d.data.dataset import ClipDataset
from one4d.data.synthetic import write_synthetic_dataset
from one4d.geometry import camera_points_to_pixels, denormalize_pointmaps, pixel_grid, transform_points


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """50 synthetic clips of 13 frames at 32x48."""
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(root, 50, num_frames=13, height=32, width=48)
    return root


def test_sample_contract(root):
    dataset = ClipDataset(root, num_frames=5, height=32, width=32, frame_stride=2)
    assert len(dataset) == 50
    sample = dataset[3]
    assert sample["rgb"].shape == sample["xyz"].shape == (3, 5, 32, 32)
    assert -1 <= sample["rgb"].min() and sample["rgb"].max() <= 1 and sample["xyz"].abs().max() <= 1
    assert sample["xyz"].abs().max() > 0.95  # isotropic: the widest axis spans the range
    assert sample["depth"].shape == sample["valid"].shape == (5, 32, 32)
    assert sample["intrinsics"].shape == (5, 3, 3) and sample["world_to_camera"].shape == (5, 4, 4)
    torch.testing.assert_close(sample["world_to_camera"][0], torch.eye(4), atol=1e-6, rtol=0)
    assert sample["observed"].dtype == torch.bool and sample["observed"][0]
    assert sample["task"] in ("single", "sparse", "full") and sample["caption"] and sample["clip"] == "synthetic_00003"
    assert torch.equal(sample["frames"][1:] - sample["frames"][:-1], torch.full((4,), 2))


@pytest.mark.parametrize("height, width, crop", [(32, 32, "center"), (48, 64, "random"), (16, 16, "random")])
def test_xyz_reprojects_to_depth_and_pixels_after_crop_and_resize(root, height, width, crop):
    """Denormalised XYZ are in the sampled first camera; projecting them gives depth and the pixel grid."""
    dataset = ClipDataset(root, num_frames=5, height=height, width=width, frame_stride=2, crop=crop, seed=1)
    for index in (0, 7, 21):
        sample = dataset[index]
        points = denormalize_pointmaps(sample["xyz"].permute(1, 2, 3, 0), sample["norm_centre"], sample["norm_scale"])
        in_camera = transform_points(points, sample["world_to_camera"])  # (F, H, W, 3)
        valid = sample["valid"] & (sample["xyz"].abs().amax(0) < 1)  # clamped points are not invertible
        assert valid.float().mean() > 0.8
        torch.testing.assert_close(in_camera[..., 2][valid], sample["depth"][valid], rtol=3e-3, atol=3e-3)
        pixels = camera_points_to_pixels(in_camera, sample["intrinsics"])
        grid = pixel_grid(height, width)[..., :2].expand_as(pixels)
        # Nearest resampling moves a pixel by at most half a source pixel (the scale is at most 1.5 here).
        assert (pixels - grid).abs()[valid].max() < 0.8


def collect(dataset, workers):
    loader = DataLoader(dataset, batch_size=5, num_workers=workers, shuffle=False)
    return [(batch["rgb"], batch["xyz"], batch["observed"], batch["frames"], batch["clip"]) for batch in loader]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert all(torch.equal(x, y) for x, y in zip(a[:4], b[:4])) and a[4] == b[4]


def test_fifty_clips_with_two_workers_are_deterministic_given_a_seed(root):
    with_workers = collect(ClipDataset(root, num_frames=5, height=16, width=16, frame_stride=2, seed=3), 2)
    assert sum(len(batch[4]) for batch in with_workers) == 50
    # A fresh dataset with the same seed, read in the main process, gives identical batches.
    assert_same_batches(with_workers, collect(ClipDataset(root, 5, 16, 16, frame_stride=2, seed=3), 0))
    other_seed = ClipDataset(root, 5, 16, 16, frame_stride=2, seed=4)
    next_epoch = ClipDataset(root, 5, 16, 16, frame_stride=2, seed=3)
    next_epoch.set_epoch(1)
    for changed in (other_seed, next_epoch):
        draws = [(changed[i]["frames"][0], changed[i]["task"]) for i in range(8)]
        reference = [(batch[3][i][0], None) for batch in with_workers[:2] for i in range(4)]
        assert [d[0] for d in draws] != [r[0] for r in reference]  # other start frames


def test_weighted_mixing_of_roots(root, tmp_path):
    other = tmp_path / "other"
    write_synthetic_dataset(other, 3, num_frames=5, height=16, width=16, seed=100)
    dataset = ClipDataset([root, other], num_frames=5, height=16, width=16, weights=[1, 3], length=60, seed=0)
    names = Counter(dataset[index]["clip"] >= "synthetic_00100" for index in range(len(dataset)))
    assert 0.58 < names[True] / 60 < 0.92  # expected 0.75 (3 standard deviations)
    only_first = ClipDataset([root, other], num_frames=5, height=16, width=16, weights=[1, 0], length=10)
    assert all(only_first[index]["clip"] < "synthetic_00100" for index in range(10))


def test_rendering_in_two_processes_writes_the_same_bytes(tmp_path):
    """make tiny-model renders its clips in one process per thread; the files must not depend on it."""
    serial = write_synthetic_dataset(tmp_path / "one", 3, num_frames=5, height=16, width=16, seed=7, rgb_format="png")
    parallel = write_synthetic_dataset(tmp_path / "two", 3, num_frames=5, height=16, width=16, seed=7, rgb_format="png",
                                       workers=2)
    assert [folder.name for folder in parallel] == [folder.name for folder in serial]  # in seed order
    for one, two in zip(serial, parallel):
        files = sorted(path.relative_to(one) for path in one.rglob("*") if path.is_file())
        assert files and files == sorted(path.relative_to(two) for path in two.rglob("*") if path.is_file())
        assert all((one / name).read_bytes() == (two / name).read_bytes() for name in files), one.name
    assert not list((tmp_path / "two").glob("*partial*"))
    with pytest.raises(ValueError, match="workers must be at least 1"):
        write_synthetic_dataset(tmp_path / "bad", 1, workers=0)


def test_bad_clips_are_skipped_counted_and_logged_once(tmp_path, caplog):
    root = tmp_path / "mixed"
    folders = write_synthetic_dataset(root, 8, num_frames=9, height=16, width=16)
    (folders[1] / "depth.npz").unlink()  # missing file
    (folders[2] / "rgb.mp4").write_bytes(b"")  # zero-size video
    with np.load(folders[3] / "pointmaps.npz") as archive:
        pointmaps = archive["pointmaps"].copy()
    pointmaps[0, 0, 0] = np.nan
    np.savez(folders[3] / "pointmaps.npz", pointmaps=pointmaps)  # NaN pointmaps
    meta = json.loads((folders[4] / "meta.json").read_text())
    meta["num_frames"] = 3
    (folders[4] / "meta.json").write_text(json.dumps(meta))  # fewer frames than a sample needs
    (root / "not_a_clip").mkdir()  # no meta.json

    with caplog.at_level(logging.WARNING, logger="one4d.data.dataset"):
        dataset = ClipDataset(root, num_frames=9, height=16, width=16)
        assert set(dataset.bad_clips) == {str(folders[4]), str(root / "not_a_clip")}  # found at construction
        assert len(dataset) == 7
        for _ in range(2):
            samples = [dataset[index] for index in range(len(dataset))]
    assert len(dataset.bad_clips) == 5
    assert sum(sample["skipped"] for sample in samples) == 3  # known-bad clips are replaced at once
    assert all(sample["clip"] not in {f.name for f in folders[1:5]} for sample in samples)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 5 and any("missing depth.npz" in w for w in warnings) and any("NaN" in w for w in warnings)


def test_configuration_errors_at_construction(tmp_path, root):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no clip folder"):
        ClipDataset(tmp_path / "empty", 5, 16, 16)
    with pytest.raises(ValueError, match="does not exist"):
        ClipDataset(tmp_path / "missing", 5, 16, 16)
    with pytest.raises(ValueError, match="multiples of 16"):
        ClipDataset(root, 5, 30, 16)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        ClipDataset(root, 6, 16, 16)
    with pytest.raises(ValueError, match="none of its"):
        ClipDataset(root, 17, 16, 16)  # every clip is too short for 17 frames
    with pytest.raises(ValueError, match="weights"):
        ClipDataset([root], 5, 16, 16, weights=[1, 1])
