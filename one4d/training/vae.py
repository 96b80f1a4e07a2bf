"""Stage 0 of the shipped tiny model: a small Wan VAE trained to reconstruct RGB AND pointmap videos.

One4D encodes both modalities with the one frozen Wan VAE (the XYZ channels are pointmaps normalised
to [-1, 1], ``one4d.geometry.pointmap_normalization``). The real Wan VAE is pretrained; the tiny ``AutoencoderKLWan`` of
``one4d.components`` is not, so it is trained here on clips of both kinds: L1 reconstruction of a
posterior sample plus a small KL term, on random crops (the VAE is fully convolutional and causal in
time, so crops of 4k + 1 frames teach it every size). Afterwards ``latents_mean`` / ``latents_std`` in
its config are set from the posterior means of the training videos, the way Wan's config carries them,
so the normalised latents the transformer sees have zero mean and unit variance per channel.
"""

from __future__ import annotations

import logging
import time

import torch

logger = logging.getLogger(__name__)


def random_crops(videos: torch.Tensor, batch_size: int, num_frames: int, height: int, width: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` random windows (num_frames, height, width) of random videos (N, 3, F, H, W) -> (B, 3, f, h, w)."""
    count, _, frames, full_height, full_width = videos.shape
    crops = []
    for index in torch.randint(count, (batch_size,), generator=generator).tolist():
        start = int(torch.randint(frames - num_frames + 1, (1,), generator=generator))
        top = int(torch.randint(full_height - height + 1, (1,), generator=generator))
        left = int(torch.randint(full_width - width + 1, (1,), generator=generator))
        crops.append(videos[index, :, start : start + num_frames, top : top + height, left : left + width])
    return torch.stack(crops)


def decode_unclamped(vae, latents: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan.decode`` without its final clamp to [-1, 1]: (B, 16, f, h, w) -> (B, 3, F, H, W).

    The same causal frame-by-frame loop as diffusers' ``_decode`` (no tiling, no patching). For training only:
    the clamp zeroes the gradient of every saturated pixel, and a fresh decoder saturates many of them.
    """
    vae.clear_cache()
    hidden = vae.post_quant_conv(latents)
    frames = []
    for index in range(hidden.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(hidden[:, :, index : index + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=index == 0))
    vae.clear_cache()
    return torch.cat(frames, dim=2)


def vae_loss(vae, video: torch.Tensor, kl_weight: float, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """L1 reconstruction of the posterior mean + ``kl_weight`` * KL to N(0, I) (both means over elements).

    The mean, not a sample: One4D encodes training targets and conditions with the posterior mode, and a
    fresh encoder's unit variance would drown the mean in noise for hundreds of steps.
    """
    posterior = vae.encode(video).latent_dist
    latents = posterior.mean  # (B, 16, f, h, w)
    reconstruction = decode_unclamped(vae, latents)  # (B, 3, F, H, W)
    l1 = (reconstruction - video).abs().mean()
    kl = 0.5 * (posterior.mean**2 + posterior.var - 1.0 - posterior.logvar).mean()
    return l1 + kl_weight * kl, {"l1": float(l1.detach()), "kl": float(kl.detach())}


def train_vae(vae, videos: torch.Tensor, steps: int, lr: float = 1e-3, batch_size: int = 4, num_frames: int = 5,
              crop: tuple[int, int] = (32, 48), kl_weight: float = 1e-4, seed: int = 0, log_every: int = 50) -> list[float]:
    """Train ``vae`` in place on videos (N, 3, F, H, W) in [-1, 1] (RGB and normalised XYZ mixed); returns the losses."""
    if (num_frames - 1) % 4:
        raise ValueError(f"VAE training crops need 4k + 1 frames, got {num_frames}")
    if videos.ndim != 5 or videos.shape[2] < num_frames or videos.shape[3] < crop[0] or videos.shape[4] < crop[1]:
        raise ValueError(f"videos must be (N, 3, F, H, W) with F >= {num_frames}, H x W >= {crop}, got {tuple(videos.shape)}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * step / steps))).item())
    vae.train().requires_grad_(True)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        batch = random_crops(videos, batch_size, num_frames, *crop, generator)
        loss, parts = vae_loss(vae, batch, kl_weight, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            logger.info("vae step %d/%d loss=%.4f l1=%.4f kl=%.3f (%.0f s)", step + 1, steps, loss, parts["l1"], parts["kl"],
                        time.perf_counter() - started)
    vae.eval().requires_grad_(False)
    return losses


def finetune_decoder(vae, videos: torch.Tensor, steps: int, lr: float = 5e-4, batch_size: int = 4,
                     latent_crop: tuple[int, int] = (4, 6), seed: int = 0, log_every: int = 50) -> list[float]:
    """Train only the decoder (and ``post_quant_conv``) on whole-length videos (N, 3, F, H, W); the encoder is frozen.

    The first phase trains on short crops; the causal decoder then decodes later latent frames from a longer
    feature cache than it ever saw. This phase decodes the clip's full length (random spatial crops of the
    latents). The encoder and its latents are untouched, so latents encoded before and after are identical.
    """
    generator = torch.Generator().manual_seed(seed)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        latents = torch.cat([vae.encode(videos[i : i + 8]).latent_dist.mode() for i in range(0, len(videos), 8)])  # (N, 16, f, h, w)
    parameters = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    factor = vae.config.scale_factor_spatial if hasattr(vae.config, "scale_factor_spatial") else 8
    losses, started = [], time.perf_counter()
    height, width = min(latent_crop[0], latents.shape[3]), min(latent_crop[1], latents.shape[4])
    for step in range(steps):
        picks = torch.randint(len(videos), (batch_size,), generator=generator).tolist()
        tops = torch.randint(latents.shape[3] - height + 1, (batch_size,), generator=generator).tolist()
        lefts = torch.randint(latents.shape[4] - width + 1, (batch_size,), generator=generator).tolist()
        z = torch.stack([latents[i, :, :, t : t + height, l : l + width] for i, t, l in zip(picks, tops, lefts)])  # (B, 16, f, h', w')
        target = torch.stack([videos[i, :, :, t * factor : (t + height) * factor, l * factor : (l + width) * factor]
                              for i, t, l in zip(picks, tops, lefts)])  # (B, 3, F, 8 h', 8 w')
        loss = (decode_unclamped(vae, z) - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            logger.info("decoder step %d/%d l1=%.4f (%.0f s)", step + 1, steps, loss, time.perf_counter() - started)
    vae.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def set_latent_statistics(vae, videos: torch.Tensor, batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Write per-channel ``latents_mean`` / ``latents_std`` of the posterior means of ``videos`` into the VAE config."""
    means = torch.cat([vae.encode(videos[i : i + batch_size]).latent_dist.mean for i in range(0, len(videos), batch_size)])  # (N, C, f, h, w)
    channels = means.transpose(0, 1).flatten(1)  # (C, N*f*h*w)
    mean = channels.mean(dim=1).tolist()
    std = channels.std(dim=1).clamp_min(1e-3).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


@torch.no_grad()
def reconstruction_error(vae, videos: torch.Tensor, batch_size: int = 8) -> float:
    """Mean absolute error of decode(mode(encode(video))) on videos in [-1, 1] (a held-out quality number)."""
    errors = []
    for first in range(0, len(videos), batch_size):
        video = videos[first : first + batch_size]
        reconstruction = vae.decode(vae.encode(video).latent_dist.mode()).sample
        errors.append((reconstruction - video).abs().mean(dim=(1, 2, 3, 4)))
    return float(torch.cat(errors).mean())
