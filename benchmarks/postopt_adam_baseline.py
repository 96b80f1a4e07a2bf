"""The paper-literal post-optimisation, as peers run it (MonST3R / 4DNeX style), for comparison only.

Adam over every unknown at once: per-frame rotation (quaternion), centre, focal and a depth per
pixel, starting from identity cameras, zero centres, a default focal (the image's larger side)
and a constant depth, minimising a1 * sum_i mean_p |X - X_hat|_1 + a2 * smoothness (paper eq. 11-12)
with a cosine learning-rate schedule (DUSt3R's global aligner: lr 0.01, 300 iterations).
Not part of the package: one4d.postopt.recover_cameras is the implementation to use.
"""

from __future__ import annotations

import math

import torch

from one4d.geometry import make_pose, pixel_grid, quaternion_to_rotation


def adam_baseline(pointmaps: torch.Tensor, iterations: int = 300, lr: float = 0.01, a1: float = 1.0, a2: float = 0.003):
    """pointmaps (F, H, W, 3) -> dict with intrinsics (F, 3, 3), world_to_camera (F, 4, 4), depth (F, H, W), loss."""
    frames, height, width, _ = pointmaps.shape
    scale = pointmaps.norm(dim=-1).median()
    target = pointmaps / scale  # the same unit-depth scaling as recover_cameras
    dtype = target.dtype
    quaternion = torch.zeros(frames, 4, dtype=dtype)
    quaternion[:, 3] = 1
    quaternion.requires_grad_(True)
    centre = torch.zeros(frames, 3, dtype=dtype, requires_grad=True)
    log_focal = torch.full((1,), math.log(max(height, width)), dtype=dtype, requires_grad=True)
    log_depth = torch.full((frames, height, width), math.log(float(target.norm(dim=-1).median())), dtype=dtype, requires_grad=True)
    pixels = pixel_grid(height, width, dtype)  # (H, W, 3)
    centred = pixels[..., :2] - torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=dtype)
    optimizer = torch.optim.Adam([quaternion, centre, log_focal, log_depth], lr=lr)
    eye = torch.eye(3, dtype=dtype)

    def losses():
        rotation = quaternion_to_rotation(quaternion)  # (F, 3, 3) world-to-camera
        rays = torch.cat([centred / log_focal.exp(), torch.ones_like(centred[..., :1])], dim=-1)  # (H, W, 3)
        camera_points = log_depth.exp()[..., None] * rays  # (F, H, W, 3)
        world = torch.einsum("fji,fhwj->fhwi", rotation, camera_points) + centre[:, None, None]  # R^T x + o
        pointmap_term = (world - target).abs().sum(-1).mean(dim=(1, 2)).sum()
        relative = rotation[:-1].transpose(-1, -2) @ rotation[1:]
        smooth = (relative - eye).flatten(1).norm(dim=-1).sum() + (centre[1:] - centre[:-1]).norm(dim=-1).sum()
        return a1 * pointmap_term + a2 * smooth

    for step in range(iterations):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / iterations))
        optimizer.zero_grad()
        loss = losses()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        rotation = quaternion_to_rotation(quaternion)
        focal = log_focal.exp() * torch.ones(frames, dtype=dtype)
        intrinsics = torch.zeros(frames, 3, 3, dtype=dtype)
        intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
        intrinsics[:, 0, 2], intrinsics[:, 1, 2], intrinsics[:, 2, 2] = (width - 1) / 2, (height - 1) / 2, 1
        world_centre = centre * scale
        translation = -torch.einsum("fij,fj->fi", rotation, world_centre)
        return {
            "intrinsics": intrinsics,
            "world_to_camera": make_pose(rotation, translation),
            "camera_centers": world_centre,
            "depth": log_depth.exp() * scale,
            "loss": float(losses()),
        }
