"""Encoding videos, prompts and images for the Wan base: the ONE place the trainer, the cache and the sampler share.

Everything follows diffusers' ``WanImageToVideoPipeline`` (``encode_prompt``, ``encode_image``,
``prepare_latents``): UMT5 embeddings cut at each prompt's length and zero-padded to 512 tokens,
CLIP penultimate hidden states, VAE latents normalised with the VAE config's ``latents_mean`` /
``latents_std``. A model fine-tuned on these inputs therefore sees what the pipeline feeds it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from one4d.conditioning import UNOBSERVED_FILL, condition_video, latent_mask
from one4d.models.presets import TEXT_TOKENS


def clean_prompt(text: str) -> str:
    """Collapse whitespace like diffusers' ``prompt_clean`` (its ftfy pass is skipped: ftfy is not a dependency)."""
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompts: list[str], max_sequence_length: int = TEXT_TOKENS) -> torch.Tensor:
    """UMT5 embeddings (B, 512, text_dim): each prompt's tokens, then zeros, exactly as the Wan pipelines pad."""
    prompts = [clean_prompt(prompt) for prompt in prompts]
    tokens = tokenizer(
        prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
        add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    mask = tokens.attention_mask.to(device)
    hidden = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state  # (B, 512, D)
    lengths = mask.sum(dim=1)
    keep = torch.arange(max_sequence_length, device=device)[None, :] < lengths[:, None]  # (B, 512)
    return (hidden * keep[..., None]).float()


@torch.no_grad()
def encode_image(image_encoder, image_processor, frames: torch.Tensor) -> torch.Tensor:
    """CLIP penultimate hidden states (B, tokens, image_dim) of frames (B, 3, H, W) in [-1, 1].

    Frames go through the processor as uint8 images, the way the pipeline receives a PIL image.
    """
    images = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, H, W)
    images = [image.permute(1, 2, 0).cpu().numpy() for image in images]  # B x (H, W, 3)
    device = next(image_encoder.parameters()).device
    pixels = image_processor(images=images, return_tensors="pt").pixel_values.to(device, next(image_encoder.parameters()).dtype)
    return image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2].float()


def latent_statistics(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE config's per-channel latents_mean and latents_std, shaped (1, C, 1, 1, 1)."""
    channels = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, channels, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, channels, 1, 1, 1)
    return mean, std


@torch.no_grad()
def encode_video(vae, video: torch.Tensor, posterior_noise: Callable[[tuple], torch.Tensor] | None = None) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, 16, (F - 1) / 4 + 1, H / s, W / s), float32 (s: 8 for Wan, 4 for the tiny VAE).

    The posterior's mode by default (what the pipeline does for its condition latents); a sample,
    mean + std * ``posterior_noise(shape)`` as diffusers' ``DiagonalGaussianDistribution.sample`` draws it, when
    given (what VideoX-Fun's trainer does for the target latents; the trainer's ``StepDraws.randn``).
    """
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    posterior = vae.encode(video.to(device, dtype)).latent_dist
    if posterior_noise is None:
        latents = posterior.mode()
    else:
        latents = posterior.mean + posterior.std * posterior_noise(tuple(posterior.mean.shape)).to(device, posterior.mean.dtype)
    mean, std = latent_statistics(vae)
    return (latents.float() - mean.to(latents.device)) / std.to(latents.device)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents (B, 16, f, h, w) -> video (B, 3, F, H, W) in [-1, 1]."""
    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    mean, std = latent_statistics(vae)
    latents = latents.to(device, torch.float32) * std.to(device) + mean.to(device)
    return vae.decode(latents.to(dtype)).sample.float().clamp(-1, 1)


def vae_fingerprint(components: str, seed: int = 0, settings: dict | None = None) -> str:
    """A short hash naming the encoders of ``components`` without loading them: latents of another VAE
    (or of other encoder settings, e.g. ``{"encoder_dtype": ..., "condition_fill": ...}``) must not be mixed in.

    "tiny": its config and the seed of its random weights. A diffusers directory: ``vae/config.json``
    and, for every weight file, its name, size and first MiB; a Wan2.1-Fun folder: the same of ``Wan2.1_VAE.pth``.
    """
    digest = hashlib.sha256()
    if settings:
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    if components == "tiny":
        from one4d.components import build_vae

        config = {key: value for key, value in build_vae("tiny").config.items() if not key.startswith("_")}  # "_use_default_values" is an unordered set
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        digest.update(f"tiny-seed-{seed}".encode())
        return digest.hexdigest()[:16]
    from one4d.original_layout import VAE_FILE, is_original_layout_folder

    if is_original_layout_folder(components):
        files = [Path(components) / VAE_FILE]
    else:
        folder = Path(components) / "vae"
        if not (folder / "config.json").is_file():
            raise ValueError(f"{components} has no vae/config.json: not a diffusers Wan I2V directory nor a Wan2.1-Fun folder")
        files = [path for path in sorted(folder.iterdir()) if path.is_file()]
    for path in files:
        digest.update(path.name.encode() + str(path.stat().st_size).encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(2**20))
    return digest.hexdigest()[:16]


@dataclass
class Encoders:
    """The frozen encoders of a Wan I2V pipeline; any of them may be None when a cache replaces it."""

    vae: object = None
    tokenizer: object = None
    text_encoder: object = None
    image_encoder: object = None
    image_processor: object = None

    def to(self, device) -> "Encoders":
        for module in (self.vae, self.text_encoder, self.image_encoder):
            if module is not None:
                module.to(device).eval().requires_grad_(False)
        return self


def load_encoders(components: str, dtype: torch.dtype | None = None, seed: int = 0) -> Encoders:
    """The frozen encoders of ``components``, the same for training, caching and sampling.

    ``components``: "tiny" (random stand-ins, fixed ``seed``), a local diffusers Wan I2V directory, or a
    Wan2.1-Fun download folder as shipped (``Wan2.1_VAE.pth`` and the UMT5 / CLIP ``.pth`` files,
    ``one4d.original_layout``). The VAE is always loaded straight into fp32, never rounded through a
    lower precision (Wan's and diffusers' pipelines run it in fp32); the UMT5 and CLIP encoders take
    ``dtype`` (``model.encoder_dtype``; None keeps what is stored).
    """
    from one4d.original_layout import is_original_layout_folder, load_original_components

    names = ("tokenizer", "text_encoder", "image_encoder", "image_processor")
    if not components:
        raise ValueError("model.components is not set: give the Wan2.1-Fun folder or a diffusers Wan2.1 I2V directory")
    if components == "tiny":
        from one4d.components import build_tiny_components

        parts = build_tiny_components(seed)
        parts.pop("transformer")
    elif is_original_layout_folder(components):
        parts = load_original_components(components, dtype=dtype, components=("vae", *names))
    else:
        from one4d.weights import load_diffusers_components

        parts = load_diffusers_components(components, dtype=dtype, components=names)
        parts.update(load_diffusers_components(components, dtype=torch.float32, components=("vae",)))
    encoders = Encoders(**{key: parts[key] for key in ("vae", *names)})
    if dtype is not None:  # the tiny stand-ins are built in fp32; loaded encoders already are in dtype
        from one4d.models.presets import cast_keeping_fp32_modules

        for module in (encoders.text_encoder, encoders.image_encoder):
            if module is not None:  # as transformers' from_pretrained(dtype=...) leaves them (UMT5's wo fp32 under fp16)
                cast_keeping_fp32_modules(module, dtype, keep_under=(torch.float16,))
    return encoders


def condition_latents(encoders: Encoders, rgb: torch.Tensor, observed: torch.Tensor, fill: float = UNOBSERVED_FILL) -> torch.Tensor:
    """The 20 UMC channels: latent mask (B, 4, f, h, w) then the VAE mode of the condition video (B, 16, f, h, w).

    ``fill`` is the value of unobserved frames (``model.condition_fill``; see ``one4d.conditioning.UNOBSERVED_FILL``).
    """
    latents = encode_video(encoders.vae, condition_video(rgb, observed, fill))  # (B, 16, f, h, w)
    mask = latent_mask(observed, rgb.shape[2], latents.shape[3], latents.shape[4], device=latents.device)  # (B, 4, f, h, w)
    return torch.cat([mask.to(latents.dtype), latents], dim=1)


def first_observed_image_embeds(encoders: Encoders, rgb: torch.Tensor, observed: torch.Tensor) -> torch.Tensor | None:
    """CLIP context of each sample's first observed frame (B, tokens, image_dim), None without an image encoder."""
    if encoders.image_encoder is None:
        return None
    first = observed.int().argmax(dim=1)  # (B,) index of the first True
    frames = rgb[torch.arange(rgb.shape[0]), :, first]  # (B, 3, H, W)
    return encode_image(encoders.image_encoder, encoders.image_processor, frames)
