"""Validation samples during training: a few Euler flow steps on one clip's conditions, written as videos.

This is a quick look at progress (is the RGB plausible, does the depth have structure), not the
evaluation sampler: plain Euler on the shifted flow sigmas, no guidance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from one4d.data.clip import write_video
from one4d.encoding import decode_latents

from .builders import StepDraws, step_generator


@torch.no_grad()
def euler_sample(model, prepared: dict, num_steps: int, shift: float, generator: torch.Generator):
    """Integrate the predicted flow (eps - z) from sigma = 1 to 0; returns RGB and XYZ latents (B, 16, f, h, w)."""
    rgb = torch.randn(prepared["rgb_latents"].shape, generator=generator, device=generator.device).to(prepared["rgb_latents"].device)
    xyz = torch.randn(prepared["xyz_latents"].shape, generator=generator, device=generator.device).to(rgb.device)
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1)
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        timestep = torch.full((rgb.shape[0],), float(sigma) * 1000, device=rgb.device)
        rgb_input = torch.cat([rgb, prepared["condition"]], dim=1)  # (B, 36, f, h, w)
        rgb_flow, xyz_flow = model(rgb_input, xyz, timestep, prepared["text_embeds"], prepared["image_embeds"])
        rgb = rgb + (sigma_next - sigma) * rgb_flow.float()
        xyz = xyz + (sigma_next - sigma) * xyz_flow.float()
    return rgb, xyz


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def write_validation_sample(trainer, prefix: Path) -> list[Path]:
    """Sample the first clip of the dataset with the current weights; write ``<prefix>_rgb.mp4`` and ``_depth.mp4``."""
    cfg = trainer.cfg.train.validation
    model = trainer.unwrapped_model()
    was_training = model.training
    model.eval()
    batch = torch.utils.data.default_collate([trainer.dataset[0]])
    generator = step_generator(int(trainer.cfg.train.seed), 10**9, 0)  # a fixed draw, apart from training steps
    prepared = trainer.adapter.prepare_batch(batch, trainer.accelerator.device, StepDraws(generator))
    rgb, xyz = euler_sample(model, prepared, int(cfg.num_steps), float(cfg.shift), generator)
    vae = trainer.vae()
    rgb_video = decode_latents(vae, rgb)[0]  # (3, F, H, W)
    xyz_video = decode_latents(vae, xyz)[0]  # (3, F, H, W): normalised pointmaps in [-1, 1]
    depth = xyz_video[2:3].expand(3, -1, -1, -1)  # z of frame 0's camera, as grey
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(f"{prefix}_rgb.mp4"), Path(f"{prefix}_depth.mp4")]
    write_video(paths[0], to_uint8_frames(rgb_video), fps=float(cfg.fps), crf=18)
    write_video(paths[1], to_uint8_frames(depth), fps=float(cfg.fps), crf=18)
    model.train(was_training)
    return paths
