"""Video depth and camera pose metrics (paper section 4.3), as MonST3R, Geo4D and CUT3R compute them.

Depth (``depth_metrics``): one alignment per sequence over all its frames' valid pixels, valid =
finite and 0 < gt < max_depth, after resizing the prediction to the ground truth's resolution. How the
prediction is resized, aligned and scored is a ``protocol`` (``one4d.eval.protocols``): "monst3r",
"cut3r" and "geo4d" reproduce those projects' evaluation scripts step by step (so a number can be set
beside theirs), "exact" is this project's exact L1 fit (its own column). Alignments: "scale&shift"
(``s * pred + t``), "scale", "median" (median(gt) / median(pred)), "none"; each protocol offers those its
peer's script offers. Abs Rel = mean |p - g| / g; delta < 1.25 = mean(max(p / g, g / p) < 1.25), with p
clamped at 1e-5 for delta only (as their script does, so negative depths never count as inliers).

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

from one4d.eval.protocols import PROTOCOLS, fit_subset, lad_scale, lad_scale_shift, protocol_solver
from one4d.geometry import invert_pose, rotation_angle_degrees, umeyama_alignment

DEPTH_KEYS = ("abs_rel", "delta_1_25")
POSE_KEYS = ("ate", "rpe_trans", "rpe_rot")


def _as_tensor(array, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64)
    if isinstance(array, np.ndarray):
        return torch.from_numpy(np.asarray(array, dtype=np.float64))
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")


def _depth_tensor(array, name: str, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device`` in ``dtype`` (None: float64 stays float64, anything else float32)."""
    if not isinstance(array, (torch.Tensor, np.ndarray)):
        raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(array).__name__}")
    tensor = torch.as_tensor(array).detach()
    if dtype is None:
        dtype = torch.float64 if tensor.dtype == torch.float64 else torch.float32
    return tensor.to(device, dtype)


def resize_depth(depth: torch.Tensor, height: int, width: int, mode: str = "bilinear") -> torch.Tensor:
    """(F, h, w) depth to (F, height, width), align_corners=False, no antialias.

    "bicubic" is torch's a = -0.75 cubic, exactly torchvision's ``Resize(BICUBIC)`` on tensors under torch 2.0
    (Geo4D). "opencv_cubic" is OpenCV's ``cv2.resize(INTER_CUBIC)`` per frame (MonST3R, CUT3R), itself (a
    dependency): torch's bicubic equals it only up to float32 rounding, and CUT3R's 10-round reweighted scale
    fit amplifies such rounding (1e-3 to 2e-2 in Abs Rel on the tests' cases).
    """
    if depth.shape[-2:] == (height, width):
        return depth
    if mode == "opencv_cubic":
        import cv2

        frames = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC) for frame in depth.cpu().numpy()]
        return torch.from_numpy(np.stack(frames)).to(depth.device)
    return F.interpolate(depth[:, None], size=(height, width), mode=mode, align_corners=False)[:, 0]


def align_depth(pred: torch.Tensor, gt: torch.Tensor, align: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of the exact fits mapping valid predicted depths (N,) onto gt (N,), above 2^20 pixels on a strided subset (for pictures)."""
    zero = torch.zeros((), dtype=pred.dtype)
    if align == "scale&shift":
        return lad_scale_shift(pred, gt)
    if align == "scale":
        return lad_scale(pred, gt), zero
    return PROTOCOLS["exact"].solvers[align](pred, gt)


# ----------------------------------------------------------------------------- metrics


def depth_metrics(
    pred, gt, align: str = "scale&shift", max_depth: float | None = 70.0, post_clip_max: float | None = None,
    protocol: str = "geo4d", fit_pixels: int | None = None,
) -> dict:
    """Abs Rel and delta < 1.25 of one sequence's depth (F, H, W) against gt (F, H', W') under ``protocol``.

    The default protocol is "geo4d", what the benchmark configs use: the One4D paper's depth numbers most
    likely follow Geo4D's scripts (its Table 3 quotes Geo4D; shared eval/PROTOCOLS.md). Non-peer callers
    (the demo) pass "exact". ``post_clip_max`` clips the aligned prediction (Geo4D: 70 on every set;
    MonST3R, CUT3R: 70 on Sintel only). ``fit_pixels``: fit on an evenly strided subset of that many valid
    pixels (the metric still uses all); off by default, as the peers fit every pixel. The solvers run on
    the prediction's device. Returns ``abs_rel``, ``delta_1_25`` (a fraction), ``valid_pixels`` (the
    weight for averaging), ``scale``, ``shift`` and ``protocol``.
    """
    row, solver = protocol_solver(protocol, align)
    device = pred.device if isinstance(pred, torch.Tensor) else torch.device("cpu")
    pred = _depth_tensor(pred, "predicted depth", row.dtype, device)
    gt = _depth_tensor(gt, "ground-truth depth", row.gt_dtype, device)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[0] != gt.shape[0]:
        raise ValueError(
            f"depth_metrics needs (F, H, W) prediction and ground truth with the same F, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    pred = resize_depth(pred, gt.shape[1], gt.shape[2], row.resize)
    valid = torch.isfinite(gt) & (gt > 0)
    if max_depth is not None:
        valid &= gt < max_depth
    count = int(valid.sum())
    if count == 0:
        raise ValueError(f"no valid ground-truth depth pixel (0 < gt < {max_depth}) in the sequence")
    p, g = pred[valid], gt[valid]  # (N,), (N,) in row-major (frame, row, column) order, as the peers flatten
    if not torch.isfinite(p).all():
        raise ValueError(f"the predicted depth has {int((~torch.isfinite(p)).sum())} non-finite values on valid pixels")
    scale, shift = solver(*fit_subset(p, g, fit_pixels))
    p = scale * p + shift
    if post_clip_max is not None:
        p = torch.clamp(p, max=post_clip_max)
    abs_rel = torch.mean(torch.abs(p - g) / g)
    clamped = torch.clamp(p, min=1e-5)
    delta = torch.mean((torch.maximum(clamped / g, g / clamped) < 1.25).to(row.vote_dtype))
    return {
        "abs_rel": float(abs_rel),
        "delta_1_25": float(delta),
        "valid_pixels": count,
        "scale": float(scale),
        "shift": float(shift),
        "protocol": protocol,
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
