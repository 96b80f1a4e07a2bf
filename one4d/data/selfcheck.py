"""Geometric self-check of a converted clip: do its depth maps and cameras agree with each other?

Each frame's depth is back-projected with its camera, moved into a few other frames of the clip and
projected there; where the point lands on a valid, static pixel, its depth in that camera is compared
with the depth stored there. With the right conventions the two agree up to the depth's quantisation;
an inverted pose, a transposed rotation, an OpenGL camera read as OpenCV or a wrong depth scale moves
the points off their surfaces and the relative error becomes large (tests/test_selfcheck.py shows each).

The target depth is read by bilinear interpolation of INVERSE depth over the four neighbouring pixels
(all four valid and static): inverse depth is affine in the pixel coordinates on a plane, so planar
surfaces compare exactly whatever the sub-pixel position, and the remaining error sits at depth edges
and occlusions, which the median ignores as long as they cover under half the co-visible pixels.

Two numbers per clip, each the WORST frame's (one wrong pose in 81 frames spoils only the pairs that
touch it, which a statistic over the whole clip would hide):
- ``error``: the median relative depth error |z_moved - z_stored| / z_stored of the frame's points;
- ``outliers``: the fraction of those points off by more than ``tolerance`` (5 %).
The median alone is a weak detector: a pose that slides points ALONG a smooth wall changes their depth
little, so on the synthetic rooms a transposed rotation or an OpenGL camera read as OpenCV gives medians
of only 0.4-1.3 % (quantised-correct depth: 0.1 %), while 6-34 % of the points land more than 5 % off
(correct: 0 %). A clip is flagged when either number is above its threshold (:meth:`SelfCheck.flagged`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from one4d.geometry import camera_points_to_pixels, depth_to_camera_points, invert_pose, transform_points

ERROR_THRESHOLD = 0.02  # worst-frame median: quantisation stays far below (PointOdyssey's 1000/65535 m is 0.75 % at 2 m)
OUTLIER_THRESHOLD = 0.03  # worst-frame fraction of points more than TOLERANCE off: 0 on correct synthetic clips, >= 6 % on wrong ones
TOLERANCE = 0.05  # relative depth difference above which a point counts as an outlier
EDGE_RATIO = 1.1  # a target pixel whose four neighbours' depths differ by more than this ratio straddles an edge: not compared
PIXEL_STEP = 4  # source pixels are sampled on a grid of this step: 81x352x624 -> 13.7k points per frame
MIN_POINTS = 16  # a frame with fewer co-visible points (or under 1 % of its sampled pixels) has no number of its own


@dataclass
class SelfCheck:
    """The self-check of one clip: worst-frame numbers (NaN when no frame has co-visible pixels) and per-frame ones."""

    error: float  # worst frame's median relative depth error
    outliers: float  # worst frame's fraction of points more than TOLERANCE off
    frame_errors: np.ndarray  # (F,) NaN where a frame has too few co-visible points (MIN_POINTS)
    frame_outliers: np.ndarray  # (F,)

    def flagged(self, error_threshold: float = ERROR_THRESHOLD, outlier_threshold: float = OUTLIER_THRESHOLD) -> bool:
        """True when the geometry looks inconsistent (either number above its threshold); False when it cannot be checked."""
        return bool(self.error > error_threshold or self.outliers > outlier_threshold)


def target_offsets(num_frames: int) -> list[int]:
    """Frame offsets each frame is reprojected to: the next frame, ones a quarter and half a clip away, and
    the whole clip (first <-> last).

    Far targets matter: a wrong depth scale is a wrong ratio of depth to camera translation, visible only
    where the camera moved.
    """
    offsets = {1, max(1, num_frames // 4), max(1, num_frames // 2), num_frames - 1}
    return sorted(offset for offset in offsets if 0 < offset < num_frames)


def _as_tensor(array, dtype) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().to(dtype)
    return torch.from_numpy(np.asarray(array)).to(dtype)


def _sample_inverse_depth(inverse: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear inverse depth (N,) of one frame's map (H, W) (0 = unusable) at pixels (N, 2), and whether it is
    comparable there: inside the image, four usable neighbours, no depth edge between them."""
    height, width = inverse.shape
    u, v = pixels[:, 0], pixels[:, 1]
    inside = (u >= 0) & (v >= 0) & (u <= width - 1) & (v <= height - 1)
    u, v = u.clamp(0, width - 1), v.clamp(0, height - 1)
    u0 = u.floor().long().clamp(max=max(width - 2, 0))
    v0 = v.floor().long().clamp(max=max(height - 2, 0))
    fu, fv = (u - u0).clamp(0, 1), (v - v0).clamp(0, 1)
    u1, v1 = (u0 + 1).clamp(max=width - 1), (v0 + 1).clamp(max=height - 1)
    corners = torch.stack([inverse[v0, u0], inverse[v0, u1], inverse[v1, u0], inverse[v1, u1]])  # (4, N)
    weights = torch.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])  # (4, N)
    low, high = corners.min(dim=0).values, corners.max(dim=0).values
    comparable = inside & (low > 0) & (high <= EDGE_RATIO * low)
    return (weights * corners).sum(dim=0), comparable


def check_clip(depth, intrinsics, world_to_camera, dynamic_mask=None, tolerance: float = TOLERANCE,
               pixel_step: int = PIXEL_STEP) -> SelfCheck:
    """Reproject every frame's depth into the frames :func:`target_offsets` away on either side and compare.

    depth (F, H, W) with 0 = invalid, intrinsics (F, 3, 3), world_to_camera (F, 4, 4) OpenCV, dynamic_mask
    (F, H, W) bool (True = moving, excluded on both ends) or None; numpy or torch.
    """
    depth = _as_tensor(depth, torch.float32)  # float32 maps: 81x352x624 stays at 71 MB; points and poses in float64
    intrinsics = _as_tensor(intrinsics, torch.float64)
    world_to_camera = _as_tensor(world_to_camera, torch.float64)
    frames = depth.shape[0]
    usable = (depth > 0) & torch.isfinite(depth)
    if dynamic_mask is not None:
        usable &= ~_as_tensor(dynamic_mask, torch.bool)
    inverse = torch.where(usable, 1.0 / depth.clamp_min(1e-12), torch.zeros_like(depth))  # (F, H, W)

    # Source pixels on a grid of step s: pixel (i, j) of the sampled map is (s i, s j) of the frame, so the
    # sampled map's K is diag(1/s, 1/s, 1) K.
    sampled = torch.where(usable, depth, torch.zeros_like(depth))[:, ::pixel_step, ::pixel_step].double()  # (F, h, w)
    step = torch.tensor([1.0 / pixel_step, 1.0 / pixel_step, 1.0], dtype=torch.float64)
    points = depth_to_camera_points(sampled, step[:, None] * intrinsics)  # (F, h, w, 3)
    camera_to_world = invert_pose(world_to_camera)

    min_points = max(MIN_POINTS, sampled[0].numel() // 100)  # a few stray points must not decide a frame's number
    errors, outliers = np.full(frames, math.nan), np.full(frames, math.nan)
    for source in range(frames):
        source_points = points[source].reshape(-1, 3)
        source_points = source_points[sampled[source].reshape(-1) > 0]  # (N, 3)
        relative = []
        for offset in target_offsets(frames):
            for target in (source - offset, source + offset):
                if not 0 <= target < frames or source_points.shape[0] == 0:
                    continue
                source_to_target = world_to_camera[target] @ camera_to_world[source]  # (4, 4)
                moved = transform_points(source_points[None], source_to_target[None])[0]  # (N, 3) in the target camera
                moved = moved[moved[:, 2] > 1e-6]
                pixels = camera_points_to_pixels(moved[None], intrinsics[target][None])[0]  # (N, 2)
                stored_inverse, comparable = _sample_inverse_depth(inverse[target], pixels.float())
                stored = 1.0 / stored_inverse[comparable].double()
                relative.append((moved[comparable, 2] - stored).abs() / stored)
        relative = torch.cat(relative) if relative else torch.zeros(0, dtype=torch.float64)
        if relative.numel() >= min_points:
            errors[source] = float(relative.median())
            outliers[source] = float((relative > tolerance).double().mean())
    finite = np.isfinite(errors)
    worst_error = float(errors[finite].max()) if finite.any() else math.nan
    worst_outliers = float(outliers[finite].max()) if finite.any() else math.nan
    return SelfCheck(worst_error, worst_outliers, errors, outliers)


def reprojection_error(depth, intrinsics, world_to_camera, dynamic_mask=None) -> float:
    """The clip's self-check error: the worst frame's median relative depth error over valid, static,
    co-visible pixels (:func:`check_clip`); NaN when no frame has co-visible pixels (a single frame included).

    depth (F, H, W) z in metres, 0 = invalid; intrinsics (F, 3, 3); world_to_camera (F, 4, 4) OpenCV;
    dynamic_mask (F, H, W) bool or None. ``check_clip(...).flagged()`` also weighs the outlier fraction,
    the more sensitive detector of a wrong convention.
    """
    return check_clip(depth, intrinsics, world_to_camera, dynamic_mask).error
