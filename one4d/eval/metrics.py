"""Video depth and camera pose metrics (SPEC section 7), as MonST3R, Geo4D and CUT3R compute them.

Depth (``depth_metrics``): one alignment per sequence over all its frames' valid pixels, valid =
finite and 0 < gt < max_depth; the prediction is resized to the ground truth's resolution first.
Alignments:
- "scale&shift": least absolute deviation (LAD) fit of ``s * pred + t`` to gt, started from
  median scaling. MonST3R's ``align_with_lad2`` runs Adam (lr 1e-4, 1000 steps) from that start,
  which moves ``s`` by at most ~0.1 and ``t`` barely: a partial LAD. We solve the LAD problem
  (bisection on its convex profile in s), so ``gt * 3 + 0.5`` aligns exactly; expect our numbers
  to be equal or better than a run of their script on the same depth maps. Above 2^20 valid
  pixels the fit (not the metric) uses an evenly strided subset.
- "scale": exact LAD scale (a weighted median of gt / pred); "median": median(gt) / median(pred);
  "none": the prediction as it is.
Abs Rel = mean |p - g| / g; delta < 1.25 = mean(max(p / g, g / p) < 1.25), with p clamped at 1e-5
for delta only (as their script does, so negative depths never count as inliers).

Pose (``pose_metrics``): the estimate is Sim(3)-aligned to the ground truth on camera centres
(Umeyama), then ATE = RMSE of centre errors; RPE at 1-frame delta over all pairs (i, i + 1) of the
aligned trajectory: E = (G_i^-1 G_i+1)^-1 (P_i^-1 P_i+1), RPE-T = RMSE |t(E)|, RPE-R = RMSE of
angle(E) in degrees. This is evo's ``ape``/``rpe`` with ``align=True, correct_scale=True`` and the
RMSE statistic, which is what MonST3R's ``eval_metrics`` reports (tests check agreement).

Averages over sequences: depth weighted by valid pixels, pose a plain mean.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from one4d.geometry import invert_pose, rotation_angle_degrees, umeyama_alignment

DEPTH_ALIGNMENTS = ("scale&shift", "scale", "median", "none")
DEPTH_KEYS = ("abs_rel", "delta_1_25")
POSE_KEYS = ("ate", "rpe_trans", "rpe_rot")


def _as_tensor(array, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64)
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.asarray(array, dtype=np.float64))
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def resize_depth(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of (F, h, w) depth to (F, height, width).

    Their scripts use cv2 bicubic; bilinear never overshoots into negative depth at edges.
    """
    if depth.shape[-2:] == (height, width):
        return depth
    return F.interpolate(depth[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


# ----------------------------------------------------------------------------- depth alignment


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Smallest value whose cumulative weight reaches half the total weight."""
    order = torch.argsort(values)
    cumulative = torch.cumsum(weights[order], 0)
    index = torch.searchsorted(cumulative, cumulative[-1] / 2)
    return values[order][index.clamp(max=values.numel() - 1)]


FIT_PIXELS = 1 << 20


def _fit_subset(pred: torch.Tensor, gt: torch.Tensor, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly strided subset of at most ``max_pixels`` pixels: the fit, not the metric, uses it."""
    step = -(-pred.numel() // max_pixels)
    return pred[::step], gt[::step]


def lad_scale(pred: torch.Tensor, gt: torch.Tensor, max_pixels: int = FIT_PIXELS) -> torch.Tensor:
    """argmin_s sum |g - s p|: sum |p| |g / p - s| is minimised by the |p|-weighted median of g / p."""
    pred, gt = _fit_subset(pred, gt, max_pixels)
    usable = pred != 0
    return _weighted_median(gt[usable] / pred[usable], pred[usable].abs())


def lad_scale_shift(
    pred: torch.Tensor, gt: torch.Tensor, iterations: int = 48, max_pixels: int = FIT_PIXELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_(s, t) sum |g - (s p + t)|, started from median scaling.

    For a fixed s the best t is median(g - s p), and f(s) = min_t sum |g - s p - t| is convex, with
    slope -sum p sign(g - s p - t). Bracket the slope's sign change around the median-scaling
    start, then bisect: exact to ~2^-48 of the bracket, with no step size to tune (unlike an Adam
    or IRLS loop). Sequences above ``max_pixels`` valid pixels are fitted on an evenly strided
    subset of that size (Sintel has ~22M per sequence).
    """
    pred, gt = _fit_subset(pred, gt, max_pixels)

    def slope_and_shift(scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = gt - scale * pred
        shift = residual.median()
        return -(pred * torch.sign(residual - shift)).sum(), shift

    start = gt.median() / pred.median()
    width = start.abs().clamp_min(1e-6)
    low, high = start - width, start + width
    for _ in range(60):
        if slope_and_shift(low)[0] <= 0:
            break
        low, width = low - width, 2 * width
    for _ in range(60):
        if slope_and_shift(high)[0] >= 0:
            break
        high, width = high + width, 2 * width
    for _ in range(iterations):
        middle = (low + high) / 2
        slope, _ = slope_and_shift(middle)
        if slope == 0:
            low = high = middle
            break
        low, high = (middle, high) if slope < 0 else (low, middle)
    scale = (low + high) / 2
    return scale, slope_and_shift(scale)[1]


def align_depth(pred: torch.Tensor, gt: torch.Tensor, align: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) mapping valid predicted depths (N,) onto valid gt depths (N,)."""
    one, zero = torch.ones((), dtype=pred.dtype), torch.zeros((), dtype=pred.dtype)
    if align == "scale&shift":
        return lad_scale_shift(pred, gt)
    if align == "scale":
        return lad_scale(pred, gt), zero
    if align == "median":
        return gt.median() / pred.median(), zero
    if align == "none":
        return one, zero
    raise ValueError(f"depth alignment must be one of {DEPTH_ALIGNMENTS}, got {align!r}")


# ----------------------------------------------------------------------------- metrics


def depth_metrics(
    pred, gt, align: str = "scale&shift", max_depth: float | None = 70.0, post_clip_max: float | None = None
) -> dict:
    """Abs Rel and delta < 1.25 of one sequence's depth (F, H, W) against gt (F, H', W').

    The prediction is resized to the gt resolution; one alignment for the whole sequence;
    ``post_clip_max`` clips the aligned prediction (Sintel: 70). Returns ``abs_rel``,
    ``delta_1_25`` (a fraction), ``valid_pixels`` (the weight for averaging), ``scale``, ``shift``.
    """
    if align not in DEPTH_ALIGNMENTS:
        raise ValueError(f"depth alignment must be one of {DEPTH_ALIGNMENTS}, got {align!r}")
    pred, gt = _as_tensor(pred, "predicted depth"), _as_tensor(gt, "ground-truth depth")
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"depth_metrics needs (F, H, W) prediction and ground truth with the same F, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    pred = resize_depth(pred, gt.shape[1], gt.shape[2])
    valid = torch.isfinite(gt) & (gt > 0)
    if max_depth is not None:
        valid &= gt < max_depth
    count = int(valid.sum())
    if count == 0:
        raise ValueError(f"no valid ground-truth depth pixel (0 < gt < {max_depth}) in the sequence")
    p, g = pred[valid], gt[valid]  # (N,), (N,)
    if not torch.isfinite(p).all():
        raise ValueError(f"the predicted depth has {int((~torch.isfinite(p)).sum())} non-finite values on valid pixels")
    scale, shift = align_depth(p, g, align)
    p = scale * p + shift
    if post_clip_max is not None:
        p = p.clamp(max=post_clip_max)
    abs_rel = ((p - g).abs() / g).mean()
    clamped = p.clamp(min=1e-5)
    delta = (torch.maximum(clamped / g, g / clamped) < 1.25).double().mean()
    return {
        "abs_rel": float(abs_rel),
        "delta_1_25": float(delta),
        "valid_pixels": count,
        "scale": float(scale),
        "shift": float(shift),
    }


def align_trajectory(pred_cam_to_world: torch.Tensor, gt_cam_to_world: torch.Tensor) -> torch.Tensor:
    """Sim(3)-align (F, 4, 4) estimated poses to gt on camera centres, as evo's ``align(correct_scale=True)``."""
    scale, rotation, translation = umeyama_alignment(pred_cam_to_world[:, :3, 3], gt_cam_to_world[:, :3, 3])
    aligned = pred_cam_to_world.clone()
    aligned[:, :3, :3] = rotation @ pred_cam_to_world[:, :3, :3]
    aligned[:, :3, 3] = scale * pred_cam_to_world[:, :3, 3] @ rotation.T + translation
    return aligned


def pose_metrics(pred_cam_to_world, gt_cam_to_world) -> dict:
    """ATE, RPE-T (RMSE) and RPE-R (RMSE, degrees) of (F, 4, 4) camera-to-world poses after Sim(3) alignment."""
    pred = _as_tensor(pred_cam_to_world, "predicted camera_to_world")
    gt = _as_tensor(gt_cam_to_world, "ground-truth camera_to_world")
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (4, 4) or pred.shape[0] < 3:
        raise ValueError(
            f"pose_metrics needs two (F>=3, 4, 4) camera_to_world arrays of the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if not (torch.isfinite(pred).all() and torch.isfinite(gt).all()):
        raise ValueError("pose_metrics: the poses hold non-finite values")
    aligned = align_trajectory(pred, gt)
    ate = (aligned[:, :3, 3] - gt[:, :3, 3]).pow(2).sum(-1).mean().sqrt()
    gt_relative = invert_pose(gt[:-1]) @ gt[1:]  # (F-1, 4, 4)
    pred_relative = invert_pose(aligned[:-1]) @ aligned[1:]
    error = invert_pose(gt_relative) @ pred_relative
    rpe_trans = error[:, :3, 3].pow(2).sum(-1).mean().sqrt()
    rpe_rot = rotation_angle_degrees(error[:, :3, :3]).pow(2).mean().sqrt()
    return {"ate": float(ate), "rpe_trans": float(rpe_trans), "rpe_rot": float(rpe_rot)}


# ----------------------------------------------------------------------------- averages


def average_depth(per_sequence: list[dict]) -> dict:
    """Valid-pixel-weighted mean of per-sequence depth metrics (their scripts' average)."""
    weights = np.array([m["valid_pixels"] for m in per_sequence], dtype=np.float64)
    if len(per_sequence) == 0 or weights.sum() == 0:
        return {}
    averaged = {key: float(np.dot(weights, [m[key] for m in per_sequence]) / weights.sum()) for key in DEPTH_KEYS}
    return {**averaged, "valid_pixels": int(weights.sum()), "sequences": len(per_sequence)}


def average_pose(per_sequence: list[dict]) -> dict:
    """Plain mean of per-sequence pose metrics over sequences."""
    if len(per_sequence) == 0:
        return {}
    averaged = {key: float(np.mean([m[key] for m in per_sequence])) for key in POSE_KEYS}
    return {**averaged, "sequences": len(per_sequence)}
