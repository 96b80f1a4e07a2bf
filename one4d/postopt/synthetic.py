"""Pointmaps of analytic scenes seen from known cameras, for post-optimisation tests and benchmarks.

A box room (six planes) or a single wall is ray cast exactly for every pixel, so depth,
cameras and pointmaps are known to float precision. Pointmaps are built with
:func:`one4d.geometry.depth_to_pointmap` and so live in frame 0's camera, like One4D outputs.
"""

from __future__ import annotations

import math

import torch

from one4d.geometry import default_intrinsics, depth_to_pointmap, make_pose, pixel_grid, relative_to_first

# Room half-extents (x, y, z) in metres; the camera moves near the centre.
ROOM_HALF_EXTENTS = (2.5, 1.5, 4.0)


def _rotation_yaw_pitch(yaw: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
    """(F,) yaw about y and pitch about x in radians -> (F, 3, 3) camera-to-world rotations."""
    cy, sy, cp, sp = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin()
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    yaw_m = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    pitch_m = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    return yaw_m @ pitch_m


def _trajectory(num_frames: int, motion: str, seed: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth camera-to-world rotations (F, 3, 3) and centres (F, 3)."""
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(4, generator=generator, dtype=dtype) * 2 * math.pi
    s = torch.linspace(0, 1, num_frames, dtype=dtype)
    yaw = 0.5 * torch.sin(2 * math.pi * 0.6 * s + phase[0])
    pitch = 0.15 * torch.sin(2 * math.pi * 0.4 * s + phase[1])
    if motion == "rotation":
        centres = torch.zeros(num_frames, 3, dtype=dtype)
    elif motion == "orbit":
        centres = torch.stack(
            [1.2 * torch.sin(2 * math.pi * 0.5 * s + phase[2]), 0.3 * torch.sin(2 * math.pi * 0.7 * s + phase[3]), 1.5 * s - 0.5],
            dim=-1,
        )
    else:
        raise ValueError(f"motion must be 'orbit' or 'rotation', got {motion!r}")
    return _rotation_yaw_pitch(yaw, pitch), centres


def _ray_cast_depth(rays: torch.Tensor, centres: torch.Tensor, scene: str) -> torch.Tensor:
    """Distance along world rays (F, N, 3) with z_cam == 1 from centres (F, 3) to the scene -> depth (F, N)."""
    origin = centres[:, None, :]  # (F, 1, 3)
    if scene == "wall":
        # One plane z = 5 (camera looks at it obliquely thanks to the yaw and pitch).
        return (5.0 - origin[..., 2]) / rays[..., 2]
    if scene != "room":
        raise ValueError(f"scene must be 'room' or 'wall', got {scene!r}")
    half = torch.tensor(ROOM_HALF_EXTENTS, dtype=rays.dtype)
    with torch.no_grad():
        bound = torch.where(rays > 0, half, -half)  # (F, N, 3) the wall each ray heads for, per axis
        distance = (bound - origin) / rays  # inf where the ray is parallel to an axis
        distance = torch.where(distance > 0, distance, torch.full_like(distance, float("inf")))
    return distance.min(dim=-1).values


def render_box_clip(
    num_frames: int = 9,
    height: int = 48,
    width: int = 64,
    scene: str = "room",
    motion: str = "orbit",
    focal: float | None = None,
    seed: int = 0,
    dtype=torch.float64,
) -> dict[str, torch.Tensor]:
    """Render a clip: ``depth`` (F, H, W), ``intrinsics`` (F, 3, 3), ``world_to_camera`` (F, 4, 4)
    relative to frame 0 (frame 0 is the identity), ``pointmaps`` (F, H, W, 3) in frame 0's camera."""
    focal = 0.7 * width if focal is None else focal
    rotations, centres = _trajectory(num_frames, motion, seed, dtype)
    intrinsics = default_intrinsics(height, width, focal, dtype=dtype).expand(num_frames, 3, 3).clone()
    pixels = pixel_grid(height, width, dtype=dtype).reshape(-1, 3)  # (N, 3)
    camera_rays = pixels @ torch.linalg.inv(intrinsics[0]).T  # (N, 3), z == 1
    world_rays = camera_rays @ rotations.transpose(-1, -2)  # (F, N, 3)
    depth = _ray_cast_depth(world_rays, centres, scene).reshape(num_frames, height, width)
    camera_to_world = make_pose(rotations, centres)
    world_to_camera = relative_to_first(torch.linalg.inv(camera_to_world))
    pointmaps = depth_to_pointmap(depth, intrinsics, world_to_camera)
    return {"depth": depth, "intrinsics": intrinsics, "world_to_camera": world_to_camera, "pointmaps": pointmaps}


def corrupt_pointmaps(
    pointmaps: torch.Tensor, depth: torch.Tensor, noise: float = 0.01, outliers: float = 0.02, seed: int = 0
) -> torch.Tensor:
    """Add Gaussian noise of ``noise`` x depth per coordinate, and move a fraction ``outliers`` of
    the points by 10-50 % of their depth in a random direction (flying pixels)."""
    generator = torch.Generator().manual_seed(seed)
    scale = depth[..., None]  # (F, H, W, 1)
    noisy = pointmaps + noise * scale * torch.randn(pointmaps.shape, generator=generator, dtype=pointmaps.dtype)
    is_outlier = torch.rand(depth.shape, generator=generator) < outliers
    direction = torch.randn(pointmaps.shape, generator=generator, dtype=pointmaps.dtype)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    magnitude = 0.1 + 0.4 * torch.rand(depth.shape, generator=generator, dtype=pointmaps.dtype)
    displaced = noisy + direction * (magnitude * depth)[..., None]
    return torch.where(is_outlier[..., None], displaced, noisy)
