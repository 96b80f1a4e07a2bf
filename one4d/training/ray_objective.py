"""An optional auxiliary loss on what post-optimisation reads: the decoded XYZ estimate against the target's camera rays.

The paper trains with the latent flow MSE alone (section 3.1), and ``train.ray_loss.weight`` 0 (the default)
keeps exactly that. With a weight above 0, each step also decodes the model's clean-latent estimate
x0 = x_sigma - sigma v of the XYZ branch with the frozen VAE, solves every frame's camera in closed form
(:func:`one4d.postopt.closed_form.initial_cameras`, the post-optimisation's own initialisation) from the
decoded TARGET pointmaps, and penalises how far each predicted point lies off its pixel's ray under that
camera (:func:`one4d.postopt.camera.point_residuals`), divided by the target point's depth (an angle).

Why: on the shipped tiny model a learned reader recovers the camera path from the XYZ latents the model
predicts, yet post-optimising the decoded latents does not (benchmarks/RESULTS_tiny_model.md section 19):
the latent residual the MSE tolerates becomes camera error in the per-frame camera solve. A point on its
ray under the true camera is what that solve needs; depth along the ray is left to the MSE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from one4d.encoding import decode_latents, decode_latents_differentiable
from one4d.postopt.camera import point_residuals
from one4d.postopt.closed_form import initial_cameras
from one4d.postopt.inputs import gather_samples


@dataclass
class RayConsistency:
    """Point-to-ray angles of the decoded x0 estimate under the decoded target's closed-form cameras.

    vae: the frozen VAE of the latents (diffusers ``AutoencoderKLWan``); gradients flow through its decoder
        to the prediction, never into its weights.
    weight: the term's loss weight (``train.ray_loss.weight``).
    pixels: pixels per frame the cameras and the residuals use (``train.ray_loss.pixels``).
    samples: how many of the batch's samples (the first ones; batches are shuffled) get the term, None = all
        (``train.ray_loss.samples``): each costs two VAE decodes and one backward through the decoder.
    """

    vae: torch.nn.Module
    weight: float
    pixels: int = 256
    samples: int | None = None

    def __post_init__(self):
        if self.weight <= 0:
            raise ValueError(f"the ray loss weight must be positive when the term is built, got {self.weight}")
        if self.pixels < 6:
            raise ValueError(f"a camera needs at least 6 pixels per frame, got train.ray_loss.pixels={self.pixels}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"train.ray_loss.samples must be at least 1 (or null for the whole batch), got {self.samples}")
        self.skipped = 0  # samples whose target frames gave no camera (counted, never fatal)

    def __call__(self, flow: torch.Tensor, noisy: torch.Tensor, sigma: torch.Tensor, latents: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """flow: predicted XYZ flow, noisy: its input x_sigma, latents: the target z, each (B, 16, f, h, w); sigma (B,).
        Returns the angles (S, F, N, 3) of the first S = ``samples`` samples, whose mean square is the term
        (zeros for a sample without cameras)."""
        flow, noisy, sigma, latents = (tensor[:self.samples] for tensor in (flow, noisy, sigma, latents))
        estimate = noisy.float() - sigma.float().view(-1, 1, 1, 1, 1) * flow.float()  # (B, 16, f, h, w): x0 = x_sigma - sigma v
        predicted = decode_latents_differentiable(self.vae, estimate).permute(0, 2, 3, 4, 1)  # (B, F, H, W, 3)
        with torch.no_grad():
            target = decode_latents(self.vae, latents).permute(0, 2, 3, 4, 1)  # (B, F, H, W, 3)
        frames, height, width = target.shape[1:4]
        count = min(self.pixels, height * width)
        draw = torch.randperm(height * width, generator=generator, device=generator.device)[:count].to(target.device)
        indices = draw.expand(frames, count)  # (F, N): the same pixels in every frame, as post-optimisation samples
        centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=torch.float64, device=target.device).expand(frames, 2)
        angles = []
        for sample_target, sample_predicted in zip(target, predicted):
            points, pixels, weight = gather_samples(sample_target, None, indices)  # (F, N, 3), (F, N, 2), (F, N)
            moved, _, _ = gather_samples(sample_predicted, None, indices)  # (F, N, 3), with gradient
            try:
                cameras = initial_cameras(points, pixels, weight, centre, shared_focal=False, messages=[])
            except ValueError:  # degenerate or diverged target frames: this sample adds nothing
                self.skipped += 1
                angles.append(torch.zeros_like(moved, dtype=predicted.dtype))
                continue
            residual, _, _, _ = point_residuals(cameras, moved, pixels)  # (F, N, 3)
            _, camera_points, _, _ = point_residuals(cameras, points, pixels)
            depth = camera_points[..., 2:].abs().clamp_min(1e-3)  # (F, N, 1): the target's, so no gain from moving away
            angles.append((residual / depth).to(predicted.dtype))
        return torch.stack(angles)  # (B, F, N, 3)
