"""Depth and pose metrics: identities, alignment invariances and agreement with the evo package."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from evo.core import metrics as evo_metrics
from evo.core import sync
from evo.core.trajectory import PoseTrajectory3D

from one4d.eval import depth_metrics, pose_metrics
from one4d.eval.metrics import average_depth, average_pose, lad_scale, lad_scale_shift
from one4d.eval.protocols import PROTOCOLS
from one4d.geometry import associate_timestamps, make_pose, quaternion_to_rotation, read_tum_trajectory

TUM_FR1_XYZ = Path("/work/shared/data/tum_fr1_xyz")


def random_rotations(count: int, generator: torch.Generator, angle_scale: float = 1.0) -> torch.Tensor:
    quaternions = torch.randn(count, 4, generator=generator, dtype=torch.float64)
    quaternions[:, 3] += 1.0 / angle_scale
    return quaternion_to_rotation(quaternions)


def random_trajectory(count: int, seed: int) -> torch.Tensor:
    """A smooth-ish random camera_to_world trajectory (F, 4, 4)."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.cumsum(torch.randn(count, 3, generator=generator, dtype=torch.float64) * 0.1, 0)
    return make_pose(random_rotations(count, generator), positions)


def perturbed_similar(gt: torch.Tensor, seed: int) -> torch.Tensor:
    """gt with rotation/translation noise, then moved by a random similarity (what alignment must undo)."""
    generator = torch.Generator().manual_seed(seed)
    noisy = gt @ make_pose(random_rotations(len(gt), generator, angle_scale=0.05),
                           torch.randn(len(gt), 3, generator=generator, dtype=torch.float64) * 0.02)
    rotation = random_rotations(1, generator)[0]
    scale, translation = 2.7, torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64)
    moved = noisy.clone()
    moved[:, :3, :3] = rotation @ noisy[:, :3, :3]
    moved[:, :3, 3] = scale * noisy[:, :3, 3] @ rotation.T + translation
    return moved


def evo_reference(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    """ATE / RPE exactly as MonST3R's eval_metrics calls evo (align, correct_scale, delta 1 frame, all pairs, RMSE)."""
    stamps = np.arange(len(gt), dtype=np.float64)
    reference = PoseTrajectory3D(poses_se3=list(gt.numpy()), timestamps=stamps)
    estimate = PoseTrajectory3D(poses_se3=list(pred.numpy()), timestamps=stamps)
    reference, estimate = sync.associate_trajectories(reference, estimate)
    estimate.align(reference, correct_scale=True)
    out = {}
    ape = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    ape.process_data((reference, estimate))
    out["ate"] = ape.get_statistic(evo_metrics.StatisticsType.rmse)
    for key, relation in (("rpe_trans", evo_metrics.PoseRelation.translation_part),
                          ("rpe_rot", evo_metrics.PoseRelation.rotation_angle_deg)):
        rpe = evo_metrics.RPE(relation, delta=1, delta_unit=evo_metrics.Unit.frames, all_pairs=True)
        rpe.process_data((copy.deepcopy(reference), copy.deepcopy(estimate)))
        out[key] = rpe.get_statistic(evo_metrics.StatisticsType.rmse)
    return out


# ----------------------------------------------------------------------------- depth


def fake_depth(seed: int = 0, shape=(4, 24, 32)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 1.0 + 9.0 * torch.rand(*shape, generator=generator, dtype=torch.float64)


def test_depth_of_ground_truth_is_perfect_for_every_protocol_and_alignment():
    gt = fake_depth()
    for protocol, row in PROTOCOLS.items():
        for align in row.solvers:
            result = depth_metrics(gt, gt, align=align, protocol=protocol)
            # the peers read the prediction as float32: their Adam then wanders by its step size around the optimum
            assert result["abs_rel"] == pytest.approx(0.0, abs=1e-9 if protocol == "exact" else 1e-4), (protocol, align)
            assert result["delta_1_25"] == 1.0
            assert result["valid_pixels"] == gt.numel() and result["protocol"] == protocol


def test_exact_keeps_its_numbers_and_the_subset_is_an_option():
    """protocol="exact" is the exact LAD solver of before (float64, bilinear resize); ``fit_pixels`` restores the
    strided subset it used above 2^20 pixels, which is off by default (the peers fit every pixel)."""
    generator = torch.Generator().manual_seed(3)
    gt = 1 + 9 * torch.rand(2, 12, 16, generator=generator, dtype=torch.float64)
    pred = 0.3 * gt + 0.2 + 0.05 * torch.randn(gt.shape, generator=generator, dtype=torch.float64)
    result = depth_metrics(pred, gt, protocol="exact")
    scale, shift = lad_scale_shift(pred.reshape(-1), gt.reshape(-1), max_pixels=None)
    assert result["scale"] == float(scale) and result["shift"] == float(shift)
    subset = depth_metrics(pred, gt, protocol="exact", fit_pixels=100)
    scale, shift = lad_scale_shift(pred.reshape(-1), gt.reshape(-1), max_pixels=100)
    assert subset["scale"] == float(scale) and subset["scale"] != result["scale"]


def test_scale_and_shift_undoes_an_affine_prediction_and_none_does_not():
    gt = fake_depth()
    pred = gt * 3 + 0.5
    aligned = depth_metrics(pred, gt, align="scale&shift", protocol="exact")
    assert aligned["abs_rel"] < 1e-6 and aligned["delta_1_25"] == 1.0
    assert aligned["scale"] == pytest.approx(1 / 3, rel=1e-6)
    raw = depth_metrics(pred, gt, align="none", protocol="exact")
    assert raw["abs_rel"] > 1.0 and raw["delta_1_25"] == 0.0
    # median scaling removes the scale but not the shift
    assert depth_metrics(gt * 3, gt, align="median", protocol="exact")["abs_rel"] < 1e-12
    assert depth_metrics(pred, gt, align="median", protocol="exact")["abs_rel"] > 1e-3


def test_lad_fit_is_finite_when_most_predictions_are_invalid_zeros():
    """Post-optimisation writes 0 for points behind their camera; with over half of them the median-scaling start
    was inf and the fit NaN (a garbage pointmap scored NaN in the demo). The fit stays finite and optimal."""
    generator = torch.Generator().manual_seed(2)
    gt = 1 + 5 * torch.rand(400, generator=generator, dtype=torch.float64)
    pred = 0.5 * gt + 0.1
    pred[:250] = 0
    scale, shift = lad_scale_shift(pred, gt)
    assert torch.isfinite(scale) and torch.isfinite(shift)
    objective = lambda s, t: float((gt - s * pred - t).abs().sum())  # noqa: E731
    best = objective(scale, shift)
    for ds, dt in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        assert objective(scale + ds, shift + dt) >= best - 1e-9
    assert math.isfinite(depth_metrics(pred.reshape(1, 20, 20), gt.reshape(1, 20, 20), protocol="exact")["abs_rel"])


def test_lad_fits_are_robust_to_outliers_and_optimal():
    generator = torch.Generator().manual_seed(1)
    gt = 1 + 5 * torch.rand(5000, generator=generator, dtype=torch.float64)
    pred = 0.5 * gt - 0.2
    pred[:400] += 3 * torch.rand(400, generator=generator, dtype=torch.float64)  # 8% outliers
    scale, shift = lad_scale_shift(pred, gt)
    assert float(scale) == pytest.approx(2.0, rel=1e-3) and float(shift) == pytest.approx(0.4, abs=1e-2)
    objective = lambda s, t: float((gt - s * pred - t).abs().sum())  # noqa: E731
    best = objective(scale, shift)
    for ds, dt in ((1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3)):
        assert objective(scale + ds, shift + dt) >= best - 1e-9
    s = lad_scale(pred, gt)
    single = lambda v: float((gt - v * pred).abs().sum())  # noqa: E731
    assert single(s) <= min(single(s * 1.001), single(s * 0.999))


def test_depth_mask_clip_and_resize():
    gt = fake_depth(shape=(2, 16, 16))
    gt[0, 0, :4] = 0.0  # invalid
    gt[1, 0, :4] = 100.0  # beyond max_depth
    pred = gt.clone()
    pred[0, 0, :4] = 1e6  # would ruin the metric if not masked
    result = depth_metrics(pred, gt, align="none", max_depth=70.0, protocol="exact")
    assert result["valid_pixels"] == gt.numel() - 8 and result["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    # post-clip: a prediction far beyond 70 is clipped to 70 before the error is measured
    far = torch.full((1, 4, 4), 60.0, dtype=torch.float64)
    clipped = depth_metrics(far * 10, far, align="none", post_clip_max=70.0, protocol="exact")
    assert clipped["abs_rel"] == pytest.approx(10 / 60)
    # a half-resolution prediction of a constant-per-frame depth is resized and still exact
    flat = torch.ones(2, 16, 16, dtype=torch.float64) * torch.tensor([2.0, 5.0], dtype=torch.float64)[:, None, None]
    assert depth_metrics(flat[:, ::2, ::2], flat, align="none", protocol="exact")["abs_rel"] < 1e-12


def test_depth_bad_input_says_what_is_wrong():
    gt = fake_depth()
    with pytest.raises(ValueError, match="same F"):
        depth_metrics(gt[:2], gt)
    with pytest.raises(ValueError, match="no alignment 'lstsq' in protocol 'exact'"):
        depth_metrics(gt, gt, align="lstsq", protocol="exact")
    with pytest.raises(ValueError, match="non-finite"):
        bad = gt.clone()
        bad[0, 0, 0] = float("nan")
        depth_metrics(bad, gt)
    with pytest.raises(ValueError, match="no valid"):
        depth_metrics(gt, torch.zeros_like(gt))


def test_depth_accepts_numpy_float32():
    gt = fake_depth().numpy().astype(np.float32)
    assert depth_metrics(gt * 2, gt, align="scale", protocol="exact")["abs_rel"] < 1e-6


def test_averages_weight_depth_by_pixels_and_pose_plainly():
    depth = average_depth([{"abs_rel": 0.1, "delta_1_25": 0.9, "valid_pixels": 300},
                           {"abs_rel": 0.5, "delta_1_25": 0.5, "valid_pixels": 100}])
    assert depth["abs_rel"] == pytest.approx(0.2) and depth["delta_1_25"] == pytest.approx(0.8)
    pose = average_pose([{"ate": 1.0, "rpe_trans": 0.1, "rpe_rot": 2.0}, {"ate": 3.0, "rpe_trans": 0.3, "rpe_rot": 4.0}])
    assert pose["ate"] == pytest.approx(2.0) and pose["sequences"] == 2


# ----------------------------------------------------------------------------- pose


def test_pose_of_ground_truth_and_of_a_similar_copy_is_zero():
    gt = random_trajectory(30, seed=0)
    result = pose_metrics(gt, gt)
    assert result["ate"] < 1e-12 and result["rpe_trans"] < 1e-12 and result["rpe_rot"] < 1e-5
    moved = gt.clone()
    moved[:, :3, 3] = 4.0 * gt[:, :3, 3] + 2.0  # a similarity of the ground truth
    result = pose_metrics(moved, gt)
    assert result["ate"] < 1e-10 and result["rpe_trans"] < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pose_agrees_with_evo_on_noisy_similar_trajectories(seed):
    gt = random_trajectory(40, seed=seed)
    pred = perturbed_similar(gt, seed=100 + seed)
    ours, theirs = pose_metrics(pred, gt), evo_reference(pred, gt)
    for key in ("ate", "rpe_trans", "rpe_rot"):
        assert theirs[key] > 1e-4  # the noise is real, so agreement is not 0 == 0
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key


def test_pose_agrees_with_evo_on_real_tum_trajectories():
    stamps_gt, gt = read_tum_trajectory(TUM_FR1_XYZ / "groundtruth.txt")
    stamps_est, est = read_tum_trajectory(TUM_FR1_XYZ / "rgbdslam_estimate.txt")
    index_est, index_gt = associate_timestamps(stamps_est, stamps_gt, 0.02)
    assert len(index_est) > 100
    pred, ref = est[index_est][::3][:90], gt[index_gt][::3][:90]
    ours, theirs = pose_metrics(pred, ref), evo_reference(pred, ref)
    for key in ("ate", "rpe_trans", "rpe_rot"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key
    assert 0.001 < ours["ate"] < 0.1  # RGBD-SLAM on fr1/xyz is accurate to about a centimetre


def test_pose_bad_input_says_what_is_wrong():
    gt = random_trajectory(5, seed=0)
    with pytest.raises(ValueError, match="same shape"):
        pose_metrics(gt[:4], gt)
    with pytest.raises(ValueError, match="F>=3"):
        pose_metrics(gt[:2], gt[:2])
    bad = gt.clone()
    bad[0, 0, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        pose_metrics(bad, gt)
