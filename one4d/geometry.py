"""Camera and pointmap geometry shared by data, post-optimisation and evaluation.

Conventions (the paper's pointmaps, section 3.1, made precise), used everywhere in the project:
- OpenCV camera: x right, y down, z forward. Pixel centres sit at integer coordinates, so the
  pixel in column u, row v looks along K^-1 (u, v, 1); the image centre is ((W-1)/2, (H-1)/2).
- Poses are 4x4. ``world_to_camera`` maps world points into a camera; ``camera_to_world`` is
  its inverse; the camera centre is o = -R^T t.
- A clip's pointmaps hold every pixel's 3D point in the FIRST frame's camera.
- Depth is z in the frame's own camera.
- Quaternions are (qx, qy, qz, qw), the TUM order.

All functions are batched over leading dimensions and keep the input dtype (float64 works).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# ----------------------------------------------------------------------------- poses


def invert_pose(pose: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 transforms (..., 4, 4), without a general matrix inverse."""
    rotation, translation = pose[..., :3, :3], pose[..., :3, 3:]
    inverse = torch.zeros_like(pose)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1
    return inverse


def make_pose(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) and (..., 3) -> (..., 4, 4)."""
    pose = torch.zeros(*rotation.shape[:-2], 4, 4, dtype=rotation.dtype, device=rotation.device)
    pose[..., :3, :3] = rotation
    pose[..., :3, 3] = translation
    pose[..., 3, 3] = 1
    return pose


def look_at(eye: torch.Tensor, target: torch.Tensor, down: torch.Tensor | None = None) -> torch.Tensor:
    """World-to-camera poses (..., 4, 4) of OpenCV cameras at ``eye`` (..., 3) looking at ``target``.

    ``down`` is the world direction that should appear downwards in the image (default +y, the
    OpenCV convention when the world is itself a camera frame).
    """
    if down is None:
        down = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.cross(down.expand_as(forward), forward, dim=-1), dim=-1)
    image_down = torch.cross(forward, right, dim=-1)
    rotation = torch.stack([right, image_down, forward], dim=-2)  # rows: camera axes in world
    return make_pose(rotation, -(rotation @ eye[..., None])[..., 0])


def camera_centers(world_to_camera: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) world-to-camera -> (..., 3) camera centres o = -R^T t."""
    rotation, translation = world_to_camera[..., :3, :3], world_to_camera[..., :3, 3:]
    return (-rotation.transpose(-1, -2) @ translation)[..., 0]


def relative_to_first(world_to_camera: torch.Tensor) -> torch.Tensor:
    """Re-express (F, 4, 4) world-to-camera poses in the first camera's frame (frame 0 -> identity)."""
    return world_to_camera @ invert_pose(world_to_camera[0])


def transform_points(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 transforms (B, 4, 4) to points (B, ..., 3)."""
    shape = points.shape
    flat = points.reshape(shape[0], -1, 3)  # (B, N, 3)
    out = flat @ pose[:, :3, :3].transpose(-1, -2) + pose[:, None, :3, 3]
    return out.reshape(shape)


# ----------------------------------------------------------------------------- pixels and depth


def pixel_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """(H, W, 3) homogeneous pixel centres (u, v, 1), u along the width."""
    v, u = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)


def default_intrinsics(height: int, width: int, focal: float, dtype=torch.float32) -> torch.Tensor:
    """A 3x3 K with the principal point at the image centre and square pixels."""
    return torch.tensor(
        [[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype
    )


def resize_intrinsics(intrinsics: torch.Tensor, scale_x: float, scale_y: float) -> torch.Tensor:
    """K (..., 3, 3) after resizing the image by (scale_x, scale_y), pixel centres at integer coordinates.

    A pixel centre u maps to (u + 0.5) * s - 0.5, so the focal scales by s and the principal
    point by the same affine map.
    """
    scaled = intrinsics.clone()
    scaled[..., 0, :] = intrinsics[..., 0, :] * scale_x
    scaled[..., 1, :] = intrinsics[..., 1, :] * scale_y
    scaled[..., 0, 2] = (intrinsics[..., 0, 2] + 0.5) * scale_x - 0.5
    scaled[..., 1, 2] = (intrinsics[..., 1, 2] + 0.5) * scale_y - 0.5
    return scaled


def crop_intrinsics(intrinsics: torch.Tensor, top: int, left: int) -> torch.Tensor:
    """K (..., 3, 3) of the crop whose top-left pixel was (left, top) in the original image."""
    cropped = intrinsics.clone()
    cropped[..., 0, 2] = intrinsics[..., 0, 2] - left
    cropped[..., 1, 2] = intrinsics[..., 1, 2] - top
    return cropped


def depth_to_camera_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Back-project depth (F, H, W) with K (F, 3, 3) into camera-frame points (F, H, W, 3)."""
    frames, height, width = depth.shape
    rays = pixel_grid(height, width, depth.dtype, depth.device).reshape(-1, 3)  # (HW, 3)
    rays = rays @ torch.linalg.inv(intrinsics).transpose(-1, -2)  # (F, HW, 3), z == 1
    return (rays * depth.reshape(frames, -1, 1)).reshape(frames, height, width, 3)


def camera_points_to_pixels(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Project camera-frame points (F, ..., 3) with K (F, 3, 3) to pixel coordinates (F, ..., 2)."""
    shape = points.shape
    flat = points.reshape(shape[0], -1, 3) @ intrinsics.transpose(-1, -2)  # (F, N, 3)
    return (flat[..., :2] / flat[..., 2:]).reshape(*shape[:-1], 2)


def depth_to_pointmap(
    depth: torch.Tensor, intrinsics: torch.Tensor, world_to_camera: torch.Tensor
) -> torch.Tensor:
    """Depth (F, H, W), K (F, 3, 3), world-to-camera (F, 4, 4) -> pointmaps (F, H, W, 3) in frame 0's camera."""
    camera_points = depth_to_camera_points(depth, intrinsics)  # (F, H, W, 3)
    camera_to_first = world_to_camera[:1] @ invert_pose(world_to_camera)  # (F, 4, 4)
    return transform_points(camera_points, camera_to_first)


def pointmap_to_depth(pointmap: torch.Tensor, world_to_camera: torch.Tensor) -> torch.Tensor:
    """Pointmaps (F, H, W, 3) in the pointmap frame and that frame's world-to-camera (F, 4, 4) -> depth (F, H, W)."""
    return transform_points(pointmap, world_to_camera)[..., 2]


# ----------------------------------------------------------------------------- normalisation


def _kth_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile of a 1-D tensor via kthvalue (torch.quantile refuses more than 16M elements)."""
    k = int(round(q * (values.numel() - 1))) + 1
    return values.kthvalue(min(max(k, 1), values.numel())).values


def pointmap_normalization(
    pointmaps: torch.Tensor, valid: torch.Tensor | None = None, quantile: float = 0.02
) -> tuple[torch.Tensor, torch.Tensor]:
    """One similarity per clip (never per frame, which would break cross-frame consistency): centre and isotropic scale from robust per-axis bounds.

    Returns ``(centre (3,), scale ())`` such that ``(p - centre) / scale`` puts the [q, 1-q]
    per-axis range of all frames' valid points inside [-1, 1]. Never per frame: that would
    break cross-frame consistency.
    """
    points = pointmaps.reshape(-1, 3)
    if valid is not None:
        points = points[valid.reshape(-1)]
    points = points[torch.isfinite(points).all(dim=-1)]
    if points.shape[0] == 0:
        raise ValueError("pointmap normalisation: no finite valid point in the clip")
    low = torch.stack([_kth_quantile(points[:, axis], quantile) for axis in range(3)])
    high = torch.stack([_kth_quantile(points[:, axis], 1 - quantile) for axis in range(3)])
    centre = (low + high) / 2
    scale = ((high - low) / 2).max().clamp_min(1e-6)
    return centre, scale


def normalize_pointmaps(pointmaps: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Apply the clip similarity and clamp to [-1, 1] (the Wan VAE decoder clamps there too)."""
    return ((pointmaps - centre) / scale).clamp(-1, 1)


def denormalize_pointmaps(normalized: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_pointmaps` for points that were inside the bounds."""
    return normalized * scale + centre


# ----------------------------------------------------------------------------- rotations, TUM


def quaternion_to_rotation(quaternion: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (qx, qy, qz, qw), any norm -> (..., 3, 3) rotation matrices."""
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)


def rotation_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations -> (..., 4) unit quaternions (qx, qy, qz, qw) with qw >= 0.

    Uses the largest of the four candidate denominators for numerical stability.
    """
    m = rotation
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    candidates = torch.stack(
        [
            torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1], 1 + trace], -1),
            torch.stack([1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2], m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] - m[..., 1, 2]], -1),
            torch.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1], m[..., 0, 2] - m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2], m[..., 1, 0] - m[..., 0, 1]], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    pivots = torch.stack([1 + trace, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                          1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    best = pivots.argmax(dim=-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., 3:] < 0, -q, q)


def rotation_angle_degrees(rotation: torch.Tensor) -> torch.Tensor:
    """Angle of rotation matrices (..., 3, 3) in degrees, stable near 0 and 180."""
    trace = rotation[..., 0, 0] + rotation[..., 1, 1] + rotation[..., 2, 2]
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1.0, 1.0)))


def pose_to_tum(camera_to_world: torch.Tensor) -> torch.Tensor:
    """Camera-to-world poses (..., 4, 4) -> TUM fields (..., 7): tx ty tz qx qy qz qw."""
    return torch.cat([camera_to_world[..., :3, 3], rotation_to_quaternion(camera_to_world[..., :3, :3])], dim=-1)


def tum_to_pose(fields: torch.Tensor) -> torch.Tensor:
    """TUM fields (..., 7): tx ty tz qx qy qz qw -> camera-to-world poses (..., 4, 4)."""
    return make_pose(quaternion_to_rotation(fields[..., 3:7]), fields[..., :3])


def read_tum_trajectory(path: str | Path) -> tuple[np.ndarray, torch.Tensor]:
    """Read a TUM trajectory (``timestamp tx ty tz qx qy qz qw``, '#' comments).

    Returns timestamps (N,) and camera-to-world poses (N, 4, 4) in float64.
    """
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != 8:
            raise ValueError(f"{path}:{number}: a TUM line has 8 fields (timestamp tx ty tz qx qy qz qw), got {len(fields)}")
        rows.append([float(f) for f in fields])
    if not rows:
        raise ValueError(f"{path}: no pose line in this TUM trajectory")
    data = torch.tensor(rows, dtype=torch.float64)
    return data[:, 0].numpy(), tum_to_pose(data[:, 1:8])


def write_tum_trajectory(path: str | Path, timestamps, camera_to_world: torch.Tensor) -> None:
    """Write camera-to-world poses (N, 4, 4) as a TUM trajectory."""
    fields = pose_to_tum(torch.as_tensor(camera_to_world, dtype=torch.float64))  # (N, 7)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for stamp, values in zip(np.asarray(timestamps, dtype=np.float64), fields.tolist()):
        lines.append(f"{stamp:.6f} " + " ".join(f"{v:.9f}" for v in values))
    Path(path).write_text("\n".join(lines) + "\n")


def associate_timestamps(first, second, max_difference: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one nearest-timestamp association (TUM's associate.py): index pairs (i, j)."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    candidates = sorted(
        (abs(a - b), i, j)
        for i, a in enumerate(first)
        for j in np.nonzero(np.abs(second - a) < max_difference)[0]
        for b in [second[j]]
    )
    used_first, used_second, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_first and j not in used_second:
            used_first.add(i)
            used_second.add(j)
            pairs.append((i, j))
    pairs.sort()
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    indices = np.asarray(pairs, dtype=np.int64)
    return indices[:, 0], indices[:, 1]


# ----------------------------------------------------------------------------- alignment


def umeyama_alignment(
    source: torch.Tensor, target: torch.Tensor, with_scale: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity (Umeyama 1991): ``target ~ scale * rotation @ source + translation``.

    source, target: (N, 3). Returns (scale (), rotation (3, 3), translation (3,)).
    """
    if source.shape != target.shape or source.shape[-1] != 3 or source.shape[0] < 3:
        raise ValueError(f"umeyama_alignment needs two (N>=3, 3) point sets of equal shape, got {tuple(source.shape)} and {tuple(target.shape)}")
    mean_source, mean_target = source.mean(0), target.mean(0)
    centred_source, centred_target = source - mean_source, target - mean_target
    covariance = centred_target.T @ centred_source / source.shape[0]  # (3, 3)
    u, singular, vh = torch.linalg.svd(covariance)
    sign = torch.ones(3, dtype=source.dtype, device=source.device)
    if torch.det(u) * torch.det(vh) < 0:
        sign[2] = -1
    rotation = u @ torch.diag(sign) @ vh
    variance = centred_source.pow(2).sum() / source.shape[0]
    scale = (singular * sign).sum() / variance if with_scale else torch.ones((), dtype=source.dtype, device=source.device)
    translation = mean_target - scale * rotation @ mean_source
    return scale, rotation, translation
