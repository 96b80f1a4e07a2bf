"""A rough time per denoising step before anything is loaded: the transformer's FLOPs over this device's measured rate.

Used by ``scripts/sample.py`` to warn when a request is far from a checkpoint's training size (the tiny
model at the 14B defaults, 81 x 352 x 624, runs about 41 s a step on a 2-core CPU). Counted: every block's
linears and attention, once per branch (DLC runs each block for RGB and for XYZ) and twice with
classifier-free guidance; the encoders, the VAE and post-optimisation are left out, so it is a floor.
"""

from __future__ import annotations

import time

from one4d.conditioning import VAE_TEMPORAL_FACTOR
from one4d.models import TEXT_TOKENS

VAE_SPATIAL_FACTOR = 8
IMAGE_TOKENS = 257  # CLIP ViT-H/14 penultimate states, the image context of Wan I2V
PROBE_FLOPS = 2e9  # per timed operation: tens of milliseconds on a laptop CPU


def latent_tokens(config: dict, num_frames: int, height: int, width: int, spatial_factor: int = VAE_SPATIAL_FACTOR) -> int:
    """Video tokens of one branch: latent frames x latent rows x latent columns over the patch.

    ``spatial_factor``: the VAE's compression in space (Wan's 8; the shipped tiny model's VAE has 4, see
    :func:`vae_spatial_factor`)."""
    p_t, p_h, p_w = config["patch_size"]
    frames = (num_frames - 1) // VAE_TEMPORAL_FACTOR + 1
    return frames // p_t * (height // spatial_factor // p_h) * (width // spatial_factor // p_w)


def vae_spatial_factor(components) -> int:
    """``scale_factor_spatial`` of ``<components>/vae/config.json`` without loading weights; Wan's 8 when there is
    no such file (``components=tiny``, or a folder checked elsewhere)."""
    import json
    from pathlib import Path

    path = Path(str(components)) / "vae" / "config.json"
    if not path.is_file():
        return VAE_SPATIAL_FACTOR
    return int(json.loads(path.read_text()).get("scale_factor_spatial") or VAE_SPATIAL_FACTOR)


def step_flops(config: dict, num_frames: int, height: int, width: int, guidance: bool) -> tuple[float, float]:
    """(linear, attention) FLOPs of one denoising step of a joint model on the base ``config``."""
    tokens = latent_tokens(config, num_frames, height, width)
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    linear = 2 * tokens * (6 * dim * dim + 2 * dim * config["ffn_dim"])  # self q/k/v/o, cross q/o, feed-forward
    attention = 4 * tokens * dim * (tokens + TEXT_TOKENS + IMAGE_TOKENS)  # scores and weighted sums
    passes = 2 * (2 if guidance else 1)  # RGB and XYZ branches, conditional and unconditional
    return passes * config["num_layers"] * linear, passes * config["num_layers"] * attention


def _best_seconds(run, device, repeats: int = 3) -> float:
    import torch

    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return max(best, 1e-9)


def measured_rates(config: dict, device, dtype) -> tuple[float, float]:
    """(linear, attention) FLOP/s of this device at the base's widths, timed on small probes (well under a second)."""
    import torch
    import torch.nn.functional as F

    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    dim = heads * head_dim
    rows = int(min(2048, max(16, PROBE_FLOPS / (2 * dim * dim))))
    x = torch.randn(rows, dim, device=device, dtype=dtype)
    w = torch.randn(dim, dim, device=device, dtype=dtype)
    linear = 2 * rows * dim * dim / _best_seconds(lambda: x @ w, device)
    tokens = int(min(2048, max(16, (PROBE_FLOPS / (4 * dim)) ** 0.5)))
    q = torch.randn(1, heads, tokens, head_dim, device=device, dtype=dtype)
    attention = 4 * tokens * tokens * dim / _best_seconds(lambda: F.scaled_dot_product_attention(q, q, q), device)
    return linear, attention


def estimate_step_seconds(config: dict, num_frames: int, height: int, width: int, guidance: bool, device, dtype) -> float:
    """Estimated seconds of one denoising step at this size on ``device`` (a floor: see the module docstring)."""
    linear, attention = step_flops(config, num_frames, height, width, guidance)
    linear_rate, attention_rate = measured_rates(config, device, dtype)
    return linear / linear_rate + attention / attention_rate


def format_duration(seconds: float) -> str:
    """3.2 s, 41 s, 34 min, 2.5 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
