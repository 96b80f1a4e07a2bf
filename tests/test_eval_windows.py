"""Evaluation windows start on observed frames (issue 13, item 5), as training always observes a clip's first frame."""

import math

import numpy as np
import pytest
import torch

from one4d.conditioning import observed_frames
from one4d.eval.runner import sparse_frame_indices
from one4d.pipeline.evaluation import observed_windows
from one4d.postopt import recover_cameras_windowed, split_windows
from one4d.postopt.synthetic import render_box_clip
from test_postopt import errors

TABLE5 = (0.50, 0.25, 0.10, 0.05, 0.04, 0.03)


def test_training_draws_always_observe_the_first_frame():
    generator = torch.Generator().manual_seed(0)
    assert all(observed_frames(task, 81, generator=generator)[0] == 0 for task in ("single", "sparse", "full") for _ in range(50))


def test_bonn_at_sparsity_003_starts_its_second_window_on_an_observed_frame():
    observed = list(sparse_frame_indices(110, 0.03))
    assert observed == [0, 55, 109]
    assert split_windows(110, 81, 16) == [(0, 81), (65, 110)]  # fixed windows: the second sees only frame 109
    assert observed_windows(110, observed, 81, 16) == [(0, 81), (55, 110)]


@pytest.mark.parametrize("total", [82, 90, 110, 150, 200, 300])
@pytest.mark.parametrize("ratio", [None, *TABLE5])
@pytest.mark.parametrize("window, overlap", [(81, 16), (33, 8), (17, 4)])
def test_every_window_starts_on_an_observed_frame_and_the_windows_cover_and_overlap(total, ratio, window, overlap):
    observed = list(range(total)) if ratio is None else [int(i) for i in sparse_frame_indices(total, ratio)]
    if max(np.diff(observed)) > window - overlap:  # no observed frame to start the next window on: said in one line
        with pytest.raises(ValueError, match=f"more than num_frames - overlap = {window - overlap} apart"):
            observed_windows(total, observed, window, overlap)
        return
    windows = observed_windows(total, observed, window, overlap)
    assert windows[0][0] == 0 and windows[-1][1] == total
    assert all(start in observed for start, _ in windows)
    assert all(0 < end - start <= window for start, end in windows)
    for (start, end), (next_start, next_end) in zip(windows, windows[1:]):
        assert start < next_start and end < next_end and end - next_start >= overlap  # ordered, each adds frames
        assert next_end - next_start > end - next_start  # more frames than it shares (the Sim(3) merge needs it)
    if ratio is None:  # every frame observed: the fixed windows
        assert windows == split_windows(total, window, overlap) or total <= window


def test_observed_frames_too_far_apart_are_one_line():
    with pytest.raises(ValueError, match=r"no observed frame in 1\.\.65 .* more than num_frames - overlap = 65 apart") as error:
        observed_windows(110, [0, 109], 81, 16)
    assert "\n" not in str(error.value)


def test_windows_with_different_overlaps_merge_into_one_trajectory():
    """As tests/test_postopt.py's merge, with one overlap per pair of windows (6 then 4 shared frames)."""
    clip = render_box_clip(num_frames=21, height=48, width=64, seed=4)
    pointmaps, windows = clip["pointmaps"], []
    generator = torch.Generator().manual_seed(0)
    for index, (start, end) in enumerate([(0, 9), (3, 14), (10, 21)]):
        angle = 0.3 * index
        rotation = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
        shift = torch.zeros(3, dtype=torch.float64) if index == 0 else torch.randn(3, generator=generator, dtype=torch.float64)
        windows.append((1.0 + 0.5 * index) * pointmaps[start:end] @ rotation.T + shift)
    result = recover_cameras_windowed(windows, overlap=[6, 4])
    found = errors(clip, result)
    assert result.depth.shape[0] == 21 and result.losses["alignment_rms"] < 1e-8
    assert found["rotation_frobenius"] < 1e-8 and found["centre"] < 1e-8 and found["abs_rel"] < 1e-8, found
    with pytest.raises(ValueError, match="2 positive numbers"):
        recover_cameras_windowed(windows, overlap=[6])
