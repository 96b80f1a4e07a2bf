"""Input checks and pixel subsampling for post-optimisation.

Errors are raised here, where pointmaps enter, so the solvers can trust their inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

# A frame needs this many valid points for a camera (the DLT needs 6; more keeps it well posed).
MIN_VALID_POINTS = 16


def as_tensor(array, name: str, device=None) -> torch.Tensor:
    """numpy or torch -> torch on ``device`` (default: where it already is), without a copy when possible."""
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(array)
    if not isinstance(array, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(array).__name__}")
    return array if device is None else array.to(device)


def check_pointmaps(pointmaps, valid=None, confidence=None, device=None):
    """Validate inputs; NaN/inf points are masked out and counted.

    Returns ``(pointmaps (F, H, W, 3) float, mask (F, H, W) bool, confidence (F, H, W) or None,
    num_invalid)``. Raises ValueError for a wrong shape, fewer than 2 frames, or a frame without
    enough valid points (naming the frame).
    """
    points = as_tensor(pointmaps, "pointmaps", device)
    if points.ndim != 4 or points.shape[-1] != 3:
        raise ValueError(f"pointmaps must have shape (F, H, W, 3), got {tuple(points.shape)}")
    frames, height, width, _ = points.shape
    if frames < 2:
        raise ValueError(f"post-optimisation needs at least 2 frames (a video), got {frames}")
    if height < 2 or width < 2:
        raise ValueError(f"pointmaps are {height}x{width} pixels; a camera needs an image of at least 2x2")
    if not points.is_floating_point():
        raise ValueError(f"pointmaps must be floating point, got {points.dtype}")
    if points.dtype in (torch.float16, torch.bfloat16):
        points = points.float()

    low, high = torch.aminmax(points)  # one pass; NaN and inf show up here
    if torch.isfinite(low) and torch.isfinite(high):
        mask, num_invalid = torch.ones(points.shape[:3], dtype=torch.bool, device=points.device), 0
    else:
        mask = torch.isfinite(points).all(dim=-1)  # (F, H, W)
        num_invalid = int(mask.numel() - mask.sum())
        points = torch.where(mask[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device))
    if valid is not None:
        valid = as_tensor(valid, "valid", points.device)
        if valid.shape != mask.shape:
            raise ValueError(f"valid must have shape {tuple(mask.shape)} (F, H, W), got {tuple(valid.shape)}")
        mask = mask & valid.bool()
    if confidence is not None:
        confidence = as_tensor(confidence, "confidence", points.device).to(points.dtype)
        if confidence.shape != mask.shape:
            raise ValueError(f"confidence must have shape {tuple(mask.shape)} (F, H, W), got {tuple(confidence.shape)}")
        if not torch.isfinite(confidence).all() or (confidence < 0).any():
            raise ValueError("confidence must be finite and non-negative")
        mask = mask & (confidence > 0)

    counts = mask.reshape(frames, -1).sum(dim=1)
    for frame in torch.nonzero(counts < MIN_VALID_POINTS).flatten().tolist():
        raise ValueError(
            f"frame {frame} has {int(counts[frame])} valid points (NaN/inf, masked or zero-confidence pixels "
            f"are dropped); at least {MIN_VALID_POINTS} are needed to recover its camera"
        )
    if num_invalid:
        warnings.warn(f"post-optimisation: {num_invalid} NaN/inf points masked out", stacklevel=3)
    return points, mask, confidence, num_invalid


def sample_pixels(mask: torch.Tensor, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Pick up to ``num_samples`` pixels where ``mask`` (F, H, W) is true, per frame -> flat pixel indices (F, N).

    Frames with every pixel valid share one random draw; a frame with invalid pixels draws from
    its valid pixels only (repeating them when it has fewer than N).
    """
    frames = mask.shape[0]
    flat = mask.reshape(frames, -1)  # (F, HW)
    count = min(num_samples, flat.shape[1])
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randperm(flat.shape[1], generator=generator)[:count].to(flat.device)
    indices = shared.expand(frames, count).clone()
    for frame in torch.nonzero((~flat).any(dim=1)).flatten().tolist():
        candidates = torch.nonzero(flat[frame]).flatten()
        order = torch.randperm(candidates.numel(), generator=generator).to(flat.device)
        picks = candidates[order[torch.arange(count, device=flat.device) % candidates.numel()]]
        indices[frame] = picks
    return indices


def gather_samples(points: torch.Tensor, confidence: torch.Tensor | None, indices: torch.Tensor):
    """Points (F, N, 3), pixel coordinates (u, v) (F, N, 2) and weights (F, N) of the sampled (valid) pixels, in float64."""
    frames, height, width, _ = points.shape
    flat_points = points.reshape(frames, -1, 3)
    sampled = torch.gather(flat_points, 1, indices[..., None].expand(-1, -1, 3)).double()  # (F, N, 3)
    if confidence is None:
        sampled_weight = torch.ones(indices.shape, dtype=torch.float64, device=points.device)
    else:
        sampled_weight = torch.gather(confidence.reshape(frames, -1), 1, indices).double()  # (F, N)
    pixels = torch.stack([indices % width, indices // width], dim=-1).double()  # (F, N, 2)
    return sampled, pixels, sampled_weight
