"""Flow matching in Wan's native convention (paper section 3.1, eq. 1-4).

x_sigma = (1 - sigma) z + sigma eps, the model predicts eps - z, timestep = 1000 sigma. One sigma
per sample is shared by the RGB and XYZ latents of that sample (they describe the same clip at
the same noise level, which is what the joint sampler runs). The paper writes the same with
t = 1 - sigma and the opposite sign of the velocity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SIGMA_SCHEMES = ("uniform", "logit_normal")
NUM_TRAIN_TIMESTEPS = 1000


@dataclass
class FlowMatchingObjective:
    """Sigma sampling and the per-modality weighted MSE.

    scheme: "uniform" (sigma ~ U(0, 1)) or "logit_normal" (sigma = sigmoid(N(logit_mean, logit_std))).
    shift: Wan / SD3 time shift sigma' = shift sigma / (1 + (shift - 1) sigma); 1.0 = none. Values
        above 1 spend more steps at high noise, as the sampler's flow shift does at 480p. The configs'
        default (``train.sigma.shift``) is 5.0, what Wan2.1-Fun was fine-tuned with: VideoX-Fun's
        scripts/wan2.1_fun/train.py draws u ~ U(0, 1) (``weighting_scheme="none"``) and takes
        ``noise_scheduler.timesteps[int(u * 1000)]`` of a FlowMatchEulerDiscreteScheduler built from
        config/wan2.1/wan_civitai.yaml (``shift: 5.0``), i.e. uniform over the shift-5 grid (here: continuous).
    weights: loss weight per modality, e.g. {"rgb": 1.0, "xyz": 1.0}.
    """

    scheme: str = "uniform"
    shift: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    sigma_min: float = 0.0
    sigma_max: float = 1.0
    weights: dict | None = None

    def __post_init__(self):
        if self.scheme not in SIGMA_SCHEMES:
            raise ValueError(f"sigma scheme must be one of {SIGMA_SCHEMES}, got {self.scheme!r}")
        if self.shift <= 0:
            raise ValueError(f"sigma shift must be positive, got {self.shift}")
        if not 0 <= self.sigma_min < self.sigma_max <= 1:
            raise ValueError(f"need 0 <= sigma_min < sigma_max <= 1, got {self.sigma_min}, {self.sigma_max}")
        self.weights = dict(self.weights or {"rgb": 1.0, "xyz": 1.0})
        if any(weight < 0 for weight in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"loss weights must be non-negative with a positive sum, got {self.weights}")

    def sample_sigmas(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """(B,) noise levels in [sigma_min, sigma_max], one per sample."""
        device = generator.device if generator is not None else device
        if self.scheme == "uniform":
            sigma = torch.rand(batch_size, generator=generator, device=device)
        else:
            sigma = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(batch_size, generator=generator, device=device))
        sigma = self.shift * sigma / (1 + (self.shift - 1) * sigma)
        return self.sigma_min + (self.sigma_max - self.sigma_min) * sigma

    @staticmethod
    def noisy(latents: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_sigma = (1 - sigma) z + sigma eps, sigma (B,) broadcast over (B, C, f, h, w)."""
        sigma = sigma.view(-1, *([1] * (latents.ndim - 1))).to(latents.dtype)
        return (1 - sigma) * latents + sigma * noise

    @staticmethod
    def target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The flow the model predicts: eps - z."""
        return noise - latents

    @staticmethod
    def timesteps(sigma: torch.Tensor) -> torch.Tensor:
        """Wan's timestep input: 1000 sigma."""
        return sigma * NUM_TRAIN_TIMESTEPS

    @staticmethod
    def loss(predictions: dict, targets: dict, weights: dict) -> tuple[torch.Tensor, dict]:
        """sum_k w_k MSE_k in float32, and the unweighted per-modality MSEs (detached) for logging."""
        total, parts = 0.0, {}
        for key, prediction in predictions.items():
            mse = torch.mean((prediction.float() - targets[key].float()) ** 2)
            parts[key] = mse.detach()
            total = total + weights[key] * mse
        return total, parts
