"""The per-frame pinhole camera of post-optimisation and its point-to-ray residual."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Cameras:
    """Per-frame pinhole cameras: rotation (F, 3, 3) world-to-camera, centre (F, 3), focal (F,), principal point (F, 2)."""

    rotation: torch.Tensor
    centre: torch.Tensor
    focal: torch.Tensor
    principal_point: torch.Tensor


def point_residuals(cameras: Cameras, points: torch.Tensor, pixels: torch.Tensor):
    """Point-to-ray residuals (F, N, 3) in the camera frame, camera points (F, N, 3), unit rays (F, N, 3)
    and ray lengths |(u - cx, v - cy, f)| / f (F, N, 1)."""
    camera_points = (points - cameras.centre[:, None]) @ cameras.rotation.transpose(-1, -2)  # (F, N, 3)
    centred = (pixels - cameras.principal_point[:, None]) / cameras.focal[:, None, None]  # (F, N, 2)
    ray = torch.cat([centred, torch.ones_like(centred[..., :1])], dim=-1)  # (F, N, 3) K^-1 (u, v, 1)
    length = ray.norm(dim=-1, keepdim=True)
    unit = ray / length
    residual = camera_points - unit * (unit * camera_points).sum(-1, keepdim=True)
    return residual, camera_points, unit, length
