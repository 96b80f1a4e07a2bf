"""Unified Masked Conditioning (paper section 3.3): observed-frame sets, the condition video and the mask.

One observed-frame set S describes every task: single image (S = {0}), sparse frames (first,
last and frames spread uniformly between) and full video (all frames). The condition video keeps
the observed frames and fills the rest with :data:`UNOBSERVED_FILL` (0, mid-grey in [-1, 1]); the mask marks observed
frames at latent resolution in the layout of diffusers' ``WanImageToVideoPipeline.prepare_latents``
(and VideoX-Fun's InP pipeline). The trainer and the sampler both call :func:`latent_mask`.

``observed`` arguments accept a list of frame indices (one set for the whole batch), a bool
tensor (F,) or a bool tensor (B, F) with one set per sample.
"""

from __future__ import annotations

import math

import torch

TASKS = ("single", "sparse", "full")
TASK_PROBABILITIES = (0.35, 0.30, 0.35)  # the paper's training mix
VAE_TEMPORAL_FACTOR = 4  # Wan VAE: frame 0 alone, then 4 frames per latent frame

# The value of unobserved frames in the condition video: what the base was fine-tuned with (``model.condition_fill``).
# VideoX-Fun trains Wan2.1-Fun InP with 0: scripts/wan2.1_fun/train.py, collate_fn of the bucketed path that its
# train.sh and README_TRAIN use (``mask_pixel_values = pixel_values * (1 - mask)``, with the -1 fill commented out:
# "Wan 2.1 use 0 for masked pixels"), and its inference pipeline does the same (pipeline_wan_fun_inpaint.py:
# ``masked_video = init_video * (mask < 0.5)``). Only its non-bucketed dataset path fills with -1.
UNOBSERVED_FILL = 0.0


def spread_frames(count: int, num_frames: int) -> list[int]:
    """``count`` frame indices: first and last kept, the rest spread uniformly (rounded half up)."""
    count = min(max(count, 1), num_frames)
    if count == 1:
        return [0]
    step = (num_frames - 1) / (count - 1)
    return [int(math.floor(i * step + 0.5)) for i in range(count)]  # step >= 1, so all distinct


def observed_frames(task: str, num_frames: int, sparsity: float | None = None, generator: torch.Generator | None = None) -> list[int]:
    """Observed frame indices for a task.

    "sparse" with a ``sparsity`` ratio r keeps max(2, round(r F)) frames (the evaluation rule);
    without one (training) it draws the count uniformly from 2 .. F-1 with ``generator``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if task == "single":
        return [0]
    if task == "full":
        return list(range(num_frames))
    if task != "sparse":
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if sparsity is not None:
        if not 0 < sparsity <= 1:
            raise ValueError(f"sparsity ratio must be in (0, 1], got {sparsity}")
        count = max(2, int(math.floor(sparsity * num_frames + 0.5)))
    elif num_frames <= 3:
        count = num_frames
    else:
        count = int(torch.randint(2, num_frames, (1,), generator=generator))
    return spread_frames(count, num_frames)


def sample_task(generator: torch.Generator | None = None, probabilities=TASK_PROBABILITIES) -> str:
    """Draw "single" / "sparse" / "full" with the given probabilities (default 0.35 / 0.30 / 0.35)."""
    weights = torch.as_tensor(probabilities, dtype=torch.float64)
    if weights.shape != (len(TASKS),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"task probabilities must be three non-negative numbers with a positive sum, got {probabilities}")
    return TASKS[int(torch.multinomial(weights, 1, generator=generator))]


def sample_observed(num_frames: int, generator: torch.Generator | None = None, probabilities=TASK_PROBABILITIES) -> tuple[str, list[int]]:
    """A training draw: the task and its observed frames."""
    task = sample_task(generator, probabilities)
    return task, observed_frames(task, num_frames, generator=generator)


def observed_mask(observed, num_frames: int, device=None) -> torch.Tensor:
    """Observed set (indices, bool (F,) or bool (B, F)) -> bool tensor (F,) or (B, F)."""
    if isinstance(observed, torch.Tensor) and observed.dtype == torch.bool:
        if observed.shape[-1] != num_frames or observed.ndim not in (1, 2):
            raise ValueError(f"observed mask must be (F,) or (B, F) with F = {num_frames}, got {tuple(observed.shape)}")
        return observed.to(device)
    indices = torch.as_tensor(observed, dtype=torch.long).reshape(-1)
    if indices.numel() == 0 or indices.min() < 0 or indices.max() >= num_frames:
        raise ValueError(f"observed frames must be a non-empty subset of 0..{num_frames - 1}, got {observed}")
    mask = torch.zeros(num_frames, dtype=torch.bool, device=device)
    mask[indices.to(device)] = True
    return mask


def condition_video(rgb: torch.Tensor, observed, fill: float = UNOBSERVED_FILL) -> torch.Tensor:
    """(B, 3, F, H, W) RGB in [-1, 1] -> the condition video: observed frames kept, others exactly ``fill``."""
    if rgb.ndim != 5:
        raise ValueError(f"condition_video expects (B, C, F, H, W), got {tuple(rgb.shape)}")
    mask = observed_mask(observed, rgb.shape[2], rgb.device)
    mask = mask.expand(rgb.shape[0], -1) if mask.ndim == 1 else mask  # (B, F)
    return torch.where(mask[:, None, :, None, None], rgb, torch.full((), fill, dtype=rgb.dtype, device=rgb.device))


def latent_mask(observed, num_frames: int, latent_height: int, latent_width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 4-channel UMC mask at latent resolution: (4, f, h, w), or (B, 4, f, h, w) for a (B, F) mask.

    Per frame 1 = observed; frame 0 is repeated 4 times so that the F + 3 values fold into
    (f, 4) with f = (F - 1) / 4 + 1, then move to channels: exactly what diffusers'
    ``WanImageToVideoPipeline.prepare_latents`` builds for its first(+last)-frame cases.
    """
    if (num_frames - 1) % VAE_TEMPORAL_FACTOR != 0:
        raise ValueError(f"num_frames must be 4k + 1 for the Wan VAE, got {num_frames}")
    mask = observed_mask(observed, num_frames, device).to(dtype)  # (..., F)
    first = mask[..., :1].expand(*mask.shape[:-1], VAE_TEMPORAL_FACTOR)
    mask = torch.cat([first, mask[..., 1:]], dim=-1)  # (..., F + 3)
    latent_frames = (num_frames - 1) // VAE_TEMPORAL_FACTOR + 1
    mask = mask.reshape(*mask.shape[:-1], latent_frames, VAE_TEMPORAL_FACTOR).transpose(-1, -2)  # (..., 4, f)
    return mask[..., None, None].expand(*mask.shape, latent_height, latent_width).contiguous()  # (..., 4, f, h, w)
